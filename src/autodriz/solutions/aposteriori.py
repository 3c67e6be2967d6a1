"""A posteriori candidates: sources → reference catalogs → tweakwcs fits → fit quality.

Entry point: :func:`make_aposteriori_candidates`. Starting from the pipeline-default candidate
(its copies carry the distortion-corrected WCS), it

1. detects stars on every chip (:mod:`autodriz.detect`), on the FLCs when every exposure has
   one (CTE-corrected centroids), otherwise on the FLTs;
2. aligns the exposures to each other (tweakwcs, ``rscale``, small search radius) and drops
   sources not seen in two exposures (cosmic rays);
3. for each reference catalog (:mod:`autodriz.catalogs`) and fit geometry (``rscale``,
   ``general``; ``shift`` for sparse fields), fits the whole visit to the catalog as one group
   (``FIT_REL``), or, when the relative fit failed or there is a single exposure, each exposure
   on its own (``FIT_IMG``);
4. measures the fit on its own terms (post-fit cross-match: matches, RMS, per-exposure offsets,
   magnitude correlation) and scores it with :func:`autodriz.fitquality.assess_fit`;
5. writes each usable fit into copies of the default's exposures in
   ``<workroot>/<root>_aposteriori/<candidate name>/`` (FLT and FLC of an exposure get the same
   WCS, ``WCSNAME = IDC_<idctab>-FIT_<REL|IMG>_<CATALOG>``), and returns one
   :class:`~autodriz.solutions.base.Candidate` per attempt — failures included, with
   quality 4/5 (or -1 when not attempted) and the reason in ``notes``.

It never raises for data problems (no sources, no catalog, fits that fail) and never changes the
working directory, stdout or the logging configuration (tweakwcs' loggers are quietened during
the fits and restored after).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
import tomllib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time
from astropy.wcs import WCS, FITSFixedWarning, NoConvergence

from autodriz import catalogs as catmod
from autodriz.config import Settings, default_config_dir
from autodriz.detect import BackgroundDetection, ChipJob, DetectionParams, confirm_across_exposures, detect_chips
from autodriz.errors import ConfigError
from autodriz.fitquality import (
    FAILED,
    NOT_ATTEMPTED,
    QUALITY_MEANING,
    FitScore,
    FitStatistics,
    QualityThresholds,
    assess_fit,
)
from autodriz.inputs import Dataset
from autodriz.instruments import REGISTRY
from autodriz.logs import CONSOLE
from autodriz.select import catalog_search_done, is_usable_fit, needs_image_by_image, try_sparse_geometry
from autodriz.skygeom import MAS_PER_DEG as _MAS_PER_DEG
from autodriz.skygeom import mean_direction, offset_mas, tangent_arcsec
from autodriz.solutions.base import (
    Candidate,
    RunContext,
    StagePlan,
    copy_exposures,
    prepare_workdir,
    switch_plan,
    work_folder,
)

logger = logging.getLogger(__name__)

CONFIG_FILE_NAME = "aposteriori.toml"
_QUIET_LOGGERS = ("tweakwcs", "stwcs", "astroquery")
#: What tweakwcs/astropy/spherical_geometry raise on data they cannot fit (turned into quality 5).
_FIT_ERRORS = (ValueError, RuntimeError, ArithmeticError, IndexError, KeyError, np.linalg.LinAlgError, NoConvergence)


# --------------------------------------------------------------------------------------------
# configuration


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
        from dataclasses import asdict

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


# --------------------------------------------------------------------------------------------
# exposures and sources


@dataclass
class _Chip:
    extver: int
    wcs: WCS
    sources: Table
    shape: tuple[int, int]


@dataclass
class _Exposure:
    rootname: str
    detect_path: Path
    originals: tuple[Path, ...]  # FLT and FLC originals, keys of default.copies
    expstart: float | None
    chips: list[_Chip] = field(default_factory=list)


class _Collector(logging.Handler):
    """Keeps the messages of the libraries' loggers for our own log and the report."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


@contextlib.contextmanager
def _quiet_libraries(level: int = logging.WARNING) -> Iterator[list[str]]:
    """Keep tweakwcs/stwcs/astroquery log records off the console for the duration.

    tweakwcs sets its module loggers to DEBUG at import and logs every match at INFO. Inside
    the context their levels are raised to ``level`` and their WARNING+ records are collected
    into the list yielded (and re-logged by us at DEBUG) instead of propagating; levels,
    handlers and propagation are restored exactly afterwards, so logging is left unchanged.
    """
    manager = logging.root.manager
    collector = _Collector()
    # Only loggers that exist (never create one: a plain "astroquery" Logger made here would
    # break astroquery's astropy-class logger when astroquery is imported later). Each gets the
    # collector and stops propagating, so a record is collected once, where it was made.
    saved: list[tuple[logging.Logger, int, bool]] = []
    for name, lg in list(manager.loggerDict.items()):
        if name.split(".", 1)[0] in _QUIET_LOGGERS and isinstance(lg, logging.Logger):
            saved.append((lg, lg.level, lg.propagate))
            lg.setLevel(max(lg.level, level))
            lg.addHandler(collector)
            lg.propagate = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield collector.messages
    finally:
        for lg, lvl, prop in saved:
            lg.removeHandler(collector)
            lg.setLevel(lvl)
            lg.propagate = prop
        for message in collector.messages:
            logger.debug("%s", message)


def _chip_wcs(hdul: fits.HDUList, index: int) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        header = hdul[index].header
        wcs = WCS(header, fobj=hdul)
    ny, nx = hdul[index].data.shape if hdul[index].data is not None else (header["NAXIS2"], header["NAXIS1"])
    wcs.pixel_shape = (int(nx), int(ny))
    return wcs


def _sci_indices(hdul: fits.HDUList) -> list[tuple[int, int]]:
    """(HDU index, EXTVER) of every SCI extension."""
    return [
        (i, int(h.header.get("EXTVER", 1)))
        for i, h in enumerate(hdul)
        if str(h.header.get("EXTNAME", "")).strip().upper() == "SCI"
    ]


def _detect_original(exp: Any, default_copies: Mapping[Path, Path] | None, use_flc: bool) -> Path:
    """The original whose pixels are searched: the FLC when every exposure has one, else the FLT."""
    def present(p: Path | None) -> bool:
        return p is not None and (default_copies is None or p in default_copies)

    if use_flc and present(exp.flc):
        return exp.flc
    if present(exp.flt):
        return exp.flt
    return next(p for p in exp.paths if default_copies is None or p in default_copies)


def start_background_detection(
    dataset: Dataset, settings: Settings, config_path: Path | None = None
) -> BackgroundDetection | None:
    """Start source detection on the originals' pixels while the default stage runs.

    Detection reads only pixels (SCI, DQ, ERR), which the default and a priori stages do not
    change (they write headers of copies), so the chips can be searched while updatewcs runs
    in its child. Only with ``num_cores`` >= 2 (with one core the run stays serial, as asked)
    and when the a posteriori stage will run. Returns None when not started; the stage then
    detects as usual. A settings file that cannot be read is left for the stage to report.
    """
    if settings.num_cores < 2 or not settings.compute_aposteriori or dataset.is_spectroscopic:
        return None
    try:
        params = load_aposteriori_config(dataset.instrument_key, config_path).detection
    except ConfigError:
        return None
    jobs = []
    for exp in dataset.exposures:
        if exp.not_alignable or not exp.paths:
            continue
        path = _detect_original(exp, None, dataset.has_flc)
        try:
            with fits.open(path) as hdul:
                jobs += [ChipJob(str(path), extver, params) for index, extver in _sci_indices(hdul)
                         if hdul[index].header.get("NAXIS", 0) == 2]
        except (OSError, ValueError) as exc:  # unreadable: the default stage says so, with its exit code
            logger.debug("no background detection: %s: %s", path.name, exc)
            return None
    return BackgroundDetection(jobs, settings.num_cores) if jobs else None


