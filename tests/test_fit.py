"""autodriz.astrometry.fit / chips / residuals on synthetic chips, in the style of tweakwcs's
linearfit tests: a known shift, rotation and scale is injected into a chip's WCS and the fit must
recover it; inputs no fit can be asked of raise ValueError naming the problem."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from astropy.wcs import WCS

from autodriz import catalogs as cm
from autodriz.astrometry.chips import (
    Chip,
    ExposureSources,
    all_sources,
    centroid_weights,
    starting_wcs,
    transfer_correction,
)
from autodriz.astrometry.config import load_aposteriori_config
from autodriz.astrometry.fit import RelativeFit, absolute_fit, align_exposures, relative_fit
from autodriz.astrometry.residuals import clip_residuals, nearest_unique
from autodriz.skygeom import mean_direction, perturb_sky

SCALE_ARCSEC = 0.05
SHAPE = (1024, 1024)
CFG = load_aposteriori_config("ACS/WFC")


def _wcs(crval=(150.0, 2.0), pa_deg: float = 0.0, scale: float = 1.0) -> WCS:
    """A TAN chip WCS, north up rotated by ``pa_deg``, pixel scale × ``scale``."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = list(crval)
    w.wcs.crpix = [512.5, 512.5]
    t = math.radians(pa_deg)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    w.wcs.cd = rot @ np.array([[-1.0, 0.0], [0.0, 1.0]]) * SCALE_ARCSEC * scale / 3600.0
    w.pixel_shape = (SHAPE[1], SHAPE[0])
    w.wcs.set()
    return w


