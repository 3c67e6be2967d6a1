"""Tests of autodriz.truth: WCS error against a known truth, in mas."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from autodriz import truth as T

DEC = 37.8


def _truth_header(extver: int) -> dict:
    """A TAN-SIP chip WCS like the ones updatewcs writes for ACS/WFC (0.05"/px, rolled)."""
    t = math.radians(30.0 + extver)
    s = 0.05 / 3600.0
    return {
        "CTYPE1": "RA---TAN-SIP",
        "CTYPE2": "DEC--TAN-SIP",
        "CRVAL1": 290.22 + 0.001 * extver,
        "CRVAL2": DEC,
        "CRPIX1": 256.0,
        "CRPIX2": 128.0,
        "CD1_1": -s * math.cos(t),
        "CD1_2": s * math.sin(t),
        "CD2_1": s * math.sin(t),
        "CD2_2": s * math.cos(t),
        "A_ORDER": 2,
        "B_ORDER": 2,
        "A_2_0": 8.5e-6,
        "A_1_1": -5.2e-6,
        "A_0_2": 2.2e-6,
        "B_2_0": -1.7e-6,
        "B_1_1": 6.2e-6,
        "B_0_2": -7.2e-6,
        "NAXIS1": 512,
        "NAXIS2": 256,
    }


@pytest.fixture
def truth_dict() -> dict:
    return {
        "exposures": {
            "jsim01a1q": {"sci": {"1": _truth_header(1), "2": _truth_header(2)}},
            "jsim01a2q": {"sci": {"1": _truth_header(1), "2": _truth_header(2)}},
        }
    }


def _exposure(rootname: str, headers: dict[str, dict], extra: dict | None = None) -> fits.HDUList:
    primary = fits.PrimaryHDU()
    primary.header["ROOTNAME"] = rootname
    hdus: list = [primary]
    for extver, keys in sorted(headers.items()):
        hdr = fits.Header()
        hdr["EXTNAME"] = "SCI"
        hdr["EXTVER"] = int(extver)
        for key, value in keys.items():
            if not key.startswith("NAXIS"):
                hdr[key] = value
        # Lookup-table keywords that truth.py must ignore (no WCSDVARR extension here).
        hdr["NPOLEXT"] = "jref$02c1450rj_npl.fits"
        for key, value in (extra or {}).items():
            hdr[key] = value
        hdus.append(fits.ImageHDU(np.zeros((keys["NAXIS2"], keys["NAXIS1"]), np.float32), header=hdr))
        hdus.append(fits.ImageHDU(np.zeros((1, 1), np.float32), name="ERR"))
    return fits.HDUList(hdus)


def test_truth_itself_has_zero_error(truth_dict, tmp_path):
    path = tmp_path / "jsim01a1q_flt.fits"
    _exposure("jsim01a1q", truth_dict["exposures"]["jsim01a1q"]["sci"]).writeto(path)
    err = T.wcs_error(path, truth_dict)
    assert err.n_points == 2 * 16 * 16
    assert err.rms_mas < 1e-3
    assert err.max_mas < 1e-3


def test_known_crval_shift_gives_known_mas(truth_dict):
    sci = truth_dict["exposures"]["jsim01a1q"]["sci"]
    shifted = {}
    for extver, keys in sci.items():
        keys = dict(keys)
        keys["CRVAL1"] += 30.0 / 3.6e6 / math.cos(math.radians(DEC))  # 30 mas east
        keys["CRVAL2"] += -40.0 / 3.6e6  # 40 mas south
        shifted[extver] = keys
    err = T.wcs_error(_exposure("jsim01a1q", shifted), truth_dict, grid=8)
    assert err.rms_mas == pytest.approx(50.0, abs=0.05)
    assert err.mean_dx_mas == pytest.approx(30.0, abs=0.05)
    assert err.mean_dy_mas == pytest.approx(-40.0, abs=0.05)
    assert err.n_points == 2 * 8 * 8


def test_visit_error_pools_exposures(truth_dict):
    good = _exposure("jsim01a1q", truth_dict["exposures"]["jsim01a1q"]["sci"])
    bad_sci = {}
    for extver, keys in truth_dict["exposures"]["jsim01a2q"]["sci"].items():
        keys = dict(keys)
        keys["CRVAL2"] += 10.0 / 3.6e6
        bad_sci[extver] = keys
    bad = _exposure("jsim01a2q", bad_sci)
    err = T.visit_error([good, bad], truth_dict, grid=4)
    assert err.n_points == 2 * 2 * 16
    # Half the points are off by 10 mas: RMS 10/sqrt(2), mean north offset 5.
    assert err.rms_mas == pytest.approx(10.0 / math.sqrt(2.0), abs=0.01)
    assert err.mean_dy_mas == pytest.approx(5.0, abs=0.01)
    assert err.max_mas == pytest.approx(10.0, abs=0.01)


def test_load_truth_and_truth_wcs_round_trip(truth_dict, tmp_path):
    path = tmp_path / "t_truth.json"
    path.write_text(json.dumps(truth_dict))
    loaded = T.load_truth(path)
    w = T.truth_wcs(loaded, "JSIM01A1Q", 2)
    ref = WCS(fits.Header({k: v for k, v in _truth_header(2).items() if not k.startswith("NAXIS")}))
    x = np.array([0.0, 100.0, 511.0])
    y = np.array([0.0, 200.0, 255.0])
    np.testing.assert_allclose(w.all_pix2world(x, y, 0), ref.all_pix2world(x, y, 0), rtol=0, atol=1e-12)
    assert w.pixel_shape == (512, 256)
    with pytest.raises(KeyError):
        T.truth_wcs(loaded, "jsim01a9q", 1)


def _moved(sci: dict, *, east_mas: float = 0.0, north_mas: float = 0.0, rot_arcsec: float = 0.0,
           scale: float = 1.0, extra: dict | None = None) -> dict:
    """The chips' headers shifted on the sky, rotated and scaled about CRPIX, plus SIP changes."""
    out = {}
    t = math.radians(rot_arcsec / 3600.0)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]]) * scale
    for extver, keys in sci.items():
        keys = dict(keys)
        cd = rot @ np.array([[keys["CD1_1"], keys["CD1_2"]], [keys["CD2_1"], keys["CD2_2"]]])
        keys.update(CD1_1=cd[0, 0], CD1_2=cd[0, 1], CD2_1=cd[1, 0], CD2_2=cd[1, 1])
        keys["CRVAL1"] += east_mas / 3.6e6 / math.cos(math.radians(DEC))
        keys["CRVAL2"] += north_mas / 3.6e6
        for key, delta in (extra or {}).items():
            keys[key] = keys.get(key, 0.0) + delta
        out[extver] = keys
    return out


