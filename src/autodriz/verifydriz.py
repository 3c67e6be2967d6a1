"""Verification harness: drizzle a candidate's exposures onto one common frame and verify.

Every exposure is drizzled *alone* onto the same output frame with the lightweight ``drizzle``
library, in memory (no files, no AstroDrizzle child process): DQ-flagged pixels get zero
weight, count units become count rates, nothing else is done to the pixels (no sky matching,
no CR flagging; :mod:`autodriz.verify` is robust to unflagged cosmic rays by design). The
combined drizzle is the weight-averaged stack of these singles — exactly what drizzling all
exposures into one output would give with the same kernel — so it costs nothing extra.

The common frame is a tangent plane at the visit's centre, aligned with the first exposure's
first chip, at its native pixel scale. To keep memory and time in proportion to the data, only
the rectangles that hold data (*tiles*, e.g. one per chip of a small subarray visit) are
allocated; all tiles share the frame's pixel coordinates, so that a rotation is measured across
them.

The pixel maps use the full distortion model of each chip (SIP, NPOL, D2IM as astropy reads
them from the file). Evaluating that for every pixel costs ~6 s per ACS/WFC chip, so the smooth
part is evaluated on a grid every :data:`PIXMAP_STEP` pixels and interpolated, while the
column-wise D2IM correction (not smooth) is applied exactly per pixel; the difference from the
exact map is below 1e-3 pixel.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from scipy import ndimage

from autodriz.hstio import chip_wcs
from autodriz.instruments import CR_BITS_ASTRODRIZZLE, CR_BITS_PIPELINE, REGISTRY
from autodriz.verify import (
    UNVERIFIED,
    FocusResult,
    Thresholds,
    Tile,
    VerificationResult,
    load_thresholds,
    verify_tiles,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ChipData",
    "ExposureData",
    "OutputFrame",
    "common_frame",
    "drizzle_singles",
    "fast_pixmap",
    "load_exposure",
    "perturb_exposure",
    "verify_candidate",
    "verify_exposures",
]

#: Grid step (input pixels) of the smooth part of the pixel maps.
PIXMAP_STEP = 8

#: DQ bits of cosmic rays flagged by an earlier drizzle (4096, AstroDrizzle's) or by the
#: calibration's CR-SPLIT combination (8192): runastrodriz resets both before aligning. A
#: detector's own bits are its registry record's ``cr_dq_bits``; these are for an unknown one.
STALE_CR_BITS = CR_BITS_ASTRODRIZZLE | CR_BITS_PIPELINE

# Errors that mean "the data cannot be verified", as opposed to a bug (TypeError, IndexError …
# surface as exit 1 with their traceback): reading an exposure (astropy raises KeyError for a
# missing extension or keyword) …
_READ_ERRORS = (OSError, ValueError, KeyError, MemoryError)
# … and measuring it (numpy's LinAlgError is a ValueError).
_MEASURE_ERRORS = (ValueError, ArithmeticError, MemoryError)


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChipData:
    """One SCI chip: pixels, good-pixel mask and full WCS (with distortion)."""

    extver: int
    data: np.ndarray
    good: np.ndarray
    wcs: WCS

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx)."""
        return self.data.shape  # type: ignore[return-value]


@dataclass(frozen=True)
class ExposureData:
    """One exposure ready to drizzle.

    Attributes
    ----------
    name : str
        Rootname (or file stem).
    path : Path or None
        File it was read from.
    exptime : float
        Seconds.
    in_units : str
        ``counts`` (electrons, divided by ``exptime`` when drizzling) or ``cps``.
    chips : tuple of ChipData
    pixel_scale_arcsec : float
        Native scale (IDCSCALE, else from the CD matrix).
    """

    name: str
    path: Path | None
    exptime: float
    in_units: str
    chips: tuple[ChipData, ...]
    pixel_scale_arcsec: float


