"""Reference files named in headers: what the header value resolves to, and whether it exists."""

from __future__ import annotations

from pathlib import Path

from autodriz.reffiles import distortion_files, names_a_file, resolve_reference


def test_resolve_prefixed_and_plain_values(tmp_path: Path) -> None:
    assert resolve_reference("jref$x_idc.fits", {"jref": tmp_path}) == tmp_path / "x_idc.fits"
    assert resolve_reference("iref$x_idc.fits", {"jref": tmp_path}) is None
    assert resolve_reference("N/A", {"jref": tmp_path}) is None
    assert resolve_reference("/abs/x_idc.fits", {}) == Path("/abs/x_idc.fits")


def test_a_value_no_file_system_takes_for_a_path_names_no_file(tmp_path: Path) -> None:
    # Found by scripts/fuzz.py: IDCTAB of 5000 characters made the reference check raise
    # "[Errno 36] File name too long" (exit 1) instead of reporting the file missing (exit 4).
    existing = tmp_path / "x_idc.fits"
    existing.write_bytes(b"")
    assert names_a_file(existing)
    assert not names_a_file(None)
    assert not names_a_file(tmp_path)
    assert not names_a_file(tmp_path / ("X" * 5000))
    assert not names_a_file(tmp_path / "a\x00b")
    refs = distortion_files([{"IDCTAB": "X" * 5000, "NPOLFILE": "jref$x_idc.fits"}], {"jref": tmp_path})
    assert [(r.keyword, r.found) for r in refs] == [("IDCTAB", False), ("NPOLFILE", True)]