def test_a_shift_rotation_and_scale_leave_no_floor(truth_dict):
    """What a per-exposure rscale fit removes is not part of the floor: tens of mas of error,
    floor ~0. (Both chips of one exposure move together, as in a fit.)"""
    sci = truth_dict["exposures"]["jsim01a1q"]["sci"]
    # Move the whole exposure rigidly: the chips' CRVALs differ, so a common rotation about one
    # CRPIX each is not rigid; rotate/scale a single-chip exposure instead.
    one = {"1": sci["1"]}
    moved = _exposure("jsim01a1q", _moved(one, east_mas=30.0, north_mas=-20.0, rot_arcsec=2.0, scale=1 + 2e-5))
    err = T.wcs_error(moved, truth_dict)
    floor = T.linear_fit_floor([moved], truth_dict)
    assert err.rms_mas > 30.0
    assert floor.rms_mas < 0.05


def test_a_second_order_residual_leaves_a_floor_below_its_full_size(truth_dict):
    """A 2nd-order SIP change (the simulator's distortion residual) cannot be fitted away, but
    its constant and linear parts over the chip can: 0 < floor < error."""
    sci = truth_dict["exposures"]["jsim01a1q"]["sci"]
    one = {"1": sci["1"]}
    # 2e-7 px/px² → 0.013 px (0.65 mas) at the chip's edge along x (256 px from CRPIX), plus a
    # shift: the error has both parts, the floor only the shape's.
    bent = _exposure("jsim01a1q", _moved(one, east_mas=10.0, extra={"A_2_0": 2e-6, "B_0_2": 2e-6}))
    err = T.wcs_error(bent, truth_dict)
    floor = T.linear_fit_floor([bent], truth_dict)
    assert err.rms_mas > 5.0
    # The u² displacement over x in [-256, 256] about CRPIX: 2e-6·u² ≤ 0.13 px = 6.6 mas; what
    # no similarity removes is its non-linear part, ~1/3 of its range in RMS.
    assert 0.5 < floor.rms_mas < 4.0
    assert floor.rms_mas < err.rms_mas / 3.0
