"""Reference catalogs for a posteriori fits: user file or folder, local cache, network service.

Every catalog in the ordered list (``config/aposteriori.toml``, ``[catalogs] order``; like the
HST pipeline, Gaia first) is looked for, in this order:

1. the file the user names (``settings.catalog`` is a file): it is *the* reference catalog, and
   the list is replaced by that one file, named after its ``catalog`` meta keyword, a known
   catalog name in its file name (``gaia.cat`` → ``GAIA``, ``sdss.cat`` → ``SDSS``), or ``USER``;
2. a catalog folder (``settings.catalog`` is a folder): files whose stem is the catalog's name,
   case and punctuation ignored (``GAIAeDR3.ecsv``, ``gaia_edr3.cat``, ``<root>_gaiaedr3.ecsv``);
   files named after other known catalogs (``sdss.cat``) are tried after the list;
3. the local cache ``settings.cache_dir/catalogs/<NAME>/``: an earlier download that covers the
   region;
4. a network service, unless ``settings.offline``: VizieR through astroquery, or MAST's catalog
   web service as the HST pipeline queries it (``settings.catalog_service``); each request is
   bounded by what is left of ``settings.service_timeout`` (a worker thread with a deadline
   *and* the socket timeout): the requests for all catalogs share that one budget, and once the
   service has failed it is not asked again in the same call, so the total delay for all
   catalogs is bounded by one timeout, even when the service answers slowly.

Every table is normalised to columns ``ra``, ``dec`` (degrees), ``mag`` (NaN when missing; the
``-9999`` of SDSS extracts becomes NaN), and, when the catalog has them, ``pmra`` (with
cos δ), ``pmdec`` (mas/yr), ``epoch`` (decimal year), ``ra_error``/``dec_error`` (mas). Proper
motions are propagated to the epoch of the observation (EXPSTART); catalogs without them are
used as they are and marked ``has_pm = False``, and their expected error grows with the epoch gap.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import Any, Protocol
from xml.parsers.expat import ExpatError

import numpy as np
from astropy.table import Table

from autodriz import failpoints
from autodriz.config import CATALOG_SERVICES
from autodriz.errors import AutodrizError
from autodriz.exitcodes import ExitCode
from autodriz.skygeom import angular_distance

logger = logging.getLogger(__name__)

#: File extensions a catalog file may have (looked for in catalog folders).
CATALOG_EXTENSIONS: tuple[str, ...] = (".ecsv", ".cat", ".csv", ".txt", ".dat", ".fits", ".fit")

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


class CatalogServiceError(AutodrizError):
    """A catalog service was unreachable and ``strict_services`` asks for that to be an error."""

    exit_code = ExitCode.WCS_FAILED


class ServiceUnavailable(RuntimeError):
    """A service request failed or timed out (message says which)."""


class CatalogNotServed(LookupError):
    """The service does not provide this catalog (the service itself may be fine)."""


@dataclass(frozen=True)
class CatalogSpec:
    """What we know about one named catalog (``[catalog.<NAME>]`` in aposteriori.toml).

    Attributes
    ----------
    name : str
        Canonical name, as written into WCSNAME (``GAIAeDR3``).
    vizier : str or None
        VizieR catalog id for the network service (None: no service).
    mast : str or None
        Name of the catalog at MAST's catalog web service (``CAT=``; None: not served there).
    columns : tuple of str
        VizieR columns to fetch (``*`` for the default set).
    epoch : float or None
        Epoch of the positions (decimal year) when the table has no epoch column.
    error_mas : float
        Typical per-axis position error at ``epoch``, mas (used when the table has no error
        columns).
    pm_error_mas_yr : float
        Typical proper-motion error, mas/yr (grows the error away from ``epoch``).
    mag_column : str or None
        VizieR magnitude column: the service returns the brightest stars first, so that a
        dense field is cut at the faint end, not at an arbitrary row.
    mag_limit : float or None
        Faintest magnitude asked for (stars fainter than HST's detections add only false
        matches).
    """

    name: str
    vizier: str | None = None
    mast: str | None = None
    columns: tuple[str, ...] = ("*",)
    epoch: float | None = None
    error_mas: float = 50.0
    pm_error_mas_yr: float = 1.0
    mag_column: str | None = None
    mag_limit: float | None = None


@dataclass(frozen=True)
class Region:
    """A cone on the sky, degrees."""

    ra: float
    dec: float
    radius: float


@dataclass(frozen=True)
class ReferenceCatalog:
    """A reference catalog ready for fitting.

    Attributes
    ----------
    name : str
        Catalog name (``GAIAeDR3``, ``SDSS``, ``USER`` …).
    table : astropy.table.Table
        Normalised columns (see module notes), positions at ``epoch`` when ``has_pm``.
    origin : str
        Where it came from: ``file:…``, ``folder:…``, ``cache:…``, ``service:…``.
    has_pm : bool
        Proper motions were available and applied.
    epoch : float or None
        Epoch the positions refer to after propagation (None: unknown).
    catalog_epoch : float or None
        Epoch of the catalog's own positions.
    expected_error_mas : float
        Expected per-star position error (total, both axes) at the observation epoch, mas.
    notes : tuple of str
        Facts worth reporting (missing magnitudes, epoch handling …).
    """

    name: str
    table: Table
    origin: str
    has_pm: bool
    epoch: float | None
    catalog_epoch: float | None
    expected_error_mas: float
    notes: tuple[str, ...] = ()

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description for the report."""
        return {
            "catalog": self.name,
            "origin": self.origin,
            "n_stars": len(self.table),
            "has_pm": self.has_pm,
            "epoch": self.epoch,
            "catalog_epoch": self.catalog_epoch,
            "expected_error_mas": round(self.expected_error_mas, 3),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class CatalogUnavailable:
    """A catalog that could not be obtained, and why."""

    name: str
    reason: str
    seconds: float = 0.0


class CatalogService(Protocol):
    """A network service that returns a catalog around a region (raises ServiceUnavailable)."""

    description: str

    def query(self, spec: CatalogSpec, region: Region, timeout: float, epoch: float | None = None) -> Table:
        """Stars around ``region``; ``epoch`` is the observation's, for services that propagate
        proper motions themselves (they then set ``meta["positions_epoch"]``)."""


# --------------------------------------------------------------------------------------------
# reading and normalising


def normalise_name(text: str) -> str:
    """Lower case without punctuation: ``Gaia_eDR3`` → ``gaiaedr3``."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _find_column(table: Table, names: Sequence[str]) -> str | None:
    lower = {c.lower(): c for c in table.colnames}
    for n in names:
        if n in lower:
            return lower[n]
    return None


def _as_float(col: Any) -> np.ndarray:
    data = np.ma.filled(np.ma.asarray(col, dtype=float), np.nan) if np.ma.isMaskedArray(col) or hasattr(col, "mask") else np.asarray(col, dtype=float)
    return np.asarray(data, dtype=float)


def _read_any(path: Path) -> Table:
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
    out["ra"] = _as_float(raw[ra_name])
    out["dec"] = _as_float(raw[dec_name])
    mag_name = _find_column(raw, _MAG_NAMES)
    if mag_name is not None:
        mag = _as_float(raw[mag_name])
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
        out["pmra"] = _as_float(raw[pmra_name])
        out["pmdec"] = _as_float(raw[pmdec_name])
    epoch_name = _find_column(raw, _EPOCH_NAMES)
    if epoch_name is not None:
        out["epoch"] = _as_float(raw[epoch_name])
    elif default_epoch is not None:
        out["epoch"] = np.full(len(out), float(default_epoch))
    for names, col in (
        (_RAERR_NAMES, "ra_error"), (_DECERR_NAMES, "dec_error"),
        (_PMRAERR_NAMES, "pmra_error"), (_PMDECERR_NAMES, "pmdec_error"),
    ):
        n = _find_column(raw, names)
        if n is not None:
            out[col] = _as_float(raw[n])
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
    return normalise_table(_read_any(Path(path)), default_epoch=default_epoch)


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


# --------------------------------------------------------------------------------------------
# finished catalogs


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


# --------------------------------------------------------------------------------------------
# where catalogs come from


def name_for_file(path: Path, meta: Mapping[str, Any], specs: Mapping[str, CatalogSpec]) -> str:
    """Catalog name of a user file: meta ``catalog``/``name``, a known name in the file name, else USER."""
    for key in ("catalog", "CATALOG", "name", "NAME"):
        value = meta.get(key)
        if isinstance(value, str) and value.strip():
            return re.sub(r"[^A-Za-z0-9]", "", value.strip()) or "USER"
    stem = normalise_name(path.stem)
    by_norm = {normalise_name(n): n for n in specs}
    if stem in by_norm:
        return by_norm[stem]
    # Longest known name contained in the stem ("field_gaiadr3" → GAIADR3, not GAIA).
    for norm in sorted(by_norm, key=len, reverse=True):
        if norm and norm in stem:
            return by_norm[norm]
    return "USER"


def find_in_folder(folder: Path, name: str) -> Path | None:
    """A catalog file for ``name`` in ``folder`` (stem equal to the name, or ending ``_<name>``)."""
    want = normalise_name(name)
    hits = []
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.suffix.lower() not in CATALOG_EXTENSIONS:
            continue
        stem = p.stem.lower()
        norm = normalise_name(stem)
        tail = normalise_name(stem.rsplit("_", 1)[-1]) if "_" in stem else None
        if norm == want or tail == want:
            hits.append(p)
    return hits[0] if hits else None


def folder_extras(folder: Path, order: Sequence[str], specs: Mapping[str, CatalogSpec]) -> list[str]:
    """Known catalogs with a file in ``folder`` that are not in ``order``."""
    out = []
    for name in specs:
        if name in order or name == "USER":
            continue
        if find_in_folder(folder, name) is not None:
            out.append(name)
    return out


def cache_folder(cache_dir: Path, name: str) -> Path:
    return cache_dir / "catalogs" / name


def find_in_cache(cache_dir: Path, name: str, region: Region) -> Path | None:
    """A cached download of ``name`` whose cone covers ``region``."""
    folder = cache_folder(cache_dir, name)
    if not folder.is_dir():
        return None
    for p in sorted(folder.glob("*.ecsv")):
        try:
            failpoints.hit("cache.read")
            meta = Table.read(p, format="ascii.ecsv").meta
        except (OSError, ValueError) as exc:
            logger.info("cache file %s unreadable (%s); ignored", p, exc)
            continue
        try:
            ra, dec, radius = float(meta["region_ra"]), float(meta["region_dec"]), float(meta["region_radius"])
        except (KeyError, TypeError, ValueError):
            continue
        if float(angular_distance(ra, dec, region.ra, region.dec)) + region.radius <= radius + 1e-9:
            return p
    return None


def write_cache(cache_dir: Path, name: str, region: Region, table: Table, origin: str) -> Path | None:
    """Store a downloaded catalog; failures only log (the cache is an optimisation)."""
    folder = cache_folder(cache_dir, name)
    path = folder / f"{region.ra:.5f}_{region.dec:+.5f}_{region.radius * 60:.2f}arcmin.ecsv"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        out = table.copy(copy_data=False)
        out.meta = {
            "catalog": name,
            "region_ra": region.ra,
            "region_dec": region.dec,
            "region_radius": region.radius,
            "origin": origin,
            "retrieved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if table.meta.get("positions_epoch") is not None:
            # Positions moved by the service: a later run must propagate from there.
            out.meta["positions_epoch"] = float(table.meta["positions_epoch"])
        tmp = path.with_name(path.name + ".tmp")
        failpoints.hit("cache.write")
        out.write(tmp, format="ascii.ecsv", overwrite=True)
        tmp.replace(path)
    except OSError as exc:
        logger.info("could not write catalog cache %s: %s", path, exc)
        return None
    logger.info("catalog %s cached in %s", name, path)
    return path


def failure_class(exc: BaseException, timeout: float | None = None) -> str:
    """What kind of failure a service call met, in a few words (DNS, refused, timeout, HTTP …).

    The exception chain of requests/urllib3 is hundreds of characters long; a user needs to
    know whether there is no network, no server, a slow server or a broken one.
    """
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    text = " ".join(f"{type(e).__name__}: {e}" for e in chain)
    lowered = text.lower()
    if isinstance(exc, ServiceUnavailable) and str(exc).startswith("no answer within"):
        return str(exc)
    if any(k in lowered for k in ("nameresolution", "name or service not known", "name resolution", "gaierror",
                                  "nodename nor servname")):
        return "DNS lookup failed: no network?"
    if "connection refused" in lowered or any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused"
    if "timed out" in lowered or "timeout" in lowered:
        return f"no answer within {timeout:g} s" if timeout is not None else "timed out"
    status = re.search(r"\b([45]\d\d) (?:server|client) error", lowered)
    if status:
        return f"HTTP {status.group(1)}"
    if "not a votable" in lowered:
        return "the answer is not a VOTable"
    if "not the catalog csv" in lowered:
        return "the answer is not the catalog CSV"
    first = f"{type(chain[-1]).__name__}: {chain[-1]}"
    return first if len(first) <= 100 else first[:99] + "…"


#: Exceptions a service call can raise because of the service or its answer: the network
#: (OSError covers requests' and socket errors, timeouts included), an answer that does not
#: parse (ValueError: UnicodeDecodeError, astropy's VOTable and CSV readers, astroquery's
#: EmptyResponseError), a connection cut mid-answer (EOFError, http.client's errors), broken
#: XML, and our own verdicts on an answer. Anything else (TypeError, KeyError …) is a bug.
_SERVICE_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, EOFError, HTTPException, ExpatError, ServiceUnavailable, CatalogNotServed,
)
#: Packages whose own exception classes describe a service failure (astroquery's
#: RemoteServiceError, TableParseError … derive from Exception only).
_SERVICE_CLIENT_PACKAGES = ("astroquery", "requests", "urllib3")


def is_service_error(exc: BaseException) -> bool:
    """Whether ``exc`` is what a catalog service or its answer can raise (not a bug of ours).

    Parameters
    ----------
    exc : BaseException
        Raised by a service call.

    Returns
    -------
    bool
    """
    if isinstance(exc, _SERVICE_ERRORS):
        return True
    module = type(exc).__module__ or ""
    return module.split(".", 1)[0] in _SERVICE_CLIENT_PACKAGES


def call_with_deadline(fn: Callable[[], Any], timeout: float) -> Any:
    """Run ``fn`` in a daemon thread and wait at most ``timeout`` seconds.

    Raises ServiceUnavailable on a timeout (the thread is abandoned; it ends by itself through
    its own socket timeout) or when ``fn`` raised a service or data error
    (:func:`is_service_error`). Any other exception ``fn`` raised is a bug and is raised again
    as it is, so that it ends the run with its traceback instead of passing for an outage.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        # Handed over to the calling thread, which sorts outages from bugs below: an exception
        # left in a thread would only be printed, and the caller would wait for nothing.
        except Exception as exc:  # noqa: BLE001
            box["error"] = exc

    worker = threading.Thread(target=target, name="autodriz-catalog-service", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise ServiceUnavailable(f"no answer within {timeout:g} s")
    if "error" in box:
        exc = box["error"]
        if isinstance(exc, ServiceUnavailable):  # already says what went wrong
            raise exc
        if not is_service_error(exc):
            raise exc
        raise ServiceUnavailable(f"{type(exc).__name__}: {exc}") from exc
    return box.get("value")


class VizierService:
    """Catalogs from VizieR through astroquery (``https://<server>/viz-bin/…``)."""

    def __init__(self, server: str = "vizier.cds.unistra.fr", row_limit: int = 20000) -> None:
        self.server = server
        self.row_limit = row_limit
        self.description = f"VizieR {server}"

    def query(self, spec: CatalogSpec, region: Region, timeout: float, epoch: float | None = None) -> Table:
        # VizieR returns positions at the catalog epoch: finish_catalog propagates them.
        if not spec.vizier:
            raise CatalogNotServed(f"no VizieR id configured for {spec.name}")

        def run() -> Table:
            import astropy.units as u
            from astropy.coordinates import SkyCoord
            from astroquery.vizier import Vizier

            columns = list(spec.columns)
            filters = {}
            if spec.mag_column:
                # "+column" asks VizieR to sort on it (brightest first), so that the row limit
                # drops the faintest stars of a dense field.
                columns = [c for c in columns if c != spec.mag_column] + [f"+{spec.mag_column}"]
                if spec.mag_limit is not None:
                    filters[spec.mag_column] = f"<{spec.mag_limit:g}"
            viz = Vizier(
                columns=columns, column_filters=filters, row_limit=self.row_limit, timeout=timeout,
                vizier_server=self.server,
            )
            result = viz.query_region(
                SkyCoord(region.ra * u.deg, region.dec * u.deg, frame="icrs"),
                radius=region.radius * u.deg,
                catalog=spec.vizier,
                cache=False,
            )
            if result is None:
                # astroquery returns None when the answer does not parse as a VOTable (an
                # error page, a proxy's HTML, garbage): an outage, not "no star here".
                raise ServiceUnavailable("the answer is not a VOTable")
            if len(result) == 0:
                return Table()
            return result[0]

        return call_with_deadline(run, timeout)


#: MAST's catalog web service, as drizzlepac's ``haputils.astrometric_utils`` (``DEF_CAT_URL``).
MAST_URL = "https://gsss.stsci.edu/webservices"
#: Julian dates and MJDs in a catalog's epoch column are told from decimal years by size, as
#: drizzlepac's ``convert_astrometric_table`` does (2MASS gives ``jdate``).
_JD_ABOVE, _MJD_ABOVE = 2400000.0, 10000.0


def _decimal_year(values: np.ndarray) -> np.ndarray:
    from astropy.time import Time

    out = np.asarray(values, dtype=float).copy()
    for above, fmt in ((_JD_ABOVE, "jd"), (_MJD_ABOVE, "mjd")):
        rows = np.isfinite(out) & (out > above)
        if rows.any():
            out[rows] = Time(out[rows], format=fmt).decimalyear
    return out


def parse_mast_csv(text: str) -> Table:
    """The table in an answer of MAST's ``vo/CatalogSearch.aspx`` with ``FORMAT=CSV``.

    The answer is a description line, then CSV (a header and one row per star), lines ending in
    ``\\r\\n``; drizzlepac (``get_catalog``) drops the first line and reads the rest with
    ``ascii.csv``, and so does this. Column names are brought to those :func:`normalise_table`
    reads, as drizzlepac's ``SUPPORTED_CATALOGS`` maps them: Gaia ``ra, dec, ra_error, dec_error,
    pmra, pmdec, pmra_error, pmdec_error, mag, epoch``; GSC ``rapm, decpm`` (mas/yr) — its
    ``raErr/decErr`` and ``rapmErr/decpmErr`` are left out, their units not being documented
    with the service, so the catalog's typical errors are used;
    2MASS ``jdate`` (a Julian date) becomes the decimal-year ``epoch``.

    Raises
    ------
    CatalogNotServed
        The answer is the service's ``Error …`` line (an unsupported catalog or request).
    ServiceUnavailable
        The answer is not that CSV (an error page, garbage).
    """
    lines = text.splitlines()
    if lines and lines[0].lstrip().lower().startswith("error"):
        raise CatalogNotServed(f"MAST answered: {lines[0].strip()[:100]}")
    rows = [ln for ln in lines[1:] if ln.strip()]
    if not rows:
        return Table()
    try:
        raw = Table.read(rows, format="ascii.csv")
    except (ValueError, IndexError, TypeError) as exc:
        raise ServiceUnavailable(f"the answer is not the catalog CSV ({type(exc).__name__})") from exc
    lower = {c.lower(): c for c in raw.colnames}
    if "ra" not in lower or "dec" not in lower:
        raise ServiceUnavailable(f"the answer is not the catalog CSV (columns {', '.join(raw.colnames[:6])})")
    out = Table()
    out["ra"], out["dec"] = raw[lower["ra"]], raw[lower["dec"]]
    for ours, theirs in (("ra_error", "ra_error"), ("dec_error", "dec_error"), ("pmra", "pmra"), ("pmdec", "pmdec"),
                         ("pmra_error", "pmra_error"), ("pmdec_error", "pmdec_error"),
                         ("pmra", "rapm"), ("pmdec", "decpm"), ("mag", "mag")):
        if theirs in lower and ours not in out.colnames:
            out[ours] = raw[lower[theirs]]
    for name in ("epoch", "jdate"):
        if name in lower:
            out["epoch"] = _decimal_year(_as_float(raw[lower[name]]))
            break
    return out


class MastCatalogService:
    """Catalogs from MAST's catalog web service, asked as the HST pipeline asks it.

    drizzlepac's ``haputils.astrometric_utils.get_catalog`` requests
    ``<url>/vo/CatalogSearch.aspx?RA=…&DEC=…&SR=…&FORMAT=CSV&CAT=…&MINDET=5&EPOCH=<yyyy.yyy>``:
    a cone (degrees) and the observation epoch, to which the service itself propagates the
    proper motions; if the service answers an ``Error`` line, it asks again without ``EPOCH``.
    This client sends the same request with ``requests`` (timeout, HTTP status checked) and
    marks the table with ``meta["positions_epoch"]`` when the service propagated.
    """

    def __init__(self, url: str = MAST_URL) -> None:
        self.url = url.rstrip("/")
        self.description = f"MAST catalogs {self.url.split('://', 1)[-1].split('/', 1)[0]}"

    def request_url(self, catalog: str, region: Region, epoch: float | None) -> str:
        """The request drizzlepac's ``get_catalog`` makes (``epoch`` None: without ``EPOCH``)."""
        spec = f"RA={region.ra}&DEC={region.dec}&SR={region.radius}&FORMAT=CSV&CAT={catalog}&MINDET=5"
        if epoch is not None:
            spec += f"&EPOCH={epoch:.3f}"
        return f"{self.url}/vo/CatalogSearch.aspx?{spec}"

    def query(self, spec: CatalogSpec, region: Region, timeout: float, epoch: float | None = None) -> Table:
        if not spec.mast:
            raise CatalogNotServed(f"{spec.name} is not a catalog of MAST's catalog service")
        deadline = time.monotonic() + timeout

        def get(url: str) -> str:
            import requests

            left = max(deadline - time.monotonic(), 0.01)
            answer = requests.get(url, headers={"Content-Type": "text/csv"}, timeout=left)
            answer.raise_for_status()
            try:
                return answer.content.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ServiceUnavailable("the answer is not the catalog CSV (not text)") from exc

        def run() -> Table:
            text = get(self.request_url(spec.mast, region, epoch))
            propagated = epoch is not None
            if epoch is not None and text.lstrip().lower().startswith("error"):
                logger.info("MAST catalog service refused EPOCH=%.3f for %s (%s); asking without it",
                            epoch, spec.name, text.strip().splitlines()[0][:100])
                text, propagated = get(self.request_url(spec.mast, region, None)), False
            table = parse_mast_csv(text)
            if propagated and len(table):
                table.meta["positions_epoch"] = float(f"{epoch:.3f}")
            return table

        return call_with_deadline(run, timeout)


def make_service(name: str, config: "CatalogConfig") -> CatalogService:
    """The network catalog service ``settings.catalog_service`` names."""
    if name == "mast":
        return MastCatalogService(config.mast_url)
    if name == "vizier":
        return VizierService(config.vizier_server)
    raise ValueError(f"unknown catalog service {name!r}; known: {', '.join(CATALOG_SERVICES)}")


def resolve_catalogs(*args: Any, **kwargs: Any) -> list[ReferenceCatalog | CatalogUnavailable]:
    """All of :func:`iter_catalogs` at once (same arguments)."""
    return list(iter_catalogs(*args, **kwargs))


def iter_catalogs(
    order: Sequence[str],
    region: Region,
    epoch: float | None,
    *,
    specs: Mapping[str, CatalogSpec],
    catalog_path: Path | None = None,
    cache_dir: Path | None = None,
    offline: bool = False,
    timeout: float = 10.0,
    strict_services: bool = False,
    service: CatalogService | None = None,
    unknown_pm_mas_yr: float = 5.0,
    max_gap_without_pm_yr: float = 5.0,
) -> Iterator[ReferenceCatalog | CatalogUnavailable]:
    """Obtain the catalogs of ``order`` one by one (see module notes for where from).

    A generator, so that the caller can stop asking (and the service is not queried for
    catalogs that are no longer needed).

    Parameters
    ----------
    order : sequence of str
        Catalog names to try.
    region : Region
        Cone covering the exposures (with margin); catalogs are cut to it.
    epoch : float or None
        Observation epoch (decimal year) for proper-motion propagation.
    specs : mapping
        Known catalogs by name.
    catalog_path : Path, optional
        ``settings.catalog``: a file (the only catalog) or a folder.
    cache_dir : Path, optional
        ``settings.cache_dir``.
    offline : bool
        Never use the service.
    timeout : float
        Seconds for the service, for all catalogs together (each request gets what is left).
    strict_services : bool
        Raise CatalogServiceError when the service fails instead of carrying on.
    service : CatalogService, optional
        The network service (default VizieR); tests pass a stub or a local server.

    Yields
    ------
    ReferenceCatalog or CatalogUnavailable
        One per catalog tried.
    """

    def spec_for(name: str) -> CatalogSpec:
        return specs.get(name) or specs.get("USER") or CatalogSpec(name)

    def finish(name: str, table: Table, origin: str, notes: Iterable[str]) -> ReferenceCatalog | CatalogUnavailable:
        spec = spec_for(name)
        cut = cone_select(table, region)
        if len(cut) == 0:
            # The file's name, not its whole path: the reason is read on one console line.
            where = origin.split(":", 1)[0] + " " + Path(origin.split(":", 1)[-1]).name
            return CatalogUnavailable(name, f"{where}: no star within {region.radius * 60:.1f}′ of the exposures")
        cat = finish_catalog(name, cut, origin, spec, epoch, notes, unknown_pm_mas_yr=unknown_pm_mas_yr,
                             max_gap_without_pm_yr=max_gap_without_pm_yr)
        logger.info(
            "reference catalog %s from %s: %d stars in the region, proper motions %s, expected error %.1f mas",
            name, origin, len(cat.table), "applied" if cat.has_pm else "not available", cat.expected_error_mas,
        )
        return cat

    # 1. a file the user names: it is the catalog.
    if catalog_path is not None and catalog_path.is_file():
        try:
            raw = _read_any(catalog_path)
        except (OSError, ValueError, IndexError) as exc:
            reason = f"catalog file {catalog_path} unreadable: {exc}"
            logger.info(reason)
            yield CatalogUnavailable("USER", reason)
            return
        name = name_for_file(catalog_path, raw.meta, specs)
        try:
            table, notes = normalise_table(raw, default_epoch=spec_for(name).epoch)
        except ValueError as exc:
            reason = f"catalog file {catalog_path}: {exc}"
            logger.info(reason)
            yield CatalogUnavailable(name, reason)
            return
        logger.info("reference catalog named by the user: %s (used as %s; the catalog list is not searched)", catalog_path, name)
        yield finish(name, table, f"file:{catalog_path}", notes)
        return
    if catalog_path is not None and not catalog_path.exists():
        logger.info("catalog path %s does not exist; trying the cache and the service", catalog_path)

    folder = catalog_path if (catalog_path is not None and catalog_path.is_dir()) else None
    names = list(order)
    if folder is not None:
        extras = folder_extras(folder, names, specs)
        if extras:
            logger.info("catalog folder %s also holds %s: tried after %s", folder, ", ".join(extras), ", ".join(names))
        names += extras

    service_failed: str | None = None
    service_spent = 0.0  # seconds spent waiting for the service, all catalogs together
    for name in names:
        spec = spec_for(name)
        # 2. a folder of catalogs
        if folder is not None:
            path = find_in_folder(folder, name)
            if path is not None:
                try:
                    table, notes = read_catalog_file(path, default_epoch=spec.epoch)
                except (OSError, ValueError, IndexError) as exc:
                    logger.info("catalog file %s unreadable (%s); trying the cache", path, exc)
                else:
                    yield finish(name, table, f"folder:{path}", notes)
                    continue
        # 3. the cache
        if cache_dir is not None:
            path = find_in_cache(cache_dir, name, region)
            if path is not None:
                try:
                    table, notes = read_catalog_file(path, default_epoch=spec.epoch)
                except (OSError, ValueError, IndexError) as exc:
                    logger.info("cache file %s unreadable (%s)", path, exc)
                else:
                    yield finish(name, table, f"cache:{path}", notes)
                    continue
        # 4. the service
        if offline:
            yield CatalogUnavailable(name, "not in the catalog folder or cache, and offline mode forbids the network service")
            continue
        if service_failed is not None:
            yield CatalogUnavailable(name, f"catalog service not asked again: {service_failed}")
            continue
        left = timeout - service_spent
        if left <= 0:
            yield CatalogUnavailable(name, f"catalog service not asked: the {timeout:g} s allowed for it are used up")
            continue
        svc = service if service is not None else VizierService()
        t0 = time.monotonic()
        logger.info("asking %s for %s within %.2f′ (timeout %.1f s)", svc.description, name, region.radius * 60, left)
        try:
            failpoints.hit("service.catalog")
            raw = svc.query(spec, region, left, epoch=epoch)
        except CatalogNotServed as exc:
            service_spent += time.monotonic() - t0
            yield CatalogUnavailable(name, f"{svc.description}: {exc}")
            continue
        except ServiceUnavailable as exc:
            seconds = time.monotonic() - t0
            service_spent += seconds
            why = failure_class(exc, left)
            service_failed = f"{svc.description} unreachable ({why})"
            # The whole exception for the trailer; one short line with the remedy for the user.
            logger.info("catalog %s: %s failed after %.1f s (%s)", name, svc.description, seconds, exc)
            if strict_services:
                raise CatalogServiceError(f"catalog service unavailable (strict services): {service_failed}") from exc
            logger.warning(
                "catalog service %s: the catalogs it serves are skipped; give a catalog with --catalog FILE or "
                "a folder, keep catalogs with --cache-dir, or say --offline", service_failed,
            )
            yield CatalogUnavailable(name, service_failed, seconds)
            continue
        seconds = time.monotonic() - t0
        service_spent += seconds
        if raw is None or len(raw) == 0:
            yield CatalogUnavailable(name, f"{svc.description} returned no star ({seconds:.1f} s)", seconds)
            continue
        try:
            table, notes = normalise_table(raw, default_epoch=spec.epoch)
        except ValueError as exc:
            yield CatalogUnavailable(name, f"{svc.description} answer unusable: {exc}", seconds)
            continue
        origin = f"service:{svc.description}"
        if cache_dir is not None:
            write_cache(cache_dir, name, region, table, origin)
        yield finish(name, table, origin, notes)


@dataclass(frozen=True)
class CatalogConfig:
    """``[catalogs]`` and ``[catalog.*]`` of aposteriori.toml."""

    order: tuple[str, ...] = ("GAIAeDR3", "GAIADR3", "GAIADR2")
    specs: Mapping[str, CatalogSpec] = field(default_factory=dict)
    vizier_server: str = "vizier.cds.unistra.fr"
    mast_url: str = MAST_URL
    unknown_pm_mas_yr: float = 5.0
    max_gap_without_pm_yr: float = 5.0
    max_reference_stars: int = 3000
    footprint_margin_arcsec: float = 10.0

    @classmethod
    def from_toml(cls, data: Mapping[str, Any]) -> CatalogConfig:
        cats = dict(data.get("catalogs", {}))
        specs = {}
        for name, values in dict(data.get("catalog", {})).items():
            values = dict(values)
            if "columns" in values:
                values["columns"] = tuple(values["columns"])
            specs[name] = CatalogSpec(name=name, **values)
        return cls(
            order=tuple(cats.get("order", cls.order)),
            specs=specs,
            vizier_server=str(cats.get("vizier_server", cls.vizier_server)),
            mast_url=str(cats.get("mast_url", cls.mast_url)),
            unknown_pm_mas_yr=float(cats.get("unknown_pm_mas_yr", cls.unknown_pm_mas_yr)),
            max_gap_without_pm_yr=float(cats.get("max_gap_without_pm_yr", cls.max_gap_without_pm_yr)),
            max_reference_stars=int(cats.get("max_reference_stars", cls.max_reference_stars)),
            footprint_margin_arcsec=float(cats.get("footprint_margin_arcsec", cls.footprint_margin_arcsec)),
        )
