"""An ACS/WFC MDRIZTAB for simulated visits."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
import numpy as np
from astropy.io import fits
from autodriz.simulate.detectors import (
    _INDEF_INT,
)


# --------------------------------------------------------------------------------------------
# MDRIZTAB
# --------------------------------------------------------------------------------------------


def write_mdriztab(path: str | Path) -> Path:
    """Write an ACS/WFC MDRIZTAB (AstroDrizzle pipeline parameters) in the archive's format.

    One ``ANY`` filter block, rows by number of images (1, 2, 4+): a single image gets no
    median/CR step; two or more use the usual minmed/median CR rejection; values follow the
    ACS/WFC pipeline defaults (final scale 0.05", pixfrac 1, square kernel, EXP weighting).

    Parameters
    ----------
    path : str or Path
        Output file.

    Returns
    -------
    Path
    """
    path = Path(path)
    # INDEF, as drizzlepac's mdzhandler reads it: NaN in float columns, -2147483647 in ints.
    nan = float("nan")
    nimg = [1, 2, 4]
    n = len(nimg)

    def col(name: str, fmt: str, values: Sequence[Any]) -> fits.Column:
        return fits.Column(name=name, format=fmt, array=np.array(values))

    def same(value: Any) -> list[Any]:
        return [value] * n

    cols = [
        col("filter", "24A", same("ANY")),
        col("numimages", "J", nimg),
        col("build", "L", same(True)),
        col("shiftfile", "24A", same("")),
        col("staticfile", "24A", same("")),
        col("static", "L", same(True)),
        col("static_sig", "E", same(4.0)),
        col("skysub", "L", same(True)),
        col("skywidth", "E", same(0.1)),
        col("skystat", "24A", same("mode")),
        col("skylower", "E", same(nan)),
        col("skyupper", "E", same(nan)),
        col("skyclip", "J", same(5)),
        col("skylsigma", "E", same(4.0)),
        col("skyusigma", "E", same(4.0)),
        col("skymethod", "24A", same("localmin")),
        col("skyuser", "24A", same("")),
        col("driz_separate", "L", [False, True, True]),
        col("driz_sep_outnx", "J", same(_INDEF_INT)),
        col("driz_sep_outny", "J", same(_INDEF_INT)),
        col("driz_sep_kernel", "24A", same("turbo")),
        col("driz_sep_wt_scl", "24A", same("exptime")),
        col("driz_sep_scale", "E", same(nan)),
        col("driz_sep_pixfrac", "E", same(1.0)),
        col("driz_sep_rot", "E", same(nan)),
        col("driz_sep_fillval", "E", same(nan)),
        col("driz_sep_bits", "24A", same("16")),
        col("median", "L", [False, True, True]),
        col("median_newmasks", "L", same(True)),
        col("combine_type", "24A", ["minmed", "minmed", "median"]),
        col("combine_nsigma", "24A", same("4 3")),
        col("combine_nlow", "J", same(0)),
        col("combine_nhigh", "J", [0, 0, 1]),
        col("combine_lthresh", "E", same(nan)),
        col("combine_hthresh", "E", same(nan)),
        col("combine_grow", "J", same(1)),
        col("blot", "L", [False, True, True]),
        col("blot_interp", "24A", same("poly5")),
        col("blot_sinscl", "E", same(1.0)),
        col("driz_cr", "L", [False, True, True]),
        col("driz_cr_corr", "L", same(False)),
        col("driz_cr_snr", "24A", same("3.5 3.0")),
        col("driz_cr_grow", "J", same(1)),
        col("driz_cr_ctegrow", "J", same(0)),
        col("driz_cr_scale", "24A", same("1.2 0.7")),
        col("driz_combine", "L", same(True)),
        col("final_wht_type", "24A", same("EXP")),
        col("final_outnx", "J", same(_INDEF_INT)),
        col("final_outny", "J", same(_INDEF_INT)),
        col("final_kernel", "24A", same("square")),
        col("final_wt_scl", "24A", same("exptime")),
        col("final_scale", "E", same(0.05)),
        col("final_pixfrac", "E", same(1.0)),
        col("final_rot", "E", same(0.0)),
        col("final_fillval", "E", same(nan)),
        col("final_bits", "24A", same("336")),
        col("final_units", "24A", same("cps")),
        col("resetbits", "J", same(4096)),
    ]
    primary = fits.PrimaryHDU()
    ph = primary.header
    ph["FILENAME"] = path.name
    ph["FILETYPE"] = "MULTIDRIZZLE PARAMETERS"
    ph["TELESCOP"] = "HST"
    ph["INSTRUME"] = "ACS"
    ph["DETECTOR"] = "WFC"
    ph["USEAFTER"] = "Mar 01 2002 00:00:00"
    ph["PEDIGREE"] = "DUMMY"
    ph["DESCRIP"] = "AstroDrizzle parameters for simulated ACS/WFC visits (autodriz)"
    fits.HDUList([primary, fits.BinTableHDU.from_columns(cols)]).writeto(path, overwrite=True)
    return path
