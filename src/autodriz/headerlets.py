"""Find and read a priori WCS solutions packaged as stwcs headerlets, with astropy alone.

A headerlet is a small FITS file (primary header + one ``SIPWCS`` extension per chip, plus the
``WCSDVARR``/``D2IMARR`` lookup tables) that carries one complete WCS of one exposure. HST
exposures carry them embedded as ``HDRLET`` extensions, whose data are the bytes of that FITS
file (gzipped when ``COMPRESS = T``). This module reads them without importing stwcs: stwcs
prints, adds a stdout handler to its loggers and resets levels on import, which the calling
process must not inherit. Applying a headerlet is left to stwcs, in a child process
(:mod:`autodriz._child`).

Where solutions come from (see :mod:`autodriz.solutions.apriori` for the order):

- :func:`embedded_headerlets`: the ``HDRLET`` extensions of an exposure;
- :func:`store_headerlets`: a folder of ``<rootname>*_hlet.fits`` files (one headerlet each);
- :func:`autodriz.astrometrydb.AstrometryDB.headerlets`: the astrometry database service.

WCSNAME conventions (HST): ``OPUS`` (as delivered), ``IDC_<idcroot>`` (distortion only, the
pipeline default), ``IDC_<idcroot>-<CATALOG>`` a priori (``-GSC240``, ``-HSC30``), and
``IDC_<idcroot>-FIT_<...>`` a posteriori fits.
"""

from __future__ import annotations

import gzip
import io
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

logger = logging.getLogger(__name__)

#: ``IDC_<idcroot>-<solution>``: the WCSNAME of a solution derived from a distortion model.
_DERIVED_WCSNAME = re.compile(r"^IDC_(?P<idc>[A-Za-z0-9]+)-(?P<short>[A-Za-z0-9_.+]+)$")

#: SCI/SIPWCS keywords that make up a celestial WCS (linear part and SIP), for comparisons.
_WCS_KEY = re.compile(
    r"^(WCSNAME|CTYPE[12]|CRVAL[12]|CRPIX[12]|CD[12]_[12]|"
    r"(A|B|AP|BP)_ORDER|(A|B|AP|BP)_\d+_\d+|"
    r"CPDIS[12]|D2IMDIS[12])$"
)
# The record-valued DPj/D2IMj cards are left out on purpose: they point at WCSDVARR/D2IMARR
# extension versions, which stwcs renumbers when it copies the tables into another file.

SOURCE_EMBEDDED = "embedded HDRLET"
SOURCE_SERVICE = "astrometry database"


def store_source(folder: Path) -> str:
    """The ``source`` text of a headerlet that came from a headerlet store folder."""
    return f"headerlet store {folder}"


@dataclass(frozen=True)
class HeaderletInfo:
    """One headerlet found for one exposure file, and where it lives.

    Attributes
    ----------
    wcsname : str
        WCSNAME of the solution it carries (``IDC_0461802ej-GSC240``).
    hdrname : str
        Its HDRNAME (unique name of the headerlet).
    idcroot : str or None
        Root of the IDCTAB the solution was made with (``0461802ej``), None if it names none.
    distname : str
        Its DISTNAME (``<rootname>_<idc>-<npol>-<d2im>``), "" if absent.
    destim : str
        Rootname of the exposure it was made for, "" if absent.
    source : str
        ``embedded HDRLET``, ``headerlet store <folder>`` or ``astrometry database``.
    path : Path or None
        File holding it: the exposure (embedded) or the headerlet file; None when it exists
        only in memory (``content``).
    extver : int or None
        EXTVER of the ``HDRLET`` extension (embedded only).
    content : bytes or None
        The headerlet FITS file itself, when it was received from a service.
    """

    wcsname: str
    hdrname: str
    idcroot: str | None
    distname: str
    destim: str
    source: str
    path: Path | None = None
    extver: int | None = None
    content: bytes | None = None

    @property
    def short(self) -> str | None:
        """Short solution name (``GSC240``) for an a priori WCSNAME, else None."""
        return apriori_short_name(self.wcsname)

    def describe(self) -> str:
        """Where it is, in words, for the log."""
        if self.extver is not None and self.path is not None:
            return f"{self.path.name}[HDRLET,{self.extver}]"
        if self.path is not None:
            return str(self.path)
        return f"{self.source} ({self.hdrname})"


