"""Simulate an ACS/WFC visit whose true WCS is known.

:func:`simulate_visit` writes an association of FLT (and FLC) exposures, an ASN table, a
Gaia-like reference catalog, the distortion reference files (``jref/``) and
``<asn>_truth.json``. The WCS that matters is made by the same code the pipeline uses:

1. Each exposure gets an "OPUS-like" linear header WCS for the true pointing (reference-chip
   CRVAL at the IDCTAB reference pixel, PA_V3 in the primary header, CD/ORIENTAT per chip) and
   names the real ACS/WFC reference files (``jref$0461802ej_idc.fits`` …).
2. The **truth** is what ``stwcs.updatewcs.updatewcs(use_db=False)`` makes of that unperturbed
   header (run in memory on a copy whose reference-file keywords are absolute paths, so the
   calling process's environment is never touched). Stars are rendered where that WCS, with
   SIP, NPOL and D2IM, puts them.
3. The files carry a *perturbed* header: every header position is rotated about the reference
   chip's CRVAL by ``rotation_error_arcsec`` (PA_V3, ORIENTAT and CD rotated alike) and shifted
   by ``pointing_error_mas`` (+ optional per-exposure jitter) in the tangent plane. Running
   updatewcs on the written files therefore gives truth + the injected error, which the
   simulator measures itself (``expected_default_error_mas``).

Geometry: SCI,1 is WFC2 (CCDCHIP=2), SCI,2 is WFC1 (CCDCHIP=1). Chips smaller than the full
2048x4096 are cut as subarrays centred on each chip's IDCTAB reference pixel, with the same
LTV1/LTV2 on both chips (the IDCTAB model is defined on the full chips; updatewcs, NPOL and
D2IM honour LTV only in that arrangement, see :func:`_subarray_ltv`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from astropy.io import ascii as astropy_ascii
from astropy.io import fits
from astropy.table import Table, vstack
from astropy.time import Time
from astropy.wcs import WCS
from scipy.special import ndtr

from autodriz import truth as truth_mod
from autodriz.asn import write_asn_table
from autodriz.instruments import REGISTRY, InstrumentDetector
from autodriz.skygeom import MAS_PER_RAD as _MAS_PER_RAD
from autodriz.skygeom import deproject as _deproject
from autodriz.skygeom import pa_rotation as _pa_rotation
from autodriz.skygeom import perturb_sky
from autodriz.skygeom import project as _project

logger = logging.getLogger(__name__)

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

_GAIA_EPOCH = 2016.0


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate. All angles in degrees unless the name says otherwise.

    Attributes
    ----------
    asn_id : str
        Nine-character association id; rootnames are derived from it (``jsim01a1q`` …).
    detector : str
        ``ACS/WFC`` (default), ``WFC3/UVIS`` (two 2051×4096 chips, FLT and FLC, filters
        F555W/F606W/F814W, the reconstructed IDCTAB 2731450pi without NPOL/D2IM) or ``WFC3/IR``
        (one 1014×1014 chip, FLT only in e-/s, filters F110W/F140W/G102/G141, the reconstructed
        IDCTAB); build their configs with :func:`config_for_detector` for sensible defaults.
    n_exposures : int
        Number of dithered exposures.
    chip_shape : tuple of int
        ``(ny, nx)`` per chip; (2048, 4096) is full frame, smaller is a subarray centred on
        each chip (both chips cut alike).
    filter : str
        ACS/WFC filter (F606W, F814W, …; G800L gives a point-source stand-in for the grism).
    exptime : float
        Seconds per exposure.
    ra, dec : float
        Where the centre of the (undithered) two-chip mosaic points.
    pa_v3 : float
        True PA_V3.
    dither_arcsec : tuple of (float, float), optional
        Per-exposure offset in detector x/y (arcsec). Default: a line dither with steps of
        (2.5, 1.5) pixels, i.e. half-pixel phases plus few-pixel shifts.
    pointing_error_mas : (float, float)
        Common shift of the header WCS (east, north) in the tangent plane, mas.
    rotation_error_arcsec : float
        Common roll error of the header (PA_V3, ORIENTAT, CD), arcsec.
    relative_error_mas : float
        RMS per-axis random jitter per exposure added to the common shift, mas.
    skew_error : float
        A linear term of the true sky mapping that the distortion model lacks (what a skew or
        anisotropic plate-scale error of the distortion solution leaves): the true WCS is the
        pipeline's with (east, north) → (east + s·north, north) about the reference chip's
        CRVAL. Only a ``general`` fit can remove it. 5e-4 moves the corners of a 256×512
        two-chip visit by ~10 mas. Default 0.
    relative_rotation_arcsec : float
        RMS roll error per exposure added to ``rotation_error_arcsec``, arcsec. Guide-star
        re-acquisition between the orbits of a visit leaves roll differences of a fraction of
        an arcsecond to ~1″ (the ~80 mas spread between the header WCSs of the real ib6o23
        exposures in ``shared/data`` is shift and roll together). Default 0.
    distortion_residual_mas : float
        RMS, over a full chip, of a smooth 2nd/3rd-order displacement field that the true
        distortion has and the reference distortion model lacks (so updatewcs is no longer exact
        and no linear fit can remove it). The field is a property of the detector: the same for
        every exposure, drawn from ``seed``; a subarray sees the part under it (little, near
        the chip centre). ~5 mas is the published accuracy of the ACS/WFC solution
        (ACS ISR 2004-15; Kozhurina-Platais et al.). Default 0.
    gaia_dr3_errors : bool
        Make the reference catalog as Gaia DR3 is: position and proper-motion errors by G
        magnitude (Lindegren et al. 2021, Table 4: 0.02 mas and 0.02 mas/yr at G = 15, 0.4 mas
        and 0.5 mas/yr at G = 20, 1.0 mas and 1.4 mas/yr at G = 21) *drawn* into the catalog
        values (the stars move with their true motion), ``pmra_error``/``pmdec_error`` columns,
        and no star fainter than G = 21 (the catalog's limit). Default False: exact proper
        motions and every star listed.
    no_pm_fraction : float
        Fraction of the catalog stars fainter than G = 19 given a two-parameter solution (no
        proper motion, position error ×3), as ~20 % of Gaia DR3 sources are. Default 0.
    n_galaxies : int
        Extended sources (elliptical exponential discs, half-light radius 2–8 px, 19–23 mag) that
        the detector sees and the reference catalog does not list. Default 0.
    n_saturated_stars : int
        Extra catalog stars of 13–16 mag whose cores exceed the full well: the excess charge
        bleeds along the columns, and those pixels are flagged 256 in DQ as calacs does.
        Default 0.
    full_well : float
        Full-well depth, electrons (ACS/WFC 84 700 e-, Instrument Handbook).
    n_stars : int
        Synthetic stars spread over the visit footprint (ignored with ``catalog``).
    mag_range : (float, float)
        Magnitude range of the stars (also filters a real catalog).
    catalog : Path, optional
        Real catalog (``ascii.commented_header`` with ra, dec, phot_g_mean_mag), recentred on
        the pointing; None for synthetic stars.
    sky_electrons : float
        Sky level per pixel per exposure, electrons.
    read_noise : float
        Read noise per pixel, electrons.
    cosmic_ray_fraction : float
        Fraction of pixels hit by cosmic rays (not flagged in DQ).
    write_flc : bool
        Also write ``_flc.fits`` copies (PCTECORR=COMPLETE).
    seed : int
        Random seed; same seed, same bytes.
    date_obs : str
        Observation date (ISO). The packaged IDCTAB is valid 2002-2007 (pre-SM4 ACS/WFC).
    time_obs : str
        UT start of the first exposure.
    pm_sigma_mas_yr : float
        Per-axis RMS proper motion of the stars, mas/yr.
    psf_fwhm_pix : float
        FWHM of the PSF core, pixels.
    gain : float
        CCD gain written to the header (data are in electrons).
    vafactor : float
        Velocity-aberration scale factor written to each SCI header.
    write_mdriztab : bool
        Write an ACS/WFC MDRIZTAB into ``jref/`` and name it in the headers.
    apriori_errors_mas : tuple of (str, float, float)
        A priori solutions to embed as ``HDRLET`` extensions in every FLT/FLC: (solution name
        such as ``GSC240`` or ``HSC30``, east error mas, north error mas). The solution's WCS is
        the truth shifted by that error in the tangent plane, with the same distortion
        (IDCTAB, NPOL, D2IM); its WCSNAME is ``IDC_0461802ej-<name>``. Default: none.
    apriori_missing : tuple of (str, int)
        (solution name, 0-based exposure index) pairs whose headerlet is left out of that
        exposure's FLT and FLC, for mixed-availability tests.
    """

    asn_id: str = "JSIM01010"
    detector: str = "ACS/WFC"
    n_exposures: int = 2
    chip_shape: tuple[int, int] = (256, 512)
    filter: str = "F606W"
    exptime: float = 400.0
    ra: float = 290.22
    dec: float = 37.80
    pa_v3: float = 120.0
    dither_arcsec: tuple[tuple[float, float], ...] | None = None
    pointing_error_mas: tuple[float, float] = (0.0, 0.0)
    rotation_error_arcsec: float = 0.0
    relative_error_mas: float = 0.0
    skew_error: float = 0.0
    relative_rotation_arcsec: float = 0.0
    distortion_residual_mas: float = 0.0
    gaia_dr3_errors: bool = False
    no_pm_fraction: float = 0.0
    n_galaxies: int = 0
    n_saturated_stars: int = 0
    full_well: float = 84700.0
    n_stars: int = 200
    mag_range: tuple[float, float] = (18.0, 24.0)
    catalog: Path | None = None
    sky_electrons: float = 40.0
    read_noise: float = 4.5
    cosmic_ray_fraction: float = 0.007
    write_flc: bool = True
    seed: int = 1
    date_obs: str = "2005-08-12"
    time_obs: str = "10:00:00"
    pm_sigma_mas_yr: float = 2.0
    psf_fwhm_pix: float = 2.0
    gain: float = 2.0
    vafactor: float = 1.0000365
    write_mdriztab: bool = True
    apriori_errors_mas: tuple[tuple[str, float, float], ...] = ()
    apriori_missing: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if len(self.asn_id) != 9 or not self.asn_id.isalnum():
            raise ValueError(f"asn_id must be 9 alphanumeric characters, got {self.asn_id!r}")
        if not 1 <= self.n_exposures <= 26 * 9:
            raise ValueError("n_exposures must be between 1 and 234")
        if self.detector not in DETECTORS:
            raise ValueError(f"unsupported detector {self.detector!r}; use one of {sorted(DETECTORS)}")
        det = DETECTORS[self.detector]
        ny, nx = self.chip_shape
        if not (16 <= ny <= det.full_shape[0] and 64 <= nx <= det.full_shape[1]):
            raise ValueError(
                f"chip_shape must be within (16..{det.full_shape[0]}, 64..{det.full_shape[1]}) for {det.key}, "
                f"got {self.chip_shape}"
            )
        phot = det.photometry
        if self.filter.upper() not in phot:
            raise ValueError(f"unsupported {det.key} filter {self.filter!r}; use one of {sorted(phot)}")
        if self.write_flc and not det.has_flc:
            raise ValueError(f"{det.key} has no FLC files: write_flc must be False")
        if self.write_mdriztab and det.key != "ACS/WFC":
            raise ValueError("write_mdriztab writes an ACS/WFC MDRIZTAB: False for other detectors")
        if self.dither_arcsec is not None and len(self.dither_arcsec) != self.n_exposures:
            raise ValueError("dither_arcsec needs one (x, y) offset per exposure")
        if self.mag_range[0] >= self.mag_range[1]:
            raise ValueError("mag_range must be (bright, faint)")
        if self.exptime <= 0 or self.sky_electrons < 0 or self.read_noise < 0:
            raise ValueError("exptime must be positive; sky and read noise non-negative")
        if self.relative_error_mas < 0 or self.relative_rotation_arcsec < 0 or self.distortion_residual_mas < 0:
            raise ValueError("relative_error_mas, relative_rotation_arcsec and distortion_residual_mas are RMS: >= 0")
        if not 0 <= self.no_pm_fraction <= 1 or self.n_galaxies < 0 or self.n_saturated_stars < 0 or self.full_well <= 0:
            raise ValueError("no_pm_fraction must be in [0, 1]; n_galaxies, n_saturated_stars >= 0; full_well > 0")
        if not 0 <= self.cosmic_ray_fraction < 0.2:
            raise ValueError("cosmic_ray_fraction must be in [0, 0.2)")
        names = [entry[0] for entry in self.apriori_errors_mas]
        for entry in self.apriori_errors_mas:
            if len(entry) != 3 or not str(entry[0]).isalnum() or str(entry[0]).upper().startswith("FIT"):
                raise ValueError(
                    f"apriori_errors_mas entries are (name, east_mas, north_mas) with an alphanumeric "
                    f"name not starting with FIT (those are a posteriori), got {entry!r}"
                )
        if len(set(names)) != len(names):
            raise ValueError(f"apriori_errors_mas names a solution twice: {names}")
        for entry in self.apriori_missing:
            if len(entry) != 2 or entry[0] not in names or not 0 <= int(entry[1]) < self.n_exposures:
                raise ValueError(
                    f"apriori_missing entries are (name in apriori_errors_mas, exposure index < "
                    f"n_exposures), got {entry!r}"
                )


