"""Bad input, run through ``autodriz.cli.main`` in-process: each case must end deliberately.

For every case the exit code is the one the README's table "What autodriz does with bad input"
documents, stderr carries one clear line naming the file and the problem (no traceback unless
``--debug``), inputs are byte-identical whenever the run did not succeed, and a
``*_drz.fits``/``*_drc.fits`` exists under its final name only after exit 0.

``python tests/reliability/test_bad_inputs.py`` prints the README table from :data:`CASES`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from autodriz import pipeline
from autodriz.asn import write_asn_table
from autodriz.cli import main
from autodriz.exitcodes import PRODUCT_CODES, ExitCode
from autodriz.simulate import EXACT_WORLD, SimulationConfig, simulate_visit

README = Path(__file__).resolve().parents[2] / "README.md"
TABLE_HEADING = "What autodriz does with bad input"
ASN = "jsim01010_asn.fits"
FLT1, FLT2 = "jsim01a1q_flt.fits", "jsim01a2q_flt.fits"
# Cheapest run that still goes through updatewcs and AstroDrizzle.
FAST = ["--no-aposteriori", "--no-apriori", "--no-verify", "--offline"]


@dataclass(frozen=True)
class Visit:
    """A private copy of the small synthetic visit; ``out`` is a writable folder outside it."""

    directory: Path
    jref: Path
    catalog: Path
    out: Path

    @property
    def asn(self) -> Path:
        return self.directory / ASN

    def flt(self, n: int) -> Path:
        return self.directory / (FLT1 if n == 1 else FLT2)

    def single(self) -> list[str]:
        """One exposure as the input: the pixel cases need no second exposure, and it is faster."""
        return [str(self.flt(1)), "--jref", str(self.jref), *FAST]

    def args(self, *extra: str) -> list[str]:
        """The ASN plus the visit's jref and the fast flags."""
        return [str(self.asn), "--jref", str(self.jref), *FAST, *extra]


@dataclass(frozen=True)
class Case:
    """One bad input: how to make it, what must happen, and its README row."""

    id: str
    readme: str
    exit_code: ExitCode
    what_happens: str
    prepare: Callable[[Visit], list[str]]
    #: Substrings the verdict line (the one ``autodriz: …`` line on stderr) must contain: the file
    #: and the problem, case-insensitive. The test's own temporary path is blanked out first, so
    #: that a word in the test's name (``…_truncated_asn0/``) cannot satisfy it.
    says: tuple[str, ...] = ()
    #: Groups of substrings that must stand together on one console line (e.g. a ``WARNING`` line).
    lines: tuple[tuple[str, ...], ...] = ()
    #: What the README row says one sees in the products or the inputs, checked after the run.
    see: Callable[[Visit, str], None] | None = None
    #: Needs the template visit with embedded a priori headerlets.
    apriori: bool = False


# --------------------------------------------------------------------------------------------
# helpers that damage a visit copy


def _set_primary(path: Path, **keys: object) -> None:
    with fits.open(path, mode="update") as hdul:
        for key, value in keys.items():
            hdul[0].header[key] = value


def _write_members(v: Visit, names: list[str], present: list[bool] | None = None) -> None:
    v.asn.unlink()
    write_asn_table(v.asn, "JSIM01010", names, instrument="ACS", detector="WFC", present=present)


def _edit_sci(v: Visit, fn: Callable[[fits.HDUList], None], which: tuple[int, ...] = (1,)) -> None:
    for n in which:
        with fits.open(v.flt(n), mode="update") as hdul:
            fn(hdul)


def _fill(extname: str, value: float) -> Callable[[fits.HDUList], None]:
    def fn(hdul: fits.HDUList) -> None:
        for hdu in hdul:
            if hdu.name == extname:
                hdu.data = np.full_like(hdu.data, value)

    return fn


