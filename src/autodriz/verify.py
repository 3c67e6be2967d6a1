"""Image-based verification of an alignment: registration (similarity) index and focus index.

Pure functions: drizzled arrays in, dataclasses out. No files, no drizzling (that is
:mod:`autodriz.verifydriz`).

Why not runastrodriz's checks
-----------------------------
runastrodriz's similarity index is ``|sum(single - combined)| / sum(single)``: a *flux* ratio.
A shifted exposure keeps its flux, so the index reads ~0 whatever the shift; its Hamming term is
then cancelled by ``min(hamming, 2 * sim)``. Its focus check compares global LoG maxima, which
cosmic rays dominate, and it is only evaluated in rare branches. Here:

* **Registration index** (:class:`SimilarityResult`), per exposure *i*: the single drizzle of
  *i* is compared with the exposure-time weighted mean of the *other* exposures (leave-one-out,
  so that a misregistered exposure cannot partly match itself), on the same output frame, in
  count rates (so exposure time does not matter) and after removing each image's own sky.
  Sources are detected in the combined image; a stacked cross-correlation around the brightest
  of them gives a coarse offset (robust to shifts of many pixels); windowed centroids then
  measure each source in both images, and a shift + rotation + scale is fitted to the
  per-source offsets with outlier rejection. A source must appear in *both* images with
  consistent flux, so unflagged cosmic rays (present in one image only) are not matched, and a
  cosmic ray on a star only makes one outlier. The index is the largest displacement the fitted
  transform makes over the matched sources' extent, in output pixels: it responds to shifts and
  rotations, not to flux. A normalised profile difference (median over sources of
  ``0.5 * sum|S/sum(S) - R/sum(R)|``) is reported beside it as a flux-independent check of the
  raw pixels. With too few sources the stacked cross-correlation of the whole overlap is used.
* **Focus index** (:class:`FocusResult`): the peak Laplacian-of-Gaussian response at the
  brightest sources confirmed in every exposure, per unit source flux (so CRs, which are not
  confirmed, and brightness do not enter), median over sources, for the combined image and for
  every single drizzle. A well-aligned combination is as sharp as its singles; the index is the
  z-score of the combination against the singles' distribution.

Statuses: ``"pass"``, ``"fail"``, or ``"unverified"`` when the data cannot tell (one exposure,
no overlap, no sources). An image check can refute an alignment, never prove an absolute one:
a common error of every exposure is invisible to it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from autodriz.verification.focus import focus_index
from autodriz.verification.measure import (
    _coarse_offset_votes,
    _cut_exposure,
    _detect,
    _Matches,
    _measure_cuts,
    _prepare_tile,
    _select,
    _vote_mode,
)
from autodriz.verification.registration import _similarity_from_matches
from autodriz.verification.results import FocusResult, SimilarityResult, Tile, VerificationResult
from autodriz.verification.thresholds import FAIL, PASS, UNVERIFIED, VERIFY_FILE_NAME, Thresholds, load_thresholds

logger = logging.getLogger(__name__)

# The public names of verification, importable from here as before the split into
# autodriz.verification (callers and reports use ``autodriz.verify``).
__all__ = [
    "FAIL",
    "PASS",
    "UNVERIFIED",
    "VERIFY_FILE_NAME",
    "FocusResult",
    "SimilarityResult",
    "Thresholds",
    "Tile",
    "VerificationResult",
    "focus_index",
    "load_thresholds",
    "verify_arrays",
    "verify_tiles",
]


def verify_tiles(
    tiles: Sequence[Tile],
    *,
    names: Sequence[str] | None = None,
    exptimes: Sequence[float] | None = None,
    thresholds: Thresholds | None = None,
    pixel_scale_arcsec: float | None = None,
    sparse: bool = False,
) -> VerificationResult:
    """Registration and focus indices of N exposures drizzled onto one common frame.

    Parameters
    ----------
    tiles : sequence of Tile
        The data rectangles of the common frame; every tile holds all N exposures.
    names : sequence of str, optional
        Exposure names (default ``exp0``, ``exp1`` …).
    exptimes : sequence of float, optional
        Exposure times (seconds), for the Poisson part of the centroid errors; default 1.
    thresholds : Thresholds, optional
        Default: ``Thresholds()``.
    pixel_scale_arcsec : float, optional
        Output pixel scale, to report offsets in mas as well.
    sparse : bool
        The tiles are small squares around stars (:func:`autodriz.verification.singles.source_frame`):
        ``max_sources`` and the sky samples are shared by all tiles instead of given to each.

    Returns
    -------
    VerificationResult
        Never raises for data problems (NaNs, empty or non-overlapping exposures): those give
        ``unverified`` results with a reason.
    """
    th = thresholds or Thresholds()
    tiles = list(tiles)
    n_exp = len(tiles[0].singles) if tiles else 0
    names = list(names) if names is not None else [f"exp{i}" for i in range(n_exp)]
    exptimes = [float(e) for e in exptimes] if exptimes is not None else [1.0] * n_exp
    thr = th.as_dict()
    if n_exp < 2:
        focus = FocusResult(UNVERIFIED, "one exposure: nothing to compare", sigma_px=th.log_sigma_px, min_z=th.min_focus_z)
        sims = tuple(
            SimilarityResult(n, UNVERIFIED, "one exposure: nothing to compare", exptime=e,
                             max_offset_px=th.max_offset_px, max_profile_diff=th.max_profile_diff)
            for n, e in zip(names, exptimes, strict=False)
        )
        return VerificationResult(UNVERIFIED, "one exposure: relative alignment cannot be checked", focus, sims, thr)
    if len(names) != n_exp or len(exptimes) != n_exp or any(len(t.singles) != n_exp or len(t.weights) != n_exp for t in tiles):
        raise ValueError("every tile needs one single and one weight map per exposure, matching names/exptimes")

    samples = max(20_000, 400_000 // len(tiles)) if sparse else 400_000
    preps = [_prepare_tile(t, samples) for t in tiles]
    search = th.max_search_px
    rt = max(2, math.ceil(1.5 * th.fwhm_px))
    border = max(search + rt, math.ceil(4 * th.log_sigma_px) + 3)
    detections = [_detect(p, th, border=border, samples=samples) for p in preps]
    if sparse:
        detections = _brightest_overall(detections, th.max_sources)
    matches = [_Matches() for _ in range(n_exp)]
    for i in range(n_exp):
        sels = [_select(prep, i, sy, sx, th) for prep, (sy, sx, _) in zip(preps, detections, strict=True)]
        votes = [_coarse_offset_votes(sel, th) for sel in sels]
        pooled = _vote_mode(np.concatenate(votes))
        cuts = []
        for t, (prep, sel) in enumerate(zip(preps, sels, strict=True)):
            matches[i].overlap += int((prep.valid[i] & (prep.wsum - prep.weights[i] > 0)).sum())
            # A tile's own offset when enough of its sources agree on it (it may differ from the
            # others' by a rotation); otherwise the offset all tiles vote for: a sparse tile's
            # few stars can be outvoted by chance pairs of cosmic rays.
            own = _vote_mode(votes[t])
            coarse = own if own[2] >= th.min_sources else pooled
            matches[i].coarse.append(coarse[:2] + (own[2], len(votes[t])))
            cuts.append(_cut_exposure(sel, th, exptimes[i], t, coarse[:2]))
        _measure_cuts(cuts, th, matches[i])
    sims: list[SimilarityResult] = []
    used: list[set[tuple[int, int]]] = []
    for i in range(n_exp):
        res, ids = _similarity_from_matches(
            names[i], matches[i], th, exptimes[i], preps, i,
            pixel_scale_arcsec * 1000.0 if pixel_scale_arcsec else None,
        )
        sims.append(res)
        used.append({(int(a), int(b)) for a, b in ids})
        logger.info(
            "registration %s: %s [%s] offset %.3f px (dx %.3f, dy %.3f, rot %.5f deg), profile diff %.3f, "
            "%d sources, limits %.3f px / %.3f: %s",
            res.name, res.status.upper(), res.method, res.offset_px, res.dx_px, res.dy_px, res.rotation_deg,
            res.profile_diff, res.n_sources, th.max_offset_px, th.max_profile_diff, res.reason,
        )

    # Focus: sources kept in the registration of every exposure (hence confirmed in all).
    measured = [u for u, s in zip(used, sims, strict=True) if s.method == "sources"]
    confirmed = set.intersection(*measured) if len(measured) == n_exp and measured else set()
    positions = []
    for t, (sy, sx, _) in enumerate(detections):
        idx = sorted(b for a, b in confirmed if a == t)[: th.focus_sources]  # brightest first
        positions.append((sy[idx], sx[idx]) if idx else (np.empty(0, int), np.empty(0, int)))
    focus = focus_index(
        [p.combined for p in preps],
        [[p.images[i] for p in preps] for i in range(n_exp)],
        positions,
        offsets=[
            (round(s.dx_px), round(s.dy_px)) if math.isfinite(s.dx_px) else (0, 0) for s in sims
        ],
        sigma=th.log_sigma_px, min_z=th.min_focus_z, std_floor=th.focus_std_floor, min_sources=th.min_focus_sources,
    )
    logger.info(
        "focus index (LoG sigma %.1f px): %s, combined %.4g vs singles %.4g ± %.2g, z %.2f (limit %.1f), %d sources",
        focus.sigma_px, focus.status.upper(), focus.combined, focus.mean, focus.std, focus.z, focus.min_z, focus.n_sources,
    )

    failed = [s.name for s in sims if s.status == FAIL]
    unver = [s.name for s in sims if s.status == UNVERIFIED]
    if failed or focus.status == FAIL:
        parts = []
        if failed:
            parts.append(f"misregistered: {', '.join(failed)}")
        if focus.status == FAIL:
            parts.append(f"combination blurred (focus z {focus.z:+.2f} < {focus.min_z})")
        status, reason = FAIL, "; ".join(parts)
    elif unver:
        # Measured but too close to the limit to decide is not the same as not measurable.
        measured = [s for s in sims if s.status == UNVERIFIED and math.isfinite(s.offset_px)]
        unmeasured = [s.name for s in sims if s.status == UNVERIFIED and not math.isfinite(s.offset_px)]
        parts = [f"registration not measurable for {', '.join(unmeasured)}"] if unmeasured else []
        parts += [f"registration of {s.name} inconclusive: {s.reason}" for s in measured]
        status, reason = UNVERIFIED, "; ".join(parts)
    else:
        status = PASS
        reason = f"all {n_exp} exposures registered within {th.max_offset_px} px (worst {max(s.offset_px for s in sims):.3f} px)"
    logger.info("verification: %s: %s", status.upper(), reason)
    return VerificationResult(status, reason, focus, tuple(sims), thr)


def _brightest_overall(
    detections: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The ``n`` brightest detections over all tiles; each tile's list stays brightest first."""
    values = np.concatenate([d[2] for d in detections]) if detections else np.empty(0)
    if values.size <= n:
        return detections
    tile = np.concatenate([np.full(d[2].size, t) for t, d in enumerate(detections)])
    kept = np.bincount(tile[np.argsort(-values, kind="stable")[:n]], minlength=len(detections))
    return [(y[:k], x[:k], v[:k]) for (y, x, v), k in zip(detections, kept, strict=True)]


def verify_arrays(
    singles: Sequence[np.ndarray],
    weights: Sequence[np.ndarray] | None = None,
    *,
    names: Sequence[str] | None = None,
    exptimes: Sequence[float] | None = None,
    thresholds: Thresholds | None = None,
    pixel_scale_arcsec: float | None = None,
) -> VerificationResult:
    """:func:`verify_tiles` for one frame held in single arrays.

    ``weights`` default to 1 where the single is finite. Shapes must agree.
    """
    singles = [np.asarray(s, dtype=np.float32) for s in singles]
    if weights is None:
        weights = [np.isfinite(s).astype(np.float32) for s in singles]
    shapes = {s.shape for s in singles} | {np.shape(w) for w in weights}
    if len(shapes) > 1:
        raise ValueError(f"singles and weights must share one shape, got {sorted(shapes)}")
    return verify_tiles(
        [Tile((0, 0), singles, [np.asarray(w, np.float32) for w in weights])],
        names=names, exptimes=exptimes, thresholds=thresholds, pixel_scale_arcsec=pixel_scale_arcsec,
    )
