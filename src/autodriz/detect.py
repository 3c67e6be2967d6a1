"""Find point sources on one chip, robust to unflagged cosmic rays.

The core, :func:`detect_sources`, is a function of arrays (science, DQ, optional error) and a
:class:`DetectionParams`; it returns an :class:`astropy.table.Table` in detector coordinates
(0-based pixels, the convention of photutils and of tweakwcs' ``FITSWCSCorrector``).

How cosmic rays are kept out (simulated and real FLTs have many that DQ does not flag):

1. DAOStarFinder's sharpness and roundness limits, with the PSF FWHM of the detector;
2. a second-moment shape measured on a small background-subtracted stamp: a source narrower than
   ``min_fwhm_pix`` or more elongated than ``max_ellipticity`` is not a star (single hot pixels
   and cosmic-ray tracks fail one or the other);
3. across exposures, :func:`confirm_across_exposures` keeps only sources seen at the same sky
   position in at least two exposures (cosmic rays never repeat); the a posteriori stage applies
   it after the relative fit, when positions of different exposures can be compared.

Parameters per instrument/detector live in ``config/aposteriori.toml``
(:func:`autodriz.astrometry.config.load_aposteriori_config` turns them into a
:class:`DetectionParams`).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from astropy.stats import SigmaClip
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning

logger = logging.getLogger(__name__)

#: Columns of the tables :func:`detect_sources` returns (in this order).
SOURCE_COLUMNS: tuple[str, ...] = (
    "x", "y", "flux", "peak", "mag", "sharpness", "roundness1", "roundness2",
    "fwhm", "ellipticity", "snr",
)


@dataclass(frozen=True)
class DetectionParams:
    """How to find stars on one detector (values from ``config/aposteriori.toml``).

    Attributes
    ----------
    fwhm_pix : float
        PSF FWHM in detector pixels (DAOStarFinder kernel).
    nsigma : float
        Detection threshold in units of the local background RMS.
    box_size : int
        Background mesh size, pixels.
    filter_size : int
        Median filter over background meshes.
    sharplo, sharphi : float
        DAOStarFinder sharpness limits.
    roundlo, roundhi : float
        DAOStarFinder roundness limits (applied to both roundness1 and roundness2).
    min_fwhm_pix : float
        Smallest second-moment FWHM of a star; narrower detections are cosmic rays/hot pixels.
    max_ellipticity : float
        Largest second-moment ellipticity ``1 - b/a`` of a star (cosmic-ray tracks are long).
    stamp_radius : int
        Half-size of the stamp on which shapes are measured, pixels.
    max_sources : int
        Keep at most this many sources per chip, brightest first.
    dq_ignore_bits : int
        DQ bits that do not disqualify a pixel (everything else is masked).
    saturation : float or None
        Pixel value above which a source is dropped (None: no limit).
    window_centroids : bool
        Refine the finder's positions with Gaussian-windowed centroids (well-sampled PSFs only:
        on an undersampled PSF a window of sigma FWHM/2.35 < 1 px measures the pixel grid).
    prf_centroids : bool
        Refine them with a fit of the pixel-integrated Gaussian PSF instead
        (:func:`autodriz.centroid.prf_centroid`): for undersampled PSFs, where both the finder's
        and the windowed centroids carry 0.1-0.15 px of pixel-phase error. Exclusive with
        ``window_centroids``.
    """

    fwhm_pix: float = 2.0
    nsigma: float = 5.0
    box_size: int = 64
    filter_size: int = 3
    sharplo: float = 0.2
    sharphi: float = 1.0
    roundlo: float = -0.75
    roundhi: float = 0.75
    min_fwhm_pix: float = 1.2
    max_ellipticity: float = 0.35
    stamp_radius: int = 3
    max_sources: int = 1000
    dq_ignore_bits: int = 0
    saturation: float | None = None
    window_centroids: bool = True
    prf_centroids: bool = False

    def __post_init__(self) -> None:
        if self.window_centroids and self.prf_centroids:
            raise ValueError("window_centroids and prf_centroids exclude each other: set one of them to false")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> DetectionParams:
        """Build from a TOML table; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown detection parameter(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**dict(values))


