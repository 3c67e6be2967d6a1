"""The reconstructed WFC3/IR IDCTAB (tests/irdistortion.py) against the real headers it comes from.

The round trip runs the real ``stwcs.updatewcs`` on the real sample FLT (ib4606cpq, F110W) with
its SIP and IDC keywords removed, and compares with that exposure's archived ``IDC_w3m18525i``
headerlet; the pipeline-default stage is then run unchanged on the real ERS exposures.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from autodriz.solutions.default import make_default_candidate

from conftest import copy_decompressed
from irdistortion import (
    IDCTAB_NAME,
    UVIS_IDCTAB_NAME,
    idc_row_from_sip,
    read_flt_sci_keywords,
    read_keyword_text,
    rebuild_wfc3ir_idctab,
    rebuild_wfc3uvis_idctab,
)
from realdata import prepare_goodss

GRID = 20


def _grid() -> tuple[np.ndarray, np.ndarray]:
    g = np.linspace(1.0, 1014.0, GRID)
    return np.meshgrid(g, g)


def _headerlets(path: Path) -> list[tuple[str, str]]:
    """(HDRNAME, WCSNAME) of every HDRLET extension of ``path``."""
    with fits.open(path) as hdul:
        return [(str(h.header["HDRNAME"]), str(h.header["WCSNAME"])) for h in hdul if h.name == "HDRLET"]


def _archived_idc_wcs(path: Path) -> fits.Header:
    from stwcs.wcsutil import headerlet  # noqa: F401 - registers the HDRLET extension type

    with fits.open(path) as hdul:
        for hdu in hdul:
            if hdu.name == "HDRLET" and hdu.header.get("WCSNAME") == "IDC_w3m18525i":
                header = hdu.headerlet["SIPWCS"].header.copy()
                break
        else:
            raise AssertionError("the sample has no IDC_w3m18525i headerlet")
    header["NAXIS"], header["NAXIS1"], header["NAXIS2"] = 2, 1014, 1014
    return header


@pytest.fixture
def iref(shared_data, tmp_path) -> Path:
    return rebuild_wfc3ir_idctab(shared_data, tmp_path / "iref").parent


def test_round_trip_reproduces_the_archived_idc_wcs_to_1e_5_mas(shared_data, tmp_path, iref, monkeypatch):
    from stwcs import updatewcs

    flt = copy_decompressed(shared_data / "real" / "headers" / "sample_ipppssoot_flt.fits.gz", tmp_path / "rt")
    expected = _archived_idc_wcs(flt)
    with fits.open(flt, mode="update") as hdul:
        sci = hdul["SCI", 1].header
        removed = [k for k in sci if k.startswith(("A_", "B_", "OCX", "OCY", "IDC")) or k == "WCSNAME"]
        for key in removed:
            del sci[key]
        sci["CTYPE1"], sci["CTYPE2"] = "RA---TAN", "DEC--TAN"
    assert "A_0_2" in removed and "OCX11" in removed and "IDCSCALE" in removed
    # stwcs expands iref$name by string concatenation: the folder needs its trailing slash.
    monkeypatch.setenv("iref", f"{iref}/")

    updatewcs.updatewcs([str(flt)], use_db=False, checkfiles=False)

    with fits.open(flt) as hdul:
        got_header = hdul["SCI", 1].header
        got = WCS(got_header, hdul)
    assert got_header["WCSNAME"] == "IDC_w3m18525i"
    assert got_header["CTYPE1"] == "RA---TAN-SIP" and got_header["A_ORDER"] == 4
    for key in ("CD1_1", "CD1_2", "CD2_1", "CD2_2"):
        assert got_header[key] == pytest.approx(expected[key], rel=1e-9), key
    for key in [k for k in expected if k[:2] in ("A_", "B_") and k[2:3].isdigit()]:
        assert got_header[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-22), key
    x, y = _grid()
    ra, dec = got.all_pix2world(x, y, 1)
    ra0, dec0 = WCS(expected).all_pix2world(x, y, 1)
    sep = SkyCoord(ra, dec, unit="deg").separation(SkyCoord(ra0, dec0, unit="deg")).to_value("mas")
    assert sep.max() < 2e-5  # README: "< 1e-5 mas over the detector"


def test_rows_follow_the_sip_relation_and_filters_are_selected(shared_data, iref):
    headers = shared_data / "real" / "headers"
    f110w = idc_row_from_sip(*read_flt_sci_keywords(headers / "sample_ipppssoot_flt.fits.gz"), "sample")
    keys140 = read_keyword_text(headers / "wfc3ir_iczgs3ygq_idc_sip.txt")
    f140w = idc_row_from_sip(keys140, "F140W", "text")
    # stwcs CompSIP applied to the rebuilt row gives back the SIP it came from.
    m = np.array([[f140w.cx[1, 1], f140w.cx[1, 0]], [f140w.cy[1, 1], f140w.cy[1, 0]]])
    for n in range(2, 5):
        for k in range(n + 1):
            a, b = np.linalg.solve(m, [f140w.cx[n, k], f140w.cy[n, k]])
            assert a == pytest.approx(keys140.get(f"A_{k}_{n - k}", 0.0), rel=1e-12, abs=1e-25)
            assert b == pytest.approx(keys140.get(f"B_{k}_{n - k}", 0.0), rel=1e-12, abs=1e-25)

    with fits.open(iref / IDCTAB_NAME) as hdul:
        table = Table(hdul[1].data)
        assert "RECONSTRUCTION" in hdul[0].header["DESCRIP"]
    assert sorted(table["FILTER"]) == ["F110W", "F140W", "G102", "G141"]
    assert "THETA" in table.colnames and set(table["THETA"]) == {45.0}
    row = {f: r for f, r in zip(table["FILTER"], table)}
    assert row["G141"]["CX32"] == row["F140W"]["CX32"] == f140w.cx[3, 2]
    assert row["G102"]["CY43"] == row["F110W"]["CY43"] == f110w.cy[4, 3]

    # The filter dependence is real (the stand-in cost the README states): the two rows differ by
    # 1-20 mas over the detector.
    x, y = (v - 507.0 for v in _grid())
    diff = [
        sum((f110w_c[n, k] - f140w_c[n, k]) * x**k * y ** (n - k) for n in range(1, 5) for k in range(n + 1))
        for f110w_c, f140w_c in ((f110w.cx, f140w.cx), (f110w.cy, f140w.cy))
    ]
    assert 1.0 < float(np.hypot(*diff).max()) * 1000 < 20.0


def test_a_filter_without_a_row_is_refused_by_stwcs(shared_data, iref):
    from stwcs.distortion.mutil import readIDCtab

    readIDCtab(str(iref / IDCTAB_NAME), filter1="G141", filter2="CLEAR")
    with pytest.raises(LookupError, match="F160W"):
        readIDCtab(str(iref / IDCTAB_NAME), filter1="F160W", filter2="CLEAR")


def test_pipeline_default_stage_uses_the_rebuilt_table_on_real_ers_exposures(shared_data, tmp_path, iref):
    reference = Table.read(shared_data / "real" / "wfc3ir_goodss" / "reference_wcs_ib6o23.ecsv")
    for asn_id in ("IB6O23020", "IB6O23010"):  # F140W, then G141 (its F140W stand-in row)
        asn = prepare_goodss(shared_data, tmp_path / asn_id, asn_id)
        originals = sorted(asn.parent.glob("*_flt.fits"))
        header_wcs = {p.name: WCS(fits.getheader(p, ("SCI", 1))) for p in originals}

        candidate = make_default_candidate(originals, tmp_path / f"{asn_id}_default", {"iref": iref},
                                           allow_header_wcs=False)

        assert candidate.updated and candidate.wcsname == "IDC_w3m18525i"
        for name, copy in candidate.copies.items():
            with fits.open(copy) as hdul:
                sci = hdul["SCI", 1].header
                wcs = WCS(sci, hdul)
            assert sci["CTYPE1"] == "RA---TAN-SIP" and (sci["CRPIX1"], sci["CRPIX2"]) == (507.0, 507.0)
            row = reference[reference["rootname"] == Path(copy).name[:9]][0]
            at_ref = SkyCoord(*wcs.all_pix2world([[507.0, 507.0]], 1)[0], unit="deg")
            # updatewcs keeps the telescope's pointing at the reference pixel …
            hdr = SkyCoord(*header_wcs[Path(copy).name].all_pix2world([[507.0, 507.0]], 1)[0], unit="deg")
            assert at_ref.separation(hdr).to_value("mas") < 5.0
            # … which is the 406-437 mas the issue measured from the grizli reference.
            off = at_ref.separation(SkyCoord(row["crval1"], row["crval2"], unit="deg")).to_value("mas")
            assert off == pytest.approx(row["d_total_mas"], abs=5.0)
            # Its linear part matches grizli's final CD (which fits its own scale) to 5e-4.
            cd = np.array([[sci["CD1_1"], sci["CD1_2"]], [sci["CD2_1"], sci["CD2_2"]]])
            ref_cd = np.array([[row["cd1_1"], row["cd1_2"]], [row["cd2_1"], row["cd2_2"]]])
            assert np.abs(cd - ref_cd).max() / np.abs(ref_cd).max() < 5e-4
        # The exposures themselves are untouched (the stage works on copies).
        assert all("A_ORDER" not in fits.getheader(p, ("SCI", 1)) for p in originals)
        shutil.rmtree(tmp_path / asn_id)


def test_exposures_at_the_reference_wcs_agree_with_a_catalog_of_two_others(shared_data, tmp_path, iref, goodss_pair_catalog):
    """The rebuilt distortion + grizli's WCS put the other exposures' sources on the pair's catalog.

    Measured: median offsets (-14, 0) mas for ib6o23rzq and (+2, 0) mas for ib6o23s2q, 18-20
    matches within 0.2″ (per-source scatter 20-40 mas: uint8-quantised pixels); at their
    pipeline-default WCS the same exposures are 407-416 mas off.
    """
    from astropy.wcs import WCS

    from autodriz.catalogs import read_catalog_file
    from autodriz.detect import detect_sources
    from autodriz.astrometry.config import load_aposteriori_config

    from realdata import place_at_reference_wcs, prepare_goodss, reference_rows

    catalog, _ = read_catalog_file(goodss_pair_catalog)
    prepare_goodss(shared_data, tmp_path / "prepared", "IB6O23020")
    assert len(catalog) >= 50
    stars = SkyCoord(np.asarray(catalog["ra"]), np.asarray(catalog["dec"]), unit="deg")
    rows = reference_rows(shared_data)
    params = load_aposteriori_config("WFC3/IR").detection
    others = [tmp_path / "prepared" / f"{r}_flt.fits" for r in ("ib6o23rzq", "ib6o23s2q")]
    default = make_default_candidate(others, tmp_path / "others_default", {"iref": iref}, allow_header_wcs=False)
    for copy in default.copies.values():
        copy = Path(copy)
        with fits.open(copy) as hdul:
            found = detect_sources(hdul["SCI", 1].data.astype(float), params, dq=hdul["DQ", 1].data)
        offsets = {}
        for label in ("default", "reference"):
            if label == "reference":
                place_at_reference_wcs(copy, rows[copy.name[:9]])
            with fits.open(copy) as hdul:
                wcs = WCS(hdul["SCI", 1].header, hdul)
            sky = SkyCoord(*wcs.all_pix2world(np.asarray(found["x"]), np.asarray(found["y"]), 0), unit="deg")
            idx, sep, _ = sky.match_to_catalog_sky(stars)
            ok = sep.to_value("mas") < 200.0
            if not ok.any():
                offsets[label] = (0, float("inf"))
                continue
            east, north = stars[idx[ok]].spherical_offsets_to(sky[ok])
            offsets[label] = (int(ok.sum()), float(np.hypot(np.median(east.to_value("mas")), np.median(north.to_value("mas")))))
        n, off = offsets["reference"]
        assert n >= 12 and off < 25.0, (copy.name, offsets)
        # At the pipeline-default WCS (~410 mas off) nothing lines up within 0.2″ the same way.
        assert offsets["default"][0] < n / 2, (copy.name, offsets)


def test_f140w_two_exposures_align_to_a_catalog_of_the_other_two(shared_data, tmp_path, iref, goodss_pair_catalog):
    """Real pixels, real distortion (rebuilt), real reference: two F140W exposures placed at
    grizli's WCS make the catalog; the other two, from their pipeline-default WCS (406-437 mas
    off), are aligned to it and land within 15 mas (median) of grizli's WCS (issue 25 asked 30)."""
    from autodriz.asn import write_asn_table
    from autodriz.cli import main
    from autodriz.exitcodes import ExitCode
    from realdata import BUILT_BY, offset_from_reference_mas, prepare_goodss, reference_rows

    catalog = goodss_pair_catalog
    prepare_goodss(shared_data, tmp_path / "prepared", "IB6O23020")
    rows, work = reference_rows(shared_data), tmp_path / "align"
    work.mkdir()
    names = ["ib6o23rzq", "ib6o23s2q"]
    for r in names:
        shutil.copyfile(tmp_path / "prepared" / f"{r}_flt.fits", work / f"{r}_flt.fits")
    before = [offset_from_reference_mas(work / f"{r}_flt.fits", rows[r])[2] for r in names]
    asn = write_asn_table(work / "ib6o23930_asn.fits", "IB6O23930", names, instrument="WFC3", detector="IR",
                          built_by=BUILT_BY)
    code = main([str(asn), "--iref", str(iref), "--catalog", str(catalog), "--no-apriori", "--offline", "-q"])
    assert code == ExitCode.OK
    for r in names:
        assert fits.getheader(work / f"{r}_flt.fits", ("SCI", 1))["WCSNAME"] == "IDC_w3m18525i-FIT_REL_IB6O23920"
    totals = [offset_from_reference_mas(work / f"{r}_flt.fits", rows[r])[2] for r in names]
    print(f"\nF140W vs grizli at (507,507): before {before} mas, after {totals} mas")
    # The issue asks for ≤ 30 mas (median) and ≤ 50 (each); the README quotes the measured 13.1
    # and 4.5 mas, so the bounds are within 2× of what is claimed.
    assert np.median(totals) <= 15.0 and max(totals) <= 20.0


