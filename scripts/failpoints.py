#!/usr/bin/env python3
"""Fail every failpoint of a full run, and of a batch, and check what each leaves behind.

``scripts/failpoints.py`` records a full run of the smallest simulated visit (a priori, a
posteriori against the visit's catalog, verification; ``tests/reliability/failpointing.py``), then
for each ``(boundary, N)`` it passed runs the same command in a fresh copy with that call failing
and checks: a documented exit code other than 1 and one verdict line, no partial product under a
final name, inputs all untouched or all updated, and (when they were updated, or with
``--rerun-all``) that the next run ends like the reference run with the same WCS; each trial in a
process of its own. ``--batch`` does the same for ``autodriz batch`` on the visit (ledger commits
included), checking the ledger after each failure and that the next batch finishes the dataset
with the same WCS. ``pytest -m slow tests/reliability/test_failpoints.py`` is the same
enumeration as a test.

Prints one line per failpoint and the list of failpoints hit; exits 1 if any broke the property.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "reliability"))

import failpointing  # noqa: E402


def _guard_network() -> None:
    """The tests' network guard, here and in every child (all runs are offline; this makes sure)."""
    import importlib.util

    guard = ROOT / "tests" / "netguard"
    os.environ["TESTS_NO_NETWORK"] = "1"
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(guard), os.environ.get("PYTHONPATH", "")) if p)
    spec = importlib.util.spec_from_file_location("_tests_netguard", guard / "sitecustomize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.install()


def single(base: Path, pristine: Path, mode: tuple[str, ...], rerun_all: bool) -> list[failpointing.Trial]:
    (base / "reference").mkdir()
    t0 = time.monotonic()
    ref = failpointing.reference(pristine, base / "reference", mode)
    print(f"reference run ({' '.join(mode)}): exit {ref.code}, {time.monotonic() - t0:.0f} s, "
          f"{len(ref.failpoints)} failpoints: " + ", ".join(f"{n}:{k}" for n, k in ref.failpoints), flush=True)
    trials = []
    for name, n in ref.failpoints:
        work = base / f"{name}-{n}"
        work.mkdir()
        t0 = time.monotonic()
        t = failpointing.forked_trial(ref, name, n, work, rerun=True if rerun_all else None)
        shutil.rmtree(work, ignore_errors=True)
        trials.append(t)
        print(f"{'PROBLEM' if t.problems else 'ok':<8}{t.failpoint:<32} exit {t.code:<3} inputs {t.state:<10} "
              f"rerun {t.rerun_code if t.rerun_code is not None else '-':<3} {time.monotonic() - t0:5.0f} s  "
              f"{t.verdict[:150]}" + (f"\n        {t.problems}" if t.problems else ""), flush=True)
    return trials


def batch(base: Path, pristine: Path, mode: tuple[str, ...]) -> list[failpointing.Trial]:
    """Every failpoint of a one-dataset batch; after each: ledger consistent, inputs whole, resume works."""
    (base / "batch-reference").mkdir()
    ref = failpointing.batch_reference(pristine, base / "batch-reference", mode)
    print(f"batch reference: exit 0, {len(ref.failpoints)} failpoints: "
          + ", ".join(f"{n}:{k}" for n, k in ref.failpoints), flush=True)
    trials = []
    for name, n in ref.failpoints:
        work = base / f"batch-{name}-{n}"
        work.mkdir()
        t0 = time.monotonic()
        t = failpointing.batch_trial(ref, name, n, work)
        shutil.rmtree(work, ignore_errors=True)
        trials.append(t)
        print(f"{'PROBLEM' if t.problems else 'ok':<8}{t.failpoint:<44} batch exit {t.code:<3} inputs {t.state:<10} "
              f"{time.monotonic() - t0:5.0f} s  {t.verdict[:120]}" + (f"\n        {t.problems}" if t.problems else ""),
              flush=True)
    return trials


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("full", "default-only"), default="full")
    p.add_argument("--batch", action="store_true", help="also every failpoint of `autodriz batch`")
    p.add_argument("--no-single", action="store_true", help="only the batch")
    p.add_argument("--rerun-all", action="store_true", help="run again after every trial, not only when the "
                   "inputs changed")
    p.add_argument("--json", type=Path, help="write the trials here")
    args = p.parse_args(argv)
    for name in list(os.environ):
        if name.startswith(("AUTODRIZ_", "ASTROMETRY_")) or name in ("jref", "iref"):
            del os.environ[name]
    os.environ["MPLBACKEND"] = "Agg"
    _guard_network()
    mode = failpointing.FULL if args.mode == "full" else failpointing.DEFAULT_ONLY
    base = Path(tempfile.mkdtemp(prefix="autodriz-failpoints-"))
    t0 = time.monotonic()
    try:
        pristine = failpointing.make_visit(base / "pristine")
        trials = [] if args.no_single else single(base, pristine, mode, args.rerun_all)
        if args.batch:
            trials += batch(base, pristine, failpointing.DEFAULT_ONLY)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    bad = [t for t in trials if t.problems]
    hit = sorted({t.failpoint for t in trials})
    print(f"\n{len(trials)} failpoints in {time.monotonic() - t0:.0f} s; {len(bad)} broke the property")
    print("exit codes: " + ", ".join(f"{c}: {sum(1 for t in trials if t.code == c)}"
                                     for c in sorted({t.code for t in trials})))
    print("failpoints hit: " + ", ".join(hit))
    if args.json:
        args.json.write_text(json.dumps([t.__dict__ for t in trials], indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
