"""HST exposure files: SCI-extension iteration and chip WCS read/write, in one place.

An FLT/FLC holds one ``SCI`` image extension per chip (``EXTVER`` 1, 2, …), each with the chip's
WCS in its header (linear part, SIP, and the NPOL/D2IM lookup tables in other extensions). The
modules that read chips or write a fitted WCS into copies go through these functions, so that
"which extensions are chips" (EXTNAME compared case-insensitively, a missing EXTVER is 1) and
"what a fitted WCS writes" (CRVAL, CD, ORIENTAT, WCSNAME and the fit keywords) mean the same
everywhere. Nothing here writes a file: :func:`chip_wcs_cards` says what a fit writes, and
:func:`apply_sci_cards` applies it to an open HDUList (a working copy's, or one in memory;
inputs are changed only by the final atomic update, :mod:`autodriz.products`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from autodriz.skygeom import MAS_PER_DEG


def sci_extensions(hdul: fits.HDUList, *, images_only: bool = False) -> list[tuple[int, int]]:
    """(HDU index, EXTVER) of every SCI extension, in file order.

    Parameters
    ----------
    hdul : astropy.io.fits.HDUList
        An open exposure.
    images_only : bool
        Keep only extensions with ``NAXIS = 2`` (a chip with pixels).

    Returns
    -------
    list of (int, int)
    """
    out = []
    for i, h in enumerate(hdul):
        # EXTNAME as written (astropy's HDU.name keeps the file's case): 'sci' is a chip too.
        if str(h.header.get("EXTNAME", "")).strip().upper() != "SCI":
            continue
        if images_only and h.header.get("NAXIS", 0) != 2:
            continue
        out.append((i, int(h.header.get("EXTVER", 1))))
    return out


def chip_wcs(hdul: fits.HDUList, index: int) -> WCS:
    """The full WCS (linear, SIP, NPOL/D2IM lookup tables) of one SCI extension.

    Parameters
    ----------
    hdul : astropy.io.fits.HDUList
        The open exposure (the lookup tables live in its other extensions).
    index : int
        HDU index of the SCI extension (see :func:`sci_extensions`).

    Returns
    -------
    astropy.wcs.WCS
        With ``pixel_shape`` set from NAXIS1/2.

    Raises
    ------
    ValueError, KeyError, MemoryError
        What astropy raises on a WCS it cannot build.
    """
    with warnings.catch_warnings():
        # HST headers carry keywords astropy "fixes" (DATE-OBS, RADESYS): noise, not news.
        warnings.simplefilter("ignore", FITSFixedWarning)
        header = hdul[index].header
        wcs = WCS(header, fobj=hdul)
    # The shape from the header: reading the pixels only to learn their shape would load the
    # whole chip (the same numbers for an image extension).
    ny, nx = chip_shape(header)
    wcs.pixel_shape = (nx, ny)
    return wcs


def chip_shape(header: fits.Header) -> tuple[int, int]:
    """``(ny, nx)`` of a SCI extension from its header (no pixels read)."""
    return int(header["NAXIS2"]), int(header["NAXIS1"])


def solution_keywords(
    n_matches: int, rms_ra_mas: float, rms_dec_mas: float, geometry: str, wcstype: str
) -> dict[str, tuple[Any, str]]:
    """The fit keywords runastrodriz writes beside an a posteriori WCS (name → (value, comment))."""
    return {
        "NMATCHES": (int(n_matches), "matched sources in the a posteriori fit"),
        "RMS_RA": (rms_ra_mas, "RMS of the fit in RA (mas)"),
        "RMS_DEC": (rms_dec_mas, "RMS of the fit in Dec (mas)"),
        "CRDER1": (rms_ra_mas / MAS_PER_DEG, "systematic error in RA (deg)"),
        "CRDER2": (rms_dec_mas / MAS_PER_DEG, "systematic error in Dec (deg)"),
        "FITGEOM": (geometry, "fit geometry of the a posteriori solution"),
        "WCSTYPE": (wcstype[:60], "type of WCS"),
    }


#: One header assignment ``header[key] = value``; value is a scalar or ``(value, comment)``.
Card = tuple[str, Any]


def chip_wcs_cards(wcs: WCS, wcsname: str, keywords: Mapping[str, tuple[Any, str]]) -> list[Card]:
    """The header assignments that write a fitted linear WCS (CRVAL, CD, ORIENTAT), its WCSNAME
    and fit keywords into a SCI header, in order (:func:`apply_cards` replays them).

    The fit changes only CRVAL and CD (tweakwcs' correctors keep CRPIX, SIP and the lookup
    tables), so only those are written; RMS keywords are rounded to 1 µas. A plain value keeps
    the comment the header has; ``(value, comment)`` sets both.
    """
    cd = wcs.wcs.cd if wcs.wcs.has_cd() else wcs.pixel_scale_matrix
    cards: list[Card] = [("CRVAL1", float(wcs.wcs.crval[0])), ("CRVAL2", float(wcs.wcs.crval[1]))]
    cards += [(f"CD{r + 1}_{c + 1}", float(value)) for (r, c), value in np.ndenumerate(cd)]
    cards.append(("ORIENTAT", (round(math.degrees(math.atan2(cd[0, 1], cd[1, 1])), 9), "position angle of image y axis (deg)")))
    cards.append(("WCSNAME", wcsname))
    cards += [
        (key, (round(value, 6) if isinstance(value, float) and key.startswith("RMS") else value, comment))
        for key, (value, comment) in keywords.items()
    ]
    return cards


def apply_cards(header: fits.Header, cards: Sequence[Card | list[Any]]) -> None:
    """Replay :func:`chip_wcs_cards`'s assignments on ``header`` (also as they come back from JSON)."""
    for key, value in cards:
        header[key] = tuple(value) if isinstance(value, list) else value


