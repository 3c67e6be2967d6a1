"""End to end on real WFC3/IR exposures (GOODS-S, proposal 11359) with the real drizzlepac.

Their IDCTAB (iref$w3m18525i_idc.fits) is not available offline: the run must stop with a clear
error and untouched inputs, unless the header WCS is allowed as a fallback.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from astropy.io import fits

from autodriz.cli import main
from autodriz.exitcodes import ExitCode

from realdata import prepare_goodss


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*_flt.fits"))}


@pytest.fixture
def empty_iref(tmp_path) -> Path:
    folder = tmp_path / "iref"
    folder.mkdir()
    return folder


def test_missing_idctab_stops_with_clear_error_and_untouched_inputs(shared_data, tmp_path, empty_iref, capsys):
    asn = prepare_goodss(shared_data, tmp_path / "f140w", "IB6O23020")
    before = _digests(asn.parent)

    code = main([str(asn), "--iref", str(empty_iref)])

    assert code == ExitCode.REFERENCE_FILES_MISSING == 4
    err = capsys.readouterr().err
    assert "IDCTAB=iref$w3m18525i_idc.fits" in err
    assert "--allow-header-wcs" in err
    assert _digests(asn.parent) == before
    assert not list(asn.parent.glob("*_dr?.fits"))
    assert not (asn.parent / "ib6o23020_default").exists()
    trailer = (asn.parent / "ib6o23020.tra").read_text()
    assert "AUTODRIZ-VERDICT REFERENCE_FILES_MISSING exit=4" in trailer


def test_f140w_with_header_wcs_makes_a_drz(shared_data, tmp_path, empty_iref, capsys):
    asn = prepare_goodss(shared_data, tmp_path / "f140w", "IB6O23020")
    before = _digests(asn.parent)

    code = main([str(asn), "--iref", str(empty_iref), "--allow-header-wcs"])
    console = capsys.readouterr()

    # Products are written, but no reference catalog is reachable offline, so no alignment
    # candidate exists: the exit code says the astrometry is the default's only.
    assert code == ExitCode.DEFAULT_ONLY
    drz = asn.parent / "ib6o23020_drz.fits"
    with fits.open(drz) as hdul:
        sci = hdul["SCI"].data
        assert sci.shape[0] > 1000 and sci.shape[1] > 1000
        assert hdul[0].header["NDRIZIM"] == 4
        wht = hdul["WHT"].data
        # Four dithers of one 1014 px detector cover most of the output frame …
        assert (wht > 0).mean() > 0.5
        # … and the combined image carries real sources there.
        covered = sci[wht > 0]
        assert (covered > 0).sum() > 10_000 and float(covered.max()) > 1.0
    # The header WCS was used as it is, so nothing is written back.
    assert _digests(asn.parent) == before
    assert not (asn.parent / "ib6o23020_default").exists(), "working folder must be cleaned up"
    trailer = (asn.parent / "ib6o23020.tra").read_text()
    for stage in ("resolve", "default", "select", "drizzle", "update-inputs", "products"):
        assert f"AUTODRIZ-STAGE end {stage} ok" in trailer
    assert "AUTODRIZ-VERDICT DEFAULT_ONLY exit=9" in trailer
    assert "version drizzlepac" in trailer and "setting allow_header_wcs" in trailer
    assert "association table was built outside the archive" in trailer
    assert "distortion reference files not available" in trailer

    # The console offline is a summary (issue 20): one line per stage outcome, one line for the
    # unreachable catalog service with the remedy, one short line per candidate; the details
    # behind each decision stay at INFO in the trailer.
    lines = (console.err + console.out).splitlines()
    assert len(lines) <= 25, "\n".join(lines)
    remedy = [l for l in lines if "--catalog FILE" in l]
    assert len(remedy) == 1 and "--offline" in remedy[0], "\n".join(lines)
    assert remedy[0].startswith("WARNING catalog service VizieR") and "unreachable" in remedy[0]
    # Besides the warning, the five catalogs it cost are one candidate line, not five.
    unreachable = [l for l in lines if "unreachable" in l]
    assert len(unreachable) == 2, "\n".join(lines)
    assert "aposteriori-REL-GAIAeDR3, -GAIADR3, -GAIADR2, -GSC242, -2MASS" in unreachable[1]
    assert all(len(l) <= 320 for l in lines), max(lines, key=len)
    for outcome in ("dataset ib6o23020:", "distortion reference files not available", "no usable a priori solution",
                    "a posteriori stage:", "INFO    chosen WCS: ", "AstroDrizzle made ib6o23020_drz.fits", "product: "):
        assert sum(outcome in l for l in lines) == 1, outcome
    assert "AUTODRIZ-STAGE" not in console.err and "asking VizieR" not in console.err
    assert re.search(r" INFO +autodriz\.catalogs(\.\w+)?: asking VizieR \S+ for GAIAeDR3", trailer)
    assert re.search(r" INFO +autodriz\.choosing: candidate aposteriori-REL-GAIAeDR3 pruned before drizzling", trailer)


def test_g141_grism_gets_no_aposteriori_fit(shared_data, tmp_path, empty_iref):
    asn = prepare_goodss(shared_data, tmp_path / "g141", "IB6O23010")

    code = main([str(asn), "--iref", str(empty_iref), "--allow-header-wcs"])

    # A priori solutions would apply (as the archive applies them to grism data), but these
    # FLTs carry none: the header WCS stays, and the exit code says so.
    assert code == ExitCode.DEFAULT_ONLY
    assert (asn.parent / "ib6o23010_drz.fits").is_file()
    trailer = (asn.parent / "ib6o23010.tra").read_text()
    assert "a posteriori stage skipped: G141 exposures are grism/prism (spectroscopic) images" in trailer
    assert "a priori stage on" in trailer
    assert "a posteriori stage for" not in trailer  # the stage itself never ran
