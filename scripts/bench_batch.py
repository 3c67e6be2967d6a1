#!/usr/bin/env python
"""Throughput of ``autodriz batch``: 2 workers vs 1 worker over the same synthetic datasets.

Simulates N small ACS/WFC visits twice (identical bytes, one copy per run, because a run updates
its inputs), runs a campaign over each copy with a LocalCluster of 1 and then 2 worker processes,
and prints both wall times, the ratio of throughputs and the peak resident memory per worker
(the worker process plus the dataset processes it started, sampled every 0.2 s).

    python scripts/bench_batch.py                 # 8 datasets, 128x256 chips
    python scripts/bench_batch.py -n 8 --chip-shape 256 512 --keep /tmp/bench

Each campaign's time includes starting its LocalCluster, as an operator would see it. The
ratio's target on a 2-core machine is >= 1.7.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

import psutil

from autodriz.batch import BatchExit, BatchOptions, PlainProgress, run_batch
from autodriz.simulate import SimulationConfig, simulate_visit


class RssSampler:
    """Peak RSS of each Dask worker process together with its descendants (the dataset processes)."""

    def __init__(self, period: float = 0.2) -> None:
        self._period = period
        self._stop = threading.Event()
        self.peak_mb: dict[int, float] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(self._period):
            for child in me.children(recursive=False):
                try:
                    cmd = " ".join(child.cmdline())
                    if "spawn_main" not in cmd:  # only the LocalCluster's worker processes
                        continue
                    total = child.memory_info().rss
                    for d in child.children(recursive=True):
                        try:
                            total += d.memory_info().rss
                        except psutil.Error:
                            pass  # a short-lived child ended while we looked
                except psutil.Error:
                    continue
                self.peak_mb[child.pid] = max(self.peak_mb.get(child.pid, 0.0), total / 2**20)


def make_visits(folder: Path, n: int, chip_shape: tuple[int, int]) -> list[Path]:
    """N small visits with distinct association ids; returns their ASN paths."""
    paths = []
    for i in range(n):
        cfg = SimulationConfig(
            asn_id=f"JBEN{i:02d}010", chip_shape=chip_shape, write_flc=False, n_stars=50, seed=100 + i
        )
        paths.append(simulate_visit(folder / f"visit{i:02d}", cfg).asn_path)
    return paths


def campaign(folder: Path, visits: list[Path], jref: Path, workers: int) -> tuple[float, dict[int, float], list]:
    """Run one campaign; return wall seconds, peak MB per worker, and the ledger rows."""
    manifest = folder / "campaign.txt"
    manifest.write_text("\n".join(str(p) for p in visits) + "\n")
    options = BatchOptions(
        inputs=(str(manifest),), workers=workers, progress="plain", cli={"jref": jref},
        argv=("bench_batch", f"--workers={workers}"), log_level="WARNING",
    )
    with RssSampler() as sampler:
        t0 = time.perf_counter()
        report = run_batch(options, progress=PlainProgress())
        seconds = time.perf_counter() - t0
    if report.exit_code != BatchExit.OK:
        raise SystemExit(f"campaign with {workers} worker(s) did not finish cleanly: {report.message}")
    return seconds, sampler.peak_mb, list(report.rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--datasets", type=int, default=8)
    p.add_argument("--chip-shape", type=int, nargs=2, default=(128, 256), metavar=("NY", "NX"))
    p.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary folder)")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = p.parse_args(argv)

    base = args.keep or Path(tempfile.mkdtemp(prefix="autodriz-bench-"))
    try:
        print(f"simulating {args.datasets} visits ({args.chip_shape[0]}x{args.chip_shape[1]} chips) in {base} …")
        one = make_visits(base / "w1", args.datasets, tuple(args.chip_shape))
        shutil.copytree(base / "w1", base / "w2")
        two = [base / "w2" / p.relative_to(base / "w1") for p in one]
        jref = one[0].parent / "jref"

        load_before = os.getloadavg()[0]
        t1, rss1, rows1 = campaign(base / "w1", one, jref, 1)
        t2, rss2, rows2 = campaign(base / "w2", two, jref, 2)
        ratio = t1 / t2
        per_dataset = [r.seconds for r in rows1 if r.seconds]
        print()
        print(f"datasets:                 {args.datasets} (mean {sum(per_dataset) / len(per_dataset):.1f} s each with 1 worker)")
        print(f"1 worker:                 {t1:6.1f} s  ({3600 * args.datasets / t1:6.0f} datasets/hour)")
        print(f"2 workers:                {t2:6.1f} s  ({3600 * args.datasets / t2:6.0f} datasets/hour)")
        print(f"throughput ratio 2w/1w:   {ratio:.2f}x  (target >= 1.7)")
        cores = os.cpu_count() or 1
        print(f"load average:             {load_before:.1f} before, {os.getloadavg()[0]:.1f} after ({cores} CPUs)")
        if load_before > 0.5:
            # Other processes were competing for the CPUs: 2 workers could not get 2 idle cores.
            print("warning: the machine was busy before the benchmark started; the ratio understates the "
                  "speed-up (run it on an idle machine)")
        for label, rss, rows in (("1 worker", rss1, rows1), ("2 workers", rss2, rows2)):
            per_worker = ", ".join(f"{mb:.0f} MB" for mb in sorted(rss.values(), reverse=True)) or "not sampled"
            tree = max((r.peak_rss_mb or 0.0) for r in rows)
            print(f"peak RSS per worker ({label}): {per_worker} (worker + its dataset processes); "
                  f"largest single dataset process {tree:.0f} MB")
        if args.json:
            args.json.write_text(json.dumps({
                "datasets": args.datasets, "seconds_1_worker": t1, "seconds_2_workers": t2, "ratio": ratio,
                "peak_rss_mb_per_worker": {"1": sorted(rss1.values()), "2": sorted(rss2.values())},
            }, indent=2))
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
