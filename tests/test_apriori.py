"""Tests of the a priori stage (autodriz.solutions.apriori): real headers, synthetic truth, services."""

from __future__ import annotations

import hashlib
import re
import logging
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from autodriz import headerlets as H
from autodriz import simulate as S
from autodriz import truth as T
from autodriz.astrometrydb import ServiceUnavailableError
from autodriz.config import Settings
from autodriz.inputs import resolve_input
from autodriz.solutions.apriori import find_apriori_solutions, make_apriori_candidates, service_options
from autodriz.solutions.base import Candidate, copy_exposures, prepare_workdir
from autodriz.solutions.default import make_default_candidate
from conftest import copy_decompressed
from test_astrometrydb import SOLUTIONS_XML, refused_url, serve

pytestmark = [
    pytest.mark.filterwarnings("ignore:Some non-standard WCS keywords were excluded"),
    # Headerlet SIPWCS extensions carry a WCS but no image (NAXIS = 0): astropy remarks on it.
    pytest.mark.filterwarnings("ignore:The WCS transformation has more axes"),
]

ERRORS = (("GSC240", 300.0, 0.0), ("HSC30", 0.0, -30.0))
SMALL = dict(chip_shape=(128, 256), n_stars=60, cosmic_ray_fraction=0.0)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _header_default(dataset, out: Path) -> Candidate:
    """A default candidate that keeps the header WCS (what --allow-header-wcs gives)."""
    originals = [*dataset.flt_paths, *dataset.flc_paths]
    workdir = prepare_workdir(out / f"{dataset.root}_default")
    return Candidate("default", "header", workdir, copy_exposures(originals, workdir), "test", updated=False)


def _sky(header: fits.Header, fobj: fits.HDUList, shape: tuple[int, int]) -> np.ndarray:
    """Sky positions of a pixel grid through the full WCS (SIP and lookup tables)."""
    w = WCS(header, fobj=fobj)
    x, y = np.meshgrid(np.linspace(0, shape[1] - 1, 4), np.linspace(0, shape[0] - 1, 4))
    return np.array(w.all_pix2world(x.ravel(), y.ravel(), 0))


# --------------------------------------------------------------------------------------------
# real files


@pytest.mark.parametrize(
    ("name", "sub", "idc"),
    [("sample_ipppssoot_flc.fits.gz", "uvis", "2731450pi"), ("sample_ipppssoot_flt.fits.gz", "ir", "w3m18525i")],
)
def test_real_embedded_solutions_are_applied_to_copies(shared_data, tmp_path, caplog, name, sub, idc):
    # The two sample files are different exposures (UVIS ib4606c5q, IR ib4606cpq): each is its
    # own single-exposure dataset, in its own folder.
    original = copy_decompressed(shared_data / "real" / "headers" / name, tmp_path / sub)
    before = _sha(original)
    dataset = resolve_input(original)
    default = _header_default(dataset, tmp_path / "out")
    with caplog.at_level(logging.INFO, logger="autodriz"):
        cands = make_apriori_candidates(default, dataset, Settings(), tmp_path / "out")
    assert {c.name: c.wcsname for c in cands} == {
        "apriori-GSC240": f"IDC_{idc}-GSC240",
        "apriori-HSC30": f"IDC_{idc}-HSC30",
    }
    assert f"embedded a priori headerlets: IDC_{idc}-GSC240, IDC_{idc}-HSC30" in caplog.text
    embedded = {h.short: h for h in H.embedded_headerlets(original) if h.short}
    for cand in cands:
        short = cand.name.split("-", 1)[1]
        assert cand.kind == "apriori" and cand.source == "embedded HDRLET" and cand.updated
        assert cand.workdir == (tmp_path / "out").resolve() / "sample_ipppssoot_apriori" / short
        assert cand.details["headerlets"][original.name]["hdrname"] == embedded[short].hdrname
        copy = cand.copies[original]
        assert copy.parent == cand.workdir and copy != original
        content = H.headerlet_bytes(embedded[short])
        assert H.wcs_differences(copy, content) == []
        assert H.wcs_differences(original, content) != []  # the original's primary is a Gaia fit
        # Independently: the same sky for the same pixels (SIP + lookup tables included).
        with fits.HDUList.fromstring(content) as hlet, fits.open(copy) as hdul:
            for sip in (h for h in hlet if h.name == "SIPWCS"):
                target = hdul[(sip.header["TG_ENAME"], sip.header["TG_EVER"])].header
                assert target["WCSNAME"] == cand.wcsname
                shape = (int(target["NAXIS2"]), int(target["NAXIS1"]))
                assert np.allclose(_sky(target, hdul, shape), _sky(sip.header, hlet, shape), rtol=0, atol=1e-10)
    assert _sha(original) == before


