"""What the archive expects in delivered files beyond the WCS: final CR flags, S_REGION, DRIZCORR.

runastrodriz drizzles the exposures in place, so the FLT/FLC it hands back carry the
cosmic-ray flags of the final AstroDrizzle run (DQ bit ``crbit``, 4096 for ACS and WFC3,
cleared first by ``resetbits``), ``DRIZCORR = 'COMPLETE'`` and ``S_REGION``/``WCSTYPE`` in the
SCI headers; its DRZ/DRC carry ``S_REGION`` too (``drizzlepac.haputils.processing_utils``).
autodriz drizzles working copies and rebuilds the originals from the untouched input, so these
functions carry those results over. The pure functions work on arrays; :func:`add_sregion` is
the only one that touches a file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from scipy.spatial import ConvexHull

logger = logging.getLogger(__name__)

#: Above this many separate covered regions, one polygon around all of them is written: the
#: archive wants a footprint, not a census of specks.
MAX_REGIONS = 16


def merge_cr_flags(original_dq: np.ndarray, drizzled_dq: np.ndarray, crbit: int) -> np.ndarray:
    """The DQ to deliver: the original's, with the ``crbit`` flags of the final drizzle.

    AstroDrizzle run in place clears ``crbit`` in every pixel (``resetbits``) and sets it where
    its cosmic-ray step flags a pixel; every other bit is left as it was. Taking that one bit
    from the drizzled copy and all others from the original reproduces it exactly, whatever
    else happened to the working copy.

    Parameters
    ----------
    original_dq : ndarray
        DQ array of the original exposure (one chip).
    drizzled_dq : ndarray
        DQ array of the working copy after the final AstroDrizzle run (same chip).
    crbit : int
        The cosmic-ray bit AstroDrizzle was run with (``crbit``, also its ``resetbits``).

    Returns
    -------
    ndarray
        New array, dtype of ``original_dq``.

    Raises
    ------
    ValueError
        The arrays differ in shape (the copy is not of this exposure).
    """
    if original_dq.shape != drizzled_dq.shape:
        raise ValueError(f"DQ shapes differ: original {original_dq.shape}, drizzled copy {drizzled_dq.shape}")
    bit = original_dq.dtype.type(crbit)
    return (original_dq & ~bit) | (drizzled_dq.astype(original_dq.dtype) & bit)


def row_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every run of True pixels along the rows of ``mask``: (row, first column, column after), row-major.

    One pass over the mask (its edges), never a label image: a drizzled product's 18 Mpixel
    footprint has a few thousand runs.
    """
    ny, nx = mask.shape
    # Each row with one False column after it, so that no run continues into the next row.
    flat = np.zeros(ny * (nx + 1) + 1, dtype=np.int8)
    flat[1:].reshape(ny, nx + 1)[:, :nx] = mask
    edges = np.flatnonzero(np.diff(flat))
    starts, stops = edges[0::2], edges[1::2]
    rows = starts // (nx + 1)
    return rows, starts - rows * (nx + 1), stops - rows * (nx + 1)


