"""Selection rules, branch by branch, on hand-made candidates (pure: no files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from autodriz.select import choose, rank_candidates
from autodriz.solutions.base import Candidate

WD = Path("/nonexistent")
COPIES = {Path("a_flt.fits"): Path("w/a_flt.fits")}


def cand(name, kind, wcsname=None, quality=-1, rms=None, copies=COPIES, catalog_rank=None, notes=()):
    details = {}
    if rms is not None:
        details["rms_mas"] = rms
    if catalog_rank is not None:
        details["catalog_rank"] = catalog_rank
    return Candidate(name, wcsname or f"IDC_x-{name}", WD, dict(copies), "test", kind=kind,
                     quality=quality, details=details, notes=tuple(notes))


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


def test_poor_quality_and_large_rms_fits_are_pruned_with_reasons():
    cands = [
        DEFAULT,
        cand("fit-q3", "aposteriori", quality=3, rms=5.0, notes=["RMS above catalog error"]),
        cand("fit-q4", "aposteriori", quality=4, notes=["6 matches"]),
        cand("fit-wild", "aposteriori", quality=1, rms=150.0),
        cand("failed", "aposteriori", quality=5, copies={}, notes=["no sources"]),
    ]
    r = rank_candidates(cands, max_fit_rms_mas=100)
    assert names(r) == ["default"]
    assert "fit quality 3" in r.pruned["fit-q3"] and "RMS above catalog error" in r.pruned["fit-q3"]
    assert "fit quality 4" in r.pruned["fit-q4"]
    assert "exceeds the 100 mas limit" in r.pruned["fit-wild"] and "a priori" in r.pruned["fit-wild"]
    assert "no sources" in r.pruned["failed"]


def test_large_rms_fit_reverts_to_best_apriori():
    cands = [DEFAULT, cand("apriori-GSC240", "apriori", "IDC_x-GSC240"), cand("fit", "aposteriori", quality=1, rms=120.0)]
    r = rank_candidates(cands, max_fit_rms_mas=100)
    s = choose(r, {"apriori-GSC240": ("pass", "ok")})
    assert s.winner.name == "apriori-GSC240"


def test_verified_best_wins_and_failed_never_beats_a_pass():
    cands = [DEFAULT, cand("apriori-HSC30", "apriori", "IDC_x-HSC30"), cand("fit", "aposteriori", quality=1, rms=5.0)]
    r = rank_candidates(cands, max_fit_rms_mas=100)
    s = choose(r, {"fit": ("fail", "exposure 2 off by 1.3 px"), "apriori-HSC30": ("pass", "all within 0.1 px")})
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
    s = choose(r, {"apriori-GSC240": ("fail", "shifted 3 px")})
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


def test_fit_rms_is_read_from_the_fit_statistics():
    c = Candidate("fit", "IDC_x-FIT_REL_GAIADR3", WD, dict(COPIES), "test", kind="aposteriori", quality=1,
                  details={"statistics": {"rms_mas": 250.0}})
    r = rank_candidates([DEFAULT, c], max_fit_rms_mas=100)
    assert "fit RMS 250.0 mas exceeds" in r.pruned["fit"]


def test_pass_beats_a_better_ranked_unverified_and_unverified_beats_default():
    cands = [DEFAULT, cand("apriori-HSC30", "apriori", "IDC_x-HSC30"), cand("fit", "aposteriori", quality=1, rms=5.0)]
    r = rank_candidates(cands, max_fit_rms_mas=100)
    s = choose(r, {"fit": ("unverified", "4 common sources"), "apriori-HSC30": ("pass", "ok")})
    assert s.winner.name == "apriori-HSC30"
    v = {x.name: x for x in s.verdicts}
    assert "a better-verified candidate exists" in v["fit"].reason
    s = choose(r, {"fit": ("unverified", "4 common sources"), "apriori-HSC30": ("fail", "2 px")})
    assert s.winner.name == "fit" and "stands on its fit statistics" in s.reason
    assert {x.name: x.status for x in s.verdicts} == {"fit": "chosen", "apriori-HSC30": "lost", "default": "lost"}
