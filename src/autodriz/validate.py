"""Check every exposure before any work: extensions, shapes, WCS keywords, times, footprints.

A damaged or foreign exposure otherwise travels through updatewcs, alignment and AstroDrizzle
and ends as a late "drizzle failed" (exit 7), or worse, as a product that silently lacks it or
was drizzled on a degenerate WCS. Everything here reads headers only (array shapes come from
``NAXISn``); no pixel is read.

Two outcomes for a member that cannot be used:

- **dropped with a warning** (:func:`screen`) where the HST pipeline drops it too:
  ``runastrodriz`` drizzles only exposures with ``EXPTIME > 0`` and a positive ``NGOODPIX``
  (``GPIXELS`` for WFPC2) in its first SCI header;
- **refused** (:func:`check_exposures`): each problem is a :class:`Violation` naming the file,
  the extension, the keyword and its value. Problems with WCS keywords end the run with exit 6
  (:class:`~autodriz.errors.WCSStageError`), all others with exit 3
  (:class:`~autodriz.errors.InputError`).
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyError, VerifyWarning
from astropy.time import Time

from autodriz.errors import InputError, WCSStageError
from autodriz.instruments import REGISTRY, Registry

log = logging.getLogger(__name__)

#: Native pixel scale (arcsec, geometric mean of the two axes) per detector, unbinned, from the
#: instrument registry. WFPC2's PC and WF chips differ, so it has a range.
NOMINAL_PIXEL_SCALE_ARCSEC: Mapping[str, tuple[float, float]] = MappingProxyType(
    {r.key: r.nominal_scale_range_arcsec for r in REGISTRY.records}
)

#: A CD matrix whose pixel scale differs from the nominal by more than this factor is not the
#: detector's: distortion and velocity aberration change the scale by a few per cent at most.
PIXEL_SCALE_TOLERANCE = 1.25

#: Members of one association whose footprint centres lie further apart than this (degrees)
#: were not taken in one visit: its pointings share guide stars, so even a mosaic spans a few
#: arcminutes.
VISIT_RADIUS_DEG = 0.25

#: Longest plausible single HST exposure (s); a visibility period is about an hour.
MAX_EXPTIME_S = 1.0e5

#: First HST science exposure (launch 1990-04-24), as MJD; and a ceiling far beyond the mission.
_HST_FIRST_MJD = 48000.0
_HST_LAST_MJD = 70000.0


#: BITPIX a DQ array may have: AstroDrizzle writes its cosmic-ray flag, bit 4096, into it.
_DQ_BITPIX = (16, 32)
_FLOAT_BITPIX = (-32, -64)

_WCS_KEYWORDS = ("CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2")
_SIP_COEFFICIENT = re.compile(r"^[AB]P?_\d+_\d+$")


@dataclass(frozen=True)
class Extension:
    """What validation needs of one extension: its name, version, header and array shape."""

    name: str
    ver: int
    header: fits.Header
    shape: tuple[int, ...]
    bitpix: int

    @property
    def label(self) -> str:
        """``SCI,1``-style name used in messages."""
        return f"{self.name},{self.ver}"


@dataclass(frozen=True)
class ExposureHeaders:
    """The headers of one calibrated exposure file."""

    path: Path
    primary: fits.Header
    extensions: tuple[Extension, ...]

    def get(self, name: str, ver: int) -> Extension | None:
        """The extension ``name,ver``, or None."""
        return next((e for e in self.extensions if e.name == name and e.ver == ver), None)

    @property
    def sci(self) -> tuple[Extension, ...]:
        """The SCI extensions, in file order."""
        return tuple(e for e in self.extensions if e.name == "SCI")


@dataclass(frozen=True)
class Violation:
    """One reason an exposure cannot be used.

    ``wcs`` marks problems with WCS keywords (exit 6); the others are input errors (exit 3).
    """

    path: Path
    extension: str
    keyword: str
    value: object
    problem: str
    wcs: bool = False

    def message(self) -> str:
        """One line naming file, extension, keyword and value."""
        if self.keyword == "EXTNAME":
            return f"{self.path.name}[{self.extension}]: extension missing (EXTNAME = {self.value!r}): {self.problem}"
        value = "missing" if self.value is _MISSING else f"= {self.value!r}"
        return f"{self.path.name}[{self.extension}] {self.keyword} {value}: {self.problem}"


class _Missing:
    def __repr__(self) -> str:
        return "missing"


#: Marks a keyword that is absent (as opposed to present with a bad value).
_MISSING = _Missing()


# --------------------------------------------------------------------------------------------
# reading (the only I/O here)


def _shape(header: fits.Header) -> tuple[int, ...]:
    """Array shape from the header; HST constant-value extensions (NAXIS=0, NPIXn) count too."""
    naxis = int(header.get("NAXIS", 0) or 0)
    if naxis:
        return tuple(int(header.get(f"NAXIS{i}", 0) or 0) for i in range(naxis, 0, -1))
    if "NPIX1" in header and "NPIX2" in header:
        return (int(header["NPIX2"]), int(header["NPIX1"]))
    return ()


#: Prefix of the text that :func:`parsable_header` puts in place of an unparsable card's value.
UNPARSABLE = "unparsable: "


def parsable_header(header: fits.Header) -> fits.Header:
    """A copy of ``header`` whose unparsable cards (``CRVAL1 = NAN``, a bare ``INF``) carry their
    raw text as a string value, so that the checks name the keyword instead of astropy raising
    ``VerifyError`` at the first access (or "fixing" the card behind a warning)."""
    out = header.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, card in enumerate(out.cards):
            raw = str(getattr(card, "_image", "") or "")[10:].split("/", 1)[0].strip()
            try:
                card.value  # noqa: B018 (parsing is the point)
            except (VerifyError, VerifyWarning, ValueError):
                out[i] = f"{UNPARSABLE}{raw[:60]}"
    return out


def read_headers(path: Path) -> ExposureHeaders:
    """Read every header of ``path`` (no pixel data).

    Raises
    ------
    InputError
        The file cannot be read as FITS.
    """
    try:
        with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
            extensions = []
            for index, hdu in enumerate(hdul):
                if index == 0:
                    continue
                header = parsable_header(hdu.header)
                name = str(header.get("EXTNAME", "") or "").strip().upper()
                extensions.append(Extension(
                    name=name or f"#{index}",
                    ver=int(header.get("EXTVER", 1) or 1),
                    header=header.copy(),
                    shape=_shape(header),
                    bitpix=int(header.get("BITPIX", 0) or 0),
                ))
            return ExposureHeaders(path, parsable_header(hdul[0].header), tuple(extensions))
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise InputError(f"{path} is not a readable FITS file ({exc})") from exc


# --------------------------------------------------------------------------------------------
# screening: members the pipeline drops


def screen(headers: ExposureHeaders, instrument: str) -> str | None:
    """Why ``runastrodriz`` would leave this exposure out of the drizzle, or None to keep it.

    Parameters
    ----------
    headers : ExposureHeaders
        The exposure's headers.
    instrument : str
        ``INSTRUME`` (WFPC2 counts good pixels in ``GPIXELS``, the others in ``NGOODPIX``).

    Returns
    -------
    str or None
        ``"EXPTIME = 0.0"``-style reason naming the keyword and value, or None.
    """
    exptime = _number(headers.primary.get("EXPTIME"))
    if exptime is not None and math.isfinite(exptime) and exptime <= 0.0:
        return f"EXPTIME = {exptime!r} (nothing to scale to a rate)"
    key = "GPIXELS" if instrument == "WFPC2" else "NGOODPIX"
    sci = headers.sci
    counts = [_number(e.header.get(key)) for e in sci]
    if sci and all(c is not None and math.isfinite(c) for c in counts) and sum(counts) <= 0:  # type: ignore[arg-type]
        listing = ", ".join(f"{e.label} {key} = {int(c)}" for e, c in zip(sci, counts, strict=True))  # type: ignore[arg-type]
        return f"no good pixels ({listing})"
    return None


# --------------------------------------------------------------------------------------------
# checks of one exposure


def _number(value: object) -> float | None:
    """Header value as float, None when it is not a number (booleans are not numbers)."""
    if value is None or isinstance(value, bool | str | bytes):
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def check_structure(headers: ExposureHeaders, instrument: str, registry: Registry = REGISTRY) -> list[Violation]:
    """SCI per chip, with ERR and DQ of the same shape where the instrument has them.

    Returns
    -------
    list of Violation
    """
    path = headers.path
    found = [e.label for e in headers.extensions]
    sci = headers.sci
    if not sci:
        return [Violation(
            path, "SCI", "EXTNAME", "SCI",
            f"a calibrated exposure has one SCI per chip (extensions found: {', '.join(found) or 'none'})",
        )]
    out = []
    for s in sci:
        if len(s.shape) != 2 or min(s.shape) < 1:
            out.append(Violation(path, s.label, "NAXIS", s.header.get("NAXIS"),
                                 f"SCI is not a 2-D image (shape {s.shape})"))
            continue
        if s.bitpix not in _FLOAT_BITPIX:
            out.append(Violation(path, s.label, "BITPIX", s.bitpix,
                                 "calibrated SCI arrays are floating point (BITPIX -32 or -64)"))
        # WFPC2's C0M has no ERR/DQ beside SCI: its DQ is the separate C1M file.
        if not any(r.err_dq_extensions for r in registry.records if r.instrument == instrument):
            continue
        for name in ("ERR", "DQ"):
            companion = headers.get(name, s.ver)
            if companion is None:
                out.append(Violation(
                    path, f"{name},{s.ver}", "EXTNAME", name,
                    f"{instrument} calibrated files have {name} beside every SCI "
                    f"(extensions found: {', '.join(found)})",
                ))
                continue
            if companion.shape != s.shape:
                out.append(Violation(
                    path, companion.label, "NAXIS1 x NAXIS2",
                    "x".join(map(str, companion.shape[::-1])) or "none",
                    f"differs from {s.label}'s {s.shape[1]}x{s.shape[0]}",
                ))
            if name == "DQ" and companion.bitpix not in _DQ_BITPIX:
                out.append(Violation(
                    path, companion.label, "BITPIX", companion.bitpix,
                    "DQ must be 16- or 32-bit integers (AstroDrizzle writes its cosmic-ray flag 4096 into it)",
                ))
            if name == "ERR" and companion.shape and companion.bitpix not in _FLOAT_BITPIX:
                out.append(Violation(path, companion.label, "BITPIX", companion.bitpix,
                                     "calibrated ERR arrays are floating point (BITPIX -32 or -64)"))
    return out


#: Keywords whose unparsable value a more specific check names (times: exit 3, WCS: exit 6).
_CHECKED_ELSEWHERE = frozenset({*_WCS_KEYWORDS, "CTYPE1", "CTYPE2", "EXPTIME", "EXPSTART", "DATE-OBS"})


def check_cards(headers: ExposureHeaders) -> list[Violation]:
    """Cards astropy cannot parse (``EXPEND = NAN``, a bare ``INF``), in any header.

    The checks here read them through :func:`parsable_header`, but updatewcs, AstroDrizzle and
    astropy itself raise on the first access to one, deep inside a stage (an internal error);
    refused here, the message names the keyword. Keywords that another check names are left to it.

    Returns
    -------
    list of Violation
    """
    out = []
    for label, header in (("PRIMARY", headers.primary), *((e.label, e.header) for e in headers.extensions)):
        for key, value in header.items():
            if isinstance(value, str) and value.startswith(UNPARSABLE) and key not in _CHECKED_ELSEWHERE:
                out.append(Violation(headers.path, label, key, value[len(UNPARSABLE):],
                                     "unparsable card (not a FITS value: bare NaN/INF, a malformed number or string)"))
    return out


def _binning(header: fits.Header) -> float:
    """Geometric-mean on-chip binning (BINAXISn, 1 when absent)."""
    b1 = _number(header.get("BINAXIS1")) or 1.0
    b2 = _number(header.get("BINAXIS2")) or 1.0
    return math.sqrt(b1 * b2) if b1 > 0 and b2 > 0 else 1.0


def pixel_scale_arcsec(header: fits.Header) -> float:
    """Pixel scale of a header's CD matrix, arcsec (sqrt of |det CD|); NaN when incomplete."""
    cd = [_number(header.get(k)) for k in ("CD1_1", "CD1_2", "CD2_1", "CD2_2")]
    if any(v is None for v in cd):
        return math.nan
    c11, c12, c21, c22 = cd  # type: ignore[misc]
    return math.sqrt(abs(c11 * c22 - c12 * c21)) * 3600.0