def test_apriori_off_skips(tmp_path, caplog):
    settings = Settings(apply_apriori=False)
    with caplog.at_level(logging.INFO, logger="autodriz"):
        assert make_apriori_candidates(None, None, settings, tmp_path) == []  # type: ignore[arg-type]
    assert "a priori stage off" in caplog.text
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------------------------
# synthetic visit with known errors


@pytest.fixture(scope="module")
def visit(tmp_path_factory) -> S.SimulatedVisit:
    return S.simulate_visit(
        tmp_path_factory.mktemp("apriori_visit"),
        S.SimulationConfig(**S.EXACT_WORLD, seed=11, pointing_error_mas=(20.0, 10.0), apriori_errors_mas=ERRORS,
                           **SMALL),
    )


def test_synthetic_candidates_have_the_injected_errors(visit, tmp_path):
    dataset = resolve_input(visit.asn_path)
    out = tmp_path / "out"
    default = make_default_candidate(
        [*dataset.flt_paths, *dataset.flc_paths], out / f"{dataset.root}_default",
        {"jref": visit.jref_dir}, allow_header_wcs=False,
    )
    before = {p: _sha(p) for p in default.copies}
    cands = {c.name: c for c in make_apriori_candidates(default, dataset, Settings(), out)}
    assert sorted(cands) == ["apriori-GSC240", "apriori-HSC30"]
    truth = T.load_truth(visit.truth_path)
    errors = {n: T.visit_error(list(c.copies.values()), truth).rms_mas for n, c in cands.items()}
    print("a priori errors vs truth (mas):", {k: round(v, 2) for k, v in errors.items()})
    assert errors["apriori-GSC240"] == pytest.approx(300.0, abs=5.0)
    assert errors["apriori-HSC30"] == pytest.approx(30.0, abs=5.0)
    hsc = cands["apriori-HSC30"]
    assert hsc.wcsname == "IDC_0461802ej-HSC30"
    assert len(hsc.copies) == 4  # FLT and FLC of both exposures
    assert {p: _sha(p) for p in default.copies} == before
    # The default candidate's copies are untouched too (the a priori ones are new copies).
    assert T.visit_error(list(default.copies.values()), truth).rms_mas == pytest.approx(22.36, abs=1.0)

    # With two cores the copies are shared among two children: the same candidates, the same files.
    stamp = re.compile(rb"DATE    = '[0-9T:.-]+'")
    two = {c.name: c for c in make_apriori_candidates(default, dataset, Settings(num_cores=2), tmp_path / "two")}
    assert sorted(two) == sorted(cands)
    assert (tmp_path / "two" / f"{dataset.root}_apriori" / "apply_apriori_2.log").is_file()
    for name, cand in cands.items():
        for original, copy in cand.copies.items():
            other = two[name].copies[original]
            assert stamp.sub(b"", other.read_bytes()) == stamp.sub(b"", copy.read_bytes()), (name, copy.name)


@dataclass(frozen=True)
class MixedVisit:
    asn_path: Path
    flt_paths: tuple[Path, ...]


@pytest.fixture(scope="module")
def mixed_visit(visit, tmp_path_factory) -> MixedVisit:
    """The visit with jsim01a2q's HSC30 headerlets (FLT and FLC) removed.

    The simulator can leave them out itself (``apriori_missing``, tested in test_simulate);
    editing a copy saves a second simulation here.
    """
    dest = tmp_path_factory.mktemp("mixed_visit")
    shutil.copyfile(visit.asn_path, dest / visit.asn_path.name)
    for path in (*visit.flt_paths, *visit.flc_paths):
        target = dest / path.name
        shutil.copyfile(path, target)
        if path.name.startswith("jsim01a2q"):
            with fits.open(target, mode="update") as hdul:
                drop = [i for i, h in enumerate(hdul) if h.header.get("WCSNAME") == "IDC_0461802ej-HSC30" and i > 0]
                for index in reversed(drop):
                    del hdul[index]
    return MixedVisit(dest / visit.asn_path.name, tuple(dest / p.name for p in visit.flt_paths))


