"""Where catalogs are found on disk: a user's catalog folder and the local download cache."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from astropy.table import Table

from autodriz import failpoints
from autodriz.catalogs.base import CATALOG_EXTENSIONS, CatalogSpec, Region
from autodriz.catalogs.tables import normalise_name
from autodriz.skygeom import angular_distance

logger = logging.getLogger(__name__)

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
