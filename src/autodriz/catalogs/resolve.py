"""The order in which catalogs are looked for: user file, catalog folder, cache, service."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from astropy.table import Table

from autodriz import failpoints
from autodriz.catalogs.base import (
    CatalogNotServed,
    CatalogService,
    CatalogServiceError,
    CatalogSpec,
    CatalogUnavailable,
    ReferenceCatalog,
    Region,
    ServiceUnavailable,
)
from autodriz.catalogs.cache import (
    find_in_cache,
    find_in_folder,
    folder_extras,
    name_for_file,
    write_cache,
)
from autodriz.catalogs.services import VizierService, failure_class
from autodriz.catalogs.tables import (
    cone_select,
    finish_catalog,
    normalise_table,
    read_any,
    read_catalog_file,
)

logger = logging.getLogger(__name__)

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
            raw = read_any(catalog_path)
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
