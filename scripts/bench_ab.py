"""Two versions of autodriz on the same dataset, run alternately: which is faster, stage by stage.

This machine's speed drifts by more than most changes are worth (a full-size run took 54.9 s
in one hour and 58.6 s in the next on the same code), so a change is measured against its
baseline in pairs: each pair runs both versions, one after the other, in alternating order
(A B, B A, …), each on a fresh copy of the dataset flushed to disk, after the same wait. The
script prints each run's total and stage times (from the trailer's ``AUTODRIZ-STAGE`` lines)
and, per stage, the median of B − A over the pairs: a difference is real when its sign holds
in (nearly) every pair.

Example (a worktree of the baseline commit at /tmp/base)::

    python scripts/bench_ab.py --a /tmp/base/src --b src --dataset /path/to/input --pairs 4 -- \\
        jsim01010_asn.fits --jref jref --catalog jsim01010_refcat.ecsv --offline --num-cores 2

``--dataset`` is a folder holding the association and everything the arguments name (copied
whole before every run); the arguments after ``--`` are autodriz's, run in that copy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

def stage_seconds(trailer_text: str) -> dict[str, float]:
    """Seconds of each stage as the trailer's ``AUTODRIZ-STAGE end`` lines give them."""
    from autodriz.logs import stage_ends

    return {name: seconds for name, _, seconds in stage_ends(trailer_text)}


def run_once(src: Path, dataset: Path, work: Path, args: list[str], settle: float) -> dict[str, float]:
    """One autodriz run of the code in ``src`` on a fresh copy of ``dataset``: its total and stages."""
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(dataset, work)
    # The copy's writeback must not run inside the timed run.
    os.sync()
    time.sleep(settle)
    env = {**os.environ, "PYTHONPATH": str(src.resolve())}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "autodriz", *args], cwd=work, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    total = time.perf_counter() - t0
    if proc.returncode not in (0, 9):
        raise SystemExit(f"autodriz from {src} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    trailers = sorted(work.glob("*.tra"))
    stages = stage_seconds(trailers[0].read_text(encoding="utf-8", errors="replace")) if trailers else {}
    return {"total": total, **stages}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--a", type=Path, required=True, help="the baseline's src/ folder (e.g. a worktree's)")
    p.add_argument("--b", type=Path, required=True, help="the changed version's src/ folder")
    p.add_argument("--dataset", type=Path, required=True, help="folder with the association and its files")
    p.add_argument("--pairs", type=int, default=4, help="pairs of runs (default 4)")
    p.add_argument("--settle", type=float, default=15.0, help="seconds to wait before each run (default 15)")
    p.add_argument("--workdir", type=Path, help="where the copies go (default: a new folder under $TMPDIR)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="autodriz's arguments, after --")
    ns = p.parse_args(argv)
    args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
    if not args:
        p.error("give autodriz's arguments after --")
    for src in (ns.a, ns.b):
        if not (src / "autodriz" / "__init__.py").is_file():
            p.error(f"{src} is not a src/ folder holding autodriz")
    work = ns.workdir or Path(tempfile.mkdtemp(prefix="bench_ab_"))
    work.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    for pair in range(ns.pairs):
        order = ("A", "B") if pair % 2 == 0 else ("B", "A")
        for label in order:
            src = ns.a if label == "A" else ns.b
            result = run_once(src, ns.dataset, work / "run", args, ns.settle)
            runs[label].append(result)
            stages = "  ".join(f"{k} {v:.1f}" for k, v in result.items() if k != "total")
            print(f"pair {pair + 1}/{ns.pairs} {label}: total {result['total']:.1f} s  ({stages})", flush=True)
    shutil.rmtree(work / "run", ignore_errors=True)
    keys = [k for k in runs["A"][0] if all(k in r for r in runs["A"] + runs["B"])]
    print(f"\n{'':>16} {'A median':>9} {'B median':>9} {'B − A per pair (median; each)':>30}")
    for key in keys:
        a = [r[key] for r in runs["A"]]
        b = [r[key] for r in runs["B"]]
        deltas = [y - x for x, y in zip(a, b, strict=True)]
        each = ", ".join(f"{d:+.2f}" for d in deltas)
        print(f"{key:>16} {statistics.median(a):9.2f} {statistics.median(b):9.2f} "
              f"{statistics.median(deltas):+9.2f}  ({each})")
    print(f"A = {ns.a}\nB = {ns.b}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
