"""Run stwcs/drizzlepac work in a child process (see :mod:`autodriz._child` for why).

A child is forked from a *warm* server that has imported drizzlepac and stwcs once
(:mod:`autodriz._warm`; :func:`start_warm_server`, which the pipeline calls once the default
stage is done): a fresh interpreter spends ~5 CPU-s on those imports, and a run starts two or more. The
server is :mod:`multiprocessing`'s fork server (one per calling process, ended with it); a
child forked from it gets the job's working directory, environment and log file before it
runs (:func:`autodriz._child.forked_main`). ``how="fresh"`` starts a fresh interpreter instead;
``how="here"`` forks the calling process itself, which has most of what a child of stwcs alone
needs imported already (:func:`can_fork_here`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import psutil

from autodriz.logs import CHILD_LOGGER

logger = logging.getLogger(__name__)
child_output = logging.getLogger(CHILD_LOGGER)

RESULT_MARK = "AUTODRIZ-CHILD-RESULT "
#: A child prints this before it works on each file, so that a failure can name the file.
FILE_MARK = "AUTODRIZ-CHILD-FILE "
#: The longest error line a one-line message quotes from a child's log.
_MAX_ERROR_LINE = 240
#: What the trailer says about how a child started.
_STARTED_AS = MappingProxyType({
    "warm": "forked from the warm server",
    "here": "forked from this process",
    "fresh": "ran in a fresh interpreter",
})
#: What the warm server imports before it forks children.
WARM_PRELOAD = ("autodriz._warm",)


class ChildError(RuntimeError):
    """The child failed, timed out or printed no result; the message has the tail of its log.

    Attributes
    ----------
    label : str
        Name of the child (``updatewcs``, ``astrodrizzle_drz`` …); its log is ``<label>.log``.
    log_path : Path or None
        The child's log (in the candidate's folder, which is removed at the end of a run
        unless ``--keep-workdirs``; the trailer keeps a copy of every line).
    error_line : str
        One line saying what went wrong: the child's last log line (its exception), or the
        timeout.
    current_file : str or None
        The file the child was working on when it failed, when it said so (``FILE_MARK``).
    """

    def __init__(
        self,
        message: str,
        *,
        label: str = "",
        log_path: Path | None = None,
        error_line: str = "",
        current_file: str | None = None,
    ) -> None:
        super().__init__(message)
        self.label = label
        self.log_path = log_path
        self.error_line = error_line or message.splitlines()[0]
        self.current_file = current_file


def _error_line(lines: list[str]) -> str:
    """The child's last non-blank log line (with a traceback: the exception), shortened."""
    for line in reversed(lines):
        if line.strip() and not line.startswith(RESULT_MARK):
            text = line.strip()
            return text if len(text) <= _MAX_ERROR_LINE else text[: _MAX_ERROR_LINE - 1] + "…"
    return "no output"


def _log_lines(log_path: Path) -> list[str]:
    """The child's log; none when it died before it opened it (e.g. in multiprocessing's start-up)."""
    try:
        return log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []


def _current_file(lines: list[str]) -> str | None:
    marks = [ln[len(FILE_MARK):].strip() for ln in lines if ln.startswith(FILE_MARK)]
    return marks[-1] if marks else None


@dataclass(frozen=True)
class ChildResult:
    """What a child process returned."""

    task: str
    seconds: float
    result: dict[str, Any]
    log_path: Path
    #: How the child started: ``warm`` (forked from the warm server), ``here`` (forked from the
    #: calling process) or ``fresh`` (a new interpreter).
    started_as: str = "fresh"


def reference_env(folders: Mapping[str, Path | None]) -> dict[str, str]:
    """Environment entries (``jref=/path/``) for the reference-file folders that are set.

    stwcs expands ``jref$name`` by plain string concatenation, so the folder needs its
    trailing slash.
    """
    env = {}
    for prefix, folder in folders.items():
        if folder is not None:
            env[prefix] = str(Path(folder).resolve()) + os.sep
    return env


