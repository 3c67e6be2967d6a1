"""Source detection on synthetic chips: stars found, cosmic rays and masked pixels not."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import ndtr

from autodriz.chipdetection import ChipJob, detect_chips
from autodriz.detect import (
    SOURCE_COLUMNS,
    DetectionParams,
    _dao_find,
    _local_maxima,
    confirm_across_exposures,
    detect_sources,
)

PARAMS = DetectionParams(fwhm_pix=2.0, nsigma=5.0, box_size=32, min_fwhm_pix=1.4, max_ellipticity=0.3)


def _star(image: np.ndarray, xc: float, yc: float, flux: float, fwhm: float = 2.0) -> None:
    sigma = fwhm / (2 * math.sqrt(2 * math.log(2)))
    ny, nx = image.shape
    px = np.arange(nx + 1) - 0.5 - xc
    py = np.arange(ny + 1) - 0.5 - yc
    image += flux * np.outer(np.diff(ndtr(py / sigma)), np.diff(ndtr(px / sigma)))


@pytest.fixture
def chip():
    rng = np.random.default_rng(3)
    ny, nx = 200, 300
    model = np.full((ny, nx), 50.0)
    stars = [(40.3, 50.7), (120.6, 80.2), (250.1, 150.9), (200.5, 30.4), (75.8, 160.2), (160.2, 120.6)]
    for k, (x, y) in enumerate(stars):
        _star(model, x, y, 20000.0 + 5000.0 * k)
    image = rng.poisson(model).astype(float) + rng.normal(0, 4.0, model.shape)
    # Cosmic rays: single hot pixels and short tracks, bright, unflagged.
    crs = [(20, 180), (280, 20), (150, 100)]
    for x, y in crs:
        image[y, x] += 3000.0
    for t in range(5):
        image[60 + t, 220 + t] += 1500.0  # diagonal track
        image[170, 100 + t] += 1500.0  # horizontal track
    return image, stars, crs


def test_finds_the_stars_and_not_the_cosmic_rays(chip):
    image, stars, crs = chip
    table = detect_sources(image, PARAMS)
    assert table.colnames == list(SOURCE_COLUMNS)
    xy = np.c_[table["x"], table["y"]]
    for x, y in stars:
        d = np.hypot(xy[:, 0] - x, xy[:, 1] - y)
        assert d.min() < 0.1, f"star at {x},{y} missed or off by {d.min():.2f} px"
    for x, y in [*crs, (222, 62), (102, 170)]:
        assert np.hypot(xy[:, 0] - x, xy[:, 1] - y).min() > 3, f"cosmic ray at {x},{y} kept"
    assert len(table) == len(stars)
    # Brightest first, shapes measured.
    assert list(table["flux"]) == sorted(table["flux"], reverse=True)
    assert np.all(table["fwhm"] > 1.4) and np.all(table["ellipticity"] < 0.3)
    assert table.meta["n_raw"] >= len(stars)


def test_dq_masked_star_is_not_detected(chip):
    image, stars, _ = chip
    dq = np.zeros(image.shape, dtype=np.int16)
    x, y = stars[0]
    dq[int(y) - 4 : int(y) + 5, int(x) - 4 : int(x) + 5] = 4  # bad pixels
    table = detect_sources(image, PARAMS, dq=dq)
    assert np.hypot(np.asarray(table["x"]) - x, np.asarray(table["y"]) - y).min() > 3
    assert len(table) == len(stars) - 1
    # The same bit declared harmless: found again.
    table = detect_sources(image, DetectionParams(**{**PARAMS.__dict__, "dq_ignore_bits": 4}), dq=dq)
    assert len(table) == len(stars)


def test_max_sources_keeps_the_brightest(chip):
    image, _, _ = chip
    table = detect_sources(image, DetectionParams(**{**PARAMS.__dict__, "max_sources": 2}))
    assert len(table) == 2
    assert table["flux"][0] > 40000


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        (np.full((64, 64), 7.0), "constant"),
        (np.full((64, 64), np.nan), "no valid pixels"),
    ],
)
def test_empty_or_constant_images_give_empty_tables(image, reason):
    table = detect_sources(image, PARAMS)
    assert len(table) == 0 and table.colnames == list(SOURCE_COLUMNS)
    assert reason in table.meta["reason"]


def test_noise_only_gives_nothing():
    rng = np.random.default_rng(1)
    table = detect_sources(rng.normal(100, 5, (128, 128)), PARAMS)
    assert len(table) == 0


def test_floored_quantised_data_fall_back_on_the_pixel_spread():
    # Like the GOODS-S test FLTs: integers, sky floored at 0.
    image = np.zeros((128, 128))
    for x, y in [(30.2, 40.7), (90.5, 100.1), (60.3, 20.8)]:
        _star(image, x, y, 400.0, fwhm=2.0)
    image = np.floor(image)
    table = detect_sources(image, DetectionParams(fwhm_pix=2.0, box_size=32, min_fwhm_pix=1.0))
    assert len(table) == 3
    assert "no spread" in table.meta["note"]


def test_params_from_mapping_rejects_unknown_keys():
    assert DetectionParams.from_mapping({"fwhm_pix": 1.3}).fwhm_pix == 1.3
    with pytest.raises(ValueError, match="unknown detection parameter"):
        DetectionParams.from_mapping({"fwhm": 1.3})


def test_confirm_across_exposures_drops_one_off_detections():
    stars_ra = np.array([10.0, 10.001, 10.002])
    stars_dec = np.array([20.0, 20.001, 20.0005])
    cr = (np.array([10.0015]), np.array([20.0015]))
    exp1 = (np.r_[stars_ra, cr[0]], np.r_[stars_dec, cr[1]])
    exp2 = (stars_ra + 0.02 / 3600, stars_dec - 0.02 / 3600)  # 20-30 mas apart: same stars
    masks = confirm_across_exposures([exp1, exp2], tolerance_arcsec=0.1)
    assert masks[0].tolist() == [True, True, True, False]
    assert masks[1].tolist() == [True, True, True]
    # Single exposure: nothing to compare with, everything kept.
    assert confirm_across_exposures([exp1], 0.1)[0].all()
    # Empty exposures do not break it.
    empty = (np.zeros(0), np.zeros(0))
    out = confirm_across_exposures([exp1, empty], 0.1)
    assert not out[0].any() and out[1].size == 0


def _crowded(seed: int, shape: tuple[int, int] = (300, 400)) -> tuple[np.ndarray, np.ndarray]:
    """Background-subtracted noise with many stars of all fluxes, cosmic rays and masked pixels."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    image = np.zeros(shape)
    for _ in range(120):
        _star(image, rng.uniform(3, nx - 3), rng.uniform(3, ny - 3), rng.uniform(50, 20000), rng.uniform(1.6, 2.6))
    image += rng.normal(0, 4.0, shape)
    for _ in range(300):  # hot pixels and 2-pixel hits
        x, y = rng.integers(0, nx - 1), rng.integers(0, ny)
        image[y, x : x + rng.integers(1, 3)] += rng.uniform(30, 3000)
    mask = np.zeros(shape, bool)
    mask[100:110, 50:300] = True
    return image, mask


