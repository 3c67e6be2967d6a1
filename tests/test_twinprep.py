"""An exposure's FLT and FLC updates share one stwcs preparation (autodriz.twinprep).

Proven equivalent on a simulated FLT+FLC visit whose files carry an a priori headerlet (its
HDRNAME names the file): the files delivered when the FLC is made from its FLT's update are
the ones delivered when each is prepared with stwcs, byte for byte, but for the DATE at which
each headerlet was made.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from astropy.io import fits

from autodriz import simulate as S
from autodriz import twinprep
from autodriz.cli import main

@pytest.fixture
def visit(apriori_twin_visit) -> S.SimulatedVisit:
    # With an a priori headerlet in each file: its HDRNAME names the file, so FLT and FLC differ there.
    return apriori_twin_visit


def _copy(visit: S.SimulatedVisit, dest: Path) -> Path:
    shutil.copytree(visit.directory, dest)
    return dest / visit.asn_path.name


def _undated(path: Path) -> list[bytes]:
    """Each HDU's bytes with the DATE cards of headerlet extensions blanked."""
    with fits.open(path) as hdul:
        return [twinprep.undated(twinprep.hdu_bytes(h)) for h in hdul]


def test_files_made_from_a_twin_are_the_ones_stwcs_makes(visit, tmp_path, monkeypatch):
    from autodriz import pipeline

    shared_asn = _copy(visit, tmp_path / "shared")
    alone_asn = _copy(visit, tmp_path / "alone")
    args = ["--jref", str(visit.jref_dir), "--no-aposteriori", "--num-cores", "1"]
    assert main([str(shared_asn), *args]) == 0
    monkeypatch.setattr(pipeline, "pair_twins", lambda *a, **k: 0)
    assert main([str(alone_asn), *args]) == 0

    trailer = (shared_asn.parent / "jsim01010.tra").read_text()
    # One core: the DRZ child prepares both FLTs first, the DRC child maps both FLCs.
    assert "2 updated exposure(s) made from their FLT/FLC twin's update" in trailer
    assert "made from their FLT/FLC twin" not in (alone_asn.parent / "jsim01010.tra").read_text()
    for path in (*visit.flt_paths, *visit.flc_paths):
        shared, alone = shared_asn.parent / path.name, alone_asn.parent / path.name
        with fits.open(shared) as hdul:
            assert {h.header["WCSNAME"] for h in hdul if h.name == "SCI"} == {"IDC_0461802ej-GSC240"}
            names = [str(h.header.get("HDRNAME", "")) for h in hdul if h.name == "HDRLET"]
        # The winner's headerlet is named after the file itself, the archived default after its WCS.
        assert names == [f"{path.stem}_IDC_0461802ej-GSC240-hlet.fits", "IDC_0461802ej"]
        a, b = _undated(shared), _undated(alone)
        assert len(a) == len(b)
        differing = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        assert not differing, f"{path.name}: HDUs {differing} differ"
    assert shared_asn.parent.joinpath(visit.flc_paths[0].name).read_bytes() != visit.flc_paths[0].read_bytes()


def test_names_map_only_between_stems_of_one_length():
    mapper = twinprep.name_mapper("/a/jsim01a1q_flt.fits", "/b/jsim01a1q_flc.fits")
    assert mapper("jsim01a1q_flt_IDC_0461802ej-GSC240-hlet.fits") == "jsim01a1q_flc_IDC_0461802ej-GSC240-hlet.fits"
    assert mapper("jsim01a1q_flt_IDC_046180") == "jsim01a1q_flc_IDC_046180"  # a WCSCORR field, cut
    assert mapper("OPUS-GSC240") == "OPUS-GSC240"
    assert mapper("jsim01a1q_fltx") == "jsim01a1q_fltx"
    assert twinprep.name_mapper("jsim01a1q_flt.fits", "jsim01a1q_flc_long.fits") is None


def test_a_headerlet_extension_and_a_wcscorr_table_are_mapped_field_by_field(visit, tmp_path):
    asn = _copy(visit, tmp_path / "run")
    assert main([str(asn), "--jref", str(visit.jref_dir), "--no-aposteriori"]) == 0
    flt, flc = asn.parent / visit.flt_paths[0].name, asn.parent / visit.flc_paths[0].name
    mapper = twinprep.name_mapper(flt, flc)
    with fits.open(flt) as a, fits.open(flc) as b:
        named = set()
        for x, y in zip(a, b, strict=True):
            if x.name in ("HDRLET", "WCSCORR"):
                raw = twinprep.hdu_bytes(x)
                if b"jsim01a1q_flt_" in raw:  # the FLT's own names, before mapping
                    named.add(x.name)
                    assert raw != twinprep.hdu_bytes(y)
                assert twinprep.undated(twinprep.map_hdu_bytes(raw, mapper)) == twinprep.undated(twinprep.hdu_bytes(y))
        assert named == {"HDRLET", "WCSCORR"}
        # Delivered twins pass the check the FLC's preparation makes; a third file does not.
        assert twinprep.twin_refusal(a, b, mapper) is None
        with fits.open(asn.parent / visit.flc_paths[1].name) as c:
            assert twinprep.twin_refusal(a, c, mapper) is not None


def test_waiting_for_a_twin_ends_when_it_failed_died_or_published(tmp_path):
    assert twinprep.claim(tmp_path, "a") and not twinprep.claim(tmp_path, "a")
    twinprep.publish(tmp_path, "a", {"attached": ["x"]})
    assert twinprep.await_twin(tmp_path, "a", timeout=1) == {"attached": ["x"]}

    assert twinprep.claim(tmp_path, "b")
    twinprep.publish_failure(tmp_path, "b")
    assert twinprep.await_twin(tmp_path, "b", timeout=1) == "its twin's preparation failed"

    # A claim held by a process that is gone: not waited for until the timeout.
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    (tmp_path / "c.claim").write_text(str(proc.pid))
    assert "is gone" in twinprep.await_twin(tmp_path, "c", timeout=30)

    # Claimed by a live process that never finishes: the wait is bounded.
    (tmp_path / "d.claim").write_text(str(os.getpid()))
    assert "not prepared within" in twinprep.await_twin(tmp_path, "d", timeout=0.2)
