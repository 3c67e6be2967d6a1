"""Selection rules, branch by branch, on hand-made candidates (pure: no files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from autodriz.fitquality import FitScore, FitStatistics
from autodriz.select import choose, rank_candidates, rejected_candidates
from autodriz.solutions.base import Candidate
from autodriz.verify import FocusResult, VerificationResult

WD = Path("/nonexistent")
COPIES = {Path("a_flt.fits"): Path("w/a_flt.fits")}


def cand(name, kind, wcsname=None, quality=-1, rms=None, copies=COPIES, catalog_rank=None, notes=(),
         geometry=None, n_matches=200, catalog=None, mode="REL"):
    score = None
    if kind == "aposteriori":
        stats = FitStatistics(geometry=geometry or name, succeeded=True, n_matches=n_matches,
                              rms_mas=float("nan") if rms is None else rms)
        score = FitScore(quality, tuple(notes), stats, catalog=catalog or name,
                         catalog_rank=99 if catalog_rank is None else catalog_rank, mode=mode)
    return Candidate(name, wcsname or f"IDC_x-{name}", WD, dict(copies), "test", kind=kind,
                     quality=quality, notes=tuple(notes), score=score)


def ver(status, reason):
    """A verification record as verifydriz makes it, with only what the choice reads."""
    return VerificationResult(status, reason, FocusResult(status, reason), ())


DEFAULT = cand("default", "default", "IDC_x")


def names(ranking):
    return [c.name for c in ranking.order]


def test_order_aposteriori_then_apriori_hsc_before_gsc_then_default():
    cands = [
        DEFAULT,
        cand("apriori-GSC240", "apriori", "IDC_x-GSC240"),
        cand("apriori-HSC30", "apriori", "IDC_x-HSC30"),
        cand("fit-general", "aposteriori", quality=2, rms=8.0),
        cand("fit-rscale", "aposteriori", quality=1, rms=9.0),
    ]
    r = rank_candidates(cands, max_fit_rms_mas=100)
    assert names(r) == ["fit-rscale", "fit-general", "apriori-HSC30", "apriori-GSC240", "default"]
    assert r.pruned == {}


def test_invalid_and_large_rms_fits_are_pruned_with_reasons():
    cands = [
        DEFAULT,
        cand("fit-q4", "aposteriori", quality=4, notes=["6 matches"]),
        cand("fit-wild", "aposteriori", quality=1, rms=150.0),
        cand("failed", "aposteriori", quality=5, copies={}, notes=["no sources"]),
    ]
    r = rank_candidates(cands, max_fit_rms_mas=100)
    assert names(r) == ["default"]
    assert "fit quality 4 is not a valid fit" in r.pruned["fit-q4"] and "6 matches" in r.pruned["fit-q4"]
    assert "exceeds the 100 mas limit" in r.pruned["fit-wild"] and "a priori" in r.pruned["fit-wild"]
    assert "no sources" in r.pruned["failed"]


def test_large_rms_fit_reverts_to_best_apriori():
    cands = [DEFAULT, cand("apriori-GSC240", "apriori", "IDC_x-GSC240"), cand("fit", "aposteriori", quality=1, rms=120.0)]
    r = rank_candidates(cands, max_fit_rms_mas=100)
    s = choose(r, {"apriori-GSC240": ver("pass", "ok")})
    assert s.winner.name == "apriori-GSC240"


def test_verified_best_wins_and_failed_never_beats_a_pass():
    cands = [DEFAULT, cand("apriori-HSC30", "apriori", "IDC_x-HSC30"), cand("fit", "aposteriori", quality=1, rms=5.0)]
    r = rank_candidates(cands, max_fit_rms_mas=100)
    s = choose(r, {"fit": ver("fail", "exposure 2 off by 1.3 px"), "apriori-HSC30": ver("pass", "all within 0.1 px")})
    assert s.winner.name == "apriori-HSC30"
    v = {x.name: x for x in s.verdicts}
    assert v["fit"].status == "lost" and "failed verification: exposure 2 off by 1.3 px" in v["fit"].reason
    assert v["default"].status == "lost" and "ranked below the winner apriori-HSC30" in v["default"].reason
    assert "best-ranked verified" in s.reason


def test_unverified_candidate_cannot_win_when_verification_is_required():
    r = rank_candidates([DEFAULT, cand("apriori-HSC30", "apriori")], max_fit_rms_mas=100)
    s = choose(r, {})
    assert s.winner.name == "default"
    assert {x.name: x.reason for x in s.verdicts}["apriori-HSC30"] == "not verified"


def test_verification_off_lets_the_best_ranked_win():
    r = rank_candidates([DEFAULT, cand("apriori-HSC30", "apriori")], max_fit_rms_mas=100)
    s = choose(r, {}, require_verification=False)
    assert s.winner.name == "apriori-HSC30"


def test_default_wins_when_everything_failed_and_says_why():
    cands = [DEFAULT, cand("apriori-GSC240", "apriori", "IDC_x-GSC240")]
    r = rank_candidates(cands, max_fit_rms_mas=100)
    s = choose(r, {"apriori-GSC240": ver("fail", "shifted 3 px")})
    assert s.winner is DEFAULT
    assert "no alignment candidate passed verification (apriori-GSC240)" in s.reason


def test_default_only():
    s = choose(rank_candidates([DEFAULT], max_fit_rms_mas=100), {})
    assert s.winner is DEFAULT and s.reason == "the pipeline-default WCS is the only candidate"
    assert [v.status for v in s.verdicts] == ["chosen"]


def test_catalog_preference_breaks_quality_ties():
    cands = [DEFAULT, cand("fit-dr2", "aposteriori", quality=1, rms=3.0, catalog_rank=2),
             cand("fit-edr3", "aposteriori", quality=1, rms=4.0, catalog_rank=0)]
    assert names(rank_candidates(cands, max_fit_rms_mas=100))[:2] == ["fit-edr3", "fit-dr2"]


def test_exactly_one_default_required():
    with pytest.raises(ValueError):
        rank_candidates([cand("apriori-HSC30", "apriori")], max_fit_rms_mas=100)


def test_fit_rms_is_read_from_the_typed_score_not_the_report_details():
    stats = FitStatistics(geometry="rscale", succeeded=True, n_matches=50, rms_mas=250.0)
    c = Candidate("fit", "IDC_x-FIT_REL_GAIADR3", WD, dict(COPIES), "test", kind="aposteriori", quality=1,
                  details={"statistics": {"rms_mas": 1.0}}, score=FitScore(1, (), stats, catalog="GAIADR3"))
    r = rank_candidates([DEFAULT, c], max_fit_rms_mas=100)
    assert "fit RMS 250.0 mas exceeds" in r.pruned["fit"]


def test_a_fit_without_a_score_is_not_eligible():
    c = Candidate("fit", "IDC_x-FIT_REL_GAIADR3", WD, dict(COPIES), "test", kind="aposteriori", quality=1)
    r = rank_candidates([DEFAULT, c], max_fit_rms_mas=100)
    assert r.pruned["fit"] == "no fit score recorded"


def test_pass_beats_a_better_ranked_unverified_and_unverified_beats_default():
    cands = [DEFAULT, cand("apriori-HSC30", "apriori", "IDC_x-HSC30"), cand("fit", "aposteriori", quality=1, rms=5.0)]
    r = rank_candidates(cands, max_fit_rms_mas=100)
    s = choose(r, {"fit": ver("unverified", "4 common sources"), "apriori-HSC30": ver("pass", "ok")})
    assert s.winner.name == "apriori-HSC30"
    v = {x.name: x for x in s.verdicts}
    assert "a better-verified candidate exists" in v["fit"].reason
    s = choose(r, {"fit": ver("unverified", "4 common sources"), "apriori-HSC30": ver("fail", "2 px")})
    assert s.winner.name == "fit" and "stands on its fit statistics" in s.reason
    assert {x.name: x.status for x in s.verdicts} == {"fit": "chosen", "apriori-HSC30": "lost", "default": "lost"}


# --- archive-like acceptance: valid fits of any RMS class may win (issue 24) ---------------------


def test_quality_3_fit_is_eligible_and_a_verified_one_beats_a_verified_apriori():
    cands = [DEFAULT, cand("apriori-GSC240", "apriori", "IDC_x-GSC240"),
             cand("fit", "aposteriori", quality=3, rms=41.0, notes=["RMS 41.0 mas is above the 20 mas of a good fit"])]
    r = rank_candidates(cands, max_fit_rms_mas=100)
    assert names(r) == ["fit", "apriori-GSC240", "default"] and r.pruned == {}
    s = choose(r, {"fit": ver("pass", "registered"), "apriori-GSC240": ver("pass", "registered")})
    assert s.winner.name == "fit"


def test_an_unverifiable_quality_3_fit_ranks_below_a_verified_apriori_but_above_the_default():
    cands = [DEFAULT, cand("apriori-GSC240", "apriori", "IDC_x-GSC240"), cand("fit", "aposteriori", quality=3, rms=41.0)]
    r = rank_candidates(cands, max_fit_rms_mas=100)
    s = choose(r, {"fit": ver("unverified", "3 common sources"), "apriori-GSC240": ver("pass", "ok")})
    assert s.winner.name == "apriori-GSC240"
    s = choose(r, {"fit": ver("unverified", "3 common sources"), "apriori-GSC240": ver("fail", "2 px")})
    assert s.winner.name == "fit"


def test_max_fit_rms_is_the_user_limit_on_a_valid_fit():
    fit = cand("fit", "aposteriori", quality=3, rms=41.0)
    assert names(rank_candidates([DEFAULT, fit], max_fit_rms_mas=100)) == ["fit", "default"]
    r = rank_candidates([DEFAULT, fit], max_fit_rms_mas=20)
    assert names(r) == ["default"] and "fit RMS 41.0 mas exceeds the 20 mas limit (--max-fit-rms)" in r.pruned["fit"]


def _pair(rms_rscale, rms_general, n=200, q_rscale=1, q_general=1):
    return [
        cand("rs", "aposteriori", quality=q_rscale, rms=rms_rscale, geometry="rscale", catalog="GAIAeDR3",
             catalog_rank=0, n_matches=n),
        cand("gen", "aposteriori", quality=q_general, rms=rms_general, geometry="general", catalog="GAIAeDR3",
             catalog_rank=0, n_matches=n),
    ]


def test_rscale_is_preferred_when_general_only_lowers_the_rms_by_its_extra_freedom():
    # 200 stars, 41.2 vs 41.1 mas: the improvement two more parameters give on pure noise.
    r = rank_candidates([DEFAULT, *_pair(41.2, 41.1, q_rscale=3, q_general=3)], max_fit_rms_mas=100)
    assert names(r)[:2] == ["rs", "gen"]
    (test,) = r.geometry_tests
    assert test.preferred == "rscale" and test.p_value > 1e-3 and "F = " in test.reason
    s = choose(r, {"rs": ver("pass", "ok")})
    assert s.winner.name == "rs" and "rscale preferred: F-test general vs rscale" in s.reason


def test_general_wins_when_it_explains_the_residuals_significantly_better():
    r = rank_candidates([DEFAULT, *_pair(12.0, 5.0)], max_fit_rms_mas=100)
    assert names(r)[:2] == ["gen", "rs"]
    (test,) = r.geometry_tests
    assert test.preferred == "general" and test.p_value < 1e-3 and test.statistic > 100


def test_general_needs_25_matches_whatever_its_rms():
    r = rank_candidates([DEFAULT, *_pair(12.0, 5.0, n=20)], max_fit_rms_mas=100)
    assert names(r)[:2] == ["rs", "gen"]
    assert "20 matches, fewer than the 25" in r.geometry_tests[0].reason


def test_the_preferred_geometry_decides_the_rank_of_its_catalog():
    # rscale (quality 3) is preferred over general (quality 1, not significantly better): the
    # GAIAeDR3 group ranks as quality 3, below another catalog's quality-2 fit.
    other = cand("gsc", "aposteriori", quality=2, rms=15.0, geometry="rscale", catalog="GSC242", catalog_rank=3)
    r = rank_candidates([DEFAULT, other, *_pair(20.1, 19.99, q_rscale=3, q_general=1)], max_fit_rms_mas=100)
    assert names(r)[:3] == ["gsc", "rs", "gen"]


def test_search_policy_rules():
    from autodriz.select import (
        catalog_search_done, is_default_only, is_usable_fit, needs_image_by_image, try_sparse_geometry,
    )

    assert [is_usable_fit(q) for q in (1, 2, 3, 4, 5, -1)] == [True, True, True, False, False, False]
    assert try_sparse_geometry([4, 5]) and not try_sparse_geometry([4, 3])
    assert needs_image_by_image([]) and needs_image_by_image([4, 5]) and not needs_image_by_image([3, 5])
    assert catalog_search_done(2, 2) and not catalog_search_done(3, 2) and not catalog_search_done(None, 2)
    assert not catalog_search_done(5, 5)  # an invalid fit never ends the search
    assert is_default_only(DEFAULT, alignment_requested=True)
    assert not is_default_only(DEFAULT, alignment_requested=False)
    assert not is_default_only(cand("apriori-HSC30", "apriori"), alignment_requested=True)


def test_rejected_candidates_are_the_pruned_and_those_verification_failed():
    cands = [DEFAULT, cand("apriori-GSC240", "apriori", "IDC_x-GSC240"), cand("apriori-HSC30", "apriori", "IDC_x-HSC30"),
             cand("fit-q4", "aposteriori", quality=4, notes=["6 matches"])]
    r = rank_candidates(cands, max_fit_rms_mas=100)
    verifications = {"apriori-HSC30": ver("fail", "2 px"), "apriori-GSC240": ver("unverified", "3 sources")}
    s = choose(r, verifications)
    assert s.winner.name == "apriori-GSC240"
    assert rejected_candidates(s, verifications) == {"fit-q4", "apriori-HSC30"}
