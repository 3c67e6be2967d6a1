"""The network guard holds in the test process and in every Python process a test starts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

# 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never routed, so even a guard that failed would not reach
# anyone; ``.invalid`` never resolves (RFC 2606).
OUTSIDE = ("192.0.2.1", 9)
NAME = "archive.stsci.invalid"

PROBE = textwrap.dedent(
    """
    import json, multiprocessing, socket, sys

    def attempt(fn):
        try:
            fn()
        except OSError as exc:
            return f"{type(exc).__name__}: {exc}"
        return "allowed"

    def probe(_=None):
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        a, b = socket.socketpair(socket.AF_UNIX)
        return {
            "getaddrinfo": attempt(lambda: socket.getaddrinfo(%(name)r, 443)),
            "gethostbyname": attempt(lambda: socket.gethostbyname(%(name)r)),
            "connect": attempt(lambda: socket.socket().connect(%(outside)r)),
            "create_connection": attempt(lambda: socket.create_connection(%(outside)r, timeout=1)),
            "udp_sendto": attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("192.0.2.1", 53))),
            "loopback_name": attempt(lambda: socket.getaddrinfo("localhost", port)),
            "loopback_connect": attempt(lambda: socket.create_connection(("127.0.0.1", port), timeout=5).close()),
            "unix": attempt(lambda: a.sendall(b"x")),
        }

    if __name__ == "__main__":
        # A grandchild started afresh (spawn: a new interpreter, as a process pool may do).
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            grandchild = pool.map(probe, [0])[0]
        print(json.dumps({"child": probe(), "grandchild": grandchild}))
    """
) % {"name": NAME, "outside": OUTSIDE}


def _check(results: dict[str, str]) -> None:
    for key in ("getaddrinfo", "gethostbyname", "connect", "create_connection", "udp_sendto"):
        # Refused by the guard itself: not a resolver error or a timeout from trying.
        assert results[key].startswith("NetworkBlocked: "), (key, results[key])
        assert "blocked in tests" in results[key], (key, results[key])
    for key in ("loopback_name", "loopback_connect", "unix"):
        assert results[key] == "allowed", (key, results[key])


def test_child_processes_cannot_resolve_or_connect_beyond_loopback(tmp_path) -> None:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    # As autodriz starts its children (childproc.run_child, batch): a copy of the environment,
    # minus autodriz's own settings as the reliability tests strip them.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTODRIZ_", "ASTROMETRY_"))}
    done = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    _check(results["child"])
    _check(results["grandchild"])


def test_test_process_cannot_resolve_or_connect_beyond_loopback() -> None:
    with pytest.raises(OSError, match="name lookup blocked in tests"):
        socket.getaddrinfo(NAME, 443)
    with socket.socket() as sock, pytest.raises(OSError, match="network access blocked in tests"):
        sock.connect(OUTSIDE)
    with pytest.raises(OSError, match="blocked in tests"):
        socket.create_connection(OUTSIDE, timeout=1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
            pytest.raises(OSError, match="network access blocked in tests"):
        udp.sendto(b"x", ("192.0.2.1", 53))
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        socket.create_connection(server.getsockname(), timeout=5).close()
    assert socket.getaddrinfo("localhost", 80)
