"""runastrodriz's overlap-difference check, re-implemented FOR COMPARISON ONLY (used by
scripts/compare_verification.py; autodriz's decisions never use it)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from autodriz.verification.measure import _sky_noise

__all__ = ["runastrodriz_similarity"]


def _rebin_mean(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    sy, sx = a.shape[0] // shape[0], a.shape[1] // shape[1]
    return a[: shape[0] * sy, : shape[1] * sx].reshape(shape[0], sy, shape[1], sx).mean(axis=(1, 3))


def _legacy_compute_similarity(image: np.ndarray, reference: np.ndarray) -> float:
    """drizzlepac ``compute_similarity``: |Σ(img − ref)| / Σ img over power-of-2 rebinned windows."""
    image = np.nan_to_num(image, nan=0.0)
    reference = np.nan_to_num(reference, nan=0.0)
    minsize = min(image.shape[0], reference.shape[0], image.shape[1], reference.shape[1])
    if minsize < 2:
        return math.nan
    window_bit = math.floor(math.log2(minsize))
    window = 2**window_bit
    sim_bit = window_bit - 2 if window_bit - 2 > 6 else window_bit
    size = 2**sim_bit
    img = _rebin_mean(image[:window, :window], (size, size))
    ref = _rebin_mean(reference[:window, :window], (size, size))
    total = img.sum()
    return float(abs((img - ref).sum()) / total) if total != 0 else math.nan


def _legacy_sources(arr: np.ndarray, log_sigma: float = 3.0, nsigma: float = 4.0) -> np.ndarray:
    """drizzlepac ``detect_point_sources``: background (clipped mean + 4σ) removed, −LoG > 0."""
    v = arr[arr != 0]
    if v.size == 0 or arr.max() == 0:
        return np.zeros(arr.shape, bool)
    med, sig = _sky_noise(v)
    src = np.clip(arr - (med + nsigma * sig), 0, None)
    return (-ndimage.gaussian_laplace(src, sigma=log_sigma)) > 0


def runastrodriz_similarity(
    singles: Sequence[np.ndarray],
    combined: np.ndarray,
    weights: Sequence[np.ndarray],
    exptimes: Sequence[float],
    limit: float = 1.0,
) -> tuple[bool, list[float]]:
    """runastrodriz's overlap-difference check, RE-IMPLEMENTED here FOR COMPARISON ONLY.

    From drizzlepac 3.11 ``astrometric_utils.max_overlap_diff`` / ``evaluate_overlap_diffs``:
    per exposure, in the region where most exposures overlap, ``distance = min(hamming,
    2 * similarity)`` with ``hamming = |src(combined) XOR src(single)| / n_src(single) *
    exp_weight`` and ``similarity = |Σ(single − combined)| / Σ single``; the alignment passes
    when the largest distance is ``<= limit`` (1.0). Not used by autodriz's decisions.

    Returns
    -------
    (passed, distances)
    """
    cover = np.zeros(np.shape(combined), np.int32)
    for w in weights:
        cover += np.asarray(w) > 0
    if cover.max() <= 1:
        return True, [math.nan] * len(singles)
    max_overlap = cover == cover.max()
    min_overlap = cover > 1
    exps = np.asarray(exptimes, float)
    exp_weights = exps / exps.max()
    drz = np.nan_to_num(np.asarray(combined, float), nan=0.0)
    out = []
    for s, ew in zip(singles, exp_weights, strict=True):
        s = np.nan_to_num(np.asarray(s, float), nan=0.0)
        smask = s > 0
        if not smask.any():
            out.append(-1.0)
            continue
        ov = smask & max_overlap
        if not ov.any():
            ov = smask & min_overlap
        if not ov.any():
            out.append(-1.0)
            continue
        yr, xr = np.nonzero(ov)
        # Their slices stop one short of the maximum (slice(min, max)); kept as published.
        sl = (slice(yr.min(), yr.max()), slice(xr.min(), xr.max()))
        d_arr = (drz * ov)[sl]
        s_arr = (s * ov)[sl]
        d_src = _legacy_sources(d_arr)
        s_src = _legacy_sources(s_arr)
        n_s = int(s_src.sum())
        ham = float(np.abs(d_src.astype(int) - s_src.astype(int)).sum() / n_s * ew) if n_s else math.inf
        sim = _legacy_compute_similarity(s_arr, d_arr)
        out.append(min(ham, 2.0 * sim) if math.isfinite(sim) else ham)
    valid = [d for d in out if math.isfinite(d)]
    return (max(valid) <= limit if valid else True), out
