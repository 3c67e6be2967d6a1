"""Tests of autodriz.headerlets: reading a priori headerlets with astropy alone (real files)."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from autodriz import headerlets as H
from conftest import copy_decompressed

HEADERS = Path("real") / "headers"


@pytest.fixture()
def uvis_flc(shared_data, tmp_path) -> Path:
    return copy_decompressed(shared_data / HEADERS / "sample_ipppssoot_flc.fits.gz", tmp_path / "uvis")


@pytest.fixture()
def ir_flt(shared_data, tmp_path) -> Path:
    return copy_decompressed(shared_data / HEADERS / "sample_ipppssoot_flt.fits.gz", tmp_path / "ir")


@pytest.mark.parametrize(
    ("wcsname", "short"),
    [
        ("IDC_2731450pi-GSC240", "GSC240"),
        ("IDC_w3m18525i-HSC30", "HSC30"),
        ("IDC_0461802ej-GSC240 ", "GSC240"),
        ("IDC_2731450pi", None),
        ("OPUS", None),
        ("IDC_2731450pi-FIT_REL_GAIAeDR3", None),
        ("IDC_2731450pi-FIT_SVM_GAIADR2", None),
        ("", None),
    ],
)
def test_apriori_short_name(wcsname, short):
    assert H.apriori_short_name(wcsname) == short


@pytest.mark.parametrize(
    ("value", "root"),
    [
        ("iref$2731450pi_idc.fits", "2731450pi"),
        ("jref$0461802ej_idc.fits", "0461802ej"),
        ("/abs/path/0461802ej_idc.fits", "0461802ej"),
        ("N/A", None),
        ("", None),
        (None, None),
    ],
)
def test_idc_root(value, root):
    assert H.idc_root(value) == root


def test_embedded_headerlets_of_real_uvis_flc(uvis_flc):
    found = H.embedded_headerlets(uvis_flc)
    names = [h.wcsname for h in found]
    assert "IDC_2731450pi-GSC240" in names and "IDC_2731450pi-HSC30" in names
    assert "OPUS" in names and "IDC_2731450pi-FIT_REL_GAIAeDR3" in names
    apriori = {h.short: h for h in found if h.short}
    assert set(apriori) == {"GSC240", "HSC30"}
    gsc = apriori["GSC240"]
    assert gsc.idcroot == "2731450pi"
    assert gsc.destim == "ib4606c5q"
    assert gsc.source == H.SOURCE_EMBEDDED and gsc.extver is not None
    assert gsc.describe().startswith("sample_ipppssoot_flc.fits[HDRLET,")


def test_embedded_headerlets_of_real_ir_flt(ir_flt):
    apriori = {h.short: h for h in H.embedded_headerlets(ir_flt) if h.short}
    assert {k: v.wcsname for k, v in apriori.items()} == {
        "GSC240": "IDC_w3m18525i-GSC240",
        "HSC30": "IDC_w3m18525i-HSC30",
    }
    assert {v.idcroot for v in apriori.values()} == {"w3m18525i"}


def test_headerlet_bytes_round_trip_and_wcs_differences(uvis_flc, tmp_path):
    gsc = next(h for h in H.embedded_headerlets(uvis_flc) if h.short == "GSC240")
    out = H.write_headerlet(gsc, tmp_path / "gsc_hlet.fits")
    info = H.read_headerlet_file(out, "test")
    assert info.wcsname == gsc.wcsname and info.hdrname == gsc.hdrname
    chips = H.headerlet_chip_wcs(out.read_bytes())
    assert set(chips) == {("SCI", 1), ("SCI", 2)}
    # The file's primary WCS is a Gaia fit, not GSC240: the comparison must see that.
    diffs = H.wcs_differences(uvis_flc, out.read_bytes())
    assert any("CRVAL" in d for d in diffs) and any("WCSNAME" in d for d in diffs)


def test_compressed_hdrlet_extension_is_read(uvis_flc, tmp_path):
    """HDRLET extensions with COMPRESS = T hold a gzipped headerlet."""
    gsc = next(h for h in H.embedded_headerlets(uvis_flc) if h.short == "GSC240")
    raw = gzip.compress(H.headerlet_bytes(gsc))
    with fits.open(uvis_flc) as hdul:
        header = hdul[("HDRLET", gsc.extver)].header.copy()
    header["COMPRESS"] = True
    header["NAXIS1"] = len(raw)
    hdu = fits.ImageHDU(np.frombuffer(raw, dtype=np.uint8), name="HDRLET")
    hdu.header["XTENSION"] = "HDRLET"
    for key in ("COMPRESS", "HDRNAME", "WCSNAME", "EXTVER"):
        hdu.header[key] = header[key]
    target = tmp_path / "x_flt.fits"
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buffer)
    target.write_bytes(buffer.getvalue())
    found = H.embedded_headerlets(target)
    assert [h.wcsname for h in found] == ["IDC_2731450pi-GSC240"]
    assert H.headerlet_bytes(found[0]) == H.headerlet_bytes(gsc)


def test_store_finds_real_headerlet_file(shared_data, tmp_path):
    store = tmp_path / "store"
    copy_decompressed(shared_data / HEADERS / "ia1d23dmq_flt_hlet.fits.gz", store)
    (store / "ia1d23dmq_junk_hlet.fits").write_text("not FITS")
    (store / "zz000000q_hlet.fits").write_text("other exposure")
    found = H.store_headerlets(store, "IA1D23DMQ")
    assert [h.wcsname for h in found] == ["IDC_w3m18525i"]
    assert found[0].source == f"headerlet store {store}"
    assert found[0].idcroot == "w3m18525i"
    assert found[0].short is None  # distortion-only: not an a priori solution
    assert H.store_headerlets(tmp_path / "absent", "ia1d23dmq") == []


def test_headerlet_from_bytes_rejects_non_headerlets(uvis_flc):
    with pytest.raises(ValueError):
        H.headerlet_from_bytes(b"<html>no</html>", "x")
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU()]).writeto(buffer)
    with pytest.raises(ValueError):
        H.headerlet_from_bytes(buffer.getvalue(), "x")


def test_drizzlepac_hdrname_is_file_wcsname_hlet():
    from autodriz.headerlets import drizzlepac_hdrname

    assert (drizzlepac_hdrname("/data/ib6o23rsq_flt.fits", "IDC_w3m18525i-FIT_REL_GAIADR3")
            == "ib6o23rsq_flt_IDC_w3m18525i-FIT_REL_GAIADR3-hlet.fits")


def test_unique_wcsnames_append_the_geometry_of_a_colliding_fit_and_drop_repeats():
    from autodriz.headerlets import unique_wcsnames

    fit = "IDC_x-FIT_REL_GAIADR3"
    taken = {"OPUS", fit.lower()}  # the winner (general fit) and the archived WCS; case-blind
    names = unique_wcsnames(taken, [
        ("IDC_x", None),  # the default: new
        (fit, "rscale"),  # the rscale fit: same WCSNAME as the winner → geometry appended
        (fit, "rscale"),  # a second rscale of that name: nothing unique left → not attached
        ("opus", None),  # an a priori solution of a name the file has → not attached again
    ])
    assert names == ["IDC_x", f"{fit}_RSCALE", None, None]
