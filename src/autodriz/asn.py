"""Write HST association (ASN) tables.

The archive's ASN tables are a primary header plus a binary table with the columns ``MEMNAME``
(upper-case rootname), ``MEMTYPE`` (``EXP-DTH``, ``EXP-CRJ`` … for exposures, ``PROD-DTH`` …
for products) and ``MEMPRSNT`` (whether the member was present when the table was made). The
simulator writes them, and tests build them for real exposures that ship without one; a table
that was not made by the archive says so with ``ASNBUILT`` in its primary header.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table


def write_asn_table(
    path: str | Path,
    asn_id: str,
    members: Sequence[str],
    *,
    instrument: str = "",
    detector: str = "",
    exp_type: str = "EXP-DTH",
    product_type: str = "PROD-DTH",
    present: Iterable[bool] | None = None,
    built_by: str | None = None,
) -> Path:
    """Write an association table.

    Parameters
    ----------
    path : str or Path
        Where to write; conventionally ``<asn_id lower>_asn.fits``.
    asn_id : str
        Association identifier, e.g. ``IB6O23020``; also the product row's MEMNAME.
    members : sequence of str
        Exposure rootnames (case-insensitive, written upper-case).
    instrument, detector : str, optional
        Copied to the primary header (``INSTRUME``, ``DETECTOR``) as the archive does.
    exp_type, product_type : str, optional
        MEMTYPE of the exposure rows and of the product row.
    present : iterable of bool, optional
        MEMPRSNT per exposure; all present by default. The product row is always present.
    built_by : str, optional
        When given, the table is marked as not from the archive: ``ASNBUILT`` holds this text.

    Returns
    -------
    Path
        The path written.
    """
    path = Path(path)
    members = [m.upper() for m in members]
    present_flags = [True] * len(members) if present is None else [bool(p) for p in present]
    if len(present_flags) != len(members):
        raise ValueError("present must have one flag per member")

    table = Table(
        {
            "MEMNAME": np.array(members + [asn_id.upper()], dtype="S14"),
            "MEMTYPE": np.array([exp_type] * len(members) + [product_type], dtype="S14"),
            "MEMPRSNT": np.array(present_flags + [True], dtype=bool),
        }
    )
    primary = fits.PrimaryHDU()
    hdr = primary.header
    hdr["FILENAME"] = path.name
    hdr["FILETYPE"] = "ASN_TABLE"
    hdr["TELESCOP"] = "HST"
    hdr["INSTRUME"] = instrument
    hdr["DETECTOR"] = detector
    hdr["ROOTNAME"] = asn_id.lower()
    hdr["ASN_ID"] = asn_id.upper()
    hdr["ASN_TAB"] = path.name
    if built_by:
        hdr["ASNBUILT"] = (built_by, "not from the archive")
    table_hdu = fits.BinTableHDU(table, name="ASN")
    fits.HDUList([primary, table_hdu]).writeto(path, overwrite=True)
    return path