def _drop_wcs(hdul: fits.HDUList) -> None:
    for hdu in hdul:
        if hdu.name == "SCI":
            for key in ("CRVAL1", "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "CTYPE1", "CTYPE2"):
                hdu.header.remove(key, ignore_missing=True)


def _corrupt_hdrlets(v: Visit) -> None:
    # Overwrite the data of every embedded HDRLET with bytes that are not a FITS file.
    for n in (1, 2):
        path = v.flt(n)
        with fits.open(path) as hdul:
            spans = [hdu.fileinfo() for hdu in hdul if hdu.name == "HDRLET"]
        assert spans, f"{path.name}: the template has no HDRLET to corrupt"
        with open(path, "r+b") as fh:
            for info in spans:
                fh.seek(info["datLoc"])
                fh.write(b"\x00garbage" * (info["datSpan"] // 8))


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(size)


# --------------------------------------------------------------------------------------------
# what the README rows say one sees after a run that made products


def _product(v: Visit, name: str) -> Path:
    found = [p for p in v.directory.parent.rglob(name)]
    assert len(found) == 1, f"expected one {name}, found {found}"
    return found[0]


def _sci_wcsnames(path: Path) -> set[str]:
    with fits.open(path) as hdul:
        return {hdu.header.get("WCSNAME", "") for hdu in hdul if hdu.name == "SCI"}


def _verdict_wcs(verdict: str) -> str:
    found = re.search(r" with WCS (\S+)", verdict)
    assert found, f"the verdict names no WCS: {verdict}"
    return found.group(1)


def _see_flat_chip(v: Visit, verdict: str) -> None:
    # "drizzled; the chip is flat": the product covers the chip and is zero wherever it has weight.
    with fits.open(_product(v, "jsim01a1q_drz.fits")) as hdul:
        sci, wht = hdul["SCI"].data, hdul["WHT"].data
        covered = wht > 0
        assert covered.sum() > 1000, "the flat chip was not drizzled onto the product"
        assert np.all(sci[covered] == 0.0), f"product not flat: {np.nanmin(sci[covered])}..{np.nanmax(sci[covered])}"


def _see_zero_weight(v: Visit, verdict: str) -> None:
    # "drizzled with zero weight": the weight map is zero everywhere (the check's warning is in ``lines``).
    with fits.open(_product(v, "jsim01a1q_drz.fits")) as hdul:
        assert np.all(hdul["WHT"].data == 0.0), "every DQ pixel was flagged, yet the weight map is not zero"


def _see_rest_processed(v: Visit, verdict: str) -> None:
    # "the rest is processed": the present member got the chosen WCS and is the product's only input;
    # the member marked not present was neither drizzled nor touched.
    assert _sci_wcsnames(v.flt(1)) == {_verdict_wcs(verdict)}
    assert _sci_wcsnames(v.flt(2)) != {_verdict_wcs(verdict)}, "the member marked not present was updated"
    with fits.open(_product(v, "jsim01010_drz.fits")) as hdul:
        inputs = {str(value) for key, value in hdul[0].header.items() if re.fullmatch(r"D\d{3}DATA", key)}
    assert inputs and all(FLT1 in i for i in inputs), f"product inputs: {inputs}"


def _see_processed_normally(v: Visit, verdict: str) -> None:
    # "processed normally": product beside the (moved) inputs, every input carries the chosen WCS.
    moved = v.directory.parent / "my visit – Ωmega ü"
    assert (moved / "jsim01010_drz.fits").is_file()
    for name in (FLT1, FLT2):
        assert _sci_wcsnames(moved / name) == {_verdict_wcs(verdict)}, name


# --------------------------------------------------------------------------------------------
# the cases


def _nonexistent(v: Visit) -> list[str]:
    return [str(v.directory / "jnothere0_asn.fits")]


def _directory(v: Visit) -> list[str]:
    return [str(v.directory)]


def _directory_named_asn(v: Visit) -> list[str]:
    (v.directory / "jdir00010_asn.fits").mkdir()
    return [str(v.directory / "jdir00010_asn.fits")]


def _not_fits(v: Visit) -> list[str]:
    v.asn.write_text("SIMPLE = this is not a FITS file\n" * 10)
    return v.args()


def _truncated_asn(v: Visit) -> list[str]:
    _truncate(v.asn, 4000)
    return v.args()


def _truncated_flt(v: Visit) -> list[str]:
    _truncate(v.flt(2), v.flt(2).stat().st_size // 2)
    return v.args()


def _write_card(path: Path, extname: str, key: str, value: str) -> None:
    """Overwrite one card of ``extname,1`` in place, byte for byte (astropy would refuse to write it)."""
    with fits.open(path) as hdul:
        start, end = (lambda i: (i["hdrLoc"], i["datLoc"]))(hdul[extname, 1].fileinfo())
    with open(path, "r+b") as fh:
        fh.seek(start)
        raw = fh.read(end - start)
        offset = next(o for o in range(0, len(raw), 80) if raw[o:o + 8] == f"{key:<8}".encode())
        fh.seek(start + offset)
        fh.write(f"{key:<8}= {value:>20}".ljust(80).encode())


def _memory_bomb(v: Visit) -> list[str]:
    # 9000 x 8000 float32 pixels (275 MiB, just above the limit) in the header; the file grown
    # sparsely to match (the test digests it, so not tens of GB).
    path = v.flt(2)
    with fits.open(path) as hdul:
        data_at = hdul["SCI", 1].fileinfo()["datLoc"]
    _write_card(path, "SCI", "NAXIS1", "9000")
    _write_card(path, "SCI", "NAXIS2", "8000")
    with open(path, "r+b") as fh:
        fh.truncate(data_at + 9000 * 8000 * 4 + 2880)
    return v.args()


def _unparsable_card(v: Visit) -> list[str]:
    with fits.open(v.flt(2)) as hdul:
        start = hdul[0].fileinfo()["hdrLoc"]
    with open(v.flt(2), "r+b") as fh:
        raw = fh.read(2880 * 20)
        offset = next(o for o in range(start, len(raw), 80) if raw[o:o + 8] == b"EXPEND  ")
        fh.seek(offset)
        fh.write(f"{'EXPEND':<8}= {'NAN':>20}".ljust(80).encode())
    return v.args()


def _empty(v: Visit) -> list[str]:
    v.asn.write_bytes(b"")
    return v.args()


def _no_members(v: Visit) -> list[str]:
    _write_members(v, [])
    return v.args()


def _member_missing(v: Visit) -> list[str]:
    v.flt(2).unlink()
    return v.args()


def _none_present(v: Visit) -> list[str]:
    _write_members(v, ["jsim01a1q", "jsim01a2q"], present=[False, False])
    return v.args()


def _one_not_present(v: Visit) -> list[str]:
    _write_members(v, ["jsim01a1q", "jsim01a2q"], present=[True, False])
    return v.args()


def _memname_dotdot(v: Visit) -> list[str]:
    # A real exposure sits where ../<name> points: without the check it would be processed
    # (and rewritten) although it is outside the dataset folder.
    shutil.copyfile(v.flt(2), v.directory.parent / FLT2)
    _write_members(v, ["jsim01a1q", "../jsim01a2q"])
    return v.args()


def _memname_absolute(v: Visit) -> list[str]:
    outside = v.directory.parent / "elsewhere"
    outside.mkdir()
    shutil.copyfile(v.flt(2), outside / FLT2)
    _write_members(v, ["jsim01a1q", str(outside / "jsim01a2q")])
    return v.args()


def _mixed_instruments(v: Visit) -> list[str]:
    _set_primary(v.flt(2), INSTRUME="WFC3", DETECTOR="UVIS")
    return v.args()


def _raw_only(v: Visit) -> list[str]:
    raw = v.directory / "jsim01a9q_raw.fits"
    fits.PrimaryHDU(header=fits.Header({"INSTRUME": "ACS", "DETECTOR": "WFC"})).writeto(raw)
    return [str(raw), "--jref", str(v.jref), *FAST]


def _stis(v: Visit) -> list[str]:
    for n in (1, 2):
        _set_primary(v.flt(n), INSTRUME="STIS", DETECTOR="CCD")
    return v.args()


def _nicmos(v: Visit) -> list[str]:
    _set_primary(v.flt(1), INSTRUME="NICMOS", DETECTOR="")
    return [str(v.flt(1)), "--jref", str(v.jref), *FAST]


def _drizcorr_omit(v: Visit) -> list[str]:
    for n in (1, 2):
        _set_primary(v.flt(n), DRIZCORR="OMIT")
    return v.args()


def _missing_wcs(v: Visit) -> list[str]:
    _edit_sci(v, _drop_wcs)
    return v.args()


def _idctab_not_an_idctab(v: Visit) -> list[str]:
    # A FITS table, but not a distortion table: updatewcs fails on it (the headers are fine).
    idctab = v.jref / "0461802ej_idc.fits"
    idctab.unlink()
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("X", "E", array=np.ones(2))])]
                 ).writeto(idctab)
    return v.args()


