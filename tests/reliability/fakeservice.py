"""A loopback fake of a misbehaving web service, for the service-failure matrix.

A helper module, not a ``conftest.py``: a second ``conftest`` module would shadow
``tests/conftest.py`` for the tests that ``from conftest import …``. A test module makes the
fixture with ``yield from fakeservice.fake_services(monkeypatch)``.

``fake_service(behaviour, tls=False)`` starts a threaded HTTP server on 127.0.0.1 that

- ``refuse``: is not there at all (the port is closed: connections are refused);
- ``hang``: accepts the connection and never answers (not even the TLS handshake);
- ``garbage``: answers every request with HTTP 200 and bytes that are neither VOTable, XML,
  CSV nor FITS;
- ``empty``: answers with a well-formed table that has no rows (a VOTable without a table
  for VizieR, an ``<observation>`` without solutions for the astrometry database), and 200 on
  ``availability``.

- ``catalog``: serves the CSV text given as ``body=`` the way MAST's catalog service
  (``vo/CatalogSearch.aspx``) does, a description line first, to every request without
  ``EPOCH=``; to a request with ``EPOCH=`` it answers MAST's ``Error`` line (a service that does
  not propagate proper motions), so the client asks again without it and propagates itself.

``delay=S`` makes a server that answers wait S seconds before each answer (a slow service).

VizieR is only reached over HTTPS (astroquery builds ``https://<server>/viz-bin/…``), so
``tls=True`` serves with the self-signed loopback certificate in ``data/`` (valid 2000–2199, for
127.0.0.1 only; its key is a test fixture, not a secret); clients trust it through
``REQUESTS_CA_BUNDLE``. Everything is bounded: handlers that hang wait at most
:data:`HANG_LIMIT` seconds and are released when the test ends.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"
CERT, KEY = DATA / "loopback-cert.pem", DATA / "loopback-key.pem"
#: The longest a hanging handler holds its connection (the clients give up long before).
HANG_LIMIT = 30.0
#: Ways a service fails (the service tests run each one) ...
FAILURES = ("refuse", "hang", "garbage", "empty")
#: ... and everything the fake can do: "catalog" serves a real catalog (failpoint runs).
BEHAVIOURS = (*FAILURES, "catalog")

GARBAGE = b"\x89PNG\r\n\x1a\n\x00\x00 not a table, not XML <html><body>maintenance" + bytes(range(256)) * 4
EMPTY_VOTABLE = b"""<?xml version="1.0" encoding="UTF-8"?>
<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">
 <RESOURCE type="results">
  <INFO name="QUERY_STATUS" value="OK"/>
  <INFO name="matches" value="0">No object found in the region</INFO>
 </RESOURCE>
</VOTABLE>
"""
EMPTY_OBSERVATION = b"""<?xml version="1.0"?>
<observation><observationID>jsim01a1q</observationID><solutions></solutions></observation>"""


@dataclass
class FakeService:
    """A running fake service: where it is and what it was asked."""

    behaviour: str
    host: str
    port: int
    tls: bool
    delay: float = 0.0
    body: bytes = b""
    requests: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    connections: int = 0

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/"

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _handler(service: FakeService, release: threading.Event) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = HANG_LIMIT  # a client that stops talking cannot hold a thread forever

        def setup(self) -> None:
            service.connections += 1
            if service.behaviour == "hang":
                # Accepted, and then nothing: no handshake, no status line, until released.
                release.wait(HANG_LIMIT)
                return
            super().setup()

        def handle(self) -> None:
            if service.behaviour == "hang":
                return
            try:
                super().handle()
            except (OSError, ssl.SSLError):  # the client gave up: nothing to answer
                pass

        def finish(self) -> None:
            if service.behaviour != "hang":
                super().finish()

        def _answer(self) -> None:
            service.requests.append(f"{self.command} {self.path}")
            if service.delay:
                release.wait(service.delay)
            if service.behaviour == "garbage":
                body, ctype = GARBAGE, "text/plain"
            elif service.behaviour == "catalog":
                epoch = "EPOCH=" in self.path.upper()
                body = b"Error: EPOCH is not supported\r\n" if epoch else b"Catalog search results\r\n" + service.body
                ctype = "text/csv"
            elif "viz-bin" in self.path:
                body, ctype = EMPTY_VOTABLE, "text/xml"
            elif self.path.rstrip("/").endswith("availability"):
                body, ctype = b"ok", "text/plain"
            else:
                body, ctype = EMPTY_OBSERVATION, "text/xml"
            length = int(self.headers.get("Content-Length") or 0)
            service.bodies.append(self.rfile.read(length) if length else b"")
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer  # http.server's names

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def fake_services(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., FakeService]]:
    """Body of the ``fake_service`` fixture: a factory, ``start("hang", tls=True)``; every
    server it started is stopped when the generator is closed (the test's teardown)."""
    started: list[tuple[ThreadingHTTPServer, threading.Thread]] = []
    release = threading.Event()

    def start(behaviour: str, *, tls: bool = False, delay: float = 0.0, body: str = "") -> FakeService:
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"behaviour must be one of {BEHAVIOURS}")
        if tls:
            # requests (astroquery) trusts our certificate for this test only.
            monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(CERT))
        if behaviour == "refuse":
            return FakeService(behaviour, "127.0.0.1", _closed_port(), tls)
        service = FakeService(behaviour, "127.0.0.1", 0, tls, delay, body.encode())
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(service, release))
        server.daemon_threads = True
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(CERT, KEY)
            # The handshake happens in the handler thread (on first read), so a client that
            # never completes it cannot block the accept loop.
            server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        service.port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        started.append((server, thread))
        return service

    yield start
    release.set()
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(5)
