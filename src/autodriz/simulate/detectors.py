"""The simulated detectors (ACS/WFC, WFC3/UVIS, WFC3/IR): reference files, photometry and header keywords."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from astropy.io import fits
from astropy.time import Time
from autodriz.instruments import REGISTRY, InstrumentDetector

if TYPE_CHECKING:  # annotations only: importing at run time would be circular
    from autodriz.simulate.config import SimulationConfig
    from autodriz.simulate.wcs import _ChipWCS


#: Full ACS/WFC chip shape (ny, nx).
FULL_CHIP_SHAPE: tuple[int, int] = REGISTRY.get("ACS/WFC").chip_shape

#: Reference files shipped in ``autodriz/data/jref`` and named in the simulated headers.
REFERENCE_FILES: Mapping[str, str] = MappingProxyType({
    "IDCTAB": "0461802ej_idc.fits",
    "NPOLFILE": "02c1450rj_npl.fits",
    "D2IMFILE": "02c1450oj_d2i.fits",
})

_INDEF_INT = -2147483647


#: Name of the MDRIZTAB the simulator writes into ``jref/``.
MDRIZTAB_NAME = "jsim_mdz.fits"

# SCI,1 is updatewcs's reference chip (ACS/WFC and WFC3/UVIS: chip 2, the registry's ccdchips).
_REF_EXTVER = 1

# Filters on ACS wheel 2; every other WFC filter is on wheel 1 (pairs with CLEAR2L).
_WHEEL2 = frozenset({"F435W", "F660N", "F814W"})

# Approximate ACS/WFC AB zeropoints (e-/s), pivot wavelengths and RMS bandwidths (Angstrom);
# good enough to turn magnitudes into plausible counts and fill PHOT* keywords.
_PHOTOMETRY: Mapping[str, tuple[float, float, float]] = MappingProxyType({
    "F435W": (25.66, 4330.0, 293.0),
    "F475W": (26.06, 4747.0, 420.0),
    "F555W": (25.72, 5361.0, 360.0),
    "F606W": (26.49, 5922.0, 672.0),
    "F625W": (25.91, 6311.0, 415.0),
    "F775W": (25.66, 7693.0, 434.0),
    "F814W": (25.94, 8045.0, 654.0),
    "F850LP": (24.84, 9031.0, 525.0),
    # The ACS/WFC grism, rendered as point sources: a geometric stand-in for a grism visit
    # (FILTER1=G800L, its own IDCTAB rows and distortion, so it is treated as spectroscopic),
    # not a spectrum. Lets tests check where a grism exposure's WCS puts the sky.
    "G800L": (25.90, 7470.0, 1500.0),
})

# WFC3/IR: AB zeropoints (e-/s), pivot wavelengths, bandwidths (WFC3 Instrument Handbook);
# only the filters the reconstructed IDCTAB has rows for (and their grisms, as point sources).
_PHOTOMETRY_IR: Mapping[str, tuple[float, float, float]] = MappingProxyType({
    "F110W": (26.82, 11534.0, 1428.0),
    "F140W": (26.45, 13923.0, 1132.0),
    "G102": (25.90, 10000.0, 1200.0),
    "G141": (25.90, 13900.0, 1900.0),
})
# WFC3/UVIS: AB zeropoints (e-/s, UVIS1 2012 values), pivot wavelengths and bandwidths (WFC3
# Instrument Handbook / WFC3 ISR 2017-14); the filters the reconstructed IDCTAB has rows for.
_PHOTOMETRY_UVIS: Mapping[str, tuple[float, float, float]] = MappingProxyType({
    "F555W": (25.81, 5308.0, 517.0),
    "F606W": (26.08, 5889.0, 662.0),
    "F814W": (25.10, 8039.0, 666.0),
})


def _filter_keywords(filt: str) -> tuple[str, str]:
    filt = filt.upper()
    return ("CLEAR1L", filt) if filt in _WHEEL2 else (filt, "CLEAR2L")


def _photometry(filt: str, detector: str = "ACS/WFC") -> dict[str, float]:
    zp_ab, plam, bw = DETECTORS[detector].photometry[filt.upper()]
    # ST and AB systems: ZP_ST = -2.5 log10(PHOTFLAM) - 21.1, AB = ST - 5 log10(PLAM) + 18.692.
    photflam = 10.0 ** (-0.4 * (zp_ab + 5.0 * math.log10(plam) - 18.6921 + 21.10))
    return {"ZP_AB": zp_ab, "PHOTFLAM": photflam, "PHOTPLAM": plam, "PHOTBW": bw}


def _template(name: str) -> fits.Header:
    text = (resources.files("autodriz") / "data" / "templates" / name).read_text(encoding="utf-8")
    header = fits.Header.fromstring(text, sep="\n")
    # The template files end with a COMMENT saying what they are; not for the products.
    header.remove("COMMENT", ignore_missing=True, remove_all=True)
    return header


@dataclass(frozen=True)
class _ExposureInfo:
    rootname: str
    index: int
    expstart: float
    epoch: float
    dither_arcsec: tuple[float, float]


def _common_primary_keywords(
    config: SimulationConfig, info: _ExposureInfo, pa_v3: float, suffix: str, mdriztab: str, det: Detector
) -> dict[str, Any]:
    """Primary keywords every simulated detector writes alike."""
    phot = _photometry(config.filter, det.key)
    start = Time(info.expstart, format="mjd", scale="utc")
    values: dict[str, Any] = {
        # DATE is fixed (not the wall clock) so the same seed gives byte-identical files.
        "DATE": start.isot[:10],
        "FILENAME": f"{info.rootname}_{suffix}.fits",
        "ROOTNAME": info.rootname,
        "RA_TARG": config.ra,
        "DEC_TARG": config.dec,
        "DATE-OBS": start.isot[:10],
        "TIME-OBS": start.isot[11:19],
        "EXPSTART": info.expstart,
        "EXPEND": info.expstart + config.exptime / 86400.0,
        "EXPTIME": config.exptime,
        "PA_V3": pa_v3,
        "POSTARG1": info.dither_arcsec[0],
        "POSTARG2": info.dither_arcsec[1],
        "SUBARRAY": tuple(config.chip_shape) != det.full_shape,
        "MDRIZTAB": mdriztab,
        "ASN_ID": config.asn_id.upper(),
        "ASN_TAB": f"{config.asn_id.lower()}_asn.fits",
        "ASN_MTYP": "EXP-DTH",
        "CCDGAIN": config.gain,
        "PHOTFLAM": phot["PHOTFLAM"],
        "PHOTPLAM": phot["PHOTPLAM"],
        "PHOTBW": phot["PHOTBW"],
        "PATTERN1": "LINE" if config.n_exposures > 1 else "NONE",
        "P1_NPTS": config.n_exposures if config.n_exposures > 1 else 0,
        "PATTSTEP": info.index + 1 if config.n_exposures > 1 else 0,
        "NEXTEND": 3 * len(det.chips),
    }
    for key, name in det.reference_files.items():
        values[key] = f"{det.ref_folder}${name}"
    for amp in "ABCD":
        values[f"ATODGN{amp}"] = config.gain
        values[f"READNSE{amp}"] = config.read_noise
    return values


def _acs_wfc_primary(config: SimulationConfig, info: _ExposureInfo, suffix: str, subarray: bool) -> dict[str, Any]:
    f1, f2 = _filter_keywords(config.filter)
    return {
        "TEXPTIME": config.exptime,
        "DARKTIME": config.exptime + 3.0,
        "APERTURE": "WFC" if not subarray else "WFC-SIM-GAP",
        "PROPAPER": "WFC",
        "FILTER1": f1,
        "FILTER2": f2,
        "PCTECORR": "COMPLETE" if suffix == "flc" else ("PERFORM" if config.write_flc else "OMIT"),
        "PHOTMODE": f"ACS WFC1 {config.filter.upper()} MJD#{info.expstart:.4f}",
    }


def _wfc3_ir_primary(config: SimulationConfig, info: _ExposureInfo, suffix: str, subarray: bool) -> dict[str, Any]:
    """From the real ib6o23rtq's primary header, see the template."""
    del info, suffix
    grism = config.filter.upper().startswith("G")
    return {
        "SUBTYPE": "FULLIMAG" if not subarray else f"SQ{min(config.chip_shape)}SUB",
        "APERTURE": "IR" if not subarray else "IR-SUB",
        "FILTER": config.filter.upper(),
        "OBSTYPE": "SPECTROSCOPIC" if grism else "IMAGING",
        "PHOTMODE": f"WFC3 IR {config.filter.upper()}",
    }


