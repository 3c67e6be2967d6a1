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


class ChildError(RuntimeError):
    """The child failed, timed out or printed no result; the message has the tail of its log."""


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
            raise ChildError(f"{label} timed out after {timeout:.0f} s (log: {log_path})") from exc
    seconds = time.perf_counter() - t0
    text = log_path.read_text(encoding="utf-8", errors="replace")
    for line in text.splitlines():
        child_output.debug("[%s] %s", label, line)
    result_lines = [ln for ln in text.splitlines() if ln.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not result_lines:
        tail = "\n".join(text.splitlines()[-15:])
        raise ChildError(
            f"{label} failed (exit {proc.returncode}) after {seconds:.1f} s; log {log_path}; last lines:\n{tail}"
        )
    logger.debug("child %s: done in %.1f s", label, seconds)
    return ChildResult(task, seconds, json.loads(result_lines[-1][len(RESULT_MARK):]), log_path)
