"""Post-fit residuals: cross-match the fitted sources with the catalog, measure, clip (pure).

A fit is judged on its own terms, not on tweakwcs' report: every exposure's sources are put on
the sky through the fitted WCS, projected on the tangent plane at the field centre
(:func:`autodriz.skygeom.tangent_arcsec`), matched one source per catalog star within a radius,
and the residuals (image minus catalog, mas) are clipped at 3σ before the RMS is taken. The
result is a :class:`Residuals` record that :func:`autodriz.astrometry.fit.absolute_fit` turns
into :class:`~autodriz.fitquality.FitStatistics`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.table import Table
from astropy.wcs import WCS

from autodriz import catalogs as catmod
from autodriz.skygeom import tangent_arcsec

if TYPE_CHECKING:
    from autodriz.astrometry.fit import ExposureSources


@dataclass(frozen=True)
class Residuals:
    """Cross-match of the fitted sources with the catalog, after clipping.

    Attributes
    ----------
    n_matches : int
        Matches kept.
    rms_mas, rms_ra_mas, rms_dec_mas : float
        RMS of the kept residuals (total, east, north); NaN without matches.
    img_mag, ref_mag : numpy.ndarray
        Magnitudes of the kept matches (image, catalog), for the magnitude correlation.
    per_exposure : list of dict
        ``exposure``, ``n_matches``, ``rms_mas``, ``mean_offset_mas`` per exposure (report).
    vectors : dict
        Every kept match (strided to ≤ ~3000) for the report's residual plots.
    """

    n_matches: int
    rms_mas: float
    rms_ra_mas: float
    rms_dec_mas: float
    img_mag: np.ndarray
    ref_mag: np.ndarray
    per_exposure: list[dict[str, Any]]
    vectors: dict[str, Any]


def nearest_unique(dist: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Indices of the sources kept when each catalog star keeps only its nearest source.

    Parameters
    ----------
    dist : numpy.ndarray
        Distance of each source to its nearest star (``inf`` when none within the radius, as
        scipy's ``cKDTree.query`` gives).
    idx : numpy.ndarray
        Index of that star.

    Returns
    -------
    numpy.ndarray
        Source indices, one per matched star, in the stars' order.
    """
    ok = np.isfinite(dist)
    order = np.argsort(dist[ok])
    src_idx = np.flatnonzero(ok)[order]
    _, first = np.unique(idx[src_idx], return_index=True)
    return src_idx[first]


def clip_residuals(d: np.ndarray, nsigma: float = 3.0, iterations: int = 3) -> np.ndarray:
    """Mask of residual vectors within ``nsigma`` × their RMS, iterated (a few wrong matches
    must not dominate the RMS).

    Parameters
    ----------
    d : numpy.ndarray
        (N, 2) residuals.
    nsigma : float
        Clipping radius in RMS units.
    iterations : int
        At most this many passes; stops early when the mask no longer changes or fewer than
        3 residuals are left.

    Returns
    -------
    numpy.ndarray
        Boolean mask, True = kept.
    """
    keep = np.ones(len(d), dtype=bool)
    for _ in range(iterations):
        if keep.sum() < 3:
            break
        r = np.hypot(d[keep, 0], d[keep, 1])
        rms = math.sqrt(float(np.mean(r**2)))
        new = np.hypot(d[:, 0], d[:, 1]) <= max(nsigma * rms, 1e-6)
        if (new == keep).all():
            break
        keep = new
    return keep


def _rms(d: np.ndarray) -> float:
    return math.sqrt(float(np.mean(np.sum(d**2, axis=1))))


