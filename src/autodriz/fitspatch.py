"""Write an HDUList over the file its large data parts already lie in, without rewriting them.

A delivered exposure is its final drizzle's working copy with new headers and headerlets: the
pixels (~170 MB for a full-size ACS/WFC FLT) are already in that file, at the offsets the new
file needs them, as long as no header before them changes size. :func:`write_over` writes what
``HDUList.writeto`` would write, byte for byte, except the data parts that are already there:
the headers and the small extensions after the pixels are written, the pixels are neither read
nor written. Working copies reserve blank cards at the end of their SCI headers
(:func:`reserve_header_cards`), which astropy fills as cards are added (a fit's WCS, the
archived alternate WCS, ``S_REGION``, ``WCSTYPE``, ``MDRIZSKY``), so those headers keep their
size.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from astropy.io import fits

#: Blank cards kept at the end of each working copy's SCI header: the delivery adds ~30 cards
#: to a SCI header of an ACS/WFC FLT (fit WCS, alternate WCS A, WCSTYPEs, S_REGION, fit
#: keywords); room for more (two 2880-byte blocks) costs 5.6 kB per chip.
RESERVED_CARDS = 72


def reserve_header_cards(hdul: fits.HDUList, cards: int = RESERVED_CARDS, extnames: frozenset[str] = frozenset({"SCI"})) -> int:
    """Make sure each ``extnames`` header ends with at least ``cards`` blank cards.

    astropy puts a new card in place of a trailing blank one (``useblanks``), so a header with
    enough of them keeps its size as cards are added, and a file updated in place is not
    rewritten whole.

    Parameters
    ----------
    hdul : HDUList
        Changed in memory (or opened in update mode).
    cards : int
        Blank cards wanted at the end of each header.
    extnames : set of str
        Extensions whose headers get them.

    Returns
    -------
    int
        Blank cards added, over all headers.
    """
    added = 0
    for hdu in hdul:
        if hdu.name not in extnames:
            continue
        header = hdu.header
        trailing = 0
        for card in reversed(header.cards):
            if not card.is_blank:
                break
            trailing += 1
        for _ in range(cards - trailing):
            header.append(fits.Card(), end=True)
            added += 1
    return added


def drop_trailing_blanks(hdul: fits.HDUList) -> int:
    """Remove the blank cards at the end of every header of ``hdul``; return how many.

    astropy counts a header's trailing blank cards on every card it appends (to put the card in
    place of one), parsing each: with the :data:`RESERVED_CARDS` of a working copy that is most
    of the cost of stwcs' header edits. A header written over its old place is padded back to
    its size afterwards (:func:`pad_header_to`).
    """
    return sum(_drop_trailing_blanks(hdu.header) for hdu in hdul)


def _drop_trailing_blanks(header: fits.Header) -> int:
    # On a card read from a file and not parsed yet, is_blank compares its image only.
    dropped = 0
    while len(header) and header.cards[-1].is_blank:
        del header[-1]
        dropped += 1
    return dropped


def pad_header_to(header: fits.Header, nbytes: int) -> bool:
    """Append blank cards to ``header`` until it takes ``nbytes`` in a file; False if it needs more.

    stwcs rebuilds a SCI header when it applies a headerlet (the old WCS's cards deleted, the
    new ones added, not all in place of the blank ones), which leaves it longer or shorter than
    the header on disk. Its trailing blank cards are dropped and as many added again as fill
    ``nbytes``, so the data after it stay where they are.
    """
    _drop_trailing_blanks(header)
    size = len(header.tostring())
    if size > nbytes:
        return False
    # A long string value takes several 80-byte records (CONTINUE) for one card.
    records = (len(header.tostring(endcard=False, padding=False))) // 80
    for _ in range(nbytes // 80 - 1 - records):
        header.append(fits.Card(), end=True)
    return len(header.tostring()) == nbytes


class LayoutChanged(Exception):
    """The new file would not have a kept data part where the old one has it."""


class _SkippingWriter:
    """A write-only file object for astropy: writes that fall inside a kept span are dropped.

    With ``fd`` None nothing is written (a dry run that checks the layout).
    """

    mode = "wb"

    def __init__(self, fd: int | None, keep: Mapping[int, int]) -> None:
        self._fd = fd
        self._keep = sorted(keep.items())
        self._dropped = dict.fromkeys(keep, 0)
        self._pos = 0
        self.closed = False

    def _span(self, start: int, end: int) -> int | None:
        """The kept span holding [start, end); None if none overlaps; LayoutChanged if one does partly."""
        for offset, length in self._keep:
            if start < offset + length and offset < end:
                if offset <= start and end <= offset + length:
                    return offset
                raise LayoutChanged(f"a write at {start}..{end} straddles the kept data at {offset}..{offset + length}")
        return None

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        size = view.nbytes
        start = self._pos
        if size:
            span = self._span(start, start + size)
            if span is not None:
                self._dropped[span] += size
            elif self._fd is not None:
                done = 0
                while done < size:
                    done += os.pwrite(self._fd, view[done:], start + done)
        self._pos = start + size
        return size

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = offset if whence == 0 else self._pos + offset if whence == 1 else self._pos
        return self._pos

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def check_complete(self) -> None:
        """Every kept span was written over exactly (by writes that were dropped)."""
        for offset, length in self._keep:
            if self._dropped[offset] != length:
                raise LayoutChanged(f"the data at {offset} ({length} bytes) would move or change size")


def write_over(
    hdul: fits.HDUList, path: Path, keep: Mapping[int, int], prefix: int, output_verify: str = "exception"
) -> None:
    """Write ``hdul`` into ``path`` as ``hdul.writeto`` would, leaving the ``keep`` spans as they are.

    ``keep`` maps a data offset to its length (padding included, as ``HDUList.fileinfo`` gives
    ``datLoc``/``datSpan``) of the data parts that ``path`` already holds and that ``hdul``
    writes unchanged at that same offset: HDUs of ``path`` itself, whose data were not loaded
    or changed, all among the first ``prefix`` HDUs. Their layout is checked first, with
    nothing written (a dry run of those HDUs only: astropy's ``writeto`` moves the offsets of
    HDUs made in memory to where it wrote them, so the whole list cannot be written twice):
    if any kept part would move, change size or be partly overwritten,
    :class:`LayoutChanged` is raised and ``path`` is untouched. Then the rest is written in
    place and the file is cut to its new length. A kept span is never written, even when the
    write stops half-way. Refused as well: a kept span that is not the data offset of one of
    the leading HDUs, or whose HDU's data were read into memory (they could differ from the
    file's, and the write of a kept span is dropped).

    Raises
    ------
    LayoutChanged
        The new file would not hold the kept data parts where ``path`` holds them.
    """
    lead = list(hdul[:prefix])
    owners = {hdu._data_offset: hdu for hdu in lead if hdu._data_offset in keep}  # noqa: SLF001
    if owners.keys() != set(keep):
        raise LayoutChanged("a kept data part is not the data of one of the leading HDUs as read")
    for hdu in owners.values():
        # Read into memory, it may have been changed there: only data never read is known to be
        # what the file holds (astropy's private flag; tests/test_fitspatch.py checks the refusal).
        if hdu._data_loaded:  # noqa: SLF001
            raise LayoutChanged(f"the data of {hdu.name},{hdu.ver} were read into memory and may differ from the file's")
    dry = _SkippingWriter(None, keep)
    fits.HDUList(lead).writeto(dry, output_verify=output_verify)
    dry.check_complete()
    fd = os.open(path, os.O_RDWR)
    try:
        writer = _SkippingWriter(fd, keep)
        hdul.writeto(writer, output_verify=output_verify)
        writer.check_complete()
        os.ftruncate(fd, writer.tell())
    finally:
        os.close(fd)
