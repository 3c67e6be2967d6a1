"""Bad exposures are refused before any work; products are checked against what was drizzled.

Every case damages ONE exposure of a copy of the real WFC3/IR F140W association IB6O23020 and
runs ``autodriz`` as a user would (``--allow-header-wcs --offline``, no IDCTAB). A refused
input must end with the documented exit code and one line naming the file, the extension, the
keyword and its value, within seconds, before the first stage after ``resolve`` starts (no
working folder, no updatewcs, no drizzle), with the inputs byte-identical and no product.

The README's table "What autodriz does with bad input" names each of these tests
(``test_bad_inputs.py`` checks that the functions exist).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from autodriz import inputs
from autodriz.cli import main
from autodriz.exitcodes import ExitCode

from realdata import prepare_goodss

ASN_ID = "IB6O23020"
VICTIM = "ib6o23rwq"
VICTIM_FILE = f"{VICTIM}_flt.fits"
#: "Within seconds": resolving and refusing four 1014x1014 exposures reads headers only
#: (about 0.5 s on a quiet machine).
REFUSAL_SECONDS = 5.0


@pytest.fixture(scope="module")
def f140w_template(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four F140W exposures (float SCI/ERR, int16 DQ) and their ASN, prepared once."""
    return prepare_goodss(shared_data, tmp_path_factory.mktemp("f140w") / "f140w", ASN_ID).parent


@pytest.fixture
def f140w(f140w_template: Path, tmp_path: Path) -> Path:
    """A private copy of the association folder; returns the ASN table."""
    folder = tmp_path / "data" / "f140w"
    shutil.copytree(f140w_template, folder)
    (tmp_path / "iref").mkdir()
    return folder / f"{ASN_ID.lower()}_asn.fits"


def _argv(asn: Path) -> list[str]:
    return [str(asn), "--iref", str(asn.parent.parent.parent / "iref"), "--allow-header-wcs", "--offline"]


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith((".tra", "_report.json", "_report.html"))
    }


def _edit(asn: Path, fn: Callable[[fits.HDUList], None]) -> None:
    """Damage the victim exposure in place (a new file, so no stale bytes remain)."""
    path = asn.parent / VICTIM_FILE
    with fits.open(path) as hdul:
        hdul.readall()
        fn(hdul)
        hdul.writeto(path.with_suffix(".new"), output_verify="silentfix")
    path.with_suffix(".new").replace(path)


def _refused(asn: Path, code: ExitCode, capsys: pytest.CaptureFixture[str], *says: str) -> str:
    """Run, and check the refusal contract; return the verdict line."""
    before = _digests(asn.parent.parent)
    got = main(_argv(asn))
    err = capsys.readouterr().err
    assert got == code, f"exit {got}, expected {int(code)}\n{err}"
    verdicts = [ln for ln in err.splitlines() if ln.startswith(f"autodriz: {code.name} (exit {int(code)})")]
    assert len(verdicts) == 1, err
    verdict = verdicts[0]
    for text in (VICTIM_FILE, *says):
        assert text in verdict, f"the verdict line does not say {text!r}: {verdict}"
    assert "Traceback" not in err
    assert _digests(asn.parent.parent) == before, "inputs changed"
    assert not list(asn.parent.parent.rglob("*_dr[zc].fits*")), "a product was written"
    # Nothing ran after resolving: no working folder, no updatewcs, no drizzle.
    assert not [p for p in asn.parent.iterdir() if p.is_dir()], "a working folder was made"
    trailer = (asn.parent / "ib6o23020.tra").read_text()
    assert "AUTODRIZ-STAGE end resolve failed" in trailer
    assert "AUTODRIZ-STAGE start default" not in trailer
    assert f"AUTODRIZ-VERDICT {code.name} exit={int(code)}" in trailer
    # The run's own clock (START to VERDICT), not the interpreter's imports on a busy machine.
    seconds = float(re.search(rf"AUTODRIZ-VERDICT {code.name} .* seconds=([\d.]+)", trailer).group(1))
    assert seconds < REFUSAL_SECONDS, f"the refusal took {seconds} s"
    return verdict


# --------------------------------------------------------------------------------------------
# refused before any work (one test per README row)


def test_exposure_without_sci_is_refused_before_any_work(f140w, capsys):
    _edit(f140w, lambda hdul: hdul.pop(hdul.index_of("SCI")))
    _refused(f140w, ExitCode.INPUT_ERROR, capsys, "[SCI]: extension missing (EXTNAME = 'SCI')",
             "extensions found: ERR,1, DQ,1")


def test_sci_header_without_cd2_2_is_refused_before_any_work(f140w, capsys):
    _edit(f140w, lambda hdul: hdul["SCI"].header.remove("CD2_2"))
    _refused(f140w, ExitCode.WCS_FAILED, capsys, "[SCI,1]", "CD2_2 missing")


def test_dq_shape_differing_from_sci_is_refused_before_any_work(f140w, capsys):
    def shrink(hdul: fits.HDUList) -> None:
        hdul["DQ"].data = np.zeros((500, 700), np.int16)

    _edit(f140w, shrink)
    _refused(f140w, ExitCode.INPUT_ERROR, capsys, "[DQ,1]", "NAXIS1 x NAXIS2 = '700x500'", "1014x1014")


def test_exposure_without_dq_is_refused_before_any_work(f140w, capsys):
    _edit(f140w, lambda hdul: hdul.pop(hdul.index_of("DQ")))
    _refused(f140w, ExitCode.INPUT_ERROR, capsys, "[DQ,1]: extension missing (EXTNAME = 'DQ')")


