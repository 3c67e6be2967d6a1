"""A FITS file's structure from its raw header cards, checked before any library trusts NAXISn.

Used by :mod:`autodriz.exposurefiles` on every exposure before astropy opens it; the header
checks themselves are in :mod:`autodriz.validate`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from autodriz.errors import InputError

#: Largest data part of one extension accepted (bytes): 8x a 4096x2048 float32 chip, the
#: largest HST detector's SCI array. A header claiming more (an absurd NAXISn) is refused before
#: any library sizes, reads or allocates it.
MAX_EXTENSION_BYTES = 256 * 1024**2
#: Longest header accepted, in 2880-byte blocks (real HST headers are a few dozen).
MAX_HEADER_BLOCKS = 2000
#: Most HDUs accepted in one file (HST files have tens, headerlets included).
MAX_HDUS = 1000

_BLOCK = 2880
_CARD = 80
_INTEGER = re.compile(rb"^\s*([+-]?\d+)\s*(/.*)?$")


@dataclass(frozen=True)
class Layout:
    """Where each HDU of a file lies, from its structural keywords alone."""

    path: Path
    #: ``(header offset, data offset, data bytes)`` per HDU.
    hdus: tuple[tuple[int, int, int], ...]


def _structural(block_cards: bytes, path: Path, index: int, offset: int) -> tuple[dict[str, int], int]:
    """The integer structural keywords of one header (BITPIX, NAXIS, NAXISn, PCOUNT, GCOUNT)."""
    values: dict[str, bytes] = {}
    first = block_cards[:8].decode("ascii", errors="replace").strip()
    for off in range(0, len(block_cards), _CARD):
        card = block_cards[off:off + _CARD]
        key = card[:8].decode("ascii", errors="replace").strip()
        if key == "END":
            break
        if card[8:10] == b"= " and key not in values and (key in ("BITPIX", "NAXIS", "PCOUNT", "GCOUNT", "EXTNAME", "EXTVER")
                                                          or re.fullmatch(r"NAXIS\d{1,3}", key)):
            values[key] = card[10:]
    name = values.get("EXTNAME", b"").decode("ascii", errors="replace").split("/")[0].strip().strip("'").strip()
    ver = values.get("EXTVER", b"").decode("ascii", errors="replace").split("/")[0].strip()
    label = f" [{name}{',' + ver if ver else ''}]" if name else ""
    where = f"{path.name}: HDU {index}{label} (header at byte {offset})"
    expected = "SIMPLE" if index == 0 else "XTENSION"
    if first != expected:
        raise InputError(f"{where} does not start with {expected} (found {first!r}): the file's structure is damaged")

    def integer(key: str, default: int | None = None) -> int:
        if key not in values:
            if default is not None:
                return default
            raise InputError(f"{where}: {key} missing; the size of the data cannot be known")
        m = _INTEGER.match(values[key])
        if not m:
            raise InputError(f"{where}: {key} = {values[key].decode('ascii', 'replace').split('/')[0].strip()!r} "
                             "is not an integer")
        return int(m.group(1))

    bitpix = integer("BITPIX")
    if bitpix not in (8, 16, 32, 64, -32, -64):
        raise InputError(f"{where}: BITPIX = {bitpix} (FITS allows 8, 16, 32, 64, -32, -64)")
    naxis = integer("NAXIS")
    if not 0 <= naxis <= 999:
        raise InputError(f"{where}: NAXIS = {naxis} (FITS allows 0 to 999)")
    axes = [integer(f"NAXIS{i}") for i in range(1, naxis + 1)]
    bad = [(i + 1, n) for i, n in enumerate(axes) if n < 0]
    if bad:
        raise InputError(f"{where}: NAXIS{bad[0][0]} = {bad[0][1]} (an axis length is 0 or more)")
    pcount, gcount = integer("PCOUNT", 0), integer("GCOUNT", 1)
    if pcount < 0 or gcount < 0:
        raise InputError(f"{where}: PCOUNT = {pcount}, GCOUNT = {gcount} (neither may be negative)")
    elements = math.prod(axes) if axes else 0
    nbytes = abs(bitpix) // 8 * gcount * (pcount + elements)
    if nbytes > MAX_EXTENSION_BYTES:
        shape = " x ".join(map(str, axes))
        raise InputError(f"{where}: NAXISn = {shape} ({nbytes / 1024**2:,.0f} MiB of data) exceeds the limit of "
                         f"{MAX_EXTENSION_BYTES // 1024**2} MiB per extension (no HST detector comes close); "
                         "refused before reading it")
    return {"BITPIX": bitpix, "NAXIS": naxis}, nbytes


def read_layout(path: Path) -> Layout:
    """Walk a FITS file header by header, from the structural keywords only, and check it adds up.

    Everything else that reads a file trusts NAXISn: astropy sizes (and, for an image, later
    allocates) the data from them and finds the next header after it, so a negative length makes
    it walk backwards forever, a missing ``NAXIS3`` is a ``KeyError``, and tens of GB of NAXISn
    are an allocation. Here each header is read as raw 80-byte cards, the data size computed
    with Python integers and bounded (:data:`MAX_EXTENSION_BYTES`), and each next header must
    begin where the previous data ends (rounded up to a 2880-byte block).

    Raises
    ------
    InputError
        A header is not where the previous one says, a structural keyword is missing or not an
        integer, NAXIS/NAXISn/BITPIX are not FITS values, an extension's data is larger than the
        limit, or the file ends before a header or its data does.
    """
    try:
        size = path.stat().st_size
        hdus = []
        with open(path, "rb") as fh:
            offset = 0
            while offset < size:
                if len(hdus) >= MAX_HDUS:
                    raise InputError(f"{path.name}: more than {MAX_HDUS} HDUs; not an HST exposure")
                fh.seek(offset)
                cards = b""
                for _ in range(MAX_HEADER_BLOCKS):
                    block = fh.read(_BLOCK)
                    if len(block) < _BLOCK:
                        raise InputError(f"{path.name} is truncated: HDU {len(hdus)}'s header (at byte {offset}) "
                                         f"ends before its END card; the file has {size} bytes")
                    cards += block
                    if any(block[i:i + 8] == b"END     " for i in range(0, _BLOCK, _CARD)):
                        break
                else:
                    raise InputError(f"{path.name}: HDU {len(hdus)}'s header (at byte {offset}) has no END card "
                                     f"within {MAX_HEADER_BLOCKS} blocks")
                _, nbytes = _structural(cards, path, len(hdus), offset)
                data = offset + len(cards)
                hdus.append((offset, data, nbytes))
                offset = data + -(-nbytes // _BLOCK) * _BLOCK
                if data + nbytes > size:
                    raise InputError(f"{path.name} is truncated: HDU {len(hdus) - 1}'s data needs {data + nbytes} "
                                     f"bytes, the file has {size}")
    except OSError as exc:
        raise InputError(f"{path} cannot be read ({exc})") from exc
    if not hdus:
        raise InputError(f"{path.name} is empty: not a FITS file")
    return Layout(path, tuple(hdus))
