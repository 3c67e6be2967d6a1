"""What an input resolves to: a :class:`Dataset` of :class:`Exposure` records (frozen, no I/O).

:func:`autodriz.inputs.resolve_input` builds them; the rest of the pipeline reads them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

# Grisms (G141, G102, G280, G800L) and prisms (PR110L, PR130L, PR200L).
_DISPERSER = re.compile(r"^(G\d{3,4}[A-Z]?|PR\d{3}[A-Z]?)$")


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
