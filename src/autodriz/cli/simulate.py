"""``autodriz simulate DIR`` and ``autodriz demo``: a synthetic visit with a known true WCS, processed or not."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from autodriz.exitcodes import PRODUCT_CODES, ExitCode
from autodriz.instruments import REGISTRY

DEMO_MARKER = ".autodriz-demo"

#: Per-exposure errors of ``autodriz simulate``/``demo``: exposures within a visit differ by a few
#: to tens of mas (the real ib6o23 WFC3/IR exposures in shared/data by up to ~80 mas).
DEMO_RELATIVE_ERROR_MAS = 10.0
DEMO_RELATIVE_ROTATION_ARCSEC = 0.5
DEMO_DISTORTION_RESIDUAL_MAS = 5.0


def _simulate_parser(prog: str, default_dir: Path | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Write a synthetic HST visit with a known true WCS.")
    if default_dir is None:
        p.add_argument("directory", type=Path, help="folder to write the visit into (created)")
    p.add_argument("--seed", type=int, default=1, help="random seed (same seed, same pixels)")
    p.add_argument("--exposures", type=int, default=2, help="number of exposures (default 2)")
    p.add_argument("--chip-shape", type=int, nargs=2, metavar=("NY", "NX"), default=(256, 512),
                   help="pixels per chip (default 256 512, a subarray centred on each chip; 2048 4096 is a full "
                        "ACS/WFC chip, 2051 4096 a full WFC3/UVIS chip; WFC3/IR defaults to its full 1014 1014)")
    p.add_argument("--pointing-error", type=float, nargs=2, metavar=("EAST_MAS", "NORTH_MAS"), default=(150.0, -100.0),
                   help="error of the header WCS, in mas on the sky (default 150 -100)")
    p.add_argument("--rotation-error", type=float, default=0.0, help="roll error of the header WCS in arcsec")
    # Realistic by default: exposures of one visit do not share one pointing error exactly
    # (guide-star re-acquisition), and no distortion model is exact.
    p.add_argument("--relative-error", type=float, default=DEMO_RELATIVE_ERROR_MAS, metavar="MAS",
                   help="RMS per-axis pointing error of each exposure on top of the common one, mas "
                        f"(default {DEMO_RELATIVE_ERROR_MAS:g}; 0 = all exposures share one error)")
    p.add_argument("--relative-rotation", type=float, default=DEMO_RELATIVE_ROTATION_ARCSEC, metavar="ARCSEC",
                   help=f"RMS roll error of each exposure, arcsec (default {DEMO_RELATIVE_ROTATION_ARCSEC:g})")
    p.add_argument("--distortion-residual", type=float, default=DEMO_DISTORTION_RESIDUAL_MAS, metavar="MAS",
                   help="RMS over a full chip of the true distortion's departure from the reference model, mas "
                        f"(default {DEMO_DISTORTION_RESIDUAL_MAS:g}: the ACS/WFC solution's published accuracy; "
                        "a centred subarray sees little of it)")
    p.add_argument("--stars", type=int, default=200, help="number of synthetic stars")
    from autodriz.simulate import DETECTORS

    p.add_argument("--detector", choices=tuple(DETECTORS), default="ACS/WFC",
                   help="ACS/WFC (default; two chips, FLT+FLC), WFC3/UVIS (two chips, FLT+FLC, F555W, the "
                        "reconstructed IDCTAB 2731450pi without NPOL/D2IM) or WFC3/IR (one 1014x1014 chip, FLT in "
                        "e-/s, F140W, the reconstructed IDCTAB w3m18525i; --chip-shape defaults to the full frame)")
    return p


def _simulation_config(args: argparse.Namespace):
    from autodriz.simulate import config_for_detector

    record = REGISTRY.get(args.detector)
    # --chip-shape's default is a two-chip detector's centred subarray; a one-chip detector
    # (WFC3/IR) takes its full frame unless told.
    full_frame = len(record.ccdchips) == 1 and tuple(args.chip_shape) == (256, 512)
    chip_shape = record.chip_shape if full_frame else tuple(args.chip_shape)
    return config_for_detector(
        args.detector,
        n_exposures=args.exposures,
        chip_shape=chip_shape,
        pointing_error_mas=tuple(args.pointing_error),
        rotation_error_arcsec=args.rotation_error,
        relative_error_mas=args.relative_error,
        relative_rotation_arcsec=args.relative_rotation,
        distortion_residual_mas=args.distortion_residual,
        # The demo's catalog stays exact (every star, exact proper motions), as before the
        # simulator's defaults became Gaia DR3-like: with them the demo measured 5.0 mas rms
        # instead of ~0.5 (proper-motion errors over the 11 years to the catalog epoch).
        gaia_dr3_errors=False,
        no_pm_fraction=0.0,
        n_stars=args.stars,
        seed=args.seed,
    )


def run_simulate(argv: Sequence[str]) -> int:
    args = _simulate_parser("autodriz simulate", None).parse_args(argv)
    from autodriz.simulate import simulate_visit

    visit = simulate_visit(args.directory, _simulation_config(args))
    print(f"visit written to {visit.directory}")
    print(f"  association: {visit.asn_path.name}")
    print(f"  exposures:   {', '.join(p.name for p in (*visit.flt_paths, *visit.flc_paths))}")
    print(f"  truth:       {visit.truth_path.name}; reference catalog: {visit.catalog_path.name}")
    print(f"  process it:  autodriz {visit.asn_path} --{visit.jref_dir.name} {visit.jref_dir} --catalog {visit.catalog_path}")
    return 0


def run_demo(argv: Sequence[str]) -> int:
    p = _simulate_parser("autodriz demo", Path("autodriz-demo"))
    p.description = (
        "Simulate a small ACS/WFC visit with a known true WCS and a known pointing error, process it, "
        "and say how far the chosen WCS is from the truth."
    )
    p.add_argument("-o", "--output-dir", type=Path, default=Path("autodriz-demo"), help="demo folder (default ./autodriz-demo)")
    add_demo_flags(p)
    args = p.parse_args(argv)
    from autodriz.config import load_settings
    from autodriz.pipeline import process
    from autodriz.simulate import simulate_visit
    from autodriz.truth import load_truth, visit_error

    demo_dir = args.output_dir.resolve()
    if demo_dir.exists():
        if not (demo_dir / DEMO_MARKER).exists() and any(demo_dir.iterdir()):
            print(f"autodriz demo: {demo_dir} exists and is not an autodriz demo folder; choose another --output-dir", file=sys.stderr)
            return int(ExitCode.USAGE)
        shutil.rmtree(demo_dir)
    demo_dir.mkdir(parents=True)
    (demo_dir / DEMO_MARKER).write_text("made by autodriz demo; safe to delete\n")
    print(f"autodriz demo: simulating an {args.detector} visit in {demo_dir} …")
    visit = simulate_visit(demo_dir, _simulation_config(args))
    settings = load_settings(
        cli={visit.jref_dir.name: visit.jref_dir, "catalog": visit.catalog_path, "log_level": "WARNING" if args.quiet else None},
        config_file=args.config,
    )
    result = process(visit.asn_path, settings, argv=["autodriz", "demo", *argv])
    print(f"autodriz demo: {result.exit_code.name} (exit {int(result.exit_code)}): {result.message}")
    for line in result.summary:
        print(f"  candidate {line}")
    if result.exit_code not in PRODUCT_CODES:
        return int(result.exit_code)
    truth = load_truth(visit.truth_path)
    err = visit_error(list(visit.flt_paths), truth)
    print(f"  products:     {', '.join(str(p) for p in result.products)}")
    print(f"  trailer:      {result.trailer}")
    print(f"  report:       {result.report}")
    print(f"  chosen WCS:   {result.wcsname}")
    print(
        f"  error vs truth: {err.rms_mas:.1f} mas rms, {err.max_mas:.1f} mas max "
        f"(mean offset east {err.mean_dx_mas:+.1f}, north {err.mean_dy_mas:+.1f} mas; "
        f"injected pointing error {args.pointing_error[0]:+.0f}, {args.pointing_error[1]:+.0f} mas)"
    )
    return int(result.exit_code)



def add_demo_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML file of settings")
    p.add_argument("-q", "--quiet", action="store_true", help="console shows warnings and errors only")
    p.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error (a bug)")