def test_exposure_without_err_is_refused_before_any_work(f140w, capsys):
    _edit(f140w, lambda hdul: hdul.pop(hdul.index_of("ERR")))
    _refused(f140w, ExitCode.INPUT_ERROR, capsys, "[ERR,1]: extension missing (EXTNAME = 'ERR')")


def test_exposure_far_from_the_visit_is_refused_before_any_work(f140w, capsys):
    def move(hdul: fits.HDUList) -> None:
        hdul["SCI"].header["CRVAL1"] = -1.0

    _edit(f140w, move)
    verdict = _refused(f140w, ExitCode.WCS_FAILED, capsys, "[SCI,1]", "CRVAL1, CRVAL2", "-1.0")
    # RA 53.08 against -1 (359) at Dec -27.7: 54 deg in RA, 47.5 deg on the sky.
    distance = float(re.search(r"centred ([\d.]+) deg", verdict).group(1))
    assert distance == pytest.approx(47.5, abs=0.1), verdict


def test_sip_coefficients_without_sip_ctype_are_refused_before_any_work(f140w, capsys):
    def add_sip(hdul: fits.HDUList) -> None:
        header = hdul["SCI"].header
        header["A_ORDER"], header["B_ORDER"] = 2, 2
        header["A_2_0"], header["B_0_2"] = 2.5e-6, -1.8e-6

    _edit(f140w, add_sip)
    _refused(f140w, ExitCode.WCS_FAILED, capsys, "[SCI,1]", "CTYPE1 = 'RA---TAN'", "-SIP", "A_ORDER = 2")


def test_absurd_exptime_is_refused_before_any_work(f140w, capsys):
    def absurd(hdul: fits.HDUList) -> None:
        hdul[0].header["EXPTIME"] = 1e30

    _edit(f140w, absurd)
    _refused(f140w, ExitCode.INPUT_ERROR, capsys, "[PRIMARY]", "EXPTIME = 1e+30")


# --------------------------------------------------------------------------------------------
# dropped with a warning (issue 17), and the product check sees it


def test_exptime_zero_member_is_dropped_and_the_product_lists_the_rest(f140w, capsys):
    def zero(hdul: fits.HDUList) -> None:
        hdul[0].header["EXPTIME"] = 0.0

    _edit(f140w, zero)
    victim_before = hashlib.sha256((f140w.parent / VICTIM_FILE).read_bytes()).hexdigest()
    code = main(_argv(f140w))
    captured = capsys.readouterr()
    # Products were written (default WCS only: no catalog offline).
    assert code == ExitCode.DEFAULT_ONLY, captured.err
    warning = [ln for ln in captured.err.splitlines() if ln.startswith("WARNING") and "dropped" in ln]
    assert len(warning) == 1 and VICTIM in warning[0] and "EXPTIME = 0.0" in warning[0], captured.err
    trailer = (f140w.parent / "ib6o23020.tra").read_text()
    assert f"member {VICTIM} dropped" in trailer
    with fits.open(f140w.parent / "ib6o23020_drz.fits") as hdul:
        header = hdul[0].header
        listed = [header[f"D{i:03d}DATA"] for i in range(1, header["NDRIZIM"] + 1)]
    assert header["NDRIZIM"] == 3
    assert sorted(listed) == [f"{r}_flt.fits[sci,1]" for r in ("ib6o23rtq", "ib6o23rzq", "ib6o23s2q")]
    report = json.loads((f140w.parent / "ib6o23020_report.json").read_text())
    assert report["dataset"]["dropped"] == {VICTIM: "EXPTIME = 0.0 (nothing to scale to a rate)"}
    assert VICTIM not in report["dataset"]["exposures"]
    # The report's list comes from the product header.
    assert report["drizzle"][0]["drizzled"] == listed
    # The dropped member is not touched.
    assert hashlib.sha256((f140w.parent / VICTIM_FILE).read_bytes()).hexdigest() == victim_before


def test_product_missing_an_exposure_is_exit_7(f140w, capsys, monkeypatch):
    """AstroDrizzle silently skips an exposure without SCI (NDRIZIM 3 of 4): the check says so.

    The input check would refuse that exposure; it is switched off here so that the damaged
    file reaches AstroDrizzle, as it did before the check existed (issue 23).
    """
    monkeypatch.setattr(inputs, "raise_for", lambda violations: None)
    _edit(f140w, lambda hdul: hdul.pop(hdul.index_of("SCI")))
    before = _digests(f140w.parent.parent)

    code = main([*_argv(f140w), "--keep-workdirs"])

    err = capsys.readouterr().err
    assert code == ExitCode.DRIZZLE_FAILED, err
    verdict = [ln for ln in err.splitlines() if ln.startswith("autodriz: DRIZZLE_FAILED (exit 7)")]
    assert len(verdict) == 1, err
    assert "ib6o23020_drz.fits does not hold what was drizzled" in verdict[0]
    assert f"exposure(s) {VICTIM_FILE} meant to be drizzled are not in it" in verdict[0]
    # The kept working folders are new; every file that was there is unchanged.
    after = _digests(f140w.parent.parent)
    assert {k: after.get(k) for k in before} == before, "inputs changed"
    # Nothing finished-looking under a product's name, even in the kept working folder.
    assert not list(f140w.parent.parent.rglob("*_dr[zc].fits")), "a product is left under its name"
    rejected = list(f140w.parent.rglob("ib6o23020_drz.fits.rejected"))
    assert len(rejected) == 1
    with fits.open(rejected[0]) as hdul:
        assert hdul[0].header["NDRIZIM"] == 3
    assert not (f140w.parent / "ib6o23020_report.json").exists()
