"""Per-tile preparation, detection, coarse offsets and per-source centroids (registration inputs)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from autodriz.centroid import windowed_centroid as _windowed_centroid
from autodriz.verification.results import Tile
from autodriz.verification.thresholds import Thresholds

logger = logging.getLogger(__name__)

_MAD_TO_SIGMA = 1.4826


# --------------------------------------------------------------------------------------------
# small robust statistics
# --------------------------------------------------------------------------------------------


def _sky_noise(values: np.ndarray, max_samples: int = 200_000) -> tuple[float, float]:
    """Sigma-clipped median and MAD-sigma of ``values`` (1-D finite), on a strided subsample."""
    if values.size == 0:
        return 0.0, 0.0
    step = max(1, values.size // max_samples)
    v = np.asarray(values[::step], dtype=np.float64)
    med = float(np.median(v))
    sig = _MAD_TO_SIGMA * float(np.median(np.abs(v - med)))
    for _ in range(3):
        if sig <= 0:
            break
        keep = np.abs(v - med) < 3.0 * sig
        if keep.sum() < 10:
            break
        med = float(np.median(v[keep]))
        sig = _MAD_TO_SIGMA * float(np.median(np.abs(v[keep] - med)))
    if not sig > 0:
        # Degenerate MAD: more than half the pixels share one value (a sky floored at 0, data
        # quantised to integers, a constant image). Use the spread of the bulk, else the
        # quantisation step, else a tiny fraction of the range, so that thresholds stay finite.
        bulk = v[v <= np.percentile(v, 99)]
        sig = float(np.std(bulk)) if bulk.size > 1 else 0.0
        if not sig > 0:
            steps = np.diff(np.unique(v[: min(v.size, 20_000)]))
            sig = float(steps.min()) / math.sqrt(12.0) if steps.size else 0.0
        if not sig > 0:
            sig = 1e-6 * max(float(np.abs(v).max()), 1e-30)
    return med, sig


def _mad_sigma(x: np.ndarray) -> float:
    if x.size == 0:
        return math.nan
    return _MAD_TO_SIGMA * float(np.median(np.abs(x - np.median(x))))


# --------------------------------------------------------------------------------------------
# per-tile preparation and source measurements
# --------------------------------------------------------------------------------------------


@dataclass
class _Prepared:
    """Sky-subtracted singles of one tile, their validity, the combination and its weights."""

    origin: tuple[int, int]
    images: list[np.ndarray]
    weights: list[np.ndarray]
    valid: list[np.ndarray]
    noise: list[float]
    wsum: np.ndarray
    combined: np.ndarray
    combined_noise: float


def _prepare_tile(tile: Tile, samples: int = 400_000) -> _Prepared:
    """Sky-subtracted copies of a tile's singles, their weighted mean and noise levels.

    Sky and noise come from about ``samples`` pixels of each image (a strided subsample).
    """
    images, weights, valid, noise = [], [], [], []
    for sci, wht in zip(tile.singles, tile.weights, strict=True):
        # Copies (the caller's arrays are never modified), then in-place work: these can be
        # 4k x 4k frames.
        img = np.array(sci, dtype=np.float32, copy=True)
        w = np.array(wht, dtype=np.float32, copy=True)
        ok = np.isfinite(img)
        ok &= np.isfinite(w)
        ok &= w > 0
        # Sky and noise from a strided subsample: a robust statistic needs no 16 M pixels.
        step = max(1, int(math.sqrt(img.size / samples)))
        sample = img[::step, ::step][ok[::step, ::step]]
        sky, sig = _sky_noise(sample) if sample.size else (0.0, 0.0)
        img -= np.float32(sky)
        img[~ok] = 0.0
        w[~ok] = 0.0
        images.append(img)
        weights.append(w)
        valid.append(ok)
        noise.append(sig)
    shape = images[0].shape if images else (0, 0)
    wsum = np.zeros(shape, np.float32)
    acc = np.zeros(shape, np.float32)
    tmp = np.empty(shape, np.float32)
    for img, w in zip(images, weights, strict=True):
        wsum += w
        np.multiply(w, img, out=tmp)
        acc += tmp
    del tmp
    covered = wsum > 0
    np.divide(acc, wsum, out=acc, where=covered)
    acc[~covered] = 0.0
    step = max(1, int(math.sqrt(acc.size / samples))) if acc.size else 1
    sample = acc[::step, ::step][covered[::step, ::step]]
    _, cnoise = _sky_noise(sample) if sample.size else (0.0, 0.0)
    return _Prepared(tile.origin, images, weights, valid, noise, wsum, acc, cnoise)


def _detect(
    prep: _Prepared, th: Thresholds, border: int, samples: int = 400_000
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Peaks of the smoothed combination (covered by ≥ 2 exposures), brightest first."""
    img = prep.combined
    if img.size == 0:
        return np.empty(0, int), np.empty(0, int), np.empty(0)
    n_cover = np.zeros(img.shape, np.int16)
    for v in prep.valid:
        n_cover += v
    # Only where at least two exposures overlap can anything be compared.
    region = n_cover >= 2
    if region.sum() < 10:
        return np.empty(0, int), np.empty(0, int), np.empty(0)
    sig = th.fwhm_px / 2.3548
    smooth = ndimage.gaussian_filter(img, sig, mode="constant")
    step = max(1, int(math.sqrt(img.size / samples)))
    sample = smooth[::step, ::step][region[::step, ::step]]
    _, snoise = _sky_noise(sample) if sample.size else (0.0, 0.0)
    if not snoise > 0:
        return np.empty(0, int), np.empty(0, int), np.empty(0)
    size = max(3, round(th.fwhm_px) * 2 + 1)
    peaks = (smooth == ndimage.maximum_filter(smooth, size=size, mode="constant")) & region
    peaks &= smooth > th.detect_nsigma * snoise
    y, x = np.nonzero(peaks)
    # Stamps must fit in the array; whether they hold data is checked per exposure later.
    ny, nx = img.shape
    inner = (y >= border) & (y < ny - border) & (x >= border) & (x < nx - border)
    y, x = y[inner], x[inner]
    val = smooth[y, x]
    order = np.argsort(val)[::-1][: th.max_sources]
    return y[order], x[order], val[order]


