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