def _load_exposures(
    default: Candidate,
    dataset: Dataset,
    params: DetectionParams,
    num_cores: int = 1,
    early: BackgroundDetection | None = None,
) -> list[_Exposure]:
    use_flc = dataset.has_flc
    out: list[_Exposure] = []
    # Headers and WCS here; pixels are read and searched per chip by detect_chips, in up to
    # num_cores processes (detection is ~3 s per full ACS/WFC chip and chips are independent),
    # unless the chip was already searched in the background (same original, same settings).
    pending: list[tuple[_Exposure, int, WCS, tuple[int, int], ChipJob]] = []
    for exp in dataset.exposures:
        if exp.not_alignable:  # screened (autodriz.screening); the plan said so
            continue
        originals = tuple(p for p in exp.paths if p in default.copies)
        if not originals:
            logger.info("exposure %s has no working copy in the default candidate; skipped", exp.rootname)
            continue
        detect_original = _detect_original(exp, default.copies, use_flc)
        path = default.copies[detect_original]
        with fits.open(path) as hdul:
            expstart = hdul[0].header.get("EXPSTART")
            item = _Exposure(exp.rootname, path, originals, float(expstart) if expstart is not None else None)
            for index, extver in _sci_indices(hdul):
                if hdul[index].header.get("NAXIS", 0) != 2:
                    continue
                try:
                    wcs = _chip_wcs(hdul, index)
                except (ValueError, KeyError, MemoryError) as exc:
                    logger.info("%s SCI,%d: WCS unreadable (%s); chip not used", path.name, extver, exc)
                    continue
                shape = (int(hdul[index].header["NAXIS2"]), int(hdul[index].header["NAXIS1"]))
                pending.append((item, extver, wcs, shape, ChipJob(str(detect_original), extver, params)))
        out.append(item)
    tables = [early.take(job) if early is not None else None for *_, job in pending]
    if early is not None:
        early.close()  # idle workers would hold memory through the final drizzles
    todo = [k for k, t in enumerate(tables) if t is None]
    if early is not None and todo:
        logger.info("%d chip(s) were not searched in the background: searching them now", len(todo))
    for k, table in zip(todo, detect_chips(
        [ChipJob(str(pending[k][0].detect_path), pending[k][1], params) for k in todo], num_cores
    ), strict=True):
        tables[k] = table
    for (item, extver, wcs, shape, _), table in zip(pending, tables, strict=True):
        item.chips.append(_Chip(extver, wcs, table, shape))
        logger.info(
            "%s SCI,%d: %d sources kept of %d detections (%d rejected by shape as cosmic rays/hot pixels)%s",
            item.detect_path.name, extver, len(table), table.meta.get("n_raw", 0), table.meta.get("n_rejected_shape", 0),
            f"; {table.meta['reason']}" if "reason" in table.meta else "",
        )
    return [item for item in out if item.chips]


def _pixel_scale_arcsec(wcs: WCS) -> float:
    from astropy.wcs.utils import proj_plane_pixel_scales

    return float(np.mean(proj_plane_pixel_scales(wcs.celestial))) * 3600.0


def _tangent(ra: Any, dec: Any, ra0: float, dec0: float) -> np.ndarray:
    """(N, 2) tangent-plane (east, north) offsets in arcsec (see :mod:`autodriz.skygeom`)."""
    return np.column_stack(tangent_arcsec(ra, dec, ra0, dec0))


def _footprint(exposures: Sequence[_Exposure], margin_arcsec: float) -> catmod.Region:
    ras, decs = [], []
    for exp in exposures:
        for chip in exp.chips:
            ny, nx = chip.shape
            x = np.array([0, nx - 1, nx - 1, 0, (nx - 1) / 2])
            y = np.array([0, 0, ny - 1, ny - 1, (ny - 1) / 2])
            ra, dec = chip.wcs.all_pix2world(x, y, 0)
            ras.append(ra)
            decs.append(dec)
    ra = np.concatenate(ras)
    dec = np.concatenate(decs)
    ra0, dec0 = mean_direction(ra, dec)
    radius = float(catmod.angular_distance(ra, dec, ra0, dec0).max()) + margin_arcsec / 3600.0
    return catmod.Region(ra0, dec0, radius)


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


def _epoch(exposures: Sequence[_Exposure]) -> float | None:
    mjds = [e.expstart for e in exposures if e.expstart is not None]
    if not mjds:
        return None
    return float(Time(float(np.mean(mjds)), format="mjd").decimalyear)


def _prefilter_reference(table: Table, exposures: Sequence[_Exposure], margin_arcsec: float, max_stars: int) -> Table:
    """Catalog stars that fall on some chip (± margin), brightest first, at most ``max_stars``.

    Uses the linear (``wcs_world2pix``) transformation, which never fails to converge; the
    distortion is at most a few tens of pixels at the corners and the margin absorbs it.
    """
    if len(table) == 0:
        return table
    ra = np.asarray(table["ra"], dtype=float)
    dec = np.asarray(table["dec"], dtype=float)
    keep = np.zeros(len(table), dtype=bool)
    for exp in exposures:
        for chip in exp.chips:
            scale = _pixel_scale_arcsec(chip.wcs)
            m = margin_arcsec / scale
            ny, nx = chip.shape
            with np.errstate(invalid="ignore"):
                x, y = chip.wcs.wcs_world2pix(ra, dec, 0)
            keep |= np.isfinite(x) & np.isfinite(y) & (x > -m) & (x < nx - 1 + m) & (y > -m) & (y < ny - 1 + m)
    cut = table[keep]
    if len(cut) > max_stars:
        mag = np.asarray(cut["mag"], dtype=float)
        order = np.argsort(np.where(np.isfinite(mag), mag, np.inf), kind="stable")[:max_stars]
        cut = cut[np.sort(order)]
    return cut


# --------------------------------------------------------------------------------------------
# tweakwcs


def _make_correctors(exposures: Sequence[_Exposure], masks: Mapping[tuple[int, int], np.ndarray] | None = None) -> list[Any]:
    from tweakwcs.correctors import FITSWCSCorrector

    correctors = []
    for i, exp in enumerate(exposures):
        for j, chip in enumerate(exp.chips):
            src = chip.sources
            if masks is not None:
                src = src[masks[(i, j)]]
            if len(src) == 0:
                continue
            cat = Table({"x": np.asarray(src["x"]), "y": np.asarray(src["y"])})
            corr = FITSWCSCorrector(
                chip.wcs.deepcopy(),
                meta={"catalog": cat, "name": f"{exp.rootname}[SCI,{chip.extver}]", "group_id": i,
                      "exposure": i, "chip": j},
            )
            correctors.append(corr)
    return correctors


@dataclass
class _Relative:
    """Outcome of the relative alignment between exposures."""

    done: bool
    wcs: dict[tuple[int, int], WCS]
    reason: str = ""
    rms_mas: float | None = None
    matches: dict[str, int] = field(default_factory=dict)
    per_exposure: dict[str, Any] = field(default_factory=dict)