def idc_root(value: object) -> str | None:
    """Root name of an IDCTAB reference (``iref$2731450pi_idc.fits`` → ``2731450pi``).

    Returns None for blank, ``N/A`` and missing values.
    """
    if value is None:
        return None
    text = str(value).strip()
    if not text or text.upper() in ("N/A", "NONE"):
        return None
    name = re.split(r"[$/\\]", text)[-1]
    return name.split("_")[0].split(".")[0].lower() or None


def apriori_short_name(wcsname: str) -> str | None:
    """``IDC_<idc>-GSC240`` → ``GSC240``; None for OPUS, the default and a posteriori fits.

    A priori solutions are derived from a distortion model (``IDC_<idc>-``) and a catalog of
    guide-star positions; the ``FIT_*`` suffixes are a posteriori fits to images, which are a
    different family of candidates.
    """
    match = _DERIVED_WCSNAME.match(wcsname.strip())
    if match is None:
        return None
    short = match.group("short")
    if short.upper().startswith("FIT"):
        return None
    return short


def wcsname_idc_root(wcsname: str) -> str | None:
    """IDCTAB root named in a WCSNAME (``IDC_0461802ej-GSC240`` → ``0461802ej``), else None."""
    match = _DERIVED_WCSNAME.match(wcsname.strip())
    return match.group("idc").lower() if match else None


def _hdrlet_hdulist(hdu: Any) -> fits.HDUList:
    """The headerlet inside an ``HDRLET`` extension (raw astropy HDU or stwcs HeaderletHDU)."""
    # When stwcs has been imported somewhere in this process, astropy hands back its
    # HeaderletHDU (a FitsHDU) that knows how to unpack itself; otherwise the data are raw bytes.
    if hasattr(hdu, "hdulist"):
        return hdu.hdulist
    raw = bytes(np.asarray(hdu.data, dtype=np.uint8).tobytes())
    if hdu.header.get("COMPRESS", False):
        raw = gzip.decompress(raw)
    return fits.HDUList.fromstring(raw)


def _headerlet_bytes(hdu: Any) -> bytes:
    """The headerlet FITS file inside an ``HDRLET`` extension, as bytes."""
    buffer = io.BytesIO()
    _hdrlet_hdulist(hdu).writeto(buffer)
    return buffer.getvalue()


def _info_from_primary(
    header: Mapping[str, Any], source: str, *, path: Path | None = None,
    extver: int | None = None, content: bytes | None = None, fallback_hdrname: str = "",
) -> HeaderletInfo:
    wcsname = str(header.get("WCSNAME", "")).strip()
    idc = idc_root(header.get("IDCTAB")) or wcsname_idc_root(wcsname)
    return HeaderletInfo(
        wcsname=wcsname,
        hdrname=str(header.get("HDRNAME", fallback_hdrname)).strip(),
        idcroot=idc,
        distname=str(header.get("DISTNAME", "")).strip(),
        destim=str(header.get("DESTIM", "")).strip().lower(),
        source=source,
        path=path,
        extver=extver,
        content=content,
    )


def embedded_headerlets(path: Path) -> list[HeaderletInfo]:
    """Every headerlet embedded in an exposure file as an ``HDRLET`` extension.

    Parameters
    ----------
    path : Path
        FLT/FLC file; opened read-only.

    Returns
    -------
    list of HeaderletInfo
        In file order; unreadable extensions are logged and skipped.
    """
    found: list[HeaderletInfo] = []
    with fits.open(path) as hdul:
        for index, hdu in enumerate(hdul):
            if index == 0 or str(hdu.header.get("XTENSION", "")).strip().upper() != "HDRLET":
                continue
            extver = int(hdu.header.get("EXTVER", index))
            try:
                inner = _hdrlet_hdulist(hdu)
                primary = inner[0].header
            except (OSError, ValueError, TypeError, IndexError) as exc:
                logger.warning("%s[HDRLET,%d] cannot be read (%s); ignored", path.name, extver, exc)
                continue
            found.append(
                _info_from_primary(
                    primary, SOURCE_EMBEDDED, path=path, extver=extver,
                    fallback_hdrname=str(hdu.header.get("HDRNAME", "")),
                )
            )
    return found


def read_headerlet_file(path: Path, source: str) -> HeaderletInfo:
    """Describe one headerlet file (``*_hlet.fits``).

    Raises
    ------
    ValueError
        The file is not a headerlet (no ``SIPWCS`` extension, no WCSNAME).
    """
    with fits.open(path) as hdul:
        if not any(h.name == "SIPWCS" for h in hdul[1:]):
            raise ValueError(f"{path} is not a headerlet (no SIPWCS extension)")
        info = _info_from_primary(hdul[0].header, source, path=path)
    if not info.wcsname:
        raise ValueError(f"{path} is a headerlet without WCSNAME")
    return info


