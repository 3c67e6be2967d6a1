"""``autodriz batch`` on the command line: its flags, its exit table and the command itself.

The parser lives in autodriz.cli.batch with the other commands; these add the batch's own flags to it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autodriz.batch.common import DEFAULT_TIMEOUT, BatchExit, ClusterError, UsageError
from autodriz.batch.driver import BatchOptions, dry_run, run_batch
from autodriz.batch.summary import format_status, format_summary
from autodriz.ledger import LedgerBusy, LedgerError
from autodriz.provenance import REPROCESS_CONDITIONS


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
