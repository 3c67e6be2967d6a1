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

Modules: :mod:`~autodriz.catalogs.base` (specs, regions, results, errors, ``[catalogs]``
settings), :mod:`~autodriz.catalogs.tables` (reading and normalising, proper motions, expected
errors), :mod:`~autodriz.catalogs.cache` (catalog folders, the download cache),
:mod:`~autodriz.catalogs.services` (VizieR, MAST, deadlines, outages vs bugs),
:mod:`~autodriz.catalogs.resolve` (the order above). Their public names are re-exported here.
"""

from autodriz.catalogs.base import (
    CATALOG_EXTENSIONS,
    MAST_URL,
    CatalogConfig,
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
    cache_folder,
    find_in_cache,
    find_in_folder,
    folder_extras,
    name_for_file,
    write_cache,
)
from autodriz.catalogs.resolve import iter_catalogs, resolve_catalogs
from autodriz.catalogs.services import (
    MastCatalogService,
    VizierService,
    call_with_deadline,
    failure_class,
    is_service_error,
    make_service,
    parse_mast_csv,
)
from autodriz.catalogs.tables import (
    cone_select,
    finish_catalog,
    normalise_name,
    normalise_table,
    propagate,
    read_catalog_file,
)
from autodriz.skygeom import angular_distance

__all__ = [
    "CATALOG_EXTENSIONS", "MAST_URL", "CatalogConfig", "CatalogNotServed", "CatalogService", "CatalogServiceError",
    "CatalogSpec", "CatalogUnavailable", "MastCatalogService", "ReferenceCatalog", "Region", "ServiceUnavailable",
    "VizierService", "angular_distance", "cache_folder", "call_with_deadline", "cone_select", "failure_class",
    "find_in_cache", "find_in_folder", "finish_catalog", "folder_extras", "is_service_error", "iter_catalogs",
    "make_service", "name_for_file", "normalise_name", "normalise_table", "parse_mast_csv", "propagate",
    "read_catalog_file", "resolve_catalogs", "write_cache",
]