def headerlet_from_bytes(content: bytes, source: str) -> HeaderletInfo:
    """Describe a headerlet received as bytes (e.g. from the astrometry database).

    Raises
    ------
    ValueError
        The bytes are not a headerlet.
    """
    # astropy fails on non-FITS bytes with assorted exceptions (even AttributeError), so
    # check the FITS signature first: an HTML error page is the usual impostor.
    if not content.startswith(b"SIMPLE  ="):
        raise ValueError(f"not a FITS file (starts with {content[:20]!r})")
    try:
        with fits.HDUList.fromstring(content) as hdul:
            if not any(h.name == "SIPWCS" for h in hdul[1:]):
                raise ValueError("not a headerlet (no SIPWCS extension)")
            info = _info_from_primary(hdul[0].header, source, content=content)
    except (OSError, IndexError, TypeError) as exc:
        raise ValueError(f"not a readable FITS file: {exc}") from exc
    if not info.wcsname:
        raise ValueError("headerlet without WCSNAME")
    return info


def store_headerlets(folder: Path, rootname: str) -> list[HeaderletInfo]:
    """Headerlets for ``rootname`` in a headerlet store folder.

    The store holds one headerlet per file, named ``<rootname>*_hlet.fits`` (this covers the
    archive's ``<rootname>_hlet.fits``, ``<rootname>_flt_hlet.fits`` and runastrodriz's
    ``<rootname>_flt_<hash>_hlet.fits``), optionally gzipped, directly in the folder or in a
    ``<rootname>/`` subfolder.

    Parameters
    ----------
    folder : Path
        The store.
    rootname : str
        Exposure rootname (``ROOTNAME`` keyword, case-insensitive).

    Returns
    -------
    list of HeaderletInfo
        Sorted by file name; files that are not headerlets are logged and skipped.
    """
    root = rootname.lower()
    if not folder.is_dir():
        logger.warning("headerlet store %s is not a folder; not used", folder)
        return []
    files: set[Path] = set()
    for base in (folder, folder / root):
        if base.is_dir():
            for pattern in (f"{root}*_hlet.fits", f"{root}*_hlet.fits.gz"):
                files.update(p for p in base.glob(pattern) if p.is_file())
    found = []
    for path in sorted(files):
        try:
            info = read_headerlet_file(path, store_source(folder))
        except (OSError, ValueError) as exc:
            logger.warning("headerlet store: %s ignored: %s", path, exc)
            continue
        if info.destim and info.destim != root:
            logger.info(
                "headerlet store: %s is for exposure %s, not %s; ignored", path.name, info.destim, root
            )
            continue
        found.append(info)
    return found


def headerlet_bytes(info: HeaderletInfo) -> bytes:
    """The FITS bytes of a headerlet, wherever it is (embedded, file or memory)."""
    if info.content is not None:
        return info.content
    if info.path is None:
        raise ValueError(f"headerlet {info.hdrname} has neither a file nor content")
    if info.extver is None:
        with fits.open(info.path) as hdul:
            buffer = io.BytesIO()
            hdul.writeto(buffer)
            return buffer.getvalue()
    with fits.open(info.path) as hdul:
        for hdu in hdul[1:]:
            if (
                str(hdu.header.get("XTENSION", "")).strip().upper() == "HDRLET"
                and int(hdu.header.get("EXTVER", -1)) == info.extver
            ):
                return _headerlet_bytes(hdu)
    raise ValueError(f"{info.path.name} has no HDRLET extension with EXTVER={info.extver}")


def write_headerlet(info: HeaderletInfo, dest: Path) -> Path:
    """Write the headerlet as a stand-alone ``*_hlet.fits`` file at ``dest``."""
    dest.write_bytes(headerlet_bytes(info))
    return dest


# --------------------------------------------------------------------------------------------
# comparing WCSs
# --------------------------------------------------------------------------------------------


def wcs_keywords(header: Mapping[str, Any]) -> dict[str, Any]:
    """The celestial WCS keywords of a SCI or SIPWCS header (linear, SIP, lookup-table names)."""
    return {key: header[key] for key in header if _WCS_KEY.match(key)}


