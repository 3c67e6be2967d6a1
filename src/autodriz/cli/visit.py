"""``autodriz visit PATHS``: a multi-filter visit aligned and drizzled onto one grid (:mod:`autodriz.visit`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from autodriz.cli import common
from autodriz.cli.common import add_processing_flags, check_catalog, load_from_args, preflight
from autodriz.errors import ConfigError, InputError
from autodriz.exitcodes import PRODUCT_CODES


def _visit_parser() -> argparse.ArgumentParser:
    from autodriz.visit import CONSISTENCY_TOLERANCE_PIX, NATIVE_SCALE_ARCSEC

    scales = ", ".join(f"{k} {v}" for k, v in NATIVE_SCALE_ARCSEC.items())
    p = argparse.ArgumentParser(
        prog="autodriz visit",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Process a multi-filter visit: group the calibrated exposures by instrument/detector/filter\n"
            "(ACS: FILTER1/FILTER2, whichever is not CLEAR), run the single-dataset pipeline on each group\n"
            "(same candidates, same selection, one reference catalog for all), and drizzle every filter\n"
            "onto one north-up grid that covers them all, so that colours can be measured pixel by pixel.\n\n"
            "PATHS are ASN tables, FLT/FLC files and folders (a folder gives its ASN tables and the\n"
            "exposures none of them names). A group that is exactly one ASN table runs from it; other groups\n"
            "get an ASN table <visit>_<filter>_asn.fits written beside their exposures (marked ASNBUILT).\n"
            "Grism/prism groups are drizzled on the same grid without alignment of their own.\n\n"
            "Afterwards sources are matched between each filter's product and the first filter's; their\n"
            f"median offset must be <= {CONSISTENCY_TOLERANCE_PIX} px. Products: one <group>_drz/_drc.fits per\n"
            "filter (with its own trailer and report), <visit>_visit_report.json/.html and <visit>_visit.tra."
        ),
        epilog=(
            f"native scales (arcsec/px, the default --final-scale): {scales}\n\n"
            "exit code: the worst of the groups' (a failure beats 9 DEFAULT_ONLY, which beats 0 OK);\n"
            "the codes are those of `autodriz INPUT` (see autodriz --help)."
        ),
    )
    p.add_argument("paths", nargs="+", type=Path, help="ASN tables, FLT/FLC files or folders of one visit")
    g = p.add_argument_group("the common grid")
    g.add_argument("--visit-root", help="root of the visit report and of built ASN tables (default: ipppss of the first exposure)")
    g.add_argument("--final-scale", type=float, metavar="ARCSEC",
                   help="output pixel scale (default: the first group's native scale)")
    g.add_argument("--pixfrac", type=float, help="final_pixfrac of every product (default: the MDRIZTAB's)")
    g.add_argument("--wht-type", choices=("EXP", "IVM", "ERR"), type=str.upper,
                   help="final_wht_type of every product (default: the MDRIZTAB's, EXP)")
    add_processing_flags(p)
    return p


def run_visit(argv: Sequence[str]) -> int:
    args = _visit_parser().parse_args(argv)
    if args.final_scale is not None and not args.final_scale > 0:
        raise ConfigError(f"--final-scale must be > 0, got {args.final_scale}")
    if args.pixfrac is not None and not 0 < args.pixfrac <= 1:
        raise ConfigError(f"--pixfrac must be in (0, 1], got {args.pixfrac}")
    from autodriz.visit import process_visit

    settings = load_from_args(args)
    for path in args.paths:
        preflight(path, settings.output_dir)
        if path.is_dir() and (exc := common.probe_writable(path)) is not None:
            # Built ASN tables, locks and the chosen WCS are written there.
            raise InputError(f"visit folder {path} is not writable ({exc.strerror or exc}); copy the visit to a "
                             "writable folder")
    check_catalog(settings)
    result = process_visit(
        args.paths, settings, visit_root=args.visit_root, final_scale=args.final_scale, pixfrac=args.pixfrac,
        final_wht_type=args.wht_type, argv=["autodriz", "visit", *argv],
    )
    stream = sys.stdout if result.exit_code in PRODUCT_CODES else sys.stderr
    print(f"autodriz visit: {result.exit_code.name} (exit {int(result.exit_code)}): {result.message}", file=stream)
    for o in result.outcomes:
        print(f"  {o.group.instrument_key} {o.group.filter}: {o.exit_code.name} {o.wcsname or '-'} "
              f"{', '.join(str(p) for p in o.products) or '(no products)'}", file=stream)
    for c in result.consistency:
        print(f"  cross-filter {c.product} vs {c.reference}: {c.status}: {c.reason}", file=stream)
    if result.report:
        print(f"autodriz visit: report {result.report}", file=stream)
    return int(result.exit_code)


