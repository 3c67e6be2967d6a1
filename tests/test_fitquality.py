"""Fit quality 1..5 from fit statistics: one test per branch of assess_fit (pure)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from autodriz.fitquality import (
    FAILED,
    GOOD,
    GOOD_WITH_CAVEATS,
    POOR,
    TOO_FEW_MATCHES,
    FitStatistics,
    QualityThresholds,
    assess_fit,
    exposure_scatter_mas,
    pearson,
    radial_offset_plausible,
)

GOOD_FIT = FitStatistics(
    geometry="rscale",
    succeeded=True,
    n_matches=300,
    rms_mas=4.0,
    radial_offset_arcsec=1.0,
    n_reference=250,
    expected_rms_mas=3.0,
    mag_correlation=0.95,
    exposure_offsets_mas=[(0.2, -0.1), (-0.2, 0.1)],
    exposure_matches=[150, 150],
    relative=True,
    relative_rms_mas=2.0,
    has_proper_motions=True,
)


def test_good_fit_is_quality_1_with_a_summary():
    q, reasons = assess_fit(GOOD_FIT)
    assert q == GOOD
    assert len(reasons) == 1 and "300 matches" in reasons[0] and "4.0 mas" in reasons[0]


def test_failed_fit_is_5_with_its_reason():
    q, reasons = assess_fit(FitStatistics(geometry="rscale", succeeded=False, failure="tweakwcs: LinAlgError"))
    assert q == FAILED
    assert "LinAlgError" in reasons[0]


@pytest.mark.parametrize(("geometry", "n", "expected"), [("rscale", 11, TOO_FEW_MATCHES), ("rscale", 12, GOOD_WITH_CAVEATS),
                                                          ("general", 24, TOO_FEW_MATCHES), ("shift", 4, GOOD_WITH_CAVEATS)])
def test_minimum_matches_depend_on_the_geometry(geometry, n, expected):
    stats = replace(GOOD_FIT, geometry=geometry, n_matches=n, n_reference=n, mag_correlation=0.9)
    q, reasons = assess_fit(stats)
    assert q == expected, reasons
    if q == TOO_FEW_MATCHES:
        assert f"{n} matches" in reasons[0] and geometry in reasons[0]


def test_rms_above_the_hard_limit_is_not_valid():
    q, reasons = assess_fit(replace(GOOD_FIT, rms_mas=200.0))
    assert q == FAILED and "150" in reasons[0]


def test_nan_rms_is_a_failure():
    assert assess_fit(replace(GOOD_FIT, rms_mas=math.nan))[0] == FAILED


def test_implausible_radial_offset_for_few_matches_fails():
    # 4 matches cannot justify a 15″ correction: (4+2)·0.36 = 2.16 < 0.8 + 1.5⁸ ≈ 26.4.
    stats = replace(GOOD_FIT, geometry="shift", n_matches=4, radial_offset_arcsec=15.0)
    q, reasons = assess_fit(stats)
    assert q == FAILED and "radial offset" in reasons[0]


def test_inconsistent_exposures_fail():
    stats = replace(GOOD_FIT, exposure_offsets_mas=[(30.0, 0.0), (-30.0, 0.0)])
    q, reasons = assess_fit(stats)
    assert q == FAILED and "inconsistent" in reasons[0]


def test_rms_above_good_limit_is_poor():
    stats = replace(GOOD_FIT, rms_mas=45.0, expected_rms_mas=65.0)
    q, reasons = assess_fit(stats)
    assert q == POOR and "20 mas" in reasons[0]


def test_uncorrelated_magnitudes_with_few_matches_is_unverified():
    stats = replace(GOOD_FIT, geometry="shift", n_matches=8, n_reference=10, mag_correlation=0.1)
    q, reasons = assess_fit(stats)
    assert q == POOR and "do not correlate" in reasons[0]


def test_magnitude_check_not_applied_with_many_matches():
    stats = replace(GOOD_FIT, mag_correlation=0.0)
    assert assess_fit(stats)[0] == GOOD


def test_missing_magnitudes_with_few_matches_is_a_caveat():
    stats = replace(GOOD_FIT, geometry="shift", n_matches=9, n_reference=9, mag_correlation=None)
    q, reasons = assess_fit(stats)
    assert q == GOOD_WITH_CAVEATS
    assert any("cross-check is not possible" in r for r in reasons)


def test_rms_worse_than_the_catalog_allows_is_not_good():
    # 15 mas is under the 20 mas "good" limit but five times what Gaia + centroids give.
    stats = replace(GOOD_FIT, rms_mas=15.0, expected_rms_mas=3.0)
    q, reasons = assess_fit(stats)
    assert q == GOOD_WITH_CAVEATS and "worse than" in reasons[0]


def test_few_matches_is_a_caveat():
    stats = replace(GOOD_FIT, n_matches=20, n_reference=20)
    q, reasons = assess_fit(stats)
    assert q == GOOD_WITH_CAVEATS and "barely" in reasons[0]


def test_catalog_without_proper_motions_is_a_caveat():
    q, reasons = assess_fit(replace(GOOD_FIT, has_proper_motions=False))
    assert q == GOOD_WITH_CAVEATS and "proper motions" in reasons[0]


def test_no_relative_fit_is_a_caveat():
    q, reasons = assess_fit(replace(GOOD_FIT, relative=False))
    assert q == GOOD_WITH_CAVEATS and "relative" in reasons[0]


def test_thresholds_from_mapping_merge_min_matches_and_reject_unknown_keys():
    t = QualityThresholds.from_mapping({"good_rms_mas": 10.0, "min_matches": {"rscale": 20}})
    assert t.good_rms_mas == 10.0
    assert t.min_matches["rscale"] == 20 and t.min_matches["general"] == 25
    with pytest.raises(ValueError, match="unknown quality threshold"):
        QualityThresholds.from_mapping({"good_rms": 1})
    assert assess_fit(replace(GOOD_FIT, rms_mas=12.0, expected_rms_mas=10.0), t)[0] == POOR


def test_pearson_and_helpers():
    assert pearson([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert pearson([1, 2, 3, 4], [8, 6, 4, 2]) == pytest.approx(-1.0)
    assert pearson([1, 2], [1, 2]) is None
    assert pearson([1, 1, 1], [1, 2, 3]) is None
    assert pearson([1, 2, 3, math.nan], [1, 2, 3, 4]) == pytest.approx(1.0)
    assert radial_offset_plausible(1, 1.0)
    assert not radial_offset_plausible(1, 12.0)
    assert radial_offset_plausible(100, 12.0)
    assert not radial_offset_plausible(100, math.nan)
    assert exposure_scatter_mas([(1.0, 1.0)]) == 0.0
    assert exposure_scatter_mas([(3.0, 0.0), (-3.0, 0.0)]) == pytest.approx(3.0)
