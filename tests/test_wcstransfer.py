"""The default stage runs updatewcs on an FLT only and carries the result over to its FLC twin.

Proven equivalent here: the FLC copy written by the transfer is byte-identical to the one
updatewcs writes when run on the FLC itself, also when the twins differ in pixel statistics or
in the sky an earlier drizzle left (``MDRIZSKY``, dropped from both working copies);
twins that differ in a keyword updatewcs reads are refused and get updatewcs of their own.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from astropy.io import fits

from autodriz import simulate as S
from autodriz.errors import WCSStageError
from autodriz.inputs import resolve_input
from autodriz.solutions.default import exposure_twins, make_default_candidate
from autodriz.wcstransfer import transfer_refusal

@pytest.fixture
def visit(apriori_twin_visit) -> S.SimulatedVisit:
    # With an a priori headerlet in each file: its HDRNAME names the file, so FLT and FLC differ there.
    return apriori_twin_visit


def _default(originals: list[Path], workdir: Path, jref: Path, twins=None):
    return make_default_candidate(originals, workdir, {"jref": jref}, allow_header_wcs=False, twins=twins)


def _edited_copy(visit, dest: Path, edit) -> list[Path]:
    """Copies of the visit's FLTs and FLCs in ``dest``; ``edit(hdul)`` applied to the first FLC."""
    dest.mkdir()
    paths = [Path(shutil.copy2(p, dest / p.name)) for p in (*visit.flt_paths, *visit.flc_paths)]
    with fits.open(dest / visit.flc_paths[0].name, mode="update") as hdul:
        edit(hdul)
    return paths


def test_twins_are_paired_by_exposure(visit):
    twins = exposure_twins(resolve_input(visit.asn_path))
    assert {c.name: f.name for c, f in twins.items()} == {
        "jsim01a1q_flc.fits": "jsim01a1q_flt.fits", "jsim01a2q_flc.fits": "jsim01a2q_flt.fits",
    }


def test_transferred_flc_is_byte_identical_to_updatewcs_on_it(visit, tmp_path, caplog):
    # One exposure's twins as simulated; the other's also differ in pixel statistics and the
    # CTE switch, as real FLT/FLC twins do.
    def stats(hdul):
        hdul["SCI", 1].header["GOODMEAN"] = (123.4, "mean of good pixels")
        hdul[0].header["PCTECORR"] = "COMPLETE"

    paths = _edited_copy(visit, tmp_path / "in", stats)
    # Files delivered by an earlier run (or the archive's) carry the sky their drizzle
    # subtracted, FLT and FLC each its own.
    for k, path in enumerate(paths):
        with fits.open(path, mode="update") as hdul:
            for hdu in (h for h in hdul if h.name == "SCI"):
                hdu.header["MDRIZSKY"] = (30.0 + k, "Sky value computed by AstroDrizzle")
    twins = {paths[2]: paths[0], paths[3]: paths[1]}
    with fits.open(paths[0]) as a, fits.open(paths[2]) as b:
        assert transfer_refusal(a, b) is None
        assert a["HDRLET", 1].header["HDRNAME"] != b["HDRLET", 1].header["HDRNAME"]
    plain = _default(paths, tmp_path / "plain", visit.jref_dir)
    with caplog.at_level(logging.INFO, logger="autodriz"):
        fast = _default(paths, tmp_path / "fast", visit.jref_dir, twins=twins)
    assert "updatewcs (distortion model, no astrometry database) on 2 copies" in caplog.text
    assert caplog.text.count("carried over") == 2
    assert fast.wcsname == plain.wcsname == "IDC_0461802ej"
    assert list(fast.copies) == list(plain.copies) == paths
    for original in paths:
        with fits.open(fast.copies[original]) as hdul, fits.open(original) as before:
            assert len(hdul) > len(before)  # D2IMARR/WCSDVARR added
        assert fast.copies[original].read_bytes() == plain.copies[original].read_bytes(), original.name
    with fits.open(fast.copies[paths[2]]) as hdul:
        assert hdul["SCI", 1].header["GOODMEAN"] == 123.4
    # Working copies start without it: the final drizzle computes the sky as on calibrated files.
    for copy in fast.copies.values():
        with fits.open(copy) as hdul:
            assert not [h for h in hdul if h.name == "SCI" and "MDRIZSKY" in h.header], copy.name


def test_a_keyword_updatewcs_reads_refuses_the_transfer(visit, tmp_path, caplog):
    def moved(hdul):
        hdul["SCI", 1].header["CRVAL1"] += 1e-4

    paths = _edited_copy(visit, tmp_path / "in", moved)
    flc = paths[2]
    with fits.open(paths[0]) as a, fits.open(flc) as b:
        assert transfer_refusal(a, b) == "SCI,1 headers differ in CRVAL1"
    twins = {paths[2]: paths[0], paths[3]: paths[1]}
    with caplog.at_level(logging.INFO, logger="autodriz"):
        fast = _default(paths, tmp_path / "fast", visit.jref_dir, twins=twins)
    assert f"{flc.name}: updatewcs runs on it too (not carried over from {paths[0].name}: SCI,1 headers" in caplog.text
    assert caplog.text.count("carried over (same") == 1  # the other exposure's FLC still is
    with fits.open(fast.copies[flc]) as hdul:  # updatewcs's own result: its CRVAL1 moved, distortion added
        assert hdul["SCI", 1].header["WCSNAME"] == "IDC_0461802ej"
        assert "D2IMARR" in hdul and hdul["SCI", 1].header["CRVAL1O"] == pytest.approx(
            fits.getheader(paths[0], ("SCI", 1))["CRVAL1"] + 1e-4)


def test_an_flc_copy_that_cannot_be_written_fails_the_stage_naming_it(visit, tmp_path, monkeypatch):
    # A failed write of an FLC's copy from its FLT's result is the stage's failure, named
    # after the FLC, as a failed copy is; the FLC before it was written.
    paths = _edited_copy(visit, tmp_path / "in", lambda hdul: None)
    twins = {paths[2]: paths[0], paths[3]: paths[1]}
    log = tmp_path / "failpoints.log"
    monkeypatch.setenv("AUTODRIZ_FAILPOINT_LOG", str(log))
    monkeypatch.setenv("AUTODRIZ_FAILPOINT", "default.transfer:2")
    with pytest.raises(WCSStageError, match=rf"could not write the working copy of {paths[3].name}: .*default.transfer:2"):
        _default(paths, tmp_path / "fast", visit.jref_dir, twins=twins)
    hits = log.read_text().split()
    assert hits.count("updatewcs") == 2 and hits.count("default.transfer") == 2, hits
    assert (tmp_path / "fast" / paths[2].name).is_file()
