"""Exposure screening (drizzlepac analyze.py's rules): pure function, alignment plan, end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from astropy.io import fits

from autodriz.cli import main
from autodriz.config import Settings
from autodriz.exitcodes import ExitCode
from autodriz.inputs import resolve_input
from autodriz.screening import CAL_TARGETS, screen_for_alignment
from autodriz.simulate import EXACT_WORLD, SimulationConfig, simulate_visit
from autodriz.solutions.aposteriori import AposterioriStrategy
from autodriz.solutions.base import RunContext
from autodriz.truth import load_truth, visit_error

CLEAN = {"INSTRUME": "WFC3", "DETECTOR": "UVIS", "MTFLAG": "F", "SCAN_TYP": "N", "FGSLOCK": "FINE",
         "QUALITY": "", "CHINJECT": "NONE", "TARGNAME": "NGC6791"}


def test_a_clean_header_and_missing_keywords_are_alignable():
    assert screen_for_alignment(CLEAN).alignable
    assert screen_for_alignment({"INSTRUME": "ACS"}).reasons == ()


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("MTFLAG", "T", "MTFLAG=T"),
        ("MTFLAG", True, "MTFLAG=T"),  # WFPC2 writes a FITS boolean
        ("SCAN_TYP", "C", "SCAN_TYP=C"),
        ("SCAN_TYP", "D", "SCAN_TYP=D"),
        ("FGSLOCK", "GYROS", "FGSLOCK=GYROS"),
        ("FGSLOCK", "COARSE", "FGSLOCK=COARSE"),
        ("QUALITY", "GSFAIL", "QUALITY=GSFAIL"),
        ("QUALITY", "tdf-down at 12:00", "QUALITY=TDF-DOWN AT 12:00"),
        ("CHINJECT", "LINE10", "CHINJECT=LINE10"),
        ("TARGNAME", "DARK", "TARGNAME=DARK"),
        ("TARGNAME", "TUNGSTEN", "TARGNAME=TUNGSTEN"),
        ("TARGNAME", "EARTH-CALIB", "TARGNAME=EARTH-CALIB"),
    ],
)
def test_each_keyword_excludes_the_exposure_and_says_why(key, value, expected):
    screen = screen_for_alignment({**CLEAN, key: value})
    assert not screen.alignable
    assert len(screen.reasons) == 1 and screen.reasons[0].startswith(expected + " (")


@pytest.mark.parametrize(("key", "value"), [("MTFLAG", "F"), ("MTFLAG", False), ("SCAN_TYP", "N"),
                                            ("FGSLOCK", "FINE"), ("FGSLOCK", "FINE/GYRO"), ("QUALITY", "ok"), ("CHINJECT", "NONE"),
                                            ("TARGNAME", "OMEGACEN")])
def test_values_that_do_not_exclude(key, value):
    assert screen_for_alignment({**CLEAN, key: value}).alignable


def test_several_reasons_are_all_listed():
    assert len(screen_for_alignment({**CLEAN, "MTFLAG": "T", "FGSLOCK": "GYROS"}).reasons) == 2


def test_wfpc2_calibration_targets_need_a_non_ext_imagetyp():
    header = {"INSTRUME": "WFPC2", "TARGNAME": "INTFLAT"}
    assert not screen_for_alignment({**header, "IMAGETYP": "FLAT"}).alignable
    assert screen_for_alignment({**header, "IMAGETYP": "EXT"}).alignable


def test_calibration_target_names_are_drizzlepacs():
    from drizzlepac.haputils import analyze

    assert {k: list(v) for k, v in CAL_TARGETS.items()} == analyze.CAL_TARGETS


def _mark(path: Path, **keywords) -> None:
    with fits.open(path, mode="update") as hdul:
        for key, value in keywords.items():
            hdul[0].header[key] = value


def test_plan_skips_aposteriori_when_no_exposure_can_be_aligned(tmp_path):
    visit = simulate_visit(tmp_path / "v", SimulationConfig(**EXACT_WORLD, n_exposures=2, chip_shape=(64, 128), n_stars=20, seed=2))
    for path in (*visit.flt_paths, *visit.flc_paths):
        _mark(path, MTFLAG="T")
    def aposteriori_plan():
        # The a posteriori strategy decides whether its stage runs (the pipeline asks each one).
        return AposterioriStrategy().plan(RunContext(resolve_input(visit.asn_path), Settings(), tmp_path, ()))

    plan = aposteriori_plan()
    assert plan.skipped is not None and plan.lines == (plan.skipped,)
    assert plan.skipped.startswith("a posteriori stage skipped: no exposure can be aligned") and "MTFLAG=T" in plan.skipped

    _mark(visit.flt_paths[1], MTFLAG="F")
    _mark(visit.flc_paths[1], MTFLAG="F")
    plan = aposteriori_plan()
    assert plan.skipped is None
    assert [line for line in plan.lines if line.startswith("exposure ")] == [
        "exposure jsim01a1q left out of source detection and fitting (drizzled with the WCS the fits "
        "start from): MTFLAG=T (moving target: the field stars trail)"
    ]


def test_moving_target_and_scan_members_are_drizzled_but_not_fitted(tmp_path):
    """Four exposures, one MTFLAG=T and one SCAN_TYP=C: the fit uses the other two, all four are
    drizzled, and the screened ones are delivered with the WCS the fit started from (the GSC240
    a priori solution, 5 mas off: close enough for the product to verify, as in real visits)."""
    visit = simulate_visit(tmp_path / "v", SimulationConfig(**EXACT_WORLD,
        n_exposures=4, pointing_error_mas=(300.0, 200.0), apriori_errors_mas=(("GSC240", 4.0, -3.0),), seed=5,
        write_flc=False,  # the FLT alone shows it, at half the drizzles
    ))
    mt, scan = visit.flt_paths[0].name[:9], visit.flt_paths[1].name[:9]
    _mark(visit.flt_paths[0], MTFLAG="T")
    _mark(visit.flt_paths[1], SCAN_TYP="C")
    code = main([str(visit.asn_path), "--jref", str(visit.jref_dir), "--catalog", str(visit.catalog_path)])
    assert code == ExitCode.OK
    report = json.loads((visit.directory / "jsim01010_report.json").read_text())
    assert report["dataset"]["not_aligned"] == {
        mt: ["MTFLAG=T (moving target: the field stars trail)"], scan: ["SCAN_TYP=C (spatial scan)"],
    }
    chosen = next(c for c in report["candidates"] if c["verdict"] == "chosen")
    assert chosen["kind"] == "aposteriori"
    # Sources were detected on the two others only …
    detected_on = chosen["details"]["sources"]["detected_on"]
    assert len(detected_on) == 2 and not any(n.startswith((mt, scan)) for n in detected_on)
    # … and every exposure is in both products.
    for run in report["drizzle"]:
        assert {d.split("_")[0] for d in run["drizzled"]} == {p.name[:9] for p in visit.flt_paths}
    # Screened exposures keep the start WCS under its own name; the fitted ones carry the fit.
    assert not visit.flc_paths
    for path in visit.flt_paths:
        with fits.open(path) as hdul:
            name = hdul["SCI", 1].header["WCSNAME"]
            assert hdul[0].header["DRIZCORR"] == "COMPLETE"
            hdrnames = [h.header["HDRNAME"] for h in hdul if h.name == "HDRLET"]
            wcsnames = [h.header["WCSNAME"].upper() for h in hdul if h.name == "HDRLET"]
        assert len(set(wcsnames)) == len(wcsnames)
        if path.name.startswith((mt, scan)):
            assert name == "IDC_0461802ej-GSC240" and "-FIT_" not in " ".join(hdrnames)
        else:
            assert name == chosen["wcsname"]
    fitted = [p for p in visit.flt_paths if not p.name.startswith((mt, scan))]
    assert visit_error(fitted, load_truth(visit.truth_path)).rms_mas < 3.0
    trailer = (visit.directory / "jsim01010.tra").read_text()
    assert f"exposure {mt} left out of source detection and fitting" in trailer
    assert f"exposure {scan} left out of source detection and fitting" in trailer
    html = (visit.directory / "jsim01010_report.html").read_text()
    # The attribute's quote style is the template's business; the section and its reason must be there.
    assert re.search(r"""id=["']not-aligned["']""", html) and "SCAN_TYP=C (spatial scan)" in html
