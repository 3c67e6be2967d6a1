"""Test-only fault injection: make the N-th call of an I/O boundary fail as the world would.

Every place where a run meets the outside world (a child process starts, AstroDrizzle or
updatewcs runs, a file of the final update is synced or renamed, a catalog or cache file is read
or written, the ledger commits, a report is written) calls :func:`hit` with the boundary's name.
Unless the environment asks for it, that call does nothing but one environment lookup.

Two environment variables, read here only (children inherit them, so a boundary inside a child
process counts and fails like one in the parent):

``AUTODRIZ_FAILPOINT_LOG=PATH``
    Every hit appends one line ``<name>`` to this file ("record" mode: after a run, the file
    lists each boundary reached, in order). The file is also the counter: the N-th call of a
    boundary is the N-th line with its name, whichever process made it, so no counter lives in
    any process's memory.
``AUTODRIZ_FAILPOINT=NAME:N[,NAME:N…]``
    The N-th hit of NAME (counted in the log, which is then required) raises the exception that
    boundary meets in the real world: :class:`OSError` (EIO) for file operations,
    :class:`sqlite3.OperationalError` for the ledger, a catalog service error for a service, and
    for a child start the child process dies at once (``os._exit``) as a crashed interpreter
    would.

Not for users: README does not document it, and nothing but the tests sets it.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path

ENV = "AUTODRIZ_FAILPOINT"
LOG_ENV = "AUTODRIZ_FAILPOINT_LOG"

#: Exit status of a child killed by a ``child-start.*`` failpoint (as if the interpreter crashed).
CHILD_CRASH_STATUS = 70


def _spec(text: str) -> dict[str, int]:
    out = {}
    for item in text.split(","):
        name, _, n = item.strip().rpartition(":")
        if name:
            out[name] = int(n)
    return out


def _count(log: Path, name: str) -> int:
    """Append ``name`` to the log and return how many times it is there now."""
    # O_APPEND: lines of concurrent processes (DRZ and DRC children) do not overwrite each other.
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{name}\n".encode())
    finally:
        os.close(fd)
    return log.read_text(encoding="utf-8").splitlines().count(name)


def hit(name: str, environ: Mapping[str, str] = os.environ) -> None:
    """Pass the boundary ``name``: record it, and fail here if this is the call to fail.

    Parameters
    ----------
    name : str
        The boundary, ``kind.detail`` (``update.rename``, ``child-start.astrodrizzle`` …); the
        kind says which exception is raised.
    environ : mapping
        Where the switch is read (the process environment).

    Raises
    ------
    OSError, sqlite3.OperationalError, autodriz.catalogs.ServiceUnavailable
        When ``AUTODRIZ_FAILPOINT`` names this call.
    """
    log = environ.get(LOG_ENV)
    if not log:
        return
    n = _count(Path(log), name)
    wanted = _spec(environ.get(ENV, "")).get(name)
    if wanted != n:
        return
    message = f"failpoint {name}:{n}"
    kind = name.split(".", 1)[0]
    if kind == "child-start":
        os.write(2, f"{message}: child process crashes\n".encode())
        os._exit(CHILD_CRASH_STATUS)
    if kind == "ledger":
        raise sqlite3.OperationalError(f"disk I/O error ({message})")
    if kind == "service":
        from autodriz.catalogs import ServiceUnavailable

        raise ServiceUnavailable(f"connection reset ({message})")
    raise OSError(errno.EIO, f"Input/output error ({message})")
