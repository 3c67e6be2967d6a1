#!/usr/bin/env python3
"""Fuzz autodriz with mutated real HST files: ``scripts/fuzz.py --cases 2000 --seed 1``.

Each case copies the real files of ``../shared/data`` (see ``tests/reliability/fuzzing.py``),
damages the copy (keywords deleted, wrong types, NaN/inf/huge WCS and EXPTIME, truncated or
reordered extensions, SCI/DQ shape mismatch, wrong BITPIX, absurd NAXIS, non-ASCII and overlong
strings, odd ASN tables, mismatched headerlets) and runs autodriz on it in-process. Prints the
count per exit code, then every case that broke the property (internal error, traceback, not one
verdict line, inputs changed by a failed run, products or temporary files after a failure), each
reproducible with ``--seed S --only INDEX``. Cases run one after another in a worker process; one
that runs longer than ``--case-timeout`` counts as a failure (hung), its worker is killed and the
run goes on with a fresh one.

``--full-fraction F`` makes that share of cases full runs (a priori on, header WCS allowed; they
drizzle, and include the memory bombs, which run in a child with a 6 GB address-space limit):
slow, off by default.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "reliability"))

import forked  # noqa: E402
import fuzzing  # noqa: E402


def _shared_data() -> Path:
    if os.environ.get("AUTODRIZ_SHARED_DATA"):
        return Path(os.environ["AUTODRIZ_SHARED_DATA"])
    for parent in ROOT.parents:
        if (parent / "shared" / "data" / "README.md").is_file():
            return parent / "shared" / "data"
    raise SystemExit("shared data not found: set AUTODRIZ_SHARED_DATA")


def _run_case(case: fuzzing.Case, templates: fuzzing.Templates, work: Path) -> fuzzing.Outcome:
    """One case, in the worker process; its console is cut to what the report shows."""
    work.mkdir(parents=True)
    outcome = fuzzing.run_case(case, templates, work)
    outcome.console = outcome.console[-4000:]
    return outcome


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--only", type=int, action="append", help="run only this case index (repeatable)")
    p.add_argument("--mutations", help="comma-separated mutation names (default: all); "
                   f"known: {', '.join(fuzzing.BY_NAME)}")
    p.add_argument("--full-fraction", type=float, default=0.0)
    p.add_argument("--verbose", action="store_true", help="one line per case")
    p.add_argument("--case-timeout", type=float, default=600.0, metavar="SECONDS",
                   help="a case still running after this long is a failure (hung): its worker process is "
                   "killed and the run goes on with a fresh one (default 600)")
    p.add_argument("--time-limit", type=float, metavar="SECONDS",
                   help="stop starting new cases after this long and report the ones run")
    args = p.parse_args(argv)
    mutations = tuple(args.mutations.split(",")) if args.mutations else None

    # A run's settings come from the command line only: no AUTODRIZ_*/ASTROMETRY_* from the caller.
    for name in list(os.environ):
        if name.startswith(("AUTODRIZ_", "ASTROMETRY_")) and name != "AUTODRIZ_SHARED_DATA" or name in ("jref", "iref"):
            del os.environ[name]
    os.environ["AUTODRIZ_NUM_CORES"] = "1"
    # The tests' network guard, here and in every child (runs are --offline; this makes sure).
    guard = ROOT / "tests" / "netguard"
    os.environ["TESTS_NO_NETWORK"] = "1"
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(guard), os.environ.get("PYTHONPATH", "")) if p)
    spec = importlib.util.spec_from_file_location("_tests_netguard", guard / "sitecustomize.py")
    netguard = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(netguard)
    netguard.install()

    base = Path(tempfile.mkdtemp(prefix="autodriz-fuzz-"))
    worker = None
    try:
        templates = fuzzing.prepare_templates(_shared_data(), base / "templates")
        codes: collections.Counter[int] = collections.Counter()
        by_mutation: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
        bad = []
        slowest: list[tuple[float, str]] = []
        t0 = time.monotonic()
        indices = list(args.only or range(args.cases))
        done = []
        for index in indices:
            if args.time_limit is not None and time.monotonic() - t0 > args.time_limit:
                print(f"time limit reached after {len(done)} of {len(indices)} cases", flush=True)
                break
            done.append(index)
            case = fuzzing.make_case(args.seed, index, mutations=mutations, full_fraction=args.full_fraction)
            work = base / "case"
            if worker is None:
                # One process runs case after case; a fresh one replaces it when a case hangs or dies.
                worker = forked.Worker(_run_case)
            started = time.monotonic()
            result = worker.run((case, templates, work), args.case_timeout)
            seconds = time.monotonic() - started
            if result.status == "ok":
                outcome = result.value
            elif result.status == "died":  # a crash is an outcome too
                outcome = fuzzing.Outcome(case, "(worker died)", -2, "", [f"worker died (exit {result.exitcode})"])
            else:
                outcome = fuzzing.Outcome(case, "(not known: the worker was killed)", -1, "",
                                          [f"hung: killed after {args.case_timeout:g} s"])
            if result.status != "ok":
                worker = None
            shutil.rmtree(work, ignore_errors=True)
            slowest = sorted([*slowest, (seconds, case.id)], reverse=True)[:5]
            codes[outcome.code] += 1
            by_mutation[case.mutation][outcome.code] += 1
            if args.verbose:
                print(f"{case.id}: exit {outcome.code} ({seconds:.1f} s): {outcome.description} | "
                      f"{outcome.verdict[:160]}", flush=True)
            if outcome.problems:
                bad.append(outcome)
                print(f"PROBLEM {case.id}: {outcome.description}: {'; '.join(outcome.problems)}\n"
                      f"    {outcome.verdict[:300]}", flush=True)
        seconds = time.monotonic() - t0
    finally:
        if worker is not None:
            worker.close()
        shutil.rmtree(base, ignore_errors=True)

    print(f"\n{len(done)} cases, seed {args.seed}, {seconds:.0f} s")
    print("exit code counts: " + ", ".join(f"{c}: {n}" for c, n in sorted(codes.items())))
    for name in sorted(by_mutation):
        print(f"  {name:<22} " + ", ".join(f"exit {c}: {n}" for c, n in sorted(by_mutation[name].items())))
    print("slowest cases: " + ", ".join(f"{cid} {sec:.1f} s" for sec, cid in slowest))
    hung = sum(1 for o in bad if o.code == -1)
    internal = sum(1 for o in bad if o.code == 1)
    tracebacks = sum(1 for o in bad if o.traceback)
    changed = sum(1 for o in bad if o.changed_inputs)
    print(f"internal errors: {internal}, hung (killed): {hung}, tracebacks: {tracebacks}, changed inputs: {changed}, "
          f"cases breaking the property: {len(bad)}")
    failing = collections.Counter(o.case.mutation for o in bad)
    if failing:
        print("failing mutation classes: " + ", ".join(f"{m} ({n}, e.g. --seed {args.seed} --only "
              f"{next(o.case.index for o in bad if o.case.mutation == m)})" for m, n in failing.most_common()))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