def check_wcs(headers: ExposureHeaders, instrument_key: str, registry: Registry = REGISTRY) -> list[Violation]:
    """Every SCI's WCS keywords: present, finite, a non-singular CD of the detector's scale,
    CTYPEs of one celestial TAN projection, SIP coefficients if and only if ``-SIP``.

    Returns
    -------
    list of Violation
        All marked ``wcs=True``.
    """
    path = headers.path
    out: list[Violation] = []

    def bad(ext: Extension, key: str, value: object, problem: str) -> None:
        out.append(Violation(path, ext.label, key, value, problem, wcs=True))

    for s in headers.sci:
        h = s.header
        complete = True
        for key in _WCS_KEYWORDS:
            if key not in h:
                # Read as 0 by WCS software: a missing CD element makes a wrong, not an absent, WCS.
                bad(s, key, _MISSING, "a calibrated exposure's SCI header has CRPIXn, CRVALn and all four CDi_j "
                    "(WCS software would read a missing one as 0)")
                complete = False
                continue
            value = _number(h[key])
            if value is None or not math.isfinite(value):
                bad(s, key, h[key], "not a finite number")
                complete = False
        ctypes = []
        for key, axis in (("CTYPE1", "RA--"), ("CTYPE2", "DEC-")):
            value = h.get(key)
            if value is None:
                bad(s, key, _MISSING, f"needed for a celestial WCS ({axis}…)")
                complete = False
            elif not str(value).upper().startswith(axis):
                bad(s, key, value, f"expected a celestial axis {axis}… (RA first, Dec second)")
                complete = False
            ctypes.append(str(value or "").upper())
        if len(ctypes) == 2 and all(ctypes):
            proj1, proj2 = (c[4:].lstrip("-") for c in ctypes)
            if complete and proj1 != proj2:
                bad(s, "CTYPE2", h.get("CTYPE2"), f"projection differs from CTYPE1 = {h.get('CTYPE1')!r}")
            elif complete and not proj1.startswith("TAN"):
                bad(s, "CTYPE1", h.get("CTYPE1"), "HST exposures use the TAN projection (TAN or TAN-SIP)")
            sip_ctype = all(c.endswith("-SIP") for c in ctypes)
            sip_keys = sorted(k for k in h if k in ("A_ORDER", "B_ORDER") or _SIP_COEFFICIENT.match(k))
            if sip_keys and not any(c.endswith("-SIP") for c in ctypes):
                order = "A_ORDER" if "A_ORDER" in h else sip_keys[0]
                bad(s, "CTYPE1", h.get("CTYPE1"),
                    f"no -SIP, but SIP distortion coefficients are present ({order} = {h[order]!r}, "
                    f"{len(sip_keys)} keywords): WCS software would ignore the distortion")
            elif sip_ctype and not ("A_ORDER" in h and "B_ORDER" in h):
                bad(s, "A_ORDER", h.get("A_ORDER", _MISSING),
                    f"CTYPE1 = {h.get('CTYPE1')!r} declares SIP distortion but A_ORDER/B_ORDER are missing")
        if not complete:
            continue
        crval2 = float(h["CRVAL2"])
        if not -90.0 <= crval2 <= 90.0:
            bad(s, "CRVAL2", h["CRVAL2"], "a declination must lie within [-90, 90] deg")
        cd = np.array([[h["CD1_1"], h["CD1_2"]], [h["CD2_1"], h["CD2_2"]]], dtype=float)
        det = float(np.linalg.det(cd))
        scale = math.sqrt(abs(det)) * 3600.0
        cd_text = ", ".join(f"{k} = {h[k]!r}" for k in ("CD1_1", "CD1_2", "CD2_1", "CD2_2"))
        # Relative to the elements' size: rows that are multiples of each other leave a rounding
        # residue, not an exact 0.
        if abs(det) <= 1e-9 * float(np.sum(cd**2)):
            bad(s, "CD", cd_text, f"the CD matrix is singular (determinant {det:.3g})")
            continue
        record = registry.find(instrument_key)
        nominal = record.nominal_scale_range_arcsec if record is not None else None
        if nominal is not None:
            binning = _binning(h)
            low = nominal[0] * binning / PIXEL_SCALE_TOLERANCE
            high = nominal[1] * binning * PIXEL_SCALE_TOLERANCE
            if not low <= scale <= high:
                bad(s, "CD", cd_text,
                    f"pixel scale {scale:.4g}\"/px; {instrument_key} pixels are "
                    f"{'–'.join(f'{v:g}' for v in sorted(set(nominal)))}\"" + (f" (binned {binning:g})" if binning != 1 else "")
                    + f" (accepted {low:.4g}–{high:.4g}\")")
    return out