def _relative_fit(exposures: Sequence[_Exposure], cfg: AposterioriConfig) -> _Relative:
    """Align every exposure to the first (tweakwcs; the chips of an exposure move together).

    Geometries are tried in ``cfg.fit.relative_geometries`` order (rscale, then shift): the
    first whose every exposure has enough matches and an RMS within ``max_relative_rms_pix`` is
    used. Sparse or poor data (few, extended, noisy sources) often support only a shift.
    """
    base = {(i, j): chip.wcs for i, e in enumerate(exposures) for j, chip in enumerate(e.chips)}
    if len(exposures) < 2:
        return _Relative(False, base, "single exposure: nothing to align relatively")
    attempts = []
    last: _Relative | None = None
    for geometry in cfg.fit.relative_geometries:
        result = _relative_attempt(exposures, cfg, geometry, base)
        if result.done:
            if attempts:
                result.reason = "; ".join(attempts)
            return result
        attempts.append(f"{geometry}: {result.reason}")
        last = result
    reason = "; ".join(attempts) or "no relative geometry configured"
    return _Relative(False, base, reason, per_exposure=last.per_exposure if last else {})


def _relative_attempt(
    exposures: Sequence[_Exposure], cfg: AposterioriConfig, geometry: str, base: Mapping[tuple[int, int], WCS]
) -> _Relative:
    from tweakwcs.imalign import align_wcs
    from tweakwcs.matchutils import XYXYMatch

    correctors = _make_correctors(exposures)
    groups = {c.meta["group_id"] for c in correctors}
    if len(groups) < 2:
        return _Relative(False, dict(base), "fewer than two exposures have sources")
    match = XYXYMatch(
        searchrad=cfg.match.relative_searchrad_pix,
        separation=cfg.match.separation_pix,
        tolerance=cfg.match.relative_tolerance_pix,
        use2dhist=cfg.match.use2dhist,
    )
    needed = cfg.quality.min_matches.get(geometry, 4)
    try:
        with _quiet_libraries():
            align_wcs(correctors, refcat=None, enforce_user_order=True, expand_refcat=True, match=match,
                      minobj=needed, fitgeom=geometry, nclip=cfg.fit.nclip, sigma=(cfg.fit.sigma, "rmse"),
                      group_bb_policy=1)
    except _FIT_ERRORS as exc:
        return _Relative(False, dict(base), f"tweakwcs: {type(exc).__name__}: {exc}")
    scale = _pixel_scale_arcsec(exposures[0].chips[0].wcs) * 1000.0
    per: dict[str, Any] = {}
    failed = []
    rms = []
    for c in correctors:
        info = c.meta.get("fit_info", {})
        name = exposures[c.meta["exposure"]].rootname
        status = str(info.get("status", ""))
        if status.startswith("REFERENCE"):
            per.setdefault(name, {"status": "reference"})
            continue
        if status != "SUCCESS":
            failed.append(f"{name}: {status} (fewer than {needed} matches?)" if "matches" in status else f"{name}: {status}")
            continue
        rmse_pix = float(info.get("rmse", math.nan))
        per[name] = {
            "status": "aligned",
            "geometry": geometry,
            "nmatches": int(info.get("nmatches", 0)),
            "rms_mas": round(rmse_pix * scale, 2),
            "shift_pix": [round(float(v), 3) for v in info.get("shift", (math.nan, math.nan))],
            "rotation_deg": round(float(info.get("proper_rot", math.nan)), 5),
            "scale": round(float(info.get("<scale>", math.nan)), 7),
        }
        if not rmse_pix <= cfg.fit.max_relative_rms_pix:
            failed.append(f"{name}: RMS {rmse_pix:.2f} px > {cfg.fit.max_relative_rms_pix} px")
        rms.append(rmse_pix * scale)
    if failed:
        return _Relative(False, dict(base), "failed for " + "; ".join(sorted(set(failed))), per_exposure=per)
    aligned = {(c.meta["exposure"], c.meta["chip"]): c.wcs for c in correctors}
    wcs = {k: aligned.get(k, v) for k, v in base.items()}
    matches = {k: v["nmatches"] for k, v in per.items() if "nmatches" in v}
    rms_mas = float(np.sqrt(np.mean(np.square(rms)))) if rms else None
    return _Relative(True, wcs, "", rms_mas, matches, per)


def _confirm_sources(exposures: Sequence[_Exposure], wcs: Mapping[tuple[int, int], WCS], tolerance_arcsec: float) -> dict[tuple[int, int], np.ndarray]:
    """Masks of sources seen in at least two exposures (all True for a single exposure)."""
    positions = []
    slices = []
    for i, exp in enumerate(exposures):
        ras, decs = [], []
        for j, chip in enumerate(exp.chips):
            if len(chip.sources):
                ra, dec = wcs[(i, j)].all_pix2world(np.asarray(chip.sources["x"]), np.asarray(chip.sources["y"]), 0)
            else:
                ra, dec = np.zeros(0), np.zeros(0)
            ras.append(ra)
            decs.append(dec)
            slices.append((i, j, len(ra)))
        positions.append((np.concatenate(ras) if ras else np.zeros(0), np.concatenate(decs) if decs else np.zeros(0)))
    masks = confirm_across_exposures(positions, tolerance_arcsec)
    out: dict[tuple[int, int], np.ndarray] = {}
    offsets: dict[int, int] = {}
    for i, j, n in slices:
        start = offsets.get(i, 0)
        out[(i, j)] = masks[i][start : start + n]
        offsets[i] = start + n
    return out


@dataclass
class _FitOutcome:
    stats: FitStatistics
    wcs: dict[tuple[int, int], WCS]
    details: dict[str, Any]


