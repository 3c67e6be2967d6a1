"""``autodriz batch``: reprocess many datasets on Dask distributed, resumably, with a ledger.

How a campaign runs
-------------------
1. The inputs (paths, globs, manifest files) are expanded into datasets, each keyed by its
   absolute input path, and added to the SQLite ledger (:mod:`autodriz.ledger`) as ``pending``
   unless they are already there. The ledger's lock is taken first, so a ``running`` row found
   now was left by a campaign that died: it is adopted from its trailer's verdict if that attempt
   finished, otherwise it goes back to ``pending``.
2. What is left to do (``pending``, and ``failed`` with ``--retry-failed``) is submitted to a
   Dask cluster — a :class:`distributed.LocalCluster` of ``--workers`` processes with one thread
   each (drizzlepac is not thread-safe), or an existing cluster with ``--scheduler``. No more
   tasks are in flight than the cluster has threads, so submission is when a dataset starts and
   a killed campaign leaves at most that many rows ``running``.
3. Each task (:func:`run_dataset`, on a worker) runs ``python -m autodriz.batch --run-one`` in
   its own process *session*: that child calls the same :func:`autodriz.pipeline.process` as
   ``autodriz INPUT``, with its own trailer, and prints its :class:`RunResult` as one JSON line.
   The session is killed as a whole on the per-dataset timeout, and the child kills its own
   session when the worker that started it dies, so a hang, a segfault or ``kill -9`` of the
   campaign never leaves drizzlepac running on its own.
4. The driver (this process, the only writer of the ledger) records every outcome in its own
   transaction and shows progress; at the end it prints a summary and writes ``--summary-json``.

A dataset is ``done`` only when its run wrote products: ``OK`` (exit 0) or ``DEFAULT_ONLY``
(exit 9, products with the pipeline-default WCS); ``DRIZCORR_OMIT`` (exit 5,
nothing to drizzle by request) is ``skipped``; every other exit code, a crash and a timeout are
``failed``. ``done`` and ``skipped`` are never run again; ``failed`` only with ``--retry-failed``.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum
from pathlib import Path
from typing import IO, Any

from autodriz import __version__
from autodriz.exitcodes import PRODUCT_CODES, ExitCode
from autodriz.ledger import (
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    SKIPPED,
    STATUSES,
    Ledger,
    LedgerBusy,
    LedgerError,
    Outcome,
    Row,
    describe_owner,
)
from autodriz.provenance import REPROCESS_CONDITIONS

logger = logging.getLogger(__name__)

#: The runner prints its result on one stdout line that starts with this.
RESULT_MARK = "AUTODRIZ-BATCH-RESULT "
#: Default per-dataset wall-clock limit, seconds (a full-frame visit takes minutes, not hours).
DEFAULT_TIMEOUT = 7200.0
#: Extra time the driver waits for an answer beyond the per-dataset timeout before it gives up
#: on a task whose worker stopped answering.
DRIVER_GRACE = 120.0
#: How often the runner checks that the worker that started it is still alive, seconds.
_WATCHDOG_PERIOD = 0.5
#: Show the per-dataset table in the summary up to this many datasets (failures always).
_TABLE_LIMIT = 50
#: Lines of a failed runner's console output kept for the ledger message.
_TAIL_LINES = 12

_FITS_SUFFIXES = (".fits", ".fits.gz", ".fit")
_GLOB_CHARS = frozenset("*?[")


class BatchExit(IntEnum):
    """Exit status of ``autodriz batch``.

    0, 2 and 130 mean what they mean for ``autodriz INPUT``; the batch's own outcomes are 20-23,
    clear of the single-dataset codes (which grow: 10 is ``LOCKED``), so that a wrapper can tell
    a campaign's status from a dataset's.
    """

    #: Every dataset named is done or skipped (nothing failed, nothing left pending).
    OK = 0
    #: Bad flag, no inputs, unreadable manifest, a glob that matches nothing, clashing roots.
    USAGE = 2
    #: Some datasets failed (this time or before, not retried); the others are done/skipped.
    SOME_FAILED = 20
    #: Every dataset named failed: nothing done or skipped (a wrong --jref, a broken install …).
    ALL_FAILED = 21
    #: The Dask cluster could not be started or reached (``--scheduler``).
    CLUSTER_ERROR = 22
    #: The ledger cannot be used: unreadable, not a ledger, or held by another running campaign.
    LEDGER_ERROR = 23
    #: Interrupted (Ctrl-C / SIGTERM): datasets in flight go back to pending; re-run to resume.
    INTERRUPTED = 130


class UsageError(ValueError):
    """The batch's inputs or options cannot be used (exit :attr:`BatchExit.USAGE`)."""


class ClusterError(RuntimeError):
    """The Dask cluster could not be started or reached (exit :attr:`BatchExit.CLUSTER_ERROR`)."""


# ------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One dataset of a campaign."""

    input: Path
    root: str
    trailer: Path


def _is_fits_name(path: str) -> bool:
    return path.lower().endswith(_FITS_SUFFIXES)


def read_manifest(path: Path) -> list[str]:
    """Entries of a manifest: one path or glob per line, ``#`` starts a comment.

    Relative entries are relative to the manifest's folder, so a manifest means the same from
    any working directory (cron runs in ``$HOME``).
    """
    out = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #")[0].split("\t#")[0].strip()
        if not line or line.startswith("#"):
            continue
        entry = Path(os.path.expandvars(os.path.expanduser(line)))
        out.append(str(entry if entry.is_absolute() else path.parent / entry))
    return out


