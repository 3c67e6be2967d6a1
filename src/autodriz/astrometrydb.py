"""Client of the HST astrometry database web service (AstrometryDB), bounded and offline-first.

The service is the one ``stwcs.updatewcs.astrometry_utils.AstrometryDB`` calls:

- ``GET <base>availability`` → 200 when the service is up;
- ``GET <base>observation/read/<rootname>`` → XML listing ``<solution>`` elements (``solutionID``,
  ``wcsName``) and a ``bestSolutionID``; 404 means the database has nothing for that exposure;
- ``GET <base>observation/read/<rootname>?wcsname=<WCSNAME>`` → that solution as a headerlet
  (FITS bytes).

Unlike stwcs (three tries, 60 s sleeps, about two minutes lost per call when offline), this
client makes **one** try per request, and every request of one client shares **one time
budget** (``timeout`` seconds in all), so a stage that uses it costs at most that. Before the
first request it checks, within a second, that the host can be resolved and reached; an
unreachable service is reported once, as a WARNING, and not asked again by the same client — or,
with ``strict=True``, raises :class:`ServiceUnavailableError` for operations that must know.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from autodriz.errors import AutodrizError
from autodriz.exitcodes import ExitCode
from autodriz.headerlets import SOURCE_SERVICE, HeaderletInfo, headerlet_from_bytes

logger = logging.getLogger(__name__)

#: The service stwcs uses (``AstrometryDB.serviceLocation``).
DEFAULT_URL = "https://mast.stsci.edu/portal/astrometryDB/"

#: Environment variable stwcs reads for another service URL; honoured for compatibility.
URL_ENV = "ASTROMETRY_SERVICE_URL"

#: Seconds allowed to resolve and reach the host before the first request: "offline" is
#: known within this, whatever the request timeout.
PREFLIGHT_SECONDS = 1.0

_XML_HEADERS = {"Content-Type": "text/xml"}
_FITS_HEADERS = {"Content-Type": "application/fits"}


class ServiceUnavailableError(AutodrizError):
    """The astrometry database could not be reached and ``strict`` services were requested."""

    exit_code = ExitCode.WCS_FAILED


@dataclass(frozen=True)
class ServiceSolution:
    """One solution the database lists for an exposure."""

    solution_id: str
    wcsname: str
    best: bool = False


def parse_solutions(xml_bytes: bytes) -> list[ServiceSolution]:
    """Solutions listed in an ``observation/read/<rootname>`` XML answer.

    Parameters
    ----------
    xml_bytes : bytes
        The body of the answer.

    Returns
    -------
    list of ServiceSolution
        In the order given; entries without ``solutionID`` or ``wcsName`` are dropped.

    Raises
    ------
    ValueError
        The body is not XML.
    """
    try:
        root = ET.fromstring(xml_bytes)
    except ET.ParseError as exc:
        raise ValueError(f"not XML: {exc}") from exc
    best = next((el.text.strip() for el in root.iter("bestSolutionID") if el.text), None)
    out = []
    for sol in root.iter("solution"):
        fields = {child.tag: (child.text or "").strip() for child in sol}
        sid, name = fields.get("solutionID", ""), fields.get("wcsName", "")
        if sid and name:
            out.append(ServiceSolution(sid, name, best == sid))
    return out


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        import ipaddress

        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _resolve(host: str, port: int, seconds: float) -> list[tuple]:
    """``getaddrinfo`` with a time limit (the C call has none: a dead DNS can hang it).

    The lookup runs in a daemon thread; if it has not answered within ``seconds`` it is left to
    finish on its own and the host counts as unreachable.
    """
    box: dict[str, object] = {}

    def lookup() -> None:
        try:
            box["result"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            box["error"] = exc

    worker = threading.Thread(target=lookup, name=f"resolve {host}", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise TimeoutError(f"could not resolve {host} within {seconds:.1f} s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]


class AstrometryDB:
    """One bounded session with the astrometry database.

    Parameters
    ----------
    base_url : str
        Service location, ending in ``/`` (added if missing).
    timeout : float
        Seconds allowed for all requests of this client together (and for each one).
    strict : bool
        Raise :class:`ServiceUnavailableError` instead of warning when the service cannot be
        used.
    clock : callable, optional
        Monotonic clock (tests).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        timeout: float = 10.0,
        strict: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.timeout = float(timeout)
        self.strict = strict
        self._clock = clock
        self._t0: float | None = None
        self._available: bool | None = None
        #: Why the service is not used, once known.
        self.reason: str = ""
        parts = urllib.parse.urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"astrometry database URL must be http(s)://host/...: {base_url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._scheme = parts.scheme
        # Loopback (tests, local mirrors) never goes through a proxy; elsewhere the usual
        # *_proxy environment variables apply, as for any urllib client.
        proxies = {} if _is_loopback(self._host) else urllib.request.getproxies()
        self._proxy = None
        if proxies.get(self._scheme) and not urllib.request.proxy_bypass(self._host):
            self._proxy = urllib.parse.urlsplit(proxies[self._scheme])
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler(proxies))

    # ---------------------------------------------------------------------------------------
    # budget and failure

    @property
    def seconds_used(self) -> float:
        """Seconds since the first request of this client (0 before it)."""
        return 0.0 if self._t0 is None else self._clock() - self._t0

    def _remaining(self) -> float:
        if self._t0 is None:
            self._t0 = self._clock()
        return self.timeout - (self._clock() - self._t0)

    def _fail(self, reason: str) -> None:
        """Mark the service unusable: one WARNING (or an error when strict)."""
        first = self._available is not False
        self._available = False
        self.reason = reason
        if self.strict:
            raise ServiceUnavailableError(
                f"astrometry database {self.base_url} unavailable: {reason} (strict services)"
            )
        if first:
            logger.warning(
                "astrometry database %s unavailable: %s; continuing without it", self.base_url, reason
            )

    # ---------------------------------------------------------------------------------------
    # transport

    def _preflight(self) -> None:
        """Resolve and reach the host (or the proxy) within a second; raise OSError if not."""
        host, port = self._host, self._port
        if self._proxy is not None and self._proxy.hostname:
            host, port = self._proxy.hostname, self._proxy.port or 80
        seconds = max(min(PREFLIGHT_SECONDS, self._remaining()), 0.001)
        t0 = self._clock()
        addresses = _resolve(host, port, seconds)
        last: OSError | None = None
        for family, socktype, proto, _, address in addresses:
            left = seconds - (self._clock() - t0)
            if left <= 0:
                break
            sock = socket.socket(family, socktype, proto)
            try:
                sock.settimeout(left)
                sock.connect(address)
                return
            except OSError as exc:
                last = exc
            finally:
                sock.close()
        raise last or TimeoutError(f"{host}:{port} not reached within {seconds:.1f} s")

    def _get(self, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        """One GET with what is left of the budget; (status, body), HTTP errors included."""
        left = self._remaining()
        if left <= 0:
            raise TimeoutError(f"the {self.timeout:g} s allowed for the service are used up")
        request = urllib.request.Request(self.base_url + path, headers=headers, method="GET")
        logger.debug("astrometry database: GET %s (%.1f s left)", request.full_url, left)
        try:
            with self._opener.open(request, timeout=left) as response:
                body = response.read()
                return int(response.status), body
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read() if exc.fp is not None else b""

    def available(self) -> bool:
        """Whether the service answers; checked once per client, then remembered."""
        if self._available is not None:
            return self._available
        try:
            self._preflight()
            status, body = self._get("availability", _XML_HEADERS)
        except (OSError, TimeoutError, ValueError) as exc:
            # URLError, socket.timeout, ConnectionRefusedError, ssl errors are all OSErrors.
            self._fail(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}")
            return False
        if status != 200:
            self._fail(f"availability check answered HTTP {status} {body[:80]!r}")
            return False
        self._available = True
        logger.info("astrometry database %s available (%.2f s)", self.base_url, self.seconds_used)
        return True

    # ---------------------------------------------------------------------------------------
    # queries

    def solutions(self, rootname: str) -> list[ServiceSolution] | None:
        """Solutions the database has for one exposure; [] if none, None if unusable."""
        if not self.available():
            return None
        try:
            status, body = self._get(f"observation/read/{urllib.parse.quote(rootname)}", _XML_HEADERS)
        except (OSError, TimeoutError) as exc:
            self._fail(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}")
            return None
        if status == 404:
            logger.info("astrometry database: no solutions for %s", rootname)
            return []
        if status != 200:
            self._fail(f"observation/read/{rootname} answered HTTP {status}")
            return None
        try:
            found = parse_solutions(body)
        except ValueError as exc:
            self._fail(f"observation/read/{rootname} answered something else than XML ({exc})")
            return None
        logger.info(
            "astrometry database: %s has %s", rootname, ", ".join(s.wcsname for s in found) or "no solutions"
        )
        return found

    def headerlet(self, rootname: str, wcsname: str) -> HeaderletInfo | None:
        """One solution as a headerlet, or None (logged) when it cannot be had."""
        if not self.available():
            return None
        path = f"observation/read/{urllib.parse.quote(rootname)}?wcsname={urllib.parse.quote(wcsname)}"
        try:
            status, body = self._get(path, _FITS_HEADERS)
        except (OSError, TimeoutError) as exc:
            self._fail(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}")
            return None
        if status != 200:
            logger.warning("astrometry database: %s of %s answered HTTP %d; skipped", wcsname, rootname, status)
            return None
        try:
            info = headerlet_from_bytes(body, SOURCE_SERVICE)
        except ValueError as exc:
            logger.warning("astrometry database: %s of %s is not a headerlet (%s); skipped", wcsname, rootname, exc)
            return None
        if info.wcsname != wcsname:
            logger.warning(
                "astrometry database: asked for %s of %s, got WCSNAME %s; skipped", wcsname, rootname, info.wcsname
            )
            return None
        return info

    def headerlets(
        self, rootname: str, *, wanted: Callable[[str], bool] = lambda name: True, skip: Iterable[str] = ()
    ) -> list[HeaderletInfo]:
        """Every solution of ``rootname`` whose WCSNAME is ``wanted`` and not in ``skip``.

        Parameters
        ----------
        rootname : str
            Exposure rootname.
        wanted : callable
            WCSNAME → whether to download it (e.g. only a priori solutions).
        skip : iterable of str
            WCSNAMEs already available from another source: not downloaded again.
        """
        listed = self.solutions(rootname)
        if not listed:
            return []
        skipped = set(skip)
        out = []
        for sol in listed:
            if sol.wcsname in skipped or not wanted(sol.wcsname):
                continue
            info = self.headerlet(rootname, sol.wcsname)
            if info is not None:
                out.append(info)
            if self._available is False:
                break
        return out