def _post_fit_residuals(
    exposures: Sequence[_Exposure],
    wcs: Mapping[tuple[int, int], WCS],
    masks: Mapping[tuple[int, int], np.ndarray],
    ref: Table,
    region: catmod.Region,
    radius_arcsec: float,
) -> dict[str, Any]:
    """Cross-match every exposure's sources (fitted WCS) with the catalog; residuals in mas."""
    from scipy.spatial import cKDTree

    ref_xy = _tangent(ref["ra"], ref["dec"], region.ra, region.dec)
    tree = cKDTree(ref_xy)
    ref_mag = np.asarray(ref["mag"], dtype=float)
    all_d, all_img_mag, all_ref_mag, all_xy, all_sky, all_exp = [], [], [], [], [], []
    per = []
    for i, exp in enumerate(exposures):
        d_exp = []
        for j, chip in enumerate(exp.chips):
            src = chip.sources[masks[(i, j)]] if (i, j) in masks else chip.sources
            if len(src) == 0:
                continue
            ra, dec = wcs[(i, j)].all_pix2world(np.asarray(src["x"]), np.asarray(src["y"]), 0)
            xy = _tangent(ra, dec, region.ra, region.dec)
            dist, idx = tree.query(xy, k=1, distance_upper_bound=radius_arcsec)
            ok = np.isfinite(dist)
            if not ok.any():
                continue
            # One catalog star, one source: keep the nearest source per star.
            order = np.argsort(dist[ok])
            src_idx = np.flatnonzero(ok)[order]
            _, first = np.unique(idx[src_idx], return_index=True)
            sel = src_idx[first]
            d = (xy[sel] - ref_xy[idx[sel]]) * 1000.0
            d_exp.append(d)
            all_xy.append(ref_xy[idx[sel]])
            all_sky.append(np.column_stack([np.asarray(ref["ra"], float)[idx[sel]], np.asarray(ref["dec"], float)[idx[sel]]]))
            all_exp.append(np.full(len(sel), i))
            all_img_mag.append(np.asarray(src["mag"], dtype=float)[sel])
            all_ref_mag.append(ref_mag[idx[sel]])
        d_exp_arr = np.concatenate(d_exp) if d_exp else np.zeros((0, 2))
        all_d.append(d_exp_arr)
        per.append(d_exp_arr)
    d_all = np.concatenate(all_d) if all_d else np.zeros((0, 2))
    # 3σ clipping of the residuals (a few wrong matches must not dominate the RMS).
    keep = np.ones(len(d_all), dtype=bool)
    for _ in range(3):
        if keep.sum() < 3:
            break
        r = np.hypot(d_all[keep, 0], d_all[keep, 1])
        rms = math.sqrt(float(np.mean(r**2)))
        new = np.hypot(d_all[:, 0], d_all[:, 1]) <= max(3.0 * rms, 1e-6)
        if (new == keep).all():
            break
        keep = new
    d_kept = d_all[keep]
    n = int(keep.sum())
    rms_mas = math.sqrt(float(np.mean(np.sum(d_kept**2, axis=1)))) if n else math.nan
    img_mag = np.concatenate(all_img_mag)[keep] if all_img_mag else np.zeros(0)
    cat_mag = np.concatenate(all_ref_mag)[keep] if all_ref_mag else np.zeros(0)
    per_stats = []
    pos = 0
    for i, d in enumerate(per):
        k = keep[pos : pos + len(d)]
        pos += len(d)
        dd = d[k]
        per_stats.append({
            "exposure": exposures[i].rootname,
            "n_matches": len(dd),
            "rms_mas": round(math.sqrt(float(np.mean(np.sum(dd**2, axis=1)))), 3) if len(dd) else None,
            "mean_offset_mas": [round(float(dd[:, 0].mean()), 3), round(float(dd[:, 1].mean()), 3)] if len(dd) else None,
        })
    xy_kept = np.concatenate(all_xy)[keep] if all_xy else np.zeros((0, 2))
    sky_kept = np.concatenate(all_sky)[keep] if all_sky else np.zeros((0, 2))
    exp_kept = np.concatenate(all_exp)[keep] if all_exp else np.zeros(0, int)
    # Every matched star for the report's residual and overlay plots; a stride keeps very rich
    # fields to a few thousand points (the JSON stays small).
    stride = max(1, math.ceil(n / 3000))
    vectors = {
        "x": [round(float(v), 4) for v in xy_kept[::stride, 0]],
        "y": [round(float(v), 4) for v in xy_kept[::stride, 1]],
        "dx": [round(float(v), 3) for v in d_kept[::stride, 0]],
        "dy": [round(float(v), 3) for v in d_kept[::stride, 1]],
        "ra": [round(float(v), 8) for v in sky_kept[::stride, 0]],
        "dec": [round(float(v), 8) for v in sky_kept[::stride, 1]],
        "exposure": [exposures[int(k)].rootname for k in exp_kept[::stride]],
        "units": "x, y: catalog star on the tangent plane at the field centre (arcsec, x east); "
                 "dx, dy: image minus catalog (mas); ra, dec: catalog (deg)",
    }
    return {
        "vectors": vectors,
        "n_matches": n,
        "rms_mas": rms_mas,
        "rms_ra_mas": math.sqrt(float(np.mean(d_kept[:, 0] ** 2))) if n else math.nan,
        "rms_dec_mas": math.sqrt(float(np.mean(d_kept[:, 1] ** 2))) if n else math.nan,
        "img_mag": img_mag,
        "ref_mag": cat_mag,
        "per_exposure": per_stats,
    }


def _radial_offset_arcsec(exposures: Sequence[_Exposure], before: Mapping[tuple[int, int], WCS], after: Mapping[tuple[int, int], WCS]) -> float:
    seps = []
    for key, w0 in before.items():
        ny, nx = exposures[key[0]].chips[key[1]].shape
        ra0, dec0 = w0.wcs_pix2world([[(nx - 1) / 2, (ny - 1) / 2]], 0)[0]
        ra1, dec1 = after[key].wcs_pix2world([[(nx - 1) / 2, (ny - 1) / 2]], 0)[0]
        seps.append(float(catmod.angular_distance(ra1, dec1, ra0, dec0)) * 3600.0)
    return float(np.mean(seps)) if seps else math.nan


def _exposure_corrections_mas(
    exposures: Sequence[_Exposure], before: Mapping[tuple[int, int], WCS], after: Mapping[tuple[int, int], WCS]
) -> list[tuple[float, float]]:
    """Per exposure, the (east, north) correction the fit applied at its first chip's centre, mas."""
    out = []
    for i, exp in enumerate(exposures):
        ny, nx = exp.chips[0].shape
        ra0, dec0 = before[(i, 0)].wcs_pix2world([[(nx - 1) / 2, (ny - 1) / 2]], 0)[0]
        ra1, dec1 = after[(i, 0)].wcs_pix2world([[(nx - 1) / 2, (ny - 1) / 2]], 0)[0]
        east, north = offset_mas(ra1, dec1, ra0, dec0)
        out.append((float(east), float(north)))
    return out


def one_copy_per_star(
    exposures: Sequence[_Exposure],
    wcs: Mapping[tuple[int, int], WCS],
    masks: Mapping[tuple[int, int], np.ndarray],
    radius_arcsec: float,
) -> dict[tuple[int, int], np.ndarray]:
    """Keep each star once in a group fit, spreading the kept copies over the exposures.

    tweakwcs fits a group's exposures as one catalog, so a star seen in N exposures is in it N
    times, and its matcher pairs each reference star with *one* of those copies — the closest to
    where its 2-D-histogram offset estimate puts the star. With undersampled centroids (WFC3/IR:
    ~0.2 px pixel-phase scatter, different in each dither) that choice pulls the whole fit towards
    the histogram's estimate, ~0.1 px (12 mas on a simulated WFC3/IR visit, 0.6 mas with one copy
    per star). The relative fit has already put the exposures on one frame, so sources within
    ``radius_arcsec`` of each other on the sky (through ``wcs``) are one star; of its copies, the
    k-th star keeps copy ``k mod n`` so that every exposure keeps about 1/n of its stars (an
    exposure left without sources would fail the fit).

    Returns
    -------
    dict
        (exposure, chip) → boolean array over the ``masks``-selected sources: True = keep.
    """
    from scipy.spatial import cKDTree

    radius = 2.0 * math.sin(math.radians(radius_arcsec / 3600.0) / 2.0)  # chord length on the unit sphere
    keep: dict[tuple[int, int], np.ndarray] = {}
    star_xyz: list[np.ndarray] = []  # first position seen of every star so far
    members: list[list[tuple[tuple[int, int], int]]] = []  # star → its copies
    for i, exp in enumerate(exposures):
        for j, chip in enumerate(exp.chips):
            src = chip.sources[masks[(i, j)]]
            keep[(i, j)] = np.zeros(len(src), dtype=bool)
            if len(src) == 0:
                continue
            ra, dec = wcs[(i, j)].all_pix2world(np.asarray(src["x"]), np.asarray(src["y"]), 0)
            ra, dec = np.radians(ra), np.radians(dec)
            xyz = np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])
            star = np.full(len(src), -1)
            if star_xyz:
                dist, idx = cKDTree(np.vstack(star_xyz)).query(xyz, distance_upper_bound=radius)
                star = np.where(np.isfinite(dist), idx, -1)
            for n, s in enumerate(star):
                if s < 0:
                    star_xyz.append(xyz[n : n + 1])
                    members.append([((i, j), n)])
                else:
                    members[s].append(((i, j), n))
    for k, copies in enumerate(members):
        key, n = copies[k % len(copies)]
        keep[key][n] = True
    return keep


