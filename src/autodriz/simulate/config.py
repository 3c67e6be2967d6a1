"""What to simulate (:class:`SimulationConfig`) and what a simulation wrote (:class:`SimulatedVisit`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from autodriz.instruments import REGISTRY
from autodriz.simulate.detectors import (
    DETECTORS,
)


_GAIA_EPOCH = 2016.0


#: The options that make the simulated world exact: every exposure shares one pointing error,
#: updatewcs's distortion is the truth's, and the catalog lists every star with its exact proper
#: motion. For tests of the machinery that compare with the truth to a fraction of a mas; every
#: accuracy claim is measured with the realistic defaults instead.
EXACT_WORLD: Mapping[str, Any] = MappingProxyType({
    "relative_error_mas": 0.0,
    "relative_rotation_arcsec": 0.0,
    "distortion_residual_mas": 0.0,
    "gaia_dr3_errors": False,
    "no_pm_fraction": 0.0,
})


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
        RMS per-axis random jitter per exposure added to the common shift, mas. Default 5: dither
        offsets agree with the commanded ones to 2–5 mas RMS within an orbit and ~10–15 mas from
        visit to visit (DrizzlePac Handbook, App. B.3 "Precision of Commanded Offsets"); a visit's
        exposures span orbits with guide-star re-acquisitions, so the upper end. Set 0 for a
        visit whose exposures share one pointing error exactly.
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
        exposures in ``shared/data`` is shift and roll together). Default 3.5: the dispersion of
        the rotations measured within an orbit, 0.00097° (ACS ISR 2005-07, Koekemoer et al.), which
        moves the corner of a full ACS/WFC mosaic by ~2 mas.
    distortion_residual_mas : float
        RMS, over a full chip, of a smooth 2nd/3rd-order displacement field that the true
        distortion has and the reference distortion model lacks (so updatewcs is no longer exact
        and no linear fit can remove it). The field is a property of the detector: the same for
        every exposure, drawn from ``seed``; a subarray sees the part under it (little, near
        the chip centre). ~5 mas is the published accuracy of the ACS/WFC solution
        (ACS ISR 2004-15; Kozhurina-Platais et al.). Default 5.
    gaia_dr3_errors : bool
        Make the reference catalog as Gaia DR3 is: position and proper-motion errors by G
        magnitude (Lindegren et al. 2021, Table 4: 0.02 mas and 0.02 mas/yr at G = 15, 0.4 mas
        and 0.5 mas/yr at G = 20, 1.0 mas and 1.4 mas/yr at G = 21) *drawn* into the catalog
        values (the stars move with their true motion), ``pmra_error``/``pmdec_error`` columns,
        and no star fainter than G = 21 (the catalog's limit). Default True; False gives exact
        proper motions and every star listed.
    no_pm_fraction : float
        Fraction of the catalog stars fainter than G = 19 given a two-parameter solution (no
        proper motion, position error ×3), as ~20 % of Gaia DR3 sources are (1.47 of 1.81 billion
        have 5/6-parameter solutions: Gaia Collaboration, Vallenari et al. 2023). Default 0.2.
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
        Fraction of pixels hit by cosmic rays (not flagged in DQ). Default 0.007: 1.75 % per
        1000 s at the default 400 s (ACS ISR 2002-07, Riess: 1.5–3 % of WFC pixels per 1000 s);
        scale it with ``exptime``.
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
    relative_error_mas: float = 5.0
    skew_error: float = 0.0
    relative_rotation_arcsec: float = 3.5
    distortion_residual_mas: float = 5.0
    gaia_dr3_errors: bool = True
    no_pm_fraction: float = 0.2
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