def empty_source_table() -> Table:
    """A source table with the right columns and no rows."""
    return Table({name: np.zeros(0, dtype=float) for name in SOURCE_COLUMNS})


def _refine_positions(
    data: np.ndarray, x: np.ndarray, y: np.ndarray, fwhm: float, rms: float, *, prf: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Refined centroids started at the star finder's positions.

    DAOStarFinder's marginal-fit centroids carry a pixel-phase bias: a few hundredths of a pixel
    on a well-sampled PSF, where with hundreds of stars sharing one pointing it does not average
    away exactly (a 0.15 mas offset of the absolute fit on the full-size benchmark), and
    0.1-0.15 px on an undersampled one. ``prf=False``: Gaussian-windowed centroids
    (:func:`autodriz.centroid.windowed_centroid`, well-sampled PSFs); ``prf=True``: fits of the
    pixel-integrated PSF (:func:`autodriz.centroid.prf_centroid`, undersampled PSFs). Positions
    whose refinement does not converge, or that moved more than half a FWHM (to a neighbour),
    keep the finder's value.
    """
    from autodriz.centroid import prf_centroid, windowed_centroid

    if x.size == 0:
        return x, y
    # The window needs room for its Gaussian weights; the PRF fit only the core and a background.
    r = max(2, math.ceil(1.5 * fwhm)) if prf else max(3, math.ceil(2.0 * fwhm) + 1)
    ny, nx = data.shape
    ix, iy = np.round(x).astype(int), np.round(y).astype(int)
    inside = (ix >= r) & (iy >= r) & (ix < nx - r) & (iy < ny - r)
    if not inside.any():
        return x, y
    off = np.arange(-r, r + 1)
    stamps = data[iy[inside][:, None, None] + off[None, :, None], ix[inside][:, None, None] + off[None, None, :]]
    var = np.full(stamps.shape, max(rms, 1e-12) ** 2)
    x0, y0 = x[inside] - ix[inside], y[inside] - iy[inside]
    if prf:
        fx, fy, _, ok = prf_centroid(stamps, var, x0, y0, fwhm / 2.3548)
    else:
        fx, fy, _, _, ok = windowed_centroid(stamps, var, x0, y0, fwhm / 2.3548)
    ok &= np.hypot(fx - x0, fy - y0) < 0.5 * fwhm
    x_new, y_new = x.copy(), y.copy()
    x_new[np.flatnonzero(inside)[ok]] = (ix[inside] + fx)[ok]
    y_new[np.flatnonzero(inside)[ok]] = (iy[inside] + fy)[ok]
    return x_new, y_new


def _shapes(data: np.ndarray, x: np.ndarray, y: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Second-moment FWHM (geometric mean of the axes) and ellipticity on (2r+1)² stamps."""
    ny, nx = data.shape
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(float)
    fwhm = np.full(x.size, np.nan)
    ell = np.full(x.size, np.nan)
    for k, (xc, yc) in enumerate(zip(x, y, strict=True)):
        ix, iy = round(float(xc)), round(float(yc))
        if ix < r or iy < r or ix >= nx - r or iy >= ny - r:
            continue
        stamp = np.clip(data[iy - r : iy + r + 1, ix - r : ix + r + 1], 0.0, None)
        total = stamp.sum()
        if not np.isfinite(total) or total <= 0:
            continue
        mx = (stamp * xx).sum() / total
        my = (stamp * yy).sum() / total
        ixx = (stamp * (xx - mx) ** 2).sum() / total
        iyy = (stamp * (yy - my) ** 2).sum() / total
        ixy = (stamp * (xx - mx) * (yy - my)).sum() / total
        half = 0.5 * (ixx + iyy)
        d = math.hypot(0.5 * (ixx - iyy), ixy)
        a2, b2 = half + d, max(half - d, 1e-12)
        if a2 <= 1e-12:  # a single bright pixel: no width at all
            fwhm[k], ell[k] = 0.0, 0.0
            continue
        fwhm[k] = 2.0 * math.sqrt(2.0 * math.log(2.0)) * (a2 * b2) ** 0.25
        ell[k] = 1.0 - math.sqrt(b2 / a2)
    return fwhm, ell


def _drop_duplicates(idx: np.ndarray, x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """Keep, in the given (brightest-first) order, sources farther than ``radius`` from a kept one.

    Flat-topped (saturated, floored, quantised) stars can give DAOStarFinder two peaks.
    """
    from scipy.spatial import cKDTree

    if idx.size < 2:
        return idx
    tree = cKDTree(np.c_[x[idx], y[idx]])
    dropped = np.zeros(idx.size, dtype=bool)
    for k in range(idx.size):
        if dropped[k]:
            continue
        for j in tree.query_ball_point((x[idx[k]], y[idx[k]]), radius):
            if j > k:
                dropped[j] = True
    return idx[~dropped]


def _local_maxima(
    convolved: np.ndarray, threshold: float, footprint: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """The peaks ``photutils.detection.find_peaks`` finds, as ``(y, x)`` in its (row-major) order.

    ``find_peaks(convolved, threshold, footprint=footprint, mask=mask, border_width=radius)``,
    which DAOStarFinder calls, takes a maximum filter of the whole image (~0.75 s per 2048x4096
    chip): a pixel is a peak when it equals the maximum over the footprint around it, is not
    masked, is above the threshold and is at least the footprint's radius from the border.
    Only the few per cent of pixels above the threshold can be peaks, so they alone are compared
    with their footprint neighbours, which are all inside the image (border exclusion), where the
    filter's constant padding never counts.
    """
    if convolved.min() == convolved.max():  # find_peaks: "Input data is constant"
        return None
    ry, rx = (n // 2 for n in footprint.shape)
    inner = convolved[ry:convolved.shape[0] - ry, rx:convolved.shape[1] - rx]
    candidate = (inner > threshold) & ~mask[ry:convolved.shape[0] - ry, rx:convolved.shape[1] - rx]
    y, x = np.nonzero(candidate)
    if y.size == 0:
        return None
    y += ry
    x += rx
    value = convolved[y, x]
    keep = np.ones(y.size, dtype=bool)
    for dy, dx in zip(*np.nonzero(footprint), strict=True):
        if dy != ry or dx != rx:
            keep &= value >= convolved[y + (dy - ry), x + (dx - rx)]
    if not keep.any():
        return None
    return y[keep], x[keep]


def _dao_find(sub: np.ndarray, mask: np.ndarray, params: DetectionParams, threshold: float) -> Table | None:
    """DAOStarFinder on ``sub``, measuring only the peaks that can pass its sharpness limits.

    DAOStarFinder measures every local maximum of the convolved image (tens of thousands on a
    full chip with cosmic rays) with one cutout per peak in Python (~3 s per 2048x4096 chip).
    Its sharpness and roundness1 depend only on the pixels under the kernel at the peak, so
    they are computed here for all peaks at once with the same formulas; the finder then
    measures the few that can pass (``xycoords``), on the convolved image made here
    (:class:`autodriz.daofind.MeasuringFinder`), and applies all its own cuts to them. The
    peaks are found exactly as the finder does (same convolution, ``find_peaks`` footprint and
    border), and a margin on the sharpness window keeps rounding from dropping a source the
    finder would keep: the result is the finder's own (tests/test_detect.py compares the two).
    """
    from photutils.detection import DAOStarFinder
    from scipy.ndimage import convolve

    from autodriz.daofind import MeasuringFinder

    finder_args = dict(
        threshold=threshold, fwhm=params.fwhm_pix, sharplo=params.sharplo, sharphi=params.sharphi,
        roundlo=params.roundlo, roundhi=params.roundhi, exclude_border=True,
    )
    kernel = DAOStarFinder(**finder_args).kernel
    convolved = convolve(sub, kernel.data, mode="constant", cval=0.0)
    found = _local_maxima(convolved, threshold * kernel.relerr, kernel.mask.astype(bool), mask)
    if found is None:
        return None
    py, px = found
    ky, kx = np.nonzero(kernel.mask)
    ky = ky - (kernel.mask.shape[0] - 1) // 2
    kx = kx - (kernel.mask.shape[1] - 1) // 2
    peak = sub[py, px]
    # Peaks are at least the kernel's radius from the border (border_width): no padding needed.
    total = sub[py[:, None] + ky[None, :], px[:, None] + kx[None, :]].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        sharp = (peak - (total - peak) / (kernel.npixels - 1)) / convolved[py, px]
    margin = 1e-6 * max(1.0, abs(params.sharplo), abs(params.sharphi))
    keep = (sharp >= params.sharplo - margin) & (sharp <= params.sharphi + margin)
    if not keep.any():
        return None
    # roundness1 (the symmetry of the convolved image around the peak) likewise, with the
    # finder's quadrants; a non-finite one is dropped by the finder too.
    sel = np.flatnonzero(keep)
    cy, cx = ((n - 1) // 2 for n in kernel.shape)
    oy = np.arange(kernel.shape[0]) - cy
    ox = np.arange(kernel.shape[1]) - cx
    cut = convolved[py[sel, None, None] + oy[None, :, None], px[sel, None, None] + ox[None, None, :]]
    cut[:, cy, cx] = 0.0
    sum2 = (-cut[:, 0:cy + 1, cx + 1:].sum(axis=(1, 2)) + cut[:, 0:cy, 0:cx + 1].sum(axis=(1, 2))
            - cut[:, cy:, 0:cx].sum(axis=(1, 2)) + cut[:, cy + 1:, cx:].sum(axis=(1, 2)))
    sum4 = np.abs(cut).sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        round1 = 2.0 * sum2 / sum4
    rmargin = 1e-6 * max(1.0, abs(params.roundlo), abs(params.roundhi))
    keep[sel] = (round1 >= params.roundlo - rmargin) & (round1 <= params.roundhi + rmargin)
    if not keep.any():
        return None
    finder = MeasuringFinder(convolved, **finder_args, xycoords=np.c_[px[keep], py[keep]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return finder(sub, mask=mask)


#: Smallest side (pixels) of a chip whose background meshes are measured on every other pixel.
SUBSAMPLED_BACKGROUND_MIN = 512


def _background(data: np.ndarray, mask: np.ndarray, box: int, filter_size: int) -> tuple[np.ndarray, float]:
    """The chip's background (full size) and its noise: sigma-clipped medians in ``box`` meshes.

    On a large chip each mesh's statistics are taken from every other pixel of every other row
    (a quarter of its pixels: ~1000 of a 64x64 mesh) and interpolated to every pixel exactly as
    photutils does from its own mesh. The median of ~1000 sky pixels is within ~0.04 of their
    noise of the median of all ~4000, and the 3x3 median filter over meshes halves that: far
    below what a 5-sigma threshold resolves, at a quarter of the clipping and median work
    (~0.4 CPU-s less per 2048x4096 chip, ``docs/benchmarks.md``, thirteenth round).
    """
    from photutils.background import Background2D, BkgZoomInterpolator, MedianBackground

    ny, nx = data.shape
    # Bilinear between the (median-filtered) mesh values rather than photutils' default cubic
    # spline: ~0.5 s less per 2048x4096 chip, and on a simulated ACS chip the two backgrounds
    # differ by at most 0.06 e- against a 7.7 e- sky RMS.
    interpolator = BkgZoomInterpolator(order=1)
    step = 2 if min(ny, nx) >= SUBSAMPLED_BACKGROUND_MIN and box % 2 == 0 else 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            # Every other pixel with meshes of half the side: the same meshes on the sky (the
            # padded mesh grid of ceil(n/2) pixels in boxes of box/2 is that of n in boxes of box).
            bkg = Background2D(
                data[::step, ::step], (box // step, box // step), filter_size=filter_size,
                mask=mask[::step, ::step], sigma_clip=SigmaClip(sigma=3.0), bkg_estimator=MedianBackground(),
                interpolator=interpolator,
            )
            background = bilinear_background(bkg.background_mesh, box, data.shape, data.dtype)
            # The median of the mesh RMS values, not of their interpolation to every pixel:
            # the same number to ~1e-4 without a second full-size zoom (~1.3 s per 2048x4096 chip).
            return background, float(np.nanmedian(bkg.background_rms_mesh))
        except ValueError as exc:  # too few unmasked pixels for a mesh
            logger.debug("Background2D failed (%s); using a global sigma-clipped median", exc)
            good = data[~mask]
            clipped = SigmaClip(sigma=3.0)(good, masked=False)
            return np.full(data.shape, float(np.median(clipped))), float(np.std(clipped))


def bilinear_background(mesh: np.ndarray, box: int, shape: tuple[int, int], dtype: Any = float) -> np.ndarray:
    """A background mesh interpolated to every pixel: photutils' ``BkgZoomInterpolator(order=1)``.

    The same numbers (to rounding) as that interpolator with ``edge_method="pad"``: the mesh
    zoomed by ``box`` (``scipy.ndimage.zoom``, order 1, ``mode="reflect"``, ``grid_mode=True``:
    mesh values at the centres of their boxes, constant within half a box of the edges), cropped
    to ``shape`` and clipped to the mesh's range. Bilinear interpolation is separable: along
    the rows of the small mesh first, then between two of those rows for each pixel row:
    0.03 s instead of the zoom's 0.14 s on a 2048x4096 chip once its memory is mapped.

    Parameters
    ----------
    mesh : numpy.ndarray
        Background per box, ``(ceil(ny / box), ceil(nx / box))``.
    box : int
        Side of a box, pixels.
    shape : tuple of int
        The image's ``(ny, nx)``.
    dtype : dtype
        Of the result.

    Returns
    -------
    numpy.ndarray
        ``shape``.
    """
    mesh = np.asarray(mesh, dtype=float)
    low, high = np.min(mesh), np.max(mesh)
    if high == low:
        return np.full(shape, low, dtype=dtype)

    def taps(n_mesh: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Pixel i sits at mesh coordinate (i + 0.5) / box - 0.5; beyond the first and last box
        # centres the reflection repeats the edge value.
        coord = (np.arange(n) + 0.5) / box - 0.5
        first = np.floor(coord)
        weight = coord - first
        first = first.astype(np.intp)
        return np.clip(first, 0, n_mesh - 1), np.clip(first + 1, 0, n_mesh - 1), weight

    y0, y1, wy = taps(mesh.shape[0], shape[0])
    x0, x1, wx = taps(mesh.shape[1], shape[1])
    rows = mesh[:, x0] * (1.0 - wx) + mesh[:, x1] * wx
    out = np.empty(shape, dtype=float)
    # Pixel rows between the same two mesh rows at a time: one full-size array written once,
    # temporaries of a box's rows (a full-size temporary more costs its page faults).
    starts = np.flatnonzero(np.r_[True, (y0[1:] != y0[:-1]) | (y1[1:] != y1[:-1])])
    for start, stop in zip(starts, [*starts[1:], shape[0]], strict=True):
        part = out[start:stop]
        np.multiply(rows[y0[start]], (1.0 - wy[start:stop])[:, None], out=part)
        part += rows[y1[start]] * wy[start:stop, None]
    np.clip(out, low, high, out=out)
    return out.astype(dtype, copy=False)


#: Values a median is taken of, at most (:func:`_sample`).
MEDIAN_SAMPLE = 2**18


def _sample(values: np.ndarray, row: int) -> np.ndarray:
    """Every k-th of ``values`` (flattened), at most ~:data:`MEDIAN_SAMPLE` of them.

    A median of 2**18 of a chip's 8 million pixels differs from the whole's by ~0.2 % of
    their spread (its standard error), far below anything a detection threshold or the
    floored-data test resolves, at a twentieth of the cost (~0.2 s less per 2048x4096 chip).
    ``k`` is a prime that does not divide ``row`` (the chip's row length), so that the sample
    walks across the columns instead of reading the same few in every row (column structure).
    """
    flat = np.ravel(values)
    step = max(1, flat.size // MEDIAN_SAMPLE)
    if step > 1:
        step = _next_prime(step)
        while row % step == 0:
            step = _next_prime(step + 1)
    return flat[::step]


def _next_prime(n: int) -> int:
    """The smallest prime ≥ ``n`` (``n`` ≥ 2; small numbers only: trial division)."""
    while any(n % d == 0 for d in range(2, math.isqrt(n) + 1)):
        n += 1
    return n


def detect_sources(
    sci: np.ndarray,
    params: DetectionParams,
    *,
    dq: np.ndarray | None = None,
    err: np.ndarray | None = None,
) -> Table:
    """Detect stars on one chip.

    Parameters
    ----------
    sci : numpy.ndarray
        Science array (any units).
    params : DetectionParams
        Detection settings for this detector.
    dq : numpy.ndarray, optional
        Data-quality array; pixels with bits outside ``params.dq_ignore_bits`` are masked.
    err : numpy.ndarray, optional
        Error array; when given, the threshold is the larger of ``nsigma`` × background RMS and
        ``nsigma`` × the median error, and ``snr`` uses it.

    Returns
    -------
    astropy.table.Table
        Columns :data:`SOURCE_COLUMNS`: 0-based ``x``, ``y``, ``flux`` (background-subtracted),
        ``peak``, instrumental ``mag``, DAOStarFinder ``sharpness``/``roundness1``/``roundness2``,
        second-moment ``fwhm`` (pixels) and ``ellipticity``, ``snr``; brightest first, at most
        ``params.max_sources`` rows. ``meta`` records how many detections each cut removed.
        Never raises for data problems (an empty or constant image gives an empty table).
    """
    data = np.asarray(sci, dtype=float)
    mask = ~np.isfinite(data)
    if dq is not None:
        mask |= (np.asarray(dq).astype(np.int64) & ~int(params.dq_ignore_bits)) != 0
    table = empty_source_table()
    table.meta["n_raw"] = 0
    if mask.all() or data.size == 0:
        table.meta["reason"] = "no valid pixels"
        return table

    ny, nx = data.shape
    box = int(max(8, min(params.box_size, ny // 2 or 1, nx // 2 or 1)))
    background, rms = _background(data, mask, box, params.filter_size)
    if err is not None:
        err_med = float(np.nanmedian(_sample(np.asarray(err)[~mask], nx)))
        if np.isfinite(err_med):
            rms = max(rms, err_med) if rms > 0 else err_med
    note = None
    valid = data[~mask]
    # More than half the pixels at one value: floored or quantised data, where a clipped RMS
    # measures nothing (the GOODS-S test FLTs are uint8 with the sky floored at 0). The value
    # is the median of a sample; the fraction at it is counted on every pixel.
    floored = float(np.mean(valid == np.median(_sample(valid, nx)))) > 0.5
    if floored or not np.isfinite(rms) or rms <= 0:
        # Floored or quantised data (e.g. sky set to 0): the clipped background has no spread.
        # Fall back on the spread of all valid pixels, sources included (a conservative noise).
        rms = float(np.std(valid))
        note = "background has no spread (floored or quantised data): threshold from the standard deviation of all pixels"
        if not np.isfinite(rms) or rms <= 0:
            table.meta["reason"] = "image is constant: nothing to detect"
            return table

    sub = data - background
    sub[mask] = 0.0
    found = _dao_find(sub, mask, params, params.nsigma * rms)
    if found is None or len(found) == 0:
        table.meta["reason"] = "no source above the threshold" + (f" ({note})" if note else "")
        return table
    n_raw = len(found)

    x = np.asarray(found["xcentroid"], dtype=float)
    y = np.asarray(found["ycentroid"], dtype=float)
    flux = np.asarray(found["flux"], dtype=float)
    peak = np.asarray(found["peak"], dtype=float)
    fwhm, ell = _shapes(sub, x, y, params.stamp_radius)
    keep = np.isfinite(fwhm) & (fwhm >= params.min_fwhm_pix) & (ell <= params.max_ellipticity) & (flux > 0)
    n_shape = int((~keep).sum())
    if params.saturation is not None:
        raw_peak = peak + background[np.clip(y.round().astype(int), 0, ny - 1), np.clip(x.round().astype(int), 0, nx - 1)]
        keep &= raw_peak < params.saturation
    order = np.argsort(-flux[keep], kind="stable")
    idx = _drop_duplicates(np.flatnonzero(keep)[order], x, y, params.fwhm_pix)[: params.max_sources]
    if (params.window_centroids or params.prf_centroids) and note is None:  # not on floored/quantised pixels
        x, y = x.copy(), y.copy()
        x[idx], y[idx] = _refine_positions(sub, x[idx], y[idx], params.fwhm_pix, rms, prf=params.prf_centroids)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = -2.5 * np.log10(flux[idx])
        # Aperture-free S/N estimate: flux over the noise in a PSF-sized area.
        snr = flux[idx] / (rms * math.sqrt(math.pi) * params.fwhm_pix)
    out = Table(
        {
            "x": x[idx],
            "y": y[idx],
            "flux": flux[idx],
            "peak": peak[idx],
            "mag": mag,
            "sharpness": np.asarray(found["sharpness"], dtype=float)[idx],
            "roundness1": np.asarray(found["roundness1"], dtype=float)[idx],
            "roundness2": np.asarray(found["roundness2"], dtype=float)[idx],
            "fwhm": fwhm[idx],
            "ellipticity": ell[idx],
            "snr": snr,
        }
    )
    out.meta.update(
        {"n_raw": n_raw, "n_rejected_shape": n_shape, "n_kept": len(out), "background_rms": rms}
    )
    if note:
        out.meta["note"] = note
    return out


def confirm_across_exposures(
    positions: Sequence[tuple[np.ndarray, np.ndarray]],
    tolerance_arcsec: float,
    *,
    min_exposures: int = 2,
) -> list[np.ndarray]:
    """Flag sources seen at the same sky position in at least ``min_exposures`` exposures.

    Parameters
    ----------
    positions : sequence of (ra, dec) arrays
        Source positions of each exposure, degrees, in a common (relatively aligned) frame.
    tolerance_arcsec : float
        Largest separation of two detections of the same star.
    min_exposures : int
        Count the exposure itself; 2 means "also seen in one other exposure".

    Returns
    -------
    list of numpy.ndarray of bool
        One mask per exposure. With a single exposure every source is kept (nothing to
        compare with).
    """
    from scipy.spatial import cKDTree

    if len(positions) < 2 or min_exposures <= 1:
        return [np.ones(np.size(ra), dtype=bool) for ra, _ in positions]
    all_ra = np.concatenate([np.asarray(ra, dtype=float) for ra, _ in positions])
    all_dec = np.concatenate([np.asarray(dec, dtype=float) for _, dec in positions])
    if all_ra.size == 0:
        return [np.zeros(0, dtype=bool) for _ in positions]
    ra0 = float(np.median(all_ra))
    dec0 = float(np.median(all_dec))
    cosd = math.cos(math.radians(dec0))

    def plane(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        return np.c_[((np.asarray(ra) - ra0 + 180.0) % 360.0 - 180.0) * cosd * 3600.0, (np.asarray(dec) - dec0) * 3600.0]

    trees = [cKDTree(plane(ra, dec)) if np.size(ra) else None for ra, dec in positions]
    masks = []
    for i, (ra, dec) in enumerate(positions):
        pts = plane(ra, dec)
        count = np.ones(len(pts), dtype=int)
        if len(pts):
            for j, tree in enumerate(trees):
                if j == i or tree is None:
                    continue
                d, _ = tree.query(pts, k=1, distance_upper_bound=tolerance_arcsec)
                count += np.isfinite(d)
        masks.append(count >= min_exposures)
    return masks
