"""``autodriz catalog PRODUCT``: the sources of a drizzled product as a reference catalog.

On the simulated visit the catalog is checked against the simulator's true star positions, and
used as ``--catalog`` for a second visit of the same field; on real WFC3/IR pixels (GOODS-S
F140W) against the exposures' own detections.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from autodriz.catalogs import read_catalog_file
from autodriz.cli import main
from autodriz.detect import detect_sources
from autodriz.exitcodes import ExitCode
from autodriz.productcatalog import catalog_from_product, centroid_error_mas, default_output, frame_error_mas
from autodriz.simulate import EXACT_WORLD, SimulationConfig, simulate_visit
from autodriz.astrometry.config import load_aposteriori_config
from autodriz.truth import load_truth, visit_error

from realdata import prepare_goodss

SEED = 7
#: The demo's world: per-exposure pointing (10 mas) and roll (0.5") errors and the 5 mas distortion
#: residual on, an exact catalog (every README figure of this feature is measured on it).
DEMO_WORLD = {**EXACT_WORLD, "relative_error_mas": 10.0, "relative_rotation_arcsec": 0.5,
              "distortion_residual_mas": 5.0}


def _match(cat: Table, ra, dec, radius_mas: float):
    """Catalog rows matched to the nearest of (ra, dec); separations and east/north offsets in mas."""
    c = SkyCoord(np.asarray(cat["ra"]), np.asarray(cat["dec"]), unit="deg")
    t = SkyCoord(np.asarray(ra), np.asarray(dec), unit="deg")
    idx, sep, _ = c.match_to_catalog_sky(t)
    ok = sep.to_value("mas") < radius_mas
    east, north = t[idx[ok]].spherical_offsets_to(c[ok])
    return ok, sep.to_value("mas")[ok], east.to_value("mas"), north.to_value("mas")


@pytest.fixture(scope="module")
def aligned_demo(tmp_path_factory):
    """A simulated visit processed like ``autodriz demo``: aligned to its Gaia-like catalog."""
    visit = simulate_visit(tmp_path_factory.mktemp("sim") / "a", SimulationConfig(**DEMO_WORLD, pointing_error_mas=(150.0, -100.0), seed=SEED))
    code = main([str(visit.asn_path), "--jref", str(visit.jref_dir), "--catalog", str(visit.catalog_path), "-q"])
    assert code == ExitCode.OK
    return visit


def test_catalog_of_the_demo_product_matches_the_true_star_positions(aligned_demo, capsys):
    drz = aligned_demo.directory / "jsim01010_drz.fits"
    out = aligned_demo.directory / "ref.ecsv"

    code = main(["catalog", str(drz), "-o", str(out)])

    assert code == ExitCode.OK
    printed = capsys.readouterr().out
    assert f"sources of jsim01010_drz.fits written to {out}" in printed
    assert "IDC_0461802ej-FIT_REL_USER" in printed and "NOT an aligned" not in printed
    # The file is what --catalog reads: positions, magnitudes, errors and the epoch.
    table, _ = read_catalog_file(out)
    assert {"ra", "dec", "mag", "ra_error", "dec_error", "epoch"} <= set(table.colnames)
    truth = load_truth(aligned_demo.truth_path)["stars"]
    assert np.asarray(table["epoch"]) == pytest.approx(truth["epoch"], abs=1e-3)
    assert table.meta["catalog"] == "JSIM01010" and table.meta["aligned"] is True
    assert len(table) > 100

    ok, sep, east, north = _match(table, truth["ra"], truth["dec"], radius_mas=100.0)
    # Measured: 124 of 129 sources within 0.1" of a true star (the others are blends), median
    # separation 0.61 mas, mean offset (-0.14, -0.11) mas — the chosen WCS's own error.
    assert ok.mean() > 0.9
    assert np.median(sep) < 1.2  # README: 0.6 mas
    assert np.hypot(np.mean(east), np.mean(north)) < 0.4  # README: under 0.2 mas
    # The stated errors are the right size: the typical separation is within a few sigma.
    err = np.asarray(table["ra_error"])[ok]
    assert np.median(sep / (np.sqrt(2.0) * err)) < 3.0
    assert (err >= 2.5 - 1e-9).all()  # at least ACS/WFC's 0.05 px centroid error
    # ST magnitudes follow the true brightness (the simulator's G), brighter is brighter.
    t_idx = SkyCoord(np.asarray(table["ra"])[ok], np.asarray(table["dec"])[ok], unit="deg").match_to_catalog_sky(
        SkyCoord(truth["ra"], truth["dec"], unit="deg"))[0]
    assert np.corrcoef(np.asarray(table["mag"])[ok], np.asarray(truth["mag"])[t_idx])[0, 1] > 0.9


def test_second_visit_aligns_to_the_catalog_of_the_first(aligned_demo, tmp_path):
    catalog = catalog_from_product(aligned_demo.directory / "jsim01010_drz.fits")
    path = tmp_path / "deep_refcat.ecsv"
    catalog.table.write(path, format="ascii.ecsv")
    # Same field, another pointing error: the workflow of aligning a visit to a deep image.
    other = simulate_visit(tmp_path / "b", SimulationConfig(**DEMO_WORLD, pointing_error_mas=(-300.0, 200.0), seed=SEED))

    code = main([str(other.asn_path), "--jref", str(other.jref_dir), "--catalog", str(path), "-q"])

    assert code == ExitCode.OK
    with fits.open(other.flt_paths[0]) as hdul:
        assert hdul["SCI", 1].header["WCSNAME"].endswith("-FIT_REL_JSIM01010")
    err = visit_error(list(other.flt_paths), load_truth(other.truth_path))
    # From 360 mas off to the catalog's frame (itself ~0.6 mas from the truth). README: 0.4 mas.
    assert err.rms_mas < 0.8


def test_catalog_of_a_real_wfc3ir_product(shared_data, tmp_path, capsys):
    asn = prepare_goodss(shared_data, tmp_path / "f140w", "IB6O23020")
    empty_iref = tmp_path / "iref"
    empty_iref.mkdir()
    assert main([str(asn), "--iref", str(empty_iref), "--allow-header-wcs", "-q"]) == ExitCode.DEFAULT_ONLY
    drz = asn.parent / "ib6o23020_drz.fits"
    capsys.readouterr()

    code = main(["catalog", str(drz)])

    assert code == ExitCode.OK
    captured = capsys.readouterr()
    out = default_output(drz)
    assert out == asn.parent / "ib6o23020_drz_refcat.ecsv" and out.is_file()
    # The header WCS is not an aligned solution, and the user is told so.
    assert "NOT an aligned solution" in captured.out and "not an aligned solution" in captured.err
    table, _ = read_catalog_file(out)
    assert table.meta["aligned"] is False and table.meta["instrument"] == "WFC3/IR" and table.meta["filter"] == "F140W"
    # 2009-10-03: decimal year 2009.755.
    assert float(table["epoch"][0]) == pytest.approx(2009.755, abs=0.002)
    assert 20 <= len(table) <= 500
    # Every source lies on the drizzled pixels.
    with fits.open(drz) as hdul:
        x, y = WCS(hdul["SCI"].header).all_world2pix(table["ra"], table["dec"], 0)
        wht = hdul["WHT"].data
    assert (wht[np.round(y).astype(int), np.round(x).astype(int)] > 0).all()
    # WFC3/IR floor: 0.05 px of 0.128" = 6.4 mas per axis.
    assert float(np.min(table["ra_error"])) == pytest.approx(6.4, abs=0.1)

    # Independent check: one exposure's own detections, through its header WCS (the frame the
    # product was drizzled in), fall on catalog sources; the exposures of this visit disagree by
    # up to ~80 mas in that WCS (the reference's relative offsets), not more.
    src = next(p for p in (shared_data / "real" / "wfc3ir_goodss").glob("ib6o23rtq_flt.fits.gz"))
    with gzip.open(src) as fh, fits.open(fh) as hdul:
        sci = hdul["SCI", 1].data.astype(float)
        dq = hdul["DQ", 1].data.astype(np.int16)
        wcs = WCS(hdul["SCI", 1].header)
    found = detect_sources(sci, load_aposteriori_config("WFC3/IR").detection, dq=dq)
    ra, dec = wcs.all_pix2world(np.asarray(found["x"]), np.asarray(found["y"]), 0)
    ok, sep, east, north = _match(table, ra, dec, radius_mas=300.0)
    assert ok.sum() >= 10
    assert np.hypot(np.median(east), np.median(north)) < 100.0


def test_errors_of_the_command(tmp_path, capsys):
    assert main(["catalog", str(tmp_path / "missing_drz.fits")]) == ExitCode.INPUT_ERROR
    assert "does not exist" in capsys.readouterr().err
    flt = tmp_path / "x_flt.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((8, 8), np.float32), name="SCI")]).writeto(flt)
    assert main(["catalog", str(flt)]) == ExitCode.INPUT_ERROR
    assert "not a drizzled product" in capsys.readouterr().err
    assert main(["catalog", str(flt), "--min-snr", "-1"]) == ExitCode.USAGE


def test_error_model_pieces():
    # A 0.1" FWHM star at S/N 100: sigma = 0.1/2.355/100 arcsec = 0.42 mas.
    assert centroid_error_mas(0.1, np.array([100.0]))[0] == pytest.approx(0.4246, rel=1e-3)
    assert np.isinf(centroid_error_mas(0.1, np.array([0.0]))[0])
    header = fits.Header({"RMS_RA": 3.0, "RMS_DEC": 4.0, "NMATCHES": 50})
    assert frame_error_mas(header) == pytest.approx(5.0 / np.sqrt(2.0) / np.sqrt(50.0))
    assert frame_error_mas(fits.Header()) == 0.0
