"""Catalog tables: reading any catalog file, normalising columns, proper motions and expected errors."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from autodriz import failpoints
from autodriz.catalogs.base import CatalogSpec, ReferenceCatalog, Region
from autodriz.skygeom import angular_distance

_RA_NAMES = ("ra", "ra_icrs", "raj2000", "_raj2000", "radeg", "ra_deg", "alpha_j2000", "ra2000")
_DEC_NAMES = ("dec", "de_icrs", "dec_icrs", "dej2000", "_dej2000", "decdeg", "dec_deg", "delta_j2000", "de", "dec2000")
_PMRA_NAMES = ("pmra", "pm_ra", "pmracosdec", "rapm")
_PMDEC_NAMES = ("pmdec", "pmde", "pm_dec", "decpm")
_EPOCH_NAMES = ("ref_epoch", "epoch", "epoch_year", "refepoch")
_RAERR_NAMES = ("ra_error", "e_ra_icrs", "e_raj2000", "era")
_DECERR_NAMES = ("dec_error", "e_de_icrs", "e_dej2000", "edec", "e_dec_icrs")
_PMRAERR_NAMES = ("pmra_error", "e_pmra", "e_pmracosdec")
_PMDECERR_NAMES = ("pmdec_error", "e_pmde", "e_pmdec")
_MAG_NAMES = (
    "mag", "phot_g_mean_mag", "gmag", "g", "rmag", "r", "jmag", "j", "fpgmag", "mag_auto", "vmag",
)
#: Magnitudes at or beyond these values are placeholders for "missing".
_MISSING_MAG = (-99.0, 99.0)


def normalise_name(text: str) -> str:
    """Lower case without punctuation: ``Gaia_eDR3`` → ``gaiaedr3``."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _find_column(table: Table, names: Sequence[str]) -> str | None:
    lower = {c.lower(): c for c in table.colnames}
    for n in names:
        if n in lower:
            return lower[n]
    return None


def as_float(col: Any) -> np.ndarray:
    """A column as floats, masked entries as NaN."""
    data = np.ma.filled(np.ma.asarray(col, dtype=float), np.nan) if np.ma.isMaskedArray(col) or hasattr(col, "mask") else np.asarray(col, dtype=float)
    return np.asarray(data, dtype=float)


def read_any(path: Path) -> Table:
    """A catalog file as astropy reads it, the format chosen by its suffix (not normalised)."""
    failpoints.hit("catalog.read")
    suffix = path.suffix.lower()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if suffix == ".ecsv":
            return Table.read(path, format="ascii.ecsv")
        if suffix in (".fits", ".fit"):
            return Table.read(path, format="fits")
        if suffix == ".csv":
            return Table.read(path, format="ascii.csv")
        # .cat/.txt/.dat: the DrizzlePac notebook extracts are commented_header; fall back on
        # astropy's guessing for anything else.
        first = path.read_text(encoding="utf-8", errors="replace").lstrip().splitlines()[:1]
        if first and first[0].startswith("#") and not first[0].startswith("# %ECSV"):
            try:
                return Table.read(path, format="ascii.commented_header")
            except (ValueError, IndexError):
                pass
        return Table.read(path, format="ascii")


def normalise_table(raw: Table, *, default_epoch: float | None = None) -> tuple[Table, list[str]]:
    """Bring a catalog table to the standard columns; return it and notes.

    Raises
    ------
    ValueError
        When no RA/Dec columns can be identified.
    """
    notes: list[str] = []
    ra_name = _find_column(raw, _RA_NAMES)
    dec_name = _find_column(raw, _DEC_NAMES)
    if ra_name is None or dec_name is None:
        raise ValueError(f"no RA/Dec columns among {raw.colnames}")
    out = Table()
    out["ra"] = as_float(raw[ra_name])
    out["dec"] = as_float(raw[dec_name])
    mag_name = _find_column(raw, _MAG_NAMES)
    if mag_name is not None:
        mag = as_float(raw[mag_name])
        bad = ~np.isfinite(mag) | (mag <= _MISSING_MAG[0]) | (mag >= _MISSING_MAG[1])
        mag[bad] = np.nan
        if bad.any():
            notes.append(f"{int(bad.sum())} of {len(mag)} magnitudes missing ({mag_name})")
        out["mag"] = mag
    else:
        out["mag"] = np.full(len(out), np.nan)
        notes.append("no magnitude column: brightness ordering and the magnitude cross-check are unavailable")
    pmra_name = _find_column(raw, _PMRA_NAMES)
    pmdec_name = _find_column(raw, _PMDEC_NAMES)
    if pmra_name is not None and pmdec_name is not None:
        out["pmra"] = as_float(raw[pmra_name])
        out["pmdec"] = as_float(raw[pmdec_name])
    epoch_name = _find_column(raw, _EPOCH_NAMES)
    if epoch_name is not None:
        out["epoch"] = as_float(raw[epoch_name])
    elif default_epoch is not None:
        out["epoch"] = np.full(len(out), float(default_epoch))
    for names, col in (
        (_RAERR_NAMES, "ra_error"), (_DECERR_NAMES, "dec_error"),
        (_PMRAERR_NAMES, "pmra_error"), (_PMDECERR_NAMES, "pmdec_error"),
    ):
        n = _find_column(raw, names)
        if n is not None:
            out[col] = as_float(raw[n])
    good = np.isfinite(out["ra"]) & np.isfinite(out["dec"])
    if not good.all():
        notes.append(f"{int((~good).sum())} rows without a position dropped")
        out = out[good]
    out.meta.update({k: v for k, v in raw.meta.items() if isinstance(k, str) and k != "comments"})
    return out, notes