def can_fork_here() -> bool:
    """Whether this process may fork a child of itself: ``fork`` exists, one thread, not daemonic.

    A fork copies only the thread that forks: a lock another thread held (a pool's queue, a
    catalog query, a batch task's watchdog) would stay locked in the child forever. A daemonic
    process (a test harness's worker) may have no children at all.
    """
    import threading

    return ("fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1
            and not multiprocessing.current_process().daemon)


def _fork_context() -> multiprocessing.context.BaseContext:
    ctx = multiprocessing.get_context("forkserver")
    # Global to the fork server, which is started once per process: every caller sets the same.
    ctx.set_forkserver_preload(list(WARM_PRELOAD))
    return ctx


def warm_server_usable() -> bool:
    """Whether this process can fork children from the warm server.

    Not in a daemonic process (multiprocessing forbids it children, e.g. a test harness's
    forked worker), nor in a process forked from one that started the server: the server is
    then not this process's child, and multiprocessing cannot reach it. Those get fresh
    interpreters.
    """
    from multiprocessing import forkserver

    if multiprocessing.current_process().daemon:
        return False
    # multiprocessing keeps the server's pid privately; None until a server is started.
    pid = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)
    if pid is None:
        return True
    try:
        return psutil.Process(pid).ppid() == os.getpid()
    except psutil.NoSuchProcess:
        return False


def start_warm_server(*, wait: bool = False) -> None:
    """Start the server children are forked from, so that it imports while the run goes on.

    Returns at once (the server imports in its own process); a child asked for before it is
    ready waits for it, which costs no more than a fresh interpreter's imports. With ``wait``,
    returns once the server has imported (a benchmark's timing must not include it). Calling it
    again does nothing but the wait, nor does calling it where :func:`warm_server_usable` is False.
    """
    from multiprocessing import forkserver

    if not warm_server_usable():
        return
    context = _fork_context()
    forkserver.ensure_running()
    if wait:
        # The server forks only once its preloads are imported: a trivial child marks that point.
        probe = context.Process(target=os.getpid)
        probe.start()
        probe.join()


def _kill_tree(pid: int) -> None:
    """Kill a child and every process it started (AstroDrizzle's own workers).

    Waits for the processes it started, not for the child itself: the caller reaps that one
    (a wait here would take its exit status from the caller's own process object).
    """
    try:
        top = psutil.Process(pid)
        started = top.children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for proc in [*started, top]:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(started, timeout=10)


def _run_forked(job_path: Path, cwd: Path, env: Mapping[str, str], log_path: Path, label: str,
                timeout: float, *, here: bool = False, started: Callable[[], None] | None = None) -> int | None:
    """Fork the job's child (from the warm server, or ``here`` from this process); its exit
    code, or None after a timeout."""
    from autodriz._child import forked_main

    context = multiprocessing.get_context("fork") if here else _fork_context()
    proc = context.Process(
        target=forked_main, args=(str(job_path), str(cwd), dict(env), str(log_path)),
        kwargs={"forked_from_caller": here}, name=f"autodriz-{label}",
    )
    proc.start()
    return _wait(proc.pid, lambda: proc.join(timeout), lambda: proc.exitcode, started, close=proc.close)


def _run_fresh(job_path: Path, cwd: Path, env: Mapping[str, str], log_path: Path, timeout: float,
               started: Callable[[], None] | None = None) -> int | None:
    """Run the job in a fresh interpreter; its exit code, or None after a timeout."""
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen([sys.executable, "-m", "autodriz._child", str(job_path)],
                                cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)

        def join() -> None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)

        return _wait(proc.pid, join, proc.poll, started, close=lambda: None)


def _wait(pid: int, join: Callable[[], None], exitcode: Callable[[], int | None],
          started: Callable[[], None] | None, *, close: Callable[[], None]) -> int | None:
    """Call ``started``, wait for the child; kill it (and what it started) unless it exited."""
    timed_out = False
    try:
        if started is not None:
            started()
        join()
        timed_out = exitcode() is None
    finally:
        # Timed out, or the wait itself was interrupted (Ctrl-C) or ``started`` failed: no child
        # outlives its call.
        if exitcode() is None:
            _kill_tree(pid)
            join()
        code = exitcode()
        close()
    return None if timed_out else code