def _parse_date(value: object) -> Time | None:
    try:
        return Time(str(value).strip(), format="isot" if "T" in str(value) else "iso", scale="utc")
    except ValueError:
        try:
            return Time(f"{str(value).strip()}T00:00:00", format="isot", scale="utc")
        except ValueError:
            return None


def check_times(headers: ExposureHeaders) -> list[Violation]:
    """EXPTIME, DATE-OBS and EXPSTART present and plausible for an HST exposure.

    An ``EXPTIME`` of 0 or less is not checked here: :func:`screen` drops such members.

    Returns
    -------
    list of Violation
    """
    path, h = headers.path, headers.primary
    out = []
    if "EXPTIME" not in h:
        out.append(Violation(path, "PRIMARY", "EXPTIME", _MISSING, "AstroDrizzle scales every exposure by it"))
    else:
        exptime = _number(h["EXPTIME"])
        if exptime is None or not math.isfinite(exptime):
            out.append(Violation(path, "PRIMARY", "EXPTIME", h["EXPTIME"], "not a finite number of seconds"))
        elif exptime > MAX_EXPTIME_S:
            out.append(Violation(path, "PRIMARY", "EXPTIME", h["EXPTIME"],
                                 f"not an HST exposure time (a single exposure lasts less than {MAX_EXPTIME_S:g} s)"))
    start: Time | None = None
    if "EXPSTART" not in h:
        out.append(Violation(path, "PRIMARY", "EXPSTART", _MISSING, "the exposure's start time (MJD) is needed"))
    else:
        mjd = _number(h["EXPSTART"])
        if mjd is None or not math.isfinite(mjd) or not _HST_FIRST_MJD <= mjd <= _HST_LAST_MJD:
            out.append(Violation(path, "PRIMARY", "EXPSTART", h["EXPSTART"],
                                 f"not an MJD within HST's lifetime ({_HST_FIRST_MJD:g}–{_HST_LAST_MJD:g})"))
        else:
            start = Time(mjd, format="mjd", scale="utc")
            end = _number(h.get("EXPEND"))
            if end is not None and math.isfinite(end) and end < mjd:
                out.append(Violation(path, "PRIMARY", "EXPEND", h["EXPEND"], f"before EXPSTART = {h['EXPSTART']!r}"))
    if "DATE-OBS" not in h:
        out.append(Violation(path, "PRIMARY", "DATE-OBS", _MISSING, "the observation date is needed"))
    else:
        date = _parse_date(h["DATE-OBS"])
        if date is None:
            out.append(Violation(path, "PRIMARY", "DATE-OBS", h["DATE-OBS"], "not a date (YYYY-MM-DD)"))
        elif start is not None and abs(date.mjd - start.mjd) > 1.5:
            out.append(Violation(path, "PRIMARY", "DATE-OBS", h["DATE-OBS"],
                                 f"does not agree with EXPSTART = {h['EXPSTART']!r} ({start.isot[:10]})"))
    return out


