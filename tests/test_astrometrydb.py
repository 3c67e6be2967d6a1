"""Tests of autodriz.astrometrydb against local sockets only (never the real network)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from autodriz import astrometrydb as A
from autodriz import headerlets as H
from conftest import copy_decompressed

SOLUTIONS_XML = b"""<?xml version="1.0"?>
<observation><observationID>ib4606c5q</observationID>
<bestSolutionID>2</bestSolutionID>
<solutions>
  <solution><solutionID>1</solutionID><wcsName>IDC_2731450pi-GSC240</wcsName></solution>
  <solution><solutionID>2</solutionID><wcsName>IDC_2731450pi-FIT_REL_GAIAeDR3</wcsName></solution>
  <solution><solutionID></solutionID><wcsName>broken</wcsName></solution>
</solutions></observation>"""


def refused_url() -> str:
    """A loopback port nobody listens on: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/astrometryDB/"


@pytest.fixture()
def silent_url() -> Iterator[str]:
    """A port that accepts connections (kernel backlog) and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    try:
        yield f"http://127.0.0.1:{s.getsockname()[1]}/astrometryDB/"
    finally:
        s.close()


def serve(routes: dict[str, tuple[int, bytes]]) -> tuple[ThreadingHTTPServer, list[str]]:
    """A fake astrometry database: path (with query) → (status, body); records requests."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append(self.path)
            status, body = routes.get(self.path, (404, b"not found"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


@pytest.fixture()
def gsc_headerlet(shared_data, tmp_path) -> bytes:
    flc = copy_decompressed(shared_data / "real" / "headers" / "sample_ipppssoot_flc.fits.gz", tmp_path)
    gsc = next(h for h in H.embedded_headerlets(flc) if h.short == "GSC240")
    return H.headerlet_bytes(gsc)


def test_parse_solutions():
    sols = A.parse_solutions(SOLUTIONS_XML)
    assert [(s.solution_id, s.wcsname, s.best) for s in sols] == [
        ("1", "IDC_2731450pi-GSC240", False),
        ("2", "IDC_2731450pi-FIT_REL_GAIAeDR3", True),
    ]
    with pytest.raises(ValueError):
        A.parse_solutions(b"<html")


def test_refused_port_is_detected_fast_and_warned_once(caplog):
    client = A.AstrometryDB(refused_url(), timeout=10.0)
    t0 = time.monotonic()
    with caplog.at_level(logging.INFO, logger="autodriz.astrometrydb"):
        assert client.available() is False
        assert client.solutions("jsim01a1q") is None
        assert client.headerlets("jsim01a2q") == []
    assert time.monotonic() - t0 < 1.0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()
    assert "Connection" in client.reason or "refused" in client.reason.lower()


def test_silent_server_costs_at_most_the_timeout(silent_url, caplog):
    client = A.AstrometryDB(silent_url, timeout=1.0)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="autodriz.astrometrydb"):
        assert client.headerlets("jsim01a1q") == []
        assert client.headerlets("jsim01a2q") == []
    elapsed = time.monotonic() - t0
    assert 0.9 <= elapsed <= 1.3
    assert len(caplog.records) == 1


def test_strict_makes_unreachable_an_error(silent_url):
    with pytest.raises(A.ServiceUnavailableError, match="strict"):
        A.AstrometryDB(refused_url(), timeout=5.0, strict=True).available()
    t0 = time.monotonic()
    with pytest.raises(A.ServiceUnavailableError):
        A.AstrometryDB(silent_url, timeout=0.5, strict=True).solutions("x")
    assert time.monotonic() - t0 < 0.9


def test_fake_service_serves_a_headerlet(gsc_headerlet):
    server, seen = serve({
        "/db/availability": (200, b"ok"),
        "/db/observation/read/ib4606c5q": (200, SOLUTIONS_XML),
        "/db/observation/read/ib4606c5q?wcsname=IDC_2731450pi-GSC240": (200, gsc_headerlet),
    })
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/db"  # trailing slash added
        client = A.AstrometryDB(url, timeout=5.0)
        got = client.headerlets("ib4606c5q", wanted=lambda n: H.apriori_short_name(n) is not None)
        assert [h.wcsname for h in got] == ["IDC_2731450pi-GSC240"]
        assert got[0].source == H.SOURCE_SERVICE and got[0].content == gsc_headerlet
        assert got[0].idcroot == "2731450pi"
        # The a posteriori fit was listed but not wanted: never downloaded.
        assert not any("FIT_REL" in p for p in seen)
        # Already available locally: not downloaded again.
        seen.clear()
        assert client.headerlets("ib4606c5q", skip={"IDC_2731450pi-GSC240"}, wanted=lambda n: "FIT" not in n) == []
        assert seen == ["/db/observation/read/ib4606c5q"]
        # Unknown exposure: 404 means "no solutions", not an outage.
        assert client.solutions("zz000000q") == []
        assert client.reason == ""
    finally:
        server.shutdown()
        server.server_close()


def test_service_answering_html_is_not_a_headerlet():
    server, _ = serve({
        "/availability": (200, b"ok"),
        "/observation/read/ib4606c5q": (200, SOLUTIONS_XML),
        "/observation/read/ib4606c5q?wcsname=IDC_2731450pi-GSC240": (200, b"<html>maintenance</html>"),
    })
    try:
        client = A.AstrometryDB(f"http://127.0.0.1:{server.server_address[1]}/", timeout=5.0)
        assert client.headerlets("ib4606c5q", wanted=lambda n: "GSC" in n) == []
    finally:
        server.shutdown()
        server.server_close()


def test_unavailable_answer_and_bad_urls():
    server, _ = serve({"/availability": (503, b"down for maintenance")})
    try:
        client = A.AstrometryDB(f"http://127.0.0.1:{server.server_address[1]}/", timeout=5.0)
        assert client.available() is False
        assert "503" in client.reason
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ValueError):
        A.AstrometryDB("ftp://example.org/")
    with pytest.raises(ValueError):
        A.AstrometryDB(A.DEFAULT_URL, timeout=0)
