"""Fit statistics → fit quality 1..5 (pure).

The scale is the HST pipeline's (drizzlepac ``align.determine_fit_quality``), made explicit:

==  ==========================================================================================
 1  good relative + absolute fit: enough matches, RMS below the "good" limit *and* consistent
    with the errors the catalog and the centroids should give, exposures consistent
 2  good, with caveats: RMS good but above what the catalog/centroid errors predict, few
    matches, catalog without proper motions, magnitudes not checkable, no relative fit …
 3  valid, but the RMS is above the "good" limit (e.g. a catalog with large errors, or an
    undersampled detector), or the cross-match magnitude check failed for a small match count
 4  too few matches for the fit geometry
 5  the fit failed or is not valid: no fit, RMS above the hard limit, radial offset implausible
    for the number of matches, or exposures inconsistent with each other
-1  not attempted (no catalog, stage skipped)
==  ==========================================================================================

:func:`assess_fit` takes a :class:`FitStatistics` and :class:`QualityThresholds` and returns
``(quality, reasons)``; every reason is a sentence for the log and the report.

Mapping to drizzlepac 3.11's ``fit_quality`` (``align.determine_fit_quality``): our 1 is its 1
(valid, RMS < ``MAX_FIT_RMS``); our 2 is its 2 (valid but compromised, RMS < ``MAX_FIT_RMS``);
our 3 is its 3 or 4 (valid, RMS ≥ ``MAX_FIT_RMS``; "compromised" when the magnitude
cross-check failed); our 4 and 5 are its 5 (no valid fit: too few matches; RMS above
``MAX_FIT_LIMIT``, implausible offset, inconsistent exposures). Qualities 1–3 are *valid*
(:data:`VALID_QUALITIES`): the archive applies such a fit when its RMS is below 150 mas, and so
may :mod:`autodriz.select`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from types import MappingProxyType
from typing import Any

import numpy as np

#: Quality values.
GOOD = 1
GOOD_WITH_CAVEATS = 2
POOR = 3
TOO_FEW_MATCHES = 4
FAILED = 5
NOT_ATTEMPTED = -1

#: Qualities of a valid fit (one that may be applied); 4 and 5 are not valid fits.
VALID_QUALITIES: tuple[int, ...] = (GOOD, GOOD_WITH_CAVEATS, POOR)

QUALITY_MEANING: Mapping[int, str] = MappingProxyType({
    GOOD: "good relative+absolute fit",
    GOOD_WITH_CAVEATS: "good fit with caveats",
    POOR: "valid fit, RMS above the good limit",
    TOO_FEW_MATCHES: "too few matches",
    FAILED: "fit failed",
    NOT_ATTEMPTED: "not attempted",
})


@dataclass(frozen=True)
class QualityThresholds:
    """Limits used by :func:`assess_fit` (``[<instrument>.quality]`` in aposteriori.toml).

    Attributes
    ----------
    min_matches : mapping
        Minimum matches per fit geometry (drizzlepac: rscale 12, general 25; MIN_FIT_MATCHES 4).
    good_rms_mas : float
        RMS below which a fit can be quality 1/2 (drizzlepac MAX_FIT_RMS = 20 mas).
    max_rms_mas : float
        RMS above which a fit is not valid (drizzlepac MAX_FIT_LIMIT = 150 mas).
    expected_rms_factor : float
        A fit with RMS above this factor × the expected RMS (catalog ⊕ centroid errors) is
        "worse than the catalog allows": not quality 1.
    comfortable_matches_factor : float
        Fewer than this factor × the geometry's minimum matches is a caveat.
    mag_check_max_matches : int
        The magnitude cross-check applies below this many matches (drizzlepac: 10, or 10% of
        the reference stars when more).
    mag_check_fraction : float
        … or below this fraction of the reference stars in the footprint (drizzlepac: 0.1).
    min_mag_correlation : float
        |Pearson r| of image vs catalog magnitudes required by the cross-check (drizzlepac 0.5).
    consistency_floor_mas : float
        Per-exposure offsets may scatter by max(RMS, this) without violating consistency.
    """

    min_matches: Mapping[str, int] = field(
        default_factory=lambda: {"shift": 4, "rshift": 6, "rscale": 12, "general": 25}
    )
    good_rms_mas: float = 20.0
    max_rms_mas: float = 150.0
    expected_rms_factor: float = 3.0
    comfortable_matches_factor: float = 2.0
    mag_check_max_matches: int = 10
    mag_check_fraction: float = 0.1
    min_mag_correlation: float = 0.5
    consistency_floor_mas: float = 20.0

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> QualityThresholds:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown quality threshold(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        data = dict(values)
        if "min_matches" in data:
            merged = dict(cls().min_matches)
            merged.update({str(k): int(v) for k, v in dict(data["min_matches"]).items()})
            data["min_matches"] = merged
        return cls(**data)


@dataclass(frozen=True)
class FitStatistics:
    """What a fit produced, in numbers (all angles in mas unless named otherwise).

    Attributes
    ----------
    geometry : str
        Fit geometry: shift, rshift, rscale or general.
    succeeded : bool
        The fit ran to completion (tweakwcs status SUCCESS).
    failure : str
        Why it did not (empty when it did).
    n_matches : int
        Source–star pairs after the fit, all exposures together (a star seen in two exposures
        counts twice).
    rms_mas : float
        RMS of the on-sky residuals of the matched stars after the fit (both axes together).
    rms_ra_mas, rms_dec_mas : float
        The same per axis (RA, Dec): what the delivered ``RMS_RA``/``RMS_DEC``/``CRDER`` say.
    radial_offset_arcsec : float
        Size of the correction the fit applied at the centre of the footprint.
    n_reference : int
        Catalog stars in the footprint.
    expected_rms_mas : float or None
        What the catalog (at the observation epoch) and centroiding errors should give.
    mag_correlation : float or None
        Pearson r between image and catalog magnitudes of the matches (None: not computable).
    exposure_offsets_mas : sequence of (float, float)
        Per exposure, mean residual (east, north) after the fit.
    exposure_matches : sequence of int
        Per exposure, matched stars.
    relative : bool
        Exposures were aligned to each other before the absolute fit (FIT_REL), or there is a
        single exposure (nothing to align); False when several exposures were fitted one by one.
    relative_rms_mas : float or None
        RMS of the relative fit.
    has_proper_motions : bool
        The catalog's proper motions were propagated to the observation epoch.
    """

    geometry: str
    succeeded: bool
    failure: str = ""
    n_matches: int = 0
    rms_mas: float = math.nan
    rms_ra_mas: float = math.nan
    rms_dec_mas: float = math.nan
    radial_offset_arcsec: float = math.nan
    n_reference: int = 0
    expected_rms_mas: float | None = None
    mag_correlation: float | None = None
    exposure_offsets_mas: Sequence[tuple[float, float]] = ()
    exposure_matches: Sequence[int] = ()
    relative: bool = True
    relative_rms_mas: float | None = None
    has_proper_motions: bool = True

    def as_report_dict(self) -> dict[str, Any]:
        """The statistics for the report's JSON: floats rounded (offsets to 1 µas, others to
        1e-4), NaN and infinities as None."""
        out = asdict(self)
        for k, v in list(out.items()):
            if isinstance(v, float) and not math.isfinite(v):
                out[k] = None
            elif isinstance(v, float):
                out[k] = round(v, 4)
        out["exposure_offsets_mas"] = [[round(a, 3), round(b, 3)] for a, b in self.exposure_offsets_mas]
        out["exposure_matches"] = list(self.exposure_matches)
        return out


@dataclass(frozen=True)
class FitScore:
    """How one a posteriori fit scored: the typed record that :mod:`autodriz.select` reads.

    Attributes
    ----------
    quality : int
        See the module table.
    reasons : tuple of str
        Why it has that quality (one sentence each).
    statistics : FitStatistics
        What the fit produced.
    catalog : str
        Reference catalog name (``GAIAeDR3``, ``USER`` …).
    catalog_rank : int
        Position of the catalog in the preference order (0 = most preferred).
    mode : str
        ``REL`` (one transformation for the relatively aligned visit) or ``IMG`` (one per
        exposure).
    n_transforms : int
        Independent transformations fitted: 1 for ``REL``, the number of exposures for ``IMG``
        (the parameter count of a geometry test).
    """

    quality: int
    reasons: tuple[str, ...]
    statistics: FitStatistics
    catalog: str = ""
    catalog_rank: int = 99
    mode: str = "REL"
    n_transforms: int = 1

    @property
    def geometry(self) -> str:
        """The fit geometry (``rscale``, ``general``, ``shift`` …)."""
        return self.statistics.geometry

    @property
    def rms_mas(self) -> float:
        """Post-fit RMS of the matched stars (mas; NaN when the fit did not run)."""
        return self.statistics.rms_mas

    @property
    def valid(self) -> bool:
        """A fit that may be applied (quality 1–3)."""
        return self.quality in VALID_QUALITIES


def pearson(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Pearson correlation of the finite pairs, or None with fewer than 3 pairs or no spread."""
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return None
    x, y = x[ok], y[ok]
    sx, sy = x.std(), y.std()
    if sx == 0 or sy == 0:
        return None
    return float(np.mean((x - x.mean()) * (y - y.mean())) / (sx * sy))


