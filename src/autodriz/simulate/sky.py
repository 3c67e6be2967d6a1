"""The simulated sky: stars, Gaia DR3-like catalog errors, galaxies, PSF rendering, saturation, cosmic rays."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
import numpy as np
from astropy.io import ascii as astropy_ascii
from astropy.table import Table, vstack
from astropy.wcs import WCS
from scipy.special import ndtr
from autodriz.skygeom import deproject as _deproject
from autodriz.skygeom import project as _project
from autodriz.simulate.config import (
    SimulationConfig,
    _GAIA_EPOCH,
)

logger = logging.getLogger(__name__)


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
