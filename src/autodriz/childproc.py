"""Run stwcs/drizzlepac work in a child process (see :mod:`autodriz._child` for why)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autodriz.logs import CHILD_LOGGER

logger = logging.getLogger(__name__)
child_output = logging.getLogger(CHILD_LOGGER)

RESULT_MARK = "AUTODRIZ-CHILD-RESULT "
#: A child prints this before it works on each file, so that a failure can name the file.
FILE_MARK = "AUTODRIZ-CHILD-FILE "
#: The longest error line a one-line message quotes from a child's log.
_MAX_ERROR_LINE = 240


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


def run_child(
    job: Mapping[str, Any],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 3600.0,
    label: str | None = None,
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
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "autodriz._child", str(job_path)],
                cwd=cwd,
                env=child_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
            for line in lines:
                child_output.debug("[%s] %s", label, line)
            raise ChildError(
                f"{label} timed out after {timeout:g} s (log: {log_path})",
                label=label, log_path=log_path, error_line=f"timed out after {timeout:g} s",
                current_file=_current_file(lines),
            ) from exc
    seconds = time.perf_counter() - t0
    text = log_path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    for line in lines:
        child_output.debug("[%s] %s", label, line)
    result_lines = [ln for ln in lines if ln.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not result_lines:
        tail = "\n".join(lines[-15:])
        raise ChildError(
            f"{label} failed (exit {proc.returncode}) after {seconds:.1f} s; log {log_path}; last lines:\n{tail}",
            label=label, log_path=log_path, current_file=_current_file(lines),
            error_line=_error_line(lines) if proc.returncode != 0 else "finished without a result",
        )
    logger.debug("child %s: done in %.1f s", label, seconds)
    return ChildResult(task, seconds, json.loads(result_lines[-1][len(RESULT_MARK):]), log_path)
