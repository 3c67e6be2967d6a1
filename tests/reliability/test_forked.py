"""The forked runner of the harnesses reports a job's value, a crash and a hang, and goes on."""

from __future__ import annotations

import os
import time

import forked


def _job(what: str) -> str:
    if what == "hang":
        time.sleep(60)
    if what == "crash":
        os._exit(3)  # as an interpreter that dies mid-job
    return what * 2


def test_value_crash_and_hang_are_told_apart() -> None:
    assert forked.call(_job, ("ab",), 10) == forked.Result("ok", "abab")
    assert forked.call(_job, ("crash",), 10) == forked.Result("died", exitcode=3)
    t0 = time.monotonic()
    hung = forked.call(_job, ("hang",), 0.5)
    assert hung.status == "hung" and time.monotonic() - t0 < 10


def test_a_worker_runs_jobs_in_turn_until_one_hangs() -> None:
    worker = forked.Worker(_job)
    try:
        assert [worker.run((w,), 10).value for w in ("a", "b")] == ["aa", "bb"]
        assert worker.run(("hang",), 0.5).status == "hung"
        assert not worker.alive
    finally:
        worker.close()
