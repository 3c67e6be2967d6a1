"""The default stage's updatewcs child writes each working copy once, from the original read into
memory, and that copy is byte for byte what copying the original and running updatewcs on the
copy in place gives (what the stage did before, and what runastrodriz does to its inputs), less
the sky an earlier drizzle left in the SCI headers (``MDRIZSKY``, which archive files carry) and
with the blank cards reserved at the end of the SCI headers for the cards added later."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from astropy.io import fits

from autodriz import _child
from autodriz import simulate as S

from conftest import copy_decompressed
from irdistortion import rebuild_wfc3ir_idctab


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _in_place(original: Path, dest: Path) -> Path:
    from stwcs import updatewcs

    from autodriz.hstio import as_working_copy

    shutil.copyfile(original, dest)
    updatewcs.updatewcs([str(dest)], use_db=False, checkfiles=False)
    with fits.open(dest, mode="update") as hdul:
        as_working_copy(hdul)
    return dest


def _through_child(original: Path, dest: Path) -> dict:
    return _child._updatewcs({"files": [{"source": str(original), "dest": str(dest)}]})


def test_simulated_acs_exposure_with_npol_and_d2im_gives_the_same_bytes(tmp_path, monkeypatch):
    visit = S.simulate_visit(tmp_path / "sim", S.SimulationConfig(seed=3, chip_shape=(128, 256), n_stars=40))
    monkeypatch.setenv("jref", f"{visit.jref_dir}/")
    original = visit.flt_paths[0]
    before = _digest(original)

    result = _through_child(original, tmp_path / "mem_flt.fits")
    expected = _in_place(original, tmp_path / "inplace_flt.fits")

    with fits.open(expected) as hdul:
        added = [h.name for h in hdul if h.name in ("WCSDVARR", "D2IMARR")]
    assert added, "updatewcs added no distortion extensions: the case this test is for is not exercised"
    assert (tmp_path / "mem_flt.fits").read_bytes() == expected.read_bytes()
    assert _digest(original) == before  # the original was only read
    assert (tmp_path / "mem_flt.fits").stat().st_mode & 0o777 == 0o644
    with fits.open(expected) as hdul:
        names = [h.header["WCSNAME"] for h in hdul if h.name == "SCI"]
    assert result["wcsnames"] == {str(tmp_path / "mem_flt.fits"): names}


def test_real_wfc3ir_exposure_gives_the_same_bytes(shared_data, tmp_path, monkeypatch):
    iref = rebuild_wfc3ir_idctab(shared_data, tmp_path / "iref").parent
    monkeypatch.setenv("iref", f"{iref}/")
    original = copy_decompressed(shared_data / "real" / "headers" / "sample_ipppssoot_flt.fits.gz", tmp_path / "orig")
    # The archived file carries its WCS already: give it the raw pointing WCS updatewcs starts from.
    with fits.open(original, mode="update") as hdul:
        sci = hdul["SCI", 1].header
        for key in [k for k in sci if k.startswith(("A_", "B_", "OCX", "OCY", "IDC")) or k == "WCSNAME"]:
            del sci[key]
        sci["CTYPE1"], sci["CTYPE2"] = "RA---TAN", "DEC--TAN"

    _through_child(original, tmp_path / "mem_flt.fits")
    expected = _in_place(original, tmp_path / "inplace_flt.fits")

    assert fits.getval(expected, "WCSNAME", ("SCI", 1)) == "IDC_w3m18525i"
    assert (tmp_path / "mem_flt.fits").read_bytes() == expected.read_bytes()
    # The archive's file carries the sky of the pipeline's drizzle; the working copy does not.
    assert "MDRIZSKY" in fits.getheader(original, ("SCI", 1))
    assert "MDRIZSKY" not in fits.getheader(tmp_path / "mem_flt.fits", ("SCI", 1))


def test_a_file_stwcs_needs_by_name_is_copied_and_updated_in_place(tmp_path, monkeypatch):
    # Without ROOTNAME stwcs names the SIP after the file: the child takes the copy route, and
    # the copy holds what updatewcs in place gives a file of that name.
    visit = S.simulate_visit(tmp_path / "sim", S.SimulationConfig(seed=4, chip_shape=(128, 256), n_stars=40))
    monkeypatch.setenv("jref", f"{visit.jref_dir}/")
    original = tmp_path / "noroot" / "x_flt.fits"
    original.parent.mkdir()
    with fits.open(visit.flt_paths[0]) as hdul:
        del hdul[0].header["ROOTNAME"]
        hdul.writeto(original)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert not _child._update_in_memory(str(original), str(tmp_path / "a" / "x_flt.fits"))
    assert not (tmp_path / "a" / "x_flt.fits").exists()

    _through_child(original, tmp_path / "a" / "x_flt.fits")
    expected = _in_place(original, tmp_path / "b" / "x_flt.fits")

    with fits.open(tmp_path / "a" / "x_flt.fits") as got, fits.open(expected) as want:
        assert [h.name for h in got] == [h.name for h in want]
        # stwcs named the SIP after the path it was given: the copy's, as in place.
        assert str(tmp_path / "a" / "x_flt.fits") in got[0].header["SIPNAME"]
        for a, b in zip(got, want, strict=True):
            assert [(k, str(v).replace("/a/x_flt", "/b/x_flt")) for k, v in a.header.items()] == [
                (k, str(v)) for k, v in b.header.items()
            ]


def test_wfpc2_is_never_updated_in_memory(tmp_path):
    # stwcs writes WFPC2's D2IM file next to the input, named after it.
    path = tmp_path / "u_c0m.fits"
    fits.HDUList([fits.PrimaryHDU(header=fits.Header({"INSTRUME": "WFPC2", "ROOTNAME": "u"}))]).writeto(path)
    assert not _child._update_in_memory(str(path), str(tmp_path / "out.fits"))
    assert not (tmp_path / "out.fits").exists()