@pytest.mark.parametrize("seed", [1, 2])
def test_prefiltered_finder_is_daostarfinder(seed):
    """Measuring only peaks that can pass the sharpness and roundness1 cuts changes nothing in the result."""
    from photutils.detection import DAOStarFinder

    sub, mask = _crowded(seed)
    for params in (PARAMS, DetectionParams(sharplo=0.3, sharphi=0.9, roundlo=-0.5, roundhi=0.5)):
        plain = DAOStarFinder(threshold=3 * 4.0, fwhm=params.fwhm_pix, sharplo=params.sharplo, sharphi=params.sharphi,
                              roundlo=params.roundlo, roundhi=params.roundhi, exclude_border=True)(sub, mask=mask)
        fast = _dao_find(sub, mask, params, 3 * 4.0)
        assert plain is not None and len(plain) > 50  # a real comparison: many sources, many cuts
        assert len(fast) == len(plain)
        for name in ("xcentroid", "ycentroid", "sharpness", "roundness1", "roundness2", "peak", "flux"):
            np.testing.assert_array_equal(np.asarray(fast[name]), np.asarray(plain[name]), err_msg=name)


@pytest.mark.parametrize("fwhm", [1.5, 2.0, 3.2])
def test_local_maxima_are_find_peaks(fwhm):
    """The threshold-first peak search returns find_peaks' peaks, in its order, plateaus included."""
    from photutils.detection import DAOStarFinder, find_peaks
    from scipy.ndimage import convolve

    sub, mask = _crowded(3)
    sub[200:204, 20:24] = 5000.0  # a flat-topped (saturated) star: every plateau pixel is a peak
    sub[0:3, :] = 900.0  # bright rows at the border, excluded as find_peaks excludes them
    kernel = DAOStarFinder(threshold=1.0, fwhm=fwhm).kernel
    convolved = convolve(sub, kernel.data, mode="constant", cval=0.0)
    footprint = kernel.mask.astype(bool)
    for threshold in (5.0, 40.0, 400.0):
        expected = find_peaks(convolved, threshold, footprint=footprint, mask=mask,
                              border_width=(kernel.yradius, kernel.xradius))
        y, x = _local_maxima(convolved, threshold, footprint, mask)
        assert len(expected) > 20
        np.testing.assert_array_equal(x, np.asarray(expected["x_peak"]))
        np.testing.assert_array_equal(y, np.asarray(expected["y_peak"]))
    assert _local_maxima(convolved, 1e9, footprint, mask) is None
    assert _local_maxima(np.full((50, 50), 3.0), 1.0, footprint, np.zeros((50, 50), bool)) is None


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_detect_chips_in_processes_equals_in_process(tmp_path, chip, start_method):
    """The process pool returns, in job order, exactly what detection in this process returns,
    whether its workers are forked from this process or start afresh."""
    from astropy.io import fits

    image, _, _ = chip
    crowded, mask = _crowded(5, image.shape)
    hdus = [fits.PrimaryHDU()]
    for extver, sci in ((1, image), (2, crowded + 50.0)):
        hdus.append(fits.ImageHDU(sci.astype(np.float32), name="SCI", ver=extver))
        hdus.append(fits.ImageHDU((mask * 4).astype(np.int16) if extver == 2 else np.zeros(sci.shape, np.int16),
                                  name="DQ", ver=extver))
    path = tmp_path / "two_chips.fits"
    fits.HDUList(hdus).writeto(path)
    jobs = [ChipJob(str(path), 2, PARAMS), ChipJob(str(path), 1, PARAMS), ChipJob(str(path), 3, PARAMS)]
    serial = detect_chips(jobs, 1)
    pooled = detect_chips(jobs, 2, start_method=start_method)
    assert [len(t) for t in serial] == [len(t) for t in pooled]
    assert len(serial[0]) > len(serial[1]) > 0 and len(serial[2]) == 0  # chip 2 crowded, no chip 3
    for a, b in zip(serial, pooled, strict=True):
        for name in SOURCE_COLUMNS:
            np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]))