def run_child(
    job: Mapping[str, Any],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 3600.0,
    label: str | None = None,
    how: Literal["warm", "fresh", "here"] = "warm",
    started: Callable[[], None] | None = None,
) -> ChildResult:
    """Run ``job`` in ``python -m autodriz._child`` with working directory ``cwd``.

    Parameters
    ----------
    job : mapping
        JSON-serialisable job, with at least ``task``.
    cwd : Path
        Working directory of the child (the candidate's folder); the job file and the child's
        log are written there.
    env : mapping, optional
        Extra environment variables for the child only (e.g. ``jref``).
    timeout : float
        Seconds before the child is killed.
    label : str, optional
        Name for the log file (``<label>.log``); defaults to the task name.
    how : {"warm", "fresh", "here"}
        ``warm``: fork the child from the warm server (:func:`start_warm_server`; started here
        if it is not running), where this process can (:func:`warm_server_usable`).
        ``here``: fork this process, where it can (:func:`can_fork_here`): for a child that
        needs stwcs but not drizzlepac, ~0.7 CPU-s of imports less than a fresh interpreter,
        and no wait for the warm server's. Otherwise, or with ``fresh``, a fresh interpreter.
    started : callable, optional
        Called once the child exists, before waiting for it: work to start beside it that must
        not be running when this process forks (e.g. a process pool, whose threads a fork
        would copy half-way).

    Returns
    -------
    ChildResult

    Raises
    ------
    ChildError
        On a non-zero exit, a timeout, or a missing result line.
    """
    task = job["task"]
    label = label or task
    # Absolute: the job file's path is handed to a child that runs inside cwd.
    cwd = Path(cwd).resolve()
    cwd.mkdir(parents=True, exist_ok=True)
    job_path = cwd / f"{label}.job.json"
    job_path.write_text(json.dumps(job, indent=1, default=str))
    log_path = cwd / f"{label}.log"
    child_env = dict(os.environ)
    child_env.update(env or {})
    # Headless and quiet: no display for matplotlib, no IERS downloads from astropy.
    child_env.setdefault("MPLBACKEND", "Agg")
    t0 = time.perf_counter()
    logger.debug("child %s: starting in %s", label, cwd)
    if how == "warm" and warm_server_usable():
        started_as = "warm"
        returncode = _run_forked(job_path, cwd, child_env, log_path, label, timeout, started=started)
    elif how == "here" and can_fork_here():
        started_as = "here"
        returncode = _run_forked(job_path, cwd, child_env, log_path, label, timeout, here=True, started=started)
    else:
        started_as = "fresh"
        returncode = _run_fresh(job_path, cwd, child_env, log_path, timeout, started=started)
    logger.debug("child %s: %s", label, _STARTED_AS[started_as])
    if returncode is None:
        lines = _log_lines(log_path)
        for line in lines:
            child_output.debug("[%s] %s", label, line)
        raise ChildError(
            f"{label} timed out after {timeout:g} s (log: {log_path})",
            label=label, log_path=log_path, error_line=f"timed out after {timeout:g} s",
            current_file=_current_file(lines),
        )
    seconds = time.perf_counter() - t0
    lines = _log_lines(log_path)
    for line in lines:
        child_output.debug("[%s] %s", label, line)
    result_lines = [ln for ln in lines if ln.startswith(RESULT_MARK)]
    if returncode != 0 or not result_lines:
        tail = "\n".join(lines[-15:])
        raise ChildError(
            f"{label} failed (exit {returncode}) after {seconds:.1f} s; log {log_path}; last lines:\n{tail}",
            label=label, log_path=log_path, current_file=_current_file(lines),
            error_line=_error_line(lines) if returncode != 0 else "finished without a result",
        )
    logger.debug("child %s: done in %.1f s", label, seconds)
    return ChildResult(task, seconds, json.loads(result_lines[-1][len(RESULT_MARK):]), log_path, started_as)