def _stamps(img: np.ndarray, y: np.ndarray, x: np.ndarray, r: int) -> np.ndarray:
    """(K, 2r+1, 2r+1) stamps centred on integer (y, x); callers keep r pixels from edges."""
    off = np.arange(-r, r + 1)
    yy = y[:, None, None] + off[None, :, None]
    xx = x[:, None, None] + off[None, None, :]
    return img[yy, xx]


def _masked_median(stack: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Median along axis 0 over the ``ok`` entries (0 where none); np.nanmedian is 5x slower."""
    if ok.all():
        return np.median(stack, axis=0)
    srt = np.sort(np.where(ok, stack, np.inf), axis=0)
    n = ok.sum(axis=0)
    lo = np.take_along_axis(srt, np.maximum((n - 1) // 2, 0)[None], axis=0)[0]
    hi = np.take_along_axis(srt, np.maximum(n // 2, 0)[None], axis=0)[0]
    with np.errstate(invalid="ignore"):
        med = 0.5 * (lo + hi)
    return np.where(n > 0, med, 0.0)


def _correlate_valid(images: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """Cross-correlation of each image with its own template, only where the template lies
    wholly inside the image (``scipy.signal.correlate(..., mode="valid")``), batched through
    numpy's FFT.

    The circular correlation of an image with its zero-padded template equals the linear one
    at every valid lag (no lag wraps around), so no further padding is needed. numpy's FFT
    rather than scipy.signal's: importing scipy.signal (and the scipy.stats it imports) costs
    more than all the correlations of a verification.

    Parameters
    ----------
    images : ndarray, shape (n, sy, sx)
    templates : ndarray, shape (n, ty, tx)

    Returns
    -------
    ndarray, shape (n, sy - ty + 1, sx - tx + 1)
    """
    n, sy, sx = images.shape
    ty, tx = templates.shape[1:]
    if n == 0:
        return np.empty((0, sy - ty + 1, sx - tx + 1))
    spectrum = np.fft.rfft2(images, axes=(1, 2)) * np.conj(np.fft.rfft2(templates, s=(sy, sx), axes=(1, 2)))
    return np.fft.irfft2(spectrum, s=(sy, sx), axes=(1, 2))[:, : sy - ty + 1, : sx - tx + 1]


def _coarse_votes(s_st: np.ndarray, r_st: np.ndarray, search: int, rt: int) -> np.ndarray:
    """One offset vote (dx, dy) per source stamp: the peak of its own cross-correlation.

    ``s_st`` are large stamps of the single (radius search + rt), ``r_st`` large stamps of the
    reference; the template is the reference's central (2rt+1)^2. Votes, not summed
    correlation maps: every map adds a broad background, so in a sparse field many chance pairs
    of cosmic rays (two exposures) outweigh a few stars in a sum, while their votes scatter.
    """
    big = s_st.shape[1] // 2
    c = big - rt
    votes: list[tuple[float, float]] = []
    tmpls = np.clip(r_st[:, c : c + 2 * rt + 1, c : c + 2 * rt + 1], 0, None)
    keep = tmpls.sum(axis=(1, 2)) > 0
    maps = _correlate_valid(np.clip(s_st[keep], 0, None), tmpls[keep])
    for cc in maps:
        if not cc.max() > 0:
            continue
        iy, ix = np.unravel_index(np.argmax(cc), cc.shape)
        dy, dx = float(iy - search), float(ix - search)
        # Sub-pixel by a 3-point parabola in each axis (only a starting point for the centroids).
        if 0 < iy < cc.shape[0] - 1:
            a, b, cc_ = cc[iy - 1, ix], cc[iy, ix], cc[iy + 1, ix]
            den = a - 2 * b + cc_
            if den < 0:
                dy += 0.5 * (a - cc_) / den
        if 0 < ix < cc.shape[1] - 1:
            a, b, cc_ = cc[iy, ix - 1], cc[iy, ix], cc[iy, ix + 1]
            den = a - 2 * b + cc_
            if den < 0:
                dx += 0.5 * (a - cc_) / den
        votes.append((dx, dy))
    return np.array(votes, float).reshape(-1, 2)


def _vote_mode(votes: np.ndarray, radius: float = 1.0) -> tuple[float, float, int]:
    """The offset most votes agree on within ``radius`` px: (dx, dy, number of votes).

    Ties go to the offset nearest zero: the candidate WCS claims alignment, so at equal
    evidence that claim is the simpler hypothesis.
    """
    if votes.size == 0:
        return 0.0, 0.0, 0
    d2 = ((votes[:, None, :] - votes[None, :, :]) ** 2).sum(axis=2)
    near = d2 <= radius**2
    support = near.sum(axis=1)
    best = int(np.lexsort((np.hypot(votes[:, 0], votes[:, 1]), -support))[0])
    group = near[best]
    return float(np.median(votes[group, 0])), float(np.median(votes[group, 1])), int(group.sum())


@dataclass
class _Matches:
    """Per-source measurements of one exposure against its leave-one-out reference."""

    x: list[np.ndarray] = field(default_factory=list)  # frame coordinates (reference centroid)
    y: list[np.ndarray] = field(default_factory=list)
    dx: list[np.ndarray] = field(default_factory=list)
    dy: list[np.ndarray] = field(default_factory=list)
    ex: list[np.ndarray] = field(default_factory=list)
    ey: list[np.ndarray] = field(default_factory=list)
    ratio: list[np.ndarray] = field(default_factory=list)
    pdiff: list[np.ndarray] = field(default_factory=list)
    ids: list[np.ndarray] = field(default_factory=list)  # (tile index, source index)
    coarse: list[tuple[float, float, float, int]] = field(default_factory=list)
    overlap: int = 0

    def cat(self, name: str) -> np.ndarray:
        parts = getattr(self, name)
        return np.concatenate(parts) if parts else np.empty(0)


@dataclass
class _Selection:
    """Sources of one tile usable for exposure ``i``, and how to cut reference stamps."""

    prep: _Prepared
    i: int
    sy: np.ndarray
    sx: np.ndarray
    idx: np.ndarray  # indices into the tile's detection list
    n_detected: int

    @property
    def others(self) -> list[int]:
        return [j for j in range(len(self.prep.images)) if j != self.i]

    def ref_stamps(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """(reference, single) stamps of radius ``r`` at every selected source.

        Leave-one-out reference. With three or more others, their per-pixel median: it ignores
        cosmic rays and, when another exposure is the misregistered one, keeps the blame on that
        exposure instead of sharing it out. With one or two, the weighted mean
        (W·comb − w_i·s_i) / (W − w_i).
        """
        prep, sy, sx = self.prep, self.sy, self.sx
        img_i, w_i = prep.images[self.i], prep.weights[self.i]
        si = _stamps(img_i, sy, sx, r)
        others = self.others
        if len(others) >= 3:
            st = np.stack([_stamps(prep.images[j], sy, sx, r) for j in others])
            ok = np.stack([_stamps(prep.valid[j], sy, sx, r) for j in others])
            return _masked_median(st, ok), si
        wt = _stamps(prep.wsum, sy, sx, r)
        wi = _stamps(w_i, sy, sx, r)
        cm = _stamps(prep.combined, sy, sx, r)
        wo = wt - wi
        with np.errstate(invalid="ignore", divide="ignore"):
            ref = np.where(wo > 0, (wt * cm - wi * si) / wo, 0.0)
        return ref, si


def _aperture(th: Thresholds) -> tuple[int, np.ndarray]:
    rc = max(3, math.ceil(2.0 * th.fwhm_px) + 1)
    g = np.arange(-rc, rc + 1)
    rr2 = g[None, :] ** 2 + g[:, None] ** 2
    return rc, rr2 <= (1.5 * th.fwhm_px) ** 2


def _select(prep: _Prepared, i: int, sy: np.ndarray, sx: np.ndarray, th: Thresholds) -> _Selection | None:
    """Detected sources whose stamps fit and whose aperture is covered in single ``i`` and the others."""
    w_o = prep.wsum - prep.weights[i]
    overlap = prep.valid[i] & (w_o > 0)
    if sx.size == 0 or overlap.sum() < th.min_overlap_pixels:
        return None
    search = th.max_search_px
    rt = max(2, math.ceil(1.5 * th.fwhm_px))
    rc, ap = _aperture(th)
    # Only sources whose search stamp, and centroid stamp moved by up to the search range, lie
    # inside the array (coverage is checked on the aperture below).
    margin = search + max(rt, rc) + 1
    ny, nx = overlap.shape
    inside = (sy >= margin) & (sy < ny - margin) & (sx >= margin) & (sx < nx - margin)
    sy, sx, idx = sy[inside], sx[inside], np.nonzero(inside)[0]
    if sx.size == 0:
        return None
    # The aperture must be covered in both images; beyond it, holes (DQ-flagged pixels) read as
    # sky (0 after sky subtraction), which barely moves a windowed centroid.
    full = (_stamps(overlap, sy, sx, rc) | ~ap).all(axis=(1, 2))
    n_detected = sx.size
    sy, sx, idx = sy[full], sx[full], idx[full]
    if sx.size == 0:
        return None
    return _Selection(prep, i, sy, sx, idx, n_detected)


def _coarse_offset_votes(sel: _Selection | None, th: Thresholds, n_brightest: int = 60) -> np.ndarray:
    """Offset votes of the brightest selected sources that the reference confirms.

    A source whose reference aperture is not significant (a cosmic ray in the single only)
    has nothing to correlate with and would vote at random.
    """
    if sel is None:
        return np.empty((0, 2))
    search = th.max_search_px
    rt = max(2, math.ceil(1.5 * th.fwhm_px))
    big = search + rt
    nb = min(n_brightest, sel.sx.size)  # the detection list is brightest first
    sub = _Selection(sel.prep, sel.i, sel.sy[:nb], sel.sx[:nb], sel.idx[:nb], sel.n_detected)
    ref_big, s_big = sub.ref_stamps(big)
    rc, ap = _aperture(th)
    centre = ref_big[:, big - rc : big + rc + 1, big - rc : big + rc + 1]
    others = sel.others
    noise = float(np.sqrt(np.mean([sel.prep.noise[j] ** 2 for j in others])))
    nother = len(others) / (1.57 if len(others) >= 3 else 1.0)
    snr = (centre * ap).sum(axis=(1, 2)) / (noise / math.sqrt(nother) * math.sqrt(ap.sum()) or 1.0)
    confirmed = snr >= th.min_snr
    return _coarse_votes(s_big[confirmed], ref_big[confirmed], search, rt)


@dataclass
class _Cut:
    """Stamps of one tile's selected sources for exposure ``i``, ready to be centroided."""

    sel: _Selection
    tile_index: int
    shift: tuple[int, int]  # integer part of the coarse offset (x, y)
    ref_st: np.ndarray
    s_st: np.ndarray
    var_r: np.ndarray
    var_s: np.ndarray


def _cut_exposure(
    sel: _Selection | None, th: Thresholds, exptime: float, tile_index: int, coarse: tuple[float, float]
) -> _Cut | None:
    """Reference and single stamps of the selected sources, the single's moved by ``coarse``.

    ``coarse`` is the offset of the single found by the votes; its integer part moves the
    single's stamps, windowed centroids refine the rest (:func:`_measure_cuts`).
    """
    if sel is None:
        return None
    prep, i, sy, sx = sel.prep, sel.i, sel.sy, sel.sx
    rc, _ = _aperture(th)
    ref_st, _ = sel.ref_stamps(rc)
    ix, iy = round(coarse[0]), round(coarse[1])
    s_st = _stamps(prep.images[i], sy + iy, sx + ix, rc)
    # Noise per pixel: sky noise plus Poisson of the source in count rates (electrons/exptime).
    var_s = prep.noise[i] ** 2 + np.clip(s_st, 0, None) / max(exptime, 1e-3)
    others = sel.others
    others_noise = float(np.sqrt(np.mean([prep.noise[j] ** 2 for j in others])))
    # Variance of the others' mean; a median of three or more is ~1.25x noisier in sigma.
    nother = len(others) / (1.57 if len(others) >= 3 else 1.0)
    var_r = others_noise**2 / nother + np.clip(ref_st, 0, None) / max(exptime * nother, 1e-3)
    return _Cut(sel, tile_index, (ix, iy), ref_st, s_st, var_r, var_s)


def _measure_cuts(cuts: list[_Cut | None], th: Thresholds, out: _Matches) -> None:
    """Centroids of every tile's cut sources in the single and in the others' combination.

    The windowed centroids of all tiles are computed in one batch (per-call overhead dominates
    when there are many small tiles); the flux cuts stay per tile.
    """
    cuts = [c for c in cuts if c is not None]
    if not cuts:
        return
    rc, ap = _aperture(th)
    sigma_w = th.fwhm_px / 2.3548
    ref_all = np.concatenate([c.ref_st for c in cuts])
    zeros = np.zeros(ref_all.shape[0])
    xr_all, yr_all, exr_all, eyr_all, okr_all = _windowed_centroid(
        ref_all, np.concatenate([c.var_r for c in cuts]), zeros, zeros, sigma_w
    )
    # The single starts where the reference converged, in its stamp moved by the integer coarse
    # offset: the sub-pixel rest is well inside the window's capture range, and identical
    # images then give identical centroids.
    xs_all, ys_all, exs_all, eys_all, oks_all = _windowed_centroid(
        np.concatenate([c.s_st for c in cuts]), np.concatenate([c.var_s for c in cuts]), xr_all, yr_all, sigma_w
    )
    lo, hi = th.flux_ratio_range
    floor2 = th.centroid_floor_px**2
    start = 0
    for cut in cuts:
        n = cut.ref_st.shape[0]
        part = slice(start, start + n)
        start += n
        xr, yr, exr, eyr, okr = xr_all[part], yr_all[part], exr_all[part], eyr_all[part], okr_all[part]
        xs, ys, exs, eys, oks = xs_all[part], ys_all[part], exs_all[part], eys_all[part], oks_all[part]
        sel, ref_st, s_st = cut.sel, cut.ref_st, cut.s_st
        prep, i, sy, sx, idx = sel.prep, sel.i, sel.sy, sel.sx, sel.idx
        ix, iy = cut.shift
        # Aperture fluxes and S/N (count rates): must be significant and consistent in both images.
        fs = (s_st * ap).sum(axis=(1, 2))
        fr = (ref_st * ap).sum(axis=(1, 2))
        es = np.sqrt((cut.var_s * ap).sum(axis=(1, 2)))
        er = np.sqrt((cut.var_r * ap).sum(axis=(1, 2)))
        with np.errstate(invalid="ignore", divide="ignore"):
            snr_s = fs / es
            snr_r = fr / er
            ratio = fs / fr
        bright = okr & oks & (snr_s >= th.min_snr) & (snr_r >= th.min_snr) & np.isfinite(ratio)
        # Relative to the tile's median ratio, so that a global flux scale (an exposure-time or
        # photometric mismatch) is not mistaken for cosmic rays.
        typical = float(np.median(ratio[bright])) if bright.any() else 1.0
        if not typical > 0:
            typical = 1.0
        keep = bright & (ratio >= lo * typical) & (ratio <= hi * typical)
        logger.debug(
            "exposure %d, tile origin %s: %d peaks, %d with covered apertures, %d centroided in both, "
            "%d bright enough, %d with consistent flux (median ratio %.3f)",
            i, prep.origin, sel.n_detected, sx.size, int((okr & oks).sum()), int(bright.sum()), int(keep.sum()),
            typical,
        )
        if not keep.any():
            continue
        # Normalised profile difference on the raw pixels at the reference's position (no shift
        # applied, so that it sees the offset), in the aperture.
        s_raw = _stamps(prep.images[i], sy, sx, rc) if (ix or iy) else s_st
        fs_raw = (s_raw * ap).sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            pdiff = 0.5 * np.abs(s_raw * ap / fs_raw[:, None, None] - ref_st * ap / fr[:, None, None]).sum(axis=(1, 2))
        ox, oy = prep.origin
        out.x.append((sx + xr + ox)[keep])
        out.y.append((sy + yr + oy)[keep])
        out.dx.append((xs + ix - xr)[keep])
        out.dy.append((ys + iy - yr)[keep])
        out.ex.append(np.sqrt(exs**2 + exr**2 + floor2)[keep])
        out.ey.append(np.sqrt(eys**2 + eyr**2 + floor2)[keep])
        out.ratio.append(ratio[keep])
        out.pdiff.append(pdiff[keep])
        out.ids.append(np.column_stack([np.full(keep.sum(), cut.tile_index), idx[keep]]))