def headerlet_chip_wcs(content: bytes) -> dict[tuple[str, int], dict[str, Any]]:
    """WCS keywords per target chip (``(EXTNAME, EXTVER)`` of the science file) of a headerlet."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    with fits.HDUList.fromstring(content) as hdul:
        for hdu in hdul[1:]:
            if hdu.name != "SIPWCS":
                continue
            target = (str(hdu.header.get("TG_ENAME", "SCI")).strip().upper(), int(hdu.header.get("TG_EVER", 1)))
            out[target] = wcs_keywords(hdu.header)
    return out


def wcs_differences(exposure: Path, content: bytes, *, rtol: float = 1e-12) -> list[str]:
    """How the primary WCS of ``exposure`` differs from the headerlet's; [] when equal.

    Every WCS keyword the headerlet carries must be present in the target chip with the same
    value (numbers to ``rtol``), and the chip must carry no SIP coefficient the headerlet lacks.

    Parameters
    ----------
    exposure : Path
        FLT/FLC file.
    content : bytes
        The headerlet FITS file.
    rtol : float
        Relative tolerance for numbers (FITS round trips are exact; this only absorbs repr).
    """
    expected = headerlet_chip_wcs(content)
    problems: list[str] = []
    if not expected:
        return ["the headerlet has no SIPWCS extension"]
    with fits.open(exposure) as hdul:
        for (extname, extver), want in expected.items():
            try:
                have = wcs_keywords(hdul[(extname, extver)].header)
            except KeyError:
                problems.append(f"{exposure.name} has no {extname},{extver}")
                continue
            for key, value in want.items():
                if key not in have:
                    problems.append(f"{extname},{extver}: {key} missing")
                elif isinstance(value, int | float) and not isinstance(value, bool):
                    if not np.isclose(float(have[key]), float(value), rtol=rtol, atol=0.0):
                        problems.append(f"{extname},{extver}: {key} = {have[key]!r}, headerlet {value!r}")
                elif str(have[key]).strip() != str(value).strip():
                    problems.append(f"{extname},{extver}: {key} = {have[key]!r}, headerlet {value!r}")
            extra = sorted(k for k in have if re.match(r"^(A|B|AP|BP)_", k) and k not in want)
            if extra:
                problems.append(f"{extname},{extver}: SIP terms not in the headerlet: {', '.join(extra)}")
    return problems


# --------------------------------------------------------------------------------------------
# naming the headerlets that travel with the delivered files
# --------------------------------------------------------------------------------------------


def drizzlepac_hdrname(filename: str, wcsname: str) -> str:
    """HDRNAME as drizzlepac gives it: ``<file>_<wcsname>-hlet.fits``.

    ``jsim01a1q_flt.fits`` and ``IDC_0461802ej-FIT_REL_GAIADR3`` give
    ``jsim01a1q_flt_IDC_0461802ej-FIT_REL_GAIADR3-hlet.fits`` (``align_utils.update_image_wcs_info``).
    """
    stem = Path(filename).name
    stem = stem[: -len(".fits")] if stem.lower().endswith(".fits") else stem
    return f"{stem}_{wcsname}-hlet.fits"


def unique_wcsnames(taken: set[str], wanted: list[tuple[str, str | None]]) -> list[str | None]:
    """The WCSNAME under which each solution can be attached without repeating a name.

    stwcs tools select headerlets by WCSNAME, so a file must not carry two of one name. A fit
    whose name is taken (an rscale and a general fit to one catalog share
    ``IDC_<idc>-FIT_REL_<CATALOG>``) gets its geometry appended, ``…-FIT_REL_GAIADR3_RSCALE``
    (drizzlepac reads the ``FIT_<mode>_<catalog>`` part alone, so the type stays right); a
    solution whose name is still taken (an a priori solution already embedded, or the WCS being
    archived) is not attached again.

    Parameters
    ----------
    taken : set of str
        WCSNAMEs the file will carry anyway (upper case is compared).
    wanted : list of (wcsname, geometry or None)
        The solutions to attach, in order of preference.

    Returns
    -------
    list of str or None
        The name for each, or None where it cannot be attached under a unique name.
    """
    used = {name.strip().upper() for name in taken}
    names: list[str | None] = []
    for wcsname, geometry in wanted:
        choices = [wcsname] + ([f"{wcsname}_{geometry.upper()}"] if geometry else [])
        name = next((c for c in choices if c.strip().upper() not in used), None)
        if name is not None:
            used.add(name.strip().upper())
        names.append(name)
    return names
