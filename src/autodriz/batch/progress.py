"""Progress of a campaign: counts and ETA as plain lines, a rich bar, or nothing."""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any

from autodriz.ledger import DONE, FAILED, SKIPPED


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


class ProgressLogHandler(logging.Handler):
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
