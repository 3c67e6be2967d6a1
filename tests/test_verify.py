"""Pure verification indices on small synthetic arrays (autodriz.verify)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.special import ndtr

from autodriz.verify import (
    Thresholds,
    focus_index,
    load_thresholds,
    verify_arrays,
)


def _runastrodriz_similarity(*args):
    # The re-implemented runastrodriz formula is comparison tooling: it lives with the script
    # that uses it (scripts/runastrodriz_formula.py), not in the package.
    path = Path(__file__).resolve().parents[1] / "scripts" / "runastrodriz_formula.py"
    spec = importlib.util.spec_from_file_location("runastrodriz_formula", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.runastrodriz_similarity(*args)

SHAPE = (180, 180)


def _render(shape, x, y, flux, fwhm):
    img = np.zeros(shape)
    s = fwhm / 2.3548
    half = math.ceil(5 * s) + 1
    ny, nx = shape
    for xc, yc, f in zip(x, y, flux, strict=True):
        ix, iy = round(xc), round(yc)
        x0, x1, y0, y1 = max(ix - half, 0), min(ix + half + 1, nx), max(iy - half, 0), min(iy + half + 1, ny)
        if x0 >= x1 or y0 >= y1:
            continue
        px = np.arange(x0, x1 + 1) - 0.5 - xc
        py = np.arange(y0, y1 + 1) - 0.5 - yc
        img[y0:y1, x0:x1] += f * np.outer(np.diff(ndtr(py / s)), np.diff(ndtr(px / s)))
    return img


def make_stack(
    n=4, shift=(0.0, 0.0), which=1, seed=0, exptimes=None, nstars=45, cr_fraction=0.004, shape=SHAPE
):
    """``n`` rate images of one star field (unflagged cosmic rays); exposure ``which`` shifted."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, shape[1], nstars)
    y = rng.uniform(0, shape[0], nstars)
    flux = 10 ** rng.uniform(0.7, 2.5, nstars)  # e-/s
    exptimes = exptimes or [400.0] * n
    out = []
    for i in range(n):
        dx, dy = shift if i == which else (0.0, 0.0)
        model = (_render(shape, x + dx, y + dy, flux, 2.2) + 0.1) * exptimes[i]
        img = rng.poisson(model).astype(float) + rng.normal(0, 5, shape)
        hit = rng.random(shape) < cr_fraction
        img[hit] += rng.lognormal(math.log(1500), 0.7, hit.sum())
        out.append((img / exptimes[i]).astype(np.float32))
    return out, exptimes


def test_identical_images_pass():
    singles, _ = make_stack(n=1)
    res = verify_arrays([singles[0]] * 3, exptimes=[400.0] * 3)
    assert res.status == "pass" and res.passed and res.verified
    assert all(s.offset_px < 1e-3 for s in res.similarity)  # numerically zero
    assert res.focus.status == "pass" and abs(res.focus.z) < 1e-3


def test_aligned_noisy_exposures_pass():
    singles, exptimes = make_stack()
    res = verify_arrays(singles, exptimes=exptimes)
    assert res.status == "pass", res.reason
    assert max(s.offset_px for s in res.similarity) < 0.1


def test_one_pixel_shift_fails_and_names_the_exposure():
    singles, exptimes = make_stack(shift=(0.6, 0.8), which=2)
    res = verify_arrays(singles, exptimes=exptimes, names=["a", "b", "c", "d"])
    assert res.status == "fail" and not res.passed
    worst = max(res.similarity, key=lambda s: s.offset_px)
    assert worst.name == "c"
    assert worst.offset_px == pytest.approx(1.0, abs=0.1)
    assert worst.dx_px == pytest.approx(0.6, abs=0.1) and worst.dy_px == pytest.approx(0.8, abs=0.1)
    assert "c" in res.reason


def test_large_shift_is_found_by_the_coarse_search():
    # runastrodriz's similarity index reads ~0 for a 7 x 9 px shift (the flux is unchanged).
    singles, exptimes = make_stack(n=3, shift=(7.0, 9.0), which=0, seed=4)
    res = verify_arrays(singles, exptimes=exptimes)
    assert res.status == "fail"
    assert res.similarity[0].offset_px == pytest.approx(math.hypot(7, 9), abs=0.2)
    weights = [np.ones(SHAPE)] * 3
    legacy_ok, _ = _runastrodriz_similarity(singles, np.mean(singles, axis=0), weights, exptimes)
    assert legacy_ok, "the re-implemented runastrodriz formula should miss this (that is the point)"


