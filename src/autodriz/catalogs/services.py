"""Network catalog services (VizieR, MAST), their deadline, and which failures are outages."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from http.client import HTTPException
from typing import Any
from xml.parsers.expat import ExpatError

import numpy as np
from astropy.table import Table

from autodriz.catalogs.base import (
    MAST_URL,
    CatalogConfig,
    CatalogNotServed,
    CatalogService,
    CatalogSpec,
    Region,
    ServiceUnavailable,
)
from autodriz.catalogs.tables import as_float
from autodriz.settingvalues import CATALOG_SERVICES

logger = logging.getLogger(__name__)

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
            out["epoch"] = _decimal_year(as_float(raw[lower[name]]))
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


def make_service(name: str, config: CatalogConfig) -> CatalogService:
    """The network catalog service ``settings.catalog_service`` names."""
    if name == "mast":
        return MastCatalogService(config.mast_url)
    if name == "vizier":
        return VizierService(config.vizier_server)
    raise ValueError(f"unknown catalog service {name!r}; known: {', '.join(CATALOG_SERVICES)}")
