"""``autodriz batch INPUTS``: many datasets on Dask, resumable (:mod:`autodriz.batch` does the work)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from autodriz.cli.common import add_processing_flags, cli_settings


def _batch_parser() -> argparse.ArgumentParser:
    from autodriz.batch import add_batch_arguments, batch_exit_table

    p = argparse.ArgumentParser(
        prog="autodriz batch",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Process many datasets with the same single-dataset function as `autodriz INPUT`, each in its\n"
            "own process, on Dask distributed (a local cluster, or --scheduler ADDRESS). A SQLite ledger\n"
            "records every dataset's status, so running the same command again resumes: done and skipped\n"
            "datasets are not run again, failed ones only with --retry-failed."
        ),
        epilog=(
            "ledger statuses: pending, running, done (exit 0), skipped (exit 5, DRIZCORR=OMIT), failed (anything\n"
            "else, a crash or the --timeout)\n\n"
            f"exit codes of autodriz batch:\n{batch_exit_table()}"
        ),
    )
    add_batch_arguments(p)
    add_processing_flags(p)
    return p


def run_batch(argv: Sequence[str]) -> int:
    args = _batch_parser().parse_args(argv)
    from autodriz.batch import run_batch_command

    return run_batch_command(args, cli_settings(args), ["autodriz", "batch", *argv])