def test_mixed_availability_names_the_member(mixed_visit, tmp_path, caplog):
    dataset = resolve_input(mixed_visit.asn_path)
    default = _header_default(dataset, tmp_path)
    with caplog.at_level(logging.INFO, logger="autodriz"):
        cands = make_apriori_candidates(default, dataset, Settings(), tmp_path)
    assert [c.name for c in cands] == ["apriori-GSC240"]
    line = next(r.getMessage() for r in caplog.records if "HSC30 not usable" in r.getMessage())
    assert "jsim01a2q (jsim01a2q_flt.fits) lacks it" in line
    assert "jsim01a2q (jsim01a2q_flc.fits) lacks it" in line
    assert "jsim01a1q" not in line
    assert cands[0].details["not_usable"]["HSC30"]


def test_headerlet_store_fills_the_gap(mixed_visit, tmp_path):
    """The missing HSC30 of jsim01a2q comes from a store folder: usable, sources recorded."""
    # Only the bookkeeping matters here: take jsim01a1q's headerlet and retarget it (DESTIM)
    # at jsim01a2q.
    store = tmp_path / "store"
    store.mkdir()
    src = next(h for h in H.embedded_headerlets(mixed_visit.flt_paths[0]) if h.short == "HSC30")
    with fits.HDUList.fromstring(H.headerlet_bytes(src)) as hlet:
        hlet[0].header["DESTIM"] = "jsim01a2q"
        hlet[0].header["HDRNAME"] = "jsim01a2q_IDC_0461802ej-HSC30"
        hlet.writeto(store / "jsim01a2q_hlet.fits")
    dataset = resolve_input(mixed_visit.asn_path)
    default = _header_default(dataset, tmp_path)
    inventory = find_apriori_solutions(default, Settings(headerlet_store=store))
    [hsc] = [s for s in inventory.usable if s.short == "HSC30"]
    assert set(hsc.sources) == {"embedded HDRLET", f"headerlet store {store}"}
    by_file = {p.name: h.source for p, h in hsc.headerlets.items()}
    assert by_file["jsim01a2q_flc.fits"] == by_file["jsim01a2q_flt.fits"] == f"headerlet store {store}"
    assert by_file["jsim01a1q_flt.fits"] == "embedded HDRLET"


def test_other_idctab_is_not_compatible(mixed_visit, tmp_path, caplog):
    dataset = resolve_input(mixed_visit.asn_path)
    default = _header_default(dataset, tmp_path)
    victim = default.copies[dataset.flc_paths[0]]
    with fits.open(victim, mode="update") as hdul:
        hdul[0].header["IDCTAB"] = "jref$xxxxxxxxx_idc.fits"
    with caplog.at_level(logging.INFO, logger="autodriz"):
        inventory = find_apriori_solutions(default, Settings())
    assert [s.short for s in inventory.usable] == []
    reason = " ".join(inventory.rejected["GSC240"])
    assert "made for IDCTAB 0461802ej, but jsim01a1q_flc.fits uses xxxxxxxxx" in reason
    assert "GSC240 not usable" in caplog.text


# --------------------------------------------------------------------------------------------
# the astrometry database: unreachable, strict, offline, fake


def test_unreachable_service_falls_back_to_embedded(mixed_visit, tmp_path, caplog):
    dataset = resolve_input(mixed_visit.asn_path)
    default = _header_default(dataset, tmp_path)
    settings = Settings(service_timeout=1.0)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts, never answers
    silent = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    try:
        for url, budget in ((refused_url(), 0.5), (silent, settings.service_timeout + 0.3)):
            caplog.clear()
            t0 = time.monotonic()
            with caplog.at_level(logging.INFO, logger="autodriz"):
                inventory = find_apriori_solutions(default, settings, use_service=True, service_url=url)
            elapsed = time.monotonic() - t0
            print(f"{url}: stage {elapsed:.2f} s, service {inventory.service_seconds:.2f} s")
            assert inventory.service_seconds <= budget
            assert elapsed <= budget + 1.0
            assert [s.short for s in inventory.usable] == ["GSC240"]
            assert "unavailable" in inventory.service
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1, [r.getMessage() for r in warnings]
    finally:
        listener.close()


def test_strict_services_make_unreachable_an_error(mixed_visit, tmp_path):
    dataset = resolve_input(mixed_visit.asn_path)
    default = _header_default(dataset, tmp_path)
    with pytest.raises(ServiceUnavailableError):
        find_apriori_solutions(
            default, Settings(strict_services=True), use_service=True, service_url=refused_url()
        )


def test_offline_never_calls_the_service(mixed_visit, tmp_path, caplog):
    dataset = resolve_input(mixed_visit.asn_path)
    default = _header_default(dataset, tmp_path)
    server, seen = serve({"/availability": (200, b"ok")})
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        with caplog.at_level(logging.INFO, logger="autodriz"):
            inventory = find_apriori_solutions(default, Settings(offline=True), use_service=True, service_url=url)
        assert seen == []
        assert "offline" in inventory.service
    finally:
        server.shutdown()
        server.server_close()


