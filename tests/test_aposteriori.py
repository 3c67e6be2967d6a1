"""A posteriori candidates on simulated visits with a known truth, and on real WFC3/IR exposures."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from autodriz import catalogs as cm
from autodriz.astrometry.config import load_aposteriori_config
from autodriz.astrometry.sources import early_stars, start_background_detection
from autodriz.config import Settings
from autodriz.errors import ConfigError
from autodriz.inputs import resolve_input
from autodriz.simulate import EXACT_WORLD, SimulationConfig, simulate_visit
from autodriz.solutions.aposteriori import make_aposteriori_candidates
from autodriz.solutions.base import Candidate
from autodriz.solutions.default import make_default_candidate
from autodriz.truth import load_truth, visit_error

INJECTED = {"pointing_error_mas": (600.0, 800.0), "rotation_error_arcsec": 180.0}  # 1.0″ and 0.05°


def _sha(paths):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def _setup(root: Path, config: SimulationConfig):
    visit = simulate_visit(root / "visit", config)
    dataset = resolve_input(visit.asn_path)
    out = root / "out"
    out.mkdir()
    default = make_default_candidate(
        [*dataset.flt_paths, *dataset.flc_paths], out / f"{dataset.root}_default", {"jref": visit.jref_dir},
        allow_header_wcs=False,
    )
    return visit, dataset, default, out


@pytest.fixture(scope="module")
def small_visit(tmp_path_factory):
    """256×512 chips, 200 synthetic stars, 1″ + 0.05° header error, 2 exposures with FLCs."""
    return _setup(tmp_path_factory.mktemp("apost"), SimulationConfig(**EXACT_WORLD, seed=11, **INJECTED))


def _best(cands):
    usable = [c for c in cands if c.copies]
    return min(usable, key=lambda c: (c.quality, c.details["statistics"]["rms_mas"]))


def _active_wcs(path: Path) -> dict[int, dict]:
    keys = ("CRVAL1", "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "WCSNAME", "NMATCHES", "FITGEOM")
    with fits.open(path) as hdul:
        return {h.ver: {k: h.header.get(k) for k in keys} for h in hdul if h.name == "SCI"}


def test_fit_recovers_injected_pointing_error(small_visit, tmp_path, caplog, capsys):
    visit, dataset, default, _ = small_visit
    truth = load_truth(visit.truth_path)
    before = _sha(default.copies.values())
    def logging_state():
        return {
            n: (lg.level, lg.propagate, len(lg.handlers))
            for n, lg in logging.root.manager.loggerDict.items()
            if isinstance(lg, logging.Logger) and n.split(".")[0] in ("tweakwcs", "stwcs", "astroquery")
        } | {"root": (logging.root.level, True, len(logging.root.handlers))}

    import tweakwcs.imalign  # noqa: F401  (its loggers exist before, as in the pipeline)

    state = logging_state()
    caplog.set_level(logging.INFO, logger="autodriz")
    settings = Settings(catalog=visit.catalog_path, offline=True)

    cands = make_aposteriori_candidates(default, dataset, settings, tmp_path)

    assert {c.name for c in cands} == {"aposteriori-REL-USER-rscale", "aposteriori-REL-USER-general"}
    best = _best(cands)
    err = visit_error(list(best.copies.values()), truth)
    default_err = visit_error(list(default.copies.values()), truth)
    assert default_err.rms_mas > 900
    assert best.quality == 1, best.notes
    assert err.rms_mas < 10.0, (best.name, err)
    stats = best.details["statistics"]
    assert stats["n_matches"] >= 100 and stats["rms_mas"] < 10
    assert stats["radial_offset_arcsec"] == pytest.approx(1.0, abs=0.1)
    assert best.details["catalog"]["has_pm"] is True
    assert best.details["relative_fit"]["done"] is True
    assert len(best.details["per_exposure"]) == 2
    # Candidate layout and names.
    assert best.kind == "aposteriori" and best.updated
    assert best.wcsname == "IDC_0461802ej-FIT_REL_USER"
    assert best.workdir == tmp_path / "jsim01010_aposteriori" / best.name
    assert set(best.copies) == set(default.copies)
    for original, copy in best.copies.items():
        assert copy.parent == best.workdir and copy.name == original.name
    # FLT and FLC of an exposure carry exactly the same WCS, with the fit keywords.
    for flt, flc in zip(dataset.flt_paths, dataset.flc_paths, strict=True):
        wflt, wflc = _active_wcs(best.copies[flt]), _active_wcs(best.copies[flc])
        assert wflt == wflc
        assert {w["WCSNAME"] for w in wflt.values()} == {best.wcsname}
        assert all(w["NMATCHES"] == stats["n_matches"] and w["FITGEOM"] == stats["geometry"] for w in wflt.values())
    # The default's copies are untouched; logging is as before; nothing on stdout.
    assert _sha(default.copies.values()) == before
    assert logging_state() == state
    assert capsys.readouterr().out == ""
    # Details go into report.json as they are.
    json.dumps([dict(c.details) for c in cands], allow_nan=False)
    text = caplog.text
    assert "relative fit of 2 exposures" in text and "quality 1" in text and "reference catalog USER" in text


def test_background_detection_on_two_cores_gives_the_same_fits(small_visit, tmp_path, caplog):
    """Chips searched in the background (on the originals, while the default stage would run)
    and in a pool of two give exactly the candidates of the serial run; one core starts nothing."""
    visit, dataset, default, _ = small_visit
    serial = make_aposteriori_candidates(default, dataset, Settings(catalog=visit.catalog_path, offline=True),
                                         tmp_path / "serial")
    assert start_background_detection(dataset, Settings(num_cores=1)) is None
    two = Settings(catalog=visit.catalog_path, offline=True, num_cores=2)
    caplog.set_level(logging.INFO, logger="autodriz")
    with start_background_detection(dataset, two) as early:
        # What the a priori candidates' verification drizzles around (taken before the stage,
        # which then takes the same tables again).
        stars = early_stars(early, dataset)
        pooled = make_aposteriori_candidates(default, dataset, two, tmp_path / "pooled", early=early)
    assert set(stars) == {str(p) for p in (*dataset.flt_paths, *dataset.flc_paths)}
    fitted = next(c for c in pooled if c.copies)
    assert set(fitted.stars) == set(stars)
    for key, chips in stars.items():
        assert set(chips) == {1, 2} and all(len(xy) > 10 for xy in chips.values())
        for extver, xy in chips.items():
            np.testing.assert_array_equal(xy, fitted.stars[key][extver])
    assert "source detection started in the background on 4 chips in 2 processes" in caplog.text
    assert "searching them now" not in caplog.text
    assert [c.name for c in pooled] == [c.name for c in serial]
    for a, b in zip(serial, pooled, strict=True):
        assert a.details["statistics"] == b.details["statistics"]
        for original in a.copies:
            assert _active_wcs(a.copies[original]) == _active_wcs(b.copies[original])


def test_background_detection_started_later_has_no_worker_before_and_the_same_tables(small_visit, tmp_path):
    """``start=False``: no worker process until :meth:`start` (the pipeline forks the default
    stage's child first); a :meth:`take` before it starts them; the tables are those of a start
    at once."""
    import psutil

    _, dataset, _, _ = small_visit
    two = Settings(num_cores=2)
    me = psutil.Process()
    before = {c.pid for c in me.children(recursive=True)}
    with start_background_detection(dataset, two, start=False) as later:
        assert {c.pid for c in me.children(recursive=True)} == before
        later.start()
        later.start()  # once only
        assert {c.pid for c in me.children(recursive=True)} - before
        tables = [later.take(job) for job in later.jobs]
    with start_background_detection(dataset, two, start=False) as taken:
        first = taken.take(taken.jobs[0])  # starts the workers
        assert first is not None and len(first) == len(tables[0])
    with start_background_detection(dataset, two) as at_once:
        for job, table in zip(at_once.jobs, tables, strict=True):
            np.testing.assert_array_equal(at_once.take(job)["x"], table["x"])
    # Closed without ever starting: nothing to wait for.
    start_background_detection(dataset, two, start=False).close()


def test_sparse_field_fits_a_shift_or_says_too_few(tmp_path):
    visit, dataset, default, out = _setup(tmp_path, SimulationConfig(**EXACT_WORLD, n_stars=8, seed=5, **INJECTED))
    cands = make_aposteriori_candidates(default, dataset, Settings(catalog=visit.catalog_path, offline=True), out)
    by_geom = {c.details.get("geometry"): c for c in cands}
    # Never a wild rscale/general solution from a handful of stars.
    for geometry in ("rscale", "general"):
        assert by_geom[geometry].quality == 4 and not by_geom[geometry].copies
        assert "fewer than" in by_geom[geometry].notes[0]
    shift = by_geom["shift"]
    assert shift.quality in (2, 3, 4)
    if shift.copies:
        err = visit_error(list(shift.copies.values()), load_truth(visit.truth_path))
        # A shift cannot remove the 0.05° roll, but it removes the 1″ offset.
        assert err.rms_mas < 150


def test_no_sources_gives_quality_5_with_the_reason(small_visit, tmp_path):
    _, dataset, default, _ = small_visit
    blank_dir = tmp_path / "blank"
    blank_dir.mkdir()
    copies = {}
    for original, copy in default.copies.items():
        dest = blank_dir / copy.name
        shutil.copyfile(copy, dest)
        with fits.open(dest, mode="update") as hdul:
            for h in hdul:
                if h.name == "SCI":
                    h.data[:] = 40.0
        copies[original] = dest
    blank = Candidate(name="default", wcsname=default.wcsname, workdir=blank_dir, copies=copies, source="test")
    cands = make_aposteriori_candidates(blank, dataset, Settings(offline=True), tmp_path)
    assert len(cands) == 1
    assert cands[0].quality == 5 and not cands[0].copies
    assert "no sources detected" in cands[0].notes[0]


def test_empty_catalog_and_catalog_elsewhere(small_visit, tmp_path):
    _, dataset, default, _ = small_visit
    empty = tmp_path / "empty.ecsv"
    Table({"ra": np.zeros(0), "dec": np.zeros(0)}).write(empty)
    cands = make_aposteriori_candidates(default, dataset, Settings(catalog=empty, offline=True), tmp_path / "a")
    assert [c.quality for c in cands] == [-1]
    assert "no star within" in cands[0].notes[0]
    elsewhere = tmp_path / "elsewhere.ecsv"
    Table({"ra": [10.0, 10.001], "dec": [-5.0, -5.0], "mag": [15.0, 16.0]}).write(elsewhere)
    cands = make_aposteriori_candidates(default, dataset, Settings(catalog=elsewhere, offline=True), tmp_path / "b")
    assert [c.quality for c in cands] == [-1] and "no star" in cands[0].notes[0]


def test_silent_catalog_service_costs_one_timeout(small_visit, tmp_path):
    _, dataset, default, _ = small_visit
    pytest.importorskip("astroquery")
    import astroquery.vizier  # noqa: F401  (import time is not service time)

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts, never answers
    try:
        service = cm.VizierService(server=f"127.0.0.1:{listener.getsockname()[1]}")
        t0 = time.monotonic()
        cands = make_aposteriori_candidates(
            default, dataset, Settings(service_timeout=1.0), tmp_path, service=service
        )
        seconds = time.monotonic() - t0
        # Every query that was made sits in the listener's backlog (the handshake completes
        # without accept): one timeout means one connection, whatever the machine's load.
        listener.settimeout(0.2)
        connections = 0
        while True:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                break
            conn.close()
            connections += 1
    finally:
        listener.close()
    assert [c.quality for c in cands] == [-1] * 5
    assert "no answer within 1 s" in cands[0].notes[0]
    assert all("not asked again" in c.notes[0] for c in cands[1:])
    assert connections == 1
    assert seconds < 60, "no hang: the run ends although the service never answers"


def test_first_good_catalog_ends_the_search(small_visit, tmp_path):
    visit, dataset, default, _ = small_visit
    folder = tmp_path / "cats"
    folder.mkdir()
    shutil.copyfile(visit.catalog_path, folder / "gaiaedr3.ecsv")

    class Recorder:
        description = "recorder"

        def __init__(self):
            self.calls = []

        def query(self, spec, region, timeout):
            self.calls.append(spec.name)
            raise cm.ServiceUnavailable("must not be asked")

    rec = Recorder()
    cands = make_aposteriori_candidates(default, dataset, Settings(catalog=folder), tmp_path, service=rec)
    assert rec.calls == []
    good = [c for c in cands if c.copies]
    assert {c.wcsname for c in good} == {"IDC_0461802ej-FIT_REL_GAIAeDR3"}
    assert min(c.quality for c in good) == 1
    skipped = [c for c in cands if c.quality == -1]
    assert [c.name for c in skipped] == [f"aposteriori-REL-{n}" for n in ("GAIADR3", "GAIADR2", "GSC242", "2MASS")]
    assert all("already gave quality 1" in c.notes[0] for c in skipped)
    # Gaia with proper motions propagated: the reference epoch and the catalog origin are reported.
    assert good[0].details["catalog"]["origin"].startswith("folder:")
    assert good[0].details["epoch"] == pytest.approx(2005.61, abs=0.01)


def test_config_for_every_detector_and_unknown_keys(tmp_path):
    for key in ("ACS/WFC", "ACS/HRC", "ACS/SBC", "WFC3/UVIS", "WFC3/IR", "WFPC2", "STIS/CCD"):
        cfg = load_aposteriori_config(key)
        assert cfg.detection.fwhm_pix > 0 and cfg.match.searchrad_arcsec > 1.5
    ir = load_aposteriori_config("wfc3/ir")
    assert ir.detection.fwhm_pix == 1.3 and ir.match.searchrad_arcsec == 3.0
    from autodriz.astrometry.config import search_radius_arcsec

    match = load_aposteriori_config("ACS/WFC").match
    # The era's pointing error decides (arcsec on every detector): GSC 2.4.0 after 2017-10-01.
    assert search_radius_arcsec(2005.6, match) == 3.0 and search_radius_arcsec(None, match) == 3.0
    assert search_radius_arcsec(2018.2, match) == 1.0
    # The "good fit" RMS is centroid-limited: ~0.3-0.4 px of each detector.
    assert ir.quality.good_rms_mas == 40.0 and load_aposteriori_config("ACS/WFC").quality.good_rms_mas == 20.0
    bad = tmp_path / "bad.toml"
    bad.write_text("[default.match]\nsearch_radius = 3\n")
    with pytest.raises(ConfigError, match="search_radius"):
        load_aposteriori_config("ACS/WFC", bad)


def test_real_wfc3ir_relative_fit_converges(shared_data, tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from realdata import prepare_goodss

    asn = prepare_goodss(shared_data, tmp_path / "data", "IB6O23020")
    dataset = resolve_input(asn)
    default = make_default_candidate(
        [*dataset.flt_paths], tmp_path / "ib6o23020_default", {"iref": None}, allow_header_wcs=True
    )
    assert default.updated is False
    cands = make_aposteriori_candidates(default, dataset, Settings(offline=True), tmp_path)
    details = cands[0].details
    per_chip = details["sources"]["per_chip"]
    assert len(per_chip) == 4 and all(n >= 30 for n in per_chip.values()), per_chip
    rel = details["relative_fit"]
    assert rel["done"], rel["reason"]
    aligned = {k: v for k, v in rel["per_exposure"].items() if v["status"] == "aligned"}
    assert len(aligned) == 3 and all(v["nmatches"] >= 5 for v in aligned.values()), rel
    assert rel["rms_mas"] < 130  # 1 IR pixel (these uint8-quantised FLTs support ~0.7 px)
    # Offline, no catalog: every catalog is "not attempted", with the reason.
    assert all(c.quality == -1 and "offline" in c.notes[0] for c in cands)
    assert all(c.wcsname.startswith("HEADER-FIT_REL_") for c in cands)


# --------------------------------------------------------------------------------------------
# acceptance on the real NGC 6791 Gaia field (slow: 1024 × 2048 chips)


# README: "~1 mas" (measured 0.80 mas rms, max 2.9, with per-exposure errors and the distortion
# residual on; 0.10 mas without them) — the bound is 2x the measured figure
ACCEPTANCE_GAIA_RMS_MAS = 1.6


@pytest.fixture(scope="module")
def ngc6791_visit(tmp_path_factory, shared_data):
    config = SimulationConfig(
        catalog=shared_data / "catalogs" / "gaia.cat", ra=290.22111182153577, dec=37.787546977448145,
        chip_shape=(1024, 2048), seed=3, **INJECTED,
        # as hard as the CLI's defaults: each exposure its own pointing and roll error, and a
        # distortion the reference files do not model exactly (issue 18)
        relative_error_mas=10.0, relative_rotation_arcsec=0.5, distortion_residual_mas=5.0,
        gaia_dr3_errors=False, no_pm_fraction=0.0,
    )
    return _setup(tmp_path_factory.mktemp("ngc6791"), config)


@pytest.mark.slow
def test_acceptance_gaia_field_within_1_6_mas(ngc6791_visit, tmp_path):
    visit, dataset, default, _ = ngc6791_visit
    cands = make_aposteriori_candidates(default, dataset, Settings(catalog=visit.catalog_path, offline=True), tmp_path)
    best = _best(cands)
    err = visit_error(list(best.copies.values()), load_truth(visit.truth_path))
    print(f"\nGaia-like refcat: best {best.name} quality {best.quality}, "
          f"{best.details['statistics']['n_matches']} matches, fit RMS {best.details['statistics']['rms_mas']:.2f} mas, "
          f"truth error {err.rms_mas:.2f} mas (max {err.max_mas:.2f})")
    assert best.quality == 1
    assert best.details["statistics"]["n_matches"] >= 100
    assert err.rms_mas < ACCEPTANCE_GAIA_RMS_MAS


@pytest.mark.slow
def test_acceptance_sdss_is_worse_and_says_so(ngc6791_visit, shared_data, tmp_path):
    visit, dataset, default, _ = ngc6791_visit
    gaia = make_aposteriori_candidates(default, dataset, Settings(catalog=visit.catalog_path, offline=True), tmp_path / "g")
    sdss = make_aposteriori_candidates(
        default, dataset, Settings(catalog=shared_data / "catalogs" / "sdss.cat", offline=True), tmp_path / "s"
    )
    g, s = _best(gaia), _best(sdss)
    truth = load_truth(visit.truth_path)
    print(f"\nSDSS: best {s.name} quality {s.quality}, {s.details['statistics']['n_matches']} matches, "
          f"fit RMS {s.details['statistics']['rms_mas']:.1f} mas, truth error "
          f"{visit_error(list(s.copies.values()), truth).rms_mas:.1f} mas; "
          f"Gaia: quality {g.quality}, RMS {g.details['statistics']['rms_mas']:.2f} mas")
    assert s.wcsname.endswith("FIT_REL_SDSS")
    assert s.details["statistics"]["rms_mas"] > 3 * g.details["statistics"]["rms_mas"]
    assert s.quality > g.quality
    assert not s.details["catalog"]["has_pm"]
    assert math.isfinite(s.details["catalog"]["expected_error_mas"])


def test_image_by_image_fit_when_no_relative_fit(small_visit, tmp_path):
    visit, dataset, default, _ = small_visit
    from autodriz.config import default_config_dir

    text = (default_config_dir() / "aposteriori.toml").read_text()
    cfg = tmp_path / "aposteriori.toml"
    cfg.write_text(text.replace('relative_geometries = ["rscale", "shift"]', "relative_geometries = []"))
    cands = make_aposteriori_candidates(
        default, dataset, Settings(catalog=visit.catalog_path, offline=True), tmp_path, config_path=cfg
    )
    best = _best(cands)
    assert best.wcsname == "IDC_0461802ej-FIT_IMG_USER" and best.name.startswith("aposteriori-IMG-USER")
    assert best.details["relative_fit"]["done"] is False
    # Fitted one by one, yet the exposures' corrections agree (same pointing error) …
    corrections = [p["correction_mas"] for p in best.details["per_exposure"]]
    assert np.hypot(*np.subtract(corrections[0], corrections[1])) < 10
    # … and the result is good, with the caveat that no relative fit was made.
    assert best.quality == 2 and any("relative" in n for n in best.notes)
    assert visit_error(list(best.copies.values()), load_truth(visit.truth_path)).rms_mas < 10
