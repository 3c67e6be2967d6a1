"""The input checks (autodriz.validate) and the product check (autodriz.drizzle), as pure functions.

End-to-end cases on the real F140W association are in tests/reliability/test_validation.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from astropy.io import fits

from autodriz.drizzle import Footprint, ProductContents, check_product, requested_shape
from autodriz.errors import InputError, WCSStageError
from autodriz.exitcodes import ExitCode
from autodriz.inputs import resolve_input
from autodriz.validate import (
    Extension,
    ExposureHeaders,
    check_exposures,
    check_footprints,
    check_structure,
    check_times,
    check_wcs,
    raise_for,
    screen,
)

from realdata import prepare_goodss

IR_SCALE = 0.128 / 3600.0


def _sci(ver: int = 1, shape: tuple[int, int] = (1014, 1014), bitpix: int = -32, **keys: object) -> Extension:
    header = fits.Header({
        "CRPIX1": 507.0, "CRPIX2": 507.0, "CRVAL1": 53.1, "CRVAL2": -27.7,
        "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN",
        "CD1_1": -IR_SCALE, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": IR_SCALE, "NGOODPIX": 1000,
    })
    for key, value in keys.items():
        if value is None:
            header.remove(key, ignore_missing=True)
        else:
            header[key] = value
    return Extension("SCI", ver, header, shape, bitpix)


def _ext(name: str, ver: int = 1, shape: tuple[int, int] = (1014, 1014), bitpix: int = -32) -> Extension:
    return Extension(name, ver, fits.Header(), shape, bitpix)


def _exposure(name: str = "x_flt.fits", extensions: tuple[Extension, ...] | None = None, **primary: object) -> ExposureHeaders:
    header = fits.Header({"EXPTIME": 200.0, "EXPSTART": 55107.627, "EXPEND": 55107.629, "DATE-OBS": "2009-10-03"})
    for key, value in primary.items():
        if value is None:
            header.remove(key, ignore_missing=True)
        else:
            header[key] = value
    if extensions is None:
        extensions = (_sci(), _ext("ERR"), _ext("DQ", bitpix=16))
    return ExposureHeaders(Path(name), header, extensions)


def _messages(violations) -> list[str]:
    return [v.message() for v in violations]


# --------------------------------------------------------------------------------------------
# one exposure


def test_a_good_exposure_passes_every_check():
    assert check_exposures([_exposure()], "WFC3", "WFC3/IR") == []


def test_structure_names_extension_and_shapes():
    e = _exposure(extensions=(_sci(), _ext("ERR"), _ext("DQ", shape=(500, 700), bitpix=16)))
    (v,) = check_structure(e, "WFC3")
    assert v.message() == "x_flt.fits[DQ,1] NAXIS1 x NAXIS2 = '700x500': differs from SCI,1's 1014x1014"
    e = _exposure(extensions=(_sci(), _ext("ERR"), _ext("DQ", bitpix=-32)))
    assert "[DQ,1] BITPIX = -32" in check_structure(e, "WFC3")[0].message()
    e = _exposure(extensions=(_sci(bitpix=8), _ext("ERR"), _ext("DQ", bitpix=16)))
    assert "[SCI,1] BITPIX = 8" in check_structure(e, "WFC3")[0].message()
    # Two chips, the second without its DQ.
    e = _exposure(extensions=(_sci(1), _ext("ERR", 1), _ext("DQ", 1, bitpix=16), _sci(2), _ext("ERR", 2)))
    assert _messages(check_structure(e, "ACS")) == [
        "x_flt.fits[DQ,2]: extension missing (EXTNAME = 'DQ'): ACS calibrated files have DQ beside every SCI "
        "(extensions found: SCI,1, ERR,1, DQ,1, SCI,2, ERR,2)"
    ]
    # WFPC2's C0M has no ERR/DQ beside its SCI.
    assert check_structure(_exposure(extensions=(_sci(),)), "WFPC2") == []


@pytest.mark.parametrize(
    ("keys", "says"),
    [
        ({"CD2_2": None}, "x_flt.fits[SCI,1] CD2_2 missing"),
        ({"CRVAL1": True}, "CRVAL1 = True: not a finite number"),
        ({"CRVAL1": "abc"}, "CRVAL1 = 'abc': not a finite number"),
        ({"CTYPE1": "DEC--TAN", "CTYPE2": "RA---TAN"}, "CTYPE1 = 'DEC--TAN': expected a celestial axis RA--"),
        ({"CTYPE2": "DEC--SIN"}, "CTYPE2 = 'DEC--SIN': projection differs from CTYPE1 = 'RA---TAN'"),
        ({"CD1_1": 1e-5, "CD1_2": 2e-5, "CD2_1": 1e-5, "CD2_2": 2e-5}, "the CD matrix is singular"),
        ({"CD1_1": -IR_SCALE / 4, "CD2_2": IR_SCALE / 4}, "pixel scale 0.032\"/px; WFC3/IR pixels are 0.128\""),
        ({"CRVAL2": 95.0}, "CRVAL2 = 95.0: a declination must lie within [-90, 90] deg"),
        ({"A_ORDER": 3, "A_3_0": 1e-9}, "CTYPE1 = 'RA---TAN': no -SIP, but SIP distortion coefficients are present "
                                        "(A_ORDER = 3, 2 keywords)"),
        ({"CTYPE1": "RA---TAN-SIP", "CTYPE2": "DEC--TAN-SIP"}, "A_ORDER missing: CTYPE1 = 'RA---TAN-SIP' declares SIP"),
    ],
)
def test_wcs_problems_name_extension_keyword_and_value(keys, says):
    violations = check_wcs(_exposure(extensions=(_sci(**keys), _ext("ERR"), _ext("DQ", bitpix=16))), "WFC3/IR")
    assert violations and all(v.wcs for v in violations)
    assert says in violations[0].message(), _messages(violations)


def test_wcs_accepts_sip_binning_and_wfpc2_chips():
    sip = _sci(CTYPE1="RA---TAN-SIP", CTYPE2="DEC--TAN-SIP", A_ORDER=2, B_ORDER=2, A_2_0=1e-6)
    assert check_wcs(_exposure(extensions=(sip,)), "WFC3/IR") == []
    binned = _sci(CD1_1=-2 * 0.0396 / 3600, CD2_2=2 * 0.0396 / 3600, BINAXIS1=2, BINAXIS2=2)
    assert check_wcs(_exposure(extensions=(binned,)), "WFC3/UVIS") == []
    pc = _sci(1, CD1_1=-0.0455 / 3600, CD2_2=0.0455 / 3600)
    wf = _sci(2, CD1_1=-0.0996 / 3600, CD2_2=0.0996 / 3600)
    assert check_wcs(_exposure(extensions=(pc, wf)), "WFPC2") == []


@pytest.mark.parametrize(
    ("primary", "says"),
    [
        ({"EXPTIME": 1e30}, "x_flt.fits[PRIMARY] EXPTIME = 1e+30: not an HST exposure time"),
        ({"EXPTIME": None}, "[PRIMARY] EXPTIME missing"),
        ({"EXPTIME": "long"}, "EXPTIME = 'long': not a finite number"),
        ({"EXPSTART": 40000.0}, "EXPSTART = 40000.0: not an MJD within HST's lifetime"),
        ({"EXPSTART": None}, "EXPSTART missing"),
        ({"EXPEND": 55107.0}, "EXPEND = 55107.0: before EXPSTART"),
        ({"DATE-OBS": None}, "DATE-OBS missing"),
        ({"DATE-OBS": "yesterday"}, "DATE-OBS = 'yesterday': not a date"),
        ({"DATE-OBS": "2012-10-03"}, "DATE-OBS = '2012-10-03': does not agree with EXPSTART"),
    ],
)
def test_time_problems(primary, says):
    violations = check_times(_exposure(**primary))
    assert violations and not violations[0].wcs
    assert says in violations[0].message()


def test_screen_drops_what_runastrodriz_drops():
    assert screen(_exposure(), "WFC3") is None
    assert screen(_exposure(EXPTIME=0.0), "WFC3") == "EXPTIME = 0.0 (nothing to scale to a rate)"
    assert screen(_exposure(EXPTIME=-1.0), "WFC3").startswith("EXPTIME = -1.0")
    none_good = (_sci(1, NGOODPIX=0), _sci(2, NGOODPIX=0))
    assert screen(_exposure(extensions=none_good), "ACS") == "no good pixels (SCI,1 NGOODPIX = 0, SCI,2 NGOODPIX = 0)"
    # One good chip is enough; a missing count is not a zero count.
    assert screen(_exposure(extensions=(_sci(1, NGOODPIX=0), _sci(2))), "ACS") is None
    assert screen(_exposure(extensions=(_sci(NGOODPIX=None),)), "WFC3") is None
    assert screen(_exposure(extensions=(_sci(NGOODPIX=None, GPIXELS=0),)), "WFPC2").startswith("no good pixels")


# --------------------------------------------------------------------------------------------
# across members


def _at(name: str, ra: float, dec: float) -> ExposureHeaders:
    return _exposure(name, extensions=(_sci(CRVAL1=ra, CRVAL2=dec), _ext("ERR"), _ext("DQ", bitpix=16)))


def test_the_stray_member_is_named_not_the_others():
    members = [_at("a_flt.fits", 53.10, -27.70), _at("b_flt.fits", 53.11, -27.71),
               _at("c_flt.fits", 54.10, -27.70), _at("d_flt.fits", 53.09, -27.69)]
    (v,) = check_footprints(members)
    assert v.path.name == "c_flt.fits" and v.wcs
    assert "CRVAL1, CRVAL2 = (54.1, -27.7): its footprint is centred 0.88" in v.message()
    # Across RA = 0 and a 3-arcmin mosaic step: one visit.
    assert check_footprints([_at("a_flt.fits", 359.99, 10.0), _at("b_flt.fits", 0.03, 10.02)]) == []


def test_raise_for_maps_wcs_problems_to_exit_6_and_others_to_3():
    raise_for([])
    with pytest.raises(WCSStageError) as err:
        raise_for(check_wcs(_exposure(extensions=(_sci(CD2_2=None, CD1_1=None),)), "WFC3/IR"))
    assert err.value.exit_code == ExitCode.WCS_FAILED
    assert "CD1_1 missing" in str(err.value) and "(and 1 more problem(s), listed in the trailer)" in str(err.value)
    with pytest.raises(InputError) as err:
        raise_for(check_times(_exposure(EXPTIME=1e30)))
    assert err.value.exit_code == ExitCode.INPUT_ERROR


# --------------------------------------------------------------------------------------------
# resolve_input on the real association


def test_no_good_pixels_member_is_dropped_at_resolve(shared_data, tmp_path, caplog):
    asn = prepare_goodss(shared_data, tmp_path / "f140w", "IB6O23020")
    with fits.open(asn.parent / "ib6o23rzq_flt.fits", mode="update") as hdul:
        hdul["SCI"].header["NGOODPIX"] = 0
    ds = resolve_input(asn)
    assert [e.rootname for e in ds.exposures] == ["ib6o23rtq", "ib6o23rwq", "ib6o23s2q"]
    assert ds.dropped == (("ib6o23rzq", "no good pixels (SCI,1 NGOODPIX = 0)"),)
    assert asn.parent / "ib6o23rzq_flt.fits" in ds.ignored_paths
    assert "member ib6o23rzq dropped" in caplog.text


def test_every_member_dropped_is_an_input_error(shared_data, tmp_path):
    asn = prepare_goodss(shared_data, tmp_path / "f140w", "IB6O23020")
    for flt in asn.parent.glob("*_flt.fits"):
        with fits.open(flt, mode="update") as hdul:
            hdul[0].header["EXPTIME"] = 0.0
    with pytest.raises(InputError, match="no usable exposures: every member is dropped") as err:
        resolve_input(asn)
    assert "ib6o23s2q: EXPTIME = 0.0" in str(err.value)


def test_drizcorr_omit_is_not_checked(shared_data, tmp_path):
    asn = prepare_goodss(shared_data, tmp_path / "f140w", "IB6O23020")
    for flt in asn.parent.glob("*_flt.fits"):
        with fits.open(flt, mode="update") as hdul:
            hdul[0].header["DRIZCORR"] = "OMIT"
            hdul["SCI"].header.remove("CD2_2")
    assert not resolve_input(asn).drizzle_requested


# --------------------------------------------------------------------------------------------
# the product check


FOUR = [(f"{r}_flt.fits", (1,)) for r in ("ib6o23rtq", "ib6o23rwq", "ib6o23rzq", "ib6o23s2q")]


def _product(names: list[str], ndrizim: int | None = None, shape=(1100, 1100)) -> ProductContents:
    return ProductContents(len(names) if ndrizim is None else ndrizim, tuple(names), shape)


def test_a_complete_product_passes():
    listed = [f"{name}[sci,1]" for name, _ in FOUR]
    assert check_product(_product(listed), FOUR, Footprint(3.0, 1095.0, 2.0, 1096.0)) == []


def test_a_product_missing_an_exposure_or_a_chip_is_caught():
    listed = [f"{name}[sci,1]" for name, _ in FOUR[:3]]
    (problem,) = check_product(_product(listed, ndrizim=3), [*FOUR[:3], ("ib6o23s2q_flt.fits", ())], None)
    assert problem.startswith("exposure(s) ib6o23s2q_flt.fits meant to be drizzled are not in it")
    problems = check_product(_product(listed), FOUR, None)
    assert any("ib6o23s2q_flt.fits meant to be drizzled are not in it" in p for p in problems)
    assert "NDRIZIM = 3, but 4 chip(s) were meant to be drizzled" in problems
    acs = [("j_flt.fits", (1, 2))]
    assert check_product(_product(["j_flt.fits[sci,1]"]), acs, None) == [
        "chip(s) meant to be drizzled are not in it: j_flt.fits[sci,2]",
        "NDRIZIM = 1, but 2 chip(s) were meant to be drizzled",
    ]
    assert "not meant to be drizzled: other_flt.fits[sci,1]" in " ".join(
        check_product(_product(["j_flt.fits[sci,1]", "j_flt.fits[sci,2]", "other_flt.fits[sci,1]"], 2), acs, None))


def test_the_frame_must_fit_the_footprint():
    listed = [f"{name}[sci,1]" for name, _ in FOUR]
    footprint = Footprint(3.0, 1095.0, 2.0, 1096.0)
    # Issue 23: a degenerate WCS made a 4633 x 5275 frame out of a ~1100 px footprint.
    problems = check_product(_product(listed, shape=(5275, 4633)), FOUR, footprint)
    assert problems == [
        "NAXIS1 = 4633, but the inputs' footprint spans 1093 pixels: the frame is not the one the inputs define",
        "NAXIS2 = 5275, but the inputs' footprint spans 1095 pixels: the frame is not the one the inputs define",
    ]
    cut = check_product(_product(listed, shape=(600, 1100)), FOUR, footprint)
    assert cut and "does not fit in the 600-pixel frame" in cut[0]
    # A shared visit grid is larger than this filter's footprint: the size asked for counts.
    big = requested_shape({"final_outnx": 3000, "final_outny": 2500})
    assert big == (2500, 3000)
    assert check_product(_product(listed, shape=(2500, 3000)), FOUR, Footprint(900, 1990, 700, 1790), big) == []
    assert check_product(_product(listed, shape=(2500, 2999)), FOUR, None, big) == [
        "NAXIS1 = 2999, but final_outnx = 3000 was asked for"
    ]
    assert requested_shape({"final_outnx": None, "final_outny": "INDEF"}) == (None, None)
