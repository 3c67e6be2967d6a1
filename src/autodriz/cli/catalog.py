"""``autodriz catalog PRODUCT``: an aligned DRZ/DRC's sources as a reference catalog for ``--catalog``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from autodriz.errors import ConfigError


def _catalog_parser() -> argparse.ArgumentParser:
    from autodriz.productcatalog import DEFAULT_MIN_SNR

    p = argparse.ArgumentParser(
        prog="autodriz catalog",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Write the sources of a drizzled product (DRZ/DRC) as a reference catalog that --catalog reads:\n"
            "sky positions in the product's WCS, position errors (mas), fluxes, ST magnitudes and the\n"
            "epoch of the observations. Align other filters or visits to a deep aligned image with it:\n\n"
            "  autodriz f160w_asn.fits --catalog f160w_refcat.ecsv     # first align the deep image\n"
            "  autodriz catalog f160w_drz.fits -o f160w_refcat.ecsv\n"
            "  autodriz f105w_asn.fits --catalog f160w_refcat.ecsv"
        ),
        epilog="exit codes: 0 catalog written; 2 bad flag; 3 product missing, not a DRZ/DRC, or no source found",
    )
    p.add_argument("product", type=Path, help="a drizzled product (<root>_drz.fits / _drc.fits)")
    p.add_argument("-o", "--output", type=Path,
                   help="ECSV file to write (default: <product>_refcat.ecsv beside the product)")
    p.add_argument("--min-snr", type=float, default=DEFAULT_MIN_SNR,
                   help=f"leave out sources with a lower S/N (default {DEFAULT_MIN_SNR:g})")
    p.add_argument("--max-sources", type=int, help="keep at most this many sources, brightest first")
    p.add_argument("-q", "--quiet", action="store_true", help="print warnings and errors only")
    p.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error (a bug)")
    return p


def run_catalog(argv: Sequence[str]) -> int:
    args = _catalog_parser().parse_args(argv)
    if args.min_snr < 0:
        raise ConfigError(f"--min-snr must be >= 0, got {args.min_snr}")
    if args.max_sources is not None and args.max_sources < 1:
        raise ConfigError(f"--max-sources must be >= 1, got {args.max_sources}")
    from autodriz.productcatalog import catalog_from_product, default_output, write_catalog

    # This command has no trailer: its decisions (e.g. an unaligned product) go to the console.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("autodriz catalog: %(levelname)s: %(message)s"))
    handler.setLevel(logging.WARNING if args.quiet else logging.INFO)
    package_logger = logging.getLogger("autodriz")
    old_level = package_logger.level
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    try:
        catalog = catalog_from_product(args.product, min_snr=args.min_snr, max_sources=args.max_sources)
        output = write_catalog(catalog, args.output or default_output(args.product))
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(old_level)
    err = catalog.table["ra_error"]
    print(
        f"autodriz catalog: {len(catalog.table)} sources of {catalog.product.name} written to {output}\n"
        f"  WCS {catalog.wcsname}{'' if catalog.aligned else ' (NOT an aligned solution)'}, epoch {catalog.epoch:.4f}, "
        f"position error {float(min(err)):.1f}-{float(max(err)):.1f} mas per axis (median {float(sorted(err)[len(err) // 2]):.1f})\n"
        f"  use it with: autodriz OTHER_INPUT --catalog {output}"
    )
    return 0


