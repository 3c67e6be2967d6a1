"""Helpers that prepare the shared real exposures for tests (copies in tmp_path only)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from astropy.io import fits

from autodriz.asn import write_asn_table

BUILT_BY = "autodriz tests, from ASN_ID/ASN_MTYP"


def prepare_goodss(shared_data: Path, dest: Path, asn_id: str) -> Path:
    """Copy the real WFC3/IR GOODS-S FLTs of ``asn_id`` into ``dest`` and build their ASN table.

    The shipped pixels were quantised to uint8 by the package they come from; drizzle needs
    float SCI/ERR and int16 DQ, so the copies are cast (the headers are untouched).
    """
    dest.mkdir(parents=True, exist_ok=True)
    members = []
    for src in sorted((shared_data / "real" / "wfc3ir_goodss").glob("*_flt.fits.gz")):
        with gzip.open(src) as fh, fits.open(fh) as hdul:
            if hdul[0].header["ASN_ID"].strip().upper() != asn_id.upper():
                continue
            for hdu in hdul:
                if hdu.name in ("SCI", "ERR") and hdu.data is not None:
                    hdu.data = hdu.data.astype(np.float32)
                elif hdu.name == "DQ" and hdu.data is not None:
                    hdu.data = hdu.data.astype(np.int16)
            out = dest / src.name[:-3]
            hdul.writeto(out)
            members.append(out.name.split("_")[0])
    assert members, f"no exposures of {asn_id} in the shared data"
    return write_asn_table(
        dest / f"{asn_id.lower()}_asn.fits", asn_id, members,
        instrument="WFC3", detector="IR", built_by=BUILT_BY,
    )
