"""``autodriz batch``: inputs, the per-dataset task, a real LocalCluster campaign, kill -9 and resume.

The campaign tests run real Dask LocalClusters (loopback only) over small synthetic visits with the
real stwcs/drizzlepac, so they take a few tens of seconds; the rest are unit tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from astropy.io import fits

from autodriz.batch import (
    BatchExit,
    UsageError,
    classify,
    default_ledger_path,
    expand_inputs,
    make_entries,
    run_dataset,
    verdict_from_trailer,
)
from autodriz.cli import main
from autodriz.exitcodes import ExitCode
from autodriz.ledger import DONE, FAILED, PENDING, RUNNING, SKIPPED, Ledger, LedgerError
from autodriz.simulate import EXACT_WORLD, SimulationConfig, simulate_visit

SMALL = {**EXACT_WORLD, "chip_shape": (128, 256), "write_flc": False, "n_stars": 50}
# The datasets run in worker processes, out of reach of conftest's network guard: keep them offline.
# These tests are about the campaign machinery: no network, and the pipeline-default WCS only
# (alignment is tested elsewhere), so every good dataset ends OK (exit 0) quickly.
OFFLINE = ["--offline", "--no-apriori", "--no-aposteriori"]


def _visits(folder: Path, n: int, tag: str = "BT") -> list:
    return [
        simulate_visit(folder / f"v{i}", SimulationConfig(asn_id=f"J{tag}{i:03d}010", seed=11 + i, **SMALL))
        for i in range(n)
    ]


def _sha(paths) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def _alive(pids) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def _describe(pid: int) -> str:
    try:
        p = psutil.Process(pid)
        return f"{pid} ({p.status()}, parent {p.ppid()}): {' '.join(p.cmdline())[:300]}"
    except psutil.NoSuchProcess:
        return f"{pid} (gone)"


def _processes_mentioning(text: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        with_text = any(text in part for part in (p.info["cmdline"] or []))
        if with_text and p.pid != os.getpid():
            found.append(p)
    return found


# ---------------------------------------------------------------------------------- inputs


def test_manifest_paths_globs_and_comments_resolve_relative_to_the_manifest(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("a1_asn.fits", "a2_asn.fits", "b_flt.fits"):
        (data / name).write_bytes(b"")
    manifest = tmp_path / "lists" / "campaign.txt"
    manifest.parent.mkdir()
    manifest.write_text(
        "# reprocess after the new IDCTAB\n"
        "../data/a*_asn.fits   # both associations\n"
        "\n"
        f"{data / 'b_flt.fits'}\n"
        "../data/a1_asn.fits\n"  # a duplicate is run once
        "../data/gone_asn.fits\n"  # missing: kept, the campaign fails it with its reason
    )
    inputs, manifests = expand_inputs([str(manifest)])
    assert manifests == [manifest]
    assert [p.name for p in inputs] == ["a1_asn.fits", "a2_asn.fits", "b_flt.fits", "gone_asn.fits"]
    assert all(p.is_absolute() for p in inputs)
    assert default_ledger_path(manifests) == manifest.parent / "campaign.ledger.sqlite"


def test_bad_inputs_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="matches no file"):
        expand_inputs([str(tmp_path / "*_asn.fits")])
    with pytest.raises(UsageError, match="folder"):
        expand_inputs([str(tmp_path)])
    with pytest.raises(UsageError, match="neither"):
        expand_inputs([str(tmp_path / "no_such_manifest.txt")])
    with pytest.raises(UsageError, match="--ledger"):
        default_ledger_path([])
    a, b = tmp_path / "x" / "j1_asn.fits", tmp_path / "y" / "j1_asn.fits"
    with pytest.raises(UsageError, match="same products"):
        make_entries([a, b], tmp_path / "out")  # same root, one output folder
    assert len(make_entries([a, b], None)) == 2  # beside their inputs they do not clash


def test_exit_codes_map_to_ledger_statuses_and_batch_codes_do_not_collide():
    assert classify(ExitCode.OK) == DONE
    assert classify(ExitCode.DRIZCORR_OMIT) == SKIPPED
    assert classify(ExitCode.DEFAULT_ONLY) == DONE  # products written, default WCS
    assert {classify(c) for c in ExitCode if c not in (ExitCode.OK, ExitCode.DEFAULT_ONLY, ExitCode.DRIZCORR_OMIT)} == {FAILED}
    shared = {0: "OK", 2: "USAGE", 130: "INTERRUPTED"}  # same number, same meaning
    for code in BatchExit:
        if int(code) in {int(c) for c in ExitCode}:
            assert shared.get(int(code)) == code.name == ExitCode(int(code)).name


def test_verdict_is_read_only_from_the_attempt_after_the_recorded_offset(tmp_path):
    trailer = tmp_path / "j1.tra"
    trailer.write_text("x INFO autodriz: AUTODRIZ-VERDICT DRIZZLE_FAILED exit=7 wcsname=- products=- seconds=3.0\n")
    offset = trailer.stat().st_size
    with Ledger(tmp_path / "l.sqlite") as ledger:
        ledger.add([("/d/j1_asn.fits", "j1", str(trailer))])
        ledger.mark_running("/d/j1_asn.fits", campaign="c", trailer_offset=offset)
        row = ledger.get("/d/j1_asn.fits")
        assert verdict_from_trailer(row) is None  # the old verdict belongs to an earlier attempt
        with open(trailer, "a") as f:
            f.write("x INFO autodriz: AUTODRIZ-START j1 input=/d/j1_asn.fits\n"
                    "x INFO autodriz: AUTODRIZ-VERDICT OK exit=0 wcsname=IDC_abc products=j1_drz.fits seconds=12.5\n")
        outcome = verdict_from_trailer(row)
        assert (outcome.status, outcome.exit_code, outcome.wcsname, outcome.seconds) == (DONE, 0, "IDC_abc", 12.5)


# ------------------------------------------------------------------------ the task alone


def _job(visit, **extra) -> dict:
    return {"input": str(visit.asn_path), "cli": {"jref": str(visit.jref_dir), "offline": True}, "config": None,
            "argv": ["autodriz", "batch", "test"], "timeout": 600.0, **extra}


def test_a_crashing_dataset_process_is_a_failure_with_its_signal(tmp_path):
    (visit,) = _visits(tmp_path, 1, "CR")
    before = _sha(visit.flt_paths)
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(run_dataset(_job(visit))))
    t.start()
    deadline = time.monotonic() + 60
    while not (procs := _processes_mentioning(str(visit.asn_path))) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert procs, "the dataset's process never appeared"
    procs[0].send_signal(signal.SIGSEGV)  # what a drizzlepac C extension might do
    t.join(60)
    assert result["status"] == FAILED
    assert result["exit_name"] == "KILLED_BY_SIGSEGV"
    assert "crashed" in result["message"]
    assert _sha(visit.flt_paths) == before


def test_a_dataset_over_its_timeout_is_killed_with_its_children(tmp_path):
    (visit,) = _visits(tmp_path, 1, "TO")
    before = _sha(visit.flt_paths)
    result = run_dataset(_job(visit, timeout=4.0))
    assert result["status"] == FAILED and result["exit_name"] == "TIMEOUT"
    assert "timed out after 4 s" in result["message"]
    time.sleep(0.5)
    assert not _processes_mentioning(str(visit.directory)), "a process of the timed-out dataset survived"
    assert _sha(visit.flt_paths) == before


# ------------------------------------------------------------------- campaigns on a cluster


def test_local_cluster_campaign_runs_good_datasets_and_fails_the_broken_one(tmp_path, capsys):
    visits = _visits(tmp_path / "data", 6, "LC")
    broken = visits[3]
    broken.flt_paths[0].unlink()  # an association whose member is missing
    manifest = tmp_path / "campaign.txt"
    manifest.write_text("# acceptance campaign\n" + "\n".join(str(v.asn_path) for v in visits) + "\n")
    summary = tmp_path / "summary.json"

    code = main(["batch", str(manifest), "--jref", str(visits[0].jref_dir), "--workers", "2", *OFFLINE,
                 "--summary-json", str(summary), "--progress", "plain"])

    assert code == BatchExit.SOME_FAILED == 20
    out, err = capsys.readouterr()
    assert "SOME_FAILED (exit 20)" in out and "failures:" in out
    assert "[6/6]" in err and "failed 1" in err  # plain progress lines with counts
    ledger_path = tmp_path / "campaign.ledger.sqlite"
    with Ledger(ledger_path, readonly=True) as ledger:
        rows = {Path(r.input): r for r in ledger.rows()}
    assert len(rows) == 6
    for v in visits:
        row = rows[v.asn_path]
        if v is broken:
            assert (row.status, row.exit_name, row.exit_code) == (FAILED, "INPUT_ERROR", 3)
            assert broken.flt_paths[0].name[:9] in row.message  # names the missing member
        else:
            assert (row.status, row.attempts, row.exit_code, row.wcsname) == (DONE, 1, 0, "IDC_0461802ej")
            assert Path(row.report).is_file() and (v.directory / f"{v.asn_path.name[:9]}_drz.fits").is_file()
            assert row.worker and row.peak_rss_mb and row.peak_rss_mb > 50
    assert len({r.worker for r in rows.values() if r.status == DONE}) == 2  # both workers were used
    data = json.loads(summary.read_text())
    assert data["exit_name"] == "SOME_FAILED" and data["counts"]["done"] == 5 and data["counts"]["failed"] == 1
    for v in visits:
        _assert_provenance_is_of_the_updated_inputs(rows[v.asn_path], v, done=v is not broken)

    # Scheduled reprocessing (issue 21): the archive recalibrates one exposure (same name, one
    # pixel different); the next campaign runs exactly that dataset and says why, as --dry-run said.
    changed = visits[4]
    with fits.open(changed.flt_paths[0], mode="update") as h:
        h["SCI", 1].data[10, 10] += 5.0
    args = ["batch", str(manifest), "--jref", str(visits[0].jref_dir), "--workers", "2", *OFFLINE, "--progress", "off"]
    capsys.readouterr()
    assert main([*args, "--dry-run"]) == BatchExit.OK
    planned = _plan_lines(capsys.readouterr().out)
    assert main(args) == BatchExit.SOME_FAILED  # the broken one is still failed, not retried
    ran = _plan_lines(capsys.readouterr().err)
    assert ran == planned
    assert [line for line in ran if line.startswith("plan: run ")] == [
        (f"plan: run  data/v4/{changed.asn_path.name}: done before; input changed: "
         f"{changed.flt_paths[0].name}: data of SCI,1 changed")
    ]
    assert ran[3].startswith(f"plan: skip data/v3/{broken.asn_path.name}: failed (INPUT_ERROR), nothing changed since")
    assert ran[-1] == "plan: 1 to run, 5 not run"
    expected = {v.asn_path: 2 if v is changed else 1 for v in visits}
    # Every campaign ends with its campaign report, which says what changed since the previous one.
    campaign = json.loads((tmp_path / "campaign.ledger.campaign.json").read_text())
    assert campaign["counts"]["done"] == 5 and campaign["failure_classes"]["INPUT_ERROR"]["count"] == 1
    assert campaign["changes_since_previous"]["ran_again"] == [f"data/v4/{changed.asn_path.name}"]
    assert (tmp_path / "campaign.ledger.campaign.html").is_file()
    with Ledger(ledger_path, readonly=True) as ledger:
        assert {Path(r.input): r.attempts for r in ledger.rows()} == expected
        row = ledger.get(str(changed.asn_path))
        assert row.status == DONE and row.reason == ran[4].split(": ", 2)[2]
        _assert_provenance_is_of_the_updated_inputs(row, changed, done=True)

    # Re-running changes nothing: done stays done, failed is not retried without --retry-failed,
    # and the re-run's own update of its inputs is what was recorded, so it does not run again.
    assert main(args) == BatchExit.SOME_FAILED
    assert _plan_lines(capsys.readouterr().err)[-1] == "plan: 0 to run, 6 not run"
    with Ledger(ledger_path, readonly=True) as ledger:
        assert {Path(r.input): r.attempts for r in ledger.rows()} == expected

    # A settings change runs them all again (the failed one too: it may work now), naming the setting.
    assert main([*args, "--dry-run", "--no-verify"]) == BatchExit.OK
    plan = _plan_lines(capsys.readouterr().out)
    assert plan[-1] == "plan: 6 to run, 0 not run"
    assert all("settings changed: verify True → False" in line for line in plan[:-1])

    # The status command prints counts and the failure's reason; its exit code says "some failed".
    capsys.readouterr()
    assert main(["batch", "--status", str(ledger_path)]) == BatchExit.SOME_FAILED
    status = capsys.readouterr().out
    assert "done 5" in status and "failed 1" in status and "INPUT_ERROR" in status

    # Every worker process of the LocalCluster is gone after the campaign (they exit asynchronously).
    deadline = time.monotonic() + 15
    while (left := _workers_left()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, [_describe(pid) for pid in left]


def _plan_lines(text: str) -> list[str]:
    return [line[line.index("plan: "):] for line in text.splitlines() if "plan: " in line]


def _assert_provenance_is_of_the_updated_inputs(row, visit, *, done: bool) -> None:
    """The ledger keeps the fingerprint of the inputs as the run left them, and so does report.json."""
    from autodriz.provenance import Provenance

    recorded = Provenance.from_json(row.provenance)
    names = {fp.name: fp.sha256 for fp in recorded.inputs}
    if not done:  # a member is missing: the input alone, so that repairing it shows as a change
        assert set(names) == {visit.asn_path.name}
        return
    assert set(names) == {visit.asn_path.name, *(p.name for p in visit.flt_paths)}
    for p in visit.flt_paths:
        assert names[p.name] == hashlib.sha256(p.read_bytes()).hexdigest()
    assert set(recorded.versions) >= {"autodriz", "drizzlepac", "stwcs", "tweakwcs", "astropy", "photutils"}
    assert recorded.settings["sha256"] and recorded.catalog["source"].startswith("none")
    report = json.loads(Path(row.report).read_text())
    assert {fp["sha256"] for fp in report["provenance"]["inputs"]} == set(names.values())


def _workers_left() -> list[int]:
    found = []
    for c in psutil.Process().children(recursive=True):
        try:
            if "spawn_main" in " ".join(c.cmdline()) and c.status() != psutil.STATUS_ZOMBIE:
                found.append(c.pid)
        except psutil.NoSuchProcess:
            pass
    return found


def test_kill_minus_9_mid_campaign_then_rerun_finishes_every_dataset_exactly_once(tmp_path):
    visits = _visits(tmp_path / "data", 4, "KL")
    manifest = tmp_path / "campaign.txt"
    manifest.write_text("\n".join(str(v.asn_path) for v in visits) + "\n")
    ledger_path = tmp_path / "campaign.ledger.sqlite"
    flts = [p for v in visits for p in v.flt_paths]
    original = _sha(flts)
    cmd = [sys.executable, "-m", "autodriz", "batch", str(manifest), "--jref", str(visits[0].jref_dir),
           "--workers", "2", *OFFLINE, "--progress", "plain"]

    # First campaign, in its own process group, killed -9 once two datasets are done.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    seen: set[int] = set()
    deadline = time.monotonic() + 240
    done = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                seen.update(c.pid for c in psutil.Process(proc.pid).children(recursive=True))
            except psutil.NoSuchProcess:
                break
            if ledger_path.exists():
                try:
                    with Ledger(ledger_path, readonly=True) as ledger:
                        done = ledger.counts()[DONE]
                except (LedgerError, sqlite3.Error):  # the ledger may be mid-creation; look again
                    done = 0
            if done >= 2:
                break
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert done >= 2, "the campaign did not get two datasets done in time"

    # Nothing of the killed campaign runs on: not its workers, not the datasets' processes. A
    # dataset's process started after the last look at the tree above is not in `seen` and leads
    # its own session, so the killpg misses it: its parent watchdog ends it once it notices the
    # worker is gone (within a watchdog period, after its imports if it was still starting up).
    def survivors() -> list[int]:
        return sorted(set(_alive(seen)) | {p.pid for p in _processes_mentioning(str(tmp_path / "data"))})

    deadline = time.monotonic() + 30
    while (alive := survivors()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive, f"processes outlived the killed campaign: {[_describe(pid) for pid in alive]}"

    # No input is corrupted: each is untouched or a valid FITS file with the new WCS.
    with Ledger(ledger_path, readonly=True) as ledger:
        first = {Path(r.input): r for r in ledger.rows()}
    assert any(r.status in (RUNNING, PENDING) for r in first.values())
    now = _sha(flts)
    for p in flts:
        if now[p] != original[p]:
            with fits.open(p, checksum=True) as hdul:
                hdul.verify("exception")
                assert {h.header["WCSNAME"] for h in hdul if h.name == "SCI"} == {"IDC_0461802ej"}

    # The same command again resumes and finishes.
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert rerun.returncode == BatchExit.OK, rerun.stdout + rerun.stderr
    with Ledger(ledger_path, readonly=True) as ledger:
        final = {Path(r.input): r for r in ledger.rows()}
        histories = {k: ledger.attempts_of(str(k)) for k in final}
    for v in visits:
        row = final[v.asn_path]
        assert row.status == DONE
        trailer = (v.directory / f"{row.root}.tra").read_text()
        # Done exactly once: one OK verdict in the trailer, one done attempt in the ledger …
        assert trailer.count("AUTODRIZ-VERDICT OK") == 1, row.root
        assert [h["status"] for h in histories[v.asn_path]].count(DONE) == 1
        # … and datasets finished before the kill were not run again.
        if first[v.asn_path].status == DONE:
            assert row.attempts == 1 and trailer.count("AUTODRIZ-START") == 1
        else:
            assert trailer.count("AUTODRIZ-START") <= row.attempts
        for p in v.flt_paths:
            with fits.open(p) as hdul:
                assert {h.header["WCSNAME"] for h in hdul if h.name == "SCI"} == {"IDC_0461802ej"}


def test_status_names_datasets_by_their_input_path_not_their_shared_root(tmp_path):
    # Four campaigns' worth of the same association name in different folders of an archive.
    from autodriz.batch import format_status
    from autodriz.ledger import Ledger

    ledger_path = tmp_path / "campaign.sqlite"
    inputs = [tmp_path / f"prop{n}" / "visit01" / "jsim01010_asn.fits" for n in range(4)]
    with Ledger(ledger_path) as ledger:
        ledger.add([(str(p), "jsim01010", str(p.with_name("jsim01010.tra"))) for p in inputs])
    text, _ = format_status(ledger_path)
    for n in range(4):
        assert f"prop{n}/visit01/jsim01010_asn.fits" in text
