"""WFPC2 is refused, not half-supported: its own exit code and one line, inputs untouched."""

from __future__ import annotations

import hashlib

import pytest
from astropy.io import fits

from autodriz.cli import main
from autodriz.errors import WFPC2UnsupportedError
from autodriz.exitcodes import ExitCode
from autodriz.inputs import resolve_input
from conftest import copy_decompressed

MESSAGE = "WFPC2 data are not supported by autodriz"


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_real_wfpc2_exposure_is_refused_with_exit_11_and_left_unchanged(shared_data, tmp_path, capsys):
    folder = tmp_path / "wfpc2"
    c0f = copy_decompressed(shared_data / "real" / "wfpc2" / "u40x010hm_c0f.fits.gz", folder)
    copy_decompressed(shared_data / "real" / "wfpc2" / "u40x010hm_c1f.fits.gz", folder)
    before = _digests(folder)
    assert fits.getval(c0f, "INSTRUME").strip() == "WFPC2"

    code = main([str(c0f)])

    assert code == ExitCode.WFPC2_UNSUPPORTED == 11
    err = capsys.readouterr().err
    verdict = [line for line in err.splitlines() if line.startswith("autodriz: WFPC2_UNSUPPORTED (exit 11)")]
    assert len(verdict) == 1 and f"u40x010hm_c0f.fits: {MESSAGE}" in verdict[0]
    after = _digests(folder)
    # Only the trailer is new; the exposure and its DQ file are byte-identical, no product.
    assert set(after) - set(before) == {"u40x010hm.tra"}
    assert {k: after[k] for k in before} == before
    assert "AUTODRIZ-VERDICT WFPC2_UNSUPPORTED exit=11" in (folder / "u40x010hm.tra").read_text()


def test_wfpc2_by_instrument_keyword_is_refused_too(shared_data, tmp_path):
    """A WFPC2 exposure renamed (or converted) to ``_flt.fits`` is refused by its INSTRUME."""
    c0f = copy_decompressed(shared_data / "real" / "wfpc2" / "u40x010hm_c0f.fits.gz", tmp_path)
    flt = c0f.rename(tmp_path / "u40x010hm_flt.fits")
    with pytest.raises(WFPC2UnsupportedError, match=f"u40x010hm_flt.fits: {MESSAGE}"):
        resolve_input(flt)