def _absolute_fit(
    exposures: Sequence[_Exposure],
    start_wcs: Mapping[tuple[int, int], WCS],
    masks: Mapping[tuple[int, int], np.ndarray],
    ref: catmod.ReferenceCatalog,
    ref_table: Table,
    region: catmod.Region,
    geometry: str,
    mode: str,
    relative: _Relative,
    cfg: AposterioriConfig,
) -> _FitOutcome:
    """Fit the (relatively aligned) exposures to the catalog with one geometry."""
    from tweakwcs.correctors import FITSWCSCorrector
    from tweakwcs.imalign import align_wcs
    from tweakwcs.matchutils import XYXYMatch

    scale_arcsec = _pixel_scale_arcsec(exposures[0].chips[0].wcs)
    expected = math.hypot(ref.expected_error_mas, math.sqrt(2.0) * cfg.fit.centroid_error_pix * scale_arcsec * 1000.0)
    base_stats = {
        "geometry": geometry,
        "n_reference": len(ref_table),
        "expected_rms_mas": expected,
        "relative": mode == "REL" or len(exposures) == 1,
        "relative_rms_mas": relative.rms_mas,
        "has_proper_motions": ref.has_pm,
    }
    details: dict[str, Any] = {"geometry": geometry, "mode": mode, "n_reference_in_footprint": len(ref_table)}
    keep = (
        one_copy_per_star(exposures, start_wcs, masks, 0.5 * scale_arcsec)
        if mode == "REL" and len(exposures) > 1
        else {k: np.ones(int(np.count_nonzero(m)), dtype=bool) for k, m in masks.items()}
    )
    if mode == "REL" and len(exposures) > 1:
        n_all = sum(int(np.count_nonzero(m)) for m in masks.values())
        details["group_sources"] = {"detected": n_all, "one_copy_per_star": sum(int(k.sum()) for k in keep.values())}
    correctors = []
    for i, exp in enumerate(exposures):
        for j, chip in enumerate(exp.chips):
            src = chip.sources[masks[(i, j)]][keep[(i, j)]]
            if len(src) == 0:
                continue
            correctors.append(FITSWCSCorrector(
                start_wcs[(i, j)].deepcopy(),
                meta={"catalog": Table({"x": np.asarray(src["x"]), "y": np.asarray(src["y"]),
                                        "weight": _centroid_weights(src, cfg.fit.centroid_error_pix, scale_arcsec)}),
                      "name": f"{exp.rootname}[SCI,{chip.extver}]",
                      "group_id": "visit" if mode == "REL" else i, "exposure": i, "chip": j},
            ))
    if not correctors:
        return _FitOutcome(FitStatistics(succeeded=False, failure="no sources to fit", **base_stats), {}, details)
    refcat = Table({"RA": np.asarray(ref_table["ra"]), "DEC": np.asarray(ref_table["dec"])})
    if "sigma_mas" in ref_table.colnames:
        # tweakwcs combines the two weights as 1/w = 1/w_image + 1/w_ref, so with w = 1/σ² every
        # match is weighted by 1/(σ_cat² + σ_hst²).
        sigma = np.asarray(ref_table["sigma_mas"], dtype=float)
        refcat["weight"] = 1.0 / np.square(np.where(np.isfinite(sigma) & (sigma > 0), sigma, ref.expected_error_mas))
    match = XYXYMatch(
        searchrad=search_radius_arcsec(_epoch(exposures), cfg.match) / scale_arcsec, separation=cfg.match.separation_pix,
        tolerance=cfg.match.tolerance_pix, use2dhist=cfg.match.use2dhist,
    )
    messages: list[str] = []
    try:
        with _quiet_libraries() as messages:
            align_wcs(correctors, refcat=refcat, enforce_user_order=True, expand_refcat=False, match=match,
                      minobj=cfg.quality.min_matches.get(geometry), fitgeom=geometry, nclip=cfg.fit.nclip,
                      sigma=(cfg.fit.sigma, "rmse"), group_bb_policy=1)
    except _FIT_ERRORS as exc:
        failure = f"tweakwcs: {type(exc).__name__}: {exc}"
        return _FitOutcome(FitStatistics(succeeded=False, failure=failure, **base_stats), {}, details)
    statuses = {str(c.meta.get("fit_info", {}).get("status", "FAILED: no fit information")) for c in correctors}
    bad = sorted(s for s in statuses if s != "SUCCESS")
    infos = [c.meta["fit_info"] for c in correctors if c.meta.get("fit_info", {}).get("status") == "SUCCESS"]
    details["tweakwcs"] = [
        {
            "name": c.meta["name"],
            "status": str(c.meta.get("fit_info", {}).get("status")),
            "nmatches": int(c.meta.get("fit_info", {}).get("nmatches", 0)),
        }
        for c in correctors
    ]
    if messages:
        details["tweakwcs_messages"] = list(messages)
    if bad:
        failure = "; ".join(bad)
        n_fit = max((int(i.get("nmatches", 0)) for i in infos), default=0)
        if "not enough matches" in failure:
            # tweakwcs stopped before fitting; its warning says how many it found.
            found = [int(m.group(1)) for text in messages for m in [re.search(r"Not enough matches \((\d+)\)", text)] if m]
            n_found = max(found, default=n_fit)
            return _FitOutcome(FitStatistics(succeeded=True, n_matches=n_found, **base_stats), {}, {**details, "failure": failure})
        return _FitOutcome(FitStatistics(succeeded=False, failure=failure, **base_stats), {}, details)
    info = infos[0]
    details["fit"] = {
        "shift_pix": [round(float(v), 4) for v in info["shift"]],
        "rotation_deg": round(float(info.get("proper_rot", math.nan)), 6),
        "scale": round(float(info.get("<scale>", math.nan)), 8),
        "skew_deg": round(float(info.get("skew", math.nan)), 6),
        "rmse_pix": round(float(info.get("rmse", math.nan)), 4),
        "tweakwcs_nmatches": sum(int(i.get("nmatches", 0)) for i in infos) if mode == "IMG" else int(info.get("nmatches", 0)),
    }
    new_wcs = {(c.meta["exposure"], c.meta["chip"]): c.wcs for c in correctors}
    # Chips without sources follow their exposure (same correction as a sibling chip).
    for i, exp in enumerate(exposures):
        for j in range(len(exp.chips)):
            if (i, j) not in new_wcs:
                sib = next((k for k in range(len(exp.chips)) if (i, k) in new_wcs), None)
                if sib is None:
                    failure = f"exposure {exp.rootname} has no sources to fit"
                    return _FitOutcome(FitStatistics(succeeded=False, failure=failure, **base_stats), {}, details)
                new_wcs[(i, j)] = _transfer_correction(start_wcs[(i, sib)], new_wcs[(i, sib)], start_wcs[(i, j)])
    rmse_mas = float(info.get("rmse", 0.0)) * scale_arcsec * 1000.0
    radius = max(cfg.match.tolerance_pix * scale_arcsec, 3.0 * rmse_mas / 1000.0)
    resid = _post_fit_residuals(exposures, new_wcs, masks, ref_table, region, radius)
    from autodriz.fitquality import pearson

    mag_r = pearson(resid["img_mag"], resid["ref_mag"])
    corrections = _exposure_corrections_mas(exposures, start_wcs, new_wcs)
    for p, c in zip(resid["per_exposure"], corrections, strict=True):
        p["correction_mas"] = [round(c[0], 3), round(c[1], 3)]
    if mode == "REL":
        # One transformation for the visit: consistency = the exposures' mean residuals agree.
        offsets = [tuple(p["mean_offset_mas"]) for p in resid["per_exposure"] if p["mean_offset_mas"] is not None]
    else:
        # Each exposure fitted on its own: consistency = their corrections agree (the pointing
        # error of one visit is common to its exposures).
        offsets = corrections
    stats = FitStatistics(
        succeeded=True,
        n_matches=resid["n_matches"],
        rms_mas=resid["rms_mas"],
        radial_offset_arcsec=_radial_offset_arcsec(exposures, start_wcs, new_wcs),
        mag_correlation=mag_r,
        exposure_offsets_mas=offsets,
        exposure_matches=[p["n_matches"] for p in resid["per_exposure"]],
        **base_stats,
    )
    details.update({
        "rms_ra_mas": round(resid["rms_ra_mas"], 3) if math.isfinite(resid["rms_ra_mas"]) else None,
        "rms_dec_mas": round(resid["rms_dec_mas"], 3) if math.isfinite(resid["rms_dec_mas"]) else None,
        "per_exposure": resid["per_exposure"],
        "match_radius_arcsec": round(radius, 4),
        "residuals": resid["vectors"],
    })
    return _FitOutcome(stats, new_wcs, details)


