"""Which exposures cannot be aligned: the keyword rules of drizzlepac's ``haputils/analyze.py``.

runastrodriz leaves out of source detection and fitting the exposures whose headers say their
stars are not where a rigid WCS correction would put them: a moving target tracked by HST
(``MTFLAG = T``, the field stars trail), a spatial scan (WFC3 ``SCAN_TYP`` C or D), guiding on
gyros alone or in coarse track (``FGSLOCK``), a guide-star failure (``QUALITY`` holding ``GSFAIL`` or
``TDF-DOWN``, as ``runastrodriz._analyze_exposure`` reads it), charge injection (WFC3/UVIS
``CHINJECT``) and calibration targets (``TARGNAME``). Such an exposure is still drizzled, with
the WCS the fits start from.

Differences from drizzlepac, on purpose: ``FGSLOCK`` with ``GY`` or ``COARSE`` is a warning
there (the exposure is aligned, "the result may be compromised"). Here an exposure without fine
lock (``GYROS``, ``COARSE``: the pointing drifts or jitters) is left out of the fit, since it
would pull a common correction off for the others; ``FINE/GYRO`` (fine lock on one guide star,
roll held by the gyros) is aligned as drizzlepac aligns it: it is common in real data, and the
real WFC3/IR F140W visit of the tests, all ``FINE/GYRO``, aligns to about 12 mas. ``SCAN_TYP`` is
read on any instrument that writes it and every value but ``N`` counts (drizzlepac: WFC3, C/D).
OBSTYPE, DRIZCORR, EXPTIME and blank filters are handled elsewhere (:mod:`autodriz.validate`,
:mod:`autodriz.inputs`).

This module is pure: it looks at a primary header given as a mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Calibration target names (substrings of TARGNAME), as ``analyze.CAL_TARGETS`` (drizzlepac
#: 3.11); a test keeps them equal to drizzlepac's.
CAL_TARGETS: Mapping[str, tuple[str, ...]] = {
    "WFPC2": ("INTFLAT", "UVFLAT", "VISFLAT", "KSPOTS", "DARK", "BIAS", "EARTH-CALIB"),
    "DEFAULT": ("DARK", "TUNG", "BIAS", "FLAT", "DEUT", "EARTH-CAL"),
}
#: FGSLOCK values (substrings) of gyro or coarse-track guiding, as analyze.py tests them; a
#: value starting with FINE (fine lock held) is not excluded.
GYRO_OR_COARSE: tuple[str, ...] = ("GY", "COARSE")
#: QUALITY substrings that runastrodriz takes for a guide-star failure.
GUIDING_FAILURES: tuple[str, ...] = ("GSFAIL", "TDF-DOWN")


@dataclass(frozen=True)
class AlignmentScreen:
    """Why an exposure cannot be aligned (empty: it can).

    Attributes
    ----------
    reasons : tuple of str
        One ``KEYWORD=value (meaning)`` per rule the header trips, in the order of
        :func:`screen_for_alignment`.
    """

    reasons: tuple[str, ...] = ()

    @property
    def alignable(self) -> bool:
        """True when no rule excludes the exposure from source detection and fitting."""
        return not self.reasons


def _text(header: Mapping[str, Any], key: str) -> str:
    value = header.get(key)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "T" if value else "F"
    return str(value).strip().upper()


def screen_for_alignment(header: Mapping[str, Any]) -> AlignmentScreen:
    """Apply analyze.py's "cannot be aligned" keyword rules to one primary header.

    Parameters
    ----------
    header : mapping
        The exposure's primary header (``astropy.io.fits.Header`` or a dict). Missing keywords
        never exclude an exposure.

    Returns
    -------
    AlignmentScreen
        Empty ``reasons`` when the exposure can be aligned.
    """
    instrument = _text(header, "INSTRUME")
    reasons: list[str] = []
    mtflag = _text(header, "MTFLAG")
    if mtflag in ("T", "TRUE"):
        reasons.append(f"MTFLAG={mtflag} (moving target: the field stars trail)")
    scan = _text(header, "SCAN_TYP")
    if scan not in ("", "N", "N/A", "NONE"):
        reasons.append(f"SCAN_TYP={scan} (spatial scan)")
    fgslock = _text(header, "FGSLOCK")
    if any(x in fgslock for x in GYRO_OR_COARSE) and not fgslock.startswith("FINE"):
        reasons.append(f"FGSLOCK={fgslock} (no fine lock: gyro or coarse-track guiding)")
    quality = _text(header, "QUALITY")
    if any(x in quality for x in GUIDING_FAILURES):
        reasons.append(f"QUALITY={quality} (guide-star failure)")
    chinject = _text(header, "CHINJECT")
    if chinject not in ("", "NONE", "N/A"):
        reasons.append(f"CHINJECT={chinject} (charge injection)")
    targname = _text(header, "TARGNAME")
    if instrument == "WFPC2":
        # WFPC2 names its calibration targets only together with IMAGETYP other than EXT.
        if any(x in targname for x in CAL_TARGETS["WFPC2"]) and _text(header, "IMAGETYP") != "EXT":
            reasons.append(f"TARGNAME={targname} (calibration target)")
    elif any(x in targname for x in CAL_TARGETS["DEFAULT"]):
        reasons.append(f"TARGNAME={targname} (calibration target)")
    return AlignmentScreen(tuple(reasons))