def _stars(n: int = 150, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(20, 1004, n), rng.uniform(20, 1004, n), rng.uniform(16, 22, n)


def _exposure(name: str, truth: WCS, start: WCS, x, y, mag) -> ExposureSources:
    """Sources at pixel (x, y) of ``truth``, to be fitted starting from ``start``."""
    src = Table({"x": x, "y": y, "mag": mag, "fwhm": np.full(len(x), 2.0), "snr": np.full(len(x), 200.0)})
    return ExposureSources(name, Path(f"{name}_flt.fits"), (), 53500.0, [Chip(1, start, src, SHAPE)])


def _catalog(truth: WCS, x, y, mag) -> tuple[cm.ReferenceCatalog, Table, cm.Region]:
    ra, dec = truth.all_pix2world(x, y, 0)
    table = Table({"ra": ra, "dec": dec, "mag": mag})
    ref = cm.ReferenceCatalog("TEST", table, "test", has_pm=True, epoch=2005.0, catalog_epoch=2005.0,
                              expected_error_mas=1.0)
    ra0, dec0 = mean_direction(ra, dec)
    return ref, table, cm.Region(ra0, dec0, 1.0 / 60)


def _fit(exposures, geometry, mode="IMG", masks=None):
    truth_ref, table, region = _CAT
    relative = RelativeFit(False, starting_wcs(exposures))
    return absolute_fit(exposures, starting_wcs(exposures), masks or all_sources(exposures), truth_ref, table,
                        region, geometry, mode, relative, CFG)


X, Y, MAG = _stars()
TRUTH = _wcs()
_CAT = _catalog(TRUTH, X, Y, MAG)


def _sky_error_mas(fitted: WCS, truth: WCS) -> float:
    gx, gy = np.meshgrid(np.linspace(0, 1023, 9), np.linspace(0, 1023, 9))
    r1, d1 = fitted.all_pix2world(gx.ravel(), gy.ravel(), 0)
    r0, d0 = truth.all_pix2world(gx.ravel(), gy.ravel(), 0)
    return float(np.max(np.hypot((r1 - r0) * math.cos(math.radians(2.0)), d1 - d0)) * 3.6e6)


@pytest.mark.parametrize(("geometry", "shift_arcsec", "pa_deg", "scale"), [
    ("shift", (0.4, -0.3), 0.0, 1.0),
    ("rscale", (0.4, -0.3), 0.02, 1.0),
    ("rscale", (-0.2, 0.5), -0.03, 1.0002),
    ("general", (0.3, 0.3), 0.01, 0.9998),
])
def test_known_transformation_is_recovered(geometry, shift_arcsec, pa_deg, scale):
    start = _wcs((150.0 + shift_arcsec[0] / 3600 / math.cos(math.radians(2.0)), 2.0 + shift_arcsec[1] / 3600),
                 pa_deg, scale)
    assert _sky_error_mas(start, TRUTH) > 250  # the injected error is large …
    out = _fit([_exposure("a", TRUTH, start, X, Y, MAG)], geometry)
    assert out.stats.succeeded and out.stats.failure == ""
    assert _sky_error_mas(out.wcs[(0, 0)], TRUTH) < 0.5  # … and gone
    assert out.stats.n_matches == len(X)
    assert out.stats.rms_mas < 0.1
    assert out.details["fit"]["rotation_deg"] == pytest.approx(-pa_deg, abs=1e-5)
    assert out.details["fit"]["scale"] == pytest.approx(1.0 / scale, abs=2e-6)
    assert out.stats.radial_offset_arcsec == pytest.approx(math.hypot(*shift_arcsec), abs=0.05)


def test_two_exposures_fitted_as_one_group_share_one_transformation():
    start = _wcs((150.0 + 0.3 / 3600, 2.0), 0.01)
    exps = [_exposure(n, TRUTH, start, X, Y, MAG) for n in ("a", "b")]
    out = _fit(exps, "rscale", mode="REL")
    assert out.stats.succeeded
    assert out.details["group_sources"] == {"detected": 2 * len(X), "one_copy_per_star": len(X)}
    for key in ((0, 0), (1, 0)):
        assert _sky_error_mas(out.wcs[key], TRUTH) < 0.5


def test_relative_fit_recovers_a_known_offset_between_exposures():
    # Exposure b points 0.2" east of a: its sources sit 4 px further west on the same sky.
    other = _wcs((150.0 + 0.2 / 3600 / math.cos(math.radians(2.0)), 2.0))
    xb, yb = other.all_world2pix(*TRUTH.all_pix2world(X, Y, 0), 0)
    exps = [_exposure("a", TRUTH, TRUTH, X, Y, MAG), _exposure("b", other, TRUTH, xb, yb, MAG)]
    rel = relative_fit(exps, CFG)
    assert rel.done and rel.per_exposure["b"]["status"] == "aligned"
    assert rel.rms_mas < 1.0
    assert _sky_error_mas(rel.wcs[(1, 0)], other) < 1.0
    aligned = align_exposures(exps, CFG)
    assert aligned.mode == "REL" and aligned.n_used == 2 * len(X)  # every star is seen twice


def test_single_exposure_is_fitted_image_by_image():
    aligned = align_exposures([_exposure("a", TRUTH, TRUTH, X, Y, MAG)], CFG)
    assert aligned.mode == "IMG" and not aligned.relative.done
    assert "single exposure" in aligned.relative.reason


def test_too_few_sources_is_a_failed_fit_not_an_exception():
    start = _wcs((150.0 + 0.3 / 3600, 2.0))
    out = _fit([_exposure("a", TRUTH, start, X[:2], Y[:2], MAG[:2])], "rscale")
    assert out.wcs == {}  # nothing to write
    assert out.stats.n_matches < CFG.quality.min_matches["rscale"]


@pytest.mark.parametrize(("exposures", "geometry", "masks", "message"), [
    ([], "rscale", None, "no exposures to fit"),
    (None, "affine", None, "unknown fit geometry 'affine'"),
    (None, "rscale", {}, r"no source mask for chip\(s\) \[\(0, 0\)\]"),
])
def test_degenerate_inputs_raise_clearly(exposures, geometry, masks, message):
    exps = [_exposure("a", TRUTH, TRUTH, X, Y, MAG)] if exposures is None else exposures
    relative = RelativeFit(False, starting_wcs(exps))
    ref, table, region = _CAT
    with pytest.raises(ValueError, match=message):
        absolute_fit(exps, starting_wcs(exps), all_sources(exps) if masks is None else masks, ref, table, region,
                     geometry, "IMG", relative, CFG)


def test_a_chip_without_sources_moves_with_its_sibling():
    # Two chips 60" apart, both off by one rigid correction (0.01° about chip A's centre and a
    # 0.5" shift); only chip A has sources. B must follow through transfer_correction.
    truth_b = _wcs((150.0, 2.0 + 60 / 3600))
    ra, dec = perturb_sky([150.0, 150.0], [2.0, 2.0 + 60 / 3600], (150.0, 2.0), rotation_arcsec=-36.0,
                          shift_mas=(400.0, -300.0))
    start_a, start_b = _wcs((ra[0], dec[0]), 0.01), _wcs((ra[1], dec[1]), 0.01)
    exp = _exposure("a", TRUTH, start_a, X, Y, MAG)
    exp.chips.append(Chip(2, start_b, exp.chips[0].sources[:0], SHAPE))
    assert _sky_error_mas(start_b, truth_b) > 400
    out = _fit([exp], "rscale")
    assert out.stats.succeeded
    assert _sky_error_mas(out.wcs[(0, 0)], TRUTH) < 0.5
    assert _sky_error_mas(out.wcs[(0, 1)], truth_b) < 0.5
    assert _sky_error_mas(transfer_correction(start_a, out.wcs[(0, 0)], start_b), truth_b) < 0.5


def test_centroid_weights_use_fwhm_over_snr_with_a_floor():
    src = Table({"fwhm": [2.0, 2.0, np.nan], "snr": [10.0, 1e6, 5.0]})
    w = centroid_weights(src, floor_pix=0.05, scale_arcsec=0.05)
    sigma_mas = 1.0 / np.sqrt(w)
    assert sigma_mas == pytest.approx([2.0 / 23.5 * 50.0, 0.05 * 50.0, 0.05 * 50.0])


def test_clip_residuals_drops_a_wrong_match():
    rng = np.random.default_rng(0)
    d = rng.normal(0, 1.0, (200, 2))
    d[7] = (40.0, -40.0)
    keep = clip_residuals(d)
    assert not keep[7] and keep.sum() >= 195


def test_nearest_unique_keeps_one_source_per_star():
    dist = np.array([0.3, 0.1, np.inf, 0.2])
    idx = np.array([5, 5, 9, 2])
    assert sorted(nearest_unique(dist, idx).tolist()) == [1, 3]
