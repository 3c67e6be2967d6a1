"""Scheduled reprocessing: provenance in the ledger and reports, what runs again and why, --dry-run.

Unit tests of the pure functions and of the ledger's schema migration. The campaign acceptance
(6 datasets, one input recalibrated, exactly it runs again and says why, then nothing; --dry-run
printed the same plan) extends the LocalCluster campaign of test_batch.py, so that it costs one
dataset's run rather than a campaign of its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
import zlib
from pathlib import Path

import numpy as np
from astropy.io import fits
from test_report_browser import FLAGS, chromium  # noqa: F401 - the browser fixture and flags of the dataset report's test

from autodriz.batch import Entry, decide
from autodriz.cli import main
from autodriz.ledger import DONE, FAILED, Ledger, Row
from autodriz.provenance import FileFingerprint, Provenance, changes, fingerprint_file, fingerprint_inputs
from autodriz.simulate import EXACT_WORLD, SimulationConfig, simulate_visit

# ------------------------------------------------------------------------------- unit tests


def test_fingerprint_explains_a_pixel_and_a_keyword_change_and_is_cached_by_stat(tmp_path):
    path = tmp_path / "x_flt.fits"
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((8, 8), np.float32), name="SCI")])
    hdul[0].header["CAL_VER"] = "3.5"
    hdul[0].header["PFLTFILE"] = "jref$a_pfl.fits"
    hdul.writeto(path)
    first = fingerprint_file(path)
    assert first.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()  # every byte counts
    assert first.calibration == {"CAL_VER": "3.5", "PFLTFILE": "jref$a_pfl.fits"}
    assert [h[0] for h in first.hdus] == ["PRIMARY", "SCI,1"]
    assert fingerprint_file(path, first) is first  # stat unchanged: not read again

    with fits.open(path, mode="update") as h:
        h["SCI"].data[3, 3] = 1.0
        h[0].header["PFLTFILE"] = "jref$b_pfl.fits"
    second = fingerprint_file(path, first)
    assert second.sha256 != first.sha256
    old = Provenance((first,), {"sha256": "s"}, {"sha256": "c"}, {"autodriz": "0.1"})
    new = Provenance((second,), {"sha256": "s"}, {"sha256": "c"}, {"autodriz": "0.2"})
    (reason,) = changes(old, new)
    assert reason.startswith("input changed: x_flt.fits: data of SCI,1 changed")
    assert "PFLTFILE 'jref$a_pfl.fits' → 'jref$b_pfl.fits'" in reason
    # Versions count only when asked, and only a newer one.
    assert changes(old, new, ["newer-autodriz"])[-1] == "newer autodriz: 0.1 → 0.2"
    assert changes(new, replace_versions(new, {"autodriz": "0.1"}), ["newer-autodriz"]) == []
    assert changes(new, replace_versions(new, {"autodriz": "0.1"}), ["any-version"]) == ["autodriz version 0.2 → 0.1"]


def test_a_record_from_before_crc32_data_digests_is_not_said_to_differ_in_every_part(tmp_path):
    path = tmp_path / "x_flt.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((8, 8), np.float32), name="SCI")]).writeto(path)
    now = fingerprint_file(path)
    assert all(h[2].startswith("crc32:") and len(h[2]) == 14 for h in now.hdus)
    stored = np.ones((8, 8), ">f4").tobytes().ljust(2880, bytes(1))  # the data block, padding included
    assert now.hdus[1][2] == f"crc32:{zlib.crc32(stored):08x}"
    # The same file recorded by an older autodriz (SHA-256 data digests), the header edited since.
    older = dataclasses.replace(now, sha256="0" * 64, hdus=[[e, "0" * 16, "f" * 16] for e, _, _ in now.hdus])
    old = Provenance((older,), {"sha256": "s"}, {"sha256": "c"}, {"autodriz": "0.1"})
    new = Provenance((now,), {"sha256": "s"}, {"sha256": "c"}, {"autodriz": "0.1"})
    (reason,) = changes(old, new)
    assert "data of" not in reason and reason == "input changed: x_flt.fits: header of PRIMARY, SCI,1 changed"


def test_fingerprints_in_threads_are_the_serial_ones_in_order(tmp_path):
    paths = []
    for k in range(5):
        paths.append(tmp_path / f"e{k}_flt.fits")
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.full((64, 64), k, np.float32), name="SCI")]).writeto(paths[-1])
    serial = fingerprint_inputs(paths)
    assert [fp.name for fp in serial] == [p.name for p in paths]
    assert len({fp.sha256 for fp in serial}) == 5
    assert fingerprint_inputs(paths, workers=2) == serial
    assert fingerprint_inputs(paths, serial, workers=3)[2] is serial[2]  # unchanged stat: reused


def replace_versions(p: Provenance, versions: dict) -> Provenance:
    return Provenance(p.inputs, p.settings, p.catalog, versions)


def _row(status: str, provenance: Provenance | None, **kw) -> Row:
    base = dict(input="/d/j_asn.fits", root="j", status=status, attempts=1, started_at=None, ended_at="T1",
                seconds=1.0, exit_code=0, exit_name="OK", wcsname=None, message=None, report=None, trailer=None,
                trailer_offset=None, worker=None, peak_rss_mb=None, campaign="c", added_at="T0", updated_at="T1",
                provenance=provenance.to_json() if provenance else None)
    base.update(kw)
    return Row(**base)


def test_reprocessing_rules():
    entry = Entry(Path("/d/j_asn.fits"), "j", Path("/d/j.tra"))
    fp = FileFingerprint("j_flt.fits", "a" * 64, [1, 2, 3, 4], [["SCI,1", "h", "d"]], {})
    prov = Provenance((fp,), {"sha256": "s", "values": {"verify": True}}, {"sha256": "c", "source": "services"}, {})
    assert decide(entry, None, None, retry_failed=False).reason == "new dataset"
    same = decide(entry, _row(DONE, prov), prov, retry_failed=False)
    assert not same.run and same.reason == "done, nothing changed since T1"
    other = Provenance(prov.inputs, {"sha256": "t", "values": {"verify": False}}, prov.catalog, {})
    changed = decide(entry, _row(DONE, prov), other, retry_failed=False)
    assert changed.run and changed.reason == "done before; settings changed: verify True → False"
    failed = _row(FAILED, prov, exit_name="INPUT_ERROR", exit_code=3)
    assert not decide(entry, failed, prov, retry_failed=False).run
    assert decide(entry, failed, prov, retry_failed=True).run
    # A repaired input runs a failed dataset again without --retry-failed.
    repaired = Provenance((FileFingerprint("j_flt.fits", "b" * 64),), prov.settings, prov.catalog, {})
    assert decide(entry, failed, repaired, retry_failed=False).run
    # A row from a schema-1 ledger: today's provenance becomes its baseline; nothing runs.
    old = decide(entry, _row(DONE, None), prov, retry_failed=False)
    assert not old.run and old.baseline and "baseline" in old.reason


def test_a_schema_1_ledger_is_read_as_it_is_and_migrated_by_a_campaign(tmp_path):
    path = tmp_path / "old.sqlite"
    with Ledger(path) as ledger:
        ledger.add([("/d/j_asn.fits", "j", "/d/j.tra")])
    # Make it what autodriz 0106812 wrote: schema 1, without the provenance columns.
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE d2 AS SELECT input, root, status, attempts, started_at, ended_at, seconds, exit_code, "
                "exit_name, wcsname, message, report, trailer, trailer_offset, worker, peak_rss_mb, campaign, "
                "added_at, updated_at FROM datasets")
    con.execute("DROP TABLE datasets")
    con.execute("ALTER TABLE d2 RENAME TO datasets")
    con.execute("ALTER TABLE attempts DROP COLUMN reason")
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    with Ledger(path, readonly=True) as ledger:
        (row,) = ledger.rows()
        assert row.provenance is None and ledger.meta()["schema_version"] == "1"
    with Ledger(path) as ledger:
        assert ledger.meta()["schema_version"] == "2"
        ledger.set_provenance("/d/j_asn.fits", '{"inputs": []}')
        assert ledger.get("/d/j_asn.fits").provenance == '{"inputs": []}'
        assert ledger.get("/d/j_asn.fits").root == "j"


# ------------------------------------------------------------------------------ idempotence


def _state(directory: Path) -> dict:
    """Inputs' bytes, WCS and headerlets; products' SCI/WHT arrays."""
    out = {}
    for p in sorted(directory.glob("*_flt.fits")):
        with fits.open(p) as h:
            out[p.name] = {
                "sha": hashlib.sha256(p.read_bytes()).hexdigest(),
                "wcs": [(x.header["WCSNAME"], x.header["CRVAL1"], x.header["CRVAL2"], x.header["CD1_1"], x.header["CD2_2"])
                        for x in h if x.name == "SCI"],
                "hdrlets": [(x.header["HDRNAME"], x.header["WCSNAME"]) for x in h if x.name == "HDRLET"],
            }
    for p in sorted(directory.glob("*_drz.fits")):
        with fits.open(p) as h:
            out[p.name] = {"SCI": h["SCI"].data.copy(), "WHT": h["WHT"].data.copy()}
    return out


def test_two_cores_report_fingerprints_the_updated_inputs_and_leaves_no_working_folder(tmp_path):
    import json

    from autodriz.exitcodes import ExitCode

    visit = simulate_visit(tmp_path / "v", SimulationConfig(n_exposures=2, chip_shape=(128, 256), n_stars=60, seed=3))
    args = [str(visit.asn_path), "--jref", str(visit.jref_dir), "--no-aposteriori", "--num-cores", "2", "--offline", "-q"]
    assert main(args) in (ExitCode.OK, ExitCode.DEFAULT_ONLY)
    report = json.loads((visit.directory / "jsim01010_report.json").read_text())
    recorded = {fp["name"]: fp["sha256"] for fp in report["provenance"]["inputs"]}
    inputs = [*visit.flt_paths, *visit.flc_paths]
    # Taken after the WCS update (in a thread, beside the report): the files as the run left them.
    assert {p.name: fingerprint_file(p).sha256 for p in inputs} == {p.name: recorded[p.name] for p in inputs}
    assert not [p for p in visit.directory.iterdir() if p.is_dir() and p.name.startswith("jsim01010_")]


def test_autodriz_on_its_own_output_changes_nothing(tmp_path):
    from autodriz.exitcodes import ExitCode

    visit = simulate_visit(tmp_path / "v", SimulationConfig(**EXACT_WORLD,
        n_exposures=1, chip_shape=(128, 256), n_stars=60, write_flc=False, pointing_error_mas=(40.0, -30.0),
        apriori_errors_mas=(("GSC240", 20.0, -10.0),), seed=7,
    ))
    args = [str(visit.asn_path), "--jref", str(visit.jref_dir), "--catalog", str(visit.catalog_path),
            "--apriori", "--aposteriori", "--offline", "-q"]
    assert main(args) == ExitCode.OK
    first = _state(visit.directory)
    (flt,) = [k for k in first if k.endswith("_flt.fits")]
    assert "-FIT_" in first[flt]["wcs"][0][0]  # the a posteriori fit won and was written

    assert main(args) == ExitCode.OK
    second = _state(visit.directory)
    # The inputs are byte-identical: same WCS, no headerlet attached or archived again …
    assert second[flt]["sha"] == first[flt]["sha"]
    assert second[flt]["wcs"] == first[flt]["wcs"]
    hdrnames = [h[0] for h in second[flt]["hdrlets"]]
    wcsnames = [h[1] for h in second[flt]["hdrlets"]]
    assert len(set(hdrnames)) == len(hdrnames) and len(set(wcsnames)) == len(wcsnames), second[flt]["hdrlets"]
    # … and the products' arrays are identical.
    drz = f"{visit.asn_path.name[:9]}_drz.fits"
    for ext in ("SCI", "WHT"):
        assert np.array_equal(first[drz][ext], second[drz][ext], equal_nan=True), ext
    trailer = (visit.directory / f"{visit.asn_path.name[:9]}.tra").read_text()
    assert trailer.count("is already the WCS of the inputs") == 1


def test_a_second_scheduled_run_on_a_held_ledger_exits_23_while_dry_run_still_reads_it(tmp_path, capsys):
    from autodriz.batch import BatchExit

    manifest = tmp_path / "nightly.txt"
    manifest.write_text("archive/j1_asn.fits\n")
    ledger_path = tmp_path / "nightly.ledger.sqlite"
    with Ledger(ledger_path) as running:
        running.acquire("pid 4242 on head")  # last night's run, still going
        code = main(["batch", str(manifest), "--offline", "--progress", "off"])
        assert code == BatchExit.LEDGER_ERROR == 23
        assert "in use by pid 4242 on head" in capsys.readouterr().err
        assert main(["batch", str(manifest), "--offline", "--dry-run"]) == BatchExit.OK
        assert capsys.readouterr().out.splitlines() == [
            "plan: run  archive/j1_asn.fits: new dataset", "plan: 1 to run, 0 not run"]


# ------------------------------------------------------------------------- campaign report


def _rows_for_report() -> list[Row]:
    return [
        _row(DONE, None, input=f"/a/d{i}_asn.fits", root=f"d{i}", wcsname=w, seconds=s, peak_rss_mb=m, attempts=a)
        for i, (w, s, m, a) in enumerate([
            ("IDC_0461802ej-FIT_REL_GAIADR3", 40.0, 900.0, 1), ("IDC_0461802ej-FIT_IMG_GAIADR3", 35.0, 850.0, 2),
            ("IDC_0461802ej-GSC240", 20.0, 500.0, 1), ("IDC_0461802ej", 15.0, 480.0, 1),
        ])
    ] + [
        _row(FAILED, None, input="/a/f1_asn.fits", root="f1", exit_name="INPUT_ERROR", exit_code=3,
             message="member jf1a01q_flt.fits not found", seconds=0.5, peak_rss_mb=None),
        _row(FAILED, None, input="/a/f2_asn.fits", root="f2", exit_name="TIMEOUT", exit_code=None,
             message="timed out after 7200 s", seconds=7200.0, peak_rss_mb=3100.0),
    ]


def test_campaign_report_counts_kinds_catalogs_failures_extremes_and_changes():
    from autodriz.campaign import build_campaign, wcs_kind

    assert wcs_kind("IDC_0461802ej-FIT_REL_GAIADR3") == ("aposteriori", "GAIADR3")
    assert wcs_kind("IDC_0461802ej-GSC240") == ("apriori", "GSC240")
    assert wcs_kind("IDC_0461802ej") == ("default", "-")
    rows = _rows_for_report()
    first = build_campaign(rows[1:], base=Path("/a"))
    assert first["changes_since_previous"] is None
    data = build_campaign(rows, previous=first, base=Path("/a"))
    assert data["counts"]["done"] == 4 and data["counts"]["failed"] == 2
    assert data["chosen_wcs"] == {"by_kind": {"aposteriori": 2, "apriori": 1, "default": 1},
                                  "by_catalog": {"GAIADR3": 2, "GSC240": 1}}
    assert data["failure_classes"]["INPUT_ERROR"] == {
        "count": 1, "examples": [{"dataset": "f1_asn.fits", "message": "member jf1a01q_flt.fits not found"}]}
    assert data["slowest"][0] == {"dataset": "f2_asn.fits", "seconds": 7200.0}
    assert data["largest"][0] == {"dataset": "f2_asn.fits", "peak_rss_mb": 3100.0}
    assert sum(data["seconds"]["histogram"]["counts"]) == 6 and sum(data["peak_rss_mb"]["histogram"]["counts"]) == 5
    assert data["changes_since_previous"]["new"] == ["d0_asn.fits"]


def test_campaign_report_page_renders_in_chromium(tmp_path, chromium):  # noqa: F811 - the imported fixture
    import subprocess

    from autodriz.ledger import Outcome

    browser = chromium
    ledger_path = tmp_path / "nightly.ledger.sqlite"
    with Ledger(ledger_path) as ledger:
        for r in _rows_for_report():
            path = str(tmp_path / Path(r.input).name)
            ledger.add([(path, r.root, None)])
            ledger.mark_running(path, campaign="c1", trailer_offset=0, reason="new dataset")
            ledger.finish(path, Outcome(r.status, r.exit_code, r.exit_name, r.message or "", seconds=r.seconds,
                                        wcsname=r.wcsname, peak_rss_mb=r.peak_rss_mb))
    assert main(["batch", "--report", str(ledger_path)]) == 0
    json_path, page = tmp_path / "nightly.ledger.campaign.json", tmp_path / "nightly.ledger.campaign.html"
    assert json_path.is_file() and page.is_file()
    profile = tmp_path / "profile"
    dom = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert "autodriz campaign: nightly.ledger.sqlite" in dom
    assert dom.count("data:image/png;base64,") == 2  # time and memory histograms
    assert "TIMEOUT" in dom and "INPUT_ERROR" in dom and "GAIADR3" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1200,1400",
                    page.as_uri()], capture_output=True, timeout=120, check=True)
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert (pixels.mean(axis=2) < 0.9).mean() > 0.02  # tables and histograms drawn, not a blank page