def config_for_detector(detector: str, **kwargs: Any) -> SimulationConfig:
    """A :class:`SimulationConfig` with that detector's defaults, overridden by ``kwargs``.

    WFC3/IR: full 1014×1014 frame, F140W, 300 s (SPARS100-like), FWHM 1.1 px (0.14″, the
    F140W PSF), sky 1 e-/s, effective read noise 15 e- (up-the-ramp fit of ~4 reads), no
    cosmic rays and no saturation left in the FLT (the ramp fit removes both), no FLC, no
    MDRIZTAB (autodriz's WFC3/IR drizzle defaults).

    WFC3/UVIS: two chips cut alike (the default 256×512 subarrays, or up to 2051×4096), F555W,
    FWHM 0.07″ (the registry's, 1.75 px), gain 1.5 and read noise 3.1 e- (the real ib4606c5q's
    CCDGAIN and READNSE*), full well 63 000 e- (WFC3 Instrument Handbook §5.4.5), sky 25 e- (the
    ACS/WFC default scaled by the pixel area), FLT and FLC, no MDRIZTAB, observed 2011.
    """
    base: dict[str, Any] = {}
    if detector == "WFC3/UVIS":
        base = {
            "filter": "F555W", "psf_fwhm_pix": REGISTRY.get("WFC3/UVIS").psf_fwhm_pix, "gain": 1.5,
            "read_noise": 3.1, "full_well": 63000.0, "sky_electrons": 25.0, "write_mdriztab": False,
            "date_obs": "2011-02-19",
        }
    elif detector == "WFC3/IR":
        base = {
            "chip_shape": (1014, 1014), "filter": "F140W", "exptime": 300.0, "psf_fwhm_pix": 1.1,
            "sky_electrons": 300.0, "read_noise": 15.0, "cosmic_ray_fraction": 0.0, "write_flc": False,
            "write_mdriztab": False, "gain": 2.5, "date_obs": "2012-08-12",
            # IR pixels do not bleed, and calwf3's up-the-ramp fit recovers a bright star's rate
            # from the reads before it saturates: no full-well clipping in an IR FLT.
            "full_well": 1e30,
        }
    return SimulationConfig(detector=detector, **{**base, **kwargs})


@dataclass(frozen=True)
class SimulatedVisit:
    """Paths of everything :func:`simulate_visit` wrote."""

    directory: Path
    asn_path: Path
    flt_paths: tuple[Path, ...]
    flc_paths: tuple[Path, ...]
    truth_path: Path
    catalog_path: Path
    jref_dir: Path
    mdriztab_path: Path | None


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def rootnames(asn_id: str, n_exposures: int) -> list[str]:
    """Member rootnames for an association id: ``jsim01010`` → ``jsim01a1q``, ``jsim01a2q`` …"""
    base = asn_id.lower()[:6]
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [f"{base}{letters[i // 9]}{i % 9 + 1}q" for i in range(n_exposures)]


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


def _copy_reference_files(jref_dir: Path, det: Detector | None = None) -> None:
    det = det or ACS_WFC
    jref_dir.mkdir(parents=True, exist_ok=True)
    source = resources.files("autodriz") / "data" / det.ref_folder
    for name in det.reference_files.values():
        with resources.as_file(source / name) as src:
            shutil.copyfile(src, jref_dir / name)


def _idc_reference_pixels(idctab: Path, filt: str, det: Detector | None = None) -> dict[int, tuple[float, float]]:
    """XREF/YREF of the IDCTAB's forward model per chip (as stwcs selects it)."""
    det = det or ACS_WFC
    # fits.getdata, not Table.read: the IDCTAB's non-FITS unit strings ('chip') only warn.
    table = Table(fits.getdata(idctab, 1))
    out: dict[int, tuple[float, float]] = {}
    for _, chip in det.chips:
        sel = (table["DETCHIP"] == chip) & (np.char.strip(table["DIRECTION"].astype(str)) == "FORWARD")
        if "FILTER" in table.colnames:  # WFC3: one filter wheel
            exact = sel & (np.char.strip(table["FILTER"].astype(str)) == filt.upper())
        else:
            f1, f2 = _filter_keywords(filt)
            exact = sel & (np.char.strip(table["FILTER1"].astype(str)) == f1) & (
                np.char.strip(table["FILTER2"].astype(str)) == f2
            )
        rows = table[exact] if exact.any() else table[sel]
        out[chip] = (float(rows["XREF"][0]), float(rows["YREF"][0]))
    return out