def expand_inputs(items: Sequence[str]) -> tuple[list[Path], list[Path]]:
    """Expand paths, globs and manifests into dataset inputs, in order, without duplicates.

    Parameters
    ----------
    items : sequence of str
        Each is a FITS path (``*_asn.fits``, ``*_raw.fits``, ``*_flt.fits`` …), a glob of them, or a
        manifest file (any other existing file: one path or glob per line, ``#`` comments).

    Returns
    -------
    inputs : list of Path
        Absolute dataset paths. A FITS path that does not exist is kept (the campaign records it
        as failed, so one bad line never stops the others).
    manifests : list of Path
        The manifest files read.

    Raises
    ------
    UsageError
        For a glob that matches nothing, a missing manifest or a folder.
    """
    inputs: list[Path] = []
    manifests: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        p = p.absolute()
        if p not in seen:
            seen.add(p)
            inputs.append(p)

    def expand(item: str, where: str) -> None:
        if _GLOB_CHARS & set(item) and not Path(item).exists():
            matches = sorted(glob.glob(item))
            if not matches:
                raise UsageError(f"{where}: {item!r} matches no file")
            for m in matches:
                add(Path(m))
        elif _is_fits_name(item):
            add(Path(item))
        elif Path(item).is_dir():
            raise UsageError(f"{where}: {item} is a folder; give a glob such as '{item}/*_asn.fits'")
        elif where == "command line" and Path(item).is_file():
            manifest = Path(item).absolute()
            manifests.append(manifest)
            try:
                lines = read_manifest(manifest)
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"cannot read manifest {manifest}: {exc}") from exc
            for line in lines:
                expand(line, f"manifest {manifest.name}")
        else:
            raise UsageError(
                f"{where}: {item!r} is neither a FITS file name nor an existing manifest"
            )

    for item in items:
        expand(item, "command line")
    return inputs, manifests


def make_entries(inputs: Sequence[Path], output_dir: Path | None) -> list[Entry]:
    """Entries with their roots and trailers; two inputs that would share products are an error."""
    from autodriz.pipeline import guess_root

    entries = []
    by_trailer: dict[Path, Path] = {}
    for p in inputs:
        root = guess_root(p)
        trailer = (output_dir or p.parent) / f"{root}.tra"
        if trailer in by_trailer:
            raise UsageError(
                f"{by_trailer[trailer]} and {p} would write the same products and trailer ({trailer}); "
                "list only one of them"
            )
        by_trailer[trailer] = p
        entries.append(Entry(p, root, trailer))
    return entries


def default_ledger_path(manifests: Sequence[Path]) -> Path:
    """``<manifest>.ledger.sqlite`` beside the one manifest given.

    Raises
    ------
    UsageError
        Unless exactly one manifest was given (then ``--ledger`` is required: a ledger must not
        appear in whatever the working directory happens to be).
    """
    if len(manifests) != 1:
        raise UsageError(
            "give --ledger PATH: the ledger defaults to <manifest>.ledger.sqlite only when the inputs "
            "include exactly one manifest file"
        )
    m = manifests[0]
    return m.with_name(m.stem + ".ledger.sqlite")


# ------------------------------------------------------------------------------------------
# the task, on a worker
# ------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------
# the runner: one dataset in its own process
# ------------------------------------------------------------------------------------------


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


def _run_one(job_json: str) -> int:
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


# ------------------------------------------------------------------------------------------
# adopting the verdict of an attempt whose campaign died
# ------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------
# progress
# ------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """Counts of this campaign's run, for progress lines and the summary."""

    total: int
    done: int = 0
    failed: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> int:
        return self.done + self.failed + self.skipped

    def eta_seconds(self) -> float | None:
        """Remaining time from the mean rate so far (None before the first result)."""
        if not self.finished:
            return None
        rate = self.finished / (time.monotonic() - self.started)
        return (self.total - self.finished) / rate if rate > 0 else None

    def add(self, status: str) -> None:
        if status == DONE:
            self.done += 1
        elif status == SKIPPED:
            self.skipped += 1
        else:
            self.failed += 1


def _hms(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class PlainProgress:
    """One line per finished dataset (for logs, cron mail and anything that is not a terminal)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream or sys.stderr
        self._tally: Tally | None = None

    def start(self, tally: Tally) -> None:
        self._tally = tally
        self.message(f"autodriz batch: {tally.total} dataset(s) to run")

    def advance(self, label: str, status: str, seconds: float | None, note: str = "") -> None:
        t = self._tally
        assert t is not None
        self.message(
            f"autodriz batch: [{t.finished}/{t.total}] {status} {label}"
            f"{f' in {seconds:.1f} s' if seconds is not None else ''}{f' ({note})' if note else ''}"
            f" — done {t.done}, failed {t.failed}, skipped {t.skipped}; ETA {_hms(t.eta_seconds())}"
        )

    def message(self, text: str) -> None:
        print(text, file=self._stream, flush=True)

    def tick(self) -> None:
        """Nothing to refresh between results."""

    def close(self) -> None:
        """Nothing to close."""


class RichProgress:
    """A live progress bar with done/failed counts and ETA (on a terminal)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]autodriz batch"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[green]done {task.fields[done]}[/] [red]failed {task.fields[failed]}[/] "
                       "skipped {task.fields[skipped]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task: Any = None
        self._tally: Tally | None = None

    def start(self, tally: Tally) -> None:
        self._tally = tally
        self._progress.start()
        self._task = self._progress.add_task("batch", total=tally.total, done=0, failed=0, skipped=0)

    def advance(self, label: str, status: str, seconds: float | None, note: str = "") -> None:
        t = self._tally
        assert t is not None
        if status != DONE:
            colour = "red" if status == FAILED else "yellow"
            self._progress.console.print(f"[{colour}]{status}[/] {label}{f': {note}' if note else ''}")
        self._progress.update(self._task, completed=t.finished, done=t.done, failed=t.failed, skipped=t.skipped)

    def message(self, text: str) -> None:
        self._progress.console.print(text, markup=False, highlight=False)

    def tick(self) -> None:
        self._progress.refresh()

    def close(self) -> None:
        self._progress.stop()


class NoProgress(PlainProgress):
    """No progress output (``--progress off``); log messages still go to stderr."""

    def advance(self, label: str, status: str, seconds: float | None, note: str = "") -> None:
        """Say nothing."""

    def start(self, tally: Tally) -> None:
        self._tally = tally


def make_progress(mode: str) -> PlainProgress | RichProgress:
    """``auto``: a bar when stderr is a terminal, plain lines otherwise; or ``bar``/``plain``/``off``."""
    if mode == "off":
        return NoProgress()
    if mode == "bar" or (mode == "auto" and sys.stderr.isatty()):
        return RichProgress()
    return PlainProgress()