def _all_nan(v: Visit) -> list[str]:
    _edit_sci(v, _fill("SCI", np.nan))
    return v.single()


def _all_zero(v: Visit) -> list[str]:
    _edit_sci(v, _fill("SCI", 0.0))
    return v.single()


def _exptime_zero(v: Visit) -> list[str]:
    _set_primary(v.flt(2), EXPTIME=0.0)
    return v.args()


def _dq_all_flagged(v: Visit) -> list[str]:
    _edit_sci(v, _fill("DQ", 4))
    return v.single()


def _corrupt_hdrlet(v: Visit) -> list[str]:
    _corrupt_hdrlets(v)
    return [str(v.asn), "--jref", str(v.jref), "--apriori", "--no-aposteriori", "--no-verify", "--offline"]


def _catalog_garbage(v: Visit) -> list[str]:
    bad = v.out / "garbage.ecsv"
    bad.write_bytes(b"\x89PNG not a catalog \x00\x01\x02 at all\n" * 20)
    return [str(v.asn), "--jref", str(v.jref), "--no-apriori", "--aposteriori", "--no-verify",
            "--offline", "--catalog", str(bad)]


def _catalog_no_overlap(v: Visit) -> list[str]:
    table = Table.read(v.catalog, format="ascii.ecsv")
    table["ra"] = (np.asarray(table["ra"]) + 90.0) % 360.0
    far = v.out / "far_refcat.ecsv"
    table.write(far, format="ascii.ecsv")
    return [str(v.asn), "--jref", str(v.jref), "--no-apriori", "--aposteriori", "--no-verify",
            "--offline", "--catalog", str(far)]


def _bad_env(v: Visit) -> list[str]:
    os.environ["AUTODRIZ_NUM_CORES"] = "lots"  # the fixture restores the environment
    return v.args()


def _output_dir_is_file(v: Visit) -> list[str]:
    target = v.out / "products"
    target.write_text("a file where the output folder should be\n")
    return v.args("-o", str(target))


def _trailer_blocked(v: Visit) -> list[str]:
    (v.directory / "jsim01010.tra").mkdir()
    return v.args()


def _spaces_non_ascii(v: Visit) -> list[str]:
    moved = v.directory.parent / "my visit – Ωmega ü"
    v.directory.rename(moved)
    return [str(moved / ASN), "--jref", str(moved / "jref"), *FAST]


