"""The exposures' chips and sources as the fits see them, and the sky maths on them (pure).

:class:`ExposureSources` / :class:`Chip` hold what was read and detected (each chip's WCS and
sources, in pixels); the functions here work on them and on WCS objects only — no files, no
tweakwcs: which sources are real (:func:`confirm_sources`), which copy of a star a group fit
keeps (:func:`one_copy_per_star`), centroid weights, and how a fit moved the chips
(:func:`transfer_correction`, :func:`exposure_corrections_mas`, :func:`radial_offset_arcsec`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.table import Table
from astropy.time import Time
from astropy.wcs import WCS

from autodriz import catalogs as catmod
from autodriz.detect import confirm_across_exposures
from autodriz.skygeom import offset_mas, unit_vectors

#: (exposure index, chip index): how chips are keyed in the fits' mappings.
ChipKey = tuple[int, int]


@dataclass
class Chip:
    """One chip as the fits see it: its starting WCS and the sources detected on it (pixels)."""

    extver: int
    wcs: WCS
    sources: Table
    shape: tuple[int, int]


@dataclass
class ExposureSources:
    """One exposure's chips, where they were read, and the originals its fitted WCS goes to."""

    rootname: str
    detect_path: Path
    originals: tuple[Path, ...]  # FLT and FLC originals, keys of default.copies
    expstart: float | None
    chips: list[Chip] = field(default_factory=list)


def starting_wcs(exposures: Sequence[ExposureSources]) -> dict[ChipKey, WCS]:
    """Every chip's starting WCS, keyed (exposure, chip)."""
    return {(i, j): chip.wcs for i, e in enumerate(exposures) for j, chip in enumerate(e.chips)}


def all_sources(exposures: Sequence[ExposureSources]) -> dict[ChipKey, np.ndarray]:
    """Masks that keep every detected source."""
    return {(i, j): np.ones(len(ch.sources), dtype=bool) for i, e in enumerate(exposures) for j, ch in enumerate(e.chips)}


def pixel_scale_arcsec(wcs: WCS) -> float:
    """Mean pixel scale of a celestial WCS at its reference point, arcsec."""
    from astropy.wcs.utils import proj_plane_pixel_scales

    return float(np.mean(proj_plane_pixel_scales(wcs.celestial))) * 3600.0


def observation_epoch(exposures: Sequence[ExposureSources]) -> float | None:
    """Decimal year of the exposures' mean EXPSTART; None when no exposure has one."""
    mjds = [e.expstart for e in exposures if e.expstart is not None]
    if not mjds:
        return None
    return float(Time(float(np.mean(mjds)), format="mjd").decimalyear)


def confirm_sources(exposures: Sequence[ExposureSources], wcs: Mapping[tuple[int, int], WCS], tolerance_arcsec: float) -> dict[tuple[int, int], np.ndarray]:
    """Masks of sources seen in at least two exposures (all True for a single exposure)."""
    positions = []
    slices = []
    for i, exp in enumerate(exposures):
        ras, decs = [], []
        for j, chip in enumerate(exp.chips):
            if len(chip.sources):
                ra, dec = wcs[(i, j)].all_pix2world(np.asarray(chip.sources["x"]), np.asarray(chip.sources["y"]), 0)
            else:
                ra, dec = np.zeros(0), np.zeros(0)
            ras.append(ra)
            decs.append(dec)
            slices.append((i, j, len(ra)))
        positions.append((np.concatenate(ras) if ras else np.zeros(0), np.concatenate(decs) if decs else np.zeros(0)))
    masks = confirm_across_exposures(positions, tolerance_arcsec)
    out: dict[tuple[int, int], np.ndarray] = {}
    offsets: dict[int, int] = {}
    for i, j, n in slices:
        start = offsets.get(i, 0)
        out[(i, j)] = masks[i][start : start + n]
        offsets[i] = start + n
    return out


def radial_offset_arcsec(exposures: Sequence[ExposureSources], before: Mapping[tuple[int, int], WCS], after: Mapping[tuple[int, int], WCS]) -> float:
    """Mean distance the fit moved the chips' centres, arcsec."""
    seps = []
    for key, w0 in before.items():
        ny, nx = exposures[key[0]].chips[key[1]].shape
        ra0, dec0 = w0.wcs_pix2world([[(nx - 1) / 2, (ny - 1) / 2]], 0)[0]
        ra1, dec1 = after[key].wcs_pix2world([[(nx - 1) / 2, (ny - 1) / 2]], 0)[0]
        seps.append(float(catmod.angular_distance(ra1, dec1, ra0, dec0)) * 3600.0)
    return float(np.mean(seps)) if seps else math.nan