def test_service_headerlet_completes_a_solution(mixed_visit, tmp_path):
    """jsim01a2q lacks HSC30 locally; the (fake) database has it: HSC30 becomes a candidate."""
    src = next(h for h in H.embedded_headerlets(mixed_visit.flt_paths[0]) if h.short == "HSC30")
    with fits.HDUList.fromstring(H.headerlet_bytes(src)) as hlet:
        hlet[0].header["DESTIM"] = "jsim01a2q"
        hlet[0].header["HDRNAME"] = "jsim01a2q_IDC_0461802ej-HSC30"
        served = tmp_path / "served.fits"
        hlet.writeto(served)
    xml = SOLUTIONS_XML.replace(b"IDC_2731450pi-GSC240", b"IDC_0461802ej-HSC30")
    server, seen = serve({
        "/availability": (200, b"ok"),
        "/observation/read/jsim01a2q": (200, xml),
        "/observation/read/jsim01a2q?wcsname=IDC_0461802ej-HSC30": (200, served.read_bytes()),
    })
    try:
        dataset = resolve_input(mixed_visit.asn_path)
        default = _header_default(dataset, tmp_path)
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        cands = {c.name: c for c in make_apriori_candidates(default, dataset, Settings(), tmp_path, use_service=True, service_url=url)}
    finally:
        server.shutdown()
        server.server_close()
    assert sorted(cands) == ["apriori-GSC240", "apriori-HSC30"]
    hsc = cands["apriori-HSC30"]
    assert hsc.source == "embedded HDRLET + astrometry database"
    assert hsc.details["headerlets"]["jsim01a2q_flc.fits"]["source"] == "astrometry database"
    # jsim01a1q has everything locally: the service was only asked about it, nothing fetched.
    assert "/observation/read/jsim01a1q" in seen
    assert not any("jsim01a1q?wcsname" in p for p in seen)
    for original, copy in hsc.copies.items():
        with fits.open(copy) as hdul:
            assert hdul[("SCI", 1)].header["WCSNAME"] == "IDC_0461802ej-HSC30"


def test_service_options_from_environment():
    from autodriz.config import load_settings

    assert service_options(load_settings(env={})) == (False, "https://mast.stsci.edu/portal/astrometryDB/")
    assert service_options(
        load_settings(env={"AUTODRIZ_ASTROMETRY_DB": "on", "ASTROMETRY_SERVICE_URL": "http://x.example/"})
    ) == (True, "http://x.example/")
    assert service_options(
        load_settings(env={"AUTODRIZ_ASTROMETRY_DB": "off", "ASTROMETRY_SERVICE_URL": "http://x.example/",
                           "AUTODRIZ_ASTROMETRY_DB_URL": "http://y.example/"})
    ) == (False, "http://y.example/")

@pytest.mark.parametrize("name", ["sample_ipppssoot_flc.fits.gz", "sample_ipppssoot_flt.fits.gz"])
def test_applying_in_memory_writes_the_bytes_updating_a_copy_writes(shared_data, tmp_path, name):
    """The child writes an a priori copy once from the default's copy (``source``): byte for byte
    what copying it and applying the headerlet in update mode gave, for every real headerlet."""
    from autodriz._child import _apply_apriori

    source = copy_decompressed(shared_data / "real" / "headers" / name, tmp_path / "src")
    before = _sha(source)
    embedded = [h for h in H.embedded_headerlets(source) if h.short]
    assert len(embedded) >= 2
    for info in embedded:
        hlet = H.write_headerlet(info, tmp_path / f"{info.short}_hlet.fits")
        updated = tmp_path / "updated" / info.short / source.name
        updated.parent.mkdir(parents=True)
        updated.write_bytes(source.read_bytes())
        written = tmp_path / "written" / info.short / source.name
        written.parent.mkdir(parents=True)
        result = _apply_apriori({"items": [{"copy": str(updated), "headerlet": str(hlet)},
                                           {"source": str(source), "copy": str(written), "headerlet": str(hlet)}]})
        assert result["errors"] == {}
        assert result["wcsnames"][str(written)] == result["wcsnames"][str(updated)] == [info.wcsname] * len(
            result["wcsnames"][str(written)])
        # The archived WCS's headerlet records when it was made (DATE): the clock may tick between.
        stamp = re.compile(rb"DATE    = '[0-9T:.-]+'")
        assert stamp.sub(b"DATE", written.read_bytes()) == stamp.sub(b"DATE", updated.read_bytes()), info.short
    assert _sha(source) == before