def run_components(rows: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Component of each run (:func:`row_runs`): runs of adjacent rows that share a column are
    one region, as 4-connected pixels are. Labels are the smallest run index of each region."""
    parent = list(range(len(rows)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    firsts = np.flatnonzero(np.diff(rows, prepend=-2))
    lasts = np.append(firsts[1:], len(rows))
    for k in range(len(firsts) - 1):
        if rows[firsts[k + 1]] != rows[firsts[k]] + 1:
            continue
        # The runs of two rows, each sorted by column: walk both, joining the overlapping ones.
        i, j = int(firsts[k]), int(firsts[k + 1])
        while i < lasts[k] and j < lasts[k + 1]:
            if starts[i] < stops[j] and starts[j] < stops[i]:
                a, b = root(i), root(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            if stops[i] <= stops[j]:
                i += 1
            else:
                j += 1
    return np.array([root(i) for i in range(len(rows))], dtype=np.int64)


def footprint_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """Polygons, in 0-based pixel coordinates, that together contain every True pixel whole.

    One polygon per contiguous region (4-connected, as drizzlepac's ``SkyFootprint`` labels
    them), each the convex hull of its pixels' corners, counter-clockwise in (x, y). drizzlepac
    traces each region's edge and simplifies it by up to 10 pixels, which can cut off covered
    pixels near corners; a hull cannot, at the price of including notches (e.g. an unfilled
    corner of a chip gap) in the footprint.

    Parameters
    ----------
    mask : ndarray of bool
        Covered pixels (WHT > 0 of a drizzled product).

    Returns
    -------
    list of ndarray
        Each ``(n, 2)`` array of (x, y) vertices, not closed; [] for an empty mask. Regions in
        the order of their first pixel (row-major).
    """
    mask = np.asarray(mask, dtype=bool)
    rows, starts, stops = row_runs(mask)
    if not len(rows):
        return []
    labels = run_components(rows, starts, stops)
    regions = np.unique(labels)
    if len(regions) > MAX_REGIONS:
        labels, regions = np.zeros_like(labels), np.zeros(1, dtype=labels.dtype)
    polygons = []
    for region in regions:
        mine = labels == region
        r, first, last = rows[mine], starts[mine], stops[mine] - 1
        # Only the first and last pixel of each row can be hull vertices: every other pixel of
        # the row lies between them.
        row_starts = np.flatnonzero(np.diff(r, prepend=-1))
        ys = r[row_starts]
        xs_first = np.minimum.reduceat(first, row_starts)
        xs_last = np.maximum.reduceat(last, row_starts)
        xs = np.concatenate([xs_first, xs_last])
        ys = np.concatenate([ys, ys])
        corners = np.unique(
            np.concatenate([np.column_stack([xs + dx, ys + dy]) for dx in (-0.5, 0.5) for dy in (-0.5, 0.5)]),
            axis=0,
        )
        polygons.append(corners[ConvexHull(corners).vertices])
    return polygons


def sregion_text(polygons: list[np.ndarray], wcs: WCS) -> str:
    """``S_REGION`` value as drizzlepac writes it: ``POLYGON ICRS ra dec ...`` per region, closed."""
    parts = []
    for poly in polygons:
        closed = np.vstack([poly, poly[:1]])
        sky = wcs.all_pix2world(closed, 0)
        parts.append("POLYGON ICRS " + " ".join(f"{ra} {dec}" for ra, dec in sky) + " ")
    return "".join(parts)


def add_sregion(product: Path) -> str | None:
    """Write ``S_REGION`` (footprint of WHT > 0) into the SCI header of a drizzled product.

    Returns the value written, or None when nothing is covered (drizzlepac writes none then).
    """
    with fits.open(product, mode="update") as hdul:
        sci = hdul["SCI"]
        polygons = footprint_polygons(hdul["WHT"].data > 0)
        if not polygons:
            logger.warning("%s: no pixel has weight > 0; no S_REGION", product.name)
            return None
        # The drizzled frame is a plain TAN projection: straight pixel edges are great circles.
        value = sregion_text(polygons, WCS(sci.header))
        sci.header["S_REGION"] = (value, "spatial footprint")
    logger.info("%s: S_REGION with %d polygon(s) around the WHT > 0 area", product.name, len(polygons))
    return value


def exposure_sregion(hdul: fits.HDUList, extver: int) -> str:
    """``S_REGION`` of one SCI chip of an FLT/FLC, as drizzlepac's ``compute_sregion`` writes it.

    The chip's corners (pixel centres) through its whole primary WCS (SIP and lookup tables
    included), in stwcs's ``calc_footprint(center=True)`` order, closed by the first corner.
    Written here rather than by calling ``compute_sregion``, which insists on a file opened in
    update mode, while the WCS update builds each delivered file in memory.
    """
    from stwcs.wcsutil import HSTWCS

    corners = HSTWCS(hdul, ext=("SCI", extver)).calc_footprint(center=True)
    # drizzlepac formats each number with '{}' (str of the float64): the same text, to the digit.
    return "POLYGON ICRS " + "".join(f"{ra} {dec} " for ra, dec in (*corners, corners[0]))