def read_catalog_file(path: str | Path, *, default_epoch: float | None = None) -> tuple[Table, list[str]]:
    """Read and normalise a catalog file (ECSV, commented-header ascii, CSV, FITS).

    Raises
    ------
    ValueError, OSError
        Unreadable file or no RA/Dec columns.
    """
    return normalise_table(read_any(Path(path)), default_epoch=default_epoch)


def propagate(table: Table, epoch: float) -> tuple[Table, int]:
    """Move positions to ``epoch`` (decimal year) using ``pmra``/``pmdec``/``epoch`` columns.

    Rows without a proper motion or an epoch keep their position. Returns a new table and the
    number of rows moved. Linear propagation in the tangent plane: errors < 0.1 mas for the
    ≲ 20 yr and ≲ 1 ″/yr of HST data.
    """
    out = table.copy(copy_data=True)
    if not {"pmra", "pmdec", "epoch"} <= set(out.colnames):
        return out, 0
    pmra = np.asarray(out["pmra"], dtype=float)
    pmdec = np.asarray(out["pmdec"], dtype=float)
    dt = epoch - np.asarray(out["epoch"], dtype=float)
    ok = np.isfinite(pmra) & np.isfinite(pmdec) & np.isfinite(dt)
    dec = np.asarray(out["dec"], dtype=float)
    ra = np.asarray(out["ra"], dtype=float)
    new_dec = dec + np.where(ok, pmdec * dt, 0.0) / 3.6e6
    new_ra = ra + np.where(ok, pmra * dt, 0.0) / 3.6e6 / np.cos(np.deg2rad(dec))
    out["ra"] = new_ra % 360.0
    out["dec"] = new_dec
    return out, int(ok.sum())


def _has_proper_motion(table: Table) -> np.ndarray:
    """Rows whose proper motion and epoch are known (the rows :func:`propagate` moves)."""
    if not {"pmra", "pmdec", "epoch"} <= set(table.colnames):
        return np.zeros(len(table), dtype=bool)
    cols = [np.asarray(table[c], dtype=float) for c in ("pmra", "pmdec", "epoch")]
    return np.logical_and.reduce([np.isfinite(c) for c in cols])


def _with_star_errors(
    table: Table, spec: CatalogSpec, moved: np.ndarray, gap: float | None, unknown_pm_mas_yr: float
) -> Table:
    """Add ``sigma_mas``: each star's per-axis position error at the observation epoch."""
    out = table.copy(copy_data=False)
    n = len(out)
    pos = np.full(n, spec.error_mas, dtype=float)
    if "ra_error" in out.colnames and "dec_error" in out.colnames:
        e = np.hypot(np.asarray(out["ra_error"], dtype=float), np.asarray(out["dec_error"], dtype=float)) / math.sqrt(2)
        pos = np.where(np.isfinite(e) & (e > 0), e, pos)
    years = 10.0 if gap is None else gap  # an unknown gap: a decade of motion, as below
    pm_err = np.full(n, spec.pm_error_mas_yr, dtype=float)
    if "pmra_error" in out.colnames and "pmdec_error" in out.colnames:
        # A faint Gaia star's motion is 50x less certain than a bright one's: over a decade
        # that is the difference between 0.2 and 14 mas, so the star's own error weights it.
        e = np.hypot(np.asarray(out["pmra_error"], dtype=float), np.asarray(out["pmdec_error"], dtype=float)) / math.sqrt(2)
        pm_err = np.where(np.isfinite(e) & (e > 0), e, pm_err)
    motion = np.where(moved, pm_err, unknown_pm_mas_yr) * years
    out["sigma_mas"] = np.hypot(pos, motion)
    return out


def cone_select(table: Table, region: Region) -> Table:
    """Rows within ``region`` (angular distance)."""
    if len(table) == 0:
        return table
    sep = angular_distance(np.asarray(table["ra"]), np.asarray(table["dec"]), region.ra, region.dec)
    return table[sep <= region.radius]


