"""The dataset lock after a kill: an owner-less lock file left by a killed run does not block forever."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from autodriz.locks import UNREADABLE_STALE_SECONDS, DatasetLocked, dataset_lock, lock_path


def test_empty_lock_left_by_a_kill_is_taken_over_once_old(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # What kill -9 between creating the lock and writing its owner leaves: an empty file.
    lock = lock_path(tmp_path, "jsim01010")
    lock.write_bytes(b"")
    old = time.time() - UNREADABLE_STALE_SECONDS - 5
    os.utime(lock, (old, old))
    with dataset_lock(tmp_path, "jsim01010") as held:
        assert held == lock and str(os.getpid()) in lock.read_text()
    assert not lock.exists()
    assert "no owner written in it" in caplog.text


def test_empty_lock_being_written_right_now_is_respected(tmp_path: Path) -> None:
    # A fresh empty lock may belong to a run that is writing its owner at this very moment.
    lock = lock_path(tmp_path, "jsim01010")
    lock.write_bytes(b"")
    with pytest.raises(DatasetLocked), dataset_lock(tmp_path, "jsim01010"):
        pass
    assert lock.exists()
