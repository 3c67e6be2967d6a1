"""AstroDrizzle parameters per detector and number of exposures (``config/astrodrizzle.toml``).

They replace the MDRIZTAB reference table the pipeline reads, with the same row selection.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autodriz.configfiles import ASTRODRIZZLE_FILE_NAME, default_config_dir, read_toml
from autodriz.errors import ConfigError
from autodriz.instruments import REGISTRY, Registry

log = logging.getLogger(__name__)

_ROW_KEY = re.compile(r"^n([1-9][0-9]*)$")
# Steps that need at least two exposures: with one there is nothing to take a median of.
_MULTI_EXPOSURE_STEPS = ("driz_separate", "median", "blot", "driz_cr")


def _load_astrodrizzle_table(path: Path | None = None) -> tuple[Path, dict[str, Any]]:
    if path is None:
        path = default_config_dir() / ASTRODRIZZLE_FILE_NAME
    data = read_toml(path, "AstroDrizzle parameter file")
    if not isinstance(data.get("default"), dict):
        raise ConfigError(f"AstroDrizzle parameter file {path} has no [default] table")
    return path, data


def astrodrizzle_instrument_keys() -> tuple[str, ...]:
    """List the instrument keys :func:`astrodrizzle_defaults` knows.

    Returns
    -------
    tuple of str
        Section names of ``config/astrodrizzle.toml`` other than ``default``, e.g.
        ``("ACS/WFC", "ACS/HRC", ...)``.
    """
    _, data = _load_astrodrizzle_table()
    return tuple(k for k in data if k != "default")


def astrodrizzle_defaults(
    instrument_key: str,
    n_exposures: int,
    *,
    exptime_ratio: float | None = None,
    table_file: str | Path | None = None,
    registry: Registry = REGISTRY,
) -> dict[str, Any]:
    """AstroDrizzle parameters for a detector and a number of exposures.

    Mirrors the pipeline's MDRIZTAB row selection: ``[default]``, then the detector's section
    (the row for two exposures), then the sub-table ``n<K>`` with the largest ``K <=
    n_exposures``. For a single exposure the separate-drizzle, median, blot and CR steps are
    switched off whatever the table says, since they need at least two images.

    Parameters
    ----------
    instrument_key : str
        ``"INSTRUMENT/DETECTOR"`` as in the headers, e.g. ``"ACS/WFC"``, ``"WFC3/IR"``; case is
        ignored. An instrument with a single section (``"WFPC2"``) accepts any detector
        (``"WFPC2/PC"``) or none.
    n_exposures : int
        Number of exposures that will be drizzled together, >= 1.
    exptime_ratio : float, optional
        Longest / shortest exposure time. Above 2, as in runastrodriz, ``combine_type`` becomes
        ``"median"`` with ``combine_nhigh = 0`` because minmed assumes similar exposures.
    table_file : str or pathlib.Path, optional
        Another parameter file with the same layout (default: the packaged
        ``astrodrizzle.toml``).
    registry : Registry, optional
        Maps the detector to its section (:attr:`InstrumentDetector.config_key`); default
        :data:`autodriz.instruments.REGISTRY`.

    Returns
    -------
    dict
        Parameter name → value, ready for ``AstroDrizzle(**params)``; a new dict each call.

    Raises
    ------
    ConfigError
        For an instrument key the table does not have, or a malformed table.
    ValueError
        When ``n_exposures`` < 1.
    """
    if isinstance(n_exposures, bool) or not isinstance(n_exposures, int) or n_exposures < 1:
        raise ValueError(f"n_exposures must be an integer >= 1, not {n_exposures!r}")
    path, data = _load_astrodrizzle_table(None if table_file is None else Path(table_file))

    section_name = _find_section(data, registry.config_key(instrument_key), path)
    section = data[section_name]
    base = {k: v for k, v in section.items() if not isinstance(v, dict)}
    rows: dict[int, dict[str, Any]] = {}
    for key, value in section.items():
        if not isinstance(value, dict):
            continue
        match = _ROW_KEY.match(key)
        if match is None:
            raise ConfigError(
                f"AstroDrizzle parameter file {path}: [\"{section_name}\".{key}] is not a row; "
                "rows are named n<K> (K = minimum number of exposures, e.g. n1, n6)"
            )
        rows[int(match.group(1))] = value

    params: dict[str, Any] = dict(data["default"])
    params.update(base)
    if n_exposures == 1:
        chosen = 1 if 1 in rows else None
    else:
        eligible = [k for k in rows if 1 < k <= n_exposures]
        chosen = max(eligible) if eligible else None
    if chosen is not None:
        params.update(rows[chosen])

    if n_exposures == 1:
        for step in _MULTI_EXPOSURE_STEPS:
            params[step] = False
    elif exptime_ratio is not None and exptime_ratio > 2:
        params["combine_type"] = "median"
        params["combine_nhigh"] = 0

    row_text = f"row n{chosen}" if chosen is not None else "section values only"
    log.debug(
        "AstroDrizzle defaults for %s with %d exposure(s): [%s] %s",
        instrument_key, n_exposures, section_name, row_text,
    )
    return params


def _find_section(data: Mapping[str, Any], instrument_key: str, path: Path) -> str:
    sections = {k.upper(): k for k in data if k != "default" and isinstance(data[k], dict)}
    key = instrument_key.strip().upper()
    if key in sections:
        return sections[key]
    instrument = key.split("/", 1)[0]
    if instrument in sections:  # instrument with a single section (WFPC2)
        return sections[instrument]
    raise ConfigError(
        f"no AstroDrizzle parameters for instrument key {instrument_key!r} in {path}; "
        f"known keys: {', '.join(sections.values())}"
    )
