"""The Dask task of a campaign (:func:`run_dataset`, on a worker) and the child process it runs.

The task starts ``python -m autodriz.batch --run-one JOB`` in its own session and reads the
child's one-line JSON result; :func:`verdict_from_trailer` recovers the outcome of an attempt
whose campaign died from that attempt's trailer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autodriz.exitcodes import PRODUCT_CODES, ExitCode
from autodriz.ledger import DONE, FAILED, SKIPPED, Outcome, Row

logger = logging.getLogger(__name__)


#: The runner prints its result on one stdout line that starts with this.
RESULT_MARK = "AUTODRIZ-BATCH-RESULT "
#: How often the runner checks that the worker that started it is still alive, seconds.
_WATCHDOG_PERIOD = 0.5
#: Lines of a failed runner's console output kept for the ledger message.
_TAIL_LINES = 12


def classify(exit_code: int | None) -> str:
    """Ledger status for a run's exit code: OK or DEFAULT_ONLY → done (products written),
    DRIZCORR_OMIT → skipped, else failed."""
    if exit_code in PRODUCT_CODES:
        return DONE
    if exit_code == ExitCode.DRIZCORR_OMIT:
        return SKIPPED
    return FAILED


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _exit_name(code: int | None) -> str | None:
    """``ExitCode`` name, ``KILLED_BY_<SIGNAL>`` for a negative return code, else ``EXIT_<n>``."""
    if code is None:
        return None
    if code < 0:
        return f"KILLED_BY_{_signal_name(-code)}"
    try:
        return ExitCode(code).name
    except ValueError:
        return f"EXIT_{code}"


def _wait_with_timeout(proc: subprocess.Popen, timeout: float) -> tuple[int, float, bool]:
    """Wait for ``proc``; on timeout kill its whole session. Return (returncode, peak MB, timed out).

    ``os.wait4`` rather than ``Popen.wait`` because it also returns the child's resource usage:
    its ``ru_maxrss`` is the peak resident set of the largest process of the dataset's tree.
    """
    deadline = time.monotonic() + timeout
    timed_out = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            timed_out = True
            # The child leads its own session/process group: this kills drizzlepac's children too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.2)
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code  # we reaped it ourselves; keep Popen from reporting it as still running
    return code, usage.ru_maxrss / 1024.0, timed_out  # ru_maxrss is in KiB on Linux


def run_dataset(job: Mapping[str, Any]) -> dict[str, Any]:
    """Process one dataset in a child process; the Dask task of a campaign. Never raises.

    Parameters
    ----------
    job : mapping
        ``input`` (absolute path), ``cli`` (processing flags as :func:`autodriz.config.load_settings`
        takes them), ``config`` (settings file or None), ``argv`` (for the trailer), ``timeout``
        (seconds for the whole dataset).

    Returns
    -------
    dict
        ``status``, ``exit_code``, ``exit_name``, ``message``, ``wcsname``, ``report``,
        ``seconds``, ``peak_rss_mb``, ``worker``.
    """
    t0 = time.monotonic()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    timeout = float(job["timeout"])
    env = dict(os.environ)
    env.setdefault("MPLBACKEND", "Agg")
    # The job travels on the command line (it is small) and the console output goes to an
    # anonymous temporary file: a killed campaign leaves no files behind on the worker. The input
    # path is repeated on the command line only so that `ps` shows which dataset a process is.
    # The worker's pid travels with the job: the child compares it with its parent from the start,
    # so a worker killed while the child was still starting up is noticed too.
    cmd = [sys.executable, "-m", "autodriz.batch", "--run-one", json.dumps({**job, "parent_pid": os.getpid()}),
           str(job["input"])]
    # A private working directory: some libraries write log files into the current directory
    # (stwcs's headerlet.log), which must not land wherever the worker happened to start.
    with tempfile.TemporaryFile() as console, tempfile.TemporaryDirectory(prefix="autodriz-batch-") as cwd:
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                env=env, cwd=cwd, start_new_session=True,
            )
        except OSError as exc:
            return _task_result(FAILED, None, "NOT_STARTED", f"could not start the dataset's process: {exc}", t0, worker)
        code, peak_mb, timed_out = _wait_with_timeout(proc, timeout)
        console.seek(0)
        text = console.read().decode("utf-8", errors="replace")
    result: dict[str, Any] | None = None
    for line in reversed(text.splitlines()):
        if line.startswith(RESULT_MARK):
            with contextlib.suppress(json.JSONDecodeError):
                result = json.loads(line[len(RESULT_MARK):])
            break
    tail = "\n".join(ln for ln in text.splitlines() if not ln.startswith(RESULT_MARK))
    tail = "\n".join(tail.splitlines()[-_TAIL_LINES:])
    if timed_out:
        return _task_result(
            FAILED, None, "TIMEOUT", f"timed out after {timeout:.0f} s; its processes were killed. Last output:\n{tail}",
            t0, worker, peak_mb,
        )
    if result is None:
        how = f"killed by {_signal_name(-code)}" if code < 0 else f"exit {code}"
        return _task_result(
            FAILED, code, _exit_name(code) or "CRASHED",
            f"the dataset's process crashed ({how}) before reporting a result. Last output:\n{tail}",
            t0, worker, peak_mb,
        )
    code = int(result["exit_code"])
    out = _task_result(classify(code), code, _exit_name(code), result["message"], t0, worker, peak_mb)
    out.update(wcsname=result.get("wcsname"), report=result.get("report"), trailer=result.get("trailer"),
               provenance=result.get("provenance"))
    return out


def _task_result(
    status: str, code: int | None, name: str | None, message: str, t0: float, worker: str,
    peak_mb: float | None = None,
) -> dict[str, Any]:
    return {
        "status": status,
        "exit_code": code,
        "exit_name": name,
        "message": message,
        "wcsname": None,
        "report": None,
        "trailer": None,
        "seconds": round(time.monotonic() - t0, 3),
        "peak_rss_mb": None if peak_mb is None else round(peak_mb, 1),
        "worker": worker,
    }


def _watch_parent(parent: int) -> None:
    """Kill this process's session when the process that started it is gone.

    A worker killed with SIGKILL cannot kill its children; without this the dataset would run on,
    unsupervised, and could update its inputs after the ledger was told it had been abandoned.
    (``PR_SET_PDEATHSIG`` is no substitute: it fires when the worker *thread* that started us
    exits, not the worker.)
    """
    while os.getppid() == parent:
        time.sleep(_WATCHDOG_PERIOD)
    os.killpg(os.getpgid(0), signal.SIGKILL)


def _provenance_after(input_path: str, settings: Any, report: Path | None) -> dict[str, Any] | None:
    """What the run was made from, inputs as it left them: its report's record, else taken now."""
    from autodriz.provenance import dataset_provenance

    if report is not None:
        with contextlib.suppress(OSError, ValueError):
            recorded = json.loads(Path(report).read_text(encoding="utf-8")).get("provenance")
            if recorded:
                return recorded
    try:
        return dataset_provenance(Path(input_path), settings).as_dict()
    except OSError as exc:  # an input vanished meanwhile: the driver fingerprints what is there
        logger.warning("could not fingerprint the inputs of %s: %s", input_path, exc)
        return None


