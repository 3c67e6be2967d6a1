"""``python -m autodriz.batch --run-one JOB_JSON [INPUT]``: the per-dataset child of a campaign."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from autodriz.batch.task import run_one
from autodriz.exitcodes import ExitCode


def _main(argv: Sequence[str]) -> int:
    """``python -m autodriz.batch --run-one JOB_JSON [INPUT]``: the per-dataset child."""
    if len(argv) >= 2 and argv[0] == "--run-one":
        return run_one(argv[1])
    print("usage: python -m autodriz.batch --run-one JOB_JSON [INPUT]  (internal; use `autodriz batch`)", file=sys.stderr)
    return int(ExitCode.USAGE)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
