"""Registration of one exposure: consensus of the matched sources, transform fit, decision."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from autodriz.verification.measure import _MAD_TO_SIGMA, _mad_sigma, _Matches, _Prepared
from autodriz.verification.results import SimilarityResult
from autodriz.verification.thresholds import FAIL, PASS, UNVERIFIED, Thresholds

logger = logging.getLogger(__name__)


def _consensus(x: np.ndarray, y: np.ndarray, dx: np.ndarray, dy: np.ndarray, radius: float) -> np.ndarray:
    """Mask of the matched sources that move together.

    With two exposures nothing tells a cosmic ray from a star, and in a sparse field chance
    pairs of cosmic rays (one in each image, a few pixels apart, similar counts) can outnumber
    the stars; their offsets scatter over the whole search box while real sources share one
    offset (up to a small rotation/scale). So: take the offset with the most neighbours within
    ``radius``, then grow the group with a shift + rotation + scale fitted to it, re-admitting
    every source whose offset the model predicts within ``radius``.
    """
    n = dx.size
    if n == 0:
        return np.zeros(0, bool)
    d2 = (dx[:, None] - dx[None, :]) ** 2 + (dy[:, None] - dy[None, :]) ** 2
    close = d2 <= radius**2
    support = close.sum(axis=1)
    # Among equally supported seeds, the one whose neighbours are tightest.
    spread = np.where(close, d2, 0.0).sum(axis=1)
    seed = int(np.lexsort((spread, -support))[0])
    keep = close[seed].copy()
    for _ in range(5):
        xk, yk = x[keep], y[keep]
        xc, yc = float(xk.mean()), float(yk.mean())
        span = float(np.sqrt(np.mean((xk - xc) ** 2 + (yk - yc) ** 2)))
        m = int(keep.sum())
        if m >= 4 and span > 50.0:
            ones, zeros = np.ones(m), np.zeros(m)
            a = np.vstack([
                np.column_stack([ones, zeros, xk - xc, -(yk - yc)]),
                np.column_stack([zeros, ones, yk - yc, xk - xc]),
            ])
            p, *_ = np.linalg.lstsq(a, np.concatenate([dx[keep], dy[keep]]), rcond=None)
        else:
            p = np.array([np.median(dx[keep]), np.median(dy[keep]), 0.0, 0.0])
        mx = p[0] + p[2] * (x - xc) - p[3] * (y - yc)
        my = p[1] + p[3] * (x - xc) + p[2] * (y - yc)
        new_keep = np.hypot(dx - mx, dy - my) <= radius
        if new_keep.sum() < keep.sum() or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return keep


#: Rotation + scale of a registration fit count only above this chi-square (2 dof: 2 sigma).
_ROTATION_SCALE_CHI2 = 6.18


def _fit_transform(
    x: np.ndarray, y: np.ndarray, dx: np.ndarray, dy: np.ndarray, ex: np.ndarray, ey: np.ndarray, clip: float,
    shift_only: bool = False,
) -> dict[str, Any]:
    """Weighted fit of ``(dx, dy) = shift + [[a, -b], [b, a]] @ (x - xc, y - yc)`` with clipping.

    Falls back to a shift only when the sources span too little to constrain a rotation, or
    when ``shift_only``.
    Returns the parameters, covariance, the kept mask and the largest displacement (and its
    error) over the corners of the kept sources' bounding box.
    """
    n = x.size
    keep = np.ones(n, bool)
    params = np.zeros(4)
    cov = np.full((4, 4), np.nan)
    xc, yc = float(np.average(x, weights=1 / ex**2)), float(np.average(y, weights=1 / ey**2))
    for _ in range(6):
        xk, yk = x[keep] - xc, y[keep] - yc
        span = float(np.sqrt(np.mean(xk**2 + yk**2))) if keep.any() else 0.0
        # Rotation and scale only when enough sources spread far enough to constrain them.
        full_model = not shift_only and keep.sum() >= 10 and span > 50.0
        ones, zeros = np.ones(keep.sum()), np.zeros(keep.sum())
        if full_model:
            ax = np.column_stack([ones, zeros, xk, -yk])
            ay = np.column_stack([zeros, ones, yk, xk])
        else:
            ax = np.column_stack([ones, zeros])
            ay = np.column_stack([zeros, ones])
        a = np.vstack([ax / ex[keep, None], ay / ey[keep, None]])
        b = np.concatenate([dx[keep] / ex[keep], dy[keep] / ey[keep]])
        sol, *_ = np.linalg.lstsq(a, b, rcond=None)
        resid = b - a @ sol
        dof = max(1, b.size - sol.size)
        chi2r = float(resid @ resid / dof)
        try:
            c = np.linalg.inv(a.T @ a) * max(1.0, chi2r)
        except np.linalg.LinAlgError:
            c = np.full((sol.size, sol.size), np.nan)
        p = np.zeros(4)
        p[: sol.size] = sol
        cv = np.zeros((4, 4))
        cv[: sol.size, : sol.size] = c
        params, cov = p, cv
        # Normalised residuals of every source (kept or not), clipped in robust sigma.
        mx = p[0] + p[2] * (x - xc) - p[3] * (y - yc)
        my = p[1] + p[3] * (x - xc) + p[2] * (y - yc)
        rn = np.hypot((dx - mx) / ex, (dy - my) / ey)
        scale = _MAD_TO_SIGMA * float(np.median(rn[keep])) / 1.1774  # median of a 2-D |N(0,1)| is 1.1774
        scale = max(scale, 1.0)
        new_keep = rn < clip * scale
        if new_keep.sum() < 3 or np.array_equal(new_keep, keep):
            keep = new_keep if new_keep.sum() >= 3 else keep
            break
        keep = new_keep
    # Worst displacement over the kept sources' bounding box (corners) and the centre.
    xk, yk = x[keep] - xc, y[keep] - yc
    pts = [(0.0, 0.0)]
    if keep.any():
        pts += [(float(px), float(py)) for px in (xk.min(), xk.max()) for py in (yk.min(), yk.max())]
    worst, worst_err = 0.0, 0.0
    for px, py in pts:
        jx = np.array([1.0, 0.0, px, -py])
        jy = np.array([0.0, 1.0, py, px])
        mx, my = float(jx @ params), float(jy @ params)
        d = math.hypot(mx, my)
        if d >= worst:
            # Error of |d| along the displacement direction (or of x if d = 0).
            u = np.array([mx, my]) / d if d > 0 else np.array([1.0, 0.0])
            j = u[0] * jx + u[1] * jy
            var = float(j @ cov @ j)
            worst, worst_err = d, math.sqrt(var) if var > 0 else 0.0
    # Joint significance of rotation and scale (chi-square, 2 dof; 0 for a shift-only fit).
    rs = params[2:]
    try:
        rs_chi2 = float(rs @ np.linalg.solve(cov[2:, 2:], rs)) if np.any(rs) else 0.0
    except np.linalg.LinAlgError:
        rs_chi2 = math.inf
    return {"params": params, "cov": cov, "keep": keep, "center": (xc, yc), "worst": worst, "worst_err": worst_err,
            "rotation_scale_chi2": rs_chi2 if math.isfinite(rs_chi2) else math.inf}


def _xcorr_fallback(preps: Sequence[_Prepared], i: int, th: Thresholds) -> tuple[float, float, float] | None:
    """Cross-correlation of single ``i`` with the others over the overlap (few sources).

    Returns (dx, dy, peak significance) from the tile with the largest overlap, or None.
    """
    best = None
    for prep in preps:
        w_o = prep.wsum - prep.weights[i]
        ov = prep.valid[i] & (w_o > 0)
        if ov.sum() < th.min_overlap_pixels:
            continue
        if best is None or ov.sum() > best[1].sum():
            best = (prep, ov, w_o)
    if best is None:
        return None
    prep, ov, w_o = best
    ys, xs = np.nonzero(ov)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    s = np.where(ov, prep.images[i], 0.0)[y0:y1, x0:x1]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(ov, (prep.wsum * prep.combined - prep.weights[i] * prep.images[i]) / w_o, 0.0)[y0:y1, x0:x1]
    # Clip at a few sigma below and a bright level above: CRs and saturated cores must not dominate.
    ns = prep.noise[i] or 1.0
    s = np.clip(s, -3 * ns, 50 * ns)
    r = np.clip(r, -3 * ns, 50 * ns)
    if s.shape[0] < 8 or s.shape[1] < 8:
        return None
    from scipy import signal  # imported when needed: see autodriz.verification.measure._coarse_votes

    cc = signal.fftconvolve(s, r[::-1, ::-1], mode="same")
    cy, cx = (s.shape[0]) // 2, (s.shape[1]) // 2
    m = th.max_search_px
    win = cc[max(cy - m, 0) : cy + m + 1, max(cx - m, 0) : cx + m + 1]
    if not np.isfinite(win).all() or win.size < 9:
        return None
    iy, ix = np.unravel_index(np.argmax(win), win.shape)
    sig = _mad_sigma(win.ravel())
    signif = float((win.max() - np.median(win)) / sig) if sig > 0 else 0.0
    dy = float(iy + max(cy - m, 0) - cy)
    dx = float(ix + max(cx - m, 0) - cx)
    if 0 < iy < win.shape[0] - 1:
        a, b, c = win[iy - 1, ix], win[iy, ix], win[iy + 1, ix]
        if a - 2 * b + c < 0:
            dy += 0.5 * (a - c) / (a - 2 * b + c)
    if 0 < ix < win.shape[1] - 1:
        a, b, c = win[iy, ix - 1], win[iy, ix], win[iy, ix + 1]
        if a - 2 * b + c < 0:
            dx += 0.5 * (a - c) / (a - 2 * b + c)
    return dx, dy, signif


def _similarity_from_matches(
    name: str, m: _Matches, th: Thresholds, exptime: float, preps: Sequence[_Prepared], i: int,
    pixel_scale_mas: float | None,
) -> tuple[SimilarityResult, np.ndarray]:
    """Decide one exposure from its matched sources (or the cross-correlation fallback)."""
    base = {
        "name": name, "exptime": exptime, "overlap_pixels": m.overlap,
        "max_offset_px": th.max_offset_px, "max_profile_diff": th.max_profile_diff,
    }
    to_mas = (lambda v: v * pixel_scale_mas) if pixel_scale_mas else (lambda v: math.nan)
    if m.overlap < th.min_overlap_pixels:
        return SimilarityResult(
            status=UNVERIFIED, reason=f"no usable overlap with the other exposures ({m.overlap} px)", **base
        ), np.empty((0, 2), int)
    x, y, dx, dy, ex, ey = (m.cat(k) for k in ("x", "y", "dx", "dy", "ex", "ey"))
    together = _consensus(x, y, dx, dy, th.consensus_radius_px)
    if together.sum() < x.size:
        logger.debug(
            "%s: %d of %d matched sources move together; the others are chance pairs (cosmic rays)",
            name, int(together.sum()), x.size,
        )
    if together.sum() >= th.min_sources:
        x, y, dx, dy, ex, ey = (a[together] for a in (x, y, dx, dy, ex, ey))
        fit = _fit_transform(x, y, dx, dy, ex, ey, th.clip_nsigma)
        off, off_err = fit["worst"], fit["worst_err"]
        err = off_err if math.isfinite(off_err) else 0.0
        model_note = ""
        if (th.max_offset_px < off and off - th.offset_nsigma * err <= th.max_offset_px
                and 0.0 < fit["rotation_scale_chi2"] < _ROTATION_SCALE_CHI2):
            # Undecided only because a rotation and scale that the sources do not show (jointly
            # below 2 sigma) are extrapolated to the field's corners, as with a few dozen faint,
            # quantised WFC3/IR sources (issue 25): decide on the shift the sources do measure.
            model_note = (f" (shift only: rotation and scale not significant, chi2 {fit['rotation_scale_chi2']:.1f} "
                          f"< {_ROTATION_SCALE_CHI2}; with them {off:.3f} ± {err:.3f} px)")
            fit = _fit_transform(x, y, dx, dy, ex, ey, th.clip_nsigma, shift_only=True)
            off, off_err = fit["worst"], fit["worst_err"]
            err = off_err if math.isfinite(off_err) else 0.0
        keep = fit["keep"]
        p = fit["params"]
        pd = float(np.median(m.cat("pdiff")[together][keep]))
        ratio = float(np.median(m.cat("ratio")[together][keep]))
        fails, doubts = [], []
        if off - th.offset_nsigma * err > th.max_offset_px:
            fails.append(f"offset {off:.3f} ± {err:.3f} px > {th.max_offset_px}")
        elif off > th.max_offset_px:
            # Few sources: rotation and scale extrapolated to the field's corners are noisy.
            doubts.append(
                f"offset {off:.3f} ± {err:.3f} px above {th.max_offset_px} by less than {th.offset_nsigma:g} sigma"
            )
        if pd > th.max_profile_diff:
            fails.append(f"profile difference {pd:.3f} > {th.max_profile_diff}")
        status = FAIL if fails else UNVERIFIED if doubts else PASS
        reason = "; ".join(fails or doubts) or (
            f"offset {off:.3f} ± {err:.3f} px <= {th.max_offset_px}, profile difference {pd:.3f}"
        )
        reason += model_note
        res = SimilarityResult(
            status=status, reason=reason, method="sources", offset_px=off, offset_err_px=off_err,
            dx_px=float(p[0]), dy_px=float(p[1]), rotation_deg=math.degrees(float(p[3])),
            scale_ppm=float(p[2]) * 1e6, profile_diff=pd, flux_ratio=ratio, n_sources=int(keep.sum()),
            offset_mas=to_mas(off), **base,
        )
        return res, m.cat("ids").reshape(-1, 2)[together][keep].astype(int)
    # Few sources: cross-correlation of the whole overlap.
    n_together = int(together.sum())
    few = f"{n_together} matched sources moving together" + (f" (of {x.size})" if x.size > n_together else "")
    xc = _xcorr_fallback(preps, i, th)
    if xc is None or xc[2] < 5.0:
        why = "no significant cross-correlation peak" if xc is not None else "overlap too small"
        return SimilarityResult(
            status=UNVERIFIED,
            reason=f"registration not measurable: {few} (< {th.min_sources}) and {why}",
            n_sources=n_together, **base,
        ), np.empty((0, 2), int)
    off = math.hypot(xc[0], xc[1])
    if off <= th.max_offset_px:
        status, cmp = PASS, f"<= {th.max_offset_px}"
    elif off > max(th.xcorr_fail_px, th.max_offset_px):
        status, cmp = FAIL, f"> {max(th.xcorr_fail_px, th.max_offset_px)}"
    else:
        status, cmp = UNVERIFIED, f"between {th.max_offset_px} and {th.xcorr_fail_px}, too coarse to decide"
    reason = f"cross-correlation offset {off:.3f} px {cmp} ({few}, too few for a fit)"
    return SimilarityResult(
        status=status, reason=reason, method="cross-correlation", offset_px=off, dx_px=float(xc[0]), dy_px=float(xc[1]),
        n_sources=n_together, offset_mas=to_mas(off), **base,
    ), np.empty((0, 2), int)