# --------------------------------------------------------------------------------------------
# checks across members


def _unit_vector(ra_deg: float, dec_deg: float) -> np.ndarray:
    ra, dec = math.radians(ra_deg), math.radians(dec_deg)
    return np.array([math.cos(dec) * math.cos(ra), math.cos(dec) * math.sin(ra), math.sin(dec)])


def footprint_centre(headers: ExposureHeaders) -> tuple[float, float] | None:
    """Sky position (RA, Dec deg) of the centre of the exposure's chips, from their linear WCS.

    Returns None when a chip's WCS keywords are incomplete (reported by :func:`check_wcs`).
    """
    vectors = []
    for s in headers.sci:
        h = s.header
        values = [_number(h.get(k)) for k in _WCS_KEYWORDS]
        if any(v is None or not math.isfinite(v) for v in values) or len(s.shape) != 2:
            return None
        crpix1, crpix2, crval1, crval2, c11, c12, c21, c22 = values  # type: ignore[misc]
        # Offset of the chip centre from CRPIX, in the tangent plane (deg), then deprojected.
        dx, dy = (s.shape[1] + 1) / 2.0 - crpix1, (s.shape[0] + 1) / 2.0 - crpix2
        xi, eta = math.radians(c11 * dx + c12 * dy), math.radians(c21 * dx + c22 * dy)
        ra0, dec0 = math.radians(crval1), math.radians(crval2)
        denom = math.cos(dec0) - eta * math.sin(dec0)
        ra = ra0 + math.atan2(xi, denom)
        dec = math.atan2(math.sin(dec0) + eta * math.cos(dec0), math.hypot(xi, denom))
        vectors.append(_unit_vector(math.degrees(ra), math.degrees(dec)))
    if not vectors:
        return None
    mean = np.mean(vectors, axis=0)
    return (math.degrees(math.atan2(mean[1], mean[0])) % 360.0,
            math.degrees(math.atan2(mean[2], math.hypot(mean[0], mean[1]))))


