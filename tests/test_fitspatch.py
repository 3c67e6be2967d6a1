"""Writing a FITS file over the one that holds its pixels: the bytes ``HDUList.writeto`` gives,
with the pixels neither read nor written, or a refusal that leaves the file untouched."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from autodriz import simulate as S
from autodriz.fitspatch import LayoutChanged, drop_trailing_blanks, pad_header_to, reserve_header_cards, write_over

PIXELS = ("SCI", "ERR", "DQ")


@pytest.fixture(scope="module")
def exposure(tmp_path_factory) -> Path:
    """A simulated ACS/WFC FLT whose SCI headers have room reserved, as working copies do."""
    folder = tmp_path_factory.mktemp("patch")
    visit = S.simulate_visit(folder / "sim", S.SimulationConfig(seed=2, n_exposures=1, chip_shape=(128, 256), n_stars=30))
    with fits.open(visit.flt_paths[0]) as hdul:
        copy = fits.HDUList([h.copy() for h in hdul])
        assert reserve_header_cards(copy) == 2 * 72
        copy.writeto(folder / "base.fits")
    return folder / "base.fits"


def _kept(hdul: fits.HDUList) -> tuple[dict[int, int], int]:
    spans = {hdul.fileinfo(i)["datLoc"]: hdul.fileinfo(i)["datSpan"] for i, h in enumerate(hdul) if h.name in PIXELS}
    return spans, max(i for i, h in enumerate(hdul) if h.name in PIXELS) + 1


def _deliver(hdul: fits.HDUList, prefix: int) -> fits.HDUList:
    """Changes like a delivery's: SCI cards added, a primary value changed, extensions added
    (one right after the pixels, as stwcs inserts WCSCORR)."""
    out = fits.HDUList(list(hdul))
    for hdu in out:
        if hdu.name == "SCI":
            for k in range(30):
                hdu.header[f"NEWKEY{k}"] = (k * 0.5, "added by the delivery")
            hdu.header["S_REGION"] = "POLYGON ICRS " + " ".join(f"{290 + k / 7:.9f}" for k in range(10))
    out[0].header["DRIZCORR"] = "COMPLETE"
    out.insert(prefix, fits.BinTableHDU.from_columns([fits.Column("WCS_ID", "24A", array=["a", "b"])], name="WCSCORR"))
    out.append(fits.ImageHDU(np.arange(12.0).reshape(3, 4), name="EXTRA"))
    return out


def test_writes_the_bytes_writeto_gives_without_rewriting_the_pixels(exposure, tmp_path):
    full, patched = shutil.copy(exposure, tmp_path / "full.fits"), Path(shutil.copy(exposure, tmp_path / "patched.fits"))
    with fits.open(full) as hdul:
        _deliver(hdul, _kept(hdul)[1]).writeto(tmp_path / "expected.fits")
    # The pixels on disk are marked: were they rewritten, the marks would be gone.
    with fits.open(patched) as hdul:
        spans, prefix = _kept(hdul)
    with open(patched, "r+b") as fh:
        for offset in spans:
            fh.seek(offset)
            fh.write(b"KEPT")
    with fits.open(patched) as hdul:
        write_over(_deliver(hdul, prefix), patched, spans, prefix)
    expected, got = (tmp_path / "expected.fits").read_bytes(), patched.read_bytes()
    assert len(got) == len(expected)
    for offset in spans:
        assert got[offset:offset + 4] == b"KEPT"
    marked = bytearray(expected)
    for offset in spans:
        marked[offset:offset + 4] = b"KEPT"
    assert got == bytes(marked)


def _refused(exposure: Path, tmp_path: Path, change, match: str, extra_keep: dict[int, int] | None = None) -> None:
    """``write_over`` of the exposure's HDUs after ``change`` raises LayoutChanged (``match``),
    and the file is byte for byte as it was."""
    path = Path(shutil.copy(exposure, tmp_path / "p.fits"))
    before = path.read_bytes()
    with fits.open(path) as hdul:
        spans, prefix = _kept(hdul)
        out = fits.HDUList(list(hdul))
        change(out)
        with pytest.raises(LayoutChanged, match=match):
            write_over(out, path, {**spans, **(extra_keep or {})}, prefix)
    assert path.read_bytes() == before


def test_a_header_that_outgrows_its_room_is_refused_and_the_file_left_as_it_was(exposure, tmp_path):
    def grow(out: fits.HDUList) -> None:
        for k in range(120):
            out["SCI", 1].header[f"X{k}"] = k

    _refused(exposure, tmp_path, grow, "straddles|move")


def test_pixels_read_into_memory_are_never_dropped_silently(exposure, tmp_path):
    # Changed in memory, a kept span's write would be dropped: write_over refuses instead, with
    # the file untouched, and the caller writes the file whole (which writes the change).
    def flag(out: fits.HDUList) -> None:
        out["DQ", 1].data = out["DQ", 1].data | 4096

    _refused(exposure, tmp_path, flag, "DQ,1 were read into memory")
    # A span that is no leading HDU's data offset is refused as well.
    _refused(exposure, tmp_path, lambda out: None, "not the data of one of the leading HDUs", {5760: 2880})


def test_a_header_shrunk_by_stwcs_is_padded_back_to_its_size(exposure):
    with fits.open(exposure) as hdul:
        header = hdul["SCI", 1].header.copy()
        size = hdul.fileinfo(1)["datLoc"] - hdul.fileinfo(1)["hdrLoc"]
    for key in [k for k in header if k.startswith(("CD", "CRVAL", "CRPIX"))]:
        del header[key]
    while header.cards[-1].is_blank:  # the room used up, as stwcs's rebuilt headers leave it
        del header[-1]
    header["S_REGION"] = "POLYGON ICRS " + " ".join(["290.123456789"] * 12)  # a long string: CONTINUE records
    assert len(header.tostring()) < size
    assert pad_header_to(header, size)
    assert len(header.tostring()) == size
    for _ in range(200):
        header.append(("FILLER", 1.0))
    assert not pad_header_to(header, size)


def test_only_trailing_blank_cards_are_dropped_and_padding_restores_the_size(exposure):
    """The reserved room is taken off before stwcs edits a header and given back when it is padded."""
    with fits.open(exposure) as hdul:
        hdus = fits.HDUList([h.copy() for h in hdul])
        size = hdul.fileinfo(1)["datLoc"] - hdul.fileinfo(1)["hdrLoc"]
    sci = hdus["SCI", 1].header
    sci.insert(5, fits.Card())  # a blank card inside a header is content, not room

    def trailing(header: fits.Header) -> int:
        count = 0
        for card in reversed(header.cards):
            if not card.is_blank:
                break
            count += 1
        return count

    room = {i: trailing(h.header) for i, h in enumerate(hdus)}
    assert room[1] >= 60  # the working copy's reserved room
    kept = [c.image for c in sci.cards][: len(sci) - room[1]]
    assert drop_trailing_blanks(hdus) == sum(room.values())
    assert [c.image for c in sci.cards] == kept
    assert sci.cards[5].is_blank
    assert drop_trailing_blanks(hdus) == 0
    sci.insert(5, ("EXTRA", 1))  # the edit takes one card of the room
    assert pad_header_to(sci, size) and len(sci.tostring()) == size


def test_delivered_files_share_the_drizzled_copy_s_pixels_end_to_end(tmp_path):
    """The pipeline writes each delivered exposure over its final drizzle's copy (no second copy
    of the pixels), and what it delivers is what a whole write gives: the given SCI and ERR
    pixels, headers and headerlets as checked in ``test_pipeline_sim``."""
    from autodriz.cli import main
    from autodriz.exitcodes import ExitCode

    visit = S.simulate_visit(tmp_path / "v", S.SimulationConfig(**S.EXACT_WORLD, chip_shape=(128, 256), n_stars=60,
                                                                 pointing_error_mas=(40.0, -30.0), seed=7))
    given = {p.name: fits.getdata(p, ("SCI", 2)).copy() for p in (*visit.flt_paths, *visit.flc_paths)}
    given_dq = {p.name: fits.getdata(p, ("DQ", 1)).copy() for p in (*visit.flt_paths, *visit.flc_paths)}
    args = [str(visit.asn_path), "--jref", str(visit.jref_dir), "--catalog", str(visit.catalog_path), "--no-apriori",
            "--keep-workdirs"]
    assert main(args) == ExitCode.OK
    trailer = (visit.directory / "jsim01010.tra").read_text()
    n = len(given)
    assert f"{n} of {n} updated exposure(s) written over their final drizzle's copy (pixels left in place), 0 written whole" in trailer
    for path in (*visit.flt_paths, *visit.flc_paths):
        # The kept working copy was the delivered file (one inode); kept, it is a copy of its own
        # (a user's change to it must not reach the delivered file).
        kept = [p for p in visit.directory.glob(f"jsim01010_aposteriori/*/**/{path.name}")]
        assert kept and all(p.read_bytes() == path.read_bytes() for p in kept)
        assert os.stat(path).st_nlink == 1 and all(os.stat(p).st_nlink == 1 for p in kept)
        with fits.open(path) as hdul:
            assert hdul["SCI", 1].header["WCSNAME"].startswith("IDC_0461802ej-FIT_")
            assert np.array_equal(hdul["SCI", 2].data, given[path.name])
            # The DQ AstroDrizzle left in the copy: its cosmic-ray bit, every other bit as given.
            dq = hdul["DQ", 1].data
            assert np.array_equal(dq & ~4096, given_dq[path.name] & ~4096)
            assert np.count_nonzero(dq & 4096) > 0