def test_workers_are_forked_only_from_a_single_thread():
    """A fork copies locks held by other threads: with a second thread running, workers start afresh."""
    import threading

    from autodriz.chipdetection import pool_start_method

    assert pool_start_method() == ("fork" if threading.active_count() == 1 else "spawn")
    release = threading.Event()
    other = threading.Thread(target=release.wait, daemon=True)
    other.start()
    try:
        assert pool_start_method() == "spawn"
    finally:
        release.set()
        other.join()


def _undersampled_field(seed: int = 7, n: int = 120, halo: float = 0.2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WFC3/IR-like stars (FWHM 1.3 px core plus a 3x wider halo holding ``halo`` of the light)
    at random sub-pixel phases, bright (S/N ~ 100-300), on a noisy background."""
    rng = np.random.default_rng(seed)
    ny = nx = 256
    xs = rng.uniform(8, nx - 8, n)
    ys = rng.uniform(8, ny - 8, n)
    model = np.full((ny, nx), 30.0)
    for x, y in zip(xs, ys, strict=True):
        _star(model, x, y, 20000.0 * (1 - halo), fwhm=1.3)
        _star(model, x, y, 20000.0 * halo, fwhm=3.9)
    return rng.poisson(model).astype(float) + rng.normal(0, 5.0, model.shape), xs, ys


def _position_errors(table, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree

    d, i = cKDTree(np.column_stack([xs, ys])).query(np.column_stack([table["x"], table["y"]]))
    assert (d < 0.7).sum() > 0.8 * len(xs)
    return np.column_stack([table["x"] - xs[i], table["y"] - ys[i]])[d < 0.7]


def test_prf_centroids_remove_the_pixel_phase_error_of_undersampled_stars():
    """On an undersampled PSF the finder's marginal fits and a windowed centroid both follow the
    pixel grid (~0.1-0.15 px); the pixel-integrated PSF fit does not (its error is the noise's)."""
    image, xs, ys = _undersampled_field()
    base = dict(fwhm_pix=1.3, nsigma=5.0, box_size=32, min_fwhm_pix=0.8, max_ellipticity=0.4)
    finder = _position_errors(detect_sources(image, DetectionParams(**base, window_centroids=False)), xs, ys)
    window = _position_errors(detect_sources(image, DetectionParams(**base, window_centroids=True)), xs, ys)
    prf = _position_errors(
        detect_sources(image, DetectionParams(**base, window_centroids=False, prf_centroids=True)), xs, ys
    )
    # Medians and 90th percentiles of the radial error: a few blended pairs (120 stars on 256²
    # pixels) are off by tenths of a pixel whatever the centroid, and would dominate an RMS.
    p50 = {k: float(np.median(np.hypot(*v.T))) for k, v in (("finder", finder), ("window", window), ("prf", prf))}
    p90 = {k: float(np.percentile(np.hypot(*v.T), 90)) for k, v in (("finder", finder), ("window", window), ("prf", prf))}
    assert p50["finder"] > 0.1 and p50["window"] > 0.05, p50  # measured 0.175 and ~0.1
    assert p50["prf"] < 0.02 and p90["prf"] < 0.04, (p50, p90)  # measured 0.008 and 0.015
    assert np.all(np.abs(np.median(prf, axis=0)) < 0.01), np.median(prf, axis=0)


def test_prf_and_window_centroids_exclude_each_other():
    with pytest.raises(ValueError, match="exclude each other"):
        DetectionParams(window_centroids=True, prf_centroids=True)


def test_medians_of_a_sample_on_a_large_chip_give_the_sources_of_the_whole(monkeypatch):
    # A chip of 1.2 M pixels (> MEDIAN_SAMPLE): the floored-data test and the ERR median take a
    # sample; the sources are those found with the medians of every pixel.
    import autodriz.detect as detect

    rng = np.random.default_rng(11)
    ny, nx = 1024, 1200
    model = np.full((ny, nx), 60.0)
    for _ in range(40):
        _star(model, rng.uniform(20, nx - 20), rng.uniform(20, ny - 20), rng.uniform(500.0, 20000.0))
    image = rng.poisson(model).astype(float) + rng.normal(0, 4.0, model.shape)
    # An ERR that varies over the chip (and above the sky's own noise, so that it sets the
    # threshold): a sample that missed part of it would give another median.
    err = np.sqrt(model + 16.0) * np.linspace(1.0, 2.0, ny)[:, None]
    assert image.size > detect.MEDIAN_SAMPLE
    sampled = detect_sources(image, PARAMS, err=err)
    monkeypatch.setattr(detect, "MEDIAN_SAMPLE", image.size)
    whole = detect_sources(image, PARAMS, err=err)
    assert len(sampled) >= 20
    assert np.array_equal(sampled["x"], whole["x"]) and np.array_equal(sampled["y"], whole["y"])
    assert sampled.meta["background_rms"] == pytest.approx(whole.meta["background_rms"], rel=0.003)
    assert whole.meta["background_rms"] > 1.2 * math.sqrt(76.0)  # the ERR median, not the sky's
    monkeypatch.undo()

    # 70 % of the pixels at 0, the rest spread (so that the meshes have a spread and only the
    # floored-data test can say "no spread"): recognised from a sample.
    floored = np.where(rng.random((ny, nx)) < 0.7, 0.0, np.floor(rng.uniform(1.0, 50.0, (ny, nx))))
    for x, y in [(300.2, 400.7), (900.5, 100.1), (600.3, 820.8)]:
        _star(floored, x, y, 4000.0, fwhm=2.0)
    floored = np.floor(floored)
    table = detect_sources(floored, DetectionParams(fwhm_pix=2.0, box_size=32, min_fwhm_pix=1.0))
    assert "no spread" in table.meta["note"]


def test_sample_takes_a_prime_step_across_the_columns():
    from autodriz.detect import MEDIAN_SAMPLE, _sample

    small = np.arange(1000.0)
    assert np.array_equal(_sample(small, 100), small)  # nothing to gain below MEDIAN_SAMPLE
    for ny, nx in ((2048, 4096), (1014, 1014), (2051, 4096)):
        values = np.arange(ny * nx)
        picked = _sample(values, nx)
        step = int(picked[1] - picked[0])
        assert len(picked) <= MEDIAN_SAMPLE and step > 1
        assert all(step % d for d in range(2, step)) and nx % step  # prime, not a divisor of the row
        assert len(np.unique(picked % nx)) == nx  # every column is in the sample


@pytest.mark.parametrize("shape", [(1024, 2048), (1014, 1014)])
def test_background_from_every_other_pixel_is_the_full_one_within_its_noise(shape):
    """On a large chip the meshes are measured on a quarter of their pixels: the background and
    its noise are those of all pixels to a small fraction of the noise (and the padded mesh grid
    is the same, even for a side that is not a multiple of the mesh)."""
    from astropy.stats import SigmaClip
    from photutils.background import Background2D, BkgZoomInterpolator, MedianBackground

    from autodriz.detect import SUBSAMPLED_BACKGROUND_MIN, _background

    assert min(shape) >= SUBSAMPLED_BACKGROUND_MIN
    rng = np.random.default_rng(11)
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    sky = 40.0 + 15.0 * xx / nx + 10.0 * np.sin(yy / ny * 3.0)  # a gradient and a wave
    image, mask = _crowded(12, shape)
    image += sky
    full = Background2D(image, (64, 64), filter_size=3, mask=mask, sigma_clip=SigmaClip(sigma=3.0),
                        bkg_estimator=MedianBackground(), interpolator=BkgZoomInterpolator(order=1))
    background, rms = _background(image, mask, 64, 3)
    assert background.shape == shape
    sigma = 4.0  # the noise _crowded adds
    diff = np.abs(background - full.background)
    # Measured: mean 0.018 and max 0.11 sigma; each mesh median from a quarter of its pixels.
    assert diff.mean() < 0.03 * sigma and diff.max() < 0.15 * sigma
    # Against the true sky, nearly as close as the full one (both miss the wave between meshes).
    assert np.abs(background - sky).mean() < np.abs(full.background - sky).mean() + 0.05 * sigma
    assert rms == pytest.approx(float(np.nanmedian(full.background_rms_mesh)), rel=0.02)
    assert rms == pytest.approx(4.0, rel=0.05)


@pytest.mark.parametrize(("mesh_shape", "box", "shape"), [
    ((32, 64), 64, (2048, 4096)),   # an ACS/WFC chip
    ((16, 16), 64, (1014, 1014)),   # WFC3/IR: the last box is partial
    ((3, 5), 8, (17, 40)),          # small, partial boxes on both axes
    ((1, 4), 16, (16, 60)),         # a single mesh row
])
def test_bilinear_background_is_photutils_order_1_zoom(mesh_shape, box, shape):
    """The separable interpolation gives photutils' BkgZoomInterpolator(order=1) numbers."""
    from photutils.background import BkgZoomInterpolator

    from autodriz.detect import bilinear_background

    rng = np.random.default_rng(3)
    mesh = 40.0 + rng.normal(0.0, 5.0, mesh_shape)
    theirs = BkgZoomInterpolator(order=1)(mesh, shape=shape, dtype=float, box_size=box, edge_method="pad")
    ours = bilinear_background(mesh, box, shape)
    assert ours.shape == theirs.shape == shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-10)
    # Within the mesh's range (photutils clips), constant meshes stay constant, the dtype asked for.
    assert ours.min() >= mesh.min() and ours.max() <= mesh.max()
    flat = bilinear_background(np.full(mesh_shape, 7.5), box, shape, np.float32)
    assert flat.dtype == np.float32 and np.all(flat == 7.5)