def load_exposure(path: str | Path, good_bits: int = 0) -> ExposureData:
    """Read an FLT/FLC: SCI data, DQ-based good mask, full WCS per chip.

    Parameters
    ----------
    path : str or Path
        Calibrated exposure.
    good_bits : int
        DQ bits that are *not* bad (AstroDrizzle's ``final_bits``, plus :data:`STALE_CR_BITS`
        when the cosmic-ray flags are an earlier drizzle's).

    Returns
    -------
    ExposureData

    Raises
    ------
    OSError, ValueError, KeyError
        Unreadable file, no SCI extension, no usable WCS.
    """
    path = Path(path)
    bad_mask = ~np.uint32(good_bits) & np.uint32(0xFFFF)
    chips = []
    with fits.open(path, memmap=False) as hdul:
        prim = hdul[0].header
        exptime = float(prim.get("EXPTIME", 0.0) or 0.0)
        name = str(prim.get("ROOTNAME", path.name.split("_")[0])).strip().lower()
        scale = math.nan
        bunit = ""
        for idx, hdu in enumerate(hdul):
            if hdu.name != "SCI" or hdu.data is None or hdu.data.ndim != 2:
                continue
            extver = int(hdu.header.get("EXTVER", 1))
            data = np.asarray(hdu.data, dtype=np.float32)
            good = np.isfinite(data)
            try:
                dq = hdul["DQ", extver].data
            except KeyError:
                dq = None
            if dq is not None and dq.shape == data.shape:
                good &= (dq.astype(np.uint32) & bad_mask) == 0
            w = chip_wcs(hdul, idx)
            if not math.isfinite(scale):
                idcscale = hdu.header.get("IDCSCALE")
                scale = float(idcscale) if idcscale else float(np.sqrt(abs(np.linalg.det(w.pixel_scale_matrix))) * 3600)
            bunit = bunit or str(hdu.header.get("BUNIT", "")).strip().upper()
            chips.append(ChipData(extver, np.where(good, data, np.float32(0.0)), good, w))
    if not chips:
        raise ValueError(f"{path.name}: no 2-D SCI extension")
    in_units = "cps" if bunit.endswith(("/S", "/SEC")) else "counts"
    if in_units == "counts" and not exptime > 0:
        raise ValueError(f"{path.name}: EXPTIME={exptime} with data in counts")
    return ExposureData(name, path, exptime if exptime > 0 else 1.0, in_units, tuple(chips), scale)


def _rotation_matrix(angle_deg: float) -> np.ndarray:
    """Acts on (east, north): increases position angles by ``angle_deg`` (simulate's convention)."""
    t = math.radians(angle_deg)
    return np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])


def _unit(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    a, d = np.deg2rad(ra), np.deg2rad(dec)
    return np.stack([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)], axis=-1)


def _mean_direction(ra: np.ndarray, dec: np.ndarray) -> tuple[float, float]:
    v = _unit(np.asarray(ra, float), np.asarray(dec, float)).reshape(-1, 3).sum(axis=0)
    v /= np.linalg.norm(v)
    return math.degrees(math.atan2(v[1], v[0])) % 360.0, math.degrees(math.asin(v[2]))


def aperture_centre(exposure: ExposureData) -> tuple[float, float]:
    """Sky position of the centre of the exposure's chips (RA, Dec in degrees)."""
    ras, decs = [], []
    for chip in exposure.chips:
        ny, nx = chip.shape
        ra, dec = chip.wcs.all_pix2world([0, nx - 1, nx - 1, 0], [0, 0, ny - 1, ny - 1], 0)
        ras.append(ra)
        decs.append(dec)
    return _mean_direction(np.concatenate(ras), np.concatenate(decs))