def _subarray_ltv(chip_shape: tuple[int, int], ccdchip: int, full_shape: tuple[int, int] = FULL_CHIP_SHAPE) -> tuple[float, float]:
    """LTV1/LTV2 of the subarray cut from a chip: centred on the full chip, the same for both.

    Why not next to the inter-chip gap: updatewcs (stwcs 1.7 MakeWCS) evaluates the reference
    chip's frame at ``CRPIX - IDCXREF`` of *each* chip and re-centres the IDCTAB polynomial at
    ``CRPIX - LTV``, dropping the constant terms that re-centring creates. That is exact only
    when both chips share LTV1/LTV2 and sit at ``CRPIX = IDC reference pixel + LTV`` (as real
    single-chip ACS subarrays and full frames do). Subarrays at the gap (different LTV2 per
    chip) misplace WFC1 by arcminutes, so the simulator does not make them.
    """
    del ccdchip  # same cut on both chips (see above)
    ny, nx = chip_shape
    return -float((full_shape[1] - nx) // 2), -float((full_shape[0] - ny) // 2)


def _apply_sky_skew(hdul: fits.HDUList, skew: float) -> None:
    """Shear the sky mapping of every chip: (east, north) → (east + skew·north, north).

    About the reference chip's CRVAL, in its tangent plane: each chip's CD becomes M·CD and its
    CRVAL moves by M. SIP and lookup tables act before CD (pixel frame) and stay as they are.
    """
    sci = _sci_extensions(hdul)
    ref = hdul[sci[_REF_EXTVER]].header
    centre = (float(ref["CRVAL1"]), float(ref["CRVAL2"]))
    m = np.array([[1.0, skew], [0.0, 1.0]])
    for idx in sci.values():
        hdr = hdul[idx].header
        xi, eta = _project(np.array([hdr["CRVAL1"]]), np.array([hdr["CRVAL2"]]), *centre)
        ra, dec = _deproject(m[0, 0] * xi + m[0, 1] * eta, m[1, 0] * xi + m[1, 1] * eta, *centre)
        hdr["CRVAL1"], hdr["CRVAL2"] = float(ra[0]), float(dec[0])
        cd = np.array([[hdr["CD1_1"], hdr["CD1_2"]], [hdr["CD2_1"], hdr["CD2_2"]]], dtype=float)
        # CD maps pixels to intermediate (east, north) coordinates: the shear is a left product.
        new = m @ cd
        for (r, c), value in np.ndenumerate(new):
            hdr[f"CD{r + 1}_{c + 1}"] = float(value)


#: Polynomial orders of the distortion residual: 2 and 3 only, because a constant or linear
#: residual is what every WCS fit removes (shift, rotation, scale, skew) and so tests nothing.
_RESIDUAL_TERMS: tuple[tuple[int, int], ...] = tuple((p, t - p) for t in (2, 3) for p in range(t + 1))


def distortion_residual_field(
    rng: np.random.Generator, rms_mas: float, pixel_scale_arcsec: float, det: Detector | None = None
) -> dict[int, dict[str, float]]:
    """Random smooth distortion residual per chip, as SIP coefficients to add.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the random coefficients.
    rms_mas : float
        RMS length of the displacement over the full chip, mas.
    pixel_scale_arcsec : float
        Detector pixel scale (the SIP acts in pixels).

    Returns
    -------
    dict
        EXTVER → {``A_p_q``/``B_p_q``: coefficient} for the 2nd- and 3rd-order terms, in pixels
        per pixel**(p+q) about the full chip's centre (where the IDC reference pixel, and so
        CRPIX, sits), normalised so the displacement has RMS ``rms_mas`` on a full chip.
    """
    det = det or ACS_WFC
    half = (det.full_shape[1] / 2.0, det.full_shape[0] / 2.0)
    # Normalised coordinates in [-1, 1] over the full chip, for the RMS normalisation.
    gx, gy = np.meshgrid(np.linspace(-1.0, 1.0, 41), np.linspace(-1.0, 1.0, 41))
    out: dict[int, dict[str, float]] = {}
    for extver, _ in det.chips:
        ca = rng.normal(size=len(_RESIDUAL_TERMS))
        cb = rng.normal(size=len(_RESIDUAL_TERMS))
        dx = sum(c * gx**p * gy**q for c, (p, q) in zip(ca, _RESIDUAL_TERMS, strict=True))
        dy = sum(c * gx**p * gy**q for c, (p, q) in zip(cb, _RESIDUAL_TERMS, strict=True))
        rms_pix = float(np.sqrt(np.mean(dx**2 + dy**2)))
        norm = rms_mas / 1000.0 / pixel_scale_arcsec / rms_pix
        coeffs: dict[str, float] = {}
        for (p, q), a, b in zip(_RESIDUAL_TERMS, ca, cb, strict=True):
            scale = norm / (half[0] ** p * half[1] ** q)
            coeffs[f"A_{p}_{q}"] = float(a * scale)
            coeffs[f"B_{p}_{q}"] = float(b * scale)
        out[extver] = coeffs
    return out


def _apply_distortion_residual(hdul: fits.HDUList, residual: Mapping[int, Mapping[str, float]]) -> None:
    """Add the residual's SIP terms to every chip of the true WCS.

    SIP is referenced to CRPIX, which the simulator keeps at the IDC reference pixel (full-chip
    centre) in subarray coordinates, so the same coefficients describe the same detector field
    for any subarray.
    """
    for extver, idx in _sci_extensions(hdul).items():
        hdr = hdul[idx].header
        if not str(hdr.get("CTYPE1", "")).endswith("-SIP"):
            raise ValueError(f"true WCS of SCI,{extver} has no SIP to add a distortion residual to")
        for axis in ("A", "B"):
            if int(hdr.get(f"{axis}_ORDER", 0)) < 3:
                hdr[f"{axis}_ORDER"] = 3
        for key, value in residual[extver].items():
            hdr[key] = float(hdr.get(key, 0.0)) + value


# --------------------------------------------------------------------------------------------
# headers and updatewcs
# --------------------------------------------------------------------------------------------


@dataclass
class _ChipWCS:
    """Linear header WCS of one chip (what OPUS writes)."""

    crval: np.ndarray
    crpix: np.ndarray
    cd: np.ndarray

    def keywords(self) -> dict[str, Any]:
        return {
            "CTYPE1": "RA---TAN",
            "CTYPE2": "DEC--TAN",
            "CRVAL1": float(self.crval[0]),
            "CRVAL2": float(self.crval[1]),
            "CRPIX1": float(self.crpix[0]),
            "CRPIX2": float(self.crpix[1]),
            "CD1_1": float(self.cd[0, 0]),
            "CD1_2": float(self.cd[0, 1]),
            "CD2_1": float(self.cd[1, 0]),
            "CD2_2": float(self.cd[1, 1]),
            "ORIENTAT": float(math.degrees(math.atan2(self.cd[0, 1], self.cd[1, 1]))),
        }

    @classmethod
    def from_header(cls, header: Mapping[str, Any]) -> _ChipWCS:
        return cls(
            crval=np.array([header["CRVAL1"], header["CRVAL2"]], dtype=float),
            crpix=np.array([header["CRPIX1"], header["CRPIX2"]], dtype=float),
            cd=np.array(
                [[header["CD1_1"], header["CD1_2"]], [header["CD2_1"], header["CD2_2"]]], dtype=float
            ),
        )


@dataclass
class _Pointing:
    """Header pointing of one exposure: chip WCSs (by EXTVER) and PA_V3."""

    chips: dict[int, _ChipWCS]
    pa_v3: float

    def moved(self, new_ref_crval: tuple[float, float]) -> _Pointing:
        """The same layout with the reference chip's CRVAL moved (rigid tangent-plane move)."""
        old = self.chips[_REF_EXTVER].crval
        chips = {}
        for extver, chip in self.chips.items():
            xi, eta = _project(np.array([chip.crval[0]]), np.array([chip.crval[1]]), old[0], old[1])
            ra, dec = _deproject(xi, eta, *new_ref_crval)
            chips[extver] = _ChipWCS(np.array([ra[0], dec[0]]), chip.crpix.copy(), chip.cd.copy())
        return _Pointing(chips, self.pa_v3)

    def perturbed(self, rotation_arcsec: float, shift_mas: tuple[float, float]) -> _Pointing:
        """Apply the error model (see :func:`perturb_sky`) to every header position."""
        center = (float(self.chips[_REF_EXTVER].crval[0]), float(self.chips[_REF_EXTVER].crval[1]))
        rot = _pa_rotation(rotation_arcsec / 3600.0)
        chips = {}
        for extver, chip in self.chips.items():
            ra, dec = perturb_sky(
                chip.crval[0], chip.crval[1], center, rotation_arcsec=rotation_arcsec, shift_mas=shift_mas
            )
            # CD maps pixels to (east, north); rotating the sky frame is a left product.
            chips[extver] = _ChipWCS(np.array([ra[0], dec[0]]), chip.crpix.copy(), rot @ chip.cd)
        return _Pointing(chips, self.pa_v3 + rotation_arcsec / 3600.0)


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

    The detector's facts (chip layout, full-chip shape, reference-file prefix, FLC or not) are
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
    pixel_scale : float
        Pixel scale of the OPUS-like seed CD, arcsec (updatewcs sets the real one).
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
    pixel_scale: float
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
    def has_flc(self) -> bool:
        return self.record.has_flc

    @property
    def idc_root(self) -> str:
        return self.reference_files["IDCTAB"].split("_")[0]


ACS_WFC = Detector(
    record=REGISTRY.get("ACS/WFC"), reference_files=REFERENCE_FILES,
    templates=("acs_wfc_primary.txt", "acs_wfc_sci.txt"), pixel_scale=0.05, bunit="ELECTRONS",
    photometry=_PHOTOMETRY, primary_keywords=_acs_wfc_primary, sci_keywords=_acs_wfc_sci,
)
#: WFC3/IR with the RECONSTRUCTED IDCTAB w3m18525i (F110W/F140W rows from real updatewcs SIP
#: headers; G102/G141 use them): see ``autodriz/data/iref/README.md``. No NPOL/D2IM exists for IR.
WFC3_IR = Detector(
    record=REGISTRY.get("WFC3/IR"), reference_files=MappingProxyType({"IDCTAB": "w3m18525i_idc.fits"}),
    templates=("wfc3_ir_primary.txt", "wfc3_ir_sci.txt"), pixel_scale=0.1283, bunit="ELECTRONS/S",
    photometry=_PHOTOMETRY_IR, primary_keywords=_wfc3_ir_primary, sci_keywords=_wfc3_ir_sci,
)
#: WFC3/UVIS with the RECONSTRUCTED IDCTAB 2731450pi (F555W rows of both chips from the real
#: ib4606c5q's updatewcs SIP; F606W/F814W use them) and without its NPOLFILE/D2IMFILE, which are
#: not public: see ``autodriz/data/iref/README.md``.
WFC3_UVIS = Detector(
    record=REGISTRY.get("WFC3/UVIS"), reference_files=MappingProxyType({"IDCTAB": "2731450pi_idc.fits"}),
    templates=("wfc3_uvis_primary.txt", "wfc3_uvis_sci.txt"), pixel_scale=0.04, bunit="ELECTRONS",
    photometry=_PHOTOMETRY_UVIS, primary_keywords=_wfc3_uvis_primary, sci_keywords=_wfc3_uvis_sci,
)
DETECTORS: Mapping[str, Detector] = MappingProxyType({d.key: d for d in (ACS_WFC, WFC3_UVIS, WFC3_IR)})


def _companion_header(sci: fits.Header, extname: str, bunit: str = "ELECTRONS") -> fits.Header:
    """ERR/DQ header: identification and WCS copied from the SCI header, as calacs writes."""
    hdr = fits.Header()
    hdr["EXTNAME"] = extname
    keep = (
        "EXTVER ROOTNAME EXPNAME WCSAXES CRPIX1 CRPIX2 CRVAL1 CRVAL2 CTYPE1 CTYPE2 CD1_1 CD1_2 "
        "CD2_1 CD2_2 LTV1 LTV2 LTM1_1 LTM2_2 PA_APER VAFACTOR ORIENTAT WCSNAME RADESYS"
    ).split()
    for key in keep:
        hdr[key] = (sci[key], sci.comments[key])
    hdr.set("BUNIT", bunit if extname == "ERR" else "UNITLESS", after="EXPNAME")
    return hdr


def _wcs_only_hdulist(
    config: SimulationConfig,
    info: _ExposureInfo,
    pointing: _Pointing,
    jref_dir: Path,
) -> fits.HDUList:
    """An in-memory exposure with zero pixels, for running updatewcs on its header alone.

    The reference-file keywords are absolute paths, which stwcs resolves without ``jref`` in
    the environment, so the calling process's environment is left alone.
    """
    det = DETECTORS[config.detector]
    primary = _primary_header(config, info, pointing.pa_v3, "flt", "N/A")
    for key, name in det.reference_files.items():
        primary[key] = str((jref_dir / name).resolve())
    hdus: list[fits.hdu.base.ExtensionHDU | fits.PrimaryHDU] = [fits.PrimaryHDU(header=primary)]
    # updatewcs only needs the SCI shape (NAXISn); a broadcast zero array costs no memory
    # even for full-size chips. ERR/DQ just receive a copy of the WCS.
    zeros = np.broadcast_to(np.float32(0.0), config.chip_shape)
    for extver, ccdchip in det.chips:
        ltv = _subarray_ltv(config.chip_shape, ccdchip, det.full_shape)
        sci = _sci_header(config, info, extver, ccdchip, pointing.chips[extver], ltv, (0.0, 0.0, 0.0))
        hdus.append(fits.ImageHDU(zeros, header=sci))
        hdus.append(fits.ImageHDU(np.zeros((1, 1), np.float32), header=_companion_header(sci, "ERR")))
        hdus.append(fits.ImageHDU(np.zeros((1, 1), np.int16), header=_companion_header(sci, "DQ")))
    return fits.HDUList(hdus)


def _run_updatewcs(hdul: fits.HDUList) -> fits.HDUList:
    """Run the real ``updatewcs(use_db=False)`` on an in-memory exposure, in place."""
    from stwcs.updatewcs import updatewcs

    # stwcs print()s progress and resets its own loggers' levels: capture the former into our
    # DEBUG log and restore the latter, so that simulating leaves the caller's console and
    # logging as they were.
    stwcs_loggers = [logging.getLogger(n) for n in logging.root.manager.loggerDict if n.startswith("stwcs")]
    levels = [lg.level for lg in stwcs_loggers]
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # checkfiles=False: the HDUList has no file behind it (nothing to convert).
            updatewcs(hdul, use_db=False, checkfiles=False)
    finally:
        for lg, level in zip(stwcs_loggers, levels):
            lg.setLevel(level)
        for line in captured.getvalue().splitlines():
            logger.debug("updatewcs: %s", line)
    return hdul


@contextlib.contextmanager
def _quiet_stwcs() -> Any:
    """Silence stwcs for the duration: its print()s go to our DEBUG log, its loggers are off.

    stwcs logs every headerlet it creates at INFO/DEBUG and sets its own loggers' levels;
    the caller's console must not see that, so its loggers are disabled meanwhile and their
    level and state restored afterwards. Import stwcs before entering, so its loggers exist.
    """
    stwcs_loggers = [
        lg for n, lg in logging.root.manager.loggerDict.items()
        if n.startswith("stwcs") and isinstance(lg, logging.Logger)
    ]
    states = [(lg.level, lg.disabled) for lg in stwcs_loggers]
    captured = io.StringIO()
    try:
        for lg in stwcs_loggers:
            lg.disabled = True
        with contextlib.redirect_stdout(captured), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, (level, disabled) in zip(stwcs_loggers, states, strict=True):
            lg.setLevel(level)
            lg.disabled = disabled
        for line in captured.getvalue().splitlines():
            logger.debug("stwcs: %s", line)


def apriori_wcsname(name: str, detector: str = "ACS/WFC") -> str:
    """WCSNAME of a simulated a priori solution: ``IDC_<idctab>-<name>`` (``IDC_0461802ej-HSC30``)."""
    return f"IDC_{DETECTORS[detector].idc_root}-{name}"


def _apriori_hdulist(
    truth_hdul: fits.HDUList, wcsname: str, shift_mas: tuple[float, float], det: Detector | None = None
) -> fits.HDUList:
    """A copy of the true in-memory exposure whose SCI WCSs are shifted by ``shift_mas``.

    Every chip's CRVAL moves by the same tangent-plane shift about the reference chip's CRVAL
    (as :func:`perturb_sky` defines the error); CD, SIP and lookup tables stay those of the truth,
    i.e. the distortion model in use. Reference-file keywords are put back to ``jref$`` names,
    which is what the headerlet will record.
    """
    det = det or ACS_WFC
    hdul = fits.HDUList([h.copy() for h in truth_hdul])
    for key, name in det.reference_files.items():
        hdul[0].header[key] = f"{det.ref_folder}${name}"
    sci = _sci_extensions(hdul)
    ref = hdul[sci[_REF_EXTVER]].header
    center = (float(ref["CRVAL1"]), float(ref["CRVAL2"]))
    for idx in sci.values():
        hdr = hdul[idx].header
        ra, dec = perturb_sky(hdr["CRVAL1"], hdr["CRVAL2"], center, shift_mas=shift_mas)
        hdr["CRVAL1"] = float(ra[0])
        hdr["CRVAL2"] = float(dec[0])
        hdr["WCSNAME"] = wcsname
        # updatewcs recorded where it read the lookup tables (our temporary absolute paths);
        # a headerlet should name them as the archive does, and the bytes must not depend on
        # the output folder.
        for key, ref in (("NPOLEXT", "NPOLFILE"), ("D2IMEXT", "D2IMFILE")):
            if key in hdr and ref in det.reference_files:
                hdr[key] = f"{det.ref_folder}${det.reference_files[ref]}"
    return hdul


def _apriori_headerlet_hdu(
    shifted: fits.HDUList, rootname: str, suffix: str, name: str, wcsname: str, extver: int, date: str
) -> fits.hdu.base.NonstandardExtHDU:
    """A real stwcs headerlet of ``shifted``, wrapped as an ``HDRLET`` extension."""
    from stwcs.wcsutil import headerlet

    shifted[0].header["FILENAME"] = f"{rootname}_{suffix}.fits"
    with _quiet_stwcs():
        hlet = headerlet.create_headerlet(
            shifted,
            sciext="SCI",
            hdrname=f"{rootname}_{suffix}_{wcsname}-hlet.fits",
            wcsname=wcsname,
            author="autodriz.simulate",
            descrip=f"Simulated a priori WCS ({name}): truth + known error",
            # stwcs's decorator treats a *missing* ``logging`` keyword as "on": it would add a
            # FileHandler to its logger and write headerlet.log into the working directory.
            logging=False,
        )
        # Fixed DATE (not the wall clock): same seed, same bytes.
        hlet[0].header["DATE"] = date
        hlet[0].header["CATALOG"] = (name, "Astrometric catalog used for headerlet solution")
        hdu = headerlet.HeaderletHDU.fromheaderlet(hlet)
    hdu.header["EXTVER"] = extver
    return hdu


def _sci_extensions(hdul: fits.HDUList) -> dict[int, int]:
    """EXTVER → HDU index of the SCI extensions."""
    return {
        int(h.header["EXTVER"]): i
        for i, h in enumerate(hdul)
        if i > 0 and h.header.get("EXTNAME", "").strip().upper() == "SCI"
    }


def _truth_record(hdul: fits.HDUList) -> dict[str, dict[str, Any]]:
    """Per SCI extension, the keywords that rebuild the true WCS with astropy alone."""
    out: dict[str, dict[str, Any]] = {}
    for extver, idx in _sci_extensions(hdul).items():
        hdr = hdul[idx].header
        rec: dict[str, Any] = dict(truth_mod.linear_sip_header(hdr).items())
        rec["NAXIS1"] = int(hdr["NAXIS1"])
        rec["NAXIS2"] = int(hdr["NAXIS2"])
        for key in ("CCDCHIP", "LTV1", "LTV2", "WCSNAME", "IDCXREF", "IDCYREF", "VAFACTOR"):
            if key in hdr:
                rec[key] = hdr[key]
        out[str(extver)] = rec
    return out


def _full_wcs(hdul: fits.HDUList, extver: int) -> WCS:
    """WCS with SIP + NPOL (CPDIS) + D2IM lookup tables, as the truth for rendering stars."""
    return WCS(hdul[_sci_extensions(hdul)[extver]].header, fobj=hdul)


def _mosaic_centre(hdul: fits.HDUList, chip_shape: tuple[int, int]) -> tuple[float, float]:
    """Sky position halfway between the centres of the chips (the centre of a single chip)."""
    ny, nx = chip_shape
    vecs = []
    for extver in sorted(_sci_extensions(hdul)):
        ra, dec = _full_wcs(hdul, extver).all_pix2world([(nx - 1) / 2.0], [(ny - 1) / 2.0], 0)
        a, d = math.radians(float(ra[0])), math.radians(float(dec[0]))
        vecs.append(np.array([math.cos(d) * math.cos(a), math.cos(d) * math.sin(a), math.sin(d)]))
    v = np.sum(vecs, axis=0)
    return math.degrees(math.atan2(v[1], v[0])) % 360.0, math.degrees(math.asin(v[2] / np.linalg.norm(v)))


def _default_dithers(n: int, scale_arcsec: float) -> tuple[tuple[float, float], ...]:
    # A line dither: (2.5, 1.5) px steps give half-pixel phases in both axes plus real shifts.
    return tuple((k * 2.5 * scale_arcsec, k * 1.5 * scale_arcsec) for k in range(n))


# --------------------------------------------------------------------------------------------
# stars and pixels
# --------------------------------------------------------------------------------------------


def _footprint_boxes(
    chip_wcs: Mapping[int, Sequence[WCS]],
    chip_shape: tuple[int, int],
    center: tuple[float, float],
    orient_deg: float,
    margin_arcsec: float,
) -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
    """Per chip, the box holding that chip in every exposure, in a detector-aligned frame.

    Returns the rotation (tangent-plane east/north → box u, v) and one (u0, u1, v0, v1) box per
    chip, in radians about ``center``.
    """
    ny, nx = chip_shape
    xs = np.array([0, nx - 1, nx - 1, 0], dtype=float)
    ys = np.array([0, 0, ny - 1, ny - 1], dtype=float)
    t = math.radians(orient_deg)
    # v along detector y (position angle ORIENTAT), u orthogonal to it: a tight box.
    rot = np.array([[-math.cos(t), math.sin(t)], [math.sin(t), math.cos(t)]])
    m = margin_arcsec / 206264.806
    boxes = []
    for wcss in chip_wcs.values():
        us, vs = [], []
        for w in wcss:
            ra, dec = w.all_pix2world(xs, ys, 0)
            xi, eta = _project(ra, dec, *center)
            us.append(rot[0, 0] * xi + rot[0, 1] * eta)
            vs.append(rot[1, 0] * xi + rot[1, 1] * eta)
        u = np.concatenate(us)
        v = np.concatenate(vs)
        boxes.append((u.min() - m, u.max() + m, v.min() - m, v.max() + m))
    return rot, boxes


def _random_positions(
    rng: np.random.Generator,
    footprint: tuple[np.ndarray, list[tuple[float, float, float, float]]],
    center: tuple[float, float],
    n: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sky positions spread uniformly over the chip boxes (in proportion to their areas)."""
    rot, boxes = footprint
    inv = rot.T  # orthogonal
    areas = np.array([(b[1] - b[0]) * (b[3] - b[2]) for b in boxes])
    which = rng.choice(len(boxes), size=n, p=areas / areas.sum())
    lo_u = np.array([boxes[i][0] for i in which])
    hi_u = np.array([boxes[i][1] for i in which])
    lo_v = np.array([boxes[i][2] for i in which])
    hi_v = np.array([boxes[i][3] for i in which])
    u = lo_u + rng.uniform(0.0, 1.0, n) * (hi_u - lo_u)
    v = lo_v + rng.uniform(0.0, 1.0, n) * (hi_v - lo_v)
    xi = inv[0, 0] * u + inv[0, 1] * v
    eta = inv[1, 0] * u + inv[1, 1] * v
    return _deproject(xi, eta, *center)


def _magnitudes(rng: np.random.Generator, n: int, mag_range: tuple[float, float]) -> np.ndarray:
    """Star counts rising towards faint magnitudes: dN/dm ∝ 10^(0.3 m), by inverse CDF."""
    lo, hi = mag_range
    k = 0.3 * math.log(10.0)
    r = rng.uniform(0.0, 1.0, n)
    return np.log(np.exp(k * lo) + r * (np.exp(k * hi) - np.exp(k * lo))) / k


#: Gaia DR3 five-parameter uncertainties by G (Lindegren et al. 2021, A&A 649, A2, Table 4):
#: G, position error at J2016 (mas, per axis), proper-motion error (mas/yr, per axis).
_GAIA_DR3_ERRORS: tuple[tuple[float, float, float], ...] = (
    (9.0, 0.012, 0.012), (12.0, 0.012, 0.015), (15.0, 0.02, 0.02), (17.0, 0.07, 0.07),
    (19.0, 0.2, 0.25), (20.0, 0.4, 0.5), (21.0, 1.0, 1.4),
)
#: Faintest G in the Gaia-like catalog when ``gaia_dr3_errors`` is on.
GAIA_LIMIT_G = 21.0


def gaia_dr3_errors(g_mag: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis position (mas) and proper-motion (mas/yr) errors of Gaia DR3 at magnitude G.

    Log-linear interpolation of Lindegren et al. (2021) Table 4; clamped outside 9 < G < 21.
    """
    g = np.clip(np.asarray(g_mag, dtype=float), _GAIA_DR3_ERRORS[0][0], _GAIA_DR3_ERRORS[-1][0])
    nodes = np.array(_GAIA_DR3_ERRORS)
    pos = 10.0 ** np.interp(g, nodes[:, 0], np.log10(nodes[:, 1]))
    pm = 10.0 ** np.interp(g, nodes[:, 0], np.log10(nodes[:, 2]))
    return pos, pm


def _make_stars(
    config: SimulationConfig,
    rng: np.random.Generator,
    footprint: tuple[np.ndarray, list[tuple[float, float, float, float]]],
    center: tuple[float, float],
) -> Table:
    """Star list at the Gaia epoch: true positions and motions, catalog values with errors, mags.

    ``in_catalog`` says which stars the reference catalog lists.
    """
    rot, boxes = footprint
    if config.catalog is None:
        n = config.n_stars
        ra, dec = _random_positions(rng, footprint, center, n)
        mag = _magnitudes(rng, n, config.mag_range)
    else:
        cat = astropy_ascii.read(config.catalog, format="commented_header")
        cra = np.asarray(cat["ra"], dtype=float)
        cdec = np.asarray(cat["dec"], dtype=float)
        cmag = np.asarray(cat["phot_g_mean_mag"], dtype=float)
        # Recentre the real field onto the pointing: same tangent-plane layout, new centre.
        c_ra = float(np.median(cra))
        c_dec = float(np.median(cdec))
        xi, eta = _project(cra, cdec, c_ra, c_dec)
        u = rot[0, 0] * xi + rot[0, 1] * eta
        v = rot[1, 0] * xi + rot[1, 1] * eta
        inside = np.zeros(u.shape, dtype=bool)
        for u0, u1, v0, v1 in boxes:
            inside |= (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)
        keep = (
            inside
            & np.isfinite(cmag) & (cmag >= config.mag_range[0]) & (cmag <= config.mag_range[1])
        )
        ra, dec = _deproject(xi[keep], eta[keep], *center)
        mag = cmag[keep]
        n = int(keep.sum())
        logger.info("catalog %s: %d stars fall in the simulated footprint", config.catalog, n)
    pmra = rng.normal(0.0, config.pm_sigma_mas_yr, n)
    pmdec = rng.normal(0.0, config.pm_sigma_mas_yr, n)
    # Gaia DR3-like position errors (mas) growing with magnitude.
    err = np.clip(0.02 * 10.0 ** (0.2 * (mag - 15.0)), 0.01, 2.0)
    ra_err = err * rng.uniform(0.8, 1.2, n)
    dec_err = err * rng.uniform(0.8, 1.2, n)
    cos_d = np.cos(np.deg2rad(dec))
    cat_ra = ra + rng.normal(0.0, 1.0, n) * ra_err / 3.6e6 / cos_d
    cat_dec = dec + rng.normal(0.0, 1.0, n) * dec_err / 3.6e6
    base_id = 2051000000000000000 + (config.seed % 1000) * 10**9
    stars = Table(
        {
            "source_id": np.arange(n, dtype=np.int64) + base_id,
            "ra_true": ra,
            "dec_true": dec,
            "pmra_true": pmra,
            "pmdec_true": pmdec,
            "ra": cat_ra,
            "dec": cat_dec,
            "ra_error": ra_err,
            "dec_error": dec_err,
            "pmra": pmra.copy(),
            "pmdec": pmdec.copy(),
            "ref_epoch": np.full(n, _GAIA_EPOCH),
            "phot_g_mean_mag": mag,
            "in_catalog": np.ones(n, dtype=bool),
        }
    )
    if config.n_saturated_stars or config.gaia_dr3_errors:
        # Own stream: visits made without these options keep their bytes.
        stars = _hostile_catalog(stars, config, np.random.default_rng([config.seed, 1803]), footprint, center)
    return stars


def _hostile_catalog(
    stars: Table,
    config: SimulationConfig,
    rng: np.random.Generator,
    footprint: tuple[np.ndarray, list[tuple[float, float, float, float]]],
    center: tuple[float, float],
) -> Table:
    """Add saturating stars; give the catalog Gaia DR3's errors, two-parameter stars and limit."""
    if config.n_saturated_stars:
        k = config.n_saturated_stars
        ra, dec = _random_positions(rng, footprint, center, k)
        bright = Table(
            {
                "source_id": np.asarray(stars["source_id"]).max(initial=2051000000000000000) + 1 + np.arange(k),
                "ra_true": ra, "dec_true": dec,
                "pmra_true": rng.normal(0.0, config.pm_sigma_mas_yr, k),
                "pmdec_true": rng.normal(0.0, config.pm_sigma_mas_yr, k),
                "ra": ra, "dec": dec, "ra_error": np.full(k, 0.02), "dec_error": np.full(k, 0.02),
                "pmra": np.zeros(k), "pmdec": np.zeros(k), "ref_epoch": np.full(k, _GAIA_EPOCH),
                "phot_g_mean_mag": rng.uniform(13.0, 16.0, k), "in_catalog": np.ones(k, dtype=bool),
            }
        )
        bright["pmra"] = bright["pmra_true"]
        bright["pmdec"] = bright["pmdec_true"]
        stars = vstack([stars, bright])
    if not config.gaia_dr3_errors:
        return stars
    n = len(stars)
    mag = np.asarray(stars["phot_g_mean_mag"], dtype=float)
    pos_err, pm_err = gaia_dr3_errors(mag)
    two_param = (mag > 19.0) & (rng.uniform(0.0, 1.0, n) < config.no_pm_fraction)
    pos_err = np.where(two_param, 3.0 * pos_err, pos_err)
    ra_true = np.asarray(stars["ra_true"], dtype=float)
    dec_true = np.asarray(stars["dec_true"], dtype=float)
    cos_d = np.cos(np.deg2rad(dec_true))
    stars["ra"] = ra_true + rng.normal(0.0, 1.0, n) * pos_err / 3.6e6 / cos_d
    stars["dec"] = dec_true + rng.normal(0.0, 1.0, n) * pos_err / 3.6e6
    stars["ra_error"] = pos_err
    stars["dec_error"] = pos_err
    stars["pmra"] = np.where(two_param, np.nan, np.asarray(stars["pmra_true"]) + rng.normal(0.0, 1.0, n) * pm_err)
    stars["pmdec"] = np.where(two_param, np.nan, np.asarray(stars["pmdec_true"]) + rng.normal(0.0, 1.0, n) * pm_err)
    stars["pmra_error"] = np.where(two_param, np.nan, pm_err)
    stars["pmdec_error"] = np.where(two_param, np.nan, pm_err)
    stars["in_catalog"] = mag <= GAIA_LIMIT_G
    return stars


def _make_galaxies(
    config: SimulationConfig, footprint: tuple[np.ndarray, list[tuple[float, float, float, float]]]
) -> Table:
    """Extended sources not in the reference catalog (own random stream)."""
    rng = np.random.default_rng([config.seed, 1804])
    k = config.n_galaxies
    ra, dec = _random_positions(rng, footprint, (config.ra, config.dec), k) if k else (np.zeros(0), np.zeros(0))
    return Table(
        {
            "ra": ra, "dec": dec, "mag": rng.uniform(19.0, 23.0, k), "r_eff_pix": rng.uniform(2.0, 8.0, k),
            "axis_ratio": rng.uniform(0.3, 1.0, k), "pa_rad": rng.uniform(0.0, math.pi, k),
        }
    )


def positions_at_epoch(stars: Table, epoch: float) -> tuple[np.ndarray, np.ndarray]:
    """True star positions propagated from the Gaia epoch to ``epoch`` (decimal year)."""
    dt = epoch - _GAIA_EPOCH
    pm_cols = ("pmra_true", "pmdec_true") if "pmra_true" in stars.colnames else ("pmra", "pmdec")
    dec = np.asarray(stars["dec_true"]) + np.asarray(stars[pm_cols[1]]) * dt / 3.6e6
    ra = np.asarray(stars["ra_true"]) + np.asarray(stars[pm_cols[0]]) * dt / 3.6e6 / np.cos(
        np.deg2rad(np.asarray(stars["dec_true"]))
    )
    return ra, dec


def _psf_components(fwhm: float) -> tuple[tuple[float, float], ...]:
    """(weight, sigma) of the PSF: a Gaussian core plus a wider halo, like ACS/WFC's wings."""
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    return ((0.8, sigma), (0.2, 3.0 * sigma))


def _render_stars(
    image: np.ndarray, x: np.ndarray, y: np.ndarray, flux: np.ndarray, fwhm: float
) -> None:
    """Add pixel-integrated PSFs (exact, via the Gaussian CDF) centred at 0-based (x, y)."""
    ny, nx = image.shape
    comps = _psf_components(fwhm)
    half = int(math.ceil(5.0 * comps[-1][1]))
    for xc, yc, f in zip(x, y, flux, strict=True):
        ix, iy = int(round(xc)), int(round(yc))
        x0, x1 = max(ix - half, 0), min(ix + half + 1, nx)
        y0, y1 = max(iy - half, 0), min(iy + half + 1, ny)
        if x0 >= x1 or y0 >= y1:
            continue
        px = np.arange(x0, x1 + 1) - 0.5 - xc  # pixel edges relative to the star
        py = np.arange(y0, y1 + 1) - 0.5 - yc
        stamp = np.zeros((y1 - y0, x1 - x0))
        for weight, sigma in comps:
            fx = np.diff(ndtr(px / sigma))
            fy = np.diff(ndtr(py / sigma))
            stamp += weight * np.outer(fy, fx)
        image[y0:y1, x0:x1] += f * stamp


def _render_galaxies(
    image: np.ndarray, x: np.ndarray, y: np.ndarray, flux: np.ndarray,
    r_eff: np.ndarray, axis_ratio: np.ndarray, pa_rad: np.ndarray,
) -> None:
    """Add elliptical exponential discs (sampled 3×3 per pixel) centred at 0-based (x, y)."""
    ny, nx = image.shape
    sub = (np.arange(3) - 1.0) / 3.0
    for xc, yc, f, re, q, pa in zip(x, y, flux, r_eff, axis_ratio, pa_rad, strict=True):
        h = re / 1.678  # exponential scale length from the half-light radius
        half = int(math.ceil(6.0 * re))
        ix, iy = int(round(xc)), int(round(yc))
        x0, x1 = max(ix - half, 0), min(ix + half + 1, nx)
        y0, y1 = max(iy - half, 0), min(iy + half + 1, ny)
        if x0 >= x1 or y0 >= y1:
            continue
        gx = (np.arange(x0, x1)[None, :, None, None] + sub[None, None, None, :]) - xc
        gy = (np.arange(y0, y1)[:, None, None, None] + sub[None, None, :, None]) - yc
        c, s_ = math.cos(pa), math.sin(pa)
        u = c * gx + s_ * gy
        v = (-s_ * gx + c * gy) / q
        profile = np.exp(-np.hypot(u, v) / h).mean(axis=(2, 3))
        # Normalised to the analytic total, so a disc cut by the chip edge loses its share.
        image[y0:y1, x0:x1] += f * profile / (2.0 * math.pi * h * h * q)


def _saturate_and_bleed(image: np.ndarray, full_well: float) -> np.ndarray:
    """Clip at the full well and spill the excess charge up and down the columns, as CCDs do.

    Returns the mask of pixels at the full well (what calacs flags 256).
    """
    over = image > full_well
    if not over.any():
        return over
    ny = image.shape[0]
    for col in np.unique(np.nonzero(over)[1]):
        column = image[:, col]
        rows = np.nonzero(column > full_well)[0]
        excess = float((column[rows] - full_well).sum())
        column[rows] = full_well
        # Half the charge bleeds each way from the saturated run, filling pixels to the well.
        lo, hi = int(rows.min()) - 1, int(rows.max()) + 1
        for direction, start in ((-1, lo), (1, hi)):
            left = excess / 2.0
            r = start
            while left > 0 and 0 <= r < ny:
                room = max(full_well - column[r], 0.0)
                take = min(room, left)
                column[r] += take
                left -= take
                r += direction
        image[:, col] = column
    return image >= full_well


def _add_cosmic_rays(image: np.ndarray, fraction: float, rng: np.random.Generator) -> int:
    """Add short cosmic-ray tracks hitting about ``fraction`` of the pixels; return hit count."""
    if fraction <= 0:
        return 0
    ny, nx = image.shape
    mean_len = 3.0
    n_events = rng.poisson(fraction * image.size / mean_len)
    hit = np.zeros(image.shape, dtype=bool)
    lengths = rng.integers(1, 6, n_events)
    angles = rng.uniform(0.0, math.pi, n_events)
    x0 = rng.uniform(0.0, nx, n_events)
    y0 = rng.uniform(0.0, ny, n_events)
    energy = rng.lognormal(math.log(1500.0), 0.7, n_events)
    for length, ang, xs, ys, e in zip(lengths, angles, x0, y0, energy, strict=True):
        t = np.arange(length)
        xi = np.clip((xs + t * math.cos(ang)).astype(int), 0, nx - 1)
        yi = np.clip((ys + t * math.sin(ang)).astype(int), 0, ny - 1)
        deposit = e / length * rng.uniform(0.5, 1.5, length)
        np.add.at(image, (yi, xi), deposit)
        hit[yi, xi] = True
    return int(hit.sum())


# --------------------------------------------------------------------------------------------
# MDRIZTAB
# --------------------------------------------------------------------------------------------


def write_mdriztab(path: str | Path) -> Path:
    """Write an ACS/WFC MDRIZTAB (AstroDrizzle pipeline parameters) in the archive's format.

    One ``ANY`` filter block, rows by number of images (1, 2, 4+): a single image gets no
    median/CR step; two or more use the usual minmed/median CR rejection; values follow the
    ACS/WFC pipeline defaults (final scale 0.05", pixfrac 1, square kernel, EXP weighting).

    Parameters
    ----------
    path : str or Path
        Output file.

    Returns
    -------
    Path
    """
    path = Path(path)
    # INDEF, as drizzlepac's mdzhandler reads it: NaN in float columns, -2147483647 in ints.
    nan = float("nan")
    nimg = [1, 2, 4]
    n = len(nimg)

    def col(name: str, fmt: str, values: Sequence[Any]) -> fits.Column:
        return fits.Column(name=name, format=fmt, array=np.array(values))

    def same(value: Any) -> list[Any]:
        return [value] * n

    cols = [
        col("filter", "24A", same("ANY")),
        col("numimages", "J", nimg),
        col("build", "L", same(True)),
        col("shiftfile", "24A", same("")),
        col("staticfile", "24A", same("")),
        col("static", "L", same(True)),
        col("static_sig", "E", same(4.0)),
        col("skysub", "L", same(True)),
        col("skywidth", "E", same(0.1)),
        col("skystat", "24A", same("mode")),
        col("skylower", "E", same(nan)),
        col("skyupper", "E", same(nan)),
        col("skyclip", "J", same(5)),
        col("skylsigma", "E", same(4.0)),
        col("skyusigma", "E", same(4.0)),
        col("skymethod", "24A", same("localmin")),
        col("skyuser", "24A", same("")),
        col("driz_separate", "L", [False, True, True]),
        col("driz_sep_outnx", "J", same(_INDEF_INT)),
        col("driz_sep_outny", "J", same(_INDEF_INT)),
        col("driz_sep_kernel", "24A", same("turbo")),
        col("driz_sep_wt_scl", "24A", same("exptime")),
        col("driz_sep_scale", "E", same(nan)),
        col("driz_sep_pixfrac", "E", same(1.0)),
        col("driz_sep_rot", "E", same(nan)),
        col("driz_sep_fillval", "E", same(nan)),
        col("driz_sep_bits", "24A", same("16")),
        col("median", "L", [False, True, True]),
        col("median_newmasks", "L", same(True)),
        col("combine_type", "24A", ["minmed", "minmed", "median"]),
        col("combine_nsigma", "24A", same("4 3")),
        col("combine_nlow", "J", same(0)),
        col("combine_nhigh", "J", [0, 0, 1]),
        col("combine_lthresh", "E", same(nan)),
        col("combine_hthresh", "E", same(nan)),
        col("combine_grow", "J", same(1)),
        col("blot", "L", [False, True, True]),
        col("blot_interp", "24A", same("poly5")),
        col("blot_sinscl", "E", same(1.0)),
        col("driz_cr", "L", [False, True, True]),
        col("driz_cr_corr", "L", same(False)),
        col("driz_cr_snr", "24A", same("3.5 3.0")),
        col("driz_cr_grow", "J", same(1)),
        col("driz_cr_ctegrow", "J", same(0)),
        col("driz_cr_scale", "24A", same("1.2 0.7")),
        col("driz_combine", "L", same(True)),
        col("final_wht_type", "24A", same("EXP")),
        col("final_outnx", "J", same(_INDEF_INT)),
        col("final_outny", "J", same(_INDEF_INT)),
        col("final_kernel", "24A", same("square")),
        col("final_wt_scl", "24A", same("exptime")),
        col("final_scale", "E", same(0.05)),
        col("final_pixfrac", "E", same(1.0)),
        col("final_rot", "E", same(0.0)),
        col("final_fillval", "E", same(nan)),
        col("final_bits", "24A", same("336")),
        col("final_units", "24A", same("cps")),
        col("resetbits", "J", same(4096)),
    ]
    primary = fits.PrimaryHDU()
    ph = primary.header
    ph["FILENAME"] = path.name
    ph["FILETYPE"] = "MULTIDRIZZLE PARAMETERS"
    ph["TELESCOP"] = "HST"
    ph["INSTRUME"] = "ACS"
    ph["DETECTOR"] = "WFC"
    ph["USEAFTER"] = "Mar 01 2002 00:00:00"
    ph["PEDIGREE"] = "DUMMY"
    ph["DESCRIP"] = "AstroDrizzle parameters for simulated ACS/WFC visits (autodriz)"
    fits.HDUList([primary, fits.BinTableHDU.from_columns(cols)]).writeto(path, overwrite=True)
    return path


# --------------------------------------------------------------------------------------------
# the visit
# --------------------------------------------------------------------------------------------


def _config_record(config: SimulationConfig) -> dict[str, Any]:
    rec = dataclasses.asdict(config)
    rec["catalog"] = str(config.catalog) if config.catalog is not None else None
    return rec


def simulate_visit(outdir: str | Path, config: SimulationConfig = SimulationConfig()) -> SimulatedVisit:
    """Write a simulated ACS/WFC visit with a known true WCS.

    Parameters
    ----------
    outdir : str or Path
        Folder to write into (created if missing). It receives ``<asn>_asn.fits``,
        ``<root>_flt.fits`` / ``_flc.fits``, ``<asn>_truth.json``, ``<asn>_refcat.ecsv`` and
        ``jref/`` (reference files; point ``jref`` at it with a trailing slash).
    config : SimulationConfig
        What to simulate.

    Returns
    -------
    SimulatedVisit
        Paths of the products.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    asn_lower = config.asn_id.lower()
    det = DETECTORS[config.detector]
    jref_dir = outdir / det.ref_folder
    _copy_reference_files(jref_dir, det)
    mdriztab_path: Path | None = None
    mdriztab_kw = "N/A"
    if config.write_mdriztab:
        mdriztab_path = write_mdriztab(jref_dir / MDRIZTAB_NAME)
        mdriztab_kw = f"jref${MDRIZTAB_NAME}"

    seeds = np.random.SeedSequence(config.seed).spawn(config.n_exposures + 2)
    rng_stars = np.random.default_rng(seeds[0])
    rng_jitter = np.random.default_rng(seeds[1])

    names = rootnames(config.asn_id, config.n_exposures)
    t0 = Time(f"{config.date_obs}T{config.time_obs}", format="isot", scale="utc").mjd
    # Exposures follow each other with a realistic overhead between them.
    infos_base = [(names[k], k, t0 + k * (config.exptime + 150.0) / 86400.0) for k in range(config.n_exposures)]

    # Pass 1: where does a seed pointing land? Aim the mosaic centre at (ra, dec).
    idc_ref = _idc_reference_pixels(jref_dir / det.reference_files["IDCTAB"], config.filter, det)
    scale_deg = det.pixel_scale / 3600.0
    seed_chips = {}
    for extver, ccdchip in det.chips:
        ltv = _subarray_ltv(config.chip_shape, ccdchip, det.full_shape)
        xref, yref = idc_ref[ccdchip]
        t = math.radians(config.pa_v3)
        # A rough CD (roll only): updatewcs rebuilds CD from PA_V3 and the IDCTAB anyway.
        cd = scale_deg * np.array([[-math.cos(t), math.sin(t)], [math.sin(t), math.cos(t)]])
        seed_chips[extver] = _ChipWCS(np.array([config.ra, config.dec]), np.array([xref + ltv[0], yref + ltv[1]]), cd)
    seed = _Pointing(seed_chips, config.pa_v3)
    first = _ExposureInfo(names[0], 0, infos_base[0][2], 0.0, (0.0, 0.0))
    pass1 = _run_updatewcs(_wcs_only_hdulist(config, first, seed, jref_dir))
    aim = _mosaic_centre(pass1, config.chip_shape)
    ref_ra, ref_dec = perturb_sky(
        config.ra, config.dec, (config.ra, config.dec),
        shift_mas=tuple(-v for v in _offset_mas(aim, (config.ra, config.dec))),  # type: ignore[arg-type]
    )
    # The OPUS-like layout: pass-1 linear WCS of both chips, moved to the aimed pointing.
    layout = _Pointing(
        {extver: _ChipWCS.from_header(pass1[idx].header) for extver, idx in _sci_extensions(pass1).items()},
        config.pa_v3,
    )
    layout = layout.moved((float(ref_ra[0]), float(ref_dec[0])))
    base_linear = WCS(naxis=2)
    ref_chip = layout.chips[_REF_EXTVER]
    base_linear.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    base_linear.wcs.crval = ref_chip.crval
    base_linear.wcs.crpix = ref_chip.crpix
    base_linear.wcs.cd = ref_chip.cd
    idc_scale = float(pass1[_sci_extensions(pass1)[_REF_EXTVER]].header.get("IDCSCALE", 0.05))

    dithers = config.dither_arcsec or _default_dithers(config.n_exposures, idc_scale)

    exposures: list[dict[str, Any]] = []
    truth_exposures: dict[str, Any] = {}
    default_hduls: list[fits.HDUList] = []
    per_exposure_shift: dict[str, list[float]] = {}
    per_exposure_roll: dict[str, float] = {}
    # Separate seeded streams (not spawned from ``seeds``): adding them changes no earlier draw.
    rng_roll = np.random.default_rng([config.seed, 1801])
    residual = (
        distortion_residual_field(
            np.random.default_rng([config.seed, 1802]), config.distortion_residual_mas, idc_scale, det
        )
        if config.distortion_residual_mas > 0
        else {}
    )
    for (root, k, expstart), dither in zip(infos_base, dithers, strict=True):
        epoch = float(Time(expstart, format="mjd").decimalyear)
        info = _ExposureInfo(root, k, expstart, epoch, (float(dither[0]), float(dither[1])))
        # Moving the telescope by +d (detector x/y) makes the reference pixel see the sky that
        # sat at crpix + d before.
        dpix = np.array(dither, dtype=float) / idc_scale
        cra, cdec = base_linear.wcs_pix2world([ref_chip.crpix[0] + dpix[0]], [ref_chip.crpix[1] + dpix[1]], 1)
        opus = layout.moved((float(cra[0]), float(cdec[0])))
        truth_hdul = _run_updatewcs(_wcs_only_hdulist(config, info, opus, jref_dir))
        if config.skew_error:
            _apply_sky_skew(truth_hdul, config.skew_error)
        if residual:
            _apply_distortion_residual(truth_hdul, residual)

        jitter = (
            rng_jitter.normal(0.0, config.relative_error_mas, 2) if config.relative_error_mas > 0 else np.zeros(2)
        )
        shift = (config.pointing_error_mas[0] + float(jitter[0]), config.pointing_error_mas[1] + float(jitter[1]))
        per_exposure_shift[root] = [shift[0], shift[1]]
        # Its own stream, so visits made before roll jitter existed keep their bytes.
        roll = config.rotation_error_arcsec + (
            float(rng_roll.normal(0.0, config.relative_rotation_arcsec)) if config.relative_rotation_arcsec > 0 else 0.0
        )
        per_exposure_roll[root] = roll
        header_pointing = opus.perturbed(roll, shift)
        default_hduls.append(_run_updatewcs(_wcs_only_hdulist(config, info, header_pointing, jref_dir)))

        truth_exposures[root] = {
            "flt": f"{root}_flt.fits",
            "flc": f"{root}_flc.fits" if config.write_flc else None,
            "expstart_mjd": expstart,
            "epoch": epoch,
            "dither_arcsec": list(info.dither_arcsec),
            "pa_v3_true": opus.pa_v3,
            "pa_v3_header": header_pointing.pa_v3,
            "shift_mas": [shift[0], shift[1]],
            "opus_true": {str(e): c.keywords() for e, c in opus.chips.items()},
            "sci": _truth_record(truth_hdul),
        }
        apriori = {}
        for name, east, north in config.apriori_errors_mas:
            if (name, k) in {(m[0], int(m[1])) for m in config.apriori_missing}:
                continue
            apriori[name] = _apriori_hdulist(
                truth_hdul, apriori_wcsname(name, det.key), (float(east), float(north)), det
            )
        exposures.append({"info": info, "truth": truth_hdul, "header": header_pointing, "apriori": apriori})

    truth: dict[str, Any] = {
        "format": "autodriz-simulation-truth/1",
        "asn_id": config.asn_id.upper(),
        "config": _config_record(config),
        "injected": {
            "pointing_error_mas": list(config.pointing_error_mas),
            "rotation_error_arcsec": config.rotation_error_arcsec,
            "relative_error_mas": config.relative_error_mas,
            "skew_error": config.skew_error,
            "relative_rotation_arcsec": config.relative_rotation_arcsec,
            "distortion_residual_mas": config.distortion_residual_mas,
            "shift_mas_per_exposure": per_exposure_shift,
            "rotation_arcsec_per_exposure": per_exposure_roll,
        },
        "detector": det.key,
        "reference_files": {k: f"{det.ref_folder}${v}" for k, v in det.reference_files.items()},
        "aim": {"ra": config.ra, "dec": config.dec},
        "exposures": truth_exposures,
    }
    default_error = truth_mod.visit_error(default_hduls, truth)
    truth["expected_default_error_mas"] = default_error.rms_mas
    truth["expected_default_error"] = dataclasses.asdict(default_error)
    logger.info(
        "simulated header WCS error after updatewcs: rms %.2f mas (max %.2f)",
        default_error.rms_mas, default_error.max_mas,
    )

    if config.apriori_errors_mas:
        truth["apriori"] = {}
        for name, east, north in config.apriori_errors_mas:
            having = [e for e in exposures if name in e["apriori"]]
            err = truth_mod.visit_error([e["apriori"][name] for e in having], truth) if having else None
            truth["apriori"][name] = {
                "wcsname": apriori_wcsname(name, det.key),
                "error_mas": [float(east), float(north)],
                "exposures": [e["info"].rootname for e in having],
                "missing": [e["info"].rootname for e in exposures if name not in e["apriori"]],
                "expected_error_mas": err.rms_mas if err else None,
            }
            logger.info(
                "simulated a priori solution %s: error (%.1f, %.1f) mas, rms vs truth %s mas, in %d exposure(s)",
                apriori_wcsname(name, det.key), east, north, f"{err.rms_mas:.2f}" if err else "-", len(having),
            )

    # Stars over the footprint of all exposures: one detector-aligned box per chip.
    chip_wcs = {extver: [_full_wcs(e["truth"], extver) for e in exposures] for extver, _ in det.chips}
    cd = chip_wcs[_REF_EXTVER][0].wcs.cd
    orient = math.degrees(math.atan2(cd[0, 1], cd[1, 1]))
    footprint = _footprint_boxes(chip_wcs, config.chip_shape, (config.ra, config.dec), orient, margin_arcsec=1.0)
    stars = _make_stars(config, rng_stars, footprint, (config.ra, config.dec))
    phot = _photometry(config.filter, det.key)
    flux_rate = 10.0 ** (-0.4 * (np.asarray(stars["phot_g_mean_mag"]) - phot["ZP_AB"]))
    galaxies = _make_galaxies(config, footprint)
    galaxy_rate = 10.0 ** (-0.4 * (np.asarray(galaxies["mag"]) - phot["ZP_AB"]))

    flt_paths: list[Path] = []
    flc_paths: list[Path] = []
    for exp, seed_seq in zip(exposures, seeds[2:], strict=True):
        info: _ExposureInfo = exp["info"]
        rng = np.random.default_rng(seed_seq)
        ra_t, dec_t = positions_at_epoch(stars, info.epoch)
        chips_data = []
        n_cr = 0
        for extver, ccdchip in det.chips:
            wcs = _full_wcs(exp["truth"], extver)
            x, y = wcs.all_world2pix(ra_t, dec_t, 0, tolerance=1e-6, maxiter=50, quiet=True)
            model = np.full(config.chip_shape, config.sky_electrons, dtype=float)
            ok = np.isfinite(x) & np.isfinite(y)
            _render_stars(model, x[ok], y[ok], flux_rate[ok] * config.exptime, config.psf_fwhm_pix)
            if len(galaxies):
                gx, gy = wcs.all_world2pix(galaxies["ra"], galaxies["dec"], 0, tolerance=1e-6, maxiter=50, quiet=True)
                _render_galaxies(
                    model, gx, gy, galaxy_rate * config.exptime,
                    np.asarray(galaxies["r_eff_pix"]), np.asarray(galaxies["axis_ratio"]), np.asarray(galaxies["pa_rad"]),
                )
            sci = rng.poisson(model).astype(float)
            saturated = _saturate_and_bleed(sci, config.full_well)
            sci += rng.normal(0.0, config.read_noise, config.chip_shape) if config.read_noise > 0 else 0.0
            n_cr += _add_cosmic_rays(sci, config.cosmic_ray_fraction, rng)
            err = np.sqrt(np.maximum(sci, 0.0) + config.read_noise**2)
            dq = np.where(saturated, 256, 0).astype(np.int16)
            if det.bunit.endswith("/S"):
                # WFC3/IR FLTs are count rates (the ramp fit divides by the exposure time).
                sci, err = sci / config.exptime, err / config.exptime
            chips_data.append((extver, ccdchip, sci.astype(np.float32), err.astype(np.float32), dq))
        logger.debug("%s: %d pixels hit by cosmic rays", info.rootname, n_cr)

        aim_ra, aim_dec = _mosaic_centre(exp["truth"], config.chip_shape)
        header_pointing: _Pointing = exp["header"]
        for suffix in ("flt", "flc") if config.write_flc else ("flt",):
            hdus: list[Any] = [
                fits.PrimaryHDU(header=_primary_header(config, info, header_pointing.pa_v3, suffix, mdriztab_kw))
            ]
            for extver, ccdchip, sci, err, dq in chips_data:
                ltv = _subarray_ltv(config.chip_shape, ccdchip, det.full_shape)
                chip = header_pointing.chips[extver]
                pa_aper = chip.keywords()["ORIENTAT"]
                sci_hdr = _sci_header(config, info, extver, ccdchip, chip, ltv, (aim_ra, aim_dec, pa_aper))
                sci_hdr["GOODMIN"] = float(sci.min())
                sci_hdr["GOODMAX"] = float(sci.max())
                sci_hdr["GOODMEAN"] = float(sci.mean(dtype=np.float64))
                hdus.append(fits.ImageHDU(sci, header=sci_hdr))
                hdus.append(fits.ImageHDU(err, header=_companion_header(sci_hdr, "ERR", det.bunit)))
                hdus.append(fits.ImageHDU(dq, header=_companion_header(sci_hdr, "DQ", det.bunit)))
            # A priori solutions travel as HDRLET extensions after the science extensions, as
            # in archive files.
            for extver, (name, shifted) in enumerate(exp["apriori"].items(), start=1):
                hdus.append(
                    _apriori_headerlet_hdu(
                        shifted, info.rootname, suffix, name, apriori_wcsname(name, det.key), extver,
                        Time(info.expstart, format="mjd").isot[:19],
                    )
                )
            path = outdir / f"{info.rootname}_{suffix}.fits"
            fits.HDUList(hdus).writeto(path, overwrite=True)
            (flt_paths if suffix == "flt" else flc_paths).append(path)

    asn_path = write_asn_table(
        outdir / f"{asn_lower}_asn.fits",
        config.asn_id,
        names,
        instrument=det.instrument,
        detector=det.detector,
        built_by="autodriz.simulate",
    )

    catalog_path = outdir / f"{asn_lower}_refcat.ecsv"
    columns = ["source_id", "ra", "dec", "ra_error", "dec_error", "pmra", "pmdec", "ref_epoch", "phot_g_mean_mag"]
    if "pmra_error" in stars.colnames:
        columns[7:7] = ["pmra_error", "pmdec_error"]
    refcat = stars[np.asarray(stars["in_catalog"], dtype=bool)][columns]
    refcat.meta["comments"] = [
        f"Simulated Gaia-like reference catalog for {config.asn_id.upper()} (autodriz.simulate)",
        "ra/dec at ref_epoch (J2016.0); pmra includes cos(dec); errors and proper motions in mas(/yr)",
    ]
    refcat.write(catalog_path, format="ascii.ecsv", overwrite=True)

    epoch_mid = float(np.mean([e["info"].epoch for e in exposures]))
    ra_mid, dec_mid = positions_at_epoch(stars, epoch_mid)
    truth["stars"] = {
        "epoch": epoch_mid,
        "source_id": [int(s) for s in stars["source_id"]],
        "ra": ra_mid.tolist(),
        "dec": dec_mid.tolist(),
        "mag": np.asarray(stars["phot_g_mean_mag"]).tolist(),
    }
    truth_path = outdir / f"{asn_lower}_truth.json"
    truth_path.write_text(json.dumps(truth, indent=1, default=_json_default), encoding="utf-8")

    return SimulatedVisit(
        directory=outdir,
        asn_path=asn_path,
        flt_paths=tuple(flt_paths),
        flc_paths=tuple(flc_paths),
        truth_path=truth_path,
        catalog_path=catalog_path,
        jref_dir=jref_dir,
        mdriztab_path=mdriztab_path,
    )


def _offset_mas(pos: tuple[float, float], ref: tuple[float, float]) -> tuple[float, float]:
    """Tangent-plane (east, north) offset of ``pos`` from ``ref``, mas."""
    xi, eta = _project(np.array([pos[0]]), np.array([pos[1]]), *ref)
    return float(xi[0] * _MAS_PER_RAD), float(eta[0] * _MAS_PER_RAD)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer | np.bool_):
        return obj.item()
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
