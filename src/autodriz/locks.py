"""One autodriz at a time per dataset: a lock file beside the inputs, with stale-lock recovery.

Two runs on the same exposures would race to replace their WCS. The lock is a file created with
``O_CREAT | O_EXCL`` (atomic on local and NFS v3+ file systems) holding the owner's host and PID;
a lock whose owner is on this host and no longer alive is stale and is taken over.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from autodriz.errors import AutodrizError
from autodriz.exitcodes import ExitCode

logger = logging.getLogger(__name__)

#: A lock file with no readable owner this old was left by a process killed between creating
#: it and writing its owner (microseconds apart): stale.
UNREADABLE_STALE_SECONDS = 10.0


class DatasetLocked(AutodrizError):
    """Another autodriz is processing the same dataset."""

    exit_code = ExitCode.LOCKED


def lock_path(directory: Path, root: str) -> Path:
    """The lock file for dataset ``root`` whose exposures are in ``directory``."""
    return directory / f".{root}.autodriz-lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _owner(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _age(path: Path) -> float | None:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return None


@contextlib.contextmanager
def dataset_lock(directory: Path, root: str) -> Iterator[Path | None]:
    """Hold the dataset's lock for the duration of the block.

    Raises
    ------
    DatasetLocked
        A live process holds the lock.

    Yields
    ------
    Path or None
        The lock file, or None when the folder is not writable (then nothing can be updated
        there either, and the run goes on unlocked, with a warning).
    """
    path = lock_path(directory, root)
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _owner(path)
            same_host = owner.get("host") == me["host"]
            pid = owner.get("pid")
            if same_host and isinstance(pid, int) and not _pid_alive(pid):
                logger.warning("removing stale lock %s of process %d, which is gone", path, pid)
                path.unlink(missing_ok=True)
                continue
            age = _age(path)
            if not owner and age is not None and age > UNREADABLE_STALE_SECONDS:
                # Without this, a run killed right after creating the lock blocks the dataset
                # (exit 10) until someone removes the file by hand.
                logger.warning("removing stale lock %s: no owner written in it, %.0f s old", path, age)
                path.unlink(missing_ok=True)
                continue
            raise DatasetLocked(
                f"{root} is being processed by another autodriz (host {owner.get('host', '?')}, "
                f"pid {pid if pid is not None else '?'}; lock {path}); try again when it has finished, "
                "or remove the lock file if that process is gone"
            ) from None
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
                logger.warning("cannot create a lock in %s (%s): running without one", directory, exc.strerror)
                yield None
                return
            raise
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        break
    else:  # pragma: no cover - the stale lock reappeared twice
        raise DatasetLocked(f"could not take the lock {path}")
    try:
        yield path
    finally:
        if _owner(path).get("pid") == me["pid"]:
            path.unlink(missing_ok=True)
