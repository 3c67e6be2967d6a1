"""Input resolution: ASN / RAW / FLT / FLC → Dataset (autodriz.inputs)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from autodriz.asn import write_asn_table
from autodriz.errors import InputError
from autodriz.exitcodes import ExitCode
from autodriz.inputs import Dataset, resolve_input
from autodriz.validate import NOMINAL_PIXEL_SCALE_ARCSEC
from conftest import copy_decompressed

F140W = ["ib6o23rtq", "ib6o23rwq", "ib6o23rzq", "ib6o23s2q"]
G141 = ["ib6o23rsq", "ib6o23ruq", "ib6o23ryq", "ib6o23s0q"]


# ------------------------------------------------------------------------------------------
# helpers


def build_asn_from_headers(directory: Path, asn_id: str) -> Path:
    """Build the ASN table the archive would have shipped, from the FLTs' ASN_ID/ASN_MTYP."""
    members, memtypes, instrument, detector = [], set(), "", ""
    for flt in sorted(directory.glob("*_flt.fits")):
        header = fits.getheader(flt)
        if header.get("ASN_ID", "").upper() == asn_id.upper():
            members.append(header["ROOTNAME"])
            memtypes.add(header["ASN_MTYP"])
            instrument, detector = header["INSTRUME"], header["DETECTOR"]
    assert members and len(memtypes) == 1, (asn_id, memtypes)
    return write_asn_table(
        directory / f"{asn_id.lower()}_asn.fits",
        asn_id,
        members,
        instrument=instrument,
        detector=detector,
        exp_type=memtypes.pop(),
        built_by="test: built from ASN_ID/ASN_MTYP",
    )


