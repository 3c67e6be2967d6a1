"""Resolve what the user named (ASN table, RAW name, FLT or FLC) into calibrated exposures.

This module is pure: it reads FITS headers and association tables and never writes (no pixel
is read). Everything the rest of the pipeline needs to know about the input (which files, which
instrument and detector, which filters, whether drizzling was requested, what the products will
be called) ends up in one frozen :class:`Dataset`. Unless DRIZCORR is OMIT, every member is
screened and checked here by :mod:`autodriz.validate`, before any work starts. The records are
defined in :mod:`autodriz.dataset`; one exposure's files and headers are read by
:mod:`autodriz.exposurefiles`.

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
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

from astropy.io import fits

from autodriz.dataset import Dataset, Exposure
from autodriz.errors import InputError
from autodriz.exposurefiles import (
    calibrated_files,
    make_exposure,
    none_if_na,
    read_primary_header,
    wfpc2_refusal,
)
from autodriz.instruments import REGISTRY, Registry
from autodriz.validate import (
    check_exposures,
    raise_for,
    read_headers,
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


#: Calibration pipelines of instruments the registry does not list, named in error messages
#: (a STIS RAW is recognised only to say what would calibrate it).
_OTHER_CALIBRATION_PIPELINES: Mapping[str, str] = MappingProxyType({"STIS": "calstis"})

_SUFFIX_KIND: Mapping[str, str] = MappingProxyType({
    "_asn.fits": "asn",
    "_raw.fits": "raw",
    "_flt.fits": "flt",
    "_flc.fits": "flc",
})

# An ASN MEMNAME must be a plain rootname: a path (``../x``, ``/abs/x``) would make autodriz read
# and later rewrite files outside the dataset folder.
# Bounded: HST rootnames have 9 characters, and a name longer than the file system allows
# would otherwise be an OSError ("File name too long") while looking for its files.
_PLAIN_ROOTNAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


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
    header = read_primary_header(path)
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
    asn_built = none_if_na(header.get("ASNBUILT"))
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
        flt, flc = calibrated_files(directory, name)
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
        make_exposure(name, flt, flc, mtype, check_rootname=True, registry=registry)
        for name, flt, flc, mtype in exposures_files
    ]
    return _assemble(path, "asn", root, exposures, not_present, asn_built, registry)


def _resolve_raw(path: Path, registry: Registry = REGISTRY) -> Dataset:
    """Resolve a RAW name to the calibrated exposure beside it."""
    root = path.name[: -len("_raw.fits")].lower()
    flt, flc = calibrated_files(path.parent, root)
    if flt is None and flc is None:
        if not path.is_file():
            raise InputError(
                f"input file not found: {path} (nor {root}_flt.fits / {root}_flc.fits beside it)"
            )
        try:
            header = read_primary_header(path)
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
    return _assemble(path, "raw", root, [make_exposure(root, flt, flc, registry=registry)], registry=registry)


def _resolve_single(path: Path, kind: str, suffix: str, registry: Registry = REGISTRY) -> Dataset:
    """Resolve one FLT/FLC, picking up its sibling."""
    if not path.is_file():
        raise InputError(f"input file not found: {path}")
    # Product naming follows the file name, not ROOTNAME: renamed files keep their new names.
    root = path.name[: -len(suffix)].lower()
    flt, flc = calibrated_files(path.parent, root)
    # The named file is used as written (its case may differ from the lower-case sibling names).
    if kind == "flc":
        flc = path
    else:
        flt = path
    return _assemble(path, kind, root, [make_exposure(root, flt, flc, registry=registry)], registry=registry)


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