def radial_offset_plausible(n_matches: int, offset_arcsec: float) -> bool:
    """drizzlepac's radial-offset check: few matches cannot justify a large offset.

    ``(n + 2) × 0.36 > 0.8 + (offset / 10″)⁸``: with 1–2 matches only offsets of a few arcsec
    pass; with ≥ 3 matches anything up to ~10″ passes, and ever more matches are needed beyond.
    """
    if not math.isfinite(offset_arcsec):
        return False
    return (n_matches + 2) * 0.36 > 0.8 + (offset_arcsec / 10.0) ** 8


def exposure_scatter_mas(offsets: Sequence[tuple[float, float]]) -> float:
    """Scatter of the per-exposure mean offsets: sqrt(std(east)² + std(north)²)."""
    if len(offsets) < 2:
        return 0.0
    arr = np.asarray(offsets, dtype=float)
    return float(math.hypot(float(np.std(arr[:, 0])), float(np.std(arr[:, 1]))))


def assess_fit(stats: FitStatistics, thresholds: QualityThresholds = QualityThresholds()) -> tuple[int, tuple[str, ...]]:
    """Turn fit statistics into a quality 1..5 and the reasons for it.

    Parameters
    ----------
    stats : FitStatistics
    thresholds : QualityThresholds

    Returns
    -------
    (int, tuple of str)
        Quality (see module table) and one sentence per reason. Quality 1 comes with a single
        sentence summarising why it is good.
    """
    t = thresholds
    if not stats.succeeded:
        return FAILED, (f"fit failed: {stats.failure or 'unknown reason'}",)

    needed = int(t.min_matches.get(stats.geometry, max(t.min_matches.values(), default=4)))
    if stats.n_matches < needed:
        return TOO_FEW_MATCHES, (
            f"{stats.n_matches} matches, fewer than the {needed} a {stats.geometry} fit needs",
        )
    if not math.isfinite(stats.rms_mas):
        return FAILED, ("fit RMS is not a number",)
    if stats.rms_mas > t.max_rms_mas:
        return FAILED, (f"RMS {stats.rms_mas:.1f} mas above the {t.max_rms_mas:g} mas limit: not a valid fit",)
    if not radial_offset_plausible(stats.n_matches, stats.radial_offset_arcsec):
        return FAILED, (
            f"radial offset {stats.radial_offset_arcsec:.2f}″ implausible for {stats.n_matches} matches",
        )
    scatter = exposure_scatter_mas(stats.exposure_offsets_mas)
    scatter_limit = max(stats.rms_mas, t.consistency_floor_mas)
    if scatter > scatter_limit:
        reason = f"exposures inconsistent: their offsets scatter by {scatter:.1f} mas (> {scatter_limit:.1f} mas)"
        return FAILED, (reason,)

    poor: list[str] = []
    caveats: list[str] = []
    mag_limit = max(t.mag_check_max_matches, t.mag_check_fraction * min(1000, stats.n_reference))
    if stats.n_matches < mag_limit:
        if stats.mag_correlation is None:
            caveats.append(
                f"only {stats.n_matches} matches and the magnitude cross-check is not possible "
                "(magnitudes missing or constant)"
            )
        elif abs(stats.mag_correlation) < t.min_mag_correlation:
            poor.append(
                f"only {stats.n_matches} matches and image/catalog magnitudes do not correlate "
                f"(|r| = {abs(stats.mag_correlation):.2f} < {t.min_mag_correlation:g}): cross-match unverified"
            )
    if stats.rms_mas >= t.good_rms_mas:
        poor.append(f"RMS {stats.rms_mas:.1f} mas is above the {t.good_rms_mas:g} mas of a good fit")
    if poor:
        return POOR, tuple(poor + caveats)

    if stats.expected_rms_mas is not None and stats.rms_mas > t.expected_rms_factor * stats.expected_rms_mas:
        caveats.append(
            f"RMS {stats.rms_mas:.1f} mas is worse than {t.expected_rms_factor:g}× the "
            f"{stats.expected_rms_mas:.1f} mas the catalog and centroid errors allow"
        )
    if stats.n_matches < t.comfortable_matches_factor * needed:
        caveats.append(f"{stats.n_matches} matches: barely above the {needed} a {stats.geometry} fit needs")
    if not stats.has_proper_motions:
        caveats.append("catalog without proper motions: positions not at the observation epoch")
    if not stats.relative:
        caveats.append("no relative fit between the exposures (each fitted to the catalog on its own)")
    if caveats:
        return GOOD_WITH_CAVEATS, tuple(caveats)
    return GOOD, (
        f"{stats.n_matches} matches, RMS {stats.rms_mas:.1f} mas"
        + (f" (expected {stats.expected_rms_mas:.1f})" if stats.expected_rms_mas is not None else "")
        + f", exposures consistent within {scatter:.1f} mas",
    )
