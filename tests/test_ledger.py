"""The batch ledger: statuses, attempts, stale rows, the campaign lock (no cluster, no pipeline)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from autodriz.ledger import (
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    Ledger,
    LedgerBusy,
    LedgerError,
    Outcome,
)


def _ledger(tmp_path, n=3):
    ledger = Ledger(tmp_path / "c.ledger.sqlite")
    ledger.add([(f"/data/d{i}_asn.fits", f"d{i}", f"/data/d{i}.tra") for i in range(n)])
    return ledger


def test_rows_start_pending_and_adding_again_changes_nothing(tmp_path):
    with _ledger(tmp_path) as ledger:
        assert ledger.counts() == {"pending": 3, "running": 0, "done": 0, "failed": 0, "skipped": 0}
        ledger.mark_running("/data/d0_asn.fits", campaign="c1", trailer_offset=0)
        ledger.finish("/data/d0_asn.fits", Outcome(DONE, 0, "OK", "fine", wcsname="IDC_x"), campaign="c1")
        assert ledger.add([("/data/d0_asn.fits", "d0", None), ("/data/d9_asn.fits", "d9", None)]) == 1
        row = ledger.get("/data/d0_asn.fits")
        assert (row.status, row.attempts, row.wcsname, row.exit_name) == (DONE, 1, "IDC_x", "OK")
        assert [r.root for r in ledger.rows()] == ["d0", "d1", "d2", "d9"]  # insertion order


def test_attempts_count_and_history_is_kept(tmp_path):
    with _ledger(tmp_path) as ledger:
        key = "/data/d1_asn.fits"
        assert ledger.mark_running(key, campaign="c1", trailer_offset=0) == 1
        ledger.finish(key, Outcome(FAILED, 7, "DRIZZLE_FAILED", "boom"), campaign="c1")
        assert ledger.mark_running(key, campaign="c2", trailer_offset=100) == 2
        row = ledger.get(key)
        # A new attempt clears the previous outcome, so a row never mixes two attempts.
        assert (row.status, row.attempts, row.exit_code, row.message) == (RUNNING, 2, None, None)
        ledger.finish(key, Outcome(DONE, 0, "OK", "ok"), campaign="c2")
        history = ledger.attempts_of(key)
        assert [(h["attempt"], h["status"], h["exit_code"], h["campaign"]) for h in history] == [
            (1, FAILED, 7, "c1"), (2, DONE, 0, "c2"),
        ]


def test_stale_running_rows_become_pending_or_adopt_a_proven_verdict(tmp_path):
    with _ledger(tmp_path) as ledger:
        for key in ("/data/d0_asn.fits", "/data/d1_asn.fits"):
            ledger.mark_running(key, campaign="killed", trailer_offset=0)

        def adopt(row):
            return Outcome(DONE, 0, "OK", "from trailer") if row.root == "d0" else None

        changed = dict(ledger.recover_stale(adopt=adopt))
        assert changed == {"/data/d0_asn.fits": DONE, "/data/d1_asn.fits": PENDING}
        assert ledger.attempts_of("/data/d1_asn.fits")[0]["status"] == "abandoned"
        assert ledger.attempts_of("/data/d0_asn.fits")[0]["status"] == DONE
        assert ledger.counts()[RUNNING] == 0


def test_requeue_puts_an_interrupted_attempt_back_to_pending(tmp_path):
    with _ledger(tmp_path) as ledger:
        ledger.mark_running("/data/d2_asn.fits", campaign="c", trailer_offset=0)
        ledger.requeue("/data/d2_asn.fits", "interrupted")
        assert ledger.get("/data/d2_asn.fits").status == PENDING
        assert ledger.attempts_of("/data/d2_asn.fits")[0]["status"] == "interrupted"


def test_finish_refuses_a_non_final_status(tmp_path):
    with _ledger(tmp_path) as ledger, pytest.raises(ValueError):
        ledger.finish("/data/d0_asn.fits", Outcome(RUNNING, None, None, "?"))


def test_lock_excludes_a_second_campaign_and_dies_with_its_holder(tmp_path):
    path = tmp_path / "c.ledger.sqlite"
    with Ledger(path) as first:
        first.acquire("first")
        with Ledger(path) as second, pytest.raises(LedgerBusy, match="first"):
            second.acquire("second")
    # A holder killed with SIGKILL cannot clean up; the kernel releases its flock anyway.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from autodriz.ledger import Ledger; l = Ledger(sys.argv[1]); "
                "l.acquire('doomed'); print('locked', flush=True); time.sleep(60)"
            ),
            str(path),
        ],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with Ledger(path) as third, pytest.raises(LedgerBusy):
            third.acquire("third")
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    with Ledger(path) as fourth:
        fourth.acquire("fourth")


def test_readonly_open_of_a_missing_or_foreign_file_is_a_ledger_error(tmp_path):
    with pytest.raises(LedgerError, match="no ledger"):
        Ledger(tmp_path / "missing.sqlite", readonly=True)
    junk = tmp_path / "junk.sqlite"
    junk.write_text("not a database")
    with pytest.raises(LedgerError):
        Ledger(junk)


def test_a_commit_that_fails_is_a_ledger_error_and_leaves_the_row_as_it_was(tmp_path, monkeypatch):
    # The failpoint raises what a full disk raises at COMMIT (sqlite3.OperationalError).
    log = tmp_path / "failpoints.log"
    with _ledger(tmp_path) as ledger:
        monkeypatch.setenv("AUTODRIZ_FAILPOINT_LOG", str(log))
        monkeypatch.setenv("AUTODRIZ_FAILPOINT", "ledger.commit:1")
        with pytest.raises(LedgerError, match="could not write to the ledger"):
            ledger.mark_running("/data/d0_asn.fits", campaign="c1", trailer_offset=0)
        assert log.read_text().splitlines() == ["ledger.commit"]
        # Rolled back, and the connection takes the next transaction.
        assert ledger.get("/data/d0_asn.fits").status == PENDING
        ledger.mark_running("/data/d0_asn.fits", campaign="c1", trailer_offset=0)
        assert ledger.get("/data/d0_asn.fits").status == RUNNING
