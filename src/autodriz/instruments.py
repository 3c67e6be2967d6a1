"""What autodriz knows about each HST instrument/detector, in one place.

One frozen :class:`InstrumentDetector` record per detector; a :class:`Registry` is an immutable
collection of them with the lookups the rest of autodriz uses:

* :mod:`autodriz.inputs` — which INSTRUME/DETECTOR values are accepted, which are refused, the
  calibration pipeline named in error messages;
* :mod:`autodriz.config` / :mod:`autodriz.cli` — one reference-folder setting, environment
  variable and ``--<prefix>`` flag per reference-file prefix (``jref``, ``iref``, ``uref``), and
  the section of the TOML files a detector reads (:attr:`InstrumentDetector.config_key`);
* :mod:`autodriz.visit` — the native pixel scale of the drizzled products;
* :mod:`autodriz.validate` — the nominal pixel-scale range of a calibrated exposure, and whether
  ERR/DQ sit beside every SCI;
* :mod:`autodriz.verifydriz` — the DQ bits that flag cosmic rays;
* :mod:`autodriz.simulate` — chip layout and full-chip shape, PSF size, pixel scale.

Adding a detector is one record in :data:`REGISTRY`. Code that takes a ``registry`` argument
(``resolve_input``, ``build_parser``, ``astrodrizzle_defaults`` …) can be given another registry,
e.g. ``REGISTRY.with_records(toy)`` in a test: there is no module-level mutable state to patch.

Sources: ACS and WFC3 Instrument Handbooks (pixel scales, chip formats, PSF FWHM), the
calacs/calwf3 DQ definitions (8192: cosmic ray found by the calibration pipeline; 4096: by
AstroDrizzle), drizzlepac's MDRIZTAB rows (native output scales).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "InstrumentDetector",
    "Registry",
    "REGISTRY",
    "CR_BITS_ASTRODRIZZLE",
    "CR_BITS_PIPELINE",
]

#: DQ bit AstroDrizzle's driz_cr step sets on cosmic rays (``crbit``), whatever the instrument.
CR_BITS_ASTRODRIZZLE = 4096
#: DQ bit the ACS/WFC3 calibration pipelines set on cosmic rays (calacs ACSREJ, calwf3 WF3REJ and
#: the IR up-the-ramp fit).
CR_BITS_PIPELINE = 8192


@dataclass(frozen=True)
class InstrumentDetector:
    """Facts about one HST detector that autodriz's decisions depend on.

    Attributes
    ----------
    instrument : str
        Primary-header ``INSTRUME`` (``ACS``, ``WFC3``, ``WFPC2``).
    detector : str
        Primary-header ``DETECTOR`` (``WFC``, ``UVIS`` …); empty for an instrument whose chips are
        not told apart by a DETECTOR keyword (WFPC2).
    ref_prefix : str
        Reference-file prefix of its headers (``jref$…``), also the environment variable and the
        ``--<prefix>`` flag naming the folder.
    pixel_scale_arcsec : float
        Native scale of the pipeline's drizzled products (the default grid of a visit).
    nominal_scale_range_arcsec : (float, float)
        Smallest and largest pixel scale (geometric mean of the axes) of the detector's chips,
        unbinned: a calibrated exposure whose CD matrix is far outside is not this detector's.
    ccdchips : tuple of int
        ``CCDCHIP`` of SCI,1, SCI,2 …: SCI,1 is updatewcs's reference chip.
    chip_shape : (int, int)
        ``(ny, nx)`` of one full chip (science pixels).
    psf_fwhm_arcsec : float
        Typical FWHM of the PSF core (mid-band filter).
    cr_dq_bits : int
        DQ bits that flag cosmic rays (from the calibration pipeline or an earlier AstroDrizzle).
    calibration_pipeline : str
        The program that turns RAW into the calibrated files (named in error messages).
    product_suffixes : tuple of str
        Calibrated file kinds the pipeline makes (``flt``, ``flc``; WFPC2 ``c0m``, ``c1m``).
    err_dq_extensions : bool
        Whether ERR and DQ extensions sit beside every SCI of the calibrated file.
    supported : bool
        Whether autodriz processes it; an unsupported detector is recognised and refused.
    config_key : str
        Section name in ``config/*.toml`` (``["ACS/WFC"]``); default :attr:`key`.
    """

    instrument: str
    detector: str
    ref_prefix: str
    pixel_scale_arcsec: float
    nominal_scale_range_arcsec: tuple[float, float]
    ccdchips: tuple[int, ...]
    chip_shape: tuple[int, int]
    psf_fwhm_arcsec: float
    cr_dq_bits: int
    calibration_pipeline: str
    product_suffixes: tuple[str, ...] = ("flt",)
    err_dq_extensions: bool = True
    supported: bool = True
    config_key: str = ""

    def __post_init__(self) -> None:
        if not self.instrument or self.instrument != self.instrument.upper():
            raise ValueError(f"instrument must be upper-case INSTRUME, got {self.instrument!r}")
        if self.detector != self.detector.upper():
            raise ValueError(f"detector must be upper-case DETECTOR, got {self.detector!r}")
        if not self.ref_prefix.isidentifier() or self.ref_prefix != self.ref_prefix.lower():
            raise ValueError(f"ref_prefix must be a lower-case variable name, got {self.ref_prefix!r}")
        low, high = self.nominal_scale_range_arcsec
        if not 0 < low <= high or self.pixel_scale_arcsec <= 0 or self.psf_fwhm_arcsec <= 0:
            raise ValueError(f"{self.key}: pixel scales and PSF FWHM must be positive (low <= high)")
        if not self.ccdchips:
            raise ValueError(f"{self.key}: at least one chip")
        if not self.config_key:
            object.__setattr__(self, "config_key", self.key)

    @property
    def key(self) -> str:
        """``INSTRUMENT/DETECTOR`` as ``Dataset.instrument_key`` spells it (``WFPC2`` alone)."""
        return f"{self.instrument}/{self.detector}" if self.detector else self.instrument

    @property
    def has_flc(self) -> bool:
        """Whether the pipeline makes CTE-corrected FLC files."""
        return "flc" in self.product_suffixes

    @property
    def psf_fwhm_pix(self) -> float:
        """PSF FWHM in native pixels."""
        return self.psf_fwhm_arcsec / self.pixel_scale_arcsec


@dataclass(frozen=True)
class Registry:
    """An immutable set of :class:`InstrumentDetector` records, looked up by key.

    Parameters
    ----------
    records : tuple of InstrumentDetector
        Keys must be unique (case-insensitive).
    """

    records: tuple[InstrumentDetector, ...]

    def __post_init__(self) -> None:
        keys = [r.key.upper() for r in self.records]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"instrument registry names {', '.join(dupes)} twice")

    def with_records(self, *records: InstrumentDetector) -> Registry:
        """A new registry with ``records`` added (or replacing those with the same key)."""
        new = {r.key.upper() for r in records}
        return Registry(tuple(r for r in self.records if r.key.upper() not in new) + tuple(records))

    def find(self, key: str) -> InstrumentDetector | None:
        """The record of ``INSTRUMENT/DETECTOR`` (case ignored), or None.

        An instrument with a single instrument-level record (WFPC2) matches any detector.
        """
        wanted = key.strip().upper()
        for r in self.records:
            if r.key.upper() == wanted:
                return r
        instrument = wanted.split("/", 1)[0]
        for r in self.records:
            if not r.detector and r.instrument == instrument:
                return r
        return None

    def get(self, key: str) -> InstrumentDetector:
        """Like :meth:`find`, but raise ``KeyError`` naming the known keys."""
        record = self.find(key)
        if record is None:
            raise KeyError(f"unknown instrument/detector {key!r}; known: {', '.join(self.keys())}")
        return record

    def keys(self) -> tuple[str, ...]:
        """Every record's key, in registry order."""
        return tuple(r.key for r in self.records)

    def instruments(self) -> tuple[str, ...]:
        """Every instrument named, in registry order."""
        return tuple(dict.fromkeys(r.instrument for r in self.records))

    def supported_detectors(self) -> Mapping[str, tuple[str, ...]]:
        """Instrument → the DETECTOR values autodriz processes (unsupported ones left out)."""
        out: dict[str, list[str]] = {}
        for r in self.records:
            if r.supported:
                out.setdefault(r.instrument, []).append(r.detector)
        return MappingProxyType({k: tuple(v) for k, v in out.items()})

    def is_refused(self, instrument: str) -> bool:
        """The instrument is known and none of its detectors is supported (WFPC2)."""
        mine = [r for r in self.records if r.instrument == instrument.strip().upper()]
        return bool(mine) and not any(r.supported for r in mine)

    def reference_prefixes(self) -> Mapping[str, tuple[str, ...]]:
        """Reference-file prefix → the instruments whose headers use it, in registry order."""
        out: dict[str, list[str]] = {}
        for r in self.records:
            names = out.setdefault(r.ref_prefix, [])
            if r.instrument not in names:
                names.append(r.instrument)
        return MappingProxyType({k: tuple(v) for k, v in out.items()})

    def calibration_pipeline(self, instrument: str) -> str | None:
        """The calibration program of ``instrument`` (``calacs``), or None if unknown."""
        for r in self.records:
            if r.instrument == instrument.strip().upper():
                return r.calibration_pipeline
        return None

    def config_key(self, instrument_key: str) -> str:
        """The TOML section a detector reads; an unknown key is returned unchanged."""
        record = self.find(instrument_key)
        return record.config_key if record is not None else instrument_key


_CR = CR_BITS_ASTRODRIZZLE | CR_BITS_PIPELINE

#: The detectors autodriz knows. Pixel scales: ACS IHB §3 table 3.1 (WFC 0.050″, HRC 0.028×0.025″,
#: SBC 0.034×0.030″), WFC3 IHB §2 (UVIS 0.0395″, IR 0.135×0.121″); product scales as drizzlepac's
#: MDRIZTABs. PSF FWHM: ACS IHB §5 (~0.1″ WFC, ~0.055″ HRC), WFC3 IHB §6.6 (UVIS ~0.07″) and §7.6
#: (IR ~0.15″ at F140W), WFPC2 ~1.5 WF pixels.
REGISTRY = Registry((
    InstrumentDetector(
        "ACS", "WFC", "jref", 0.05, (0.0498, 0.0498), (2, 1), (2048, 4096), 0.10, _CR, "calacs",
        ("flt", "flc"),
    ),
    InstrumentDetector(
        "ACS", "HRC", "jref", 0.025, (0.0265, 0.0265), (1,), (1024, 1024), 0.055, _CR, "calacs",
    ),
    InstrumentDetector(
        "ACS", "SBC", "jref", 0.025, (0.0319, 0.0319), (1,), (1024, 1024), 0.05, _CR, "calacs",
    ),
    InstrumentDetector(
        "WFC3", "UVIS", "iref", 0.04, (0.0396, 0.0396), (2, 1), (2051, 4096), 0.07, _CR, "calwf3",
        ("flt", "flc"),
    ),
    InstrumentDetector(
        "WFC3", "IR", "iref", 0.128, (0.128, 0.128), (1,), (1014, 1014), 0.15, _CR, "calwf3",
    ),
    # Recognised so that it can be refused with its own exit code; its headers name uref$ files.
    InstrumentDetector(
        "WFPC2", "", "uref", 0.0996, (0.0455, 0.0996), (1, 2, 3, 4), (800, 800), 0.15,
        CR_BITS_ASTRODRIZZLE, "calwp2", ("c0m", "c1m"), err_dq_extensions=False, supported=False,
    ),
))