def exposure_corrections_mas(
    exposures: Sequence[ExposureSources], before: Mapping[tuple[int, int], WCS], after: Mapping[tuple[int, int], WCS]
) -> list[tuple[float, float]]:
    """Per exposure, the (east, north) correction the fit applied at its first chip's centre, mas."""
    out = []
    for i, exp in enumerate(exposures):
        ny, nx = exp.chips[0].shape
        ra0, dec0 = before[(i, 0)].wcs_pix2world([[(nx - 1) / 2, (ny - 1) / 2]], 0)[0]
        ra1, dec1 = after[(i, 0)].wcs_pix2world([[(nx - 1) / 2, (ny - 1) / 2]], 0)[0]
        east, north = offset_mas(ra1, dec1, ra0, dec0)
        out.append((float(east), float(north)))
    return out


def one_copy_per_star(
    exposures: Sequence[ExposureSources],
    wcs: Mapping[tuple[int, int], WCS],
    masks: Mapping[tuple[int, int], np.ndarray],
    radius_arcsec: float,
) -> dict[tuple[int, int], np.ndarray]:
    """Keep each star once in a group fit, spreading the kept copies over the exposures.

    tweakwcs fits a group's exposures as one catalog, so a star seen in N exposures is in it N
    times, and its matcher pairs each reference star with *one* of those copies — the closest to
    where its 2-D-histogram offset estimate puts the star. With undersampled centroids (WFC3/IR:
    ~0.2 px pixel-phase scatter, different in each dither) that choice pulls the whole fit towards
    the histogram's estimate, ~0.1 px (12 mas on a simulated WFC3/IR visit, 0.6 mas with one copy
    per star). The relative fit has already put the exposures on one frame, so sources within
    ``radius_arcsec`` of each other on the sky (through ``wcs``) are one star; of its copies, the
    k-th star keeps copy ``k mod n`` so that every exposure keeps about 1/n of its stars (an
    exposure left without sources would fail the fit).

    Returns
    -------
    dict
        (exposure, chip) → boolean array over the ``masks``-selected sources: True = keep.
    """
    from scipy.spatial import cKDTree

    radius = 2.0 * math.sin(math.radians(radius_arcsec / 3600.0) / 2.0)  # chord length on the unit sphere
    keep: dict[tuple[int, int], np.ndarray] = {}
    star_xyz: list[np.ndarray] = []  # first position seen of every star so far
    members: list[list[tuple[tuple[int, int], int]]] = []  # star → its copies
    for i, exp in enumerate(exposures):
        for j, chip in enumerate(exp.chips):
            src = chip.sources[masks[(i, j)]]
            keep[(i, j)] = np.zeros(len(src), dtype=bool)
            if len(src) == 0:
                continue
            ra, dec = wcs[(i, j)].all_pix2world(np.asarray(src["x"]), np.asarray(src["y"]), 0)
            xyz = unit_vectors(ra, dec)
            star = np.full(len(src), -1)
            if star_xyz:
                dist, idx = cKDTree(np.vstack(star_xyz)).query(xyz, distance_upper_bound=radius)
                star = np.where(np.isfinite(dist), idx, -1)
            for n, s in enumerate(star):
                if s < 0:
                    star_xyz.append(xyz[n : n + 1])
                    members.append([((i, j), n)])
                else:
                    members[s].append(((i, j), n))
    for k, copies in enumerate(members):
        key, n = copies[k % len(copies)]
        keep[key][n] = True
    return keep


def centroid_weights(sources: Table, floor_pix: float, scale_arcsec: float) -> np.ndarray:
    """1/σ² (mas⁻²) of each source's centroid: FWHM / (2.35 · S/N), at least ``floor_pix``."""
    n = len(sources)
    fwhm = np.asarray(sources["fwhm"], dtype=float) if "fwhm" in sources.colnames else np.full(n, np.nan)
    snr = np.asarray(sources["snr"], dtype=float) if "snr" in sources.colnames else np.full(n, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma_pix = fwhm / (2.35 * snr)
    sigma_pix = np.where(np.isfinite(sigma_pix) & (sigma_pix > floor_pix), sigma_pix, floor_pix)
    return 1.0 / np.square(sigma_pix * scale_arcsec * 1000.0)


def transfer_correction(src_before: WCS, src_after: WCS, target: WCS) -> WCS:
    """Apply to ``target`` the sky rotation+shift that took ``src_before`` to ``src_after``.

    Used only for a chip with no sources: it moves with its sibling chip. The correction is
    evaluated at the sibling's CRVAL (small-angle approximation: good to < 0.1 mas for
    corrections of a few arcsec across one detector).
    """
    out = target.deepcopy()
    ra0, dec0 = src_before.wcs.crval
    ra1, dec1 = src_after.wcs.crval
    cosd = math.cos(math.radians(dec0))
    # Linear part change: R = CD_after · CD_before⁻¹ (rotation/scale on the sky).
    m = src_after.wcs.cd @ np.linalg.inv(src_before.wcs.cd) if src_before.wcs.has_cd() else np.eye(2)
    t_ra, t_dec = target.wcs.crval
    d = np.array([(t_ra - ra0) * cosd, t_dec - dec0])
    d2 = m @ d
    out.wcs.crval = [ra1 + d2[0] / math.cos(math.radians(dec1)), dec1 + d2[1]]
    if target.wcs.has_cd():
        out.wcs.cd = m @ target.wcs.cd
    out.wcs.set()
    return out
