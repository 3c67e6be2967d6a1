"""Shared fixtures. Every test runs with the network closed: only loopback may be reached."""

from __future__ import annotations

import gzip
import ipaddress
import os
import shutil
import socket
from pathlib import Path

import pytest



def _find_shared_data() -> Path | None:
    """``$AUTODRIZ_SHARED_DATA``, else the nearest ``shared/data`` beside the project or above it."""
    if os.environ.get("AUTODRIZ_SHARED_DATA"):
        return Path(os.environ["AUTODRIZ_SHARED_DATA"])
    for parent in Path(__file__).resolve().parents[1:]:
        candidate = parent / "shared" / "data"
        if (candidate / "README.md").is_file():
            return candidate
    return None


def _is_loopback(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, bytes):
        host = host.decode()
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Fail any test that tries to reach beyond loopback (tests never touch the network)."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def guarded_connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise OSError(f"network access blocked in tests: {address!r}")
        return real_connect(self, address)

    def guarded_connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise OSError(f"network access blocked in tests: {address!r}")
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only shared data folder; tests copy from it, never write to it."""
    found = _find_shared_data()
    if found is None or not found.is_dir():
        pytest.fail("shared test data not found: expected ../shared/data beside the project, or set AUTODRIZ_SHARED_DATA")
    return found


def copy_decompressed(src: Path, dest_dir: Path) -> Path:
    """Copy ``src`` into ``dest_dir``, gunzipping ``*.gz``; return the new path."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    if src.suffix == ".gz":
        dest = dest_dir / src.name[:-3]
        with gzip.open(src, "rb") as fin, open(dest, "wb") as fout:
            shutil.copyfileobj(fin, fout)
    else:
        dest = dest_dir / src.name
        shutil.copyfile(src, dest)
    dest.chmod(0o644)
    return dest
