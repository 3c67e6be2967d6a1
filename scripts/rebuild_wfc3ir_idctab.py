#!/usr/bin/env python
"""Write the RECONSTRUCTED WFC3/IR IDCTAB ``w3m18525i_idc.fits`` into a folder to use as ``iref``.

A reconstruction from public headers, not the CRDS file: see ``tests/irdistortion.py`` for how it
is built and what is approximated (rows for F110W and F140W only; G141 uses the F140W row and G102
the F110W row; velocity aberration is applied by updatewcs per exposure, not by the table).
``--uvis`` writes the WFC3/UVIS ``2731450pi_idc.fits`` instead (F555W rows of both chips, from the
real ib4606c5q; no NPOLFILE/D2IMFILE), the table ``src/autodriz/data/iref`` ships for the simulator.

Usage::

    python scripts/rebuild_wfc3ir_idctab.py IREF_DIR [--shared-data ../shared/data] [--uvis]
    autodriz ib6o23020_asn.fits --iref IREF_DIR ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from irdistortion import rebuild_wfc3ir_idctab, rebuild_wfc3uvis_idctab  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("iref", type=Path, help="folder to write w3m18525i_idc.fits into (created)")
    p.add_argument("--shared-data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data",
                   help="the shared real-data folder (default: ../shared/data beside the project)")
    p.add_argument("--uvis", action="store_true", help="write the WFC3/UVIS table 2731450pi_idc.fits instead")
    args = p.parse_args(argv)
    rebuild = rebuild_wfc3uvis_idctab if args.uvis else rebuild_wfc3ir_idctab
    path = rebuild(args.shared_data, args.iref)
    print(f"wrote {path} (a RECONSTRUCTION of {path.name.split('_')[0]}; point --iref at {path.parent})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
