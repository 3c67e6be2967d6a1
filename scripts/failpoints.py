#!/usr/bin/env python3
"""Fail every failpoint of a full run, and of a batch, and check what each leaves behind.

``scripts/failpoints.py`` records a full run of the smallest simulated visit (a priori, a
posteriori against the visit's catalog, verification; ``tests/reliability/failpointing.py``), then
for each ``(boundary, N)`` it passed runs the same command in a fresh copy with that call failing
and checks: a documented exit code other than 1 and one verdict line, no partial product under a
final name, inputs all untouched or all updated, and (when they were updated, or with
``--rerun-all``) that the next run ends like the reference run with the same WCS. ``--batch``
does the same for ``autodriz batch`` on the visit (ledger commits included), checking the ledger
after each failure and that the next batch finishes the dataset with the same WCS.

Prints one line per failpoint and the list of failpoints hit; exits 1 if any broke the property.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "reliability"))

import failpointing  # noqa: E402

from autodriz import failpoints  # noqa: E402


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
        t = failpointing.trial(ref, name, n, work, rerun=True if rerun_all else None)
        shutil.rmtree(work, ignore_errors=True)
        trials.append(t)
        print(f"{'PROBLEM' if t.problems else 'ok':<8}{t.failpoint:<32} exit {t.code:<3} inputs {t.state:<10} "
              f"rerun {t.rerun_code if t.rerun_code is not None else '-':<3} {time.monotonic() - t0:5.0f} s  "
              f"{t.verdict[:150]}" + (f"\n        {t.problems}" if t.problems else ""), flush=True)
    return trials


def _batch(visit: Path, ledger: Path, mode: tuple[str, ...], *, log: Path | None, failpoint: str | None
           ) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in (failpoints.ENV, failpoints.LOG_ENV)}
    if log is not None:
        env[failpoints.LOG_ENV] = str(log)
    if failpoint is not None:
        env[failpoints.ENV] = failpoint
    argv = [sys.executable, "-m", "autodriz", "batch", str(visit / f"{failpointing.ROOT}_asn.fits"),
            "--ledger", str(ledger), "--workers", "1", "--progress", "plain", "--retry-failed",
            *failpointing.command(visit, mode)[1:]]
    return subprocess.run(argv, env=env, capture_output=True, text=True, errors="replace", timeout=1800, check=False)


def _ledger_rows(ledger: Path) -> list[tuple[str, str]]:
    if not ledger.is_file():
        return []
    with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as conn:
        try:
            return [tuple(r) for r in conn.execute("SELECT input, status FROM datasets")]
        except sqlite3.OperationalError as exc:  # the schema's own commit failed: an empty ledger
            if "no such table" in str(exc):
                return []
            raise


def batch(base: Path, pristine: Path, mode: tuple[str, ...]) -> list[failpointing.Trial]:
    """Every failpoint of a one-dataset batch; after each: ledger consistent, inputs whole, resume works."""
    ref_dir = base / "batch-reference"
    visit = ref_dir / "visit"
    shutil.copytree(pristine, visit)
    log = ref_dir / "record.log"
    done = _batch(visit, ref_dir / "ledger.sqlite", mode, log=log, failpoint=None)
    rows = _ledger_rows(ref_dir / "ledger.sqlite")
    assert done.returncode == 0 and [s for _, s in rows] == ["done"], (done.returncode, rows, done.stdout[-2000:])
    ref = failpointing.Reference(pristine, mode, 0, failpointing.wcs_of(visit), failpointing.digests(pristine), {},
                                 tuple(failpointing.hits(log)))
    shapes = {}
    from astropy.io import fits

    for p in sorted(visit.glob(f"{failpointing.ROOT}_dr[zc].fits")):
        with fits.open(p) as hdul:
            shapes[p.name] = hdul["SCI"].data.shape
    ref = failpointing.Reference(ref.pristine, ref.mode, ref.code, ref.wcs, ref.sha, shapes, ref.failpoints)
    print(f"batch reference: exit 0, {len(ref.failpoints)} failpoints: "
          + ", ".join(f"{n}:{k}" for n, k in ref.failpoints), flush=True)
    trials = []
    for name, n in ref.failpoints:
        work = base / f"batch-{name}-{n}"
        visit = work / "visit"
        shutil.copytree(pristine, visit)
        ledger = work / "ledger.sqlite"
        t0 = time.monotonic()
        spec = f"{name}:{n}"
        first = _batch(visit, ledger, mode, log=work / "trial.log", failpoint=spec)
        problems = []
        if first.returncode == 1 or "Traceback (most recent call last)" in first.stdout + first.stderr:
            problems.append(f"batch exit {first.returncode}: {(first.stderr or first.stdout)[-400:]}")
        rows = _ledger_rows(ledger)
        statuses = [s for _, s in rows]
        if statuses not in ([], ["done"], ["failed"], ["pending"]):
            problems.append(f"ledger after the failure: {rows}")
        # The dataset's own process (exit code, products, inputs) is checked like a single run,
        # with the status the ledger gives it.
        code = 0 if statuses == ["done"] else 8
        state, left = failpointing.check_left_behind(visit, ref, code)
        problems += [p for p in left if "exit 8" not in p or statuses == ["done"]]
        again = _batch(visit, ledger, mode, log=None, failpoint=None)
        rows = _ledger_rows(ledger)
        if again.returncode != 0 or [s for _, s in rows] != ["done"]:
            problems.append(f"the next batch: exit {again.returncode}, ledger {rows}")
        wcs = failpointing.wcs_of(visit)
        if any(not failpointing.same_wcs(wcs[f], ref.wcs[f]) for f in wcs):
            problems.append("the next batch's WCS differs from the reference's")
        verdict = (first.stdout.strip().splitlines() or [""])[-1]
        t = failpointing.Trial(f"batch {spec}", first.returncode, verdict, state, again.returncode, problems)
        trials.append(t)
        shutil.rmtree(work, ignore_errors=True)
        print(f"{'PROBLEM' if problems else 'ok':<8}{t.failpoint:<38} batch exit {t.code:<3} ledger {statuses} "
              f"inputs {state:<10} {time.monotonic() - t0:5.0f} s  {verdict[:120]}"
              + (f"\n        {problems}" if problems else ""), flush=True)
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