def _symlinked_exposure(v: Visit) -> list[str]:
    store = v.out / "store"
    store.mkdir()
    target = store / FLT2
    shutil.move(v.flt(2), target)
    v.flt(2).symlink_to(target)
    return v.args()


CASES: tuple[Case, ...] = (
    Case("nonexistent", "input path does not exist", ExitCode.INPUT_ERROR,
         "error naming the path", _nonexistent, ("jnothere0_asn.fits", "not found")),
    Case("directory", "input is a folder", ExitCode.INPUT_ERROR,
         "error: not an ASN/RAW/FLT/FLC name", _directory, ("visit", "not an input")),
    Case("directory-named-asn", "a folder named like an input (`x_asn.fits/`)", ExitCode.INPUT_ERROR,
         "error: it is a folder, not a file", _directory_named_asn, ("jdir00010_asn.fits", "folder")),
    Case("not-fits", "ASN table is not FITS", ExitCode.INPUT_ERROR,
         "error: not a readable FITS file", _not_fits, (ASN, "not a readable FITS")),
    Case("truncated-asn", "ASN table truncated", ExitCode.INPUT_ERROR,
         "error naming the table", _truncated_asn, (ASN, "no association table")),
    Case("truncated-flt", "member exposure truncated", ExitCode.INPUT_ERROR,
         "error naming the exposure, before any work", _truncated_flt, (FLT2, "truncated")),
    Case("memory-bomb", "an extension whose NAXISn claim more than 256 MiB of data (a memory bomb)",
         ExitCode.INPUT_ERROR, "error naming the file, the extension and the size, before anything reads or "
         "allocates it", _memory_bomb, (FLT2, "[SCI,1]", "275 MiB", "256 MiB")),
    Case("unparsable-card", "an unparsable header card (`EXPEND = NAN`, a bare NaN)", ExitCode.INPUT_ERROR,
         "error naming file, extension and keyword, before any work", _unparsable_card,
         (FLT2, "EXPEND", "unparsable")),
    Case("empty-file", "empty file", ExitCode.INPUT_ERROR,
         "error: not a readable FITS file", _empty, (ASN, "empty")),
    Case("asn-no-members", "ASN with no `EXP-*` members", ExitCode.INPUT_ERROR,
         "error: no usable exposures", _no_members, (ASN, "no usable exposures")),
    Case("member-missing", "ASN member marked present but its FLT/FLC missing", ExitCode.INPUT_ERROR,
         "error naming the member and the file expected", _member_missing, (ASN, "jsim01a2q")),
    Case("none-present", "every member `MEMPRSNT=F`", ExitCode.INPUT_ERROR,
         "warning per member, then error: no usable exposures", _none_present,
         (ASN, "no usable exposures", "not present: jsim01a1q, jsim01a2q"),
         lines=(("WARNING", ASN, "jsim01a1q, jsim01a2q", "not present"),)),
    Case("one-not-present", "some members `MEMPRSNT=F`", ExitCode.OK,
         "warning naming them; the rest is processed", _one_not_present, ("jsim01010_drz.fits",),
         lines=(("WARNING", "jsim01a2q", "not present"),), see=_see_rest_processed),
    Case("memname-dotdot", "ASN `MEMNAME` with `../`", ExitCode.INPUT_ERROR,
         "error: MEMNAME must be a plain rootname (nothing outside the folder is read)",
         _memname_dotdot, (ASN, "../jsim01a2q", "plain rootname")),
    Case("memname-absolute", "ASN `MEMNAME` an absolute path", ExitCode.INPUT_ERROR,
         "error: MEMNAME must be a plain rootname", _memname_absolute, (ASN, "plain rootname")),
    Case("mixed-instruments", "members of different instruments/detectors", ExitCode.INPUT_ERROR,
         "error listing each member's instrument/detector", _mixed_instruments, (ASN, "WFC3/UVIS")),
    Case("raw-only", "RAW without calibrated FLT/FLC", ExitCode.INPUT_ERROR,
         "error: run calacs/calwf3 first", _raw_only, ("jsim01a9q_raw.fits", "calacs")),
    Case("stis", "unsupported instrument (STIS)", ExitCode.INPUT_ERROR,
         "error naming the instrument and the supported ones", _stis, (FLT1, "STIS", "not supported")),
    Case("nicmos", "unsupported instrument (NICMOS)", ExitCode.INPUT_ERROR,
         "error naming the instrument and the supported ones", _nicmos, (FLT1, "NICMOS", "not supported")),
    Case("drizcorr-omit", "`DRIZCORR = OMIT`", ExitCode.DRIZCORR_OMIT,
         "nothing drizzled, inputs untouched, no products", _drizcorr_omit, ("DRIZCORR=OMIT",)),
    Case("missing-wcs", "SCI extensions without CRVAL/CD/CTYPE", ExitCode.WCS_FAILED,
         "error naming the exposure, extension and keyword, before any work; inputs untouched", _missing_wcs,
         (f"{FLT1}[SCI,1] CRVAL1 missing", "before any work")),
    Case("idctab-not-an-idctab", "IDCTAB named in the headers is not a distortion table", ExitCode.WCS_FAILED,
         "updatewcs fails; error naming the exposure and its log; inputs untouched", _idctab_not_an_idctab,
         ("updatewcs failed on jsim01a1q_flt.fits", "KeyError", "lines tagged [updatewcs]")),
    Case("all-nan-chip", "a chip whose SCI is all NaN", ExitCode.DRIZZLE_FAILED,
         "AstroDrizzle fails on it; error naming the exposures and its log; inputs untouched", _all_nan,
         (f"AstroDrizzle failed for jsim01a1q_drz from {FLT1}", "lines tagged [astrodrizzle_drz]")),
    Case("all-zero-chip", "a chip whose SCI is all zero", ExitCode.OK,
         "drizzled; the chip is flat", _all_zero, ("jsim01a1q_drz.fits",), see=_see_flat_chip),
    Case("exptime-zero", "`EXPTIME = 0`", ExitCode.OK,
         "warning naming the member: it is dropped (not drizzled, WCS untouched) as runastrodriz drops it; "
         "the others are drizzled (a dataset with no other member: exit 3)", _exptime_zero,
         ("jsim01010_drz.fits",), lines=(("WARNING", "member jsim01a2q dropped", FLT2, "EXPTIME = 0.0"),)),
    Case("dq-all-flagged", "every DQ pixel flagged", ExitCode.OK,
         "drizzled with zero weight; the weight-map check flags it", _dq_all_flagged, ("jsim01a1q_drz.fits",),
         lines=(("WARNING", "weight map of jsim01a1q_drz.fits", "FLAGGED"),), see=_see_zero_weight),
    Case("corrupt-hdrlet", "corrupt embedded `HDRLET` extension", ExitCode.DEFAULT_ONLY,
         "warning; that a priori solution is skipped, products with the default WCS", _corrupt_hdrlet,
         ("default only",), apriori=True,
         lines=tuple(("WARNING", f"{name}[HDRLET,1] cannot be read", "ignored") for name in (FLT1, FLT2))),
    Case("catalog-garbage", "`--catalog` file is not a catalog", ExitCode.USAGE,
         "error naming the file, before any work", _catalog_garbage, ("garbage.ecsv", "not a readable")),
    Case("catalog-no-overlap", "`--catalog` with no star in the footprint", ExitCode.DEFAULT_ONLY,
         "the verdict says default only and the candidate list why (no star near the exposures); "
         "products with the default WCS", _catalog_no_overlap,
         ("jsim01010_drz.fits", "default only", "no alignment candidate was eligible"),
         lines=(("candidate pruned", "far_refcat.ecsv", "no star within"),)),
    Case("bad-env", "bad environment variable value", ExitCode.USAGE,
         "error naming the variable and the accepted values", _bad_env, ("AUTODRIZ_NUM_CORES", "lots")),
    Case("output-dir-is-file", "`--output-dir` is a file", ExitCode.USAGE,
         "error naming it, before anything is written", _output_dir_is_file, ("products", "not a folder")),
    Case("trailer-blocked", "the trailer path is taken by a folder", ExitCode.INPUT_ERROR,
         "error naming the trailer path", _trailer_blocked, ("jsim01010.tra",)),
    Case("spaces-non-ascii", "path with spaces and non-ASCII characters", ExitCode.OK,
         "processed normally", _spaces_non_ascii, ("jsim01010_drz.fits",), see=_see_processed_normally),
    Case("symlinked-exposure", "an exposure that is a symlink", ExitCode.INPUT_ERROR,
         "error: the update would replace the link, not the file; copy it in", _symlinked_exposure,
         (FLT2, "symlink")),
)

