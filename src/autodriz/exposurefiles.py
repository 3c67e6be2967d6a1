"""One exposure's files: its primary header, its instrument and filters, and whether it is safe to use.

Reads FITS headers only (no pixel), never writes; :mod:`autodriz.inputs` assembles the
exposures it builds into a :class:`~autodriz.dataset.Dataset`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

from astropy.io import fits

from autodriz.dataset import Exposure
from autodriz.errors import InputError, WFPC2UnsupportedError
from autodriz.fitslayout import read_layout
from autodriz.instruments import REGISTRY, Registry
from autodriz.screening import screen_for_alignment
from autodriz.validate import parsable_header

log = logging.getLogger(__name__)


def wfpc2_refusal(name: str) -> WFPC2UnsupportedError:
    """The one-line refusal of WFPC2 data (exit ``WFPC2_UNSUPPORTED``), naming the file."""
    return WFPC2UnsupportedError(
        f"{name}: WFPC2 data are not supported by autodriz (C0M+C1M pairs, uref$ distortion "
        "files, per-chip PC/WF scales and photeq are not implemented); use drizzlepac's "
        "runastrodriz for WFPC2"
    )


# Filter-wheel positions that are not filters: dropped from Exposure.filters.
_NOT_A_FILTER = re.compile(r"^(CLEAR.*|N/A|NONE|BLANK|)$")


def none_if_na(value: object) -> str | None:
    """Header reference-file value as written, with ``N/A``/blank/absent mapped to None."""
    if value is None:
        return None
    text = str(value).strip()
    if not text or text.upper() in ("N/A", "NONE"):
        return None
    return text


def read_primary_header(path: Path) -> fits.Header:
    """Primary header of ``path``; InputError when the file is missing or not FITS."""
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a file; give an HST ASN table, RAW, FLT or FLC file")
    if not path.is_file():
        raise InputError(f"input file not found: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes): not a readable FITS file")
    try:
        # lazy_load_hdus: only the primary HDU is parsed, pixel data is never read.
        with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
            # Unparsable cards (a bare INF, bytes no text encoding has) become text naming
            # them, so that the checks refuse the keyword instead of astropy raising later.
            return parsable_header(hdul[0].header)
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise InputError(
            f"{path} is not a readable FITS file ({exc}); give an HST ASN table, RAW, FLT or "
            "FLC file"
        ) from exc


def _check_exposure_file(path: Path) -> None:
    """Refuse an exposure file that cannot be processed safely, before any work starts.

    Checks that it is not a symlink (the final update renames a new file over the name, which
    would replace the link and leave the file it points to unchanged), that every HDU is
    complete (a truncated file otherwise fails deep inside updatewcs or AstroDrizzle). Reads
    headers only.
    """
    if path.is_symlink():
        raise InputError(
            f"{path} is a symlink (to {path.resolve()}); autodriz rewrites its input exposures "
            "in place, which would replace the link, not the file it points to: copy the file "
            "into the dataset folder instead"
        )
    # Before astropy walks the file: it trusts NAXISn (a negative one loops, a huge one allocates).
    read_layout(path)
    size = path.stat().st_size
    try:
        with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
            for index, hdu in enumerate(hdul):
                info = hdu.fileinfo()
                if info is not None and info["datLoc"] + info["datSpan"] > size:
                    raise InputError(
                        f"{path} is truncated: extension {index} ({hdu.name}) needs "
                        f"{info['datLoc'] + info['datSpan']} bytes, the file has {size}"
                    )
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise InputError(f"{path} is not a readable FITS file ({exc}); it may be truncated") from exc


def _filters_from_header(header: fits.Header, instrument: str) -> tuple[str, ...]:
    """Real filters named by the primary header, CLEAR*/N/A dropped, wheel order kept."""
    keys: Sequence[str]
    if "FILTER1" in header or "FILTER2" in header:
        keys = ("FILTER1", "FILTER2")
    else:
        keys = ("FILTER",)
    filters = []
    for key in keys:
        value = str(header.get(key, "") or "").strip().upper()
        if not _NOT_A_FILTER.match(value):
            filters.append(value)
    return tuple(filters)


def _instrument_detector(header: fits.Header, path: Path, registry: Registry = REGISTRY) -> tuple[str, str]:
    """INSTRUME/DETECTOR, validated against the instruments ``registry`` supports."""
    instrument = str(header.get("INSTRUME", "") or "").strip().upper()
    if not instrument:
        raise InputError(
            f"{path} has no INSTRUME keyword in its primary header; it is not an HST exposure "
            "autodriz can process"
        )
    known = registry.supported_detectors()
    if registry.is_refused(instrument):
        if instrument == "WFPC2":  # e.g. converted to _flt.fits, or an ASN member
            raise wfpc2_refusal(path.name)
        raise InputError(f"{path}: instrument {instrument!r} is recognised but not supported by autodriz")
    if instrument not in known:
        supported = ", ".join(sorted(known))
        raise InputError(
            f"{path}: instrument {instrument!r} is not supported (supported: {supported})"
        )
    detector = str(header.get("DETECTOR", "") or "").strip().upper()
    if detector not in known[instrument]:
        names = ", ".join(known[instrument])
        raise InputError(
            f"{path}: {instrument} detector {detector or '(none)'!r} is not supported "
            f"(known: {names})"
        )
    return instrument, detector


def make_exposure(
    rootname: str,
    flt: Path | None,
    flc: Path | None,
    memtype: str | None = None,
    check_rootname: bool = False,
    registry: Registry = REGISTRY,
) -> Exposure:
    """Build an Exposure from the primary header of its FLT (else FLC).

    When both exist they must describe the same exposure (same ROOTNAME, instrument and
    detector): FLT and FLC are updated in step, so a stray sibling would get the wrong WCS.
    With ``check_rootname`` (ASN members) a ROOTNAME other than ``rootname`` is warned about.
    """
    first = flt if flt is not None else flc
    if first is None:
        raise InputError(f"{rootname}: no FLT or FLC file")
    header = read_primary_header(first)
    if check_rootname:
        header_root = str(header.get("ROOTNAME", "") or "").strip().lower()
        if header_root and header_root != rootname:
            log.warning(
                "%s: ROOTNAME %s does not match ASN member %s", first.name, header_root, rootname
            )
    instrument, detector = _instrument_detector(header, first, registry)
    if flt is not None and flc is not None:
        other = read_primary_header(flc)
        other_inst, other_det = _instrument_detector(other, flc, registry)
        root_a = str(header.get("ROOTNAME", "") or "").strip().lower()
        root_b = str(other.get("ROOTNAME", "") or "").strip().lower()
        if (instrument, detector) != (other_inst, other_det) or (
            root_a and root_b and root_a != root_b
        ):
            raise InputError(
                f"{flt.name} (ROOTNAME {root_a or '?'}, {instrument}/{detector}) and "
                f"{flc.name} (ROOTNAME {root_b or '?'}, {other_inst}/{other_det}) are not the "
                "same exposure; FLT and FLC are updated together, so move the one that does not "
                "belong out of the folder"
            )
    drizcorr = str(header.get("DRIZCORR", "") or "").strip().upper()
    if not drizcorr:
        log.warning("%s has no DRIZCORR keyword; assuming PERFORM", first.name)
        drizcorr = "PERFORM"
    try:
        exptime = float(header.get("EXPTIME", 0.0) or 0.0)
    except (TypeError, ValueError):
        exptime = 0.0
    if drizcorr != "OMIT":
        # Checked only when something will be drizzled: DRIZCORR=OMIT must stay a clean exit 5.
        # EXPTIME and the rest of the headers are checked (or the member dropped) by
        # autodriz.validate once all members are known.
        for path in (flt, flc):
            if path is not None:
                _check_exposure_file(path)
    return Exposure(
        rootname=rootname,
        flt=flt,
        flc=flc,
        instrument=instrument,
        detector=detector,
        filters=_filters_from_header(header, instrument),
        exptime=exptime,
        obstype=str(header.get("OBSTYPE", "") or "").strip().upper(),
        drizcorr=drizcorr,
        memtype=memtype,
        idctab=none_if_na(header.get("IDCTAB")),
        npolfile=none_if_na(header.get("NPOLFILE")),
        d2imfile=none_if_na(header.get("D2IMFILE")),
        mdriztab=none_if_na(header.get("MDRIZTAB")),
        not_alignable=screen_for_alignment(header).reasons,
    )


def calibrated_files(directory: Path, root: str) -> tuple[Path | None, Path | None]:
    """Existing ``(flt, flc)`` for ``root`` in ``directory``; a WFPC2 ``_c0m`` member is refused."""
    flt = directory / f"{root}_flt.fits"
    if not flt.is_file():
        c0m = directory / f"{root}_c0m.fits"
        if c0m.is_file():
            raise wfpc2_refusal(c0m.name)
        flt = None
    flc = directory / f"{root}_flc.fits"
    return flt, (flc if flc.is_file() else None)
