"""Multi-filter visits (issue 12): grouping, the common grid, the cross-filter check, end to end.

The acceptance case is a synthetic ACS/WFC visit in F606W and F814W: the same stars (one star
list, no proper motions), different dithers and different pointing errors per filter, processed
with the real stwcs/tweakwcs/drizzlepac from loose FLT/FLC files in one folder. A G800L grism
group (point sources, see autodriz.simulate) follows the F814W images with their pointing error:
it must be drizzled onto the same grid with the F814W correction applied.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from autodriz.cli import main
from autodriz.errors import InputError
from autodriz.exitcodes import ExitCode
from autodriz.inputs import Dataset, Exposure
from autodriz.simulate import EXACT_WORLD, SimulationConfig, simulate_visit
from autodriz.truth import load_truth, visit_error
from autodriz.visit import (
    BUILT_BY,
    OutputGrid,
    apply_correction,
    collect_datasets,
    common_grid,
    consistency,
    correct_sky,
    direct_images_for,
    fit_correction,
    group_datasets,
    mean_expstart,
    product_sources,
    worst_exit_code,
    write_group_asn,
)

# --------------------------------------------------------------------------------------------
# grouping (pure)
# --------------------------------------------------------------------------------------------


def _exposure(root: str, filters: tuple[str, ...], folder: Path = Path("/data"), instrument: str = "WFC3",
              detector: str = "IR", obstype: str = "IMAGING") -> Exposure:
    return Exposure(root, folder / f"{root}_flt.fits", None, instrument, detector, filters, 100.0, obstype, "PERFORM")


def _dataset(kind: str, root: str, exposures: list[Exposure], folder: Path = Path("/data")) -> Dataset:
    e = exposures[0]
    name = f"{root}_asn.fits" if kind == "asn" else f"{root}_flt.fits"
    filters = tuple(dict.fromkeys(f for x in exposures for f in x.filters))
    return Dataset(folder / name, kind, root, folder, tuple(exposures), (), e.instrument, e.detector, filters,
                   "PERFORM")


def test_groups_by_filter_imaging_first_and_asn_kept():
    grism = _dataset("asn", "ib6o23010", [_exposure("ib6o23rsq", ("G141",), obstype="SPECTROSCOPIC"),
                                          _exposure("ib6o23ruq", ("G141",), obstype="SPECTROSCOPIC")])
    loose = [_dataset("flt", r, [_exposure(r, ("F140W",))]) for r in ("ib6o23rtq", "ib6o23rwq")]
    groups = group_datasets([grism, *loose], "ib6o23")

    assert [g.key for g in groups] == [("WFC3/IR", "F140W"), ("WFC3/IR", "G141")]
    imaging, spectra = groups
    # Loose exposures need a built table; a group that is exactly one ASN runs from it.
    assert imaging.root == "ib6o23_f140w" and imaging.asn is None and not imaging.spectroscopic
    assert [e.rootname for e in imaging.exposures] == ["ib6o23rtq", "ib6o23rwq"]
    assert spectra.root == "ib6o23010" and spectra.asn == Path("/data/ib6o23010_asn.fits") and spectra.spectroscopic


def test_acs_filters_group_by_the_non_clear_filter_and_split_detectors():
    a = _dataset("flt", "j1", [_exposure("j1", ("F606W",), instrument="ACS", detector="WFC")])
    b = _dataset("flt", "j2", [_exposure("j2", ("F814W",), instrument="ACS", detector="WFC")])
    c = _dataset("flt", "j3", [_exposure("j3", ("F606W",), instrument="ACS", detector="WFC")])
    d = _dataset("flt", "i4", [_exposure("i4", ("F606W",), instrument="WFC3", detector="UVIS")])
    groups = group_datasets([a, b, c, d], "vis")
    assert [(g.key, g.root, [e.rootname for e in g.exposures]) for g in groups] == [
        (("ACS/WFC", "F606W"), "vis_wfc_f606w", ["j1", "j3"]),
        (("ACS/WFC", "F814W"), "vis_f814w", ["j2"]),
        # One filter name on two detectors: the detector is named so the products differ.
        (("WFC3/UVIS", "F606W"), "vis_uvis_f606w", ["i4"]),
    ]


def test_two_tables_with_the_same_product_root_are_refused():
    a = _dataset("asn", "same", [_exposure("a", ("F140W",))])
    b = _dataset("asn", "same", [_exposure("b", ("F160W",))])
    with pytest.raises(InputError, match="same products"):
        group_datasets([a, b], "v")


def test_asn_mixing_filters_is_refused():
    mixed = _dataset("asn", "x", [_exposure("a", ("F140W",)), _exposure("b", ("F160W",))])
    with pytest.raises(InputError, match="mixes filters"):
        group_datasets([mixed], "v")


def test_exposure_named_twice_is_refused():
    one = _dataset("flt", "a", [_exposure("a", ("F140W",))])
    with pytest.raises(InputError, match="named twice"):
        group_datasets([one, one], "v")


def test_group_spread_over_folders_is_refused():
    a = _dataset("flt", "a", [_exposure("a", ("F140W",), Path("/x"))], Path("/x"))
    b = _dataset("flt", "b", [_exposure("b", ("F140W",), Path("/y"))], Path("/y"))
    with pytest.raises(InputError, match="different folders"):
        group_datasets([a, b], "v")


def test_worst_exit_code():
    assert worst_exit_code([ExitCode.OK, ExitCode.OK]) == ExitCode.OK
    assert worst_exit_code([ExitCode.OK, ExitCode.DEFAULT_ONLY]) == ExitCode.DEFAULT_ONLY
    assert worst_exit_code([ExitCode.DEFAULT_ONLY, ExitCode.DRIZZLE_FAILED, ExitCode.OK]) == ExitCode.DRIZZLE_FAILED


# --------------------------------------------------------------------------------------------
# the common grid (pure)
# --------------------------------------------------------------------------------------------


def _box(ra0: float, dec0: float, w_arcsec: float, h_arcsec: float) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(-0.5, 0.5, 5)
    xi = np.concatenate([t * w_arcsec, np.full(5, w_arcsec / 2), -t * w_arcsec, np.full(5, -w_arcsec / 2)])
    eta = np.concatenate([np.full(5, -h_arcsec / 2), t * h_arcsec, np.full(5, h_arcsec / 2), -t * h_arcsec])
    return ra0 + xi / 3600 / np.cos(np.radians(dec0)), dec0 + eta / 3600


def test_common_grid_is_north_up_even_and_covers_every_footprint():
    a = _box(150.0, 2.0, 200.0, 100.0)
    b = _box(150.0 + 60 / 3600, 2.0 - 30 / 3600, 200.0, 100.0)  # offset by (60", -30")
    grid = common_grid([a, b], 0.05, margin_arcsec=2.0, margin_fraction=0.0)
    assert grid.nx % 2 == 0 and grid.ny % 2 == 0
    assert (grid.crpix1, grid.crpix2) == (grid.nx / 2 + 0.5, grid.ny / 2 + 0.5)
    np.testing.assert_array_equal(grid.cd, [[-0.05 / 3600, 0.0], [0.0, 0.05 / 3600]])
    # The union is 260" × 130"; plus 2" per side at 0.05"/px.
    assert grid.nx == pytest.approx((260 + 4) / 0.05, abs=4)
    assert grid.ny == pytest.approx((130 + 4) / 0.05, abs=4)
    w = grid.wcs()
    for ra, dec in (a, b):
        x, y = w.all_world2pix(ra, dec, 0)
        # Every corner lies inside, at least ~the margin (40 px) from the edge.
        assert x.min() > 35 and y.min() > 35 and x.max() < grid.nx - 36 and y.max() < grid.ny - 36


def test_common_grid_scale_and_margin_fraction():
    a = _box(10.0, -45.0, 100.0, 100.0)
    coarse = common_grid([a], 0.128, margin_arcsec=0.0, margin_fraction=0.0)
    fine = common_grid([a], 0.04, margin_arcsec=0.0, margin_fraction=0.0)
    assert coarse.nx == pytest.approx(100 / 0.128, abs=2) and fine.nx == pytest.approx(100 / 0.04, abs=2)
    wide = common_grid([a], 0.128, margin_arcsec=0.0, margin_fraction=0.1)
    assert wide.nx == pytest.approx(120 / 0.128, abs=2)  # 10 % of 100" on each side
    with pytest.raises(ValueError):
        common_grid([a], 0.0)


def test_grid_drizzle_parameters_say_one_thing():
    grid = OutputGrid(10.0, -45.0, 0.05, 100, 80, 50.5, 40.5)
    params = grid.drizzle_parameters(Path("/w/v_grid.fits"), pixfrac=0.8)
    assert params["final_refimage"] == "/w/v_grid.fits[1]"
    assert (params["final_ra"], params["final_dec"], params["final_scale"], params["final_rot"]) == (10.0, -45.0, 0.05, 0.0)
    assert (params["final_outnx"], params["final_outny"], params["final_crpix1"], params["final_crpix2"]) == (100, 80, 50.5, 40.5)
    assert params["final_pixfrac"] == 0.8 and params["final_wcs"] is True


# --------------------------------------------------------------------------------------------
# cross-filter consistency (pure)
# --------------------------------------------------------------------------------------------


def _stars(n: int = 200, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1000, (n, 2))


def test_consistency_passes_small_offsets_and_reports_them():
    ref = _stars()
    rng = np.random.default_rng(4)
    other = ref + (0.03, -0.02) + rng.normal(0, 0.02, ref.shape)
    check = consistency(ref, other)
    assert check.status == "pass"
    assert check.n_matched > 190
    assert check.dx_pix == pytest.approx(0.03, abs=0.01) and check.dy_pix == pytest.approx(-0.02, abs=0.01)
    assert check.rms_pix == pytest.approx(0.02 * np.sqrt(2), abs=0.01)


def test_consistency_fails_a_misaligned_filter_despite_outliers_and_unmatched_sources():
    ref = _stars()
    other = ref + (0.25, 0.0)
    other[:20] += 0.7  # a few bad matches (blends) must not move the median
    other = np.vstack([other, _stars(50, seed=9)])  # sources only one filter sees
    check = consistency(ref, other)
    assert check.status == "fail"
    assert check.offset_pix == pytest.approx(0.25, abs=0.01)
    assert "> 0.1 px" in check.reason


def test_consistency_without_enough_matches_cannot_judge():
    ref = _stars(3)
    assert consistency(ref, ref + 0.01).status == "unknown"
    assert consistency(np.empty((0, 2)), ref).status == "unknown"


# --------------------------------------------------------------------------------------------
# the direct images' correction, for grism/prism groups (pure)
# --------------------------------------------------------------------------------------------


def test_fit_correction_recovers_shift_and_rotation_and_moves_a_header_alike():
    ra, dec = _box(53.07, -27.71, 120.0, 120.0)
    truth = fit_correction((ra, dec), (ra, dec))
    assert truth.east_arcsec == pytest.approx(0.0, abs=1e-9) and truth.rotation_deg == pytest.approx(0.0, abs=1e-12)
    # Build "after" by applying a known correction, then fit it back.
    known = truth.__class__("W", "F140W", truth.pivot_ra, truth.pivot_dec, 0.35, -0.2, 0.01, 0.0, len(ra))
    ra2, dec2 = correct_sky(ra, dec, known)
    fitted = fit_correction((ra, dec), (ra2, dec2), wcsname="W")
    assert fitted.east_arcsec == pytest.approx(0.35, abs=1e-6)
    assert fitted.north_arcsec == pytest.approx(-0.2, abs=1e-6)
    assert fitted.rotation_deg == pytest.approx(0.01, abs=1e-8)
    assert fitted.rms_mas < 1e-3
    # A chip header moved by the correction maps its pixels where the correction puts them.
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [53.06, -27.70]
    w.wcs.crpix = [512.0, 512.0]
    w.wcs.cd = np.array([[-3.1e-5, 1.2e-5], [1.2e-5, 3.1e-5]])
    header = fits.Header({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 53.06, "CRVAL2": -27.70,
                          "CRPIX1": 512.0, "CRPIX2": 512.0, "CD1_1": -3.1e-5, "CD1_2": 1.2e-5, "CD2_1": 1.2e-5,
                          "CD2_2": 3.1e-5})  # HST SCI headers carry CD, not PC/CDELT
    apply_correction(header, fitted)
    x, y = np.meshgrid(np.linspace(0, 1013, 5), np.linspace(0, 1013, 5))
    before = w.all_pix2world(x.ravel(), y.ravel(), 0)
    after = WCS(header).all_pix2world(x.ravel(), y.ravel(), 0)
    expected = correct_sky(*before, fitted)
    sep = np.hypot((after[0] - expected[0]) * np.cos(np.radians(after[1])), after[1] - expected[1]) * 3.6e6
    assert sep.max() < 0.5  # mas


def test_pair_by_pointing_pairs_same_pointing_and_refuses_far_or_ambiguous():
    from autodriz.visit import pair_by_pointing

    ra0, dec0 = 53.07, -27.71
    c = np.cos(np.radians(dec0))

    def at(east_arcsec: float, north_arcsec: float) -> tuple[float, float]:
        return ra0 + east_arcsec / 3600 / c, dec0 + north_arcsec / 3600

    direct = {"d1": at(0.0, 0.0), "d2": at(19.0, -5.0), "d3": at(0.5, 0.0)}
    grism = {"g1": at(19.007, -5.0), "g2": at(0.3, 0.0), "g3": at(40.0, 0.0), "g4": at(0.01, 0.0)}
    pairs = {p.grism: p for p in pair_by_pointing(grism, direct)}
    assert pairs["g1"].direct == "d2" and pairs["g1"].separation_arcsec == pytest.approx(0.007, abs=1e-4)
    assert pairs["g2"].direct is None and "ambiguous" in pairs["g2"].reason  # 0.3" from d1, 0.2" from d3
    assert pairs["g3"].direct is None and "away" in pairs["g3"].reason
    assert pairs["g4"].direct == "d1"
    assert [p.direct for p in pair_by_pointing({"g": at(0, 0)}, {})] == [None]


def test_transfer_moves_each_paired_exposure_by_its_own_correction(tmp_path):
    from autodriz.solutions.base import Candidate
    from autodriz.visit import WCSCorrection, transfer_to

    group = WCSCorrection("W", "F140W (x)", 53.07, -27.71, 0.39, 0.16, 0.0, 0.0, 4)
    own = WCSCorrection("W", "d1, F140W (x)", 53.07, -27.71, 0.42, 0.12, 0.0, 0.0, 1)
    header = {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 53.07, "CRVAL2": -27.71, "CRPIX1": 507.0,
              "CRPIX2": 507.0, "CD1_1": -3.6e-5, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": 3.6e-5}
    copies = {}
    for name in ("g1_flt.fits", "g2_flt.fits"):
        copies[tmp_path / "in" / name] = tmp_path / name
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((2, 2)), fits.Header(header), name="SCI")]).writeto(tmp_path / name)
    candidate = Candidate(name="default", wcsname="IDC", workdir=tmp_path, copies=copies, source="updatewcs")
    moved = transfer_to(group, {"g1_flt.fits": own})(candidate)
    for name, corr in (("g1_flt.fits", own), ("g2_flt.fits", group)):
        h = fits.getheader(tmp_path / name, "SCI")
        ra, dec = correct_sky(np.array([53.07]), np.array([-27.71]), corr)
        assert (h["CRVAL1"], h["CRVAL2"]) == (pytest.approx(ra[0], abs=1e-10), pytest.approx(dec[0], abs=1e-10))
        assert h["WCSNAME"] == "W"
    assert moved.details["wcs_transfer_per_exposure"]["g1_flt.fits"]["east_arcsec"] == 0.42


def test_grism_keeps_its_default_when_the_direct_images_kept_theirs(tmp_path):
    """What the real F140W + G141 visit did offline without a catalog or the IDCTAB (exit 9):
    the direct images kept their default WCS, so there is nothing to transfer."""
    from autodriz.visit import GroupOutcome, VisitGroup, grism_hook

    report = tmp_path / "d_report.json"
    report.write_text(json.dumps({"chosen": {"name": "default", "wcsname": "OPUS"}, "candidates": []}))
    direct = VisitGroup("WFC3/IR", "F140W", "d", (_exposure("ib6o23rtq", ("F140W",), tmp_path),))
    grism = VisitGroup("WFC3/IR", "G141", "g", (_exposure("ib6o23rsq", ("G141",), tmp_path, obstype="SPECTROSCOPIC"),),
                       spectroscopic=True)
    done = GroupOutcome(direct, tmp_path / "d_asn.fits", ExitCode.DEFAULT_ONLY, "", "OPUS", (), report, None)
    hook, note = grism_hook(grism, [direct], {}, [done], {})
    assert hook is None
    assert note == ("the direct images (F140W) kept their pipeline-default WCS (OPUS): the grism keeps its own "
                    "default WCS, made the same way")


def test_visit_report_is_typed_and_its_page_uses_the_dataset_reports_template(tmp_path):
    from autodriz.visit import GroupOutcome, GroupRecord, VisitGroup, VisitRecord, visit_banner, write_visit_html

    grid = OutputGrid(10.0, -45.0, 0.05, 100, 80, 50.5, 40.5)
    direct = VisitGroup("WFC3/IR", "F140W", "d", (_exposure("ib6o23rtq", ("F140W",), tmp_path),))
    grism = VisitGroup("WFC3/IR", "G141", "g", (_exposure("ib6o23rsq", ("G141",), tmp_path, obstype="SPECTROSCOPIC"),),
                       spectroscopic=True)
    outcomes = [GroupOutcome(direct, tmp_path / "d_asn.fits", ExitCode.OK, "m", "W", (tmp_path / "d_drz.fits",),
                             None, None),
                GroupOutcome(grism, tmp_path / "g_asn.fits", ExitCode.DEFAULT_ONLY, "m", "OPUS", (), None, None,
                             "kept <its> default")]
    record = VisitRecord("v", ExitCode.DEFAULT_ONLY, grid,
                         tuple(GroupRecord.of(o, {"d_drz.fits": {"ratio": float("nan"), "flagged": True}})
                               for o in outcomes), (), {"catalog": None})
    data = record.as_dict()
    json.dumps(data, allow_nan=False)
    assert list(data) == ["schema", "autodriz", "visit", "exit_code", "exit_name", "grid", "groups", "consistency",
                          "settings"]
    assert (data["exit_code"], data["exit_name"]) == (9, "DEFAULT_ONLY")
    assert [(g["root"], g["asn_built"], g["spectroscopic"], g["wcs_transfer"]) for g in data["groups"]] == [
        ("d", True, False, None), ("g", True, True, "kept <its> default")]
    assert data["groups"][0]["weight_maps"]["d_drz.fits"]["ratio"] is None
    assert data["consistency"] == {"tolerance_pix": 0.1, "checks": []}
    page = write_visit_html(record, tmp_path / "v_visit_report.html").read_text()
    # The dataset report's template: its banner (amber, not OK), style sheet and image check.
    assert f'<p id="summary" class="warn">{html.escape(visit_banner(record))}</p>' in page
    assert visit_banner(record).startswith("DEFAULT_ONLY (exit 9) · 2 group(s) on one 100 × 80 px grid")
    assert "#summary.ok" in page and "imagesLoaded" in page
    assert "kept &lt;its&gt; default" in page and "nothing to compare" in page


# --------------------------------------------------------------------------------------------
# synthetic two-filter visit (I/O, real stwcs/tweakwcs/drizzlepac)
# --------------------------------------------------------------------------------------------

CONFIGS = {
    "F606W": {"asn_id": "JSIM01010", "pointing_error_mas": (120.0, -80.0), "seed": 11, "time_obs": "09:00:00"},
    "F814W": {"asn_id": "JSIM02010", "pointing_error_mas": (-60.0, 140.0), "seed": 12, "time_obs": "10:00:00",
              "dither_arcsec": ((0.0, 0.0), (0.31, -0.17))},
    # The grism follows the F814W direct images in the same pointing (same guide stars, so the
    # same pointing error), with its own dither; G800L is simulated as point sources, so that
    # where its WCS puts the stars can be measured.
    "G800L": {"asn_id": "JSIM03010", "pointing_error_mas": (-60.0, 140.0), "seed": 13, "time_obs": "10:20:00",
              "dither_arcsec": ((0.1, 0.05), (0.22, 0.2))},
}


def _write_star_field(path: Path, ra0: float, dec0: float) -> Path:
    """One star list for both filters: ~190 stars fall on the two 256×512 chip strips."""
    rng = np.random.default_rng(5)
    n = 7000
    ra = ra0 + rng.uniform(-90, 90, n) / 3600 / np.cos(np.radians(dec0))
    dec = dec0 + rng.uniform(-90, 90, n) / 3600
    Table({"ra": ra, "dec": dec, "phot_g_mean_mag": rng.uniform(18, 23.5, n)}).write(
        path, format="ascii.commented_header", overwrite=True
    )
    return path


def simulate_visit_folder(folder: Path) -> dict[str, object]:
    """Every group in one folder; the simulator recentres a catalog on (ra, dec) by its median,
    so aiming at that median keeps every star at its own sky position in both visits."""
    folder.mkdir(parents=True)
    stars = _write_star_field(folder.parent / "stars.cat", 290.22, 37.80)
    cat = Table.read(stars, format="ascii.commented_header")
    ra, dec = float(np.median(cat["ra"])), float(np.median(cat["dec"]))
    return {
        filt: simulate_visit(folder, SimulationConfig(**EXACT_WORLD, filter=filt, ra=ra, dec=dec, catalog=stars,
                                                      pm_sigma_mas_yr=0.0, **kw))  # type: ignore[arg-type]
        for filt, kw in CONFIGS.items()
    }


@pytest.fixture(scope="module")
def two_filter_run(tmp_path_factory):
    """Simulate, remove the ASN tables (loose exposures, as hand reductions get them), run once."""
    base = tmp_path_factory.mktemp("visit")
    visits = simulate_visit_folder(base / "visit")
    folder = base / "visit"
    for v in visits.values():
        v.asn_path.unlink()
    refcat = visits["F606W"].catalog_path  # one absolute catalog for both filters
    t0 = time.perf_counter()
    code = main(["visit", str(folder), "--jref", str(visits["F606W"].jref_dir), "--catalog", str(refcat), "-q"])
    seconds = time.perf_counter() - t0
    return {"code": code, "folder": folder, "visits": visits, "seconds": seconds}


def test_collect_datasets_from_a_folder(tmp_path):
    visits = simulate_visit_folder(tmp_path / "v")
    for v in visits.values():
        v.asn_path.unlink()
    datasets = collect_datasets([tmp_path / "v"])
    # One dataset per exposure (FLC travels with its FLT); the jref/ folder and catalogs are ignored.
    assert [d.root for d in datasets] == ["jsim01a1q", "jsim01a2q", "jsim02a1q", "jsim02a2q", "jsim03a1q", "jsim03a2q"]
    assert all(d.has_flc for d in datasets)
    groups = group_datasets(datasets, "jsim01")
    assert [(g.key, g.root, g.spectroscopic) for g in groups] == [
        (("ACS/WFC", "F606W"), "jsim01_f606w", False),
        (("ACS/WFC", "F814W"), "jsim01_f814w", False),
        (("ACS/WFC", "G800L"), "jsim01_g800l", True),
    ]
    # The grism gets the correction of the direct images closest in time: F814W, not F606W.
    starts = {g.root: mean_expstart(g) for g in groups}
    assert direct_images_for(groups[2], groups[:2], starts) is groups[1]
    asn = write_group_asn(groups[1])
    assert asn.name == "jsim01_f814w_asn.fits"
    assert fits.getval(asn, "ASNBUILT") == BUILT_BY and fits.getval(asn, "FILENAME") == asn.name
    assert not list((tmp_path / "v").glob("*.autodriz-tmp"))
    # A built table is skipped when the folder is collected again (its exposures come loose).
    assert [d.root for d in collect_datasets([tmp_path / "v"])] == [d.root for d in datasets]
    # A table of the same name that autodriz did not build is never replaced.
    asn.unlink()
    fits.HDUList([fits.PrimaryHDU()]).writeto(asn)
    with pytest.raises(InputError, match="not built by autodriz visit"):
        write_group_asn(groups[1])


def test_two_filter_visit_products_share_one_grid_exactly(two_filter_run):
    assert two_filter_run["code"] == ExitCode.OK
    folder = two_filter_run["folder"]
    report = json.loads((folder / "jsim01_visit_report.json").read_text())
    grid = report["grid"]
    products = sorted(folder.glob("jsim01_*_dr?.fits"))
    assert [p.name for p in products] == ["jsim01_f606w_drc.fits", "jsim01_f606w_drz.fits",
                                          "jsim01_f814w_drc.fits", "jsim01_f814w_drz.fits",
                                          "jsim01_g800l_drc.fits", "jsim01_g800l_drz.fits"]
    keys = ("CRVAL1", "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "CRPIX1", "CRPIX2", "NAXIS1", "NAXIS2")
    headers = {p.name: fits.getheader(p, "SCI") for p in products}
    values = {name: tuple(h[k] for k in keys) for name, h in headers.items()}
    assert len(set(values.values())) == 1, values  # bit-identical, not merely close
    first = headers["jsim01_f606w_drz.fits"]
    assert [first["CRVAL1"], first["CRVAL2"]] == grid["crval"]
    assert [first["NAXIS1"], first["NAXIS2"]] == grid["naxis"]
    assert first["CD1_2"] == 0.0 and first["CD2_1"] == 0.0  # north up
    assert first["CD2_2"] * 3600 == pytest.approx(0.05, rel=1e-12)  # ACS/WFC native scale
    # Each product is its own filter's, and every exposure's chips landed on the grid.
    assert fits.getval(folder / "jsim01_f814w_drz.fits", "FILTER2") == "F814W"
    for p in products:
        with fits.open(p) as hdul:
            assert hdul[0].header["NDRIZIM"] == 4
            assert (hdul["WHT"].data > 0).sum() > 0.9 * 2 * 256 * 512
            wht = hdul["WHT"].data
            # Nothing was cut at the edges of the grid.
            assert not wht[0].any() and not wht[-1].any() and not wht[:, 0].any() and not wht[:, -1].any()
    # Loose exposures got an association table each, marked as built.
    for name in ("jsim01_f606w_asn.fits", "jsim01_f814w_asn.fits", "jsim01_g800l_asn.fits"):
        assert fits.getval(folder / name, "ASNBUILT") == BUILT_BY
    assert not (folder / "jsim01_visit").exists(), "the grid's working folder is removed"


def test_two_filter_visit_sources_agree_between_filters_and_with_the_truth(two_filter_run):
    folder = two_filter_run["folder"]
    report = json.loads((folder / "jsim01_visit_report.json").read_text())
    (check,) = report["consistency"]["checks"]
    assert check["status"] == "pass" and check["tolerance_pix"] == 0.1
    assert check["n_matched"] >= 50
    assert check["offset_pix"] <= 0.1
    assert check["product"] == "jsim01_f814w_drc.fits" and check["reference"] == "jsim01_f606w_drc.fits"
    for group in report["groups"]:
        assert len(group["weight_maps"]) == 2 and not any(c["flagged"] for c in group["weight_maps"].values())
    page = (folder / "jsim01_visit_report.html").read_text()
    assert "id=\"consistency\"" in page and "jsim01_f814w_drc.fits" in page and ">pass<" in page
    trailer = (folder / "jsim01_visit.tra").read_text()
    assert "cross-filter check jsim01_f814w_drc.fits vs jsim01_f606w_drc.fits: pass" in trailer
    assert "AUTODRIZ-VERDICT OK exit=0" in trailer

    # Independently of the report: each filter's sources against the true star positions
    # projected onto the grid (truth of the F606W visit; both visits share the stars).
    truth = load_truth(two_filter_run["visits"]["F606W"].truth_path)
    with fits.open(folder / "jsim01_f606w_drc.fits") as hdul:
        grid_wcs = WCS(hdul["SCI"].header)
    tx, ty = grid_wcs.all_world2pix(truth["stars"]["ra"], truth["stars"]["dec"], 0)
    true_xy = np.column_stack([tx, ty])
    for filt in ("f606w", "f814w"):
        found = product_sources(folder / f"jsim01_{filt}_drc.fits", "ACS/WFC")
        vs_truth = consistency(true_xy, found)
        assert vs_truth.n_matched >= 50, vs_truth
        assert vs_truth.offset_pix < 0.1, (filt, vs_truth)


def test_two_filter_visit_each_filter_aligned_to_the_absolute_frame(two_filter_run):
    folder = two_filter_run["folder"]
    for filt, visit in two_filter_run["visits"].items():
        truth = load_truth(visit.truth_path)
        err = visit_error([*visit.flt_paths, *visit.flc_paths], truth)
        # The injected pointing errors are 144 and 152 mas; the fitted WCS is within a few mas.
        assert truth["expected_default_error_mas"] > 100
        assert err.rms_mas < 5.0, (filt, err)
        for path in visit.flt_paths:
            with fits.open(path) as hdul:
                assert {h.header["WCSNAME"] for h in hdul if h.name == "SCI"} == {"IDC_0461802ej-FIT_REL_USER"}
    report = json.loads((folder / "jsim01_visit_report.json").read_text())
    assert [(g["filter"], g["exit_name"], g["wcsname"], g["asn_built"]) for g in report["groups"]] == [
        ("F606W", "OK", "IDC_0461802ej-FIT_REL_USER", True),
        ("F814W", "OK", "IDC_0461802ej-FIT_REL_USER", True),
        ("G800L", "OK", "IDC_0461802ej-FIT_REL_USER", True),
    ]


def test_grism_is_drizzled_on_the_grid_with_the_direct_images_solution(two_filter_run):
    folder = two_filter_run["folder"]
    grism = two_filter_run["visits"]["G800L"]
    truth = load_truth(grism.truth_path)
    assert truth["expected_default_error_mas"] > 100  # its own default WCS is 152 mas off …
    err = visit_error([*grism.flt_paths, *grism.flc_paths], truth)
    assert err.rms_mas < 5.0, err  # … and the F814W correction, transferred, removes it.
    report = json.loads((folder / "jsim01_visit_report.json").read_text())
    g800l = report["groups"][2]
    assert g800l["spectroscopic"] and "of F814W (jsim01_f814w) transferred" in g800l["wcs_transfer"]
    page = (folder / "jsim01_visit_report.html").read_text()
    assert 'id="grism"' in page and "F814W (jsim01_f814w) transferred" in page
    trailer = (folder / "jsim01_g800l.tra").read_text()
    assert "alignment skipped: G800L exposures are grism/prism" in trailer
    g800l_report = json.loads((folder / "jsim01_g800l_report.json").read_text())
    (plan,) = g800l_report["alignment"]
    assert "drizzled with IDC_0461802ej-FIT_REL_USER: " in plan and "correction" in plan and "pipeline-default WCS, as" not in plan
    assert "grism/prism WCS: IDC_0461802ej-FIT_REL_USER of F814W (jsim01_f814w) transferred" in trailer
    # The stand-in grism shows its stars where the truth puts them on the common grid.
    with fits.open(folder / "jsim01_g800l_drc.fits") as hdul:
        grid_wcs = WCS(hdul["SCI"].header)
    stars = load_truth(two_filter_run["visits"]["F606W"].truth_path)["stars"]
    tx, ty = grid_wcs.all_world2pix(stars["ra"], stars["dec"], 0)
    vs_truth = consistency(np.column_stack([tx, ty]), product_sources(folder / "jsim01_g800l_drc.fits", "ACS/WFC"))
    assert vs_truth.n_matched >= 50 and vs_truth.offset_pix < 0.1, vs_truth


# --------------------------------------------------------------------------------------------
# real WFC3/IR: F140W direct images and their G141 grism companion (GOODS-S, proposal 11359)
# --------------------------------------------------------------------------------------------


def test_real_g141_gets_the_correction_of_the_f140w_image_at_its_pointing(shared_data, tmp_path, goodss_pair_catalog):
    """Issue 25 item 4: F140W + G141 of GOODS-S with the rebuilt IDCTAB and a catalog of two F140W
    exposures placed at grizli's WCS. The F140W are aligned; each G141 exposure gets the
    correction of the F140W exposure taken at its pointing (grizli's column ``wcs_from``) and
    lands within 30 mas of grizli's WCS at (507,507), from 407-437 mas at its default WCS.

    Before per-exposure pairing the grism got the group's mean correction and stayed 24-48 mas
    off: the four F140W pointings differ by up to ~80 mas (measured: 48.0, 41.8, 24.6, 45.3 mas).
    """
    from irdistortion import rebuild_wfc3ir_idctab
    from realdata import offset_from_reference_mas, prepare_goodss, reference_rows

    iref = rebuild_wfc3ir_idctab(shared_data, tmp_path / "iref").parent
    catalog = goodss_pair_catalog
    folder = tmp_path / "goodss"
    prepare_goodss(shared_data, folder, "IB6O23020")
    prepare_goodss(shared_data, folder, "IB6O23010")
    rows = reference_rows(shared_data)
    grism = ["ib6o23rsq", "ib6o23ruq", "ib6o23ryq", "ib6o23s0q"]
    before = {r: offset_from_reference_mas(folder / f"{r}_flt.fits", rows[r])[2] for r in grism}

    code = main(["visit", str(folder), "--iref", str(iref), "--catalog", str(catalog), "--no-apriori", "--offline",
                 "-q", "--wht-type", "ivm", "--pixfrac", "0.8"])

    assert code == ExitCode.OK
    report = json.loads((folder / "ib6o23_visit_report.json").read_text())
    assert [(g["filter"], g["root"], g["spectroscopic"], g["asn_built"], g["wcsname"]) for g in report["groups"]] == [
        ("F140W", "ib6o23020", False, False, "IDC_w3m18525i-FIT_REL_IB6O23920"),
        ("G141", "ib6o23010", True, False, "IDC_w3m18525i-FIT_REL_IB6O23920"),
    ]
    # The F140W solution is verified on the real pixels: every exposure measured from its 12-13
    # sources (s2q was "not measurable" before verification left out an insignificant rotation).
    f140w_report = json.loads((folder / "ib6o23020_report.json").read_text())
    chosen = {c["name"]: c for c in f140w_report["candidates"]}[f140w_report["chosen"]["name"]]
    assert chosen["verification"]["status"] == "pass", chosen["verification"]
    transfer = report["groups"][1]["wcs_transfer"]
    for r in grism:
        paired = rows[r]["wcs_from"]  # grizli's pairing, found here from the header pointings alone
        assert f"{r} ← {paired} (same pointing" in transfer, transfer
    after = {r: offset_from_reference_mas(folder / f"{r}_flt.fits", rows[r])[2] for r in grism}
    print(f"\nG141 vs grizli at (507,507): before {before} mas, after {after} mas")
    assert min(before.values()) > 400.0
    # Measured 9.5, 19.7, 12.1, 6.2 mas (their F140W partners: 9.4, 19.6, 12.1, 6.1).
    assert max(after.values()) <= 30.0
    for r in grism:
        with fits.open(folder / f"{r}_flt.fits") as hdul:
            assert hdul["SCI", 1].header["WCSNAME"] == "IDC_w3m18525i-FIT_REL_IB6O23920"
        direct = offset_from_reference_mas(folder / f"{rows[r]['wcs_from']}_flt.fits", rows[rows[r]["wcs_from"]])
        assert abs(after[r] - direct[2]) < 2.0, (r, after[r], direct)
    # One grid for both products, at the native IR scale, north up.
    keys = ("CRVAL1", "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "CRPIX1", "CRPIX2", "NAXIS1", "NAXIS2")
    f140w, g141 = (fits.getheader(folder / f"{r}_drz.fits", "SCI") for r in ("ib6o23020", "ib6o23010"))
    assert [f140w[k] for k in keys] == [g141[k] for k in keys]
    assert f140w["CD2_2"] * 3600 == pytest.approx(0.128, rel=1e-12) and f140w["CD1_2"] == 0.0
    page = (folder / "ib6o23_visit_report.html").read_text()
    assert 'id="grism"' in page and "G141 (ib6o23010): drizzled on the common grid" in page
    g141_trailer = (folder / "ib6o23010.tra").read_text()
    assert "alignment skipped: G141 exposures are grism/prism" in g141_trailer
    # Inverse-variance weights and the pixfrac asked for reached both AstroDrizzle runs …
    for root in ("ib6o23020", "ib6o23010"):
        assert fits.getval(folder / f"{root}_drz.fits", "D001PIXF") == 0.8
        assert "'wht_type': 'IVM'" in (folder / f"{root}.tra").read_text()
    # … and the weight-map check of every product is in the visit report.
    assert set(report["groups"][0]["weight_maps"]) == {"ib6o23020_drz.fits"}
    assert report["groups"][0]["weight_maps"]["ib6o23020_drz.fits"]["ratio"] > 0


def test_visit_command_refuses_bad_input_with_the_usual_exit_codes(tmp_path, capsys):
    assert main(["visit", str(tmp_path / "missing_flt.fits")]) == ExitCode.INPUT_ERROR
    assert "input file not found" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["visit", str(empty)]) == ExitCode.INPUT_ERROR
    assert "no association table or calibrated exposure" in capsys.readouterr().err
    assert main(["visit", str(empty), "--final-scale", "0"]) == ExitCode.USAGE
    assert main(["visit", str(empty), "--pixfrac", "1.5"]) == ExitCode.USAGE
    assert not list(tmp_path.rglob("*_dr?.fits"))


def test_visit_command_refuses_a_folder_it_cannot_write(tmp_path, monkeypatch, capsys):
    import errno

    from autodriz.cli import common

    folder = tmp_path / "ro"
    folder.mkdir()
    monkeypatch.setattr(common, "probe_writable", lambda path: OSError(errno.EROFS, "Read-only file system"))
    assert main(["visit", str(folder)]) == ExitCode.INPUT_ERROR
    assert f"visit folder {folder} is not writable (Read-only file system)" in capsys.readouterr().err