READ_ONLY = Case("read-only-folder", "dataset folder on a read-only file system", ExitCode.INPUT_ERROR,
                 "error naming the folder, before anything is written", lambda v: v.args(),
                 ("read-only",))



@dataclass(frozen=True)
class Documented:
    """A README row whose case is a test in another file of tests/reliability/."""

    readme: str
    exit_code: ExitCode
    what_happens: str
    #: ``file.py::test_function`` in tests/reliability/.
    test: str


ELSEWHERE: tuple[Documented, ...] = (
    Documented("run killed (`kill -9`) at any moment, then run again", ExitCode.OK,
               "inputs untouched or fully updated (FLT and FLC alike), no unfinished file under a final "
               "product name; the re-run finishes with the same WCS as an uninterrupted run",
               "test_kill.py::test_kill_minus_9_at_ten_moments_then_rerun"),
    Documented("writing the WCS into an input fails midway (disk full, I/O error)", ExitCode.UPDATE_FAILED,
               "the inputs already updated are put back from their backups; error naming the file; no products",
               "test_update_rollback.py::test_cli_exit_8_when_the_third_of_four_renames_fails"),
    Documented("disk full while a product is drizzled (file-size limit, `RLIMIT_FSIZE`)", ExitCode.DRIZZLE_FAILED,
               "AstroDrizzle's write fails; error naming the exposures and the short write; inputs untouched, "
               "no product, no temporary file",
               "test_disk_full.py::test_disk_full_while_drizzling_is_exit_7_with_inputs_untouched"),
    Documented("catalog service refuses, hangs, or answers garbage or no star (no `--catalog`, nothing cached)",
               ExitCode.DEFAULT_ONLY,
               "costs at most `--service-timeout` (an outage is not asked again); no a posteriori candidate, "
               "products with the default WCS (a `--catalog` folder or the cache would still serve)",
               "test_services.py::test_cli_with_a_hanging_catalog_service_ends_with_the_default_wcs"),
    Documented("astrometry database refuses, hangs, or answers garbage or nothing (`--astrometry-db`)",
               ExitCode.OK,
               "costs at most `--service-timeout`, one warning; the embedded and stored a priori solutions "
               "still count", "test_services.py::test_cli_with_a_hanging_astrometry_db_uses_the_embedded_solution"),
    Documented("lock file with no owner in it, left by a run killed as it started", ExitCode.OK,
               "taken over once older than 10 s (a live run writes its owner at once)",
               "test_locks.py::test_empty_lock_left_by_a_kill_is_taken_over_once_old"),
    # One exposure of the real F140W association damaged: refused at resolve time, before any
    # work, with one line naming file, extension, keyword and value.
    Documented("an exposure without its SCI extension", ExitCode.INPUT_ERROR,
               "error naming the file and the missing extension, before any work (AstroDrizzle would skip it silently)",
               "test_validation.py::test_exposure_without_sci_is_refused_before_any_work"),
    Documented("an exposure whose SCI header lacks a WCS keyword (`CD2_2`)", ExitCode.WCS_FAILED,
               "error naming file, extension and keyword, before any work (a missing CD element reads as 0: a "
               "degenerate WCS)", "test_validation.py::test_sci_header_without_cd2_2_is_refused_before_any_work"),
    Documented("an exposure's DQ array shape differs from its SCI", ExitCode.INPUT_ERROR,
               "error naming file, extension and both shapes, before any work",
               "test_validation.py::test_dq_shape_differing_from_sci_is_refused_before_any_work"),
    Documented("an exposure without its DQ extension", ExitCode.INPUT_ERROR,
               "error naming file and extension, before any work",
               "test_validation.py::test_exposure_without_dq_is_refused_before_any_work"),
    Documented("an exposure without its ERR extension", ExitCode.INPUT_ERROR,
               "error naming file and extension, before any work",
               "test_validation.py::test_exposure_without_err_is_refused_before_any_work"),
    Documented("an exposure far from the others (`CRVAL1 = -1`: 54° in RA, 47.5° on the sky)", ExitCode.WCS_FAILED,
               "error naming file, extension, CRVALs and the distance, before any work (members lie within 0.25°)",
               "test_validation.py::test_exposure_far_from_the_visit_is_refused_before_any_work"),
    Documented("SIP coefficients (`A_ORDER` …) but a `CTYPE` without `-SIP`", ExitCode.WCS_FAILED,
               "error naming file, extension, CTYPE1 and A_ORDER, before any work (WCS software would ignore the "
               "distortion)", "test_validation.py::test_sip_coefficients_without_sip_ctype_are_refused_before_any_work"),
    Documented("`EXPTIME = 1e30` (or missing, not a number)", ExitCode.INPUT_ERROR,
               "error naming file, keyword and value, before any work",
               "test_validation.py::test_absurd_exptime_is_refused_before_any_work"),
    Documented("one member of the real association with `EXPTIME = 0`", ExitCode.DEFAULT_ONLY,
               "warning naming it; dropped, the other three drizzled (NDRIZIM 3); the report lists it as dropped "
               "and the drizzled chips as read from the product (9: no catalog offline)",
               "test_validation.py::test_exptime_zero_member_is_dropped_and_the_product_lists_the_rest"),
    Documented("AstroDrizzle leaves an exposure out of the product (NDRIZIM / `D###DATA` short of the plan)",
               ExitCode.DRIZZLE_FAILED,
               "error naming the product and the exposure missing from it; the product is renamed `.rejected`, "
               "nothing published, inputs untouched",
               "test_validation.py::test_product_missing_an_exposure_is_exit_7"),
)


