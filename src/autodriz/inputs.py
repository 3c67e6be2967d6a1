"""Resolve what the user named (ASN table, RAW name, FLT or FLC) into calibrated exposures.

This module is pure: it reads FITS headers and association tables and never writes (no pixel
is read). Everything the rest of the pipeline needs to know about the input (which files, which
instrument and detector, which filters, whether drizzling was requested, what the products will
be called) ends up in one frozen :class:`Dataset`. Unless DRIZCORR is OMIT, every member is
screened and checked here by :mod:`autodriz.validate`, before any work starts.

Input forms
-----------
``<asn_id>_asn.fits``
    Association table. ``EXP-*`` rows are exposures, whose calibrated files are
    ``<memname lower>_flt.fits`` / ``_flc.fits`` beside the table; the
    product root follows :func:`stsci.tools.asnutil.readASNTable`: first ``PROD-DTH``, else
    ``PROD-RPT``, else ``PROD-CRJ``, else the table's file name stem.
``<root>_raw.fits``
    A RAW name: the calibrated ``<root>_flc.fits`` / ``<root>_flt.fits`` beside it are used. The
    RAW file need not exist when they do.
``<root>_flt.fits`` / ``<root>_flc.fits``
    A single calibrated exposure; its sibling FLT/FLC is picked up as well. The product root is
    the file-name stem, not the ROOTNAME keyword (files are often renamed).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from astropy.io import fits

from autodriz.errors import InputError, WFPC2UnsupportedError
from autodriz.instruments import REGISTRY, Registry
from autodriz.screening import screen_for_alignment
from autodriz.validate import (
    check_exposures,
    parsable_header,
    raise_for,
    read_headers,
    read_layout,
    screen,
)

log = logging.getLogger(__name__)

#: Detectors we know how to drizzle, per instrument (primary-header DETECTOR values), from the
#: instrument registry.
KNOWN_DETECTORS: Mapping[str, tuple[str, ...]] = REGISTRY.supported_detectors()

#: WFPC2 file suffixes (calibrated C0M/C1M, waiver-FITS C0F/C1F, raw D0M/D0F, converted
#: C0H/C1H): refused by name, before anything is read.
_WFPC2_SUFFIXES = ("_c0m.fits", "_c1m.fits", "_c0f.fits", "_c1f.fits", "_d0m.fits", "_d0f.fits",
                   "_c0h.fits", "_c1h.fits")


def wfpc2_refusal(name: str) -> WFPC2UnsupportedError:
    """The one-line refusal of WFPC2 data (exit ``WFPC2_UNSUPPORTED``), naming the file."""
    return WFPC2UnsupportedError(
        f"{name}: WFPC2 data are not supported by autodriz (C0M+C1M pairs, uref$ distortion "
        "files, per-chip PC/WF scales and photeq are not implemented); use drizzlepac's "
        "runastrodriz for WFPC2"
    )

#: Calibration pipelines of instruments the registry does not list, named in error messages
#: (a STIS RAW is recognised only to say what would calibrate it).
_OTHER_CALIBRATION_PIPELINES: Mapping[str, str] = MappingProxyType({"STIS": "calstis"})

_SUFFIX_KIND: Mapping[str, str] = MappingProxyType({
    "_asn.fits": "asn",
    "_raw.fits": "raw",
    "_flt.fits": "flt",
    "_flc.fits": "flc",
})

# Filter-wheel positions that are not filters: dropped from Exposure.filters.
_NOT_A_FILTER = re.compile(r"^(CLEAR.*|N/A|NONE|BLANK|)$")
# An ASN MEMNAME must be a plain rootname: a path (``../x``, ``/abs/x``) would make autodriz read
# and later rewrite files outside the dataset folder.
# Bounded: HST rootnames have 9 characters, and a name longer than the file system allows
# would otherwise be an OSError ("File name too long") while looking for its files.
_PLAIN_ROOTNAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# Grisms (G141, G102, G280, G800L) and prisms (PR110L, PR130L, PR200L).
_DISPERSER = re.compile(r"^(G\d{3,4}[A-Z]?|PR\d{3}[A-Z]?)$")


def _none_if_na(value: object) -> str | None:
    """Header reference-file value as written, with ``N/A``/blank/absent mapped to None."""
    if value is None:
        return None
    text = str(value).strip()
    if not text or text.upper() in ("N/A", "NONE"):
        return None
    return text


@dataclass(frozen=True)
class Exposure:
    """One calibrated exposure: its FLT and/or FLC and the primary-header facts we use.

    ``rootname`` is the ASN member name (lower-case) for association input, or the file-name
    stem for single-exposure input.
    """

    rootname: str
    flt: Path | None
    flc: Path | None
    instrument: str
    detector: str
    filters: tuple[str, ...]
    exptime: float
    obstype: str
    drizcorr: str
    memtype: str | None = None
    idctab: str | None = None
    npolfile: str | None = None
    d2imfile: str | None = None
    mdriztab: str | None = None
    #: Why the exposure cannot be aligned (:func:`autodriz.screening.screen_for_alignment`):
    #: it is drizzled but left out of source detection and fitting. Empty: it can be.
    not_alignable: tuple[str, ...] = ()

    @property
    def paths(self) -> tuple[Path, ...]:
        """FLT and FLC of this exposure, those that exist, FLT first."""
        return tuple(p for p in (self.flt, self.flc) if p is not None)


@dataclass(frozen=True)
class Dataset:
    """A resolved input: the exposures to process and what the products will be called.

    ``ignored_paths`` lists calibrated files that exist but are deliberately not processed
    (the FLCs of a set where only some exposures have one, the files of dropped members); they
    keep their current WCS, and the report should say so.
    """

    input: Path
    kind: str
    root: str
    directory: Path
    exposures: tuple[Exposure, ...]
    not_present: tuple[str, ...]
    instrument: str
    detector: str
    filters: tuple[str, ...]
    drizcorr: str
    asn_built: str | None = None
    ignored_paths: tuple[Path, ...] = field(default=())
    #: Members left out of the drizzle as the HST pipeline leaves them out (EXPTIME = 0, no good
    #: pixels): ``(rootname, reason)``. Their files are among ``ignored_paths``.
    dropped: tuple[tuple[str, str], ...] = field(default=())

    @property
    def flt_paths(self) -> tuple[Path, ...]:
        """FLT files, in member order."""
        return tuple(e.flt for e in self.exposures if e.flt is not None)

    @property
    def flc_paths(self) -> tuple[Path, ...]:
        """FLC files, in member order (empty unless every exposure has one)."""
        return tuple(e.flc for e in self.exposures if e.flc is not None)

    @property
    def has_flc(self) -> bool:
        """Every exposure has an FLC: FLT and FLC are processed in step."""
        return bool(self.exposures) and all(e.flc is not None for e in self.exposures)

    @property
    def has_flt(self) -> bool:
        """Every exposure has an FLT (false only for FLC-only input)."""
        return bool(self.exposures) and all(e.flt is not None for e in self.exposures)

    @property
    def drz_name(self) -> str:
        """Name of the drizzled product made from the FLTs."""
        return f"{self.root}_drz.fits"

    @property
    def drc_name(self) -> str | None:
        """Name of the drizzled product made from the FLCs, or None without FLCs."""
        return f"{self.root}_drc.fits" if self.has_flc else None

    @property
    def drizzle_requested(self) -> bool:
        """DRIZCORR asks for drizzling (anything but OMIT)."""
        return self.drizcorr.upper() != "OMIT"

    @property
    def is_spectroscopic(self) -> bool:
        """Grism/prism data: OBSTYPE SPECTROSCOPIC or a disperser among the filters."""
        if any(e.obstype.upper().startswith("SPEC") for e in self.exposures):
            return True
        return any(_DISPERSER.match(f) for f in self.filters)

    @property
    def instrument_key(self) -> str:
        """``INSTRUMENT/DETECTOR`` (``ACS/WFC``, ``WFC3/IR`` …)."""
        return f"{self.instrument}/{self.detector}"


# --------------------------------------------------------------------------------------------
# header reading


def _read_primary_header(path: Path) -> fits.Header:
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


def _exposure(
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
    header = _read_primary_header(first)
    if check_rootname:
        header_root = str(header.get("ROOTNAME", "") or "").strip().lower()
        if header_root and header_root != rootname:
            log.warning(
                "%s: ROOTNAME %s does not match ASN member %s", first.name, header_root, rootname
            )
    instrument, detector = _instrument_detector(header, first, registry)
    if flt is not None and flc is not None:
        other = _read_primary_header(flc)
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
        idctab=_none_if_na(header.get("IDCTAB")),
        npolfile=_none_if_na(header.get("NPOLFILE")),
        d2imfile=_none_if_na(header.get("D2IMFILE")),
        mdriztab=_none_if_na(header.get("MDRIZTAB")),
        not_alignable=screen_for_alignment(header).reasons,
    )


def _calibrated_files(directory: Path, root: str) -> tuple[Path | None, Path | None]:
    """Existing ``(flt, flc)`` for ``root`` in ``directory``; a WFPC2 ``_c0m`` member is refused."""
    flt = directory / f"{root}_flt.fits"
    if not flt.is_file():
        c0m = directory / f"{root}_c0m.fits"
        if c0m.is_file():
            raise wfpc2_refusal(c0m.name)
        flt = None
    flc = directory / f"{root}_flc.fits"
    return flt, (flc if flc.is_file() else None)


# --------------------------------------------------------------------------------------------
# dataset assembly


def _keep_in_step(exposures: list[Exposure]) -> tuple[list[Exposure], tuple[Path, ...]]:
    """Drop FLCs (or FLTs) that only some exposures have, so the set is processed uniformly.

    Returns the exposures to process and the existing files that will not be processed.
    """
    with_flc = [e for e in exposures if e.flc is not None]
    with_flt = [e for e in exposures if e.flt is not None]
    if 0 < len(with_flc) < len(exposures):
        lacking = [e.rootname for e in exposures if e.flc is None]
        no_flt = [e.rootname for e in exposures if e.flt is None]
        if no_flt:
            raise InputError(
                f"FLC files exist for only some exposures ({', '.join(lacking)} have none) and "
                f"{', '.join(no_flt)} have no FLT either; provide the missing FLT/FLC files"
            )
        log.warning(
            "FLC files exist for only %d of %d exposures (none for %s): processing FLTs only; "
            "the existing FLCs are left unchanged",
            len(with_flc),
            len(exposures),
            ", ".join(lacking),
        )
        ignored = tuple(e.flc for e in with_flc if e.flc is not None)
        return [replace(e, flc=None) for e in exposures], ignored
    if 0 < len(with_flt) < len(exposures):
        # Every exposure has an FLC (else the branch above), but some lack the FLT.
        lacking = [e.rootname for e in exposures if e.flt is None]
        log.warning(
            "FLT files exist for only %d of %d exposures (none for %s): processing FLCs only; "
            "the existing FLTs are left unchanged",
            len(with_flt),
            len(exposures),
            ", ".join(lacking),
        )
        ignored = tuple(e.flt for e in with_flt if e.flt is not None)
        return [replace(e, flt=None) for e in exposures], ignored
    return exposures, ()


def _screen(path: Path, exposures: list[Exposure]) -> tuple[list[Exposure], tuple[tuple[str, str], ...]]:
    """Drop the members the HST pipeline does not drizzle (EXPTIME = 0, no good pixels), loudly.

    Returns the members kept and ``(rootname, reason)`` of those dropped.

    Raises
    ------
    InputError
        Every member would be dropped.
    """
    kept, dropped = [], []
    for exposure in exposures:
        first = exposure.paths[0]
        reason = screen(read_headers(first), exposure.instrument)
        if reason is None:
            kept.append(exposure)
            continue
        dropped.append((exposure.rootname, reason))
        log.warning(
            "%s: member %s dropped, %s: %s; it is not drizzled and keeps its WCS (runastrodriz drops it too)",
            path.name, exposure.rootname, first.name, reason,
        )
    if not kept:
        raise InputError(
            f"{path.name}: no usable exposures: every member is dropped ("
            + "; ".join(f"{name}: {why}" for name, why in dropped) + ")"
        )
    return kept, tuple(dropped)


def _validate(exposures: list[Exposure], registry: Registry = REGISTRY) -> None:
    """Check every file that will be processed (headers and shapes only) before any work.

    Raises
    ------
    InputError, WCSStageError
        The first problem found, naming file, extension, keyword and value (exit 3; exit 6 for
        WCS keywords).
    """
    first = exposures[0]
    key = f"{first.instrument}/{first.detector}"
    headers = [read_headers(p) for e in exposures for p in e.paths]
    violations = check_exposures(headers, first.instrument, key, registry)
    raise_for(violations)
    log.info("input check: %d file(s) of %s have the extensions, WCS keywords and times a drizzle needs",
             len(headers), key)


def _assemble(
    path: Path,
    kind: str,
    root: str,
    exposures: list[Exposure],
    not_present: Iterable[str] = (),
    asn_built: str | None = None,
    registry: Registry = REGISTRY,
) -> Dataset:
    """Check the exposures agree with each other and build the Dataset."""
    all_exposures = list(exposures)
    keys = {(e.instrument, e.detector) for e in exposures}
    if len(keys) > 1:
        listing = "; ".join(f"{e.rootname}: {e.instrument}/{e.detector}" for e in exposures)
        raise InputError(
            f"{path.name}: members mix instruments/detectors ({listing}); drizzle each "
            "instrument/detector separately"
        )
    # DRIZCORR is read from the first member, as runastrodriz does: it decides whether the
    # members are screened and checked at all (DRIZCORR=OMIT must stay a clean exit 5).
    drizzling = exposures[0].drizcorr.upper() != "OMIT"
    dropped: tuple[tuple[str, str], ...] = ()
    dropped_paths: tuple[Path, ...] = ()
    if drizzling:
        exposures, dropped = _screen(path, exposures)
        dropped_paths = tuple(p for name, _ in dropped for e in all_exposures if e.rootname == name for p in e.paths)
    exposures, ignored = _keep_in_step(exposures)
    if drizzling:
        _validate(exposures, registry)

    filters: list[str] = []
    for exposure in exposures:
        filters.extend(f for f in exposure.filters if f not in filters)
    if len({e.filters for e in exposures}) > 1:
        log.warning(
            "%s: members use different filters (%s); they will be drizzled together",
            path.name,
            ", ".join(f"{e.rootname}: {'/'.join(e.filters) or 'none'}" for e in exposures),
        )

    drizcorr = exposures[0].drizcorr
    disagreeing = [e.rootname for e in exposures if e.drizcorr != drizcorr]
    if disagreeing:
        # runastrodriz reads DRIZCORR from the first member only; do the same, but say so.
        log.warning(
            "%s: DRIZCORR differs between members (%s); using %s from the first member %s",
            path.name,
            ", ".join(f"{e.rootname}={e.drizcorr}" for e in exposures),
            drizcorr,
            exposures[0].rootname,
        )

    dataset = Dataset(
        input=path,
        kind=kind,
        root=root,
        directory=path.parent,
        exposures=tuple(exposures),
        not_present=tuple(not_present),
        instrument=exposures[0].instrument,
        detector=exposures[0].detector,
        filters=tuple(filters),
        drizcorr=drizcorr,
        asn_built=asn_built,
        ignored_paths=ignored + dropped_paths,
        dropped=dropped,
    )
    log.info(
        "resolved %s (%s) → root %s: %d exposure(s) %s, %s %s, DRIZCORR=%s, FLC %s%s",
        path.name,
        kind,
        root,
        len(exposures),
        ", ".join(e.rootname for e in exposures),
        dataset.instrument_key,
        "/".join(dataset.filters) or "no filter",
        drizcorr,
        "yes" if dataset.has_flc else "no",
        ", spectroscopic" if dataset.is_spectroscopic else "",
    )
    return dataset


def _text(value: object) -> str:
    """Table cell as stripped text (FITS string columns may come back as bytes)."""
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    return str(value).strip()


def _present(value: object) -> bool:
    """MEMPRSNT cell as bool (logical column, or 'T'/'F' text in hand-made tables)."""
    if isinstance(value, bytes | str):
        return _text(value).upper() in ("T", "TRUE", "Y", "YES", "1")
    return bool(value)


def _resolve_asn(path: Path, registry: Registry = REGISTRY) -> Dataset:
    """Resolve an association table."""
    header = _read_primary_header(path)
    try:
        with fits.open(path, memmap=False) as hdul:
            if len(hdul) < 2 or not isinstance(hdul[1], fits.BinTableHDU):
                raise InputError(
                    f"{path} has no association table extension (BINTABLE with MEMNAME/MEMTYPE)"
                )
            data = hdul[1].data
            names = {n.upper(): n for n in data.columns.names}
            if "MEMNAME" not in names or "MEMTYPE" not in names:
                raise InputError(
                    f"{path}: the association table lacks the MEMNAME/MEMTYPE columns"
                )
            rows = [
                (
                    _text(row[names["MEMNAME"]]).lower(),
                    _text(row[names["MEMTYPE"]]).upper(),
                    _present(row[names["MEMPRSNT"]]) if "MEMPRSNT" in names else True,
                )
                for row in data
            ]
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: cannot read the association table ({exc})") from exc

    unsafe = [name for name, _, _ in rows if not _PLAIN_ROOTNAME.match(name)]
    if unsafe:
        raise InputError(
            f"{path}: MEMNAME must be a plain rootname (letters, digits, '_', '-'; at most 64), not a path: "
            + ", ".join(repr(n) for n in unsafe)
            + "; autodriz only reads and updates files in the association's own folder"
        )

    directory = path.parent
    asn_built = _none_if_na(header.get("ASNBUILT"))
    if asn_built:
        log.info("%s was built outside the HST archive: %s", path.name, asn_built)

    # Product root as stsci.tools.asnutil.readASNTable chooses it.
    root = None
    for prod_type in ("PROD-DTH", "PROD-RPT", "PROD-CRJ"):
        root = next((name for name, mtype, _ in rows if mtype == prod_type), None)
        if root:
            break
    if not root:
        root = path.name[: -len("_asn.fits")].lower()

    members = [(name, mtype, present) for name, mtype, present in rows if mtype.startswith("EXP")]
    # stsci.tools.asnutil keeps members in a dict by name, so a repeated row counts once there;
    # here too (else the exposure would be checked, drizzled and renamed over as many times), loudly.
    repeated = sorted({name for name, _, _ in members if sum(1 for n, _, _ in members if n == name) > 1})
    if repeated:
        log.warning("%s: member(s) listed more than once, each used once: %s", path.name, ", ".join(repeated))
        members = [m for i, m in enumerate(members) if m[0] not in {n for n, _, _ in members[:i]}]
    not_present = [name for name, _, present in members if not present]
    if not_present:
        log.warning(
            "%s: member(s) %s marked not present (MEMPRSNT=F); skipping them",
            path.name,
            ", ".join(not_present),
        )

    exposures_files = []
    missing = []
    for name, mtype, present in members:
        if not present:
            continue
        flt, flc = _calibrated_files(directory, name)
        if flt is None and flc is None:
            missing.append(name)
        else:
            exposures_files.append((name, flt, flc, mtype))
    if missing:
        raise InputError(
            f"{path.name}: member(s) marked present have no calibrated file in {directory}: "
            + ", ".join(f"{m} (expected {m}_flt.fits or {m}_flc.fits)" for m in missing)
            + "; put them beside the ASN table, or set MEMPRSNT=F for members that are gone"
        )
    if not exposures_files:
        raise InputError(
            f"{path.name}: no usable exposures (EXP-* members present: none"
            + (f"; not present: {', '.join(not_present)}" if not_present else "")
            + ")"
        )

    exposures = [
        _exposure(name, flt, flc, mtype, check_rootname=True, registry=registry)
        for name, flt, flc, mtype in exposures_files
    ]
    return _assemble(path, "asn", root, exposures, not_present, asn_built, registry)


def _resolve_raw(path: Path, registry: Registry = REGISTRY) -> Dataset:
    """Resolve a RAW name to the calibrated exposure beside it."""
    root = path.name[: -len("_raw.fits")].lower()
    flt, flc = _calibrated_files(path.parent, root)
    if flt is None and flc is None:
        if not path.is_file():
            raise InputError(
                f"input file not found: {path} (nor {root}_flt.fits / {root}_flc.fits beside it)"
            )
        try:
            header = _read_primary_header(path)
            instrument = str(header.get("INSTRUME", "") or "").strip().upper()
        except InputError:
            instrument = ""
        program = registry.calibration_pipeline(instrument) or _OTHER_CALIBRATION_PIPELINES.get(instrument)
        if instrument and program:
            how = f"run {program} ({instrument} calibration) first"
        else:
            how = "run the instrument's calibration (calacs for ACS, calwf3 for WFC3) first"
        raise InputError(
            f"{path.name} has no calibrated exposure beside it ({root}_flt.fits / "
            f"{root}_flc.fits not found in {path.parent}): {how}"
        )
    log.info("%s: using calibrated %s", path.name, ", ".join(p.name for p in (flt, flc) if p))
    return _assemble(path, "raw", root, [_exposure(root, flt, flc, registry=registry)], registry=registry)


def _resolve_single(path: Path, kind: str, suffix: str, registry: Registry = REGISTRY) -> Dataset:
    """Resolve one FLT/FLC, picking up its sibling."""
    if not path.is_file():
        raise InputError(f"input file not found: {path}")
    # Product naming follows the file name, not ROOTNAME: renamed files keep their new names.
    root = path.name[: -len(suffix)].lower()
    flt, flc = _calibrated_files(path.parent, root)
    # The named file is used as written (its case may differ from the lower-case sibling names).
    if kind == "flc":
        flc = path
    else:
        flt = path
    return _assemble(path, kind, root, [_exposure(root, flt, flc, registry=registry)], registry=registry)


def resolve_input(path: str | Path, *, registry: Registry = REGISTRY) -> Dataset:
    """Resolve an ASN table, RAW name, FLT or FLC into a :class:`Dataset`.

    Parameters
    ----------
    path : str or Path
        ``<asn_id>_asn.fits``, ``<root>_raw.fits`` (need not exist if its calibrated files do),
        ``<root>_flt.fits`` or ``<root>_flc.fits``.
    registry : Registry, optional
        The instruments/detectors accepted (default: :data:`autodriz.instruments.REGISTRY`).

    Returns
    -------
    Dataset
        The exposures to process (FLT and FLC kept in step), instrument, detector, filters,
        DRIZCORR and product root. DRIZCORR=OMIT is reported, not refused: the caller decides.
        Members with EXPTIME = 0 or no good pixels are dropped with a warning (``dropped``).

    Raises
    ------
    WFPC2UnsupportedError
        WFPC2 data (by file name, or INSTRUME of any member): refused, exit 11.
    InputError
        The input is missing, not FITS, not an HST instrument/detector we support, a RAW with
        no calibrated exposure, an ASN whose present members are missing or that has no usable
        member, members mixing instruments/detectors, an FLT/FLC pair that does not match, or a
        member whose extensions, shapes or times are unusable (:mod:`autodriz.validate`).
    WCSStageError
        A member's WCS keywords are missing, not finite, singular, not of the detector's pixel
        scale, inconsistent (CTYPE and SIP), or place it outside the association's visit.
    """
    path = Path(path).expanduser().absolute()
    lowered = path.name.lower()
    if lowered.endswith(_WFPC2_SUFFIXES) or lowered.endswith(tuple(s + ".gz" for s in _WFPC2_SUFFIXES)):
        raise wfpc2_refusal(path.name)
    for suffix, kind in _SUFFIX_KIND.items():
        if lowered.endswith(suffix):
            break
    else:
        raise InputError(
            f"{path.name}: not an input autodriz understands; give <asn_id>_asn.fits, "
            "<root>_raw.fits, <root>_flt.fits or <root>_flc.fits (uncompressed)"
        )
    if kind == "asn":
        if path.is_dir():
            raise InputError(f"{path} is a folder, not a file; give the association table itself")
        if not path.is_file():
            raise InputError(f"input file not found: {path}")
        return _resolve_asn(path, registry)
    if kind == "raw":
        return _resolve_raw(path, registry)
    return _resolve_single(path, kind, suffix, registry)
