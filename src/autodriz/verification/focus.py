"""Focus index: is the combination as sharp as its single drizzles?"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from autodriz.verification.measure import _stamps
from autodriz.verification.results import FocusResult
from autodriz.verification.thresholds import FAIL, PASS, UNVERIFIED


def _focus_values(stamps: np.ndarray, sigma: float, r_ap: float) -> np.ndarray:
    """−min(LoG) near the centre per unit aperture flux, for each stamp (K, n, n)."""
    data = stamps.astype(np.float64)
    # The Laplacian over the two image axes only (gaussian_laplace with sigma 0 on the stack
    # axis would add the data itself: a zero-width filter is the identity, not a derivative).
    log = ndimage.gaussian_filter(data, sigma=(0, sigma, sigma), order=(0, 2, 0), mode="nearest")
    log += ndimage.gaussian_filter(data, sigma=(0, sigma, sigma), order=(0, 0, 2), mode="nearest")
    n = stamps.shape[1]
    c = n // 2
    core = log[:, c - 1 : c + 2, c - 1 : c + 2].min(axis=(1, 2))
    g = np.arange(n) - c
    ap = (g[None, :] ** 2 + g[:, None] ** 2) <= r_ap**2
    flux = (stamps * ap).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(flux > 0, -core / flux, np.nan)


def focus_index(
    combined: Sequence[np.ndarray],
    singles: Sequence[Sequence[np.ndarray]],
    positions: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    offsets: Sequence[tuple[int, int]] | None = None,
    sigma: float,
    min_z: float,
    std_floor: float = 0.02,
    min_sources: int = 3,
) -> FocusResult:
    """Focus index of a combination against its single drizzles, at given source positions.

    Parameters
    ----------
    combined : sequence of 2-D arrays
        The combination, one array per tile (sky-subtracted).
    singles : sequence (per exposure) of sequences (per tile) of 2-D arrays
        The single drizzles (sky-subtracted, count rates).
    positions : sequence of (y, x) integer arrays, one per tile
        Confirmed sources (present in every single), brightest first, in the combination.
    offsets : sequence of (int, int), optional
        Per exposure, the (dx, dy) pixel offset of its sources from ``positions`` (its measured
        registration, rounded), so that a single's sharpness is measured on its own sources.
    sigma : float
        LoG sigma (1.5 px; 2.0 for WFC3/IR and ACS/SBC).
    min_z : float
        Pass limit of the z-score.
    std_floor : float
        Floor of the singles' spread as a fraction of their mean.
    min_sources : int
        Fewer confirmed sources make the result ``unverified``.

    Returns
    -------
    FocusResult
    """
    r = math.ceil(4 * sigma) + 2
    r_ap = 3.0 * sigma
    offsets = list(offsets) if offsets is not None else [(0, 0)] * len(singles)
    pad = r + max([max(abs(a), abs(b)) for a, b in offsets] + [0])
    comb_vals: list[np.ndarray] = []
    single_vals: list[list[np.ndarray]] = [[] for _ in singles]
    n = 0
    for t, (py, px) in enumerate(positions):
        img = combined[t]
        ny, nx = img.shape
        ok = (py >= pad) & (py < ny - pad) & (px >= pad) & (px < nx - pad)
        py, px = py[ok], px[ok]
        if py.size == 0:
            continue
        n += py.size
        comb_vals.append(_focus_values(_stamps(img, py, px, r), sigma, r_ap))
        for k, per_tile in enumerate(singles):
            ox, oy = offsets[k]
            single_vals[k].append(_focus_values(_stamps(np.asarray(per_tile[t]), py + oy, px + ox, r), sigma, r_ap))
    if n < min_sources or len(singles) < 2:
        why = "fewer than 2 exposures" if len(singles) < 2 else f"only {n} confirmed sources (< {min_sources})"
        return FocusResult(UNVERIFIED, f"focus index not measured: {why}", sigma_px=sigma, min_z=min_z, n_sources=n)
    comb = np.concatenate(comb_vals)
    good = np.isfinite(comb)
    singles_arr = [np.concatenate(v) for v in single_vals]
    for v in singles_arr:
        good &= np.isfinite(v)
    if good.sum() < min_sources:
        return FocusResult(
            UNVERIFIED, "focus index not measured: sources have no positive flux",
            sigma_px=sigma, min_z=min_z, n_sources=int(good.sum()),
        )
    fc = float(np.median(comb[good]))
    fs = tuple(float(np.median(v[good])) for v in singles_arr)
    mean = float(np.mean(fs))
    std = float(np.std(fs, ddof=1)) if len(fs) > 1 else 0.0
    spread = max(std, std_floor * abs(mean))
    z = (fc - mean) / spread if spread > 0 else 0.0
    status = PASS if z >= min_z else FAIL
    reason = (
        f"combination {'as sharp as' if status == PASS else 'blurrer than'} its singles: "
        f"z = {z:+.2f} ({'>=' if status == PASS else '<'} {min_z})"
    )
    return FocusResult(status, reason, sigma, fc, fs, mean, std, float(z), min_z, int(good.sum()))
