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
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage, signal

from autodriz.centroid import windowed_centroid as _windowed_centroid
from autodriz.instruments import REGISTRY

logger = logging.getLogger(__name__)

__all__ = [
    "FocusResult",
    "SimilarityResult",
    "Thresholds",
    "Tile",
    "VerificationResult",
    "focus_index",
    "load_thresholds",
    "runastrodriz_similarity",
    "verify_arrays",
    "verify_tiles",
]

PASS = "pass"
FAIL = "fail"
UNVERIFIED = "unverified"

VERIFY_FILE_NAME = "verify.toml"

_MAD_TO_SIGMA = 1.4826


# --------------------------------------------------------------------------------------------
# thresholds
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """Verification parameters and pass limits; see ``config/verify.toml`` for why each value.

    Attributes
    ----------
    max_offset_px : float
        Largest registration offset (output pixels) that passes.
    max_profile_diff : float
        Largest normalised profile difference that passes.
    min_focus_z : float
        Smallest focus z-score of the combination against the singles that passes.
    focus_std_floor : float
        Floor of the singles' focus spread, as a fraction of their mean (z needs a spread).
    log_sigma_px : float
        Sigma of the Laplacian-of-Gaussian for the focus index.
    fwhm_px : float
        Expected FWHM of a point source in the single drizzles (detection, centroid window).
    detect_nsigma : float
        Detection threshold in the smoothed combined image, in its noise.
    min_snr : float
        Smallest per-image source S/N used for centroids.
    max_sources : int
        Brightest peaks kept per tile.
    min_sources : int
        Matched sources needed for a source-based registration; fewer falls back to the
        cross-correlation.
    max_search_px : int
        Half-size of the coarse offset search.
    flux_ratio_range : tuple of float
        Accepted single/reference flux ratio of a matched source (count rates).
    min_overlap_pixels : int
        Overlap (pixels) below which an exposure is unverifiable.
    centroid_floor_px : float
        Systematic floor added in quadrature to every centroid error (pixel-phase effects).
    clip_nsigma : float
        Outlier rejection of per-source offsets, in robust sigma of the normalised residuals.
    offset_nsigma : float
        An offset above ``max_offset_px`` fails only when it exceeds it by more than this many
        standard errors; within that it is ``unverified`` (sparse fields, where a rotation fitted
        to ~10 sources and extrapolated to the corners is noisy).
    xcorr_fail_px : float
        With too few sources, the whole-overlap cross-correlation fails an exposure only beyond
        this offset: it is coarse (cosmic rays and extended light pull its peak by a few tenths
        of a pixel), so between ``max_offset_px`` and this it says ``unverified``.
    consensus_radius_px : float
        Matched sources must agree on their offset within this radius (after a shift + rotation
        + scale model grown from the largest agreeing group) before any fit: chance pairs of
        cosmic rays scatter over the whole search box, real sources move together.
    focus_sources : int
        Brightest confirmed sources used for the focus index.
    min_focus_sources : int
        Confirmed sources needed for a focus index.
    """

    max_offset_px: float = 0.15
    max_profile_diff: float = 0.30
    min_focus_z: float = -4.0
    focus_std_floor: float = 0.02
    log_sigma_px: float = 1.5
    fwhm_px: float = 2.2
    detect_nsigma: float = 5.0
    min_snr: float = 15.0
    max_sources: int = 400
    min_sources: int = 6
    max_search_px: int = 12
    flux_ratio_range: tuple[float, float] = (0.6, 1.6)
    min_overlap_pixels: int = 400
    centroid_floor_px: float = 0.01
    clip_nsigma: float = 4.0
    consensus_radius_px: float = 0.5
    offset_nsigma: float = 2.0
    xcorr_fail_px: float = 1.0
    focus_sources: int = 40
    min_focus_sources: int = 3

    def __post_init__(self) -> None:
        lo, hi = self.flux_ratio_range
        if not 0 < lo < 1 < hi:
            raise ValueError(f"flux_ratio_range must bracket 1, got {self.flux_ratio_range}")
        for name in (
            "max_offset_px", "max_profile_diff", "log_sigma_px", "fwhm_px", "detect_nsigma", "min_snr",
            "consensus_radius_px",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.min_sources < 3 or self.max_sources < self.min_sources:
            raise ValueError("need 3 <= min_sources <= max_sources")

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict copy for logs and reports."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}


def load_thresholds(instrument_key: str | None = None, path: str | Path | None = None) -> Thresholds:
    """Thresholds from ``verify.toml``: ``[default]`` overlaid by the detector's section.

    Parameters
    ----------
    instrument_key : str, optional
        ``INSTRUMENT/DETECTOR`` (``ACS/WFC``, ``WFC3/IR`` …); case ignored.
    path : str or Path, optional
        Another file with the same layout; default: the packaged ``config/verify.toml``.

    Returns
    -------
    Thresholds
    """
    if path is None:
        from autodriz.config import default_config_dir

        path = default_config_dir() / VERIFY_FILE_NAME
    with open(path, "rb") as fh:
        table = tomllib.load(fh)
    values: dict[str, Any] = dict(table.get("default", {}))
    if instrument_key:
        wanted = REGISTRY.config_key(instrument_key).upper()
        for key, section in table.items():
            if key != "default" and key.upper() == wanted and isinstance(section, Mapping):
                values.update(section)
    known = {f.name for f in fields(Thresholds)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: unknown verification settings {unknown}")
    if "flux_ratio_range" in values:
        values["flux_ratio_range"] = tuple(float(v) for v in values["flux_ratio_range"])
    return Thresholds(**values)


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimilarityResult:
    """Registration of one exposure against the leave-one-out combination of the others.

    Attributes
    ----------
    name : str
        Exposure name.
    status : str
        ``pass``, ``fail`` or ``unverified``.
    reason : str
        Why, in words.
    method : str
        ``sources`` (fitted per-source offsets), ``cross-correlation`` (few sources) or ``none``.
    offset_px : float
        Registration index: largest displacement of the fitted transform over the matched
        sources' extent, output pixels (NaN when not measured).
    offset_err_px : float
        1-sigma uncertainty of ``offset_px``.
    dx_px, dy_px : float
        Fitted shift at the sources' centroid, output pixels.
    rotation_deg : float
        Fitted rotation (counter-clockwise in the output frame), degrees.
    scale_ppm : float
        Fitted scale change, parts per million.
    profile_diff : float
        Normalised difference: median over sources of 0.5·Σ|S/ΣS − R/ΣR| in an aperture
        (0 identical, 1 disjoint); NaN when not measured.
    flux_ratio : float
        Median single/reference source flux ratio in count rates (information only).
    n_sources : int
        Sources kept in the fit.
    overlap_pixels : int
        Output pixels covered by this exposure and at least one other.
    exptime : float
        Exposure time, seconds.
    max_offset_px, max_profile_diff : float
        The pass limits used.
    offset_mas : float
        ``offset_px`` in milliarcseconds when the pixel scale is known, else NaN.
    """

    name: str
    status: str
    reason: str
    method: str = "none"
    offset_px: float = math.nan
    offset_err_px: float = math.nan
    dx_px: float = math.nan
    dy_px: float = math.nan
    rotation_deg: float = math.nan
    scale_ppm: float = math.nan
    profile_diff: float = math.nan
    flux_ratio: float = math.nan
    n_sources: int = 0
    overlap_pixels: int = 0
    exptime: float = math.nan
    max_offset_px: float = math.nan
    max_profile_diff: float = math.nan
    offset_mas: float = math.nan

    @property
    def passed(self) -> bool:
        """Nothing contradicts the alignment (``pass`` or ``unverified``)."""
        return self.status != FAIL


@dataclass(frozen=True)
class FocusResult:
    """Sharpness of the combination compared with the single drizzles.

    Attributes
    ----------
    status, reason : str
        ``pass``/``fail``/``unverified`` and why.
    sigma_px : float
        LoG sigma used.
    combined : float
        Focus value of the combination: median over confirmed sources of −min(LoG)/flux.
    singles : tuple of float
        The same for every single drizzle.
    mean, std : float
        Mean and standard deviation of ``singles``.
    z : float
        ``(combined − mean) / max(std, focus_std_floor · mean)``.
    min_z : float
        Pass limit.
    n_sources : int
        Confirmed sources used.
    """

    status: str
    reason: str
    sigma_px: float = math.nan
    combined: float = math.nan
    singles: tuple[float, ...] = ()
    mean: float = math.nan
    std: float = math.nan
    z: float = math.nan
    min_z: float = math.nan
    n_sources: int = 0

    @property
    def passed(self) -> bool:
        """Nothing contradicts the alignment (``pass`` or ``unverified``)."""
        return self.status != FAIL


@dataclass(frozen=True)
class VerificationResult:
    """Everything verification found for one candidate WCS.

    ``status`` is ``fail`` when any check fails, ``pass`` when every exposure's registration
    was measured and passed (and the focus did not fail), ``unverified`` otherwise.
    ``passed`` means "nothing contradicts the alignment"; ``verified`` means "measured and
    passed". Selection should prefer verified candidates and never take a failed one.
    """

    status: str
    reason: str
    focus: FocusResult
    similarity: tuple[SimilarityResult, ...]
    thresholds: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    timings: Mapping[str, float] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Nothing contradicts the alignment."""
        return self.status != FAIL

    @property
    def verified(self) -> bool:
        """Every check that could run passed, and the registration was measured."""
        return self.status == PASS

    @property
    def worst_offset_px(self) -> float:
        """Largest registration offset measured, NaN if none."""
        vals = [s.offset_px for s in self.similarity if math.isfinite(s.offset_px)]
        return max(vals) if vals else math.nan

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary for the report."""

        def clean(v: Any) -> Any:
            if isinstance(v, np.integer | np.bool_):
                return v.item()
            if isinstance(v, float | np.floating):
                v = float(v)
                return None if not math.isfinite(v) else round(v, 6)
            if isinstance(v, tuple | list):
                return [clean(x) for x in v]
            if isinstance(v, Mapping):
                return {k: clean(x) for k, x in v.items()}
            return v

        return clean({
            "status": self.status,
            "reason": self.reason,
            "seconds": self.seconds,
            "timings": dict(self.timings),
            "thresholds": dict(self.thresholds),
            "focus": {f.name: getattr(self.focus, f.name) for f in fields(self.focus)},
            "similarity": [{f.name: getattr(s, f.name) for f in fields(s)} for s in self.similarity],
            "details": dict(self.details),
        })


@dataclass(frozen=True)
class Tile:
    """One rectangle of the common output frame holding data, with every exposure's drizzle.

    Attributes
    ----------
    origin : (int, int)
        (x0, y0) of the tile in the common frame, so that measurements of all tiles share one
        coordinate system (a rotation is fitted across tiles, e.g. across ACS/WFC's chips).
    singles : sequence of 2-D arrays
        Each exposure drizzled alone onto the tile, in count rates.
    weights : sequence of 2-D arrays
        Drizzle weights; 0 where the exposure has no (good) data.
    """

    origin: tuple[int, int]
    singles: Sequence[np.ndarray]
    weights: Sequence[np.ndarray]


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


def _prepare_tile(tile: Tile) -> _Prepared:
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
        step = max(1, int(math.sqrt(img.size / 400_000)))
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
    step = max(1, int(math.sqrt(acc.size / 400_000))) if acc.size else 1
    sample = acc[::step, ::step][covered[::step, ::step]]
    _, cnoise = _sky_noise(sample) if sample.size else (0.0, 0.0)
    return _Prepared(tile.origin, images, weights, valid, noise, wsum, acc, cnoise)


def _detect(prep: _Prepared, th: Thresholds, border: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    step = max(1, int(math.sqrt(img.size / 400_000)))
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
    for s, rr in zip(s_st, r_st, strict=True):
        tmpl = np.clip(rr[c : c + 2 * rt + 1, c : c + 2 * rt + 1], 0, None)
        if not tmpl.sum() > 0:
            continue
        cc = signal.correlate(np.clip(s, 0, None), tmpl, mode="valid", method="fft")
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


def _measure_exposure(
    sel: _Selection | None, th: Thresholds, exptime: float, tile_index: int, out: _Matches,
    coarse: tuple[float, float],
) -> None:
    """Centroids of the selected sources in single ``i`` and in the others' combination.

    ``coarse`` is the integer-ish offset of the single found by the votes; windowed centroids
    refine it.
    """
    if sel is None:
        return
    prep, i, sy, sx, idx = sel.prep, sel.i, sel.sy, sel.sx, sel.idx
    img_i = prep.images[i]
    rc, ap = _aperture(th)
    n_detected = sel.n_detected
    others = sel.others
    dxc, dyc = coarse
    ref_st, s_st = sel.ref_stamps(rc)
    # Sub-stamps of the single centred at the coarse offset (integer part).
    ix, iy = round(dxc), round(dyc)
    s_st = _stamps(img_i, sy + iy, sx + ix, rc)
    # Noise per pixel: sky noise plus Poisson of the source in count rates (electrons/exptime).
    var_s = prep.noise[i] ** 2 + np.clip(s_st, 0, None) / max(exptime, 1e-3)
    others_noise = float(np.sqrt(np.mean([prep.noise[j] ** 2 for j in others])))
    # Variance of the others' mean; a median of three or more is ~1.25x noisier in sigma.
    nother = len(others) / (1.57 if len(others) >= 3 else 1.0)
    var_r = others_noise**2 / nother + np.clip(ref_st, 0, None) / max(exptime * nother, 1e-3)
    sigma_w = th.fwhm_px / 2.3548
    zeros = np.zeros(sx.size)
    xr, yr, exr, eyr, okr = _windowed_centroid(ref_st, var_r, zeros, zeros, sigma_w)
    # The single starts where the reference converged, in its stamp moved by the integer coarse
    # offset: the sub-pixel rest is well inside the window's capture range, and identical
    # images then give identical centroids.
    xs, ys, exs, eys, oks = _windowed_centroid(s_st, var_s, xr, yr, sigma_w)
    # Aperture fluxes and S/N (count rates): must be significant and consistent in both images.
    fs = (s_st * ap).sum(axis=(1, 2))
    fr = (ref_st * ap).sum(axis=(1, 2))
    es = np.sqrt((var_s * ap).sum(axis=(1, 2)))
    er = np.sqrt((var_r * ap).sum(axis=(1, 2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        snr_s = fs / es
        snr_r = fr / er
        ratio = fs / fr
    lo, hi = th.flux_ratio_range
    bright = okr & oks & (snr_s >= th.min_snr) & (snr_r >= th.min_snr) & np.isfinite(ratio)
    # Relative to the median ratio, so that a global flux scale (an exposure-time or
    # photometric mismatch) is not mistaken for cosmic rays.
    typical = float(np.median(ratio[bright])) if bright.any() else 1.0
    if not typical > 0:
        typical = 1.0
    keep = bright & (ratio >= lo * typical) & (ratio <= hi * typical)
    logger.debug(
        "exposure %d, tile origin %s: %d peaks, %d with covered apertures, %d centroided in both, "
        "%d bright enough, %d with consistent flux (median ratio %.3f)",
        i, prep.origin, n_detected, sx.size, int((okr & oks).sum()), int(bright.sum()), int(keep.sum()), typical,
    )
    if not keep.any():
        return
    # Normalised profile difference on the raw pixels at the reference's position (no shift
    # applied, so that it sees the offset), in the aperture.
    s_raw = _stamps(img_i, sy, sx, rc) if (ix or iy) else s_st
    fs_raw = (s_raw * ap).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        pdiff = 0.5 * np.abs(s_raw * ap / fs_raw[:, None, None] - ref_st * ap / fr[:, None, None]).sum(axis=(1, 2))
    ox, oy = prep.origin
    out.x.append((sx + xr + ox)[keep])
    out.y.append((sy + yr + oy)[keep])
    out.dx.append((xs + ix - xr)[keep])
    out.dy.append((ys + iy - yr)[keep])
    floor2 = th.centroid_floor_px**2
    out.ex.append(np.sqrt(exs**2 + exr**2 + floor2)[keep])
    out.ey.append(np.sqrt(eys**2 + eyr**2 + floor2)[keep])
    out.ratio.append(ratio[keep])
    out.pdiff.append(pdiff[keep])
    out.ids.append(np.column_stack([np.full(keep.sum(), tile_index), idx[keep]]))


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


# --------------------------------------------------------------------------------------------
# focus
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# the whole verification on arrays
# --------------------------------------------------------------------------------------------


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


def verify_tiles(
    tiles: Sequence[Tile],
    *,
    names: Sequence[str] | None = None,
    exptimes: Sequence[float] | None = None,
    thresholds: Thresholds | None = None,
    pixel_scale_arcsec: float | None = None,
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

    preps = [_prepare_tile(t) for t in tiles]
    search = th.max_search_px
    rt = max(2, math.ceil(1.5 * th.fwhm_px))
    detections = [_detect(p, th, border=max(search + rt, math.ceil(4 * th.log_sigma_px) + 3)) for p in preps]
    matches = [_Matches() for _ in range(n_exp)]
    for i in range(n_exp):
        sels = [_select(prep, i, sy, sx, th) for prep, (sy, sx, _) in zip(preps, detections, strict=True)]
        votes = [_coarse_offset_votes(sel, th) for sel in sels]
        pooled = _vote_mode(np.concatenate(votes))
        for t, (prep, sel) in enumerate(zip(preps, sels, strict=True)):
            matches[i].overlap += int((prep.valid[i] & (prep.wsum - prep.weights[i] > 0)).sum())
            # A tile's own offset when enough of its sources agree on it (it may differ from the
            # others' by a rotation); otherwise the offset all tiles vote for: a sparse tile's
            # few stars can be outvoted by chance pairs of cosmic rays.
            own = _vote_mode(votes[t])
            coarse = own if own[2] >= th.min_sources else pooled
            matches[i].coarse.append(coarse[:2] + (own[2], len(votes[t])))
            _measure_exposure(sel, th, exptimes[i], t, matches[i], coarse[:2])
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


# --------------------------------------------------------------------------------------------
# runastrodriz's formula, for comparison only
# --------------------------------------------------------------------------------------------


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

