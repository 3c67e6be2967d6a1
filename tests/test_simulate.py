"""Tests of autodriz.simulate: a visit whose true WCS is known, through the real updatewcs."""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from autodriz import simulate as S
from autodriz import truth as T

INJECTED = (30.0, -40.0)

# stwcs copies SIP WCSs onto ERR/DQ through astropy, which warns about it; not our concern.
pytestmark = pytest.mark.filterwarnings("ignore:Some non-standard WCS keywords were excluded")


@pytest.fixture(scope="module")
def visit(tmp_path_factory) -> S.SimulatedVisit:
    """Two exposures with a 50 mas pointing error (30 mas east, 40 mas south), shared exactly
    (EXACT_WORLD: these tests check the machinery to a fraction of a mas)."""
    return S.simulate_visit(
        tmp_path_factory.mktemp("visit"), S.SimulationConfig(**S.EXACT_WORLD, pointing_error_mas=INJECTED, seed=3)
    )


@pytest.fixture(scope="module")
def exact_visit(tmp_path_factory) -> S.SimulatedVisit:
    """No injected error: after updatewcs the files carry the truth."""
    return S.simulate_visit(tmp_path_factory.mktemp("exact"), S.SimulationConfig(**S.EXACT_WORLD, seed=4))


def _copy_exposures(paths, dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for p in paths:
        target = dest / p.name
        shutil.copyfile(p, target)
        out.append(target)
    return out


def _updatewcs_in_child(files: list[Path], jref_dir: Path, prefix: str = "jref") -> None:
    """Run updatewcs as the pipeline does: own process, the reference folder (``jref``, ``iref``)
    in its environment."""
    env = dict(os.environ, **{prefix: str(jref_dir) + "/"})
    code = textwrap.dedent(
        """
        import sys
        from stwcs.updatewcs import updatewcs
        updatewcs(sys.argv[1:], use_db=False)
        """
    )
    subprocess.run(
        [sys.executable, "-c", code, *map(str, files)],
        env=env, cwd=files[0].parent, check=True, capture_output=True, timeout=300,
    )


@pytest.fixture(scope="module")
def updated(visit, exact_visit, tmp_path_factory) -> dict[str, list[Path]]:
    """Copies of both visits' FLTs after updatewcs (one child process for all of them)."""
    base = tmp_path_factory.mktemp("updated")
    injected = _copy_exposures(visit.flt_paths, base / "injected")
    exact = _copy_exposures(exact_visit.flt_paths, base / "exact")
    # Both visits ship identical reference files; one jref serves both.
    _updatewcs_in_child(injected + exact, visit.jref_dir)
    return {"injected": injected, "exact": exact}


def test_products_exist(visit):
    assert visit.asn_path.name == "jsim01010_asn.fits"
    assert [p.name for p in visit.flt_paths] == ["jsim01a1q_flt.fits", "jsim01a2q_flt.fits"]
    assert [p.name for p in visit.flc_paths] == ["jsim01a1q_flc.fits", "jsim01a2q_flc.fits"]
    assert visit.truth_path.is_file() and visit.catalog_path.is_file()
    for name in S.REFERENCE_FILES.values():
        assert (visit.jref_dir / name).is_file()
    assert visit.mdriztab_path is not None and visit.mdriztab_path.is_file()


def test_asn_table_lists_members(visit):
    with fits.open(visit.asn_path) as hdul:
        names = [n.strip() for n in hdul[1].data["MEMNAME"]]
        types = [t.strip() for t in hdul[1].data["MEMTYPE"]]
    assert names == ["JSIM01A1Q", "JSIM01A2Q", "JSIM01010"]
    assert types == ["EXP-DTH", "EXP-DTH", "PROD-DTH"]


def test_exposure_layout_and_keywords(visit):
    with fits.open(visit.flt_paths[0]) as hdul:
        assert [(h.name, h.ver) for h in hdul[1:]] == [
            ("SCI", 1), ("ERR", 1), ("DQ", 1), ("SCI", 2), ("ERR", 2), ("DQ", 2)
        ]
        ph = hdul[0].header
        for key in (
            "TELESCOP INSTRUME DETECTOR FILTER1 FILTER2 IMAGETYP OBSTYPE OBSMODE EXPTIME EXPSTART "
            "EXPEND DATE-OBS TIME-OBS PA_V3 RA_TARG DEC_TARG ROOTNAME FILENAME IDCTAB NPOLFILE "
            "D2IMFILE MDRIZTAB ASN_ID ASN_TAB ASN_MTYP DRIZCORR PCTECORR SUBARRAY APERTURE CCDGAIN "
            "PHOTFLAM PHOTPLAM PHOTZPT ATODGNA READNSEA CCDAMP"
        ).split():
            assert key in ph, key
        assert (ph["INSTRUME"], ph["DETECTOR"], ph["OBSTYPE"]) == ("ACS", "WFC", "IMAGING")
        assert (ph["FILTER1"], ph["FILTER2"]) == ("F606W", "CLEAR2L")
        assert ph["IDCTAB"] == "jref$0461802ej_idc.fits"
        assert ph["NPOLFILE"] == "jref$02c1450rj_npl.fits"
        assert ph["D2IMFILE"] == "jref$02c1450oj_d2i.fits"
        assert ph["MDRIZTAB"] == f"jref${S.MDRIZTAB_NAME}"
        assert ph["ASN_ID"] == "JSIM01010" and ph["DRIZCORR"] == "PERFORM"
        assert ph["FILENAME"] == "jsim01a1q_flt.fits"
        assert hdul["SCI", 1].header["CCDCHIP"] == 2 and hdul["SCI", 2].header["CCDCHIP"] == 1
        for extver in (1, 2):
            sci = hdul["SCI", extver]
            assert sci.header["BITPIX"] == -32 and sci.data.shape == (256, 512)
            assert hdul["ERR", extver].header["BITPIX"] == -32
            assert hdul["DQ", extver].header["BITPIX"] == 16
            assert not hdul["DQ", extver].data.any()  # cosmic rays are left for drizzle to find
            h = sci.header
            for key in "LTV1 LTV2 LTM1_1 LTM2_2 VAFACTOR ORIENTAT PA_APER EXPNAME CRVAL1 CD1_1".split():
                assert key in h, key
            assert h["BUNIT"] == "ELECTRONS" and h["WCSNAME"] == "OPUS"
            assert hdul["ERR", extver].header["CRVAL1"] == h["CRVAL1"]
            # Cosmic rays: a small fraction of pixels far above sky + stars.
            assert 0.001 < np.mean(sci.data > 40 + 400) < 0.05
    with fits.open(visit.flc_paths[0]) as flc, fits.open(visit.flt_paths[0]) as flt:
        assert flc[0].header["PCTECORR"] == "COMPLETE" and flc[0].header["FILENAME"] == "jsim01a1q_flc.fits"
        for ext in (("SCI", 1), ("ERR", 2), ("DQ", 1)):
            np.testing.assert_array_equal(flc[ext].data, flt[ext].data)


def test_reference_catalog_is_gaia_like(visit):
    cat = Table.read(visit.catalog_path, format="ascii.ecsv")
    assert cat.colnames == [
        "source_id", "ra", "dec", "ra_error", "dec_error", "pmra", "pmdec", "ref_epoch", "phot_g_mean_mag"
    ]
    assert len(cat) == 200
    assert np.all(cat["ref_epoch"] == 2016.0)
    assert np.all((cat["phot_g_mean_mag"] >= 18) & (cat["phot_g_mean_mag"] <= 24))
    # Small proper motions, propagated over the 11 years to the 2005 observation.
    assert 0.5 < np.std(cat["pmra"]) < 5


def test_same_seed_same_bytes(tmp_path):
    cfg = S.SimulationConfig(n_stars=30, n_exposures=1, write_flc=False, seed=11)
    a = S.simulate_visit(tmp_path / "a", cfg)
    b = S.simulate_visit(tmp_path / "b", cfg)
    assert a.flt_paths[0].read_bytes() == b.flt_paths[0].read_bytes()
    assert a.catalog_path.read_bytes() == b.catalog_path.read_bytes()
    c = S.simulate_visit(tmp_path / "c", S.SimulationConfig(n_stars=30, n_exposures=1, write_flc=False, seed=12))
    assert not np.array_equal(fits.getdata(a.flt_paths[0], ("SCI", 1)), fits.getdata(c.flt_paths[0], ("SCI", 1)))


def test_truth_record_rebuilds_wcs_and_expected_error(visit):
    truth = T.load_truth(visit.truth_path)
    assert truth["injected"]["pointing_error_mas"] == list(INJECTED)
    assert truth["expected_default_error_mas"] == pytest.approx(50.0, abs=1.0)
    rec = truth["exposures"]["jsim01a1q"]["sci"]["1"]
    assert rec["CTYPE1"] == "RA---TAN-SIP" and rec["A_ORDER"] == 5 and "B_3_2" in rec
    assert rec["WCSNAME"] == "IDC_0461802ej"
    assert set(truth["exposures"]) == {"jsim01a1q", "jsim01a2q"}


def test_updatewcs_gives_truth_plus_injected_error(visit, exact_visit, updated):
    truth = T.load_truth(visit.truth_path)
    for path in updated["injected"]:
        with fits.open(path) as hdul:
            assert hdul["SCI", 1].header["WCSNAME"] == "IDC_0461802ej"
            assert hdul["SCI", 2].header["WCSNAME"] == "IDC_0461802ej"
    err = T.visit_error(updated["injected"], truth)
    assert err.rms_mas == pytest.approx(50.0, abs=2.0)
    assert err.mean_dx_mas == pytest.approx(INJECTED[0], abs=2.0)
    assert err.mean_dy_mas == pytest.approx(INJECTED[1], abs=2.0)
    # The simulator's own measurement (in memory, absolute reference paths) agrees.
    assert err.rms_mas == pytest.approx(truth["expected_default_error_mas"], abs=0.1)

    exact = T.visit_error(updated["exact"], T.load_truth(exact_visit.truth_path))
    assert exact.rms_mas < 1.0
    # The header as written (linear OPUS WCS, no distortion) is far from the truth.
    assert T.visit_error(exact_visit.flt_paths, T.load_truth(exact_visit.truth_path)).rms_mas > 5.0


def test_rotation_error_is_a_roll_about_the_reference_chip(tmp_path):
    """updatewcs of a header rolled by 300" equals the truth rolled about the reference CRVAL."""
    rot = 300.0
    v = S.simulate_visit(
        tmp_path / "rot",
        S.SimulationConfig(**S.EXACT_WORLD, rotation_error_arcsec=rot, n_exposures=1, n_stars=20, write_flc=False,
                           seed=5),
    )
    truth = T.load_truth(v.truth_path)
    # Absolute reference paths: stwcs resolves them without jref in the environment.
    work = _copy_exposures(v.flt_paths, tmp_path / "work")
    with fits.open(work[0], mode="update") as hdul:
        for key, name in S.REFERENCE_FILES.items():
            hdul[0].header[key] = str(v.jref_dir / name)
    from stwcs.updatewcs import updatewcs

    updatewcs([str(w) for w in work], use_db=False)
    exp = truth["exposures"]["jsim01a1q"]
    centre = (exp["opus_true"]["1"]["CRVAL1"], exp["opus_true"]["1"]["CRVAL2"])
    with fits.open(work[0]) as hdul:
        for extver in (1, 2):
            hdr = hdul["SCI", extver].header
            test = WCS(T.linear_sip_header(hdr))
            true = T.truth_wcs(truth, "jsim01a1q", extver)
            x, y = np.meshgrid(np.linspace(0, 511, 6), np.linspace(0, 255, 4))
            ra, dec = true.all_pix2world(x.ravel(), y.ravel(), 0)
            pra, pdec = S.perturb_sky(ra, dec, centre, rotation_arcsec=rot)
            tra, tdec = test.all_pix2world(x.ravel(), y.ravel(), 0)
            d = np.hypot((tra - pra) * math.cos(math.radians(37.8)), tdec - pdec) * 3.6e6
            assert d.max() < 1.0, d.max()
            # The roll is really there, with this sign: the opposite roll or none would be off.
            nra, ndec = S.perturb_sky(ra, dec, centre, rotation_arcsec=-rot)
            assert np.hypot((tra - nra) * math.cos(math.radians(37.8)), tdec - ndec).max() * 3.6e6 > 5.0
            assert np.hypot((tra - ra) * math.cos(math.radians(37.8)), tdec - dec).max() * 3.6e6 > 5.0
    assert exp["pa_v3_header"] - exp["pa_v3_true"] == pytest.approx(rot / 3600.0)


def test_stars_are_where_the_truth_says(exact_visit, updated):
    """Centroids of bright isolated stars match the full truth WCS (SIP + NPOL + D2IM)."""
    from photutils.centroids import centroid_2dg, centroid_sources

    truth = T.load_truth(exact_visit.truth_path)
    stars = truth["stars"]
    ra, dec, mag = (np.asarray(stars[k]) for k in ("ra", "dec", "mag"))
    residuals = []
    for path in updated["exact"]:
        with fits.open(path) as hdul:
            for extver in (1, 2):
                # After updatewcs with no injected error, the file's WCS (with its lookup
                # tables) is the truth the stars were rendered with.
                wcs = WCS(hdul["SCI", extver].header, fobj=hdul)
                data = hdul["SCI", extver].data.astype(float) - 40.0
                x, y = wcs.all_world2pix(ra, dec, 0, tolerance=1e-6)
                ny, nx = data.shape
                inside = (x > 8) & (x < nx - 9) & (y > 8) & (y < ny - 9)
                for i in np.flatnonzero(inside & (mag < 21.5)):
                    dist = np.hypot(x - x[i], y - y[i])
                    dist[i] = np.inf
                    if dist.min() < 10:
                        continue
                    cx, cy = centroid_sources(data, x[i], y[i], box_size=9, centroid_func=centroid_2dg)
                    residuals.append(math.hypot(cx[0] - x[i], cy[0] - y[i]))
    residuals = np.array(residuals)
    assert residuals.size >= 20
    # A cosmic ray on a star may spoil one centroid; the bulk must be exact.
    assert np.median(residuals) < 0.02
    assert np.percentile(residuals, 90) < 0.05


def test_config_validation():
    with pytest.raises(ValueError):
        S.SimulationConfig(asn_id="SHORT")
    with pytest.raises(ValueError):
        S.SimulationConfig(n_exposures=2, dither_arcsec=((0.0, 0.0),))
    with pytest.raises(ValueError):
        S.SimulationConfig(filter="F999W")
    assert S.rootnames("JSIM01010", 3) == ["jsim01a1q", "jsim01a2q", "jsim01a3q"]


def test_real_catalog_recentred(shared_data, tmp_path):
    v = S.simulate_visit(
        tmp_path / "gaia",
        S.SimulationConfig(
            catalog=shared_data / "catalogs" / "gaia.cat", mag_range=(14.0, 21.0),
            n_exposures=1, write_flc=False, ra=10.0, dec=-30.0,
        ),
    )
    cat = Table.read(v.catalog_path, format="ascii.ecsv")
    assert len(cat) > 5
    assert np.all(np.abs(cat["dec"] + 30.0) < 0.05)
    with fits.open(v.flt_paths[0]) as hdul:
        assert hdul[0].header["RA_TARG"] == 10.0
        # Real stars were rendered: the brightest pixels stand well above sky and noise.
        assert np.percentile(hdul["SCI", 1].data, 99.9) > 1000


def test_mdriztab_is_read_by_drizzlepac(visit, tmp_path):
    """drizzlepac's own MDRIZTAB reader selects our rows by filter (ANY) and image count."""
    from drizzlepac import mdzhandler

    files = _copy_exposures(visit.flt_paths, tmp_path)
    for f in files:
        # An absolute path instead of jref$: no environment variable needed in this process.
        fits.setval(f, "MDRIZTAB", value=str(visit.mdriztab_path))
    pars = mdzhandler.getMdriztabParameters([str(f) for f in files])
    assert pars["combine_type"] == "minmed" and pars["driz_cr"] is True
    assert pars["final_scale"] == pytest.approx(0.05) and pars["final_rot"] == 0.0
    assert pars["combine_lthresh"] is None and pars["final_outnx"] is None
    single = mdzhandler.getMdriztabParameters([str(files[0])])
    assert single["driz_cr"] is False and single["median"] is False


def test_full_frame_chip_gap_and_subarray_cut(tmp_path):
    """Full chips: ~52 px gap after updatewcs. Subarrays: exactly the full-frame WCS, shifted by LTV."""
    jref = tmp_path / "jref"
    S._copy_reference_files(jref)

    def true_hdulist(shape):
        cfg = S.SimulationConfig(chip_shape=shape)
        idc = S._idc_reference_pixels(jref / S.REFERENCE_FILES["IDCTAB"], cfg.filter)
        chips = {}
        for extver, ccdchip in S.ACS_WFC.chips:
            ltv = S._subarray_ltv(shape, ccdchip)
            xref, yref = idc[ccdchip]
            cd = 1.4e-5 * np.array([[-1.0, 0.0], [0.0, 1.0]])
            chips[extver] = S._ChipWCS(np.array([290.22, 37.8]), np.array([xref + ltv[0], yref + ltv[1]]), cd)
        info = S._ExposureInfo("jsim01a1q", 0, 53594.4, 2005.6, (0.0, 0.0))
        return S._run_updatewcs(S._wcs_only_hdulist(cfg, info, S._Pointing(chips, 120.0), jref))

    full = true_hdulist(S.FULL_CHIP_SHAPE)
    sub = true_hdulist((256, 512))
    wfc2 = S._full_wcs(full, 1)
    wfc1 = S._full_wcs(full, 2)
    xs = np.array([100.0, 2048.0, 4000.0])
    ra, dec = wfc2.all_pix2world(xs, np.full(3, 2047.0), 0)
    _, y1 = wfc1.all_world2pix(ra, dec, 0)
    gap = -y1 - 1.0  # rows missing between WFC2's top row and WFC1's first row
    assert np.all((gap > 49) & (gap < 56)), gap

    ltv1, ltv2 = S._subarray_ltv((256, 512), 1)
    x = np.array([0.0, 100.0, 511.0])
    y = np.array([0.0, 200.0, 255.0])
    for extver in (1, 2):
        ws = WCS(T.linear_sip_header(sub[S._sci_extensions(sub)[extver]].header))
        wf = WCS(T.linear_sip_header(full[S._sci_extensions(full)[extver]].header))
        np.testing.assert_allclose(ws.all_pix2world(x, y, 0), wf.all_pix2world(x - ltv1, y - ltv2, 0), atol=1e-10)


@pytest.mark.slow
def test_astrodrizzle_runs_on_a_simulated_visit(visit, tmp_path):
    """AstroDrizzle (MDRIZTAB parameters) drizzles the visit and flags its cosmic rays."""
    files = _copy_exposures(visit.flc_paths, tmp_path)
    _updatewcs_in_child(files, visit.jref_dir)
    code = textwrap.dedent(
        """
        import sys
        from drizzlepac import astrodrizzle
        astrodrizzle.AstroDrizzle(sys.argv[1:], output="jsim01010", mdriztab=True, updatewcs=False,
                                  build=True, clean=True, num_cores=1)
        """
    )
    env = dict(os.environ, jref=str(visit.jref_dir) + "/")
    run = subprocess.run(
        [sys.executable, "-c", code, *[f.name for f in files]],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    with fits.open(tmp_path / "jsim01010_drc.fits") as drc:
        assert drc["SCI"].header["WCSNAME"] == "IDC_0461802ej"
        assert abs(np.nanmedian(drc["SCI"].data)) < 0.02  # sky subtracted (e-/s)
    with fits.open(files[0]) as flc:
        assert 0.002 < np.mean(flc["DQ", 1].data & 4096 > 0) < 0.03


# --------------------------------------------------------------------------------------------
# embedded a priori headerlets (issue 6)


def test_apriori_config_validation():
    with pytest.raises(ValueError, match="apriori_errors_mas"):
        S.SimulationConfig(apriori_errors_mas=(("FIT_REL", 1.0, 2.0),))
    with pytest.raises(ValueError, match="twice"):
        S.SimulationConfig(apriori_errors_mas=(("GSC240", 1.0, 2.0), ("GSC240", 0.0, 0.0)))
    with pytest.raises(ValueError, match="apriori_missing"):
        S.SimulationConfig(apriori_errors_mas=(("GSC240", 1.0, 2.0),), apriori_missing=(("HSC30", 0),))
    with pytest.raises(ValueError, match="apriori_missing"):
        S.SimulationConfig(n_exposures=2, apriori_errors_mas=(("GSC240", 1.0, 2.0),), apriori_missing=(("GSC240", 2),))


def test_apriori_headerlets_are_embedded_with_known_errors(tmp_path, monkeypatch):
    import logging

    from autodriz import headerlets as H

    # stwcs writes headerlet.log into the working directory unless told not to: check it was.
    monkeypatch.chdir(tmp_path)

    config = S.SimulationConfig(
        seed=21, chip_shape=(64, 128), n_stars=20, cosmic_ray_fraction=0.0,
        apriori_errors_mas=(("GSC240", 240.0, -180.0), ("HSC30", 0.0, 30.0)),
        apriori_missing=(("HSC30", 1),),
    )
    visit = S.simulate_visit(tmp_path / "a", config)
    names = {
        p.name: [h.wcsname for h in H.embedded_headerlets(p)] for p in (*visit.flt_paths, *visit.flc_paths)
    }
    assert names == {
        "jsim01a1q_flt.fits": ["IDC_0461802ej-GSC240", "IDC_0461802ej-HSC30"],
        "jsim01a1q_flc.fits": ["IDC_0461802ej-GSC240", "IDC_0461802ej-HSC30"],
        "jsim01a2q_flt.fits": ["IDC_0461802ej-GSC240"],
        "jsim01a2q_flc.fits": ["IDC_0461802ej-GSC240"],
    }
    gsc = next(h for h in H.embedded_headerlets(visit.flc_paths[1]) if h.short == "GSC240")
    assert gsc.idcroot == "0461802ej" and gsc.destim == "jsim01a2q"
    assert gsc.distname == "jsim01a2q_0461802ej-02c1450rj-02c1450oj"
    record = T.load_truth(visit.truth_path)["apriori"]
    assert record["GSC240"]["error_mas"] == [240.0, -180.0]
    assert record["GSC240"]["expected_error_mas"] == pytest.approx(300.0, abs=0.5)
    assert record["HSC30"]["missing"] == ["jsim01a2q"]
    assert record["HSC30"]["exposures"] == ["jsim01a1q"]
    assert record["HSC30"]["expected_error_mas"] == pytest.approx(30.0, abs=0.5)
    # The headerlet's WCS is truth + error, measured independently of the simulator's record.
    truth = T.load_truth(visit.truth_path)
    with fits.HDUList.fromstring(H.headerlet_bytes(gsc)) as hlet:
        offsets = [
            T.header_offsets(h.header, T.truth_wcs(truth, "jsim01a2q", h.header["TG_EVER"])) for h in hlet if h.name == "SIPWCS"
        ]
    east = np.concatenate([o[0] for o in offsets])
    north = np.concatenate([o[1] for o in offsets])
    assert np.mean(east) == pytest.approx(240.0, abs=1.0)
    assert np.mean(north) == pytest.approx(-180.0, abs=1.0)
    # Same seed, same bytes: nothing in a headerlet may depend on the clock or the folder.
    with fits.HDUList.fromstring(H.headerlet_bytes(gsc)) as hlet:
        assert hlet[0].header["DATE"].startswith(config.date_obs)
        texts = [str(v) for h in hlet for v in h.header.values() if isinstance(v, str)]
    assert not [t for t in texts if str(tmp_path) in t or t.startswith("/")]
    assert not (tmp_path / "headerlet.log").exists()
    stwcs_logger = logging.getLogger("stwcs.wcsutil.headerlet")
    assert not any(isinstance(h, logging.FileHandler) for h in stwcs_logger.handlers)


def _sip_displacement(coeffs: dict[str, float], u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    du = sum(c * u ** int(k.split("_")[1]) * v ** int(k.split("_")[2]) for k, c in coeffs.items() if k[0] == "A")
    dv = sum(c * u ** int(k.split("_")[1]) * v ** int(k.split("_")[2]) for k, c in coeffs.items() if k[0] == "B")
    return du, dv


def test_distortion_residual_field_has_the_requested_rms_and_survives_a_linear_fit():
    field = S.distortion_residual_field(np.random.default_rng(7), 5.0, 0.05)
    assert set(field) == {1, 2}
    assert all(sum(map(int, k.split("_")[1:])) in (2, 3) for k in field[1])  # no constant/linear terms
    u, v = np.meshgrid(np.linspace(-2048, 2048, 41), np.linspace(-1024, 1024, 41))
    for coeffs in field.values():
        du, dv = _sip_displacement(coeffs, u, v)
        rms_mas = float(np.sqrt(np.mean(du**2 + dv**2))) * 50.0
        assert rms_mas == pytest.approx(5.0, rel=1e-6)
        # What a general linear fit (shift, rotation, scale, skew) cannot remove stays.
        design = np.column_stack([np.ones(u.size), u.ravel(), v.ravel()])
        left = [d.ravel() - design @ np.linalg.lstsq(design, d.ravel(), rcond=None)[0] for d in (du, dv)]
        assert float(np.sqrt(np.mean(left[0] ** 2 + left[1] ** 2))) * 50.0 > 1.5
    # Another seed, another detector.
    assert S.distortion_residual_field(np.random.default_rng(8), 5.0, 0.05)[1] != field[1]


def test_true_wcs_carries_the_distortion_residual_and_the_default_wcs_does_not(tmp_path):
    """Same seed with and without the residual: the truths differ by exactly the residual field."""
    base = {"n_exposures": 1, "n_stars": 20, "write_flc": False, "seed": 9, "chip_shape": (512, 1024)}
    plain = S.simulate_visit(tmp_path / "plain", S.SimulationConfig(**base))
    bent = S.simulate_visit(tmp_path / "bent", S.SimulationConfig(**base, distortion_residual_mas=200.0))
    t_plain, t_bent = T.load_truth(plain.truth_path), T.load_truth(bent.truth_path)
    field = S.distortion_residual_field(np.random.default_rng([9, 1802]), 200.0, 0.05)
    x, y = np.meshgrid(np.linspace(0, 1023, 9), np.linspace(0, 511, 5))
    for extver in (1, 2):
        w_plain = T.truth_wcs(t_plain, "jsim01a1q", extver)
        w_bent = T.truth_wcs(t_bent, "jsim01a1q", extver)
        ra, dec = w_bent.all_pix2world(x.ravel(), y.ravel(), 0)
        # Where the plain truth puts those sky positions: shifted by the residual, in pixels.
        px, py = w_plain.all_world2pix(ra, dec, 0)
        crpix = w_bent.wcs.crpix - 1.0
        du, dv = _sip_displacement(field[extver], x.ravel() - crpix[0], y.ravel() - crpix[1])
        # The plain WCS's SIP is non-linear too; compare to first order (displacements < 0.4 px).
        assert np.abs(px - x.ravel() - du).max() < 0.02
        assert np.abs(py - y.ravel() - dv).max() < 0.02
        assert np.hypot(du, dv).max() > 0.05  # the field is really there on this subarray
    # The pipeline default (updatewcs with the reference distortion) does not know the residual.
    assert t_bent["expected_default_error_mas"] > t_plain["expected_default_error_mas"] + 1.0
    assert t_bent["injected"]["distortion_residual_mas"] == 200.0


def test_exposures_get_their_own_pointing_and_roll_errors(tmp_path):
    cfg = S.SimulationConfig(
        n_exposures=3, n_stars=20, write_flc=False, seed=11, pointing_error_mas=(100.0, 0.0),
        relative_error_mas=20.0, relative_rotation_arcsec=2.0,
    )
    v = S.simulate_visit(tmp_path / "rel", cfg)
    truth = T.load_truth(v.truth_path)
    shifts = np.array(list(truth["injected"]["shift_mas_per_exposure"].values()))
    rolls = truth["injected"]["rotation_arcsec_per_exposure"]
    assert shifts.std(axis=0).max() > 3.0 and np.ptp(list(rolls.values())) > 0.5
    for root, exp in truth["exposures"].items():
        assert (exp["pa_v3_header"] - exp["pa_v3_true"]) * 3600.0 == pytest.approx(rolls[root], abs=1e-6)
        assert exp["shift_mas"] == truth["injected"]["shift_mas_per_exposure"][root]
    # Turning the new errors on does not change what an earlier visit of the same seed looked like.
    old = S.simulate_visit(tmp_path / "old", dataclasses.replace(cfg, relative_rotation_arcsec=0.0, distortion_residual_mas=0.0))
    assert T.load_truth(old.truth_path)["injected"]["shift_mas_per_exposure"] == truth["injected"]["shift_mas_per_exposure"]
    with pytest.raises(ValueError, match="RMS"):
        S.SimulationConfig(relative_rotation_arcsec=-1.0)


def test_hostile_field_catalog_is_gaia_dr3_like_and_pixels_saturate(tmp_path):
    cfg = S.SimulationConfig(
        seed=21, n_exposures=1, write_flc=False, gaia_dr3_errors=True, no_pm_fraction=0.5,
        n_galaxies=30, n_saturated_stars=3, n_stars=300,
    )
    v = S.simulate_visit(tmp_path / "hostile", cfg)
    cat = Table.read(v.catalog_path)
    truth = T.load_truth(v.truth_path)
    g = np.asarray(cat["phot_g_mean_mag"])
    assert g.max() <= S.GAIA_LIMIT_G < max(truth["stars"]["mag"])  # fainter stars are seen, not listed
    no_pm = ~np.isfinite(np.asarray(cat["pmra"], dtype=float))
    assert no_pm.any() and (g[no_pm] > 19.0).all()
    pos_err, pm_err = S.gaia_dr3_errors(np.array([15.0, 20.0, 21.0]))
    assert pos_err == pytest.approx([0.02, 0.4, 1.0]) and pm_err == pytest.approx([0.02, 0.5, 1.4])
    assert np.nanmedian(np.asarray(cat["pmra_error"])[g > 20.0]) > 0.5
    # Catalog proper motions carry drawn errors: not the stars' true motions.
    plain = S.simulate_visit(tmp_path / "plain", dataclasses.replace(cfg, gaia_dr3_errors=False, n_saturated_stars=0))
    assert np.nanmax(np.abs(np.asarray(cat["pmra"])[: 20] - np.asarray(Table.read(plain.catalog_path)["pmra"])[: 20])) > 0.01
    with fits.open(v.flt_paths[0]) as hdul, fits.open(plain.flt_paths[0]) as ref:
        sat = np.concatenate([hdul["DQ", e].data.ravel() == 256 for e in (1, 2)])
        data = np.concatenate([hdul["SCI", e].data.ravel() for e in (1, 2)])
        assert sat.sum() > 50 and abs(float(np.median(data[sat])) - cfg.full_well) < 5 * cfg.read_noise
        # A bleed trail runs along a column: the flagged pixels of a column are many, of a row few.
        dq = hdul["DQ", 1].data == 256 if (hdul["DQ", 1].data == 256).any() else hdul["DQ", 2].data == 256
        assert dq.sum(axis=0).max() > 3 * dq.sum(axis=1).max()
        # Galaxies (not in any catalog) add light the plain visit lacks beyond the bright stars.
        assert float(np.median(hdul["SCI", 1].data - ref["SCI", 1].data)) >= 0.0
        assert (hdul["SCI", 1].data - ref["SCI", 1].data).sum() > 1e5
    with pytest.raises(ValueError):
        S.SimulationConfig(no_pm_fraction=1.5)


def test_wfc3_ir_visit_through_the_real_updatewcs(tmp_path):
    """A WFC3/IR visit (reconstructed IDCTAB w3m18525i): one 1014x1014 chip in e-/s, FLT only;
    the pipeline's updatewcs on the files gives the truth plus exactly the injected error."""
    cfg = S.config_for_detector("WFC3/IR", **S.EXACT_WORLD, pointing_error_mas=(300.0, -200.0), n_stars=150, seed=5,
                                n_exposures=2)
    v = S.simulate_visit(tmp_path / "ir", cfg)
    assert v.flc_paths == () and v.jref_dir.name == "iref"
    with fits.open(v.flt_paths[0]) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "ERR", "DQ"]
        p, sci = hdul[0].header, hdul["SCI", 1].header
        assert (p["INSTRUME"], p["DETECTOR"], p["FILTER"]) == ("WFC3", "IR", "F140W")
        assert p["IDCTAB"] == "iref$w3m18525i_idc.fits" and sci["BUNIT"] == "ELECTRONS/S"
        assert hdul["SCI", 1].data.shape == (1014, 1014)
        # Count rates: the sky of 300 e- in 300 s is ~1 e-/s.
        assert float(np.median(hdul["SCI", 1].data)) == pytest.approx(1.0, abs=0.1)
    with fits.open(v.asn_path) as asn:
        assert (asn[0].header["INSTRUME"], asn[0].header["DETECTOR"]) == ("WFC3", "IR")
    truth = T.load_truth(v.truth_path)
    assert truth["detector"] == "WFC3/IR"
    work = _copy_exposures(v.flt_paths, tmp_path / "work")
    _updatewcs_in_child(work, v.jref_dir, prefix="iref")
    err = T.visit_error(work, truth)
    assert err.mean_dx_mas == pytest.approx(300.0, abs=0.5) and err.mean_dy_mas == pytest.approx(-200.0, abs=0.5)
    assert err.rms_mas == pytest.approx(truth["expected_default_error_mas"], abs=0.1)
    with fits.open(work[0]) as hdul:
        assert hdul["SCI", 1].header["WCSNAME"] == "IDC_w3m18525i"
        # The WFC3/IR plate scale, from the reconstructed table.
        assert hdul["SCI", 1].header["IDCSCALE"] == pytest.approx(0.1283, abs=0.001)
    with pytest.raises(ValueError, match="no FLC"):
        S.SimulationConfig(detector="WFC3/IR", chip_shape=(1014, 1014), filter="F140W", write_mdriztab=False)
    with pytest.raises(ValueError, match="filter"):
        S.config_for_detector("WFC3/IR", filter="F606W")


def test_wfc3_uvis_visit_through_the_real_updatewcs(tmp_path):
    """A WFC3/UVIS visit (reconstructed IDCTAB 2731450pi, no NPOL/D2IM): two chips, SCI,1 is
    chip 2, FLT and FLC; the pipeline's updatewcs on the files gives the truth plus exactly the
    injected error, and places chip 1 a full chip plus the inter-chip gap above chip 2."""
    cfg = S.config_for_detector("WFC3/UVIS", **S.EXACT_WORLD, pointing_error_mas=(-120.0, 80.0), chip_shape=(64, 128),
                                n_stars=60, seed=6, n_exposures=2)
    v = S.simulate_visit(tmp_path / "uvis", cfg)
    assert len(v.flc_paths) == 2 and v.jref_dir.name == "iref" and v.mdriztab_path is None
    with fits.open(v.flt_paths[0]) as hdul:
        assert [(h.name, h.ver) for h in hdul][1:] == [("SCI", 1), ("ERR", 1), ("DQ", 1), ("SCI", 2), ("ERR", 2), ("DQ", 2)]
        p = hdul[0].header
        assert (p["INSTRUME"], p["DETECTOR"], p["FILTER"], p["NEXTEND"]) == ("WFC3", "UVIS", "F555W", 6)
        assert p["IDCTAB"] == "iref$2731450pi_idc.fits" and p["NPOLFILE"] == p["D2IMFILE"] == "N/A"
        assert [hdul["SCI", e].header["CCDCHIP"] for e in (1, 2)] == [2, 1]
        assert hdul["SCI", 1].header["BUNIT"] == "ELECTRONS" and hdul["SCI", 1].data.shape == (64, 128)
        # Centred subarrays, cut alike on both chips (see simulate._subarray_ltv).
        assert (hdul["SCI", 1].header["LTV1"], hdul["SCI", 1].header["LTV2"]) == (-1984.0, -993.0)
    truth = T.load_truth(v.truth_path)
    assert truth["detector"] == "WFC3/UVIS"
    work = _copy_exposures(v.flt_paths, tmp_path / "work")
    _updatewcs_in_child(work, v.jref_dir, prefix="iref")
    err = T.visit_error(work, truth)
    assert err.mean_dx_mas == pytest.approx(-120.0, abs=0.5) and err.mean_dy_mas == pytest.approx(80.0, abs=0.5)
    assert err.rms_mas == pytest.approx(truth["expected_default_error_mas"], abs=0.1)
    with fits.open(work[0]) as hdul:
        chip2, chip1 = (WCS(hdul["SCI", e].header, hdul) for e in (1, 2))
        assert hdul["SCI", 1].header["WCSNAME"] == "IDC_2731450pi"
        assert hdul["SCI", 1].header["IDCSCALE"] == pytest.approx(0.0396, abs=0.0005)
    # Chip 1's centre in chip 2's pixels: one chip height (2051 px) plus the ~1.2" (~30 px) gap.
    ra, dec = chip1.all_pix2world([[63.5, 31.5]], 0)[0]
    x, y = chip2.all_world2pix([[ra, dec]], 0)[0]
    assert abs(x - 63.5) < 40 and 2051 + 15 < y - 31.5 < 2051 + 60, (x, y)
    with pytest.raises(ValueError, match="filter"):
        S.config_for_detector("WFC3/UVIS", filter="F140W")


def test_simulate_command_makes_each_registered_simulated_detector(tmp_path, capsys):
    """``autodriz simulate --detector`` offers every detector simulate.DETECTORS has and writes
    files of that detector, with the reference folder named by its registry prefix."""
    from autodriz.cli import main

    assert set(S.DETECTORS) == {"ACS/WFC", "WFC3/UVIS", "WFC3/IR"}
    code = main(["simulate", str(tmp_path / "u"), "--detector", "WFC3/UVIS", "--chip-shape", "32", "128",
                 "--stars", "10", "--exposures", "1"])
    assert code == 0
    out = capsys.readouterr().out
    assert f"--iref {tmp_path / 'u' / 'iref'}" in out
    with fits.open(tmp_path / "u" / "jsim01a1q_flc.fits") as hdul:
        assert (hdul[0].header["DETECTOR"], hdul["SCI", 2].header["CCDCHIP"]) == ("UVIS", 1)
