"""Measure the a posteriori stage against the simulator's truth (acceptance figures).

    python scripts/aposteriori_accuracy.py OUTDIR [--chip 1024x2048] [--catalog FILE ...]

Simulates an ACS/WFC visit on the real NGC 6791 Gaia field (``../shared/data/catalogs/gaia.cat``)
with a 1.0″ pointing error and a 0.05° roll error, runs the pipeline-default stage and then the
a posteriori stage once per reference catalog (default: the simulator's Gaia-like ``refcat``
with proper motions, the real ``gaia.cat`` without them, the real ``sdss.cat``), and prints, per
candidate, the fit quality, matches, fit RMS and the error against the truth in mas.
Offline; writes only into OUTDIR.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from autodriz.config import Settings
from autodriz.inputs import resolve_input
from autodriz.simulate import SimulationConfig, simulate_visit
from autodriz.solutions.aposteriori import make_aposteriori_candidates
from autodriz.solutions.default import make_default_candidate
from autodriz.truth import load_truth, visit_error

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--chip", default="1024x2048", help="chip shape NYxNX (default 1024x2048)")
    parser.add_argument("--shared", type=Path, default=SHARED, help="shared data folder")
    parser.add_argument("--catalog", type=Path, action="append", help="reference catalog file (repeatable)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")

    ny, nx = (int(v) for v in args.chip.lower().split("x"))
    config = SimulationConfig(
        catalog=args.shared / "catalogs" / "gaia.cat",
        ra=290.22111182153577, dec=37.787546977448145,  # median of gaia.cat: no recentring
        chip_shape=(ny, nx), pointing_error_mas=(600.0, 800.0), rotation_error_arcsec=180.0, seed=args.seed,
    )
    visit = simulate_visit(args.outdir / "visit", config)
    truth = load_truth(visit.truth_path)
    dataset = resolve_input(visit.asn_path)
    work = args.outdir / "work"
    work.mkdir(parents=True, exist_ok=True)
    default = make_default_candidate(
        [*dataset.flt_paths, *dataset.flc_paths], work / f"{dataset.root}_default", {"jref": visit.jref_dir},
        allow_header_wcs=False,
    )
    print(f"default WCS {default.wcsname}: {visit_error(list(default.copies.values()), truth).rms_mas:.1f} mas from the truth")
    catalogs = args.catalog or [
        visit.catalog_path, args.shared / "catalogs" / "gaia.cat", args.shared / "catalogs" / "sdss.cat"
    ]
    for k, cat in enumerate(catalogs):
        t0 = time.perf_counter()
        cands = make_aposteriori_candidates(default, dataset, Settings(catalog=cat, offline=True), work / f"cat{k}")
        print(f"\ncatalog {cat.name} ({time.perf_counter() - t0:.1f} s)")
        for c in cands:
            st = c.details.get("statistics", {})
            err = visit_error(list(c.copies.values()), truth).rms_mas if c.copies else float("nan")
            rms = st.get("rms_mas")
            print(
                f"  {c.name:34s} quality {c.quality:2d}  matches {st.get('n_matches', '-')!s:>4}  "
                f"fit RMS {rms if rms is not None else float('nan'):7.2f} mas  truth error {err:7.2f} mas  "
                f"{c.wcsname}"
            )
            for note in c.notes[:2]:
                print(f"      {note}")


if __name__ == "__main__":
    main()