def test_two_exposures_shift_fails():
    singles, exptimes = make_stack(n=2, shift=(1.0, 0.0), which=1, seed=2)
    res = verify_arrays(singles, exptimes=exptimes)
    assert res.status == "fail"
    # With two exposures each is the other's reference: both see the 1 px.
    assert all(s.offset_px == pytest.approx(1.0, abs=0.1) for s in res.similarity)


def test_exposure_time_scaling_alone_does_not_fail():
    singles, exptimes = make_stack(exptimes=[100.0, 400.0, 900.0, 250.0], seed=5)
    res = verify_arrays(singles, exptimes=exptimes)
    assert res.status == "pass", res.reason
    # A wrong flux scale (e.g. a mis-stated exposure time) is not a misregistration either.
    scaled = [singles[0] * 2.5, *singles[1:]]
    res2 = verify_arrays(scaled, exptimes=exptimes)
    assert res2.passed, res2.reason
    assert res2.similarity[0].flux_ratio == pytest.approx(2.5, rel=0.1)


def test_nans_and_zero_weights_give_a_defined_result():
    singles, exptimes = make_stack(seed=6)
    singles[1][40:90, 30:120] = np.nan
    singles[2][:, :20] = np.inf
    res = verify_arrays(singles, exptimes=exptimes)
    assert res.status == "pass", res.reason
    json.dumps(res.as_dict())  # report-ready: no NaN/inf, no numpy types


def test_all_zero_chip_gives_a_defined_result():
    singles, exptimes = make_stack(n=2, seed=7)
    zero = np.zeros(SHAPE, np.float32)
    res = verify_arrays([singles[0], zero], [np.ones(SHAPE), np.zeros(SHAPE)], exptimes=exptimes)
    assert res.status == "unverified" and res.passed and not res.verified
    assert all(s.status == "unverified" for s in res.similarity)
    assert "overlap" in res.similarity[0].reason
    # All-zero data with full weight: nothing to measure, still no exception.
    res = verify_arrays([zero, zero, zero])
    assert res.status == "unverified"


def test_no_overlap_gives_a_defined_result():
    singles, exptimes = make_stack(n=2, seed=8)
    w0 = np.zeros(SHAPE)
    w0[:, :80] = 1
    w1 = np.zeros(SHAPE)
    w1[:, 100:] = 1
    res = verify_arrays(singles, [w0, w1], exptimes=exptimes)
    assert res.status == "unverified"
    assert all(s.overlap_pixels == 0 for s in res.similarity)


def test_single_exposure_and_empty_field_are_unverified():
    singles, _ = make_stack(n=1)
    assert verify_arrays(singles).status == "unverified"
    rng = np.random.default_rng(1)
    noise = [rng.normal(0, 1, SHAPE).astype(np.float32) for _ in range(3)]
    res = verify_arrays(noise)
    assert res.status == "unverified" and res.focus.status == "unverified"


def test_focus_index_sees_a_blurred_combination():
    singles, exptimes = make_stack(shift=(3.0, 0.0), which=0, seed=9)
    res = verify_arrays(singles, exptimes=exptimes)
    assert res.focus.status == "fail" and res.focus.z < -4
    aligned, _ = make_stack(seed=9)
    assert verify_arrays(aligned, exptimes=exptimes).focus.status == "pass"


def test_focus_index_direct_and_unverified_without_sources():
    img = _render(SHAPE, [60.0, 120.0, 90.0], [50.0, 130.0, 90.0], [100.0, 80.0, 60.0], 2.2)
    blurred = 0.5 * img + 0.5 * np.roll(img, 3, axis=1)
    pos = [(np.array([50, 130, 90]), np.array([60, 120, 90]))]
    sharp = focus_index([img], [[img], [img]], pos, sigma=1.5, min_z=-4.0)
    assert sharp.status == "pass"
    blur = focus_index([blurred], [[img], [img]], pos, sigma=1.5, min_z=-4.0)
    assert blur.status == "fail" and blur.combined < sharp.combined
    none = focus_index([img], [[img], [img]], [(np.empty(0, int), np.empty(0, int))], sigma=1.5, min_z=-4.0)
    assert none.status == "unverified"


