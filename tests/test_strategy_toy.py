"""Adding a strategy is one class and one entry in the tuple the pipeline runs (issue 16).

The toy strategy below is the whole of a new strategy: it proposes one candidate (the
default's WCS under its own name, with a fit score) in its own folder. Given to
:func:`autodriz.pipeline.process` beside the built-in strategies, its candidate is ranked by
its score, verified with the images, and wins; the stages switched off are skipped with a
waypoint and in the report. Real stwcs/drizzlepac on a small simulated visit.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace

from astropy.io import fits

from autodriz.config import Settings
from autodriz.exitcodes import ExitCode
from autodriz.fitquality import FitScore, FitStatistics
from autodriz.pipeline import STRATEGIES, process
from autodriz.simulate import EXACT_WORLD, SimulationConfig, simulate_visit
from autodriz.solutions.base import Candidate, RunContext, StagePlan, Strategy, copy_exposures, prepare_workdir

TOY_WCSNAME = "IDC_0461802ej-FIT_REL_TOY"


class ToyStrategy:
    """Proposes the default's WCS renamed, scored as a perfect relative fit."""

    folder = "toy"
    section = ""
    logger = logging.getLogger("autodriz.solutions.toy")  # under autodriz: its lines reach the trailer

    def plan(self, ctx: RunContext) -> StagePlan:
        return StagePlan(("toy stage on: the default's WCS, renamed",))

    def propose(self, ctx: RunContext) -> list[Candidate]:
        workdir = prepare_workdir(ctx.folder(self))
        made = copy_exposures(list(ctx.default.copies.values()), workdir)
        copies = {original: made[copy] for original, copy in ctx.default.copies.items()}
        for copy in copies.values():
            with fits.open(copy, mode="update") as hdul:
                for hdu in hdul:
                    if hdu.name == "SCI":
                        hdu.header["WCSNAME"] = TOY_WCSNAME
        stats = FitStatistics(geometry="rscale", succeeded=True, n_matches=120, rms_mas=2.0)
        self.logger.info("toy candidate in %s", workdir)
        return [Candidate("toy", TOY_WCSNAME, workdir, copies, "toy strategy", kind="aposteriori", quality=1,
                          score=FitScore(1, (), stats, catalog="TOY", mode="REL"))]


def test_a_toy_strategy_is_one_class_and_one_tuple_entry(tmp_path):
    assert isinstance(ToyStrategy(), Strategy)
    # Relative pointing errors of zero: the images register with the default's WCS, so the
    # toy's candidate (the same WCS) verifies.
    visit = simulate_visit(tmp_path / "visit", SimulationConfig(**EXACT_WORLD, seed=11, chip_shape=(128, 256), n_stars=80, write_flc=False,
                                                                 pointing_error_mas=(60.0, -40.0)))
    settings = Settings(apply_apriori=False, compute_aposteriori=False, jref=visit.jref_dir)

    result = process(visit.asn_path, settings, strategies=(*STRATEGIES, ToyStrategy()))

    assert result.exit_code == ExitCode.OK, result.message
    assert result.wcsname == TOY_WCSNAME
    report = json.loads(result.report.read_text())
    toy = next(c for c in report["candidates"] if c["name"] == "toy")
    assert toy["verdict"] == "chosen" and toy["verification"]["status"] == "pass"
    assert report["chosen"]["name"] == "toy" and "best-ranked aposteriori candidate" in report["chosen"]["why"]
    assert "toy" in report["timings"] and "toy stage on: the default's WCS, renamed" in report["alignment"]
    # The built-in alignment stages that are switched off are skipped, said once each.
    assert set(report["skipped_stages"]) == {"apriori", "aposteriori"}
    assert report["skipped_stages"]["apriori"] == "a priori stage off (default)"
    trailer = result.trailer.read_text()
    assert "AUTODRIZ-SKIPPED apriori a priori stage off (default)" in trailer
    assert "AUTODRIZ-STAGE start aposteriori" not in trailer
    assert "AUTODRIZ-STAGE end toy ok" in trailer and "toy candidate in " in trailer
    # The toy's WCS is what the inputs now carry.
    for path in [*visit.flt_paths, *visit.flc_paths]:
        with fits.open(path) as hdul:
            assert {h.header["WCSNAME"] for h in hdul if h.name == "SCI"} == {TOY_WCSNAME}


def test_a_grism_dataset_given_the_direct_images_wcs_skips_every_alignment_stage(tmp_path):
    from types import SimpleNamespace

    from autodriz.pipeline import _alignment_plan

    ctx = RunContext(SimpleNamespace(filters=("G800L",), root="j1"), Settings(), tmp_path, ())
    lines, skipped = _alignment_plan(ctx, (*STRATEGIES[1:], ToyStrategy()), "IDC_x-FIT_REL_GAIADR3: direct images")
    assert lines == ["alignment skipped: G800L exposures are grism/prism (spectroscopic) images; "
                     "drizzled with IDC_x-FIT_REL_GAIADR3: direct images"]
    assert set(skipped) == {"apriori", "aposteriori", "toy"} and set(skipped.values()) == set(lines)
    # Otherwise each strategy's own plan decides; a switch names where its value came from.
    off = Settings(apply_apriori=False, provenance={"apply_apriori": "env:ASTROMETRY_APPLY_APRIORI"})
    lines, skipped = _alignment_plan(replace(ctx, settings=off), (STRATEGIES[1], ToyStrategy()))
    assert skipped == {"apriori": "a priori stage off (env:ASTROMETRY_APPLY_APRIORI)"}
    assert lines == ["a priori stage off (env:ASTROMETRY_APPLY_APRIORI)", "toy stage on: the default's WCS, renamed"]
    assert ctx.folder(ToyStrategy()) == tmp_path / "j1_toy"
