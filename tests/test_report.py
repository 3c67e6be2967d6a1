"""Report: weight-map check (pure) and the HTML page from a real run's JSON."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from autodriz.report import SCHEMA_VERSION, weight_map_check, write_html


def test_uniform_weight_map_passes():
    wht = np.zeros((50, 50))
    wht[10:40, 10:40] = 100.0
    check = weight_map_check(wht)
    assert check.ratio == pytest.approx(0.0) and not check.flagged and check.footprint_pixels == 900


def test_patchy_weight_map_is_flagged():
    rng = np.random.default_rng(0)
    wht = rng.choice([10.0, 100.0], size=(40, 40))
    check = weight_map_check(wht)
    assert check.ratio > 0.3 and check.flagged


def test_weight_map_read_in_blocks_gives_the_whole_map_statistics(monkeypatch):
    """Blocks of a few rows (as a product's map is read) give the std/mean of all good pixels."""
    import autodriz.weightmap as weightmap

    rng = np.random.default_rng(3)
    wht = rng.normal(500.0, 40.0, size=(203, 97)).astype(np.float32)
    wht[:20] = 0.0
    wht[50:60, 10:30] = np.nan
    wht[70, 5] = np.inf
    wht[100:110] = -1.0
    good = np.isfinite(wht) & (wht > 0)
    values = wht[good].astype(np.float64)
    expected = values.std() / values.mean()
    monkeypatch.setattr(weightmap, "WEIGHT_BLOCK_PIXELS", 5 * 97 + 3)  # 5 rows a block, 41 blocks
    check = weight_map_check(wht)
    assert check.footprint_pixels == good.sum()
    assert check.ratio == pytest.approx(expected, rel=1e-12)
    monkeypatch.setattr(weightmap, "WEIGHT_BLOCK_PIXELS", 10**9)  # one block
    assert weight_map_check(wht).ratio == pytest.approx(expected, rel=1e-12)


def test_empty_or_nan_weight_map_is_flagged_not_an_error():
    assert weight_map_check(np.zeros((5, 5))).flagged
    assert weight_map_check(np.full((5, 5), np.nan)).flagged


def test_html_page_from_report(tmp_path):
    report = {
        "schema": SCHEMA_VERSION, "autodriz": "0", "versions": {}, "input": "x_asn.fits",
        "dataset": {"root": "x", "instrument": "ACS/WFC", "filters": ["F606W"], "exposures": ["a", "b"]},
        "candidates": [
            {"name": "default", "kind": "default", "wcsname": "IDC_x", "source": "s", "quality": -1,
             "details": {}, "notes": [], "verification": None, "verdict": "chosen", "reason": "only <one>"},
            {"name": "fit", "kind": "aposteriori", "wcsname": "IDC_x-FIT_REL_GAIAeDR3", "source": "s", "quality": 1,
             "details": {"residuals": {"x": [1, 2, 3], "y": [1, 3, 2], "dx": [0.1, -0.1, 0.0], "dy": [0.0, 0.1, -0.1]}},
             "notes": [], "verification": {"status": "pass", "reason": "ok"}, "verdict": "lost", "reason": "r"},
        ],
        "chosen": {"name": "default", "wcsname": "IDC_x", "why": "only <one>"},
        "alignment": [], "drizzle": [], "astrodrizzle_runs": 0, "timings": {"resolve": 0.1},
        "qa": {"x_drz.fits": {"ratio": 0.1, "limit": 0.3, "flagged": False, "footprint_pixels": 4}},
        "updated_inputs": [], "products": [], "settings": {},
    }
    page = write_html(report, tmp_path / "x_report.html").read_text()
    assert "only &lt;one&gt;" in page  # escaped, not raw HTML
    assert len(re.findall(r"data:image/png;base64,", page)) == 1  # the residual plot
    assert "IDC_x-FIT_REL_GAIAeDR3" in page
    json.dumps(report)  # the schema is plain JSON


def test_run_record_json_has_every_documented_key_and_joins_verdicts_and_verifications(tmp_path):
    from types import SimpleNamespace

    from autodriz.exitcodes import ExitCode
    from autodriz.report import ChosenRecord, DatasetRecord, DrizzleRecord, RunStatus, build_report
    from autodriz.select import Verdict

    def candidate(name: str, kind: str) -> SimpleNamespace:
        return SimpleNamespace(name=name, kind=kind, wcsname=f"W-{name}", source="s", quality=1, notes=("n",),
                               details={"statistics": {"rms_mas": float("nan"), "n_matches": np.int64(12)}},
                               unfitted_wcsnames={"/d/x_flt.fits": "W-start"} if kind == "aposteriori" else {})

    class Verification:  # stands in for verify.VerificationResult: the record takes its as_dict()
        def as_dict(self):
            return {"status": "pass", "reason": "ok", "offsets": (0.1, 0.2)}

    timings = {"resolve": 0.1}
    record = build_report(
        version="v", versions={"numpy": "1"}, input_path=tmp_path / "x_asn.fits",
        dataset=DatasetRecord("x", "ACS/WFC", ("F606W",), ("a", "b"), (), {"c": "EXPTIME = 0"},
                              {"b": ("saturated",)}, True, None),
        candidates=[candidate("default", "default"), candidate("fit", "aposteriori"), candidate("odd", "apriori")],
        verdicts=[Verdict("fit", "W-fit", "aposteriori", "chosen", "best"),
                  Verdict("default", "W-default", "default", "lost", "ranked below")],
        chosen=ChosenRecord("fit", "W-fit", "best"), verifications={"fit": Verification()}, alignment=["a line"],
        drizzle_runs=[DrizzleRecord("x_drz.fits", "MDRIZTAB", 1.23, ("a_flt.fits[sci,1]",))], timings=timings,
        qa={"x_drz.fits": weight_map_check(np.ones((3, 3)))}, updated_inputs=[tmp_path / "a_flt.fits"],
        products=[tmp_path / "x_drz.fits"], settings={"catalog": None}, status=RunStatus.of(ExitCode.OK),
        skipped_stages={"apriori": "switched off"}, provenance={"inputs": []},
    )
    timings["drizzle"] = 5.0  # a stage after the record was made does not change it
    data = record.as_dict()
    assert list(data) == ["schema", "autodriz", "versions", "input", "dataset", "candidates", "chosen", "alignment",
                          "skipped_stages", "drizzle", "astrodrizzle_runs", "timings", "qa", "updated_inputs",
                          "products", "settings", "status", "provenance"]
    json.dumps(data, allow_nan=False)  # plain JSON: NaN became null, numpy scalars Python numbers
    assert data["schema"] == SCHEMA_VERSION and data["timings"] == {"resolve": 0.1}
    assert [(c["name"], c["verdict"], c["reason"]) for c in data["candidates"]] == [
        ("default", "lost", "ranked below"), ("fit", "chosen", "best"), ("odd", "pruned", "")]
    assert [c["verification"] for c in data["candidates"]] == [
        None, {"status": "pass", "reason": "ok", "offsets": [0.1, 0.2]}, None]
    assert data["candidates"][0]["details"]["statistics"] == {"rms_mas": None, "n_matches": 12}
    # An exposure a fit carried but did not fit is shown with the fit's details.
    assert data["candidates"][1]["details"]["unfitted_wcsname"] == {"/d/x_flt.fits": "W-start"}
    assert "unfitted_wcsname" not in data["candidates"][0]["details"]
    assert data["astrodrizzle_runs"] == 1 and data["drizzle"][0]["drizzled"] == ["a_flt.fits[sci,1]"]
    assert data["status"] == {"exit_code": "OK", "exit": 0}
    assert data["dataset"]["not_aligned"] == {"b": ["saturated"]} and data["dataset"]["dropped"] == {"c": "EXPTIME = 0"}
    assert data["qa"]["x_drz.fits"]["footprint_pixels"] == 9 and data["chosen"]["why"] == "best"
    # The page is rendered from the JSON form: the record and its JSON give the same page.
    assert write_html(record, tmp_path / "a.html").read_text() == write_html(data, tmp_path / "b.html").read_text()
