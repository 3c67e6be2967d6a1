"""The accuracy campaign script's plan and summary (the campaign itself is too long for CI)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "accuracy_campaign.py"


def _load():
    spec = importlib.util.spec_from_file_location("accuracy_campaign", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_plan_is_seeded_hostile_and_spread_over_the_sky():
    ac = _load()
    plans = ac.plan_visits(60, ac.CHIP_SHAPES, 2)
    assert plans == ac.plan_visits(60, ac.CHIP_SHAPES, 2)  # same campaign, same visits
    assert plans[:12] == ac.plan_visits(12, ac.CHIP_SHAPES, 2)  # visit k does not depend on N
    groups = [p.group for p in plans]
    assert {g: groups.count(g) for g in set(groups)} == {
        "ACS/WFC gaia-rich": 12, "WFC3/UVIS gaia-rich": 12, "WFC3/IR gaia-rich": 12,
        "ACS/WFC hostile": 12, "ACS/WFC sparse": 6, "ACS/WFC crowded": 6,
    }
    # Each visit is simulated on its own detector, with that detector's chip shape.
    assert all(p.config.detector == p.detector and p.config.chip_shape == ac.CHIP_SHAPES[p.detector] for p in plans)
    assert all(p.config.relative_rotation_arcsec > 0 and p.config.distortion_residual_mas > 0 for p in plans)
    errors = [math.hypot(*p.config.pointing_error_mas) for p in plans]
    assert 100.0 <= min(errors) < 300.0 and 1000.0 < max(errors) <= 2000.0
    assert all(p.config.gaia_dr3_errors and p.config.relative_error_mas > 0 for p in plans)
    assert len({p.config.asn_id for p in plans}) == 60
    # Visits lie > 1 degree apart, so one merged catalog cannot give a visit another's stars.
    ra = np.radians([p.config.ra for p in plans])
    dec = np.radians([p.config.dec for p in plans])
    cosd = np.sin(dec[:, None]) * np.sin(dec) + np.cos(dec[:, None]) * np.cos(dec) * np.cos(ra[:, None] - ra)
    np.fill_diagonal(cosd, -1.0)
    assert np.degrees(np.arccos(cosd.max())) > 1.0


def test_summary_counts_wrong_choices_against_the_best_available_candidate():
    ac = _load()

    def result(name, group, chosen_mas, best_mas, kind="aposteriori", floor=1.0):
        return ac.VisitResult(name, group, 500.0, 500.0, floor, chosen_mas, "c", kind, best_mas, "b", 50.0, "OK")

    results = [
        result("a", "WFC3/IR gaia-rich", 2.0, 2.0),
        result("b", "WFC3/IR gaia-rich", 9.0, 3.0, floor=4.0),  # 6 mas worse than an available one: wrong
        result("c", "ACS/WFC sparse", 116.0, 116.0, kind="default"),
    ]
    assert [r.wrong_choice for r in results] == [False, True, False]
    table = ac.summary_table(results)
    # chosen median 5.5, p95 8.7, floor median 2.5 (of 1 and 4), one wrong choice
    assert "| WFC3/IR gaia-rich | 2 | 2/2 (100 %) | 5.5 | 8.7 | 2.5 | 1 |" in table
    assert "| ACS/WFC sparse | 1 | 0/1 (0 %) | 116.0 |" in table
    assert "| all | 3 | 2/3 (67 %) |" in table and table.count("\n") == 5


def test_write_doc_keeps_the_hand_written_text_around_the_tables(tmp_path):
    ac = _load()
    doc = tmp_path / "accuracy.md"
    ac.write_doc(doc, "table one\n")
    assert doc.read_text().startswith("# Accuracy campaign\n\n" + ac.DOC_BEGIN)
    doc.write_text(doc.read_text().replace(ac.DOC_END, ac.DOC_END + "\n\nWhy the crowded visits failed."))
    ac.write_doc(doc, "table two\n")
    text = doc.read_text()
    assert "table two" in text and "table one" not in text and text.rstrip().endswith("Why the crowded visits failed.")