def test_thresholds_from_the_packaged_file(tmp_path):
    acs = load_thresholds("ACS/WFC")
    ir = load_thresholds("wfc3/ir")
    assert acs.log_sigma_px == 1.5 and ir.log_sigma_px == 2.0
    assert load_thresholds("ACS/SBC").log_sigma_px == 2.0
    assert 0 < acs.max_offset_px < 0.25
    bad = tmp_path / "v.toml"
    bad.write_text("[default]\nno_such_key = 1\n")
    with pytest.raises(ValueError, match="no_such_key"):
        load_thresholds(None, bad)
    with pytest.raises(ValueError):
        Thresholds(flux_ratio_range=(1.2, 2.0))


def test_shape_mismatch_is_a_caller_error():
    with pytest.raises(ValueError):
        verify_arrays([np.zeros((10, 10)), np.zeros((10, 12))])


def test_sparse_field_falls_back_to_cross_correlation():
    aligned, exptimes = make_stack(nstars=4, seed=3, cr_fraction=0.001)
    res = verify_arrays(aligned, exptimes=exptimes)
    assert res.status == "pass", res.reason
    assert all(s.method == "cross-correlation" for s in res.similarity)
    shifted, _ = make_stack(nstars=4, shift=(2.0, 0.0), which=0, seed=3, cr_fraction=0.001)
    res = verify_arrays(shifted, exptimes=exptimes)
    assert res.status == "fail"
    assert res.similarity[0].offset_px == pytest.approx(2.0, abs=0.15)
    json.dumps(res.as_dict())
    # Sub-pixel offsets are beyond what the cross-correlation can decide: not a failure.
    half, _ = make_stack(nstars=4, shift=(0.5, 0.0), which=0, seed=3, cr_fraction=0.001)
    res = verify_arrays(half, exptimes=exptimes)
    assert res.similarity[0].method == "cross-correlation"
    assert res.similarity[0].status == "unverified", res.similarity[0].reason


def test_two_exposure_sparse_fields_with_cosmic_rays_do_not_false_alarm():
    # 12 stars, two exposures, 0.7 % of pixels hit by unflagged cosmic rays (the simulator's
    # rate): chance pairs of cosmic rays outnumber the stars. They made an exactly registered
    # sparse visit "misregistered" before offsets had to agree (consensus) and the coarse offset
    # was voted instead of summed.
    outcomes = {0.0: [], 2.5: []}
    for seed in range(12):
        for d in outcomes:
            singles, exptimes = make_stack(
                n=2, nstars=12, seed=seed, cr_fraction=0.007, shift=(0.8 * d, 0.6 * d), which=0, shape=(300, 300)
            )
            outcomes[d].append(verify_arrays(singles, exptimes=exptimes).status)
    assert outcomes[0.0].count("fail") == 0, outcomes[0.0]
    assert outcomes[0.0].count("pass") >= 10, outcomes[0.0]
    assert outcomes[2.5].count("fail") >= 11, outcomes[2.5]


def test_batched_fft_correlation_is_scipys_valid_correlation():
    # The coarse offset votes correlate with numpy's FFT instead of scipy.signal (whose import
    # cost more than the correlations): the same numbers at every valid lag, also for stamps
    # and templates of different sizes.
    from scipy import signal

    from autodriz.verification.measure import _correlate_valid

    rng = np.random.default_rng(7)
    images, templates = rng.random((5, 37, 41)), rng.random((5, 9, 11))
    got = _correlate_valid(images, templates)
    want = np.array([signal.correlate(a, t, mode="valid", method="direct") for a, t in zip(images, templates)])
    assert got.shape == want.shape == (5, 29, 31)
    assert np.abs(got - want).max() < 1e-12 * np.abs(want).max()
    assert _correlate_valid(images[:0], templates[:0]).shape == (0, 29, 31)
