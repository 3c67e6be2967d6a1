"""Run test jobs in a forked worker process that is killed when a job outlives its time.

Shared by the fuzzing (``scripts/fuzz.py``) and failpoint (``failpointing``,
``scripts/failpoints.py``) harnesses. A job that hangs must not stop the run, and one that crashes
its interpreter must be reported, not take the harness down: each job runs in a child of the
harness made with ``fork``, which inherits the imports already made (drizzlepac, astropy …) so a
job costs no interpreter start. The child answers through a pipe; a job that has not answered
within its timeout has its child killed (``SIGKILL``) and is reported as hung.

``Worker(fn)`` keeps one child for many jobs (``fn(*args)`` per job) until it is killed;
:func:`call` makes a fresh child for a single job (a process per trial).
"""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.connection
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass
class Result(Generic[T]):
    """What became of one job: ``status`` is ``"ok"`` (``value`` holds its return value),
    ``"hung"`` (killed after the timeout) or ``"died"`` (the child ended without answering;
    ``exitcode`` says how)."""

    status: str
    value: T | None = None
    exitcode: int | None = None


def _serve(conn: multiprocessing.connection.Connection, fn: Callable[..., Any]) -> None:
    """Child loop: run ``fn`` on each argument tuple the parent sends, answer with its value."""
    while True:
        args = conn.recv()
        if args is None:
            return
        conn.send(fn(*args))


class Worker(Generic[T]):
    """A forked child that runs ``fn(*args)`` for each job, one job at a time."""

    def __init__(self, fn: Callable[..., T]) -> None:
        self._conn, child = multiprocessing.Pipe()
        self._proc = multiprocessing.get_context("fork").Process(target=_serve, args=(child, fn), daemon=True)
        self._proc.start()
        child.close()

    @property
    def alive(self) -> bool:
        return self._proc.is_alive()

    def run(self, args: tuple, timeout: float) -> Result[T]:
        """Run one job; after a ``hung`` or ``died`` result this worker is gone (make a new one)."""
        self._conn.send(args)
        if self._conn.poll(timeout):
            try:
                return Result("ok", self._conn.recv())
            except EOFError:  # the child died mid-job (a crash is an outcome too)
                self._proc.join(5)
                return Result("died", exitcode=self._proc.exitcode)
        self.kill()
        return Result("hung", exitcode=self._proc.exitcode)

    def kill(self) -> None:
        self._proc.kill()
        self._proc.join()

    def close(self) -> None:
        if self._proc.is_alive():
            self._conn.send(None)
            self._proc.join(10)
            if self._proc.is_alive():
                self.kill()
        self._conn.close()


def call(fn: Callable[..., T], args: tuple, timeout: float, kwargs: dict[str, Any] | None = None) -> Result[T]:
    """``fn(*args, **kwargs)`` in a fresh forked child, killed after ``timeout`` seconds."""
    worker: Worker[T] = Worker(functools.partial(fn, **(kwargs or {})))
    try:
        return worker.run(args, timeout)
    finally:
        worker.close()
