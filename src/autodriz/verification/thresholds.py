"""Verification statuses and thresholds (``config/verify.toml``)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from autodriz.instruments import REGISTRY

__all__ = ["FAIL", "PASS", "UNVERIFIED", "VERIFY_FILE_NAME", "Thresholds", "load_thresholds"]

PASS = "pass"
FAIL = "fail"
UNVERIFIED = "unverified"

VERIFY_FILE_NAME = "verify.toml"



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