def post_fit_residuals(
    exposures: Sequence[ExposureSources],
    wcs: Mapping[tuple[int, int], WCS],
    masks: Mapping[tuple[int, int], np.ndarray],
    ref: Table,
    region: catmod.Region,
    radius_arcsec: float,
) -> Residuals:
    """Cross-match every exposure's sources (fitted WCS) with the catalog; residuals in mas.

    Parameters
    ----------
    exposures : sequence of ExposureSources
        The fitted exposures.
    wcs : mapping
        (exposure, chip) → fitted WCS.
    masks : mapping
        (exposure, chip) → sources used (all when a key is missing).
    ref : astropy.table.Table
        Catalog stars (``ra``, ``dec``, ``mag``).
    region : Region
        Its centre is the tangent point.
    radius_arcsec : float
        Match radius.
    """
    from scipy.spatial import cKDTree

    ref_xy = np.column_stack(tangent_arcsec(ref["ra"], ref["dec"], region.ra, region.dec))
    tree = cKDTree(ref_xy)
    ref_mag = np.asarray(ref["mag"], dtype=float)
    all_d, all_img_mag, all_ref_mag, all_xy, all_sky, all_exp = [], [], [], [], [], []
    per = []
    for i, exp in enumerate(exposures):
        d_exp = []
        for j, chip in enumerate(exp.chips):
            src = chip.sources[masks[(i, j)]] if (i, j) in masks else chip.sources
            if len(src) == 0:
                continue
            ra, dec = wcs[(i, j)].all_pix2world(np.asarray(src["x"]), np.asarray(src["y"]), 0)
            xy = np.column_stack(tangent_arcsec(ra, dec, region.ra, region.dec))
            dist, idx = tree.query(xy, k=1, distance_upper_bound=radius_arcsec)
            if not np.isfinite(dist).any():
                continue
            # One catalog star, one source: keep the nearest source per star.
            sel = nearest_unique(dist, idx)
            d = (xy[sel] - ref_xy[idx[sel]]) * 1000.0
            d_exp.append(d)
            all_xy.append(ref_xy[idx[sel]])
            all_sky.append(np.column_stack([np.asarray(ref["ra"], float)[idx[sel]], np.asarray(ref["dec"], float)[idx[sel]]]))
            all_exp.append(np.full(len(sel), i))
            all_img_mag.append(np.asarray(src["mag"], dtype=float)[sel])
            all_ref_mag.append(ref_mag[idx[sel]])
        d_exp_arr = np.concatenate(d_exp) if d_exp else np.zeros((0, 2))
        all_d.append(d_exp_arr)
        per.append(d_exp_arr)
    d_all = np.concatenate(all_d) if all_d else np.zeros((0, 2))
    keep = clip_residuals(d_all)
    d_kept = d_all[keep]
    n = int(keep.sum())
    per_stats = []
    pos = 0
    for i, d in enumerate(per):
        dd = d[keep[pos : pos + len(d)]]
        pos += len(d)
        per_stats.append({
            "exposure": exposures[i].rootname,
            "n_matches": len(dd),
            "rms_mas": round(_rms(dd), 3) if len(dd) else None,
            "mean_offset_mas": [round(float(dd[:, 0].mean()), 3), round(float(dd[:, 1].mean()), 3)] if len(dd) else None,
        })
    xy_kept = np.concatenate(all_xy)[keep] if all_xy else np.zeros((0, 2))
    sky_kept = np.concatenate(all_sky)[keep] if all_sky else np.zeros((0, 2))
    exp_kept = np.concatenate(all_exp)[keep] if all_exp else np.zeros(0, int)
    # Every matched star for the report's residual and overlay plots; a stride keeps very rich
    # fields to a few thousand points (the JSON stays small).
    stride = max(1, math.ceil(n / 3000))
    vectors = {
        "x": [round(float(v), 4) for v in xy_kept[::stride, 0]],
        "y": [round(float(v), 4) for v in xy_kept[::stride, 1]],
        "dx": [round(float(v), 3) for v in d_kept[::stride, 0]],
        "dy": [round(float(v), 3) for v in d_kept[::stride, 1]],
        "ra": [round(float(v), 8) for v in sky_kept[::stride, 0]],
        "dec": [round(float(v), 8) for v in sky_kept[::stride, 1]],
        "exposure": [exposures[int(k)].rootname for k in exp_kept[::stride]],
        "units": "x, y: catalog star on the tangent plane at the field centre (arcsec, x east); "
                 "dx, dy: image minus catalog (mas); ra, dec: catalog (deg)",
    }
    return Residuals(
        n_matches=n,
        rms_mas=_rms(d_kept) if n else math.nan,
        rms_ra_mas=math.sqrt(float(np.mean(d_kept[:, 0] ** 2))) if n else math.nan,
        rms_dec_mas=math.sqrt(float(np.mean(d_kept[:, 1] ** 2))) if n else math.nan,
        img_mag=np.concatenate(all_img_mag)[keep] if all_img_mag else np.zeros(0),
        ref_mag=np.concatenate(all_ref_mag)[keep] if all_ref_mag else np.zeros(0),
        per_exposure=per_stats,
        vectors=vectors,
    )