def _wfc3_uvis_primary(config: SimulationConfig, info: _ExposureInfo, suffix: str, subarray: bool) -> dict[str, Any]:
    """From the real ib4606c5q's primary header, see the template."""
    del info
    photflam = _photometry(config.filter, "WFC3/UVIS")["PHOTFLAM"]
    return {
        "DARKTIME": config.exptime + 4.0,
        "APERTURE": "UVIS" if not subarray else "UVIS-SIM-SUB",
        "FILTER": config.filter.upper(),
        "OBSTYPE": "IMAGING",
        "PCTECORR": "COMPLETE" if suffix == "flc" else ("PERFORM" if config.write_flc else "OMIT"),
        # One sensitivity for both chips (FLUXCORR=COMPLETE scales UVIS2 to UVIS1).
        "PHTFLAM1": photflam,
        "PHTFLAM2": photflam,
        "PHTRATIO": 1.0,
    }


def _primary_header(
    config: SimulationConfig,
    info: _ExposureInfo,
    pa_v3: float,
    suffix: str,
    mdriztab: str,
) -> fits.Header:
    """FLT/FLC primary header: the detector's template, shared keywords, then its own."""
    det = DETECTORS[config.detector]
    hdr = _template(det.templates[0])
    values = _common_primary_keywords(config, info, pa_v3, suffix, mdriztab, det)
    values.update(det.primary_keywords(config, info, suffix, bool(values["SUBARRAY"])))
    for key, value in values.items():
        hdr[key] = value
    return hdr


