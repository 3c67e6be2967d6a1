"""Child processes: a failure says, in one line, what went wrong, on which file, and where the log is."""

from __future__ import annotations

from pathlib import Path

import pytest

from autodriz.childproc import ChildError, run_child


def test_failure_names_the_file_the_child_was_working_on(tmp_path: Path) -> None:
    (tmp_path / "a_flt.fits").write_bytes(b"not FITS at all")
    with pytest.raises(ChildError) as failure:
        run_child({"task": "updatewcs", "files": ["a_flt.fits", "b_flt.fits"]}, cwd=tmp_path, timeout=120)
    exc = failure.value
    assert exc.label == "updatewcs" and exc.log_path == tmp_path / "updatewcs.log"
    assert exc.log_path.is_file()
    # The first file broke it; the second was never reached.
    assert exc.current_file == "a_flt.fits"
    assert "\n" not in exc.error_line and exc.error_line in exc.log_path.read_text()
    # The full message keeps the tail of the log for the trailer.
    assert "last lines:" in str(exc)


def test_unknown_task_gives_its_exception_line(tmp_path: Path) -> None:
    with pytest.raises(ChildError) as failure:
        run_child({"task": "no_such_task"}, cwd=tmp_path, timeout=60)
    assert failure.value.error_line == "KeyError: 'no_such_task'"
    assert failure.value.current_file is None


def test_timeout_is_said_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ChildError) as failure:
        run_child({"task": "updatewcs", "files": []}, cwd=tmp_path, timeout=0.01)
    assert failure.value.error_line == "timed out after 0.01 s"
