"""Prepare the delivered FLC from its FLT twin's (or the reverse): the stwcs work done once per exposure.

The WCS update of an exposure's FLT and of its FLC is the same work (:mod:`autodriz._child`,
``apply_headerlets``): headerlets made from the same fit, the same WCS made primary, the same
WCSCORR rows. The results differ only where the file's own name appears (each new headerlet's
HDRNAME is ``<file>_<wcsname>-hlet.fits``: in the SCI headers, the HDRLET extensions, the
embedded headerlet's primary header and the WCSCORR table), in the keywords in which the two
calibrated files differ anyway (:data:`autodriz.wcstransfer.IGNORED_DIFFERENCES`) and in what
each file's own final AstroDrizzle run gives it (its DQ, ``MDRIZSKY``). So when the child that
drizzled the FLCs finds an exposure's FLT already prepared by the child that drizzled the FLTs,
it takes that file's headers and small extensions with those names mapped
(:func:`map_hdu_bytes`) instead of running stwcs a second time: ~0.5 s of CPU per full-size
ACS/WFC file (``tests/test_twinprep.py`` checks the bytes against a preparation of its own).

Which child prepares which exposure is decided as they go (:func:`claim`): the DRZ child takes
the exposures in order, the DRC child from the end, each claiming an exposure before preparing
it, so side by side they meet half-way and one after the other (one core) the second finds
every exposure done. A child never depends on the other: when the twin's file is refused
(:func:`twin_refusal`), its preparation failed, its process is gone or it takes too long
(:func:`await_twin`), the exposure is prepared directly as before.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from astropy.io import fits

from autodriz.hstio import PIXEL_EXTNAMES
from autodriz.wcstransfer import IGNORED_DIFFERENCES, IMAGE_HDUS, card_differences

CARD = 80
BLOCK = 2880


def file_stem(path: str | os.PathLike[str]) -> str:
    """``ib6o23rtq_flt`` for ``…/ib6o23rtq_flt.fits``: the part of a file name HDRNAMEs begin with."""
    name = Path(path).name
    return name[: -len(".fits")] if name.lower().endswith(".fits") else name


def name_mapper(twin: str | os.PathLike[str], own: str | os.PathLike[str]) -> Callable[[str], str] | None:
    """The function that turns a name made for ``twin`` into the one made for ``own``.

    A value that begins with the twin's file stem and an underscore (an HDRNAME drizzlepac's
    way, possibly cut to a column's width) begins with the own stem instead; any other value is
    left as it is. None when the two stems differ in length: a mapped card or table field would
    change size.
    """
    a, b = file_stem(twin), file_stem(own)
    if len(a) != len(b) or a == b:
        return None
    prefix = a + "_"

    def mapped(value: str) -> str:
        return b + value[len(a):] if value.startswith(prefix) else value

    return mapped


def _map_card_values(block: bytearray, start: int, stop: int, keyword: str, mapper: Callable[[str], str]) -> None:
    """Map the string value of every ``keyword`` card among the 80-byte cards in ``block[start:stop]``."""
    key = keyword.encode("ascii").ljust(8) + b"= "
    for offset in range(start, stop, CARD):
        if block[offset:offset + 10] != key:
            continue
        card = fits.Card.fromstring(bytes(block[offset:offset + CARD]).decode("ascii"))
        value = card.value
        if isinstance(value, str) and mapper(value) != value:
            # Same length by construction: the card keeps its size and its comment's place.
            image = bytes(block[offset:offset + CARD]).decode("ascii")
            quoted = "'" + value.replace("'", "''")
            at = image.index(quoted, 10)
            new = image[:at] + "'" + mapper(value).replace("'", "''") + image[at + len(quoted):]
            block[offset:offset + CARD] = new.encode("ascii")


def _header_size(raw: bytes | bytearray) -> int:
    """Bytes of the header at the start of ``raw`` (its END card's block included)."""
    for offset in range(0, len(raw), CARD):
        if raw[offset:offset + 8] == b"END     ":
            return (offset // BLOCK + 1) * BLOCK
    raise ValueError("no END card")


def map_hdu_bytes(raw: bytes, mapper: Callable[[str], str]) -> bytes:
    """One HDU as stored (header and data) with the twin's file names made the own ones.

    The HDRNAME cards of its header; for a headerlet extension (``HDRLET``, the headerlet's
    FITS file as its data) the HDRNAME cards of the embedded file's headers; for a binary
    table (``WCSCORR``), the fields of its HDRNAME column.
    """
    out = bytearray(raw)
    size = _header_size(out)
    _map_card_values(out, 0, size, "HDRNAME", mapper)
    header = fits.Header.fromstring(bytes(out[:size]))
    xtension = str(header.get("XTENSION", "")).strip()
    if xtension == "HDRLET":
        inner = bytearray(out[size:])
        with fits.open(io.BytesIO(bytes(inner)), lazy_load_hdus=False) as hdul:
            spans = [(info["hdrLoc"], info["datLoc"]) for info in (h.fileinfo() for h in hdul) if info]
        for start, stop in spans:
            _map_card_values(inner, start, stop, "HDRNAME", mapper)
        out[size:] = inner
    elif xtension == "BINTABLE":
        names = [str(header.get(f"TTYPE{i}", "")).strip().upper() for i in range(1, int(header["TFIELDS"]) + 1)]
        if "HDRNAME" in names:
            columns = fits.ColDefs([fits.Column(name=f"c{i}", format=str(header[f"TFORM{i}"]))
                                    for i in range(1, len(names) + 1)])
            dtype = columns.dtype
            field = f"c{names.index('HDRNAME') + 1}"
            width = dtype.fields[field][0].itemsize
            offset = dtype.fields[field][1]
            row = int(header["NAXIS1"])
            for r in range(int(header["NAXIS2"])):
                at = size + r * row + offset
                value = bytes(out[at:at + width]).decode("ascii")
                new = mapper(value)
                if new != value:
                    out[at:at + width] = new.encode("ascii")
    return bytes(out)


def hdu_bytes(hdu: fits.hdu.base._BaseHDU) -> bytes:
    """The HDU as its file stores it: header and data, padding included."""
    info = hdu.fileinfo()
    if info is None:
        raise ValueError(f"{hdu.name},{hdu.ver} is not read from a file")
    fh = info["file"]
    fh.seek(info["hdrLoc"])
    return fh.read(info["datLoc"] + info["datSpan"] - info["hdrLoc"])


def undated(raw: bytes) -> bytes:
    """An HDU's bytes with the DATE values of a headerlet extension's headers blanked (its own, the embedded file's).

    Each headerlet records when it was made: the FLT's and the FLC's, made seconds apart,
    differ in nothing else. Used to compare, never written.
    """
    if not raw.startswith(b"XTENSION= 'HDRLET"):
        return raw
    out = bytearray(raw)
    size = _header_size(out)
    with fits.open(io.BytesIO(bytes(out[size:])), lazy_load_hdus=False) as hdul:
        spans = [(info["hdrLoc"], info["datLoc"]) for info in (h.fileinfo() for h in hdul) if info]
    for start, stop in [(0, size), *((size + a, size + b) for a, b in spans)]:
        for offset in range(start, stop, CARD):
            if out[offset:offset + 10] == b"DATE    = ":
                out[offset + 10:offset + CARD] = b" " * (CARD - 10)
    return bytes(out)


def file_digest(path: str | os.PathLike[str], mapper: Callable[[str], str] | None = None) -> str:
    """A digest of what a headerlet made from the file can depend on, its file names mapped.

    Two files with the same digest (one computed with the ``mapper`` to the other's names)
    pass :func:`twin_refusal`; lets the process that prepared a twin say what it started from
    before it wrote over that file. Read from the raw bytes, without astropy's header parsing
    (~0.02 s instead of ~0.06 s for a full-size file): the image headers of the pixel
    extensions and the primary card by card, the values of
    :data:`~autodriz.wcstransfer.IGNORED_DIFFERENCES` left out and HDRNAMEs mapped; every
    other extension whole, mapped, headerlet DATEs aside. Blank cards (room a header keeps for
    later) are skipped.
    """
    import hashlib

    from autodriz.fitslayout import read_layout

    layout = read_layout(Path(path))
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for index, (start, data, nbytes) in enumerate(layout.hdus):
            fh.seek(start)
            header = bytearray(fh.read(data - start))
            name, xtension = "PRIMARY" if index == 0 else "", ""
            for offset in range(0, len(header), CARD):
                key = bytes(header[offset:offset + 8]).decode("ascii", "replace").strip()
                if key == "END":
                    break
                if key in ("EXTNAME", "XTENSION") and header[offset + 8:offset + 10] == b"= ":
                    value = bytes(header[offset + 10:offset + CARD]).decode("ascii", "replace")
                    value = value.split("/")[0].strip().strip("'").strip()
                    if key == "EXTNAME":
                        name = value
                    else:
                        xtension = value
            h.update(f"{index}|{name}|{xtension}|".encode())
            if index == 0 or (xtension == "IMAGE" and name in PIXEL_EXTNAMES):
                if mapper is not None:
                    _map_card_values(header, 0, len(header), "HDRNAME", mapper)
                for offset in range(0, len(header), CARD):
                    card = bytes(header[offset:offset + CARD])
                    key = card[:8].decode("ascii", "replace").strip()
                    if key == "END":
                        break
                    if not card.strip():
                        continue
                    h.update(key.encode() + b"=")
                    if not IGNORED_DIFFERENCES.match(key):
                        h.update(card)
            else:
                fh.seek(start)
                raw = fh.read(data - start + -(-nbytes // BLOCK) * BLOCK)
                h.update(undated(map_hdu_bytes(raw, mapper) if mapper else raw))
    return h.hexdigest()


def twin_refusal(twin: fits.HDUList, own: fits.HDUList, mapper: Callable[[str], str]) -> str | None:
    """Why a file prepared from ``twin`` cannot stand for one prepared from ``own``; None when it can.

    The two (an FLT and its FLC, as the preparation reads them: its start, the winner's
    solved copy, another solution's copy) must have the same extensions; image headers may
    differ only in the values of :data:`~autodriz.wcstransfer.IGNORED_DIFFERENCES` (not in
    which keywords they have, nor in array sizes); every other extension (headerlets, WCSCORR,
    distortion arrays) must be the twin's byte for byte once its file names are mapped (the
    DATE of embedded headerlets aside, :func:`undated`). Pixel data are not read.
    """
    if [(h.name, h.ver, type(h)) for h in twin] != [(h.name, h.ver, type(h)) for h in own]:
        return "the extensions differ"
    for a, b in zip(twin, own, strict=True):
        if isinstance(a, IMAGE_HDUS) and (a.name in PIXEL_EXTNAMES or a.name == "PRIMARY"):
            differences = card_differences(a.header, b.header)
            only = [k for k in differences if (k in a.header) != (k in b.header)]
            changed = [k for k in differences if k not in only]
            if only:
                return f"{a.name},{a.ver}: keywords only one has: {', '.join(only[:5])}"
            other = [k for k in changed if not IGNORED_DIFFERENCES.match(k) and not _same_name(a.header, b.header, k, mapper)]
            if other:
                return f"{a.name},{a.ver} headers differ in {', '.join(other[:5])}"
        elif undated(map_hdu_bytes(hdu_bytes(a), mapper)) != undated(hdu_bytes(b)):
            return f"{a.name},{a.ver} differs beyond its file names"
    return None


def _same_name(twin: fits.Header, own: fits.Header, key: str, mapper: Callable[[str], str]) -> bool:
    """True for an HDRNAME that is the twin's with its file name mapped (a headerlet each made)."""
    value = twin[key]
    return key == "HDRNAME" and isinstance(value, str) and mapper(value) == own[key] and mapper(value) != value


def start_differences(twin: fits.Header, own: fits.Header) -> list[str]:
    """Keywords whose values the own file keeps where the twin's start and its own differ."""
    return [k for k in card_differences(twin, own) if k in twin and k in own]


# ------------------------------------------------------------------------------------------
# who prepares which exposure
# ------------------------------------------------------------------------------------------


def claim(folder: Path, key: str) -> bool:
    """Claim exposure ``key`` for this process: True if no process had; the claim holds its pid."""
    try:
        fd = os.open(folder / f"{key}.claim", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(str(os.getpid()))
    return True


def publish(folder: Path, key: str, info: dict[str, Any]) -> None:
    """Say that exposure ``key`` is prepared (its file complete), with what its twin needs to know."""
    part = folder / f"{key}.done.part"
    part.write_text(json.dumps(info))
    os.replace(part, folder / f"{key}.done")


def publish_failure(folder: Path, key: str) -> None:
    """Say that this process will not prepare exposure ``key`` (its twin must do it itself)."""
    with contextlib.suppress(OSError):
        (folder / f"{key}.failed").touch()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state not in ("Z", "X")


def await_twin(folder: Path, key: str, *, timeout: float = 120.0, poll: float = 0.01) -> dict[str, Any] | str:
    """What the process that claimed ``key`` published, or why not (it failed, died or took too long).

    Waiting is short in practice: a claim is taken just before that exposure is prepared
    (~0.7 s of work for a full-size ACS/WFC file).
    """
    done, failed, claimed = folder / f"{key}.done", folder / f"{key}.failed", folder / f"{key}.claim"
    deadline = time.monotonic() + timeout
    pid = None
    while True:
        if done.is_file():
            return json.loads(done.read_text())
        if failed.exists():
            return "its twin's preparation failed"
        if pid is None:
            with contextlib.suppress(OSError, ValueError):
                pid = int(claimed.read_text())
        if pid is not None and not _alive(pid):
            # Published just before it ended?
            if done.is_file():
                return json.loads(done.read_text())
            return f"the process preparing its twin (pid {pid}) is gone"
        if time.monotonic() > deadline:
            return f"its twin was not prepared within {timeout:g} s"
        time.sleep(poll)
