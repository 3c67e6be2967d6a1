"""What a campaign shows its user: dataset labels, the table, the summary and ``--status``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from autodriz.batch.common import BatchExit, campaign_exit
from autodriz.ledger import DONE, FAILED, RUNNING, SKIPPED, STATUSES, Ledger, Row

if TYPE_CHECKING:
    from autodriz.batch.driver import BatchReport


#: Show the per-dataset table in the summary up to this many datasets (failures always).
TABLE_LIMIT = 50


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


def short(text: str | None, width: int = 70) -> str:
    """The first line of ``text``, cut to ``width`` characters with an ellipsis."""
    first = (text or "").splitlines()[0] if text else ""
    return first if len(first) <= width else first[: width - 1] + "…"


def format_table(rows: Sequence[Row], *, limit: int = TABLE_LIMIT, base: Path | None = None) -> str:
    """A plain-text table of datasets (all when ≤ ``limit``, else only the not-done ones).

    Datasets are named by their input path (relative to ``base``, the ledger's folder).
    """
    shown = list(rows) if len(rows) <= limit else [r for r in rows if r.status not in (DONE, SKIPPED)]
    header = ("input", "status", "tries", "exit", "wcsname", "seconds", "message")
    data = [
        (dataset_label(r.input, base), r.status, str(r.attempts), r.exit_name or "-", r.wcsname or "-",
         f"{r.seconds:.1f}" if r.seconds is not None else "-",
         short(r.message) if r.status != DONE else "")
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
            lines.append(f"  {dataset_label(r.input, report.ledger.parent)}: {r.exit_name or '-'}: {short(r.message, 200)}")
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
                f"{short(r.message, 200)}"
            )
            lines.append(f"    input {r.input}; trailer {r.trailer}")
    return "\n".join(lines), campaign_exit(counts, False)
