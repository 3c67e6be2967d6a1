#!/usr/bin/env python
"""Cost of verifying one candidate vs one full AstroDrizzle run, side by side in one run.

For each visit (simulated ACS/WFC, 4 exposures: 256x512 subarrays and, unless
``--skip-full``, full 2048x4096 chips; with ``--goodss`` also the real WFC3/IR GOODS-S
exposures) the script makes the pipeline-default candidate once, then times, in this order,
``verify_candidate`` (harness + indices), the AstroDrizzle run the pipeline makes for the DRZ
product on the same copies (``autodriz.drizzle.run_astrodrizzle``, child process, MDRIZTAB
parameters), and ``verify_candidate`` again. The machine may be shared, so the two
verification timings bracket the AstroDrizzle one and their mean is compared with it.

Usage::

    python scripts/bench_verification.py [--skip-full] [--goodss] [--num-cores 1] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

from autodriz.config import astrodrizzle_defaults
from autodriz.drizzle import run_astrodrizzle
from autodriz.inputs import resolve_input
from autodriz.simulate import EXACT_WORLD, SimulationConfig, simulate_visit
from autodriz.solutions.base import Candidate
from autodriz.solutions.default import make_default_candidate
from autodriz.verifydriz import verify_candidate


def bench(label: str, dataset, cand, folders, num_cores: int) -> dict:
    v1 = verify_candidate(cand, dataset)
    ad_dir = cand.workdir / "bench_ad"
    ad_dir.mkdir(exist_ok=True)
    inputs = []
    for p in dataset.flt_paths:
        dest = ad_dir / cand.copies[p].name
        shutil.copyfile(cand.copies[p], dest)
        inputs.append(dest)
    t = time.perf_counter()
    run = run_astrodrizzle(
        inputs, dataset.root, ad_dir, folders,
        astrodrizzle_defaults(dataset.instrument_key, len(inputs)), num_cores=num_cores,
    )
    ad_seconds = time.perf_counter() - t
    v2 = verify_candidate(cand, dataset)
    ver = 0.5 * (v1.seconds + v2.seconds)
    return {
        "label": label,
        "ad": ad_seconds,
        "ad_child": run.seconds,
        "v1": v1.seconds,
        "v2": v2.seconds,
        "ratio": ver / ad_seconds,
        "status": v2.status,
        "timings": {k: round(0.5 * (v1.timings.get(k, 0) + v2.timings.get(k, 0)), 2) for k in v2.timings},
        "pixels": v2.details.get("allocated_pixels"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--skip-full", action="store_true", help="only the small subarray visit")
    p.add_argument("--goodss", action="store_true", help="also the real WFC3/IR GOODS-S exposures")
    p.add_argument("--num-cores", type=int, default=1, help="AstroDrizzle cores (the pipeline default is 1)")
    p.add_argument("--workdir", type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        wd = args.workdir or Path(tmp)
        wd.mkdir(parents=True, exist_ok=True)
        shapes = [("ACS/WFC sim 4 x (2 x 256x512)", (256, 512), 200)]
        if not args.skip_full:
            shapes.append(("ACS/WFC sim 4 x (2 x 2048x4096)", (2048, 4096), 3000))
        for label, shape, n_stars in shapes:
            d = wd / f"bench_{shape[0]}"
            sim = simulate_visit(d, SimulationConfig(n_exposures=4, chip_shape=shape, n_stars=n_stars, seed=3,
                                                     write_flc=False, **EXACT_WORLD))
            dataset = resolve_input(sim.asn_path)
            folders = {"jref": sim.jref_dir}
            cand = make_default_candidate(list(dataset.flt_paths), d / "default", folders, allow_header_wcs=False)
            rows.append(bench(label, dataset, cand, folders, args.num_cores))
            print(rows[-1], flush=True)
        if args.goodss:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from realdata import (
                prepare_goodss,  # test helper: casts the shipped uint8 pixels
            )

            shared = Path(__file__).resolve().parents[2] / "shared" / "data"
            asn = prepare_goodss(shared, wd / "goodss", "IB6O23020")
            dataset = resolve_input(asn)
            cand = Candidate("header", "OPUS", wd / "goodss", {q: q for q in dataset.flt_paths}, "header WCS")
            rows.append(bench("WFC3/IR GOODS-S 4 x 1014x1014 (real)", dataset, cand, {"iref": None}, args.num_cores))
            print(rows[-1], flush=True)
    print()
    print(f"{'visit':40s} {'AstroDrizzle':>13s} {'verify (2 runs)':>17s} {'ratio':>7s}  breakdown (mean)")
    for r in rows:
        print(
            f"{r['label']:40s} {r['ad']:12.1f}s {r['v1']:7.1f}s/{r['v2']:6.1f}s {100 * r['ratio']:6.1f}%  "
            f"{r['timings']}  [{r['status']}]"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