def _centroid_weights(sources: Table, floor_pix: float, scale_arcsec: float) -> np.ndarray:
    """1/σ² (mas⁻²) of each source's centroid: FWHM / (2.35 · S/N), at least ``floor_pix``."""
    n = len(sources)
    fwhm = np.asarray(sources["fwhm"], dtype=float) if "fwhm" in sources.colnames else np.full(n, np.nan)
    snr = np.asarray(sources["snr"], dtype=float) if "snr" in sources.colnames else np.full(n, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma_pix = fwhm / (2.35 * snr)
    sigma_pix = np.where(np.isfinite(sigma_pix) & (sigma_pix > floor_pix), sigma_pix, floor_pix)
    return 1.0 / np.square(sigma_pix * scale_arcsec * 1000.0)


def _transfer_correction(src_before: WCS, src_after: WCS, target: WCS) -> WCS:
    """Apply to ``target`` the sky rotation+shift that took ``src_before`` to ``src_after``.

    Used only for a chip with no sources: it moves with its sibling chip. The correction is
    evaluated at the sibling's CRVAL (small-angle approximation: good to < 0.1 mas for
    corrections of a few arcsec across one detector).
    """
    out = target.deepcopy()
    ra0, dec0 = src_before.wcs.crval
    ra1, dec1 = src_after.wcs.crval
    cosd = math.cos(math.radians(dec0))
    # Linear part change: R = CD_after · CD_before⁻¹ (rotation/scale on the sky).
    m = src_after.wcs.cd @ np.linalg.inv(src_before.wcs.cd) if src_before.wcs.has_cd() else np.eye(2)
    t_ra, t_dec = target.wcs.crval
    d = np.array([(t_ra - ra0) * cosd, t_dec - dec0])
    d2 = m @ d
    out.wcs.crval = [ra1 + d2[0] / math.cos(math.radians(dec1)), dec1 + d2[1]]
    if target.wcs.has_cd():
        out.wcs.cd = m @ target.wcs.cd
    out.wcs.set()
    return out


# --------------------------------------------------------------------------------------------
# writing solutions


def _wcsname_base(default: Candidate, dataset: Dataset) -> tuple[str, str | None]:
    """``IDC_<idctab>`` (what a -FIT_ name extends) and a note when it is not one."""
    name = default.wcsname.strip()
    if name.upper().startswith("IDC_"):
        return name.split("-", 1)[0], None
    idctab = next((e.idctab for e in dataset.exposures if e.idctab), None)
    if default.updated is False:
        # The header WCS as delivered (no distortion model applied by us): keep its own name.
        base = name if name and "header WCS" not in name else "HEADER"
        return base.split("-", 1)[0], (
            f"fits start from the header WCS ({default.wcsname}); the distortion model "
            f"{idctab or '(none)'} was not applied, so the WCSNAME extends '{base.split('-', 1)[0]}'"
        )
    if idctab:
        root = Path(idctab.split("$", 1)[-1]).name.split("_idc")[0]
        return f"IDC_{root}", None
    return name or "HEADER", None


def _write_solution(
    exposures: Sequence[_Exposure],
    new_wcs: Mapping[tuple[int, int], WCS],
    copies: Mapping[Path, Path],
    wcsname: str,
    keywords: Mapping[str, Any],
) -> None:
    """Write CRVAL/CD (and ORIENTAT, WCSNAME, fit keywords) into the FLT and FLC copies."""
    for i, exp in enumerate(exposures):
        by_extver = {chip.extver: new_wcs[(i, j)] for j, chip in enumerate(exp.chips)}
        for original in exp.originals:
            path = copies[original]
            with fits.open(path, mode="update") as hdul:
                for index, extver in _sci_indices(hdul):
                    w = by_extver.get(extver)
                    if w is None:
                        continue
                    hdr = hdul[index].header
                    cd = w.wcs.cd if w.wcs.has_cd() else w.pixel_scale_matrix
                    hdr["CRVAL1"] = float(w.wcs.crval[0])
                    hdr["CRVAL2"] = float(w.wcs.crval[1])
                    for (r, c), value in np.ndenumerate(cd):
                        hdr[f"CD{r + 1}_{c + 1}"] = float(value)
                    hdr["ORIENTAT"] = (round(math.degrees(math.atan2(cd[0, 1], cd[1, 1])), 9), "position angle of image y axis (deg)")
                    hdr["WCSNAME"] = wcsname
                    for key, (value, comment) in keywords.items():
                        hdr[key] = (round(value, 6) if isinstance(value, float) and key.startswith("RMS") else value, comment)


# --------------------------------------------------------------------------------------------
# the stage


def _candidate_name(mode: str, catalog: str, geometry: str) -> str:
    return f"aposteriori-{mode}-{catalog}-{geometry}"


def _not_done(
    name: str, wcsname: str, workdir: Path, quality: int, reason: str, details: Mapping[str, Any],
    score: FitScore | None = None,
) -> Candidate:
    logger.info("a posteriori %s: quality %d (%s): %s", name, quality, QUALITY_MEANING.get(quality, "?"), reason)
    return Candidate(
        name=name, wcsname=wcsname, workdir=workdir, copies={}, source=f"a posteriori fit: {reason}",
        updated=False, notes=(reason,), kind="aposteriori", quality=quality, details=dict(details), score=score,
    )


def make_aposteriori_candidates(
    default: Candidate,
    dataset: Dataset,
    settings: Settings,
    workroot: Path,
    *,
    service: catmod.CatalogService | None = None,
    config_path: Path | None = None,
    start: Candidate | None = None,
    early: BackgroundDetection | None = None,
) -> list[Candidate]:
    """Fit the visit to reference catalogs; one candidate per catalog × geometry tried.

    Parameters
    ----------
    default : Candidate
        The pipeline-default candidate; its WCSNAME is what the fits' names extend, and its
        copies (FLT and FLC) are the starting point unless ``start`` is given.
    dataset : Dataset
        The resolved input.
    settings : Settings
        ``catalog``, ``cache_dir``, ``offline``, ``service_timeout``, ``strict_services`` are used.
    workroot : Path
        Folder that receives ``<root>_aposteriori/`` (the output directory).
    service : CatalogService, optional
        Network catalog service (default: VizieR via astroquery); tests pass a stub.
    config_path : Path, optional
        Another ``aposteriori.toml``.
    start : Candidate, optional
        The WCS the fits start from when it is better than the default: the best verified a
        priori solution, as runastrodriz aligns from the a priori WCS it applied.
    early : BackgroundDetection, optional
        Chips already being searched (:func:`start_background_detection`); the others are
        searched here.

    Returns
    -------
    list of Candidate
        ``kind="aposteriori"``; usable fits (quality 1–3) carry copies with the fitted WCS;
        failed attempts carry no copies, quality 4/5 (or -1 when not attempted) and the reason.

    Raises
    ------
    CatalogServiceError
        Only with ``settings.strict_services`` when the catalog service is unreachable.
    ConfigError
        The a posteriori settings file is unreadable.
    """
    t0 = time.perf_counter()
    cfg = load_aposteriori_config(dataset.instrument_key, config_path)
    top = work_folder(workroot, dataset.root, AposterioriStrategy.folder)
    base, base_note = _wcsname_base(default, dataset)
    origin = start if start is not None else default
    common: dict[str, Any] = {"parameters": cfg.as_dict(), "start": origin.wcsname}
    if start is not None:
        logger.info("a posteriori fits start from %s (%s), the best verified a priori solution", start.wcsname, start.name)
    if base_note:
        logger.info("a posteriori: %s", base_note)
        common["wcsname_note"] = base_note
    logger.info(
        "a posteriori stage for %s (%s): parameters from %s, catalogs %s",
        dataset.root, dataset.instrument_key, cfg.source, ", ".join(cfg.catalogs.order),
    )
    prepare_workdir(top)

    exposures = _load_exposures(origin, dataset, cfg.detection, settings.num_cores, early)
    # Exposures that cannot be aligned ride along in every fit's copies with the starting WCS,
    # so that they are drizzled (and delivered) with it, as runastrodriz leaves them.
    passengers = tuple(p for e in dataset.exposures if e.not_alignable for p in e.paths if p in origin.copies)
    if passengers:
        common["not_fitted"] = {e.rootname: list(e.not_alignable) for e in dataset.exposures if e.not_alignable}
    n_sources = sum(len(c.sources) for e in exposures for c in e.chips)
    if not exposures or n_sources == 0:
        reason = "no sources detected on any chip: nothing to fit"
        return [_not_done("aposteriori", f"{base}-FIT", top, FAILED, reason, {**common, "n_sources": 0})]

    # 1. relative alignment, then keep sources seen twice.
    relative = _relative_fit(exposures, cfg)
    if relative.done:
        logger.info(
            "relative fit of %d exposures (%s): RMS %.2f mas, matches %s%s",
            len(exposures), "/".join(sorted({v.get("geometry", "") for v in relative.per_exposure.values()} - {""})),
            relative.rms_mas or math.nan, relative.matches,
            f" (after: {relative.reason})" if relative.reason else "",
        )
        masks = _confirm_sources(exposures, relative.wcs, cfg.match.confirm_tolerance_arcsec)
        n_conf = int(sum(m.sum() for m in masks.values()))
        logger.info("%d of %d sources seen in at least two exposures (the others are taken for cosmic rays)", n_conf, n_sources)
        if n_conf < cfg.quality.min_matches.get("shift", 4):
            logger.info("too few confirmed sources: fitting all %d detections instead", n_sources)
            masks = _all_sources(exposures)
            n_conf = n_sources
        mode = "REL"
    else:
        logger.info("no relative fit (%s): exposures fitted to the catalog one by one (FIT_IMG)", relative.reason)
        masks = _all_sources(exposures)
        n_conf = n_sources
        mode = "IMG"
    common["relative_fit"] = {
        "done": relative.done, "reason": relative.reason, "rms_mas": relative.rms_mas,
        "per_exposure": relative.per_exposure,
    }
    common["sources"] = {
        "detected": n_sources, "used": n_conf, "detected_on": [e.detect_path.name for e in exposures],
        "per_chip": {f"{e.rootname}[SCI,{c.extver}]": len(c.sources) for e in exposures for c in e.chips},
    }

    region = _footprint(exposures, cfg.catalogs.footprint_margin_arcsec)
    epoch = _epoch(exposures)
    common["epoch"] = epoch
    logger.info(
        "footprint: centre %.6f %+.6f, radius %.2f′ (with %.0f″ margin); observation epoch %s",
        region.ra, region.dec, region.radius * 60, cfg.catalogs.footprint_margin_arcsec,
        f"{epoch:.4f}" if epoch else "unknown",
    )

    candidates: list[Candidate] = []
    best: tuple[int, str] | None = None
    catalog_iter = catmod.iter_catalogs(
        cfg.catalogs.order, region, epoch, specs=cfg.catalogs.specs, catalog_path=settings.catalog,
        cache_dir=settings.cache_dir, offline=settings.offline, timeout=settings.service_timeout,
        strict_services=settings.strict_services,
        service=service if service is not None else catmod.make_service(settings.catalog_service, cfg.catalogs),
        unknown_pm_mas_yr=cfg.catalogs.unknown_pm_mas_yr,
        max_gap_without_pm_yr=cfg.catalogs.max_gap_without_pm_yr,
    )
    seen: list[str] = []
    for item in catalog_iter:
        seen.append(item.name)
        wc = f"{base}-FIT_{mode}_{item.name}"
        if isinstance(item, catmod.CatalogUnavailable):
            candidates.append(_not_done(
                f"aposteriori-{mode}-{item.name}", wc, top / f"aposteriori-{mode}-{item.name}", NOT_ATTEMPTED,
                f"catalog {item.name} unavailable: {item.reason}", common,
            ))
            continue
        # catalog_rank: position in the preference order, which the selection uses to break ties.
        cat_details = {**common, "catalog": item.summary(), "catalog_rank": len(seen) - 1}
        ref_table = _prefilter_reference(
            item.table, exposures, cfg.catalogs.footprint_margin_arcsec, cfg.catalogs.max_reference_stars
        )
        logger.info("catalog %s: %d stars on the chips (± %.0f″)", item.name, len(ref_table), cfg.catalogs.footprint_margin_arcsec)
        if len(ref_table) == 0:
            candidates.append(_not_done(
                f"aposteriori-{mode}-{item.name}", wc, top / f"aposteriori-{mode}-{item.name}", FAILED,
                f"catalog {item.name} has no star on the exposures", cat_details,
            ))
            continue
        attempts = [(mode, relative.wcs, masks)]
        if mode == "REL":
            # The pipeline's fallback: when no relative fit to this catalog is usable, fit the
            # exposures one by one from the default WCS with all their sources.
            attempts.append(("IMG", _default_wcs(exposures), _all_sources(exposures)))
        for fit_mode, start_wcs, fit_masks in attempts:
            if fit_mode == "IMG" and mode == "REL":
                if not needs_image_by_image([
                    c.score.quality for c in candidates
                    if c.score is not None and c.score.catalog == item.name and c.score.mode == "REL"
                ]):
                    break
                logger.info("catalog %s: no usable relative fit; fitting the exposures one by one (FIT_IMG)", item.name)
            for q in _fit_catalog(
                fit_mode, start_wcs, fit_masks, item, ref_table, region, exposures, relative, cfg, base, top,
                origin, cat_details, candidates, passengers,
            ):
                if best is None or q < best[0]:
                    best = (q, item.name)
        if catalog_search_done(best[0] if best else None, cfg.stop_at_quality):
            break
    # Not pulled from the generator, so never looked up (no service request for them).
    if best is not None and catalog_search_done(best[0], cfg.stop_at_quality) and not (settings.catalog and settings.catalog.is_file()):
        for name in cfg.catalogs.order:
            if name in seen:
                continue
            candidates.append(_not_done(
                f"aposteriori-{mode}-{name}", f"{base}-FIT_{mode}_{name}", top / f"aposteriori-{mode}-{name}",
                NOT_ATTEMPTED, f"not attempted: {best[1]} already gave quality {best[0]}", common,
            ))
    logger.info(
        "a posteriori stage: %d candidate(s), qualities %s, %.1f s",
        len(candidates), [c.quality for c in candidates], time.perf_counter() - t0, extra=CONSOLE,
    )
    return candidates


def _default_wcs(exposures: Sequence[_Exposure]) -> dict[tuple[int, int], WCS]:
    return {(i, j): chip.wcs for i, e in enumerate(exposures) for j, chip in enumerate(e.chips)}


def _all_sources(exposures: Sequence[_Exposure]) -> dict[tuple[int, int], np.ndarray]:
    return {(i, j): np.ones(len(ch.sources), dtype=bool) for i, e in enumerate(exposures) for j, ch in enumerate(e.chips)}


def _fit_catalog(
    mode: str,
    start_wcs: Mapping[tuple[int, int], WCS],
    masks: Mapping[tuple[int, int], np.ndarray],
    catalog: catmod.ReferenceCatalog,
    ref_table: Table,
    region: catmod.Region,
    exposures: Sequence[_Exposure],
    relative: _Relative,
    cfg: AposterioriConfig,
    base: str,
    top: Path,
    default: Candidate,
    cat_details: Mapping[str, Any],
    candidates: list[Candidate],
    passengers: Sequence[Path] = (),
) -> list[int]:
    """Fit every geometry (and the sparse one if none is usable); append candidates; return usable qualities."""
    wcsname = f"{base}-FIT_{mode}_{catalog.name}"
    geometries = list(cfg.fit.geometries)
    results: list[tuple[str, _FitOutcome, int, tuple[str, ...]]] = []
    for geometry in geometries:
        outcome = _absolute_fit(exposures, start_wcs, masks, catalog, ref_table, region, geometry, mode, relative, cfg)
        results.append((geometry, outcome, *assess_fit(outcome.stats, cfg.quality)))
    sparse = cfg.fit.sparse_geometry
    if sparse and sparse not in geometries and try_sparse_geometry([r[2] for r in results]):
        logger.info("catalog %s: no %s fit usable; trying a %s fit (sparse field)", catalog.name, "/".join(geometries), sparse)
        outcome = _absolute_fit(exposures, start_wcs, masks, catalog, ref_table, region, sparse, mode, relative, cfg)
        results.append((sparse, outcome, *assess_fit(outcome.stats, cfg.quality)))
    usable = []
    for geometry, outcome, q, reasons in results:
        name = _candidate_name(mode, catalog.name, geometry)
        folder = top / name
        details = {**cat_details, **outcome.details, "statistics": _stats_dict(outcome.stats), "quality_reasons": list(reasons)}
        score = FitScore(
            quality=q, reasons=tuple(reasons), statistics=outcome.stats, catalog=catalog.name,
            catalog_rank=int(cat_details.get("catalog_rank", 99)), mode=mode,
            n_transforms=1 if mode == "REL" else len(exposures),
        )
        if not is_usable_fit(q) or not outcome.wcs:
            candidates.append(_not_done(name, wcsname, folder, q, "; ".join(reasons), details, score))
            continue
        candidates.append(_materialise(
            name, wcsname, folder, default, exposures, outcome, catalog, mode, geometry, score, details, passengers
        ))
        usable.append(q)
    return usable


def _stats_dict(stats: FitStatistics) -> dict[str, Any]:
    from dataclasses import asdict

    out = asdict(stats)
    for k, v in list(out.items()):
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = None
        elif isinstance(v, float):
            out[k] = round(v, 4)
    out["exposure_offsets_mas"] = [[round(a, 3), round(b, 3)] for a, b in stats.exposure_offsets_mas]
    out["exposure_matches"] = list(stats.exposure_matches)
    return out


def _materialise(
    name: str,
    wcsname: str,
    folder: Path,
    default: Candidate,
    exposures: Sequence[_Exposure],
    outcome: _FitOutcome,
    catalog: catmod.ReferenceCatalog,
    mode: str,
    geometry: str,
    score: FitScore,
    details: dict[str, Any],
    passengers: Sequence[Path] = (),
) -> Candidate:
    quality, reasons = score.quality, score.reasons
    prepare_workdir(folder)
    originals = [p for e in exposures for p in e.originals] + list(passengers)
    if passengers:
        # What the delivered file of an unfitted exposure is named after (autodriz.products).
        details = {**details, "unfitted_wcsname": {str(p): default.wcsname for p in passengers}}
    copies = copy_exposures([default.copies[p] for p in originals], folder)
    by_original = {orig: copies[default.copies[orig]] for orig in originals}
    stats = outcome.stats
    rms_ra = float(details.get("rms_ra_mas") or 0.0)
    rms_dec = float(details.get("rms_dec_mas") or 0.0)
    kind_text = "relatively aligned to" if mode == "REL" else "aligned image by image to"
    keywords = {
        "NMATCHES": (int(stats.n_matches), "matched sources in the a posteriori fit"),
        "RMS_RA": (rms_ra, "RMS of the fit in RA (mas)"),
        "RMS_DEC": (rms_dec, "RMS of the fit in Dec (mas)"),
        "CRDER1": (rms_ra / _MAS_PER_DEG, "systematic error in RA (deg)"),
        "CRDER2": (rms_dec / _MAS_PER_DEG, "systematic error in Dec (deg)"),
        "FITGEOM": (geometry, "fit geometry of the a posteriori solution"),
        "WCSTYPE": (f"a posteriori solution {kind_text} {catalog.name.upper()}"[:60], "type of WCS"),
    }
    _write_solution(exposures, outcome.wcs, by_original, wcsname, keywords)
    notes = tuple(reasons) if quality != 1 else ()
    notes += tuple(catalog.notes)
    logger.info(
        "a posteriori %s: quality %d (%s), %d matches, RMS %.2f mas, offset %.3f″ → %s in %s",
        name, quality, QUALITY_MEANING[quality], stats.n_matches, stats.rms_mas, stats.radial_offset_arcsec,
        wcsname, folder,
    )
    for r in reasons:
        logger.info("  %s: %s", name, r)
    return Candidate(
        name=name,
        wcsname=wcsname,
        workdir=folder,
        copies=by_original,
        source=f"tweakwcs {geometry} fit ({'relative, then absolute' if mode == 'REL' else 'image by image'}) to {catalog.name} from {catalog.origin}",
        updated=True,
        notes=notes,
        kind="aposteriori",
        quality=quality,
        details=details,
        score=score,
    )


class AposterioriStrategy:
    """Fits to reference catalogs (:func:`make_aposteriori_candidates`), ``compute_aposteriori``.

    Grism/prism data have no point sources to fit, and exposures the screening left out
    (:mod:`autodriz.screening`) are not fitted: when that is all of them, the stage is skipped.
    """

    folder = "aposteriori"
    section = "compute_aposteriori"
    logger = logger

    def plan(self, ctx: RunContext) -> StagePlan:
        """Skipped for grism/prism data, when switched off or when no exposure can be aligned."""
        dataset = ctx.dataset
        if dataset.is_spectroscopic:
            grism = f"{'/'.join(dataset.filters) or 'these'} exposures are grism/prism (spectroscopic) images"
            line = f"a posteriori stage skipped: {grism}, which have no point sources to fit"
            return StagePlan((line,), line)
        switched = switch_plan(ctx.settings, self.section, "a posteriori", "sources → reference catalogs → tweakwcs fits")
        if switched.skipped:
            return switched
        screened = [e for e in dataset.exposures if e.not_alignable]
        if screened and len(screened) == len(dataset.exposures):
            line = (
                "a posteriori stage skipped: no exposure can be aligned ("
                + "; ".join(f"{e.rootname}: {', '.join(e.not_alignable)}" for e in screened) + ")"
            )
            return StagePlan((line,), line)
        # One line per exposure, as runastrodriz logs analyze.py's verdicts.
        return StagePlan(switched.lines + tuple(
            f"exposure {e.rootname} left out of source detection and fitting (drizzled with the "
            f"WCS the fits start from): {', '.join(e.not_alignable)}"
            for e in screened
        ))

    def propose(self, ctx: RunContext) -> list[Candidate]:
        """One candidate per catalog × geometry tried, starting from ``ctx.verified_start()``."""
        assert ctx.default is not None, "the a posteriori stage runs after the default's"
        start = ctx.verified_start()
        return make_aposteriori_candidates(ctx.default, ctx.dataset, ctx.settings, ctx.workroot, start=start,
                                           early=ctx.detected)