def _acs_wfc_sci(config: SimulationConfig, info: _ExposureInfo, ccdchip: int, ltv: tuple[float, float]) -> dict[str, Any]:
    ny, nx = config.chip_shape
    phot = _photometry(config.filter, "ACS/WFC")
    return {
        "CCDCHIP": ccdchip,
        "PHOTMODE": f"ACS WFC{ccdchip} {config.filter.upper()} MJD#{info.expstart:.4f}",
        "PHOTFLAM": phot["PHOTFLAM"],
        "PHOTPLAM": phot["PHOTPLAM"],
        "PHOTBW": phot["PHOTBW"],
        "SIZAXIS1": nx,
        "SIZAXIS2": ny,
        "CENTERA1": int(-ltv[0] + nx // 2 + 24),  # +24: the serial overscan in raw coordinates
        "CENTERA2": int(-ltv[1] + ny // 2 + (0 if ccdchip == 1 else 20)),
        "MEANDARK": 0.0,
    }


def _wfc3_ir_sci(config: SimulationConfig, info: _ExposureInfo, ccdchip: int, ltv: tuple[float, float]) -> dict[str, Any]:
    del info, ccdchip
    ny, nx = config.chip_shape
    return {
        # IR: 5 reference pixels on each side, then the 1014 science pixels.
        "SIZAXIS1": nx + 10 if nx == 1014 else nx, "SIZAXIS2": ny + 10 if ny == 1014 else ny,
        "CENTERA1": int(-ltv[0] + nx // 2 + 5), "CENTERA2": int(-ltv[1] + ny // 2 + 5),
        "SAMPTIME": config.exptime,
    }


def _wfc3_uvis_sci(config: SimulationConfig, info: _ExposureInfo, ccdchip: int, ltv: tuple[float, float]) -> dict[str, Any]:
    ny, nx = config.chip_shape
    phot = _photometry(config.filter, "WFC3/UVIS")
    return {
        "CCDCHIP": ccdchip,
        "PHOTMODE": f"WFC3 UVIS{ccdchip} {config.filter.upper()} MJD#{info.expstart:.4f}",
        "PHOTFLAM": phot["PHOTFLAM"],
        "PHTFLAM1": phot["PHOTFLAM"],
        "PHTFLAM2": phot["PHOTFLAM"],
        "PHTRATIO": 1.0,
        "PHOTPLAM": phot["PHOTPLAM"],
        "PHOTBW": phot["PHOTBW"],
        "SIZAXIS1": nx,
        "SIZAXIS2": ny,
        # Chip 2 as in the real ib4606c5q (CENTERA 2104, 1036 on its full frame: prescan columns
        # and overscan rows); chip 1's offset is not in the shared data and is approximated.
        "CENTERA1": int(-ltv[0] + nx // 2 + 56),
        "CENTERA2": int(-ltv[1] + ny // 2 + (0 if ccdchip == 1 else 11)),
        "MEANDARK": 0.0,
    }


def _sci_header(
    config: SimulationConfig,
    info: _ExposureInfo,
    extver: int,
    ccdchip: int,
    chip: _ChipWCS,
    ltv: tuple[float, float],
    aperture: tuple[float, float, float],
) -> fits.Header:
    """SCI header: the detector's template, shared keywords, its own, then the chip's WCS."""
    det = DETECTORS[config.detector]
    hdr = _template(det.templates[1])
    ny, nx = config.chip_shape
    values: dict[str, Any] = {
        "DATE": Time(info.expstart, format="mjd").isot[:10],
        "EXTVER": extver,
        "ROOTNAME": info.rootname,
        "EXPNAME": info.rootname,
        "LTV1": ltv[0],
        "LTV2": ltv[1],
        "VAFACTOR": config.vafactor,
        "RA_APER": aperture[0],
        "DEC_APER": aperture[1],
        "PA_APER": aperture[2],
        # All pixels are good (DQ=0); stsci.tools' file check drops files with NGOODPIX=0.
        "NGOODPIX": nx * ny,
        "WCSNAME": "OPUS",
    }
    values.update(det.sci_keywords(config, info, ccdchip, ltv))
    values.update(chip.keywords())
    for key, value in values.items():
        hdr[key] = value
    return hdr


@dataclass(frozen=True)
class Detector:
    """What the simulator adds to an instrument-registry record of one HST detector.

    The detector's facts (chip layout, full-chip shape, pixel scale, reference-file prefix, FLC or not) are
    its :class:`autodriz.instruments.InstrumentDetector`; this holds only what simulating needs
    beyond them.

    Attributes
    ----------
    record : InstrumentDetector
        The registry record.
    reference_files : mapping
        Header keyword → file name (IDCTAB, NPOLFILE, D2IMFILE as the simulation has them),
        shipped in ``autodriz/data/<ref_prefix>``.
    templates : (str, str)
        Primary and SCI header templates in ``autodriz/data/templates``.
    bunit : str
        Unit of the FLT SCI data (``ELECTRONS`` for CCDs, ``ELECTRONS/S`` for WFC3/IR).
    photometry : mapping
        Filter → (AB zeropoint in e-/s, pivot wavelength Å, RMS bandwidth Å): the filters the
        simulator offers.
    primary_keywords, sci_keywords : callable
        The detector's own primary/SCI keyword values, beside those every detector shares (see
        :func:`_primary_header`, :func:`_sci_header`).
    """

    record: InstrumentDetector
    reference_files: Mapping[str, str]
    templates: tuple[str, str]
    bunit: str
    photometry: Mapping[str, tuple[float, float, float]]
    primary_keywords: Callable[[SimulationConfig, _ExposureInfo, str, bool], dict[str, Any]]
    sci_keywords: Callable[[SimulationConfig, _ExposureInfo, int, tuple[float, float]], dict[str, Any]]

    @property
    def key(self) -> str:
        return self.record.key

    @property
    def instrument(self) -> str:
        return self.record.instrument

    @property
    def detector(self) -> str:
        return self.record.detector

    @property
    def chips(self) -> tuple[tuple[int, int], ...]:
        """(EXTVER, CCDCHIP) of the SCI extensions; EXTVER 1 is updatewcs's reference chip."""
        return tuple(enumerate(self.record.ccdchips, start=1))

    @property
    def full_shape(self) -> tuple[int, int]:
        return self.record.chip_shape

    @property
    def ref_folder(self) -> str:
        """Reference-file prefix (``jref``, ``iref``); also the folder written beside the visit."""
        return self.record.ref_prefix

    @property
    def pixel_scale(self) -> float:
        """Pixel scale of the OPUS-like seed CD, arcsec: the registry's (updatewcs sets the real one)."""
        return self.record.pixel_scale_arcsec

    @property
    def has_flc(self) -> bool:
        return self.record.has_flc

    @property
    def idc_root(self) -> str:
        return self.reference_files["IDCTAB"].split("_")[0]


ACS_WFC = Detector(
    record=REGISTRY.get("ACS/WFC"), reference_files=REFERENCE_FILES,
    templates=("acs_wfc_primary.txt", "acs_wfc_sci.txt"), bunit="ELECTRONS",
    photometry=_PHOTOMETRY, primary_keywords=_acs_wfc_primary, sci_keywords=_acs_wfc_sci,
)
#: WFC3/IR with the RECONSTRUCTED IDCTAB w3m18525i (F110W/F140W rows from real updatewcs SIP
#: headers; G102/G141 use them): see ``autodriz/data/iref/README.md``. No NPOL/D2IM exists for IR.
WFC3_IR = Detector(
    record=REGISTRY.get("WFC3/IR"), reference_files=MappingProxyType({"IDCTAB": "w3m18525i_idc.fits"}),
    templates=("wfc3_ir_primary.txt", "wfc3_ir_sci.txt"), bunit="ELECTRONS/S",
    photometry=_PHOTOMETRY_IR, primary_keywords=_wfc3_ir_primary, sci_keywords=_wfc3_ir_sci,
)
#: WFC3/UVIS with the RECONSTRUCTED IDCTAB 2731450pi (F555W rows of both chips from the real
#: ib4606c5q's updatewcs SIP; F606W/F814W use them) and without its NPOLFILE/D2IMFILE, which are
#: not public: see ``autodriz/data/iref/README.md``.
WFC3_UVIS = Detector(
    record=REGISTRY.get("WFC3/UVIS"), reference_files=MappingProxyType({"IDCTAB": "2731450pi_idc.fits"}),
    templates=("wfc3_uvis_primary.txt", "wfc3_uvis_sci.txt"), bunit="ELECTRONS",
    photometry=_PHOTOMETRY_UVIS, primary_keywords=_wfc3_uvis_primary, sci_keywords=_wfc3_uvis_sci,
)
DETECTORS: Mapping[str, Detector] = MappingProxyType({d.key: d for d in (ACS_WFC, WFC3_UVIS, WFC3_IR)})