def apply_sci_cards(hdul: fits.HDUList, by_extver: Mapping[int, Sequence[Card]]) -> None:
    """Replay each chip's assignments on its SCI header; SCI extensions not in ``by_extver`` are kept."""
    for index, extver in sci_extensions(hdul):
        cards = by_extver.get(extver)
        if cards is not None:
            apply_cards(hdul[index].header, cards)


#: Extensions that hold an exposure's pixels (the large data parts of an FLT/FLC).
PIXEL_EXTNAMES = frozenset({"SCI", "ERR", "DQ"})


def as_working_copy(hdul: fits.HDUList) -> None:
    """Give an updatewcs result the headers every working copy has, in place.

    No sky of an earlier drizzle (:func:`drop_drizzle_sky`), and blank cards reserved at the
    end of each SCI header (:func:`autodriz.fitspatch.reserve_header_cards`) for the cards a fit,
    AstroDrizzle and the delivery add, so that those changes, and the delivered file written
    over the copy, keep every header's size. Used by each writer of the default stage's copies.
    """
    from autodriz.fitspatch import reserve_header_cards

    drop_drizzle_sky(hdul)
    reserve_header_cards(hdul)


def drop_drizzle_sky(hdul: fits.HDUList) -> int:
    """Remove ``MDRIZSKY`` (the sky an earlier AstroDrizzle run subtracted) from the SCI headers.

    AstroDrizzle starts from a SCI header's ``MDRIZSKY`` when it finds one, and its float32
    arithmetic then differs in the last bit from a first run's: a run on delivered files (which
    carry it, as runastrodriz's do) would not reproduce the products made from the files as
    calibration left them. Working copies start without it; the final drizzle writes it anew and
    the delivered files get that value.

    Parameters
    ----------
    hdul : HDUList
        Changed in place (in memory, or opened in update mode).

    Returns
    -------
    int
        The number of headers that had it.
    """
    dropped = 0
    for hdu in hdul:
        if hdu.name == "SCI" and "MDRIZSKY" in hdu.header:
            del hdu.header["MDRIZSKY"]
            dropped += 1
    return dropped