def finish_catalog(
    name: str,
    table: Table,
    origin: str,
    spec: CatalogSpec,
    epoch: float | None,
    notes: Iterable[str] = (),
    *,
    unknown_pm_mas_yr: float = 5.0,
    max_gap_without_pm_yr: float = 5.0,
) -> ReferenceCatalog:
    """Propagate to ``epoch`` and work out the expected error, per star and typical.

    Each star gets ``sigma_mas``: its per-axis position error at the observation epoch (catalog
    error ⊕ proper-motion error × epoch gap, or ⊕ ``unknown_pm_mas_yr`` × gap for a star without
    a proper motion); the fit weights it with the HST centroid error.

    Parameters
    ----------
    unknown_pm_mas_yr : float
        Typical proper motion assumed for stars without proper motions (grows their expected
        error with the epoch gap).
    max_gap_without_pm_yr : float
        In a catalog with proper motions, stars without one are dropped when the epoch gap is
        larger than this (their unknown motion, ~5 mas/yr, would then exceed ~25 mas).
    """
    notes = list(notes)
    catalog_epoch = spec.epoch
    if "epoch" in table.colnames and np.isfinite(np.asarray(table["epoch"], dtype=float)).any():
        catalog_epoch = float(np.nanmedian(np.asarray(table["epoch"], dtype=float)))
    # A service that applied the proper motions itself (MAST's EPOCH=) says to which epoch; the
    # positions move from there, while the gap (the error model) is still the catalog's.
    positions_epoch = table.meta.get("positions_epoch")
    if positions_epoch is not None and catalog_epoch is not None and abs(catalog_epoch - float(positions_epoch)) < 0.01:
        catalog_epoch = spec.epoch  # the service wrote the requested epoch into its epoch column
    has_pm_cols = "pmra" in table.colnames and "pmdec" in table.colnames
    n_moved = 0
    if has_pm_cols and epoch is not None and "epoch" in table.colnames:
        if positions_epoch is not None:
            source = table.copy(copy_data=True)
            at = np.asarray(source["epoch"], dtype=float)
            source["epoch"] = np.where(np.isfinite(at), float(positions_epoch), np.nan)
            table, n_moved = propagate(source, epoch)
            table["epoch"] = at
        else:
            table, n_moved = propagate(table, epoch)
    has_pm = n_moved > 0
    gap = abs(epoch - catalog_epoch) if (epoch is not None and catalog_epoch is not None) else None
    moved = _has_proper_motion(table) if has_pm else np.zeros(len(table), dtype=bool)
    n_dropped = 0
    if has_pm and gap is not None and gap > max_gap_without_pm_yr and not moved.all():
        n_dropped = int((~moved).sum())
        table, moved = table[moved], moved[moved]
    table = _with_star_errors(table, spec, moved, gap, unknown_pm_mas_yr)
    # Per-axis position error at the catalog epoch.
    if "ra_error" in table.colnames and "dec_error" in table.colnames:
        e = np.hypot(np.asarray(table["ra_error"], dtype=float), np.asarray(table["dec_error"], dtype=float)) / math.sqrt(2)
        pos_err = float(np.nanmedian(e)) if np.isfinite(e).any() else spec.error_mas
    else:
        pos_err = spec.error_mas
    if has_pm:
        motion_err = spec.pm_error_mas_yr * (gap or 0.0)
        n_missing = len(table) - n_moved
        notes.append(
            f"proper motions of {n_moved} stars propagated from {catalog_epoch:.2f} to the observation "
            f"epoch {epoch:.3f}"
            + (f" (by the catalog service, to {float(positions_epoch):.3f})" if positions_epoch is not None else "")
            + (f"; {n_missing} stars without proper motion kept at the catalog epoch (weighted by their larger error)"
               if n_missing else "")
            + (f"; {n_dropped} stars without proper motion dropped ({gap:.1f} yr epoch gap > "
               f"{max_gap_without_pm_yr:g} yr)" if n_dropped else "")
        )
    else:
        if gap is None:
            # Unknown epoch gap: assume a decade of unmodelled motion.
            motion_err = unknown_pm_mas_yr * 10.0
            notes.append("no proper motions and no catalog epoch: positions used as they are (epoch gap unknown)")
        else:
            motion_err = unknown_pm_mas_yr * gap
            notes.append(
                f"no proper motions: positions of epoch {catalog_epoch:.2f} used as they are "
                f"({gap:.1f} yr from the observation)"
            )
    expected = math.sqrt(2.0) * math.hypot(pos_err, motion_err)
    return ReferenceCatalog(
        name=name,
        table=table,
        origin=origin,
        has_pm=has_pm,
        epoch=epoch if has_pm else catalog_epoch,
        catalog_epoch=catalog_epoch,
        expected_error_mas=expected,
        notes=tuple(notes),
    )
