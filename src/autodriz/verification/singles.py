"""The verification's common output frame and single-exposure drizzles (in memory).

Every exposure is drizzled *alone* onto the same output frame with the lightweight ``drizzle``
library: DQ-flagged pixels get zero weight, count units become count rates, nothing else is
done to the pixels. The frame is a tangent plane at the visit's centre, aligned with the first
exposure's first chip, at its native pixel scale; only the rectangles that hold data (*tiles*)
are allocated, all in the frame's pixel coordinates.

The pixel maps use the full distortion model of each chip (SIP, NPOL, D2IM as astropy reads
them from the file). Evaluating that for every pixel costs ~6 s per ACS/WFC chip, so the smooth
part is evaluated on a grid every :data:`PIXMAP_STEP` pixels and interpolated, while the
column-wise D2IM correction (not smooth) is applied exactly per pixel; the difference from the
exact map is below 1e-3 pixel. The exposures are read by :mod:`autodriz.verifydriz`.

On a large frame with many stars, :func:`source_frame` keeps only squares of the frame around
them; the pixel maps are then interpolated for the input windows that land in those squares
only (:meth:`PixmapGrid.window`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.wcs import WCS
from scipy import ndimage

from autodriz.skygeom import mean_direction
from autodriz.verification.results import Tile

if TYPE_CHECKING:
    from autodriz.verifydriz import ExposureData

__all__ = [
    "PIXMAP_STEP",
    "OutputFrame",
    "PixmapGrid",
    "common_frame",
    "drizzle_singles",
    "fast_pixmap",
    "pixmap_grid",
    "source_frame",
]

#: Grid step (input pixels) of the smooth part of the pixel maps.
PIXMAP_STEP = 8


# --------------------------------------------------------------------------------------------
# the common frame
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputFrame:
    """The common output frame and the rectangles of it that hold data.

    Attributes
    ----------
    wcs : WCS
        Tangent-plane WCS of the whole frame (pixel (0, 0) is the first pixel of the frame).
    shape : (int, int)
        (ny, nx) of the whole frame (never allocated).
    tiles : tuple of (x0, y0, nx, ny)
        Disjoint data rectangles.
    scale_arcsec : float
        Pixel scale.
    """

    wcs: WCS
    shape: tuple[int, int]
    tiles: tuple[tuple[int, int, int, int], ...]
    scale_arcsec: float

    def tile_wcs(self, index: int) -> WCS:
        """WCS of one tile (the frame's WCS with CRPIX moved)."""
        x0, y0, nx, ny = self.tiles[index]
        w = self.wcs.deepcopy()
        w.wcs.crpix = [w.wcs.crpix[0] - x0, w.wcs.crpix[1] - y0]
        w.array_shape = (ny, nx)
        return w

    @property
    def pixels(self) -> int:
        """Allocated pixels per image."""
        return sum(t[2] * t[3] for t in self.tiles)


def _edge_points(shape: tuple[int, int], n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    ny, nx = shape
    t = np.linspace(0.0, 1.0, n)
    xs = np.concatenate([t * (nx - 1), np.full(n, nx - 1.0), (1 - t) * (nx - 1), np.zeros(n)])
    ys = np.concatenate([np.zeros(n), t * (ny - 1), np.full(n, ny - 1.0), (1 - t) * (ny - 1)])
    return xs, ys


def _merge_boxes(boxes: list[list[float]]) -> list[list[float]]:
    """Union overlapping (x0, y0, x1, y1) boxes until they are disjoint."""
    boxes = [list(b) for b in boxes]
    merged = True
    while merged:
        merged = False
        out: list[list[float]] = []
        for b in boxes:
            for o in out:
                if b[0] <= o[2] and o[0] <= b[2] and b[1] <= o[3] and o[1] <= b[3]:
                    o[0], o[1] = min(o[0], b[0]), min(o[1], b[1])
                    o[2], o[3] = max(o[2], b[2]), max(o[3], b[3])
                    merged = True
                    break
            else:
                out.append(b)
        boxes = out
    return boxes


def common_frame(
    exposures: Sequence[ExposureData], *, scale_arcsec: float | None = None, margin: int = 4, gap: int = 64
) -> OutputFrame:
    """One tangent-plane frame holding every chip of every exposure.

    Parameters
    ----------
    exposures : sequence of ExposureData
    scale_arcsec : float, optional
        Output pixel scale; default the first exposure's native scale.
    margin : int
        Pixels added around every chip's footprint.
    gap : int
        Chip footprints closer than this are put in one tile (fewer, larger tiles).
    """
    first = exposures[0].chips[0]
    scale = float(scale_arcsec or exposures[0].pixel_scale_arcsec)
    ras, decs, polys = [], [], []
    for exp in exposures:
        for chip in exp.chips:
            xs, ys = _edge_points(chip.shape)
            ra, dec = chip.wcs.all_pix2world(xs, ys, 0)
            ras.append(ra)
            decs.append(dec)
            polys.append((ra, dec))
    crval = mean_direction(np.concatenate(ras), np.concatenate(decs))
    # Orientation of the first chip's y axis (ORIENTAT), so that chips fill their tiles.
    cd = first.wcs.pixel_scale_matrix
    orient = math.atan2(cd[0, 1], cd[1, 1])
    s = scale / 3600.0
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = list(crval)
    w.wcs.crpix = [0.0, 0.0]
    w.wcs.cd = s * np.array([[-math.cos(orient), math.sin(orient)], [math.sin(orient), math.cos(orient)]])
    w.wcs.set()
    boxes = []
    for ra, dec in polys:
        x, y = w.all_world2pix(ra, dec, 0)
        boxes.append([x.min() - margin - gap / 2, y.min() - margin - gap / 2, x.max() + margin + gap / 2,
                      y.max() + margin + gap / 2])
    boxes = _merge_boxes(boxes)
    boxes = [[b[0] + gap / 2, b[1] + gap / 2, b[2] - gap / 2, b[3] - gap / 2] for b in boxes]
    xmin = math.floor(min(b[0] for b in boxes))
    ymin = math.floor(min(b[1] for b in boxes))
    w.wcs.crpix = [1.0 - xmin, 1.0 - ymin]  # FITS 1-based: pixel 0 of the frame is xmin
    w.wcs.set()
    tiles = []
    for b in boxes:
        x0, y0 = math.floor(b[0]) - xmin, math.floor(b[1]) - ymin
        x1, y1 = math.ceil(b[2]) - xmin, math.ceil(b[3]) - ymin
        tiles.append((x0, y0, x1 - x0 + 1, y1 - y0 + 1))
    shape = (max(t[1] + t[3] for t in tiles), max(t[0] + t[2] for t in tiles))
    w.array_shape = shape
    return OutputFrame(w, shape, tuple(tiles), scale)


def _held(xy: np.ndarray, chosen: Sequence[tuple[int, int]], half: int, cell: int) -> int:
    """How many of the positions ``xy`` lie in the squares ``chosen`` (lattice indices)."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    hit = np.zeros(len(xy), bool)
    for a, b in chosen:
        x0, y0 = b * half, a * half
        hit |= (xy[:, 0] >= x0) & (xy[:, 0] < x0 + cell) & (xy[:, 1] >= y0) & (xy[:, 1] < y0 + cell)
    return int(hit.sum())


def source_frame(
    frame: OutputFrame,
    positions: Sequence[np.ndarray],
    *,
    cell: int = 320,
    regions: int = 4,
    min_per_exposure: int = 100,
) -> OutputFrame | None:
    """A sparser frame: ``cell``-pixel squares of ``frame`` where the exposures' stars are.

    A full ACS/WFC visit is ~18 M pixels per single drizzle; registration and focus need a
    few hundred well-measured stars spread over the frame. The frame is cut into
    ``regions`` × ``regions`` parts and in each the square (on a half-cell lattice) holding
    the most stars seen by at least two exposures is kept; squares are added for any exposure
    with fewer than ``min_per_exposure`` stars in them (an exposure with fewer than twice that
    on the frame: the whole frame, since a registration fit on a few dozen stars can be
    misled where the whole frame's hundreds are not). Where the stars are comes from the
    a posteriori detection (pixel positions, independent of the WCS verified), mapped with the
    WCS being verified: a misregistered exposure's stars still fall in the squares, moved.

    Parameters
    ----------
    frame : OutputFrame
        The whole common frame (:func:`common_frame`).
    positions : sequence of ndarray
        Per exposure, the ``(K, 2)`` frame pixel positions (x, y) of its detected stars.
    cell, regions, min_per_exposure : int

    Returns
    -------
    OutputFrame or None
        None when an exposure has too few stars, the squares would not hold
        ``min_per_exposure`` stars of every exposure, or would not be much smaller than
        ``frame``: then the whole frame is verified.
    """
    ny, nx = frame.shape
    half = cell // 2
    if len(positions) < 2 or ny < 2 * cell or nx < 2 * cell:
        return None
    nby, nbx = -(-ny // half), -(-nx // half)
    hists = []
    for xy in positions:
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        ok = np.isfinite(xy).all(axis=1) & (xy[:, 0] >= 0) & (xy[:, 0] < nx) & (xy[:, 1] >= 0) & (xy[:, 1] < ny)
        if ok.sum() < 2 * min_per_exposure:
            return None
        h = np.zeros((nby, nbx), np.int64)
        np.add.at(h, ((xy[ok, 1] // half).astype(int), (xy[ok, 0] // half).astype(int)), 1)
        # Squares on the half-cell lattice: 2 x 2 bins each; square (a, b) is bins a..a+1, b..b+1.
        hists.append(h[:-1, :-1] + h[1:, :-1] + h[:-1, 1:] + h[1:, 1:])
    counts = np.stack(hists)  # (n_exp, nby-1, nbx-1)
    present = (counts > 0).sum(axis=0)
    score = np.where(present >= 2, counts.sum(axis=0), 0)
    taken = np.zeros(score.shape, bool)
    chosen: list[tuple[int, int]] = []

    def take(a: int, b: int) -> None:
        chosen.append((a, b))
        # Squares overlapping this one (within one lattice step) can no longer be taken.
        taken[max(0, a - 1): a + 2, max(0, b - 1): b + 2] = True

    def best(values: np.ndarray, rows: slice, cols: slice) -> tuple[int, int] | None:
        v = np.where(taken[rows, cols], 0, values[rows, cols])
        if v.size == 0 or v.max() <= 0:
            return None
        a, b = np.unravel_index(int(np.argmax(v)), v.shape)
        return a + (rows.start or 0), b + (cols.start or 0)

    ra = np.linspace(0, score.shape[0], regions + 1).round().astype(int)
    rb = np.linspace(0, score.shape[1], regions + 1).round().astype(int)
    for i in range(regions):
        for j in range(regions):
            found = best(score, slice(ra[i], ra[i + 1]), slice(rb[j], rb[j + 1]))
            if found is not None:
                take(*found)
    # Every exposure needs its own stars in the squares (a small exposure of a mosaic may
    # miss the best squares of the regions).
    everywhere = slice(0, score.shape[0]), slice(0, score.shape[1])
    for e in range(counts.shape[0]):
        while _held(positions[e], chosen, half, cell) < min_per_exposure:
            found = best(np.where(present >= 2, counts[e], 0), *everywhere)
            if found is None:
                return None
            take(*found)
    tiles = []
    for a, b in sorted(chosen):
        x0, y0 = b * half, a * half
        tiles.append((x0, y0, min(cell, nx - x0), min(cell, ny - y0)))
    if not tiles or sum(t[2] * t[3] for t in tiles) > SPARSE_FRACTION * frame.pixels:
        return None
    return OutputFrame(frame.wcs, frame.shape, tuple(tiles), frame.scale_arcsec)


# --------------------------------------------------------------------------------------------
# drizzling
# --------------------------------------------------------------------------------------------


def _coarse_lookup(table: Any, step: int) -> bool:
    """A distortion lookup table whose cells are at least ``step`` pixels (smooth at that scale)."""
    return table is None or float(np.min(np.abs(table.cdelt))) >= step


def _upsample_into(
    out: np.ndarray, grid: np.ndarray, g0: float, step: int, shape: tuple[int, int]
) -> None:
    """Bilinear interpolation of a regular grid (nodes at ``g0 + k*step``, ``g0`` a negative
    multiple of ``step``) at every integer pixel, written into ``out`` of shape
    ``(ny, nb, step)`` with ``nb * step >= nx``.

    Separable: along y by a gather on the small grid, then along x by broadcasting the
    ``step`` fixed fractional weights over blocks of ``step`` pixels: two passes over the
    output, no per-pixel gathers and no full-size temporaries (this runs on 8 M pixels).
    """
    ny, _ = shape
    k0 = round(-g0 / step)
    nb = out.shape[1]
    ty = (np.arange(ny) - g0) / step
    iy = np.clip(np.floor(ty).astype(int), 0, grid.shape[0] - 2)
    fy = (ty - iy)[:, None]
    rows = grid[iy] * (1.0 - fy) + grid[iy + 1] * fy  # (ny, ngx)
    left = rows[:, k0 : k0 + nb]
    slope = rows[:, k0 + 1 : k0 + 1 + nb] - left
    frac = np.arange(step, dtype=np.float64) / step
    np.multiply(slope[:, :, None], frac, out=out)
    out += left[:, :, None]


@dataclass(frozen=True)
class PixmapGrid:
    """The smooth part of a chip's input → output pixel map on a grid every ``step`` pixels.

    Nodes are at input pixels ``g0 + k*step`` in x and y (``g0`` a negative multiple of
    ``step``, so the grid covers the chip with a margin); ``ox``/``oy`` are their output
    coordinates. :meth:`full` interpolates it at every pixel of the chip, :meth:`window` at
    those of a rectangle only.
    """

    ox: np.ndarray
    oy: np.ndarray
    g0: float
    step: int
    shape: tuple[int, int]
    #: A D2IM correction that changes from column to column: applied exactly per pixel, before
    #: the grid is interpolated.
    fine_d2im: bool
    wcs_in: WCS

    def full(self) -> np.ndarray:
        """The map at every pixel, ``(ny, nx, 2)``."""
        ny, nx = self.shape
        step, g0 = self.step, self.g0
        if not self.fine_d2im:
            nb = -(-nx // step)
            blocks = np.empty((ny, nb, step, 2), np.float64)
            _upsample_into(blocks[..., 0], self.ox, g0, step, self.shape)
            _upsample_into(blocks[..., 1], self.oy, g0, step, self.shape)
            full = blocks.reshape(ny, nb * step, 2)
            return full if nb * step == nx else np.ascontiguousarray(full[:, :nx])
        return self.window(0, ny, 0, nx)

    def window(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """The map at the pixels of rows ``r0:r1`` and columns ``c0:c1``, ``(r1-r0, c1-c0, 2)``.

        Bilinear in the grid as :meth:`full` (equal to rounding), for a part of the chip.
        """
        out = np.empty((r1 - r0, c1 - c0, 2), np.float64)
        if not self.fine_d2im:
            # Separable: along y on the grid's rows, then along x (two cheap gathers).
            ty = (np.arange(r0, r1) - self.g0) / self.step
            tx = (np.arange(c0, c1) - self.g0) / self.step
            iy = np.clip(np.floor(ty).astype(int), 0, self.ox.shape[0] - 2)
            ix = np.clip(np.floor(tx).astype(int), 0, self.ox.shape[1] - 2)
            fy = (ty - iy)[:, None]
            fx = tx - ix
            lo, hi = int(ix.min()), int(ix.max()) + 2
            jx = ix - lo
            for k, grid in enumerate((self.ox, self.oy)):
                rows = grid[iy, lo:hi] * (1.0 - fy) + grid[iy + 1, lo:hi] * fy
                out[..., k] = rows[:, jx] * (1.0 - fx) + rows[:, jx + 1] * fx
            return out
        yy, xx = np.mgrid[r0:r1, c0:c1]
        xy = self.wcs_in.det2im(np.column_stack([xx.ravel(), yy.ravel()]).astype(np.float64), 0)
        fx = (xy[:, 0].reshape(xx.shape) - self.g0) / self.step
        fy = (xy[:, 1].reshape(yy.shape) - self.g0) / self.step
        out[..., 0] = ndimage.map_coordinates(self.ox, [fy, fx], order=1, mode="nearest")
        out[..., 1] = ndimage.map_coordinates(self.oy, [fy, fx], order=1, mode="nearest")
        return out

    def windows(self, tiles: Sequence[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int, int]]:
        """``(k, r0, r1, c0, c1)``: the input rows/columns (end exclusive) of tile ``k``.

        From the grid's nodes that land in the tile (widened by two nodes, so that every pixel
        that drizzles into it is included; drizzle clips at the tile edge). Tiles no node
        lands in are left out.
        """
        ny, nx = self.shape
        step, g0 = self.step, self.g0
        out = []
        for k, (x0, y0, w, h) in enumerate(tiles):
            inside = (
                (self.ox > x0 - 2 * step) & (self.ox < x0 + w + 2 * step)
                & (self.oy > y0 - 2 * step) & (self.oy < y0 + h + 2 * step)
            )
            if not inside.any():
                continue
            rows = np.nonzero(inside.any(axis=1))[0]
            cols = np.nonzero(inside.any(axis=0))[0]
            r0 = int(max(0, g0 + (rows[0] - 1) * step))
            r1 = int(min(ny, g0 + (rows[-1] + 1) * step + 1))
            c0 = int(max(0, g0 + (cols[0] - 1) * step))
            c1 = int(min(nx, g0 + (cols[-1] + 1) * step + 1))
            if r1 > r0 and c1 > c0:
                out.append((k, r0, r1, c0, c1))
        return out


def pixmap_grid(wcs_in: WCS, wcs_out: WCS, shape: tuple[int, int], step: int = PIXMAP_STEP) -> PixmapGrid:
    """The :class:`PixmapGrid` of a chip: its full distortion model evaluated every ``step`` px.

    The smooth part (SIP, NPOL, linear WCS, output projection, and a D2IM table with cells of
    ``step`` pixels or more) is evaluated on the grid; a finer D2IM table is left to
    :meth:`PixmapGrid.window`, which applies it per pixel.
    """
    ny, nx = shape
    fine_d2im = not (_coarse_lookup(wcs_in.det2im1, step) and _coarse_lookup(wcs_in.det2im2, step))
    smooth = wcs_in
    if fine_d2im:
        smooth = wcs_in.deepcopy()
        smooth.det2im1 = None
        smooth.det2im2 = None
    g0 = -2.0 * step
    gx = np.arange(g0, nx + 2 * step + 1, step, dtype=np.float64)
    gy = np.arange(g0, ny + 2 * step + 1, step, dtype=np.float64)
    mx, my = np.meshgrid(gx, gy)
    ra, dec = smooth.all_pix2world(mx, my, 0)
    ox, oy = wcs_out.wcs_world2pix(ra, dec, 0)
    return PixmapGrid(np.asarray(ox, np.float64), np.asarray(oy, np.float64), g0, step, (ny, nx), fine_d2im, wcs_in)


def fast_pixmap(wcs_in: WCS, wcs_out: WCS, shape: tuple[int, int], step: int = PIXMAP_STEP) -> np.ndarray:
    """Input → output pixel map (``(ny, nx, 2)``, 0-based) through the full distortion model.

    The smooth part (SIP, NPOL, linear WCS, output projection, and a D2IM table with cells of
    ``step`` pixels or more) is evaluated on a grid every ``step`` pixels and interpolated
    bilinearly. A D2IM correction that changes from column to column (finer tables) is
    applied to every pixel exactly before interpolating the smooth part.
    """
    return pixmap_grid(wcs_in, wcs_out, shape, step).full()


def _chip_maps(
    exposures: Sequence[ExposureData], frame: OutputFrame, prefetch: bool, full: bool
) -> Iterator[tuple[PixmapGrid, np.ndarray | None]]:
    """Every chip's pixel-map grid onto ``frame``, in order, with its full map when ``full``;
    with ``prefetch`` the next one is computed in a thread while the caller drizzles the
    current one.

    The map is numpy and wcslib work that releases the GIL, while ``tdriz`` holds it: the two
    overlap on a second core (a full ACS/WFC chip's map is ~0.23 s of CPU). One map more is
    held at a time (134 MB for a 2048x4096 chip).
    """
    chips = [chip for exp in exposures for chip in exp.chips]

    def make(chip: Any) -> tuple[PixmapGrid, np.ndarray | None]:
        grid = pixmap_grid(chip.wcs, frame.wcs, chip.shape)
        return grid, (grid.full() if full else None)

    if not prefetch or len(chips) < 2:
        for chip in chips:
            yield make(chip)
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(make, chips[0])
        for k in range(len(chips)):
            maps = future.result()
            if k + 1 < len(chips):
                future = pool.submit(make, chips[k + 1])
            yield maps


#: A frame whose tiles hold less than this fraction of the chips' pixels is drizzled window by
#: window (pixel maps of the windows only) instead of chip by chip.
SPARSE_FRACTION = 0.25


def drizzle_singles(
    exposures: Sequence[ExposureData],
    frame: OutputFrame,
    *,
    kernel: str = "turbo",
    pixfrac: float = 1.0,
    prefetch: bool = False,
) -> list[Tile]:
    """Drizzle every exposure alone onto every tile of ``frame``.

    Weights are the good-pixel mask times the exposure time (AstroDrizzle's ``EXP``
    weighting), so the weighted mean of the singles is the combined drizzle. Each tile gets
    only the input rows and columns that can land in it. When the tiles cover a small part of
    the chips (:func:`source_frame`), the pixel maps are interpolated for those windows only;
    otherwise a chip's whole map is made once and ``prefetch`` computes the next chip's in a
    thread meanwhile (for a run given two cores; the result is the same).
    """
    from drizzle.resample import Drizzle

    n_tiles = len(frame.tiles)
    chip_pixels = sum(c.shape[0] * c.shape[1] for e in exposures for c in e.chips)
    sparse = frame.pixels < SPARSE_FRACTION * chip_pixels
    singles: list[list[np.ndarray]] = [[] for _ in range(n_tiles)]
    weights: list[list[np.ndarray]] = [[] for _ in range(n_tiles)]
    maps = _chip_maps(exposures, frame, prefetch and not sparse, full=not sparse)
    for exp in exposures:
        drizzlers = [
            Drizzle(kernel=kernel, out_shape=(t[3], t[2]), fillval=0.0, disable_ctx=True) for t in frame.tiles
        ]
        for chip in exp.chips:
            grid, pixmap = next(maps)
            weight = np.float32(exp.exptime)
            for k, r0, r1, c0, c1 in grid.windows(frame.tiles):
                x0, y0 = frame.tiles[k][:2]
                local = grid.window(r0, r1, c0, c1) if pixmap is None else pixmap[r0:r1, c0:c1]
                if x0 or y0:
                    local = local - np.array([x0, y0], dtype=np.float64)
                # This window's pixels and weights only (around stars, ~10 % of a chip).
                data, good = chip.window(r0, r1, c0, c1)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    drizzlers[k].add_image(
                        data, exp.exptime, local, weight_map=good.astype(np.float32) * weight,
                        pixfrac=pixfrac, in_units=exp.in_units, iscale=1.0, pixel_scale_ratio=1.0,
                    )
        for k, d in enumerate(drizzlers):
            if d.out_img is None:
                singles[k].append(np.zeros((frame.tiles[k][3], frame.tiles[k][2]), np.float32))
                weights[k].append(np.zeros((frame.tiles[k][3], frame.tiles[k][2]), np.float32))
            else:
                singles[k].append(np.asarray(d.out_img, np.float32))
                weights[k].append(np.asarray(d.out_wht, np.float32))
    return [
        Tile((t[0], t[1]), singles[k], weights[k]) for k, t in enumerate(frame.tiles)
    ]