def perturb_exposure(
    exposure: ExposureData,
    *,
    shift_mas: tuple[float, float] = (0.0, 0.0),
    rotation_deg: float = 0.0,
    center: tuple[float, float] | None = None,
) -> ExposureData:
    """A copy of ``exposure`` whose WCS is rotated about ``center`` and shifted on the sky.

    Every chip's CRVAL is moved as :func:`autodriz.simulate.perturb_sky` moves sky positions and
    its CD matrix rotated alike, so the whole exposure (distortion included) moves rigidly.
    For tests and scripts that misregister one exposure on purpose.

    Parameters
    ----------
    shift_mas : (float, float)
        Tangent-plane shift (east, north), mas.
    rotation_deg : float
        Rotation, degrees (position angles grow).
    center : (float, float), optional
        Rotation centre; default the exposure's aperture centre.
    """
    from autodriz.skygeom import perturb_sky

    center = center or aperture_centre(exposure)
    rot = _rotation_matrix(rotation_deg)
    chips = []
    for chip in exposure.chips:
        w = chip.wcs.deepcopy()
        ra, dec = perturb_sky(
            w.wcs.crval[0], w.wcs.crval[1], center, rotation_arcsec=rotation_deg * 3600.0, shift_mas=shift_mas
        )
        w.wcs.crval = [float(ra[0]), float(dec[0])]
        if w.wcs.has_cd():
            w.wcs.cd = rot @ w.wcs.cd
        else:
            w.wcs.pc = rot @ (w.wcs.get_pc() * w.wcs.cdelt[:, None])
            w.wcs.cdelt = [1.0, 1.0]
        w.wcs.set()
        chips.append(replace(chip, wcs=w))
    return replace(exposure, chips=tuple(chips))


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
    crval = _mean_direction(np.concatenate(ras), np.concatenate(decs))
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


