#!/usr/bin/env python
"""Write the RECONSTRUCTED WFC3/IR IDCTAB ``w3m18525i_idc.fits`` into a folder to use as ``iref``.

A reconstruction from public headers, not the CRDS file: see ``tests/irdistortion.py`` for how it
is built and what is approximated (rows for F110W and F140W only; G141 uses the F140W row and G102
the F110W row; velocity aberration is applied by updatewcs per exposure, not by the table).

Usage::

    python scripts/rebuild_wfc3ir_idctab.py IREF_DIR [--shared-data ../shared/data]
    autodriz ib6o23020_asn.fits --iref IREF_DIR ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from irdistortion import rebuild_wfc3ir_idctab  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("iref", type=Path, help="folder to write w3m18525i_idc.fits into (created)")
    p.add_argument("--shared-data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data",
                   help="the shared real-data folder (default: ../shared/data beside the project)")
    args = p.parse_args(argv)
    path = rebuild_wfc3ir_idctab(args.shared_data, args.iref)
    print(f"wrote {path} (a RECONSTRUCTION of w3m18525i; point --iref at {path.parent})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