def separation_deg(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Angle between two sky positions (RA, Dec in deg), degrees."""
    cos = float(np.dot(_unit_vector(*a), _unit_vector(*b)))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def check_footprints(members: Sequence[ExposureHeaders], radius_deg: float = VISIT_RADIUS_DEG) -> list[Violation]:
    """Members whose footprint centre lies more than ``radius_deg`` from the association's.

    The association's centre is that of the member closest, in median, to all others, so one
    stray member is the one named.

    Returns
    -------
    list of Violation
        Marked ``wcs=True`` (the CRVALs are where the stray position comes from).
    """
    centres = [(m, footprint_centre(m)) for m in members]
    known = [(m, c) for m, c in centres if c is not None]
    if len(known) < 2:
        return []
    medians = [float(np.median([separation_deg(c, o) for _, o in known])) for _, c in known]
    anchor, anchor_centre = known[int(np.argmin(medians))]
    out = []
    for m, c in known:
        distance = separation_deg(c, anchor_centre)
        if distance > radius_deg:
            sci = m.sci[0]
            out.append(Violation(
                m.path, sci.label, "CRVAL1, CRVAL2", (sci.header["CRVAL1"], sci.header["CRVAL2"]),
                f"its footprint is centred {distance:.3g} deg from {anchor.path.name}'s "
                f"(RA {anchor_centre[0]:.4f}, Dec {anchor_centre[1]:.4f}); the exposures of one "
                f"association lie within {radius_deg:g} deg of each other",
                wcs=True,
            ))
    return out


def check_exposures(
    members: Sequence[ExposureHeaders], instrument: str, instrument_key: str, registry: Registry = REGISTRY
) -> list[Violation]:
    """Every check of this module on the members of one dataset, in a stable order.

    Structure and times first, then WCS keywords; the footprints are compared only when every
    member's WCS passed (a broken WCS would also be far away).

    Returns
    -------
    list of Violation
    """
    out: list[Violation] = []
    for m in members:
        out += check_structure(m, instrument, registry)
        out += check_times(m)
        out += check_cards(m)
    wcs: list[Violation] = []
    for m in members:
        wcs += check_wcs(m, instrument_key, registry)
    if not wcs:
        wcs = check_footprints(members)
    return out + wcs


def raise_for(violations: Sequence[Violation]) -> None:
    """Raise the error for the first violation; the rest go to the trailer.

    Raises
    ------
    InputError
        A non-WCS problem comes first (exit 3).
    WCSStageError
        The first problem is with WCS keywords (exit 6).
    """
    if not violations:
        return
    for v in violations[1:]:
        log.debug("input check: %s", v.message())
    first = violations[0]
    more = f" (and {len(violations) - 1} more problem(s), listed in the trailer)" if len(violations) > 1 else ""
    error = WCSStageError if first.wcs else InputError
    raise error(f"{first.message()}{more}; checked before any work, nothing was written")
