"""Settings of the a posteriori fits: ``config/aposteriori.toml`` merged for one detector.

``[default.*]`` sections hold the defaults, a detector's sections (named by the instrument
registry's config key, :mod:`autodriz.instruments`) override them; ``[catalogs]`` and
``[catalog.*]`` describe the reference catalogs (:class:`autodriz.catalogs.CatalogConfig`).
Reading the file is the only I/O here.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from autodriz import catalogs as catmod
from autodriz.config import default_config_dir
from autodriz.detect import DetectionParams
from autodriz.errors import ConfigError
from autodriz.fitquality import QualityThresholds
from autodriz.instruments import REGISTRY

CONFIG_FILE_NAME = "aposteriori.toml"


@dataclass(frozen=True)
class MatchParams:
    """tweakwcs TPMatch settings (pixels of the reference tangent plane)."""

    searchrad_arcsec: float = 3.0
    searchrad_arcsec_gsc240: float = 1.0
    separation_pix: float = 4.0
    tolerance_pix: float = 2.0
    use2dhist: bool = True
    relative_searchrad_pix: float = 10.0
    relative_tolerance_pix: float = 1.0
    confirm_tolerance_arcsec: float = 0.1


@dataclass(frozen=True)
class FitParams:
    """Which geometries to fit and how."""

    geometries: tuple[str, ...] = ("rscale", "general")
    sparse_geometry: str | None = "shift"
    nclip: int = 3
    sigma: float = 3.0
    centroid_error_pix: float = 0.05
    max_relative_rms_pix: float = 0.5
    relative_geometries: tuple[str, ...] = ("rscale", "shift")


@dataclass(frozen=True)
class AposterioriConfig:
    """Everything the a posteriori stage reads from ``config/aposteriori.toml`` for one detector."""

    instrument_key: str
    catalogs: catmod.CatalogConfig
    stop_at_quality: int
    detection: DetectionParams
    match: MatchParams
    fit: FitParams
    quality: QualityThresholds
    source: Path

    def as_dict(self) -> dict[str, Any]:
        """Parameters for the report."""
        return {
            "file": str(self.source),
            "instrument": self.instrument_key,
            "catalog_order": list(self.catalogs.order),
            "stop_at_quality": self.stop_at_quality,
            "detection": asdict(self.detection),
            "match": asdict(self.match),
            "fit": asdict(self.fit),
            "quality": {**asdict(self.quality), "min_matches": dict(self.quality.min_matches)},
        }


def _dataclass_from(cls: type, values: Mapping[str, Any], what: str) -> Any:
    """``cls(**values)``, refusing unknown keys by name (a typo in the TOML must not pass silently)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{what}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    data = dict(values)
    for key in ("geometries", "relative_geometries"):
        if key in data:
            data[key] = tuple(data[key])
    return cls(**data)


def load_aposteriori_config(instrument_key: str, path: Path | None = None) -> AposterioriConfig:
    """Read ``aposteriori.toml`` and merge ``[default.*]`` with the detector's sections.

    Parameters
    ----------
    instrument_key : str
        ``Dataset.instrument_key`` (``ACS/WFC``, ``WFC3/IR``, ``WFPC2`` …); case ignored; an
        unknown detector gets the defaults.
    path : Path, optional
        Another file with the same layout (default: the packaged one).

    Raises
    ------
    ConfigError
        Unreadable file or unknown keys.
    """
    path = path or (default_config_dir() / CONFIG_FILE_NAME)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"a posteriori settings {path} cannot be read: {exc}") from exc
    default = data.get("default", {})
    sections = {k.upper(): k for k in data if k not in ("default", "catalogs", "catalog")}
    # The registry names the section a detector reads (its config key).
    key = REGISTRY.config_key(instrument_key).strip().upper()
    section_name = sections.get(key) or sections.get(key.split("/", 1)[0])
    section = data.get(section_name, {}) if section_name else {}

    def merged(part: str) -> dict[str, Any]:
        out = dict(default.get(part, {}))
        out.update(section.get(part, {}))
        return out

    try:
        cat_cfg = catmod.CatalogConfig.from_toml(data)
        detection = DetectionParams.from_mapping(merged("detection"))
        quality = QualityThresholds.from_mapping(merged("quality"))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"a posteriori settings {path}: {exc}") from exc
    return AposterioriConfig(
        instrument_key=instrument_key,
        catalogs=cat_cfg,
        stop_at_quality=int(data.get("catalogs", {}).get("stop_at_quality", 2)),
        detection=detection,
        match=_dataclass_from(MatchParams, merged("match"), f"{path} [match]"),
        fit=_dataclass_from(FitParams, merged("fit"), f"{path} [fit]"),
        quality=quality,
        source=path,
    )


#: 2017-10-01 as a decimal year: guide stars from GSC 2.4.0 (Gaia-based) after it.
_GSC240_YEAR = 2017.748


def search_radius_arcsec(epoch: float | None, match: MatchParams) -> float:
    """Matching radius for the absolute fit: what the pointing error of the data's era needs.

    Before 2017-10-01 HST guided on GSC 1/2.3 positions, off by up to ~1-2″; GSC 2.4.0 (Gaia
    based) brought that to a few tenths of an arcsec. The radius is in arcsec so that it means
    the same on every detector (15 WFC3/IR pixels are 2″, 50 ACS/HRC pixels 1.25″). An unknown
    epoch gets the larger radius.
    """
    if epoch is not None and epoch >= _GSC240_YEAR:
        return match.searchrad_arcsec_gsc240
    return match.searchrad_arcsec