# --------------------------------------------------------------------------------------------
# fixtures and checks


def _template(base: Path, **config: object) -> Path:
    visit = simulate_visit(base, SimulationConfig(chip_shape=(128, 256), write_flc=False, n_stars=60, **{**EXACT_WORLD, **config}))
    return visit.directory


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _template(tmp_path_factory.mktemp("template") / "visit")


@pytest.fixture(scope="session")
def template_apriori(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _template(tmp_path_factory.mktemp("template_apriori") / "visit",
                     apriori_errors_mas=(("GSC240", 20.0, -10.0),))


def _copy(template: Path, tmp_path: Path) -> Visit:
    directory = tmp_path / "data" / "visit"
    shutil.copytree(template, directory)
    out = tmp_path / "out"
    out.mkdir()
    return Visit(directory, directory / "jref", directory / "jsim01010_refcat.ecsv", out)


def _digests(folder: Path) -> dict[str, str]:
    """sha256 of every regular file under ``folder`` (symlinks followed)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith((".tra", "_report.json", "_report.html"))
        and not p.name.startswith(".")
    }


def _products(*folders: Path) -> list[Path]:
    return [p for f in folders for p in f.rglob("*") if re.search(r"_dr[zc]\.fits$", p.name)]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def verdict_line(console: str, code: ExitCode) -> str:
    """The one ``autodriz: …`` line of ``console`` (the trailer's location aside), checked against ``code``.

    A run ends with ``autodriz: NAME (exit N): message`` (on stdout after products were written,
    on stderr otherwise); an error found before a run starts (usage, the dataset folder or the
    trailer path) says ``autodriz: message``. A line naming an exit must name ``code``.
    """
    verdicts = [ln for ln in console.splitlines()
                if ln.startswith("autodriz: ") and not ln.startswith("autodriz: trailer ")]
    assert len(verdicts) == 1, f"expected one verdict line, got {verdicts}\n{console}"
    named = re.match(r"autodriz: ([A-Z0-9_]+) \(exit (\d+)\): ", verdicts[0])
    if named or code in PRODUCT_CODES:
        prefix = f"autodriz: {code.name} (exit {int(code)}): "
        assert verdicts[0].startswith(prefix), f"verdict line does not start with {prefix!r}: {verdicts[0]}"
    return verdicts[0]


def _check(case: Case, v: Visit, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``argv`` and check everything ``case`` promises; return the verdict line."""
    # What must not change: everything in the data tree (the visit and what sits beside it).
    data_root = v.directory.parent
    before = _digests(data_root)
    before_out = _digests(v.out)
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == case.exit_code, f"{case.id}: exit {code}, expected {int(case.exit_code)}\n{err}"
    assert "Traceback" not in err + out, f"{case.id}: traceback on the console\n{err}"
    verdict = verdict_line(out if code in PRODUCT_CODES else err, case.exit_code)
    # The test's temporary folder is named after the test (…_truncated_asn0): blank it out.
    blank = v.out.parent.as_posix()
    for text in case.says:
        assert text.lower() in verdict.replace(blank, "<tmp>").lower(), \
            f"{case.id}: the verdict line does not say {text!r}\n{verdict}"
    for group in case.lines:
        assert any(all(t in ln for t in group) for ln in (err + out).replace(blank, "<tmp>").splitlines()), \
            f"{case.id}: no console line says all of {group}\n{err}{out}"
    leftovers = [p for p in (*data_root.rglob("*"), *v.out.rglob("*")) if p.name.endswith(".autodriz-tmp")]
    assert not leftovers, f"{case.id}: temporary files left: {leftovers}"
    products = _products(data_root, v.out)
    if code in PRODUCT_CODES:
        assert products, f"{case.id}: exit {code} without a product"
        for product in products:
            assert product.name in verdict, f"{case.id}: the verdict does not name {product.name}: {verdict}"
        if case.see is not None:
            case.see(v, verdict)
        return verdict
    assert case.see is None, f"{case.id}: 'see' checks are for runs that make products"
    assert _digests(data_root) == before, f"{case.id}: inputs changed by a run that failed"
    assert _digests(v.out) == before_out
    assert not products, f"{case.id}: product under a final name after exit {code}"
    return verdict


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Cases may set variables; monkeypatch puts the environment back afterwards.
    for name in list(os.environ):
        if name.startswith(("AUTODRIZ_", "ASTROMETRY_")) or name in ("jref", "iref"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AUTODRIZ_NUM_CORES", "1")
    yield


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, template: Path, template_apriori: Path, tmp_path: Path,
                   capsys: pytest.CaptureFixture[str], clean_env: None) -> None:
    v = _copy(template_apriori if case.apriori else template, tmp_path)
    argv = case.prepare(v)
    _check(case, v, argv, capsys)


# --------------------------------------------------------------------------------------------
# cases that need more than a damaged copy


@pytest.fixture
def read_only_visit(template: Path, tmp_path: Path) -> Iterator[Visit]:
    """The visit on a tmpfs remounted read-only: writes fail with EROFS even for root.

    chmod does not stop root, a read-only mount does. Needs CAP_SYS_ADMIN (root in a container
    usually has it); elsewhere the test is skipped with the reason.
    """
    mnt = tmp_path / "data"
    mnt.mkdir()
    mount = shutil.which("mount")
    if os.geteuid() != 0 or mount is None:
        pytest.skip("needs root to mount a read-only tmpfs (chmod does not stop root)")
    done = subprocess.run([mount, "-t", "tmpfs", "tmpfs", str(mnt)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        shutil.copytree(template, mnt / "visit")
        subprocess.run([mount, "-o", "remount,ro", str(mnt)], check=True, capture_output=True)
        out = tmp_path / "out"
        out.mkdir()
        yield Visit(mnt / "visit", mnt / "visit" / "jref", mnt / "visit" / "jsim01010_refcat.ecsv", out)
    finally:
        subprocess.run([shutil.which("umount") or "umount", str(mnt)], check=False, capture_output=True)


@pytest.mark.parametrize("elsewhere", [False, True], ids=["beside", "output-dir-elsewhere"])
def test_read_only_dataset_folder(read_only_visit: Visit, elsewhere: bool,
                                  capsys: pytest.CaptureFixture[str], clean_env: None) -> None:
    v = read_only_visit
    argv = v.args("-o", str(v.out)) if elsewhere else v.args()
    verdict = _check(READ_ONLY, v, argv, capsys)
    # "error naming the folder": the read-only folder itself, not only some path below it.
    assert re.search(rf"{re.escape(str(v.directory))}(?![^ :;,)])", verdict), verdict


def _boom(path: object) -> None:
    raise RuntimeError("simulated bug")


def test_internal_error_console_has_no_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(pipeline, "resolve_input", _boom)
    code, err = _run([str(tmp_path / "x_asn.fits")], capsys)
    assert code == ExitCode.INTERNAL_ERROR
    assert "simulated bug" in err
    assert "Traceback" not in err
    assert "Traceback" in (tmp_path / "x.tra").read_text()


def test_debug_flag_shows_tracebacks_and_debug_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(pipeline, "resolve_input", _boom)
    code, err = _run([str(tmp_path / "x_asn.fits"), "--debug"], capsys)
    assert code == ExitCode.INTERNAL_ERROR
    assert "Traceback" in err and "simulated bug" in err


def test_error_outside_a_run_is_one_line_without_debug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # A bug that escapes pipeline.process (here: in process itself) must still end with exit 1
    # and one line; --debug shows the traceback.
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("escaped bug")

    monkeypatch.setattr(pipeline, "process", broken)
    code, err = _run([str(tmp_path / "x_asn.fits")], capsys)
    assert code == ExitCode.INTERNAL_ERROR
    assert "escaped bug" in err and "--debug" in err and "Traceback" not in err
    code, err = _run([str(tmp_path / "x_asn.fits"), "--debug"], capsys)
    assert code == ExitCode.INTERNAL_ERROR
    assert "Traceback" in err


# --------------------------------------------------------------------------------------------
# exit 6 and 7 name the exposures and a log that exists


@pytest.mark.parametrize(
    ("prepare", "code", "says", "log"),
    [
        (_idctab_not_an_idctab, ExitCode.WCS_FAILED, "updatewcs failed on jsim01a1q_flt.fits: KeyError",
         "jsim01010_default/updatewcs.log"),
        (_all_nan, ExitCode.DRIZZLE_FAILED, f"AstroDrizzle failed for jsim01a1q_drz from {FLT1}: ValueError",
         "jsim01a1q_default/astrodrizzle_drz.log"),
    ],
    ids=["updatewcs", "astrodrizzle"],
)
def test_child_failure_names_the_exposure_and_a_log_that_exists(
    prepare: Callable[[Visit], list[str]], code: ExitCode, says: str, log: str,
    template: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], clean_env: None,
) -> None:
    v = _copy(template, tmp_path)
    argv = [*prepare(v), "--keep-workdirs", "-o", str(v.out)]
    code_got, err = _run(argv, capsys)
    assert code_got == code, err
    verdict = [ln for ln in err.splitlines() if ln.startswith(f"autodriz: {code.name}")]
    assert len(verdict) == 1 and says in verdict[0], err
    # With --keep-workdirs the message names the child's own log file, which holds the error.
    path = v.out / log
    assert f"child log {path}" in verdict[0]
    assert says.rsplit(": ", 1)[1] in path.read_text()


# --------------------------------------------------------------------------------------------
# the README documents every case


def readme_table() -> str:
    """The Markdown table for the README, generated from the cases."""
    lines = ["| case | exit code | what happens |", "|---|---|---|"]
    for case in (*CASES, READ_ONLY, *ELSEWHERE):
        lines.append(f"| {case.readme} | {int(case.exit_code)} (`{case.exit_code.name}`) | {case.what_happens} |")
    return "\n".join(lines)


def test_readme_documents_every_bad_input_case() -> None:
    text = README.read_text(encoding="utf-8")
    assert TABLE_HEADING in text, f"README.md has no section {TABLE_HEADING!r}; paste readme_table()"
    section = text.split(TABLE_HEADING, 1)[1]
    rows = dict(re.findall(r"^\| (.+?) \| (\d+) \(`[A-Z_]+`\) \|", section, flags=re.MULTILINE))
    for case in (*CASES, READ_ONLY, *ELSEWHERE):
        assert case.readme in rows, f"README table lacks the row {case.readme!r}"
        assert int(rows[case.readme]) == int(case.exit_code), case.readme
    # The rows tested elsewhere name a test that exists.
    for doc in ELSEWHERE:
        filename, function = doc.test.split("::")
        source = (Path(__file__).parent / filename).read_text(encoding="utf-8")
        assert re.search(rf"^def {re.escape(function)}\(", source, flags=re.MULTILINE), doc.test


if __name__ == "__main__":
    print(readme_table())
    sys.exit(0)
