"""The tests' network guard, for the test process and for every Python process it starts.

Tests never touch the network. ``tests/conftest.py`` installs :func:`install` in the pytest process
and puts this folder on ``PYTHONPATH`` with ``TESTS_NO_NETWORK=1``, so that every Python child
(autodriz run through ``subprocess``, its ``python -m autodriz._child`` workers, batch runs,
multiprocessing workers) imports this module at start-up through :mod:`site` and is guarded too.

Blocked: name lookups (``getaddrinfo``, ``gethostbyname[_ex]``, ``gethostbyaddr``) of anything but
loopback, and ``connect``/``connect_ex``/``sendto`` of IPv4/IPv6 sockets to a non-loopback
address. Loopback (127.0.0.0/8, ::1, ``localhost``) and AF_UNIX stay allowed: the fake services,
Dask and AstroDrizzle's multiprocessing use them. A blocked call raises :class:`NetworkBlocked`
(an ``OSError``, as a real network failure would) and never reaches the resolver or the wire.

The variable (not a name starting with ``AUTODRIZ_``) survives the tests that clear autodriz's
own settings from the environment before they start a run.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import ipaddress
import os
import socket
import sys
from pathlib import Path

ENV = "TESTS_NO_NETWORK"
HERE = str(Path(__file__).resolve().parent)


class NetworkBlocked(OSError):
    """A test (or a process a test started) tried to reach beyond loopback."""


def is_loopback(host: object) -> bool:
    """True for ``localhost``, the empty host (bind-any) and loopback IP literals."""
    if isinstance(host, tuple):
        host = host[0] if host else ""
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host is None or host in ("", "localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def guarded(real_socket: type, real_lookups: dict[str, object]) -> dict[tuple[object, str], object]:
    """The replacements, keyed by (owner, attribute): ``socket.socket`` methods and lookups."""

    def _check_address(sock: socket.socket, address: object) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(address):
            raise NetworkBlocked(f"network access blocked in tests: {address!r}")

    def _check_name(name: object) -> None:
        if not is_loopback(name):
            raise NetworkBlocked(f"name lookup blocked in tests: {name!r}")

    real_connect, real_connect_ex, real_sendto = real_socket.connect, real_socket.connect_ex, real_socket.sendto

    def connect(self, address):
        _check_address(self, address)
        return real_connect(self, address)

    def connect_ex(self, address):
        _check_address(self, address)
        return real_connect_ex(self, address)

    def sendto(self, data, *args):
        _check_address(self, args[-1])
        return real_sendto(self, data, *args)

    def getaddrinfo(host, *args, **kwargs):
        _check_name(host)
        return real_lookups["getaddrinfo"](host, *args, **kwargs)

    def gethostbyname(host):
        _check_name(host)
        return real_lookups["gethostbyname"](host)

    def gethostbyname_ex(host):
        _check_name(host)
        return real_lookups["gethostbyname_ex"](host)

    def gethostbyaddr(host):
        _check_name(host)
        return real_lookups["gethostbyaddr"](host)

    return {
        (real_socket, "connect"): connect,
        (real_socket, "connect_ex"): connect_ex,
        (real_socket, "sendto"): sendto,
        (socket, "getaddrinfo"): getaddrinfo,
        (socket, "gethostbyname"): gethostbyname,
        (socket, "gethostbyname_ex"): gethostbyname_ex,
        (socket, "gethostbyaddr"): gethostbyaddr,
    }


def replacements() -> dict[tuple[object, str], object]:
    """What :func:`install` sets, for a caller that patches it itself (pytest's monkeypatch)."""
    lookups = {name: getattr(socket, name) for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr")}
    return guarded(socket.socket, lookups)


def install() -> None:
    """Guard this process for good (a child started by a test)."""
    for (owner, name), function in replacements().items():
        setattr(owner, name, function)


def _chain_next_sitecustomize() -> None:
    # This module shadows any other sitecustomize (a distribution's): run that one too.
    path = [p for p in sys.path if p and str(Path(p).resolve()) != HERE]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


if __name__ == "sitecustomize":
    if os.environ.get(ENV) == "1":
        install()
    _chain_next_sitecustomize()