def test_f140w_four_exposures_keep_the_references_relative_offsets(shared_data, tmp_path, iref, goodss_pair_catalog):
    """All four exposures, aligned relative to each other and then to the pair's catalog: each
    one's offset from grizli's WCS, less the visit's mean offset, is within 15 mas (issue 25)."""
    from autodriz.asn import write_asn_table
    from autodriz.cli import main
    from autodriz.exitcodes import ExitCode
    from realdata import BUILT_BY, offset_from_reference_mas, prepare_goodss, reference_rows

    catalog = goodss_pair_catalog
    prepare_goodss(shared_data, tmp_path / "prepared", "IB6O23020")
    rows, work = reference_rows(shared_data), tmp_path / "all4"
    work.mkdir()
    names = ["ib6o23rtq", "ib6o23rwq", "ib6o23rzq", "ib6o23s2q"]
    for r in names:
        shutil.copyfile(tmp_path / "prepared" / f"{r}_flt.fits", work / f"{r}_flt.fits")
    asn = write_asn_table(work / "ib6o23940_asn.fits", "IB6O23940", names, instrument="WFC3", detector="IR",
                          built_by=BUILT_BY)
    code = main([str(asn), "--iref", str(iref), "--catalog", str(catalog), "--no-apriori", "--offline", "-q"])
    assert code == ExitCode.OK
    offsets = np.array([offset_from_reference_mas(work / f"{r}_flt.fits", rows[r])[:2] for r in names])
    relative = np.hypot(*(offsets - offsets.mean(axis=0)).T)
    print(f"\nF140W ×4 vs grizli: offsets {offsets.round(1).tolist()} mas, relative {relative.round(1).tolist()} mas")
    assert relative.max() <= 15.0
    assert np.hypot(*offsets.mean(axis=0)) <= 20.0  # measured 10.9 mas (12.2 before one copy per star)
    # What the archive reads (issue 17): in each delivered FLT every headerlet has its own
    # WCSNAME and HDRNAME, named as drizzlepac names them; only the WCS that stwcs archived when
    # the winner became primary is named after its WCSNAME alone.
    for r in names:
        hlets = _headerlets(work / f"{r}_flt.fits")
        print(f"{r}: {hlets}")
        wcsnames = [w.upper() for _, w in hlets]
        hdrnames = [h for h, _ in hlets]
        assert len(set(wcsnames)) == len(wcsnames) and len(set(hdrnames)) == len(hdrnames), hlets
        assert any(w == "IDC_W3M18525I-FIT_REL_IB6O23920" for w in wcsnames), hlets
        for hdrname, wcsname in hlets:
            assert hdrname == f"{r}_flt_{wcsname}-hlet.fits" or hdrname == wcsname, (hdrname, wcsname)
        assert sum(h == w for h, w in hlets) <= 1, hlets