def run_one(job_json: str) -> int:
    """Run one dataset in this process with :func:`autodriz.pipeline.process`; print the result."""
    job = json.loads(job_json)
    parent = int(job.get("parent_pid") or os.getppid())
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="parent-watchdog").start()
    from autodriz.config import load_settings
    from autodriz.errors import AutodrizError
    from autodriz.pipeline import process

    try:
        settings = load_settings(cli=job["cli"], config_file=job.get("config"))
    except AutodrizError as exc:  # e.g. an environment variable of this worker with a bad value
        payload = {"exit_code": int(exc.exit_code), "message": str(exc)}
    else:
        result = process(job["input"], settings, argv=list(job["argv"]))
        payload = {
            "exit_code": int(result.exit_code),
            "message": result.message,
            "wcsname": result.wcsname,
            "report": str(result.report) if result.report else None,
            "trailer": str(result.trailer) if result.trailer else None,
            "provenance": _provenance_after(job["input"], settings, result.report),
        }
    print(RESULT_MARK + json.dumps(payload), flush=True)
    return int(payload["exit_code"])


def verdict_from_trailer(row: Row) -> Outcome | None:
    """The outcome of ``row``'s latest attempt if its trailer shows that attempt's verdict.

    The trailer is appended to by every run; the ledger remembers its size when the attempt
    started, so a ``AUTODRIZ-VERDICT`` line after that offset belongs to that attempt.
    """
    if not row.trailer or row.trailer_offset is None:
        return None
    path = Path(row.trailer)
    try:
        with open(path, "rb") as f:
            f.seek(row.trailer_offset)
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    verdicts = [ln for ln in text.splitlines() if "AUTODRIZ-VERDICT " in ln]
    if not verdicts:
        return None
    words = verdicts[-1].split("AUTODRIZ-VERDICT ", 1)[1].split()
    fields = dict(w.split("=", 1) for w in words[1:] if "=" in w)
    try:
        code = int(fields["exit"])
    except (KeyError, ValueError):
        return None
    status = classify(code)
    report = path.with_name(f"{row.root}_report.json")
    return Outcome(
        status=status,
        exit_code=code,
        exit_name=words[0],
        message=f"{words[0]}: attempt finished before its campaign stopped (verdict read from {path.name})",
        seconds=float(fields["seconds"]) if fields.get("seconds", "").replace(".", "", 1).isdigit() else None,
        wcsname=None if fields.get("wcsname") in (None, "-") else fields["wcsname"],
        report=str(report) if status == DONE and report.is_file() else None,
    )