class _ProgressLogHandler(logging.Handler):
    """Send the driver's log records through the progress display so they do not tear the bar."""

    def __init__(self, progress: PlainProgress | RichProgress, level: int) -> None:
        super().__init__(level)
        self._progress = progress
        self.setFormatter(logging.Formatter("%(levelname)-7s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._progress.message(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never break the campaign; report as logging does
            self.handleError(record)


# ------------------------------------------------------------------------------------------
# memory: what one dataset needs, for Dask worker resources
# ------------------------------------------------------------------------------------------

#: Memory model of one dataset's run, MB = base + per-megapixel * (SCI pixels of every FLT/FLC).
#: The base covers the interpreter with drizzlepac/stwcs/astropy loaded and the small
#: verification drizzles; the per-pixel part AstroDrizzle's in-memory copies (single drizzles,
#: median, blot) of the inputs. Calibrated on the two figures HST operations works with — a
#: full ACS/WFC association of 4 exposures with FLT + FLC (8 files x 16.8 Mpix = 134 Mpix) needs
#: about 3 GB, a WFC3/IR one (4 x 1.03 Mpix) about 0.4 GB — and checked against the peaks the
#: ledger records (``peak_rss_mb``), which replace the model once a dataset has run.
MEMORY_BASE_MB = 350.0
MEMORY_MB_PER_MPIX = 20.0
#: Margin on a measured peak (the peak is of the largest process, not of the tree).
MEASURED_MARGIN = 1.25


def memory_model_mb(megapixels: float) -> float:
    """Estimated peak memory (MB) of a dataset whose FLT/FLC SCI arrays hold ``megapixels``."""
    return MEMORY_BASE_MB + MEMORY_MB_PER_MPIX * max(0.0, megapixels)


def input_megapixels(entry: Entry) -> float:
    """SCI pixels of every FLT/FLC of the dataset, in millions, from the headers (no data read)."""
    from astropy.io import fits

    from autodriz.provenance import dataset_files

    total = 0
    for path in dataset_files(entry.input):
        if path.name.lower().endswith(("_asn.fits", "_asn.fits.gz")) or not path.exists():
            continue
        with contextlib.suppress(OSError, ValueError), fits.open(path) as hdul:
            total += sum(int(h.header.get("NAXIS1", 0)) * int(h.header.get("NAXIS2", 0))
                         for h in hdul if h.name == "SCI")
    return total / 1e6


def estimate_memory_mb(entry: Entry, row: Row | None = None) -> tuple[float, str]:
    """A dataset's memory need (MB) and how it was obtained: its measured peak, else the model."""
    if row is not None and row.peak_rss_mb:
        return MEASURED_MARGIN * row.peak_rss_mb, f"measured peak {row.peak_rss_mb:.0f} MB x {MEASURED_MARGIN}"
    mpix = input_megapixels(entry)
    return memory_model_mb(mpix), f"model: {mpix:.2f} Mpix"


def _memory_limit(client: Any) -> float | None:
    """The largest ``MEMORY`` resource a worker of the cluster offers; None when none offers one."""
    try:
        workers = client.scheduler_info().get("workers", {})
    except (OSError, TimeoutError):
        return None
    limits = [float(w.get("resources", {}).get("MEMORY", 0)) for w in workers.values()]
    return max(limits) if limits and max(limits) > 0 else None


# ------------------------------------------------------------------------------------------
# what to run: the reprocessing rules
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """Whether one dataset runs in this campaign, and why (one line of the plan)."""

    entry: Entry
    run: bool
    reason: str
    #: Its provenance now, when it was computed (datasets with a ledger row).
    current: Any = None
    #: Record ``current`` as the row's provenance without running (a row from a schema-1 ledger).
    baseline: bool = False


def decide(
    entry: Entry, row: Row | None, current: Any, *, retry_failed: bool, reprocess_if: Sequence[str] = ()
) -> Decision:
    """The reprocessing rule for one dataset (pure: ledger row and provenance in, decision out).

    New and pending datasets run; ``done``/``skipped``/``failed`` ones run again when what they
    were made from changed (:func:`autodriz.provenance.changes`: inputs, settings, catalog, and
    versions with ``--reprocess-if``); a failed one also with ``--retry-failed``. A row without
    provenance (from a ledger written before it was recorded) is not run because of that: the
    provenance now becomes its baseline, so that a whole archive is not reprocessed on upgrade.
    """
    from autodriz.provenance import Provenance, changes

    if row is None or (row.status == PENDING and row.attempts == 0):
        return Decision(entry, True, "new dataset")
    if row.status == PENDING:
        return Decision(entry, True, f"pending: {_short(row.message, 100) or 'not finished'}")
    if row.status == RUNNING:
        return Decision(entry, True, "left running by a campaign that stopped (or is running now)")
    recorded = Provenance.from_json(row.provenance)
    what = {DONE: "done", SKIPPED: "skipped (nothing to drizzle)", FAILED: f"failed ({row.exit_name or '-'})"}[row.status]
    if recorded is None or current is None:
        if row.status == FAILED:
            return Decision(entry, retry_failed, f"{what}; " + ("--retry-failed" if retry_failed else
                                                                 "give --retry-failed to run it again"))
        return Decision(entry, False, f"{what}; no provenance recorded (older ledger): today's is kept as its baseline",
                        current, baseline=current is not None)
    reasons = changes(recorded, current, reprocess_if)
    if reasons:
        return Decision(entry, True, f"{what} before; " + "; ".join(reasons), current)
    if row.status == FAILED and retry_failed:
        return Decision(entry, True, f"{what}, unchanged; --retry-failed", current)
    hint = "; give --retry-failed to run it again" if row.status == FAILED else ""
    return Decision(entry, False, f"{what}, nothing changed since {row.ended_at or '?'}{hint}", current)


@dataclass(frozen=True)
class Identities:
    """The campaign-wide parts of a provenance, computed once per campaign."""

    settings: Mapping[str, Any]
    catalog: Mapping[str, Any]
    versions: Mapping[str, str]

    @classmethod
    def of(cls, settings: Any) -> Identities:
        from autodriz.provenance import catalog_identity, current_versions, settings_identity

        return cls(settings_identity(settings), catalog_identity(settings), current_versions())

    def provenance(self, entry: Entry, previous: Any = None) -> Any:
        """The dataset's provenance now (files whose stat did not change are not read again)."""
        from autodriz.provenance import Provenance, dataset_files, fingerprint_inputs

        files = [p for p in dataset_files(entry.input) if p.exists()]
        return Provenance(fingerprint_inputs(files, previous.inputs if previous is not None else ()),
                          self.settings, self.catalog, self.versions)


def plan_campaign(
    entries: Sequence[Entry], rows: Mapping[str, Row], identities: Identities, *,
    retry_failed: bool, reprocess_if: Sequence[str] = (),
) -> list[Decision]:
    """A decision for every entry, in the manifest's order; reads the inputs of finished datasets."""
    from autodriz.provenance import Provenance

    out = []
    for e in entries:
        row = rows.get(str(e.input))
        current = None
        if row is not None and row.status in (DONE, SKIPPED, FAILED):
            previous = Provenance.from_json(row.provenance)
            try:
                current = identities.provenance(e, previous)
            except OSError as exc:  # unreadable now: run it, the run says what is wrong
                out.append(Decision(e, True, f"inputs cannot be read ({exc})"))
                continue
        out.append(decide(e, row, current, retry_failed=retry_failed, reprocess_if=reprocess_if))
    return out


def format_plan(decisions: Sequence[Decision], base: Path | None = None) -> list[str]:
    """The plan as lines, ``plan: run <input>: <why>`` / ``plan: skip <input>: <why>``, then counts."""
    lines = [f"plan: {'run ' if d.run else 'skip'} {dataset_label(d.entry.input, base)}: {d.reason}" for d in decisions]
    n = sum(d.run for d in decisions)
    lines.append(f"plan: {n} to run, {len(decisions) - n} not run")
    return lines


# ------------------------------------------------------------------------------------------
# the campaign
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchOptions:
    """Everything ``autodriz batch`` was asked to do.

    Attributes
    ----------
    inputs : tuple of str
        Paths, globs and manifests.
    ledger : Path or None
        Ledger file; None for ``<manifest>.ledger.sqlite`` beside the one manifest.
    workers : int
        Worker processes of the LocalCluster (one thread each).
    scheduler : str or None
        Address of an existing Dask scheduler; None starts a LocalCluster.
    timeout : float
        Wall-clock seconds allowed for one dataset.
    retry_failed : bool
        Run ``failed`` datasets again.
    summary_json : Path or None
        Where to write the summary as JSON.
    progress : str
        ``auto``, ``bar``, ``plain`` or ``off``.
    cli : mapping
        Processing flags as :func:`autodriz.config.load_settings` takes them (``None`` = not given).
    config : Path or None
        ``--config`` file.
    argv : tuple of str
        The batch command line (recorded in the ledger and in each trailer).
    log_level : str
        Level of the driver's own messages.
    reprocess_if : tuple of str
        Extra reasons to run a finished dataset again (:data:`autodriz.provenance.REPROCESS_CONDITIONS`).
    dry_run : bool
        Print the plan (what would run and why) and run nothing (:func:`dry_run`).
    worker_memory_mb : float or None
        ``MEMORY`` resource (MB) of each LocalCluster worker; None: no memory-aware scheduling
        on a LocalCluster (a ``--scheduler`` cluster's workers declare their own).
    """

    inputs: tuple[str, ...]
    ledger: Path | None = None
    workers: int = 1
    scheduler: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    retry_failed: bool = False
    summary_json: Path | None = None
    progress: str = "auto"
    cli: Mapping[str, Any] = field(default_factory=dict)
    config: Path | None = None
    argv: tuple[str, ...] = ()
    log_level: str = "INFO"
    reprocess_if: tuple[str, ...] = ()
    dry_run: bool = False
    worker_memory_mb: float | None = None


@dataclass(frozen=True)
class BatchReport:
    """What a campaign ended with."""

    exit_code: BatchExit
    ledger: Path
    rows: tuple[Row, ...]
    counts: Mapping[str, int]
    ran: int
    seconds: float
    workers: int
    message: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (``--summary-json``)."""
        return {
            "autodriz": __version__,
            "exit_code": int(self.exit_code),
            "exit_name": self.exit_code.name,
            "message": self.message,
            "ledger": str(self.ledger),
            "counts": dict(self.counts),
            "this_run": {
                "ran": self.ran,
                "seconds": round(self.seconds, 2),
                "workers": self.workers,
                "datasets_per_hour": round(3600.0 * self.ran / self.seconds, 1) if self.seconds > 0 else None,
            },
            # Provenance stays in the ledger and the reports: per dataset it is kilobytes.
            "datasets": [{k: v for k, v in r.as_dict().items() if k != "provenance"} for r in self.rows],
        }


def _portable_cli(cli: Mapping[str, Any]) -> dict[str, Any]:
    """Flags for the workers: paths made absolute here, where they were typed."""
    out: dict[str, Any] = {}
    for k, v in cli.items():
        out[k] = str(Path(v).absolute()) if isinstance(v, Path) else v
    return out


@contextlib.contextmanager
def open_client(workers: int, scheduler: str | None, *, worker_memory_mb: float | None = None) -> Iterator[Any]:
    """A Dask client: to ``scheduler`` if given, else to a loopback LocalCluster of ``workers``.

    ``worker_memory_mb`` gives each LocalCluster worker a ``MEMORY`` resource of that many MB
    (as ``dask worker --resources MEMORY=…`` does on a cluster), so datasets are submitted with
    their memory estimates.

    The LocalCluster's worker processes are children of this process and exit when it does
    (distributed's processes watch their parent), so nothing outlives a killed campaign.
    """
    from distributed import Client, LocalCluster

    if scheduler:
        logger.info("submitting to the Dask scheduler at %s", scheduler)
        with Client(scheduler, timeout="30s") as client:
            yield client
        return
    logger.info("starting a local Dask cluster: %d worker process(es), 1 thread each", workers)
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,  # drizzlepac/stwcs are not thread-safe: one dataset per process
            processes=True,
            host="127.0.0.1",
            scheduler_port=0,
            dashboard_address=None,
            silence_logs=logging.ERROR,
            **({"resources": {"MEMORY": worker_memory_mb}} if worker_memory_mb else {}),
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _capacity(client: Any) -> int:
    """Threads in the cluster now (at least 1, so a cluster still starting gets one task)."""
    try:
        return max(1, sum(client.nthreads().values()))
    except (OSError, TimeoutError):
        return 1


def _provenance_record(entry: Entry, outcome: Outcome, identities: Identities) -> str | None:
    """The provenance the ledger keeps for a finished attempt.

    The input fingerprints are those the run reported, taken after its WCS update (else taken
    here, of the inputs as the attempt left them), with the versions it ran with; settings and
    catalog are this campaign's, which the next campaign compares with its own: a worker whose
    environment differs from the driver's must not make a dataset run again every night.
    """
    from autodriz.provenance import Provenance

    reported = Provenance.from_json(outcome.provenance)
    if reported is not None and reported.inputs:
        inputs, versions = reported.inputs, reported.versions or identities.versions
    else:
        try:
            inputs, versions = identities.provenance(entry).inputs, identities.versions
        except OSError as exc:
            logger.warning("%s: inputs cannot be fingerprinted (%s); no provenance recorded", entry.root, exc)
            return None
    return Provenance(inputs, identities.settings, identities.catalog, versions).to_json()


def _outcome(result: Mapping[str, Any]) -> Outcome:
    return Outcome(
        status=result["status"],
        exit_code=result["exit_code"],
        exit_name=result["exit_name"],
        message=result["message"],
        seconds=result["seconds"],
        wcsname=result.get("wcsname"),
        report=result.get("report"),
        worker=result.get("worker"),
        peak_rss_mb=result.get("peak_rss_mb"),
        provenance=json.dumps(result["provenance"]) if result.get("provenance") else None,
    )


def _trailer_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _campaign_exit(counts: Mapping[str, int], interrupted: bool) -> BatchExit:
    if interrupted:
        return BatchExit.INTERRUPTED
    if counts[FAILED]:
        return BatchExit.ALL_FAILED if not (counts[DONE] or counts[SKIPPED]) else BatchExit.SOME_FAILED
    return BatchExit.OK


def run_batch(options: BatchOptions, *, progress: PlainProgress | RichProgress | None = None) -> BatchReport:
    """Run a campaign; return its report. Raises only for usage, ledger and cluster errors.

    Parameters
    ----------
    options : BatchOptions
        What to run and how.
    progress : PlainProgress or RichProgress, optional
        Progress display; from ``options.progress`` when None.

    Returns
    -------
    BatchReport

    Raises
    ------
    UsageError, autodriz.errors.ConfigError, LedgerError
        Before anything runs.
    OSError
        If the Dask cluster cannot be started or reached (``CLUSTER_ERROR``).
    """
    from autodriz.config import load_settings

    progress = progress or make_progress(options.progress)
    handler = _ProgressLogHandler(progress, getattr(logging, options.log_level, logging.INFO))
    pkg_logger = logging.getLogger("autodriz")
    saved_level = pkg_logger.level
    pkg_logger.addHandler(handler)
    # The handler decides what is shown; the logger must let the batch's INFO decisions through.
    pkg_logger.setLevel(handler.level if saved_level == logging.NOTSET else min(handler.level, saved_level))
    try:
        # Validate the processing flags here, once, so a typo fails the campaign at once rather
        # than every dataset on the cluster.
        settings = load_settings(cli=dict(options.cli), config_file=options.config)
        inputs, manifests = expand_inputs(options.inputs)
        if not inputs:
            raise UsageError("no inputs: give ASN/RAW/FLT paths, globs or a manifest file")
        entries = make_entries(inputs, settings.output_dir)
        ledger_path = (options.ledger or default_ledger_path(manifests)).absolute()
        identities = Identities.of(settings)
        with Ledger(ledger_path) as ledger:
            ledger.acquire(describe_owner())
            return _run_locked(options, entries, ledger, progress, identities)
    finally:
        pkg_logger.removeHandler(handler)
        pkg_logger.setLevel(saved_level)


def dry_run(options: BatchOptions) -> list[str]:
    """``autodriz batch --dry-run``: the plan a campaign would follow now, as lines; runs nothing.

    The ledger is only read (it need not exist, and its lock is not taken); the inputs of
    finished datasets are fingerprinted as the campaign would, so the lines are those a campaign
    started now would log.

    Raises
    ------
    UsageError, autodriz.errors.ConfigError, LedgerError
        As :func:`run_batch`.
    """
    from autodriz.config import load_settings

    settings = load_settings(cli=dict(options.cli), config_file=options.config)
    inputs, manifests = expand_inputs(options.inputs)
    if not inputs:
        raise UsageError("no inputs: give ASN/RAW/FLT paths, globs or a manifest file")
    entries = make_entries(inputs, settings.output_dir)
    ledger_path = (options.ledger or default_ledger_path(manifests)).absolute()
    rows: dict[str, Row] = {}
    if ledger_path.exists():
        with Ledger(ledger_path, readonly=True) as ledger:
            rows = {r.input: r for r in ledger.rows()}
    decisions = plan_campaign(entries, rows, Identities.of(settings),
                              retry_failed=options.retry_failed, reprocess_if=options.reprocess_if)
    return format_plan(decisions, ledger_path.parent)


def _run_locked(
    options: BatchOptions, entries: list[Entry], ledger: Ledger, progress: PlainProgress | RichProgress,
    identities: Identities,
) -> BatchReport:
    campaign = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    keys = [str(e.input) for e in entries]
    new = ledger.add([(str(e.input), e.root, str(e.trailer)) for e in entries])
    by_input = {str(e.input): e for e in entries}
    for key, status in ledger.recover_stale(adopt=verdict_from_trailer):
        if status != PENDING and key in by_input:
            # The adopted attempt finished (and may have updated its inputs) without reporting
            # its provenance: the inputs as it left them are what it was made from.
            with contextlib.suppress(OSError):
                ledger.set_provenance(key, identities.provenance(by_input[key]).to_json())
    ledger.set_meta(last_campaign=campaign, last_command=" ".join(options.argv), last_started=_now())
    counts = ledger.counts(keys)
    logger.info(
        "ledger %s: %d dataset(s) named (%d new): %d done, %d skipped, %d failed, %d pending",
        ledger.path, len(entries), new, counts[DONE], counts[SKIPPED], counts[FAILED], counts[PENDING],
    )
    decisions = plan_campaign(entries, {r.input: r for r in ledger.rows(keys)}, identities,
                              retry_failed=options.retry_failed, reprocess_if=options.reprocess_if)
    for d, line in zip([*decisions, None], format_plan(decisions, ledger.path.parent)):
        # Every run is worth a line; a large campaign's unchanged datasets are not.
        level = logging.INFO if d is None or d.run or len(decisions) <= _TABLE_LIMIT else logging.DEBUG
        logger.log(level, "%s", line)
        if d is not None and d.baseline:
            ledger.set_provenance(str(d.entry.input), d.current.to_json())
    todo = [d.entry for d in decisions if d.run]
    reasons = {str(d.entry.input): d.reason for d in decisions}
    memory: dict[str, float] = {}
    rows_now = {r.input: r for r in ledger.rows(keys)}
    for e in todo:
        need, how = estimate_memory_mb(e, rows_now.get(str(e.input)))
        memory[str(e.input)] = round(need)
        logger.debug("%s: memory estimate %.0f MB (%s)", e.root, need, how)

    t0 = time.monotonic()
    tally = Tally(total=len(todo))
    interrupted = False
    workers = options.workers
    if todo:
        job_base = {
            "cli": _portable_cli(options.cli),
            "config": str(options.config.absolute()) if options.config else None,
            "argv": list(options.argv) or ["autodriz", "batch"],
            "timeout": options.timeout,
        }
        stack = contextlib.ExitStack()
        try:
            try:
                client = stack.enter_context(open_client(options.workers, options.scheduler,
                                                         worker_memory_mb=options.worker_memory_mb))
            except (OSError, TimeoutError) as exc:  # what distributed raises for an unreachable scheduler
                raise ClusterError(f"Dask cluster unavailable ({options.scheduler or 'local'}): {exc}") from exc
            with stack:
                workers = _capacity(client)
                progress.start(tally)
                try:
                    _drive(client, todo, ledger, campaign, job_base, options.timeout, tally, progress,
                           reasons=reasons, identities=identities, memory=memory)
                except KeyboardInterrupt:
                    interrupted = True
                    logger.warning("interrupted: datasets in flight go back to pending; run the same command to resume")
                finally:
                    progress.close()
        except KeyboardInterrupt:  # during cluster start or shutdown
            interrupted = True
    ledger.set_meta(last_ended=_now())
    final = ledger.rows(keys)
    counts = ledger.counts(keys)
    code = _campaign_exit(counts, interrupted)
    seconds = time.monotonic() - t0
    message = (
        f"{len(entries)} dataset(s): {counts[DONE]} done, {counts[FAILED]} failed, {counts[SKIPPED]} skipped, "
        f"{counts[PENDING] + counts[RUNNING]} not finished; ran {tally.finished} this time in {seconds:.1f} s"
    )
    return BatchReport(code, ledger.path, tuple(final), counts, tally.finished, seconds, workers, message)


def _now() -> str:
    from autodriz.ledger import utcnow

    return utcnow()


def _drive(
    client: Any,
    todo: list[Entry],
    ledger: Ledger,
    campaign: str,
    job_base: Mapping[str, Any],
    timeout: float,
    tally: Tally,
    progress: PlainProgress | RichProgress,
    *,
    reasons: Mapping[str, str] | None = None,
    identities: Identities | None = None,
    memory: Mapping[str, float] | None = None,
) -> None:
    """Keep the cluster busy with at most as many tasks as it has threads; record each outcome."""
    queue = list(reversed(todo))  # pop() from the end keeps the manifest's order
    inflight: dict[Any, tuple[Entry, float]] = {}
    reasons = reasons or {}

    def finish(entry: Entry, outcome: Outcome) -> None:
        if identities is not None:
            outcome = replace(outcome, provenance=_provenance_record(entry, outcome, identities))
        ledger.finish(str(entry.input), outcome, campaign=campaign)
        tally.add(outcome.status)
        note = "" if outcome.status == DONE else f"{outcome.exit_name or '-'}: {_short(outcome.message, 120)}"
        progress.advance(dataset_label(entry.input, ledger.path.parent), outcome.status, outcome.seconds, note)

    memory = memory or {}
    limit = _memory_limit(client) if memory else None
    if limit is not None:
        logger.info("workers offer MEMORY resources (largest %.0f MB): each dataset is submitted with its estimate",
                    limit)
    try:
        while queue or inflight:
            # With memory resources the scheduler holds back what does not fit; a deeper queue
            # lets a small dataset start beside a large one while another large one waits.
            while queue and len(inflight) < _capacity(client) * (2 if limit is not None else 1):
                entry = queue.pop()
                ledger.mark_running(str(entry.input), campaign=campaign, trailer_offset=_trailer_size(entry.trailer),
                                    reason=reasons.get(str(entry.input)))
                if not entry.input.exists():
                    # Checked here, not on the worker: the pipeline would create the missing
                    # folder for its trailer.
                    finish(entry, Outcome(FAILED, int(ExitCode.INPUT_ERROR), ExitCode.INPUT_ERROR.name,
                                          f"input not found: {entry.input}", seconds=0.0))
                    continue
                job = {**job_base, "input": str(entry.input)}
                extra: dict[str, Any] = {}
                if limit is not None and str(entry.input) in memory:
                    need = memory[str(entry.input)]
                    if need > limit:
                        logger.warning("%s: estimated %.0f MB, more than any worker offers (%.0f MB): "
                                       "submitted as needing a whole worker", entry.root, need, limit)
                    extra["resources"] = {"MEMORY": min(need, limit)}
                fut = client.submit(run_dataset, job, key=f"autodriz-{entry.root}-{uuid.uuid4().hex[:8]}",
                                    pure=False, retries=0, **extra)
                inflight[fut] = (entry, time.monotonic())
                logger.debug("submitted %s as %s", entry.root, fut.key)
            time.sleep(0.2)
            progress.tick()
            for fut in [f for f in inflight if f.done()]:
                entry, _ = inflight.pop(fut)
                try:
                    outcome = _outcome(fut.result())
                except Exception as exc:  # noqa: BLE001 - run_dataset never raises, so this is Dask's own
                    # failure (KilledWorker after the worker died repeatedly, CancelledError …), of any type
                    outcome = Outcome(FAILED, None, "WORKER_LOST", f"the Dask task failed: {type(exc).__name__}: {exc}")
                finish(entry, outcome)
            now = time.monotonic()
            for fut in [f for f, (_, t) in inflight.items() if now - t > timeout + DRIVER_GRACE]:
                entry, _ = inflight.pop(fut)
                fut.cancel()
                finish(entry, Outcome(FAILED, None, "TIMEOUT",
                                      f"no answer from the cluster within {timeout + DRIVER_GRACE:.0f} s"))
    except BaseException:
        for entry, _ in inflight.values():
            ledger.requeue(str(entry.input), "campaign interrupted while this was running; to be run again")
        raise


# ------------------------------------------------------------------------------------------
# reporting
# ------------------------------------------------------------------------------------------


def dataset_label(input_path: str | Path, base: Path | None = None) -> str:
    """How a user recognises a dataset: its input path, relative to ``base`` when inside it.

    Roots are not enough: the same association name appears in several folders of an archive.
    """
    path = Path(input_path)
    if base is not None:
        try:
            return str(path.resolve().relative_to(base.resolve()))
        except ValueError:
            pass
    return str(path)


def _short(text: str | None, width: int = 70) -> str:
    first = (text or "").splitlines()[0] if text else ""
    return first if len(first) <= width else first[: width - 1] + "…"


def format_table(rows: Sequence[Row], *, limit: int = _TABLE_LIMIT, base: Path | None = None) -> str:
    """A plain-text table of datasets (all when ≤ ``limit``, else only the not-done ones).

    Datasets are named by their input path (relative to ``base``, the ledger's folder).
    """
    shown = list(rows) if len(rows) <= limit else [r for r in rows if r.status not in (DONE, SKIPPED)]
    header = ("input", "status", "tries", "exit", "wcsname", "seconds", "message")
    data = [
        (dataset_label(r.input, base), r.status, str(r.attempts), r.exit_name or "-", r.wcsname or "-",
         f"{r.seconds:.1f}" if r.seconds is not None else "-",
         _short(r.message) if r.status != DONE else "")
        for r in shown
    ]
    widths = [max(len(h), *(len(d[i]) for d in data)) if data else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(d, widths)).rstrip() for d in data]
    if len(shown) < len(rows):
        lines.append(f"({len(rows) - len(shown)} done/skipped dataset(s) not listed)")
    return "\n".join(lines)


def format_summary(report: BatchReport) -> str:
    """The end-of-campaign summary: verdict, table, failures with their trailers."""
    c = report.counts
    lines = [
        f"autodriz batch: {report.exit_code.name} (exit {int(report.exit_code)}): {report.message}",
        f"  ledger: {report.ledger}",
        "  counts: " + ", ".join(f"{s} {c[s]}" for s in STATUSES),
        "",
        format_table(report.rows, base=report.ledger.parent),
    ]
    failures = [r for r in report.rows if r.status == FAILED]
    if failures:
        lines += ["", "failures:"]
        for r in failures:
            lines.append(f"  {dataset_label(r.input, report.ledger.parent)}: {r.exit_name or '-'}: {_short(r.message, 200)}")
            lines.append(f"    input {r.input}; trailer {r.trailer}")
    return "\n".join(lines)


def format_status(path: Path) -> tuple[str, BatchExit]:
    """``autodriz batch --status LEDGER``: counts, last campaign, failures; and the exit code."""
    with Ledger(path, readonly=True) as ledger:
        rows = ledger.rows()
        counts = ledger.counts()
        meta = ledger.meta()
    lines = [
        f"ledger {path.absolute()}: {len(rows)} dataset(s)",
        "  " + ", ".join(f"{s} {counts[s]}" for s in STATUSES),
    ]
    if "last_campaign" in meta:
        lines.append(
            f"  last campaign {meta['last_campaign']}: started {meta.get('last_started', '?')}, "
            f"ended {meta.get('last_ended', 'not yet (running, or it was killed)')}"
        )
        lines.append(f"  command: {meta.get('last_command', '?')}")
    lines += ["", format_table(rows, base=path.parent)]
    if counts[RUNNING]:
        lines.append(
            f"  {counts[RUNNING]} running: in progress if a campaign is running, else left by one that "
            "was killed (the next run treats them as pending)"
        )
    failures = [r for r in rows if r.status == FAILED]
    if failures:
        lines += ["", "failures:"]
        for r in failures:
            lines.append(
                f"  {dataset_label(r.input, path.parent)}: {r.exit_name or '-'} after {r.attempts} attempt(s): "
                f"{_short(r.message, 200)}"
            )
            lines.append(f"    input {r.input}; trailer {r.trailer}")
    return "\n".join(lines), _campaign_exit(counts, False)


# ------------------------------------------------------------------------------------------
# command line (the parser lives in cli.py with the other commands)
# ------------------------------------------------------------------------------------------


def add_batch_arguments(p: argparse.ArgumentParser) -> None:
    """The batch's own flags (the processing flags are the same as ``autodriz INPUT``'s)."""
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="ASN/RAW/FLT paths, globs (quote them), or manifest files (one path or glob per "
                        "line, '#' comments, relative to the manifest)")
    g = p.add_argument_group("campaign")
    g.add_argument("--ledger", type=Path, help="SQLite ledger (default: <manifest>.ledger.sqlite beside the one manifest)")
    g.add_argument("--status", type=Path, metavar="LEDGER", help="print the ledger's counts and failures, run nothing")
    g.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="worker processes of the local Dask cluster, one dataset each (default: number of CPUs)")
    g.add_argument("--scheduler", metavar="ADDRESS", help="submit to this Dask scheduler (tcp://host:8786) instead")
    g.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help=f"seconds allowed for one dataset before it is killed and failed (default {DEFAULT_TIMEOUT:.0f})")
    g.add_argument("--retry-failed", action="store_true", help="run datasets that failed before again")
    g.add_argument("--reprocess-if", action="append", default=[], choices=REPROCESS_CONDITIONS, metavar="CONDITION",
                   help="also run finished datasets again when: newer-autodriz (autodriz is newer than the one that "
                        "made them), newer-dependencies (autodriz, drizzlepac, stwcs, tweakwcs, astropy or photutils "
                        "is newer), any-version (any recorded version differs); repeatable. Changed inputs, settings "
                        "or reference catalog always make a dataset run again")
    g.add_argument("--worker-memory", type=float, metavar="MB", dest="worker_memory_mb",
                   help="give each local worker a MEMORY resource of MB megabytes, so that datasets are "
                        "scheduled by their estimated memory (on a cluster: dask worker --resources MEMORY=MB)")
    g.add_argument("--dry-run", action="store_true",
                   help="print what would run and why (the plan), run nothing, change nothing")
    g.add_argument("--summary-json", type=Path, help="write the summary (counts, every dataset's row) as JSON here")
    g.add_argument("--report", type=Path, metavar="LEDGER",
                   help="write the campaign report (<ledger>.campaign.json and .campaign.html beside it: outcomes, "
                        "chosen WCS kinds and catalogs, failure classes, time and memory, changes since the previous "
                        "report) and run nothing; every campaign also writes it when it ends")
    g.add_argument("--progress", choices=("auto", "bar", "plain", "off"), default="auto",
                   help="progress display (auto: a bar on a terminal, one line per dataset otherwise)")


def batch_exit_table() -> str:
    """The batch's exit codes, for ``--help``."""
    return "\n".join(f"  {int(c):>3}  {c.name}" for c in BatchExit)


def run_batch_command(args: argparse.Namespace, cli: Mapping[str, Any], argv: Sequence[str]) -> int:
    """``autodriz batch`` after argument parsing; returns the exit status."""
    from autodriz.errors import AutodrizError

    if args.status is not None:
        if args.inputs:
            print("autodriz batch: --status takes no inputs", file=sys.stderr)
            return int(BatchExit.USAGE)
        try:
            text, code = format_status(args.status)
        except LedgerError as exc:
            print(f"autodriz batch: {exc}", file=sys.stderr)
            return int(BatchExit.LEDGER_ERROR)
        print(text)
        return int(code)
    if args.report is not None:
        from autodriz.campaign import write_campaign_report

        if args.inputs:
            print("autodriz batch: --report takes no inputs", file=sys.stderr)
            return int(BatchExit.USAGE)
        try:
            paths = write_campaign_report(args.report)
        except LedgerError as exc:
            print(f"autodriz batch: {exc}", file=sys.stderr)
            return int(BatchExit.LEDGER_ERROR)
        print("\n".join(f"autodriz batch: campaign report {p}" for p in paths))
        return int(BatchExit.OK)
    if args.workers < 1 or args.timeout <= 0:
        print("autodriz batch: --workers must be >= 1 and --timeout > 0", file=sys.stderr)
        return int(BatchExit.USAGE)
    options = BatchOptions(
        inputs=tuple(args.inputs),
        ledger=args.ledger,
        workers=args.workers,
        scheduler=args.scheduler,
        timeout=args.timeout,
        retry_failed=args.retry_failed,
        summary_json=args.summary_json,
        progress=args.progress,
        cli=cli,
        config=args.config,
        argv=tuple(argv),
        log_level="WARNING" if args.quiet else (args.log_level or "INFO"),
        reprocess_if=tuple(args.reprocess_if),
        dry_run=args.dry_run,
        worker_memory_mb=args.worker_memory_mb,
    )
    try:
        if options.dry_run:
            print("\n".join(dry_run(options)))
            return int(BatchExit.OK)
        report = run_batch(options)
    except (UsageError, AutodrizError) as exc:
        print(f"autodriz batch: {exc}", file=sys.stderr)
        return int(BatchExit.USAGE)
    except LedgerBusy as exc:
        print(f"autodriz batch: {exc}; wait for it to finish (or check it is still alive)", file=sys.stderr)
        return int(BatchExit.LEDGER_ERROR)
    except LedgerError as exc:
        print(f"autodriz batch: {exc}", file=sys.stderr)
        return int(BatchExit.LEDGER_ERROR)
    except ClusterError as exc:
        print(f"autodriz batch: {exc}", file=sys.stderr)
        return int(BatchExit.CLUSTER_ERROR)
    print(format_summary(report))
    from autodriz.campaign import write_campaign_report

    try:
        for path in write_campaign_report(report.ledger):
            print(f"  campaign report: {path}")
    except OSError as exc:
        # The report is derived from the ledger, which holds every outcome: the campaign's exit
        # code stays what its datasets made it, and the report can be written again.
        print(f"autodriz batch: WARNING campaign report not written ({exc}); the ledger has every outcome: "
              f"`autodriz batch --report {report.ledger}` writes it again", file=sys.stderr)
    if options.summary_json:
        from autodriz.products import write_json_atomic

        options.summary_json.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(options.summary_json, report.as_dict())
    return int(report.exit_code)


def _main(argv: Sequence[str]) -> int:
    """``python -m autodriz.batch --run-one JOB_JSON [INPUT]``: the per-dataset child."""
    if len(argv) >= 2 and argv[0] == "--run-one":
        return _run_one(argv[1])
    print("usage: python -m autodriz.batch --run-one JOB_JSON [INPUT]  (internal; use `autodriz batch`)", file=sys.stderr)
    return int(ExitCode.USAGE)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
