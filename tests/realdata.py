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


# --------------------------------------------------------------------------------------------
# GOODS-S F140W against grizli's reference WCS (issue 25)

#: grizli's reference WCS is compared at this pixel only (the raw header WCS is referenced to
#: (557, 557); see the shared data README).
REFERENCE_PIXEL = (507.0, 507.0)
REFERENCE_WCSNAME = "GRIZLI_FINE"  # no "-FIT_": drizzlepac reads a catalog name after that


def reference_rows(shared_data: Path) -> dict[str, "Table"]:
    """Rows of ``reference_wcs_ib6o23.ecsv`` by rootname."""
    from astropy.table import Table

    table = Table.read(shared_data / "real" / "wfc3ir_goodss" / "reference_wcs_ib6o23.ecsv")
    return {str(row["rootname"]): row for row in table}


def place_at_reference_wcs(flt: Path, row) -> None:
    """Give an updatewcs-processed FLT (TAN-SIP, CRPIX 507,507) grizli's CRVAL and CD; keep its SIP.

    grizli's final WCS is TAN-SIP with the IDCTAB distortion and the issue measured its CD
    against the w3m18525i linear part, so its CRVAL/CD plus the SIP of the (rebuilt) IDCTAB is
    the reference solution of that exposure.
    """
    with fits.open(flt, mode="update") as hdul:
        sci = hdul["SCI", 1].header
        if (sci["CRPIX1"], sci["CRPIX2"]) != REFERENCE_PIXEL or "A_ORDER" not in sci:
            raise ValueError(f"{flt.name}: run updatewcs with the rebuilt IDCTAB first (CRPIX 507,507 and SIP)")
        sci["CRVAL1"], sci["CRVAL2"] = float(row["crval1"]), float(row["crval2"])
        for key in ("CD1_1", "CD1_2", "CD2_1", "CD2_2"):
            sci[key] = float(row[key.lower()])
        sci["WCSNAME"] = REFERENCE_WCSNAME


def offset_from_reference_mas(flt: Path, row) -> tuple[float, float, float]:
    """(east, north, total) mas of SCI,1's sky position at (507,507) from grizli's CRVAL there."""
    from astropy.coordinates import SkyCoord
    from astropy.wcs import WCS

    with fits.open(flt) as hdul:
        wcs = WCS(hdul["SCI", 1].header, hdul)
    here = SkyCoord(*wcs.all_pix2world([REFERENCE_PIXEL], 1)[0], unit="deg")
    ref = SkyCoord(float(row["crval1"]), float(row["crval2"]), unit="deg")
    east, north = ref.spherical_offsets_to(here)
    return float(east.to_value("mas")), float(north.to_value("mas")), float(here.separation(ref).to_value("mas"))


def reference_pair_catalog(shared_data: Path, workdir: Path, iref: Path, rootnames: tuple[str, ...]) -> Path:
    """A reference catalog of the F140W field from some exposures placed at grizli's WCS.

    The exposures get the distortion of the rebuilt IDCTAB in ``iref`` (the unchanged
    pipeline-default stage), then grizli's CRVAL/CD (:func:`place_at_reference_wcs`); they are
    drizzled with that WCS as it is (``--allow-header-wcs`` with an empty ``iref``) and
    ``autodriz catalog`` writes the product's sources. Returns the ECSV path.
    """
    import shutil

    from autodriz.cli import main
    from autodriz.solutions.default import make_default_candidate

    rows = reference_rows(shared_data)
    prepared = workdir / "prepared"
    prepare_goodss(shared_data, prepared, "IB6O23020")
    pair = workdir / "reference_pair"
    pair.mkdir(parents=True)
    candidate = make_default_candidate(
        [prepared / f"{r}_flt.fits" for r in rootnames], workdir / "pair_default", {"iref": iref}, allow_header_wcs=False
    )
    for copy in candidate.copies.values():
        dest = pair / Path(copy).name
        shutil.copyfile(copy, dest)
        place_at_reference_wcs(dest, rows[dest.name[:9]])
    asn = write_asn_table(pair / "ib6o23920_asn.fits", "IB6O23920", list(rootnames), instrument="WFC3",
                          detector="IR", built_by=BUILT_BY + " (exposures at grizli's reference WCS)")
    empty = workdir / "empty_iref"
    empty.mkdir()
    code = main([str(asn), "--iref", str(empty), "--allow-header-wcs", "--no-apriori", "--no-aposteriori", "-q"])
    assert code == 0, f"drizzling the reference pair failed with exit {code}"
    out = workdir / "ib6o23920_refcat.ecsv"
    assert main(["catalog", str(pair / "ib6o23920_drz.fits"), "-o", str(out), "-q"]) == 0
    return out
