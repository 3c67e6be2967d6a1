"""Verification result records and the tile of drizzled arrays they are measured on."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from autodriz.verification.thresholds import FAIL, PASS

__all__ = ["FocusResult", "SimilarityResult", "Tile", "VerificationResult"]


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
