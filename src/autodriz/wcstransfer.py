"""Give an FLC the pipeline-default WCS that updatewcs wrote into its FLT twin, without updatewcs.

The FLT and FLC of one exposure come out of the same calibration run: the same headers apart
from the CTE correction's own keywords and the pixel statistics, the same distortion reference
files. ``updatewcs`` reads only WCS, reference-file and chip keywords, so it makes the same
change in both (measured on the simulated full-size visit: the FLC that updatewcs writes and
the one this module writes are byte-identical, see ``tests/test_wcstransfer.py``). Running it
once per exposure instead of twice halves the default stage's updatewcs child (IDCTAB parsing
and a full rewrite of each 170 MB file), and the FLC's working copy is written once instead
of copied and then rewritten.

The transfer is refused (the caller then runs updatewcs on the FLC as before) unless the two
originals have the same extensions and every difference between their image headers is a
keyword of :data:`IGNORED_DIFFERENCES`. Other extensions (headerlets, whose HDRNAME names the
file, WCSCORR) are the FLC's own, provided updatewcs left the FLT's unchanged.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from astropy.io import fits

from autodriz.hstio import as_working_copy

logger = logging.getLogger(__name__)

#: Keywords in which an FLC may differ from its FLT: the file's name, the CTE correction's
#: switches and reference file, the pixel statistics calibration writes per chip, and the sky
#: an earlier AstroDrizzle run subtracted (archive files carry it). updatewcs neither reads nor
#: writes any of them.
IGNORED_DIFFERENCES = re.compile(
    r"^(FILENAME|PCTE[A-Z0-9]*|CTE_NAME|CTE_VER|CTEDATE[01]|CTEIMAGE|CTEDIR|"
    r"GOOD(MIN|MAX|MEAN)|SNR(MIN|MAX|MEAN)|NGOODPIX|MEAN(DARK|BLEV|FLSH)|SOFTERRS|MDRIZSKY)$"
)

#: The HDU kinds whose headers are compared card by card (:func:`card_differences`).
IMAGE_HDUS = (fits.PrimaryHDU, fits.ImageHDU)


def card_differences(a: fits.Header, b: fits.Header) -> list[str]:
    """Keywords whose cards differ (value, comment or presence) between two headers, in order."""
    out = [c.keyword for c in a.cards if c.keyword not in b or b.cards[c.keyword].image != c.image]
    out += [c.keyword for c in b.cards if c.keyword not in a]
    return list(dict.fromkeys(out))


def _image(header: fits.Header, key: str) -> str | None:
    return header.cards[key].image if key in header else None


def _data_bytes(hdu: fits.hdu.base._BaseHDU) -> bytes:
    """The extension's data as stored in the file (no scaling, no table parsing)."""
    info = hdu.fileinfo()
    if info is None or not info["datSpan"]:
        return b""
    info["file"].seek(info["datLoc"])
    return info["file"].read(info["datSpan"])


def transfer_refusal(flt: fits.HDUList, flc: fits.HDUList) -> str | None:
    """Why the FLT's updatewcs result cannot be given to ``flc``; None when it can.

    Parameters
    ----------
    flt, flc : HDUList
        The two originals (before updatewcs).

    Returns
    -------
    str or None
    """
    if [(h.name, h.ver) for h in flt] != [(h.name, h.ver) for h in flc]:
        return "the extensions differ"
    for a, b in zip(flt, flc, strict=True):
        if type(a) is not type(b):
            return f"extension {a.name},{a.ver} is of another kind"
        if isinstance(a, IMAGE_HDUS):
            other = [k for k in card_differences(a.header, b.header) if not IGNORED_DIFFERENCES.match(k)]
            if other:
                return f"{a.name},{a.ver} headers differ in {', '.join(other[:5])}"
            if (a.data is None) != (b.data is None) or (a.data is not None and a.data.shape != b.data.shape):
                return f"{a.name},{a.ver} pixel arrays differ in shape"
    return None


def write_transferred(flt_original: Path, flt_updated: Path, flc_original: Path, dest: Path) -> str | None:
    """Write ``dest``: ``flc_original`` with the WCS that updatewcs gave ``flt_original``.

    Every extension updatewcs changed or added (``flt_updated``) is taken as it is, except that
    image extensions keep the FLC's pixels and the FLC's own values of the keywords in which the
    two originals differ (:data:`IGNORED_DIFFERENCES`).

    Parameters
    ----------
    flt_original, flt_updated : Path
        The FLT before and after updatewcs.
    flc_original : Path
        The FLC twin (read only).
    dest : Path
        The FLC's working copy to write (replaced if it exists).

    Returns
    -------
    str or None
        Why nothing was written (the caller runs updatewcs on the FLC instead); None when done.
    """
    with (
        fits.open(flt_original, do_not_scale_image_data=True) as before,
        fits.open(flt_updated, do_not_scale_image_data=True) as after,
        fits.open(flc_original, do_not_scale_image_data=True) as flc,
    ):
        why = transfer_refusal(before, flc)
        if why is not None:
            return why
        if [(h.name, h.ver) for h in after][: len(before)] != [(h.name, h.ver) for h in before]:
            return "updatewcs reordered or removed extensions"
        out = fits.HDUList()
        for index, hdu in enumerate(after):
            if index >= len(flc):
                out.append(hdu.copy())  # added by updatewcs (WCSDVARR, D2IMARR)
                continue
            if not isinstance(hdu, IMAGE_HDUS):
                # A table or headerlet (its HDRNAME names the file): the FLC's own, as long as
                # updatewcs left the FLT's untouched.
                if card_differences(before[index].header, hdu.header) or _data_bytes(before[index]) != _data_bytes(hdu):
                    return f"updatewcs changed {hdu.name},{hdu.ver}"
                out.append(flc[index])
                continue
            header = hdu.header.copy()
            for key in card_differences(before[index].header, flc[index].header):
                if _image(after[index].header, key) != _image(before[index].header, key):
                    return f"updatewcs changed {key}, in which FLT and FLC differ"
                if key in flc[index].header:
                    header[key] = (flc[index].header[key], flc[index].header.comments[key])
                else:
                    del header[key]
            kind = fits.PrimaryHDU if index == 0 else fits.ImageHDU
            out.append(kind(data=flc[index].data, header=header, do_not_scale_image_data=True))
        # As the FLT's copy (autodriz._child._updatewcs): the same bytes as updatewcs's.
        as_working_copy(out)
        out.writeto(dest, overwrite=True)
    dest.chmod(0o644)
    return None