def fast_pixmap(wcs_in: WCS, wcs_out: WCS, shape: tuple[int, int], step: int = PIXMAP_STEP) -> np.ndarray:
    """Input → output pixel map (``(ny, nx, 2)``, 0-based) through the full distortion model.

    The smooth part (SIP, NPOL, linear WCS, output projection, and a D2IM table with cells of
    ``step`` pixels or more) is evaluated on a grid every ``step`` pixels and interpolated
    bilinearly. A D2IM correction that changes from column to column (finer tables) is
    applied to every pixel exactly before interpolating the smooth part.
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
    if not fine_d2im:
        nb = -(-nx // step)
        blocks = np.empty((ny, nb, step, 2), np.float64)
        _upsample_into(blocks[..., 0], ox, g0, step, shape)
        _upsample_into(blocks[..., 1], oy, g0, step, shape)
        full = blocks.reshape(ny, nb * step, 2)
        return full if nb * step == nx else np.ascontiguousarray(full[:, :nx])
    pixmap = np.empty((ny, nx, 2), np.float64)
    yy, xx = np.mgrid[0:ny, 0:nx]
    xy = wcs_in.det2im(np.column_stack([xx.ravel(), yy.ravel()]).astype(np.float64), 0)
    fx = (xy[:, 0].reshape(shape) - g0) / step
    fy = (xy[:, 1].reshape(shape) - g0) / step
    pixmap[..., 0] = ndimage.map_coordinates(ox, [fy, fx], order=1, mode="nearest")
    pixmap[..., 1] = ndimage.map_coordinates(oy, [fy, fx], order=1, mode="nearest")
    return pixmap


def _pixmaps(
    exposures: Sequence[ExposureData], frame: OutputFrame, prefetch: bool
) -> Iterator[np.ndarray]:
    """Every chip's pixel map onto ``frame``, in order; with ``prefetch`` the next one is
    computed in a thread while the caller drizzles the current one.

    The map is numpy and wcslib work that releases the GIL, while ``tdriz`` holds it: the two
    overlap on a second core (a full ACS/WFC chip's map is ~0.23 s of CPU). One map more is
    held at a time (134 MB for a 2048x4096 chip).
    """
    chips = [chip for exp in exposures for chip in exp.chips]
    if not prefetch or len(chips) < 2:
        for chip in chips:
            yield fast_pixmap(chip.wcs, frame.wcs, chip.shape)
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(fast_pixmap, chips[0].wcs, frame.wcs, chips[0].shape)
        for k in range(len(chips)):
            pixmap = future.result()
            if k + 1 < len(chips):
                future = pool.submit(fast_pixmap, chips[k + 1].wcs, frame.wcs, chips[k + 1].shape)
            yield pixmap


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
    weighting), so the weighted mean of the singles is the combined drizzle. ``prefetch``
    computes the next chip's pixel map in a thread meanwhile (for a run given two cores; the
    result is the same).
    """
    from drizzle.resample import Drizzle

    n_tiles = len(frame.tiles)
    singles: list[list[np.ndarray]] = [[] for _ in range(n_tiles)]
    weights: list[list[np.ndarray]] = [[] for _ in range(n_tiles)]
    pixmaps = _pixmaps(exposures, frame, prefetch)
    for exp in exposures:
        drizzlers = [
            Drizzle(kernel=kernel, out_shape=(t[3], t[2]), fillval=0.0, disable_ctx=True) for t in frame.tiles
        ]
        for chip in exp.chips:
            pixmap = next(pixmaps)
            wmap = chip.good.astype(np.float32) * np.float32(exp.exptime)
            # Which input rows/columns land in a tile, from a strided sample of the (smooth)
            # map, widened by the stride: cheap, and drizzle clips at the tile edge anyway.
            sub = 8
            coarse = pixmap[::sub, ::sub]
            cy, cx = chip.shape
            for k, (x0, y0, nx, ny) in enumerate(frame.tiles):
                if len(frame.tiles) == 1:
                    rows, cols = np.array([0, cy - 1]), np.array([0, cx - 1])
                else:
                    inside = (
                        (coarse[..., 0] > x0 - 2 * sub) & (coarse[..., 0] < x0 + nx + 2 * sub)
                        & (coarse[..., 1] > y0 - 2 * sub) & (coarse[..., 1] < y0 + ny + 2 * sub)
                    )
                    if not inside.any():
                        continue
                    r = np.nonzero(inside.any(axis=1))[0]
                    c = np.nonzero(inside.any(axis=0))[0]
                    rows = np.clip([r[0] * sub - sub, r[-1] * sub + sub], 0, cy - 1)
                    cols = np.clip([c[0] * sub - sub, c[-1] * sub + sub], 0, cx - 1)
                local = pixmap if x0 == 0 and y0 == 0 else pixmap - np.array([x0, y0], dtype=np.float64)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    drizzlers[k].add_image(
                        chip.data, exp.exptime, local, weight_map=wmap, pixfrac=pixfrac,
                        in_units=exp.in_units, iscale=1.0, pixel_scale_ratio=1.0,
                        xmin=int(cols[0]), xmax=int(cols[-1]), ymin=int(rows[0]), ymax=int(rows[-1]),
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


# --------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------


def _unverified(reason: str, th: Thresholds, seconds: float, **details: Any) -> VerificationResult:
    return VerificationResult(
        UNVERIFIED, reason,
        FocusResult(UNVERIFIED, reason, sigma_px=th.log_sigma_px, min_z=th.min_focus_z),
        (), th.as_dict(), seconds, {}, details,
    )


def verify_exposures(
    exposures: Sequence[ExposureData],
    thresholds: Thresholds | None = None,
    *,
    kernel: str = "turbo",
    prefetch: bool = False,
) -> VerificationResult:
    """Drizzle ``exposures`` onto a common frame and run :func:`autodriz.verify.verify_tiles`.

    ``prefetch``: see :func:`drizzle_singles`.

    Returns
    -------
    VerificationResult
        With ``timings`` (frame, drizzle, measure) and ``details`` (frame shape, tiles).
    """
    th = thresholds or Thresholds()
    t0 = time.perf_counter()
    frame = common_frame(exposures)
    t1 = time.perf_counter()
    tiles = drizzle_singles(exposures, frame, kernel=kernel, prefetch=prefetch)
    t2 = time.perf_counter()
    result = verify_tiles(
        tiles, names=[e.name for e in exposures], exptimes=[e.exptime for e in exposures],
        thresholds=th, pixel_scale_arcsec=frame.scale_arcsec,
    )
    t3 = time.perf_counter()
    timings = {"frame": t1 - t0, "drizzle": t2 - t1, "measure": t3 - t2}
    details = {
        "frame_shape": list(frame.shape),
        "tiles": [list(t) for t in frame.tiles],
        "allocated_pixels": frame.pixels,
        "pixel_scale_arcsec": frame.scale_arcsec,
        "kernel": kernel,
        "exposures": [e.name for e in exposures],
    }
    return replace(result, seconds=t3 - t0, timings=timings, details={**result.details, **details})


def _could_not_run(name: str, exc: BaseException, th: Thresholds, t0: float) -> VerificationResult:
    logger.warning("verification of %s could not run: %s: %s", name, type(exc).__name__, exc)
    return _unverified(f"verification could not run: {type(exc).__name__}: {exc}", th, time.perf_counter() - t0)


def verify_candidate(
    candidate: Any,
    dataset: Any,
    *,
    settings: Any | None = None,
    thresholds: Thresholds | None = None,
    use: str = "auto",
) -> VerificationResult:
    """Verify the relative alignment of a candidate WCS from its working copies.

    Parameters
    ----------
    candidate : autodriz.solutions.base.Candidate
        Its ``copies`` map each original exposure to the copy holding the candidate's WCS.
    dataset : autodriz.inputs.Dataset
        The resolved input (exposure order, instrument, FLT/FLC paths).
    settings : autodriz.config.Settings, optional
        Only ``num_cores`` is used (verification settings live in ``config/verify.toml``): with
        two or more, pixel maps are computed beside the drizzling (:func:`drizzle_singles`).
    thresholds : Thresholds, optional
        Default: ``config/verify.toml`` for the dataset's detector.
    use : str
        ``auto`` (default: the FLCs when every exposure has one — the DRC is the science
        product and its centroids are CTE-corrected — else the FLTs), ``flt`` or ``flc``.

    Returns
    -------
    VerificationResult
        Never raises for data problems: a file that cannot be read, a missing WCS, no overlap
        or no sources give ``status="unverified"`` with the reason.
    """
    prefetch = int(getattr(settings, "num_cores", 1) or 1) >= 2
    t0 = time.perf_counter()
    key = getattr(dataset, "instrument_key", None)
    try:
        th = thresholds or load_thresholds(key)
    except (OSError, ValueError) as exc:
        logger.warning("verification thresholds could not be read (%s); using built-in defaults", exc)
        th = Thresholds()
    use_flc = use in ("flc", "auto") and bool(getattr(dataset, "has_flc", False))
    originals = list(dataset.flc_paths if use_flc else dataset.flt_paths or dataset.flc_paths)
    name = getattr(candidate, "name", "?")
    if len(originals) < 2:
        result = _unverified(
            "one exposure: relative alignment cannot be checked from the images", th, time.perf_counter() - t0
        )
        logger.info("verification of %s: %s", name, result.reason)
        return result
    try:
        from autodriz.config import astrodrizzle_defaults

        good_bits = int(astrodrizzle_defaults(key, len(originals)).get("final_bits", 0) or 0) if key else 0
    except (ValueError, KeyError, OSError) as exc:
        logger.info("no AstroDrizzle defaults for %s (%s): every DQ flag but cosmic rays counts as bad", key, exc)
        good_bits = 0
    # Cosmic-ray flags in the inputs are stale (an earlier drizzle's): the final AstroDrizzle
    # resets them (resetbits 4096) and flags anew, runastrodriz resets 4096+8192 before it
    # aligns. Masking them would blank the cores of stars an earlier run mistook for CRs.
    record = REGISTRY.find(key) if key else None
    good_bits |= record.cr_dq_bits if record is not None else STALE_CR_BITS
    copies = [Path(candidate.copies[p]) for p in originals]
    try:
        exposures = [load_exposure(p, good_bits) for p in copies]
    except _READ_ERRORS as exc:
        return _could_not_run(name, exc, th, t0)
    try:
        result = verify_exposures(exposures, th, prefetch=prefetch)
    except _MEASURE_ERRORS as exc:
        return _could_not_run(name, exc, th, t0)
    seconds = time.perf_counter() - t0
    logger.info(
        "verification of %s (%s): %s in %.1f s (drizzle %.1f s, measure %.1f s): %s",
        name, getattr(candidate, "wcsname", "?"), result.status.upper(), seconds,
        result.timings.get("drizzle", 0.0), result.timings.get("measure", 0.0), result.reason,
    )
    return replace(result, seconds=seconds, timings={**result.timings, "load": seconds - result.seconds})