def _archived_uvis_sip_wcs(path: Path, extver: int) -> fits.Header:
    """SCI,``extver`` of the archived ``IDC_2731450pi`` headerlet, without its lookup tables."""
    from stwcs.wcsutil import headerlet  # noqa: F401 - registers the HDRLET extension type

    with fits.open(path) as hdul:
        hdu = next(h for h in hdul if h.name == "HDRLET" and h.header.get("WCSNAME") == "IDC_2731450pi")
        header = hdu.headerlet["SIPWCS", extver].header.copy()
    for key in [k for k in header if k.startswith(("CPDIS", "DP1", "DP2", "D2IM", "CPERR"))]:
        del header[key]
    header["NAXIS"], header["NAXIS1"], header["NAXIS2"] = 2, 4096, 2051
    return header


def test_uvis_round_trip_reproduces_the_archived_idc_sip_of_both_chips(shared_data, tmp_path, monkeypatch):
    """The reconstructed WFC3/UVIS table, through the real updatewcs on the real ib4606c5q FLC with
    its SIP removed and NPOLFILE/D2IMFILE off (they are not public), gives the archived
    IDC_2731450pi SIP and places both chips where the archive did (< 1 mas over each chip)."""
    from stwcs import updatewcs

    iref = rebuild_wfc3uvis_idctab(shared_data, tmp_path / "iref").parent
    flc = copy_decompressed(shared_data / "real" / "headers" / "sample_ipppssoot_flc.fits.gz", tmp_path / "rt")
    expected = {e: _archived_uvis_sip_wcs(flc, e) for e in (1, 2)}
    with fits.open(flc, mode="update") as hdul:
        hdul[0].header["NPOLFILE"] = hdul[0].header["D2IMFILE"] = "N/A"
        for extver in (1, 2):
            sci = hdul["SCI", extver].header
            removed = [k for k in sci if k.startswith(("A_", "B_", "OCX", "OCY", "IDC", "CPDIS", "DP1", "DP2", "D2IM",
                                                       "CPERR", "NPOLEXT")) or k == "WCSNAME"]
            for key in removed:
                del sci[key]
            sci["CTYPE1"], sci["CTYPE2"] = "RA---TAN", "DEC--TAN"
    monkeypatch.setenv("iref", f"{iref}/")

    updatewcs.updatewcs([str(flc)], use_db=False, checkfiles=False)

    g = np.linspace(1.0, 4096.0, GRID)
    x, y = np.meshgrid(g, np.linspace(1.0, 2051.0, GRID))
    with fits.open(flc) as hdul:
        for extver in (1, 2):
            got_header = hdul["SCI", extver].header
            assert got_header["WCSNAME"] == "IDC_2731450pi" and got_header["A_ORDER"] == 4
            want = expected[extver]
            for key in [k for k in want if k[:2] in ("A_", "B_") and k[2:3].isdigit()]:
                assert got_header[key] == pytest.approx(want[key], rel=1e-9, abs=1e-22), (extver, key)
            ra, dec = WCS(got_header).all_pix2world(x, y, 1)
            ra0, dec0 = WCS(want).all_pix2world(x, y, 1)
            sep = SkyCoord(ra, dec, unit="deg").separation(SkyCoord(ra0, dec0, unit="deg")).to_value("mas")
            assert sep.max() < 1.0, (extver, sep.max())
    with fits.open(iref / UVIS_IDCTAB_NAME) as hdul:
        table = Table(hdul[1].data)
        assert (hdul[0].header["DETECTOR"], "RECONSTRUCTION" in hdul[0].header["DESCRIP"]) == ("UVIS", True)
    assert sorted(zip(table["FILTER"], table["DETCHIP"])) == [
        ("F555W", 1), ("F555W", 2), ("F606W", 1), ("F606W", 2), ("F814W", 1), ("F814W", 2)]
    # The package ships exactly this reconstruction.
    shipped = Path(__file__).resolve().parents[1] / "src" / "autodriz" / "data" / "iref" / UVIS_IDCTAB_NAME
    assert shipped.read_bytes() == (iref / UVIS_IDCTAB_NAME).read_bytes()
