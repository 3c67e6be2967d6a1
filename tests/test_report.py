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