def write_exposure(path: Path, **keywords) -> Path:
    """Write a tiny synthetic calibrated exposure that passes the input checks.

    Primary header keywords (``keywords`` win; None removes one), then a 4x4 SCI with a TAN WCS
    of the detector's pixel scale, and ERR/DQ beside it for ACS and WFC3.
    """
    defaults = {
        "ROOTNAME": path.name.split("_")[0],
        "OBSTYPE": "IMAGING",
        "DRIZCORR": "PERFORM",
        "EXPTIME": 100.0,
        "DATE-OBS": "2010-01-01",
        "EXPSTART": 55197.5,
        "EXPEND": 55197.501,
        "IDCTAB": "jref$0461802ej_idc.fits",
        "NPOLFILE": "N/A",
        "D2IMFILE": "N/A",
        "MDRIZTAB": "jref$abc_mdz.fits",
    }
    defaults.update(keywords)
    primary = fits.PrimaryHDU()
    for key, value in defaults.items():
        if value is not None:
            primary.header[key] = value
    instrument = str(defaults.get("INSTRUME", ""))
    key = "WFPC2" if instrument == "WFPC2" else f"{instrument}/{defaults.get('DETECTOR', '')}"
    scale = NOMINAL_PIXEL_SCALE_ARCSEC.get(key, (0.05, 0.05))[0] / 3600.0
    wcs = {"CRPIX1": 2.5, "CRPIX2": 2.5, "CRVAL1": 150.0, "CRVAL2": 2.2, "CTYPE1": "RA---TAN",
           "CTYPE2": "DEC--TAN", "CD1_1": -scale, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": scale}
    hdus = [primary, fits.ImageHDU(np.zeros((4, 4), dtype=np.float32), fits.Header(wcs), name="SCI")]
    if instrument in ("ACS", "WFC3"):
        hdus.append(fits.ImageHDU(np.zeros((4, 4), dtype=np.float32), name="ERR"))
        hdus.append(fits.ImageHDU(np.zeros((4, 4), dtype=np.int16), name="DQ"))
    fits.HDUList(hdus).writeto(path)
    return path


def copy_calibrated(src: Path, dest_dir: Path) -> Path:
    """Decompress a shared GOODS-S FLT into ``dest_dir`` with float SCI/ERR and int16 DQ.

    The shipped pixels were quantised to uint8, which the input check refuses (AstroDrizzle
    cannot drizzle them); the headers are kept as they are.
    """
    dest = copy_decompressed(src, dest_dir)
    with fits.open(dest, mode="update") as hdul:
        for hdu in hdul:
            if hdu.name in ("SCI", "ERR") and hdu.data is not None:
                hdu.data = hdu.data.astype(np.float32)
            elif hdu.name == "DQ" and hdu.data is not None:
                hdu.data = hdu.data.astype(np.int16)
    return dest


ACS_WFC = {"INSTRUME": "ACS", "DETECTOR": "WFC", "FILTER1": "F606W", "FILTER2": "CLEAR2L"}


@pytest.fixture
def goodss(shared_data, tmp_path) -> Path:
    """The 8 real GOODS-S WFC3/IR FLTs, decompressed, with both ASN tables built."""
    for src in sorted((shared_data / "real" / "wfc3ir_goodss").glob("*.fits.gz")):
        copy_calibrated(src, tmp_path)
    build_asn_from_headers(tmp_path, "IB6O23020")
    build_asn_from_headers(tmp_path, "IB6O23010")
    return tmp_path


# ------------------------------------------------------------------------------------------
# real data


def test_real_wfc3ir_asn(goodss):
    ds = resolve_input(goodss / "ib6o23020_asn.fits")
    assert isinstance(ds, Dataset)
    assert ds.kind == "asn"
    assert ds.root == "ib6o23020"
    assert ds.directory == goodss
    assert [e.rootname for e in ds.exposures] == F140W
    assert ds.flt_paths == tuple(goodss / f"{r}_flt.fits" for r in F140W)
    assert ds.flc_paths == () and not ds.has_flc and ds.has_flt
    assert (ds.instrument, ds.detector, ds.instrument_key) == ("WFC3", "IR", "WFC3/IR")
    assert ds.filters == ("F140W",)
    assert ds.drizcorr == "PERFORM" and ds.drizzle_requested
    assert not ds.is_spectroscopic
    assert ds.asn_built == "test: built from ASN_ID/ASN_MTYP"
    assert ds.drz_name == "ib6o23020_drz.fits" and ds.drc_name is None
    assert ds.not_present == ()
    exp = ds.exposures[0]
    assert exp.memtype == "EXP-DTH"
    assert exp.idctab == "iref$w3m18525i_idc.fits"
    assert exp.npolfile is None and exp.d2imfile is None
    assert exp.mdriztab == "iref$3562021pi_mdz.fits"
    assert exp.exptime == pytest.approx(202.932922)
    assert exp.obstype == "IMAGING"
    assert exp.paths == (goodss / "ib6o23rtq_flt.fits",)


def test_real_grism_asn_is_spectroscopic(goodss):
    ds = resolve_input(goodss / "ib6o23010_asn.fits")
    assert [e.rootname for e in ds.exposures] == G141
    assert ds.filters == ("G141",)
    assert ds.is_spectroscopic
    assert ds.drz_name == "ib6o23010_drz.fits"


def test_grism_detected_from_filter_alone(goodss):
    # OBSTYPE is not the only clue: a G141 exposure labelled IMAGING is still grism data.
    path = goodss / "ib6o23rsq_flt.fits"
    with fits.open(path, mode="update") as hdul:
        hdul[0].header["OBSTYPE"] = "IMAGING"
    assert resolve_input(path).is_spectroscopic


def test_real_single_flt_input(goodss):
    ds = resolve_input(str(goodss / "ib6o23rtq_flt.fits"))
    assert ds.kind == "flt" and ds.root == "ib6o23rtq"
    assert len(ds.exposures) == 1 and ds.exposures[0].memtype is None
    assert ds.drz_name == "ib6o23rtq_drz.fits"


def test_real_uvis_flc_rootname_from_file_stem(shared_data, tmp_path):
    flc = copy_decompressed(shared_data / "real/headers/sample_ipppssoot_flc.fits.gz", tmp_path)
    ds = resolve_input(flc)
    assert ds.kind == "flc"
    # ROOTNAME inside is ib4606c5q; the products follow the file name.
    assert ds.root == "sample_ipppssoot"
    assert ds.exposures[0].rootname == "sample_ipppssoot"
    assert ds.instrument_key == "WFC3/UVIS"
    assert ds.filters == ("F555W",)
    assert ds.flc_paths == (flc,) and ds.flt_paths == ()
    assert ds.has_flc and not ds.has_flt
    assert ds.drc_name == "sample_ipppssoot_drc.fits"
    exp = ds.exposures[0]
    assert exp.npolfile == "iref$y7b1516qi_npl.fits"
    assert exp.d2imfile == "iref$y7b1516hi_d2i.fits"


def test_real_sample_flt_flc_are_not_a_pair(shared_data, tmp_path):
    # The shared "sample_ipppssoot" FLT is WFC3/IR ib4606cpq, the FLC WFC3/UVIS ib4606c5q:
    # same file stem, different exposures. They must not be updated as one.
    flt = copy_decompressed(shared_data / "real/headers/sample_ipppssoot_flt.fits.gz", tmp_path)
    copy_decompressed(shared_data / "real/headers/sample_ipppssoot_flc.fits.gz", tmp_path)
    with pytest.raises(InputError, match=r"not the same exposure") as err:
        resolve_input(flt)
    assert "ib4606cpq" in str(err.value) and "ib4606c5q" in str(err.value)
    assert err.value.exit_code == ExitCode.INPUT_ERROR


# ------------------------------------------------------------------------------------------
# instruments and detectors (synthetic headers)


@pytest.mark.parametrize(
    ("keywords", "key", "filters"),
    [
        (ACS_WFC, "ACS/WFC", ("F606W",)),
        (
            {"INSTRUME": "ACS", "DETECTOR": "HRC", "FILTER1": "CLEAR1S", "FILTER2": "F330W"},
            "ACS/HRC",
            ("F330W",),
        ),
        (
            {"INSTRUME": "ACS", "DETECTOR": "SBC", "FILTER1": "F122M", "FILTER2": "N/A"},
            "ACS/SBC",
            ("F122M",),
        ),
        ({"INSTRUME": "WFC3", "DETECTOR": "UVIS", "FILTER": "F555W"}, "WFC3/UVIS", ("F555W",)),
        ({"INSTRUME": "WFC3", "DETECTOR": "IR", "FILTER": "F160W"}, "WFC3/IR", ("F160W",)),
        (
            {"INSTRUME": "ACS", "DETECTOR": "WFC", "FILTER1": "F606W", "FILTER2": "POL60V"},
            "ACS/WFC",
            ("F606W", "POL60V"),
        ),
    ],
)
def test_instruments_detectors_filters(tmp_path, keywords, key, filters):
    flt = write_exposure(tmp_path / "j1234567q_flt.fits", **keywords)
    ds = resolve_input(flt)
    assert ds.instrument_key == key
    assert ds.filters == filters
    assert not ds.is_spectroscopic


def test_wfpc2_is_refused_by_name_as_member_and_by_instrument(tmp_path):
    from autodriz.errors import WFPC2UnsupportedError
    from autodriz.exitcodes import ExitCode

    kw = {"INSTRUME": "WFPC2", "FILTNAM1": "F814W", "FILTNAM2": ""}
    for root in ("u2a10101t", "u2a10102t"):
        write_exposure(tmp_path / f"{root}_c0m.fits", **kw)
    asn = write_asn_table(tmp_path / "u2a10100_asn.fits", "U2A10100", ["U2A10101T", "U2A10102T"])
    with pytest.raises(WFPC2UnsupportedError, match="u2a10101t_c0m.fits: WFPC2 data are not supported") as info:
        resolve_input(asn)
    assert info.value.exit_code == ExitCode.WFPC2_UNSUPPORTED
    for name in ("u2a10101t_c0m.fits", "u2a10101t_c0f.fits", "u2a10101t_c1m.fits", "u2a10101t_d0m.fits"):
        with pytest.raises(WFPC2UnsupportedError, match=name):
            resolve_input(tmp_path / name)
    flt = write_exposure(tmp_path / "u2a10103t_flt.fits", **kw)
    with pytest.raises(WFPC2UnsupportedError, match="u2a10103t_flt.fits"):
        resolve_input(flt)


def test_acs_prism_is_spectroscopic(tmp_path):
    flt = write_exposure(
        tmp_path / "j9xx01abq_flt.fits",
        INSTRUME="ACS", DETECTOR="SBC", FILTER1="PR110L", FILTER2="N/A",
    )
    assert resolve_input(flt).is_spectroscopic


def test_unknown_instrument_named(tmp_path):
    flt = write_exposure(tmp_path / "o1234567q_flt.fits", INSTRUME="STIS", DETECTOR="CCD")
    with pytest.raises(InputError, match="STIS"):
        resolve_input(flt)


def test_unknown_detector_named(tmp_path):
    flt = write_exposure(tmp_path / "j1234567q_flt.fits", INSTRUME="ACS", DETECTOR="XYZ")
    with pytest.raises(InputError, match="XYZ"):
        resolve_input(flt)


# ------------------------------------------------------------------------------------------
# FLT/FLC pairing


def make_acs_asn(tmp_path: Path, roots: list[str], flc_for: list[str], **kw) -> Path:
    for root in roots:
        write_exposure(tmp_path / f"{root}_flt.fits", **{**ACS_WFC, **kw.get(root, {})})
        if root in flc_for:
            write_exposure(tmp_path / f"{root}_flc.fits", **{**ACS_WFC, **kw.get(root, {})})
    return write_asn_table(
        tmp_path / "jabc01010_asn.fits", "JABC01010", roots, instrument="ACS", detector="WFC"
    )


ROOTS = ["jabc01aaq", "jabc01abq", "jabc01acq"]


def test_flt_flc_pairs_in_asn(tmp_path):
    ds = resolve_input(make_acs_asn(tmp_path, ROOTS, flc_for=ROOTS))
    assert ds.has_flc and ds.has_flt
    assert ds.flt_paths == tuple(tmp_path / f"{r}_flt.fits" for r in ROOTS)
    assert ds.flc_paths == tuple(tmp_path / f"{r}_flc.fits" for r in ROOTS)
    assert ds.exposures[0].paths == (
        tmp_path / "jabc01aaq_flt.fits",
        tmp_path / "jabc01aaq_flc.fits",
    )
    assert ds.drz_name == "jabc01010_drz.fits"
    assert ds.drc_name == "jabc01010_drc.fits"
    assert ds.ignored_paths == ()
    assert ds.asn_built is None


def test_partial_flc_processes_flts_only(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="autodriz.inputs")
    ds = resolve_input(make_acs_asn(tmp_path, ROOTS, flc_for=ROOTS[:2]))
    assert not ds.has_flc
    assert ds.flc_paths == () and ds.drc_name is None
    assert len(ds.flt_paths) == 3
    assert all(e.flc is None for e in ds.exposures)
    assert ds.ignored_paths == tuple(tmp_path / f"{r}_flc.fits" for r in ROOTS[:2])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("FLTs only" in r.getMessage() and "jabc01acq" in r.getMessage() for r in warnings)


def test_partial_flt_with_all_flcs_processes_flcs_only(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="autodriz.inputs")
    for root in ROOTS:
        write_exposure(tmp_path / f"{root}_flc.fits", **ACS_WFC)
    write_exposure(tmp_path / f"{ROOTS[0]}_flt.fits", **ACS_WFC)
    asn = write_asn_table(tmp_path / "jabc01010_asn.fits", "JABC01010", ROOTS)
    ds = resolve_input(asn)
    assert ds.has_flc and not ds.has_flt
    assert ds.flt_paths == () and len(ds.flc_paths) == 3
    assert ds.ignored_paths == (tmp_path / f"{ROOTS[0]}_flt.fits",)
    assert any("FLCs only" in r.getMessage() for r in caplog.records)


def test_partial_flc_with_member_lacking_flt_is_an_error(tmp_path):
    write_exposure(tmp_path / f"{ROOTS[0]}_flt.fits", **ACS_WFC)
    write_exposure(tmp_path / f"{ROOTS[1]}_flc.fits", **ACS_WFC)
    asn = write_asn_table(tmp_path / "jabc01010_asn.fits", "JABC01010", ROOTS[:2])
    with pytest.raises(InputError, match=ROOTS[1]):
        resolve_input(asn)


def test_single_flt_picks_up_flc_and_vice_versa(tmp_path):
    flt = write_exposure(tmp_path / "jabc01aaq_flt.fits", **ACS_WFC)
    flc = write_exposure(tmp_path / "jabc01aaq_flc.fits", **ACS_WFC)
    for named, kind in ((flt, "flt"), (flc, "flc")):
        ds = resolve_input(named)
        assert ds.kind == kind and ds.root == "jabc01aaq"
        assert ds.flt_paths == (flt,) and ds.flc_paths == (flc,)
        assert ds.drc_name == "jabc01aaq_drc.fits"


# ------------------------------------------------------------------------------------------
# RAW input


def test_raw_uses_calibrated_files_even_without_raw(tmp_path):
    flt = write_exposure(tmp_path / "jabc01aaq_flt.fits", **ACS_WFC)
    flc = write_exposure(tmp_path / "jabc01aaq_flc.fits", **ACS_WFC)
    ds = resolve_input(tmp_path / "jabc01aaq_raw.fits")  # the RAW itself does not exist
    assert ds.kind == "raw" and ds.root == "jabc01aaq"
    assert ds.exposures[0].paths == (flt, flc)
    assert ds.input == tmp_path / "jabc01aaq_raw.fits"


@pytest.mark.parametrize(
    ("instrument", "detector", "tool"), [("WFC3", "IR", "calwf3"), ("ACS", "WFC", "calacs")]
)
def test_raw_without_calibrated_says_calibrate(tmp_path, instrument, detector, tool):
    raw = write_exposure(tmp_path / "iabc01aaq_raw.fits", INSTRUME=instrument, DETECTOR=detector)
    with pytest.raises(InputError, match=tool) as err:
        resolve_input(raw)
    assert "iabc01aaq_flt.fits" in str(err.value)


def test_raw_unreadable_still_names_both_tools(tmp_path):
    raw = tmp_path / "iabc01aaq_raw.fits"
    raw.write_text("not fits")
    with pytest.raises(InputError, match="calacs.*calwf3"):
        resolve_input(raw)


def test_raw_missing_entirely(tmp_path):
    with pytest.raises(InputError, match="iabc01aaq_raw.fits"):
        resolve_input(tmp_path / "iabc01aaq_raw.fits")


# ------------------------------------------------------------------------------------------
# DRIZCORR


def test_drizcorr_omit_is_reported_not_refused(tmp_path):
    flt = write_exposure(tmp_path / "jabc01aaq_flt.fits", **ACS_WFC, DRIZCORR="OMIT")
    ds = resolve_input(flt)
    assert ds.drizcorr == "OMIT" and not ds.drizzle_requested


def test_drizcorr_disagreement_uses_first_member(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="autodriz.inputs")
    asn = make_acs_asn(
        tmp_path,
        ROOTS,
        flc_for=[],
        jabc01aaq={"DRIZCORR": "OMIT"},
        jabc01acq={"DRIZCORR": "COMPLETE"},
    )
    ds = resolve_input(asn)
    assert ds.drizcorr == "OMIT"
    assert [e.drizcorr for e in ds.exposures] == ["OMIT", "PERFORM", "COMPLETE"]
    assert any(
        r.levelno == logging.WARNING and "DRIZCORR differs" in r.getMessage()
        for r in caplog.records
    )


def test_drizcorr_complete_requests_drizzle(tmp_path):
    complete = {root: {"DRIZCORR": "COMPLETE"} for root in ROOTS}
    ds = resolve_input(make_acs_asn(tmp_path, ROOTS, flc_for=[], **complete))
    assert ds.drizcorr == "COMPLETE" and ds.drizzle_requested


# ------------------------------------------------------------------------------------------
# ASN membership problems


def test_not_present_members_skipped_with_warning(goodss, caplog):
    caplog.set_level(logging.INFO, logger="autodriz.inputs")
    asn = write_asn_table(
        goodss / "ib6o23020_asn.fits", "IB6O23020", F140W,
        present=[True, False, True, True], built_by="test",
    )
    (goodss / "ib6o23rwq_flt.fits").unlink()  # gone, and the table says so: fine
    ds = resolve_input(asn)
    assert ds.not_present == ("ib6o23rwq",)
    assert [e.rootname for e in ds.exposures] == ["ib6o23rtq", "ib6o23rzq", "ib6o23s2q"]
    assert any(
        r.levelno == logging.WARNING and "ib6o23rwq" in r.getMessage() for r in caplog.records
    )
    assert any(r.levelno == logging.INFO and "ib6o23020" in r.getMessage() for r in caplog.records)


def test_missing_present_members_all_named(goodss):
    (goodss / "ib6o23rwq_flt.fits").unlink()
    (goodss / "ib6o23s2q_flt.fits").unlink()
    with pytest.raises(InputError) as err:
        resolve_input(goodss / "ib6o23020_asn.fits")
    message = str(err.value)
    assert "ib6o23rwq" in message and "ib6o23s2q" in message
    assert "ib6o23rtq" not in message


def test_asn_with_no_usable_members(goodss):
    asn = write_asn_table(goodss / "ib6o23020_asn.fits", "IB6O23020", F140W, present=[False] * 4)
    with pytest.raises(InputError, match="no usable exposures"):
        resolve_input(asn)


def test_mixed_detectors_rejected(tmp_path):
    write_exposure(tmp_path / "jabc01aaq_flt.fits", **ACS_WFC)
    write_exposure(
        tmp_path / "jabc01abq_flt.fits",
        INSTRUME="ACS", DETECTOR="HRC", FILTER1="F606W", FILTER2="CLEAR2S",
    )
    asn = write_asn_table(tmp_path / "jabc01010_asn.fits", "JABC01010", ["jabc01aaq", "jabc01abq"])
    with pytest.raises(InputError, match=r"ACS/WFC.*ACS/HRC"):
        resolve_input(asn)


def test_product_root_falls_back_to_file_stem(tmp_path):
    write_exposure(tmp_path / "jabc01aaq_flt.fits", **ACS_WFC)
    # A hand-made table with no PROD-* row: the product root is the table's stem.
    primary = fits.PrimaryHDU()
    primary.header["INSTRUME"] = "ACS"
    table = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="MEMNAME", format="14A", array=np.array(["JABC01AAQ"])),
            fits.Column(name="MEMTYPE", format="14A", array=np.array(["EXP-DTH"])),
            fits.Column(name="MEMPRSNT", format="L", array=np.array([True])),
        ]
    )
    fits.HDUList([primary, table]).writeto(tmp_path / "mydither_asn.fits")
    ds = resolve_input(tmp_path / "mydither_asn.fits")
    assert ds.root == "mydither" and ds.drz_name == "mydither_drz.fits"


# ------------------------------------------------------------------------------------------
# bad input


def test_missing_input_named(tmp_path):
    for name in ("ib6o23020_asn.fits", "ib6o23rtq_flt.fits", "ib6o23rtq_flc.fits"):
        with pytest.raises(InputError, match=name):
            resolve_input(tmp_path / name)


def test_non_fits_input(tmp_path):
    bogus = tmp_path / "jabc01aaq_flt.fits"
    bogus.write_text("this is not a FITS file\n")
    with pytest.raises(InputError, match="not a readable FITS"):
        resolve_input(bogus)


def test_fits_without_instrume(tmp_path):
    flt = tmp_path / "jabc01aaq_flt.fits"
    fits.PrimaryHDU().writeto(flt)
    with pytest.raises(InputError, match="INSTRUME"):
        resolve_input(flt)


def test_unrecognised_name(tmp_path):
    with pytest.raises(InputError, match="_asn.fits"):
        resolve_input(tmp_path / "jabc01aaq_flt.fits.gz")


def test_resolution_never_writes(goodss):
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in goodss.iterdir()}
    resolve_input(goodss / "ib6o23020_asn.fits")
    resolve_input(goodss / "ib6o23rtq_raw.fits")
    after = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in goodss.iterdir()}
    assert before == after
