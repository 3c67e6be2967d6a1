"""Measure how far a WCS is from the known truth of a simulated visit.

:func:`autodriz.simulate.simulate_visit` writes ``<asn>_truth.json``: for every exposure and SCI
extension, the linear+SIP WCS that ``stwcs.updatewcs`` produces from the *unperturbed* pointing.
This module rebuilds those WCSs with :class:`astropy.wcs.WCS` (no other file needed) and
compares them with the *current active* WCS of any exposure file: pixel → sky on a grid over
each chip, on-sky separations in milliarcseconds.

Both sides are evaluated with their linear+SIP parts only. The NPOL and D2IM lookup tables are
dropped on purpose: a file that went through ``updatewcs`` carries exactly the same tables as the
truth (same NPOLFILE/D2IMFILE, same chips), so they displace a given pixel identically on both
sides and cancel in the difference, apart from a second-order term (table offset, < 0.1 px,
times the tiny scale/rotation difference between the two WCSs, i.e. far below 1 µas). Keeping
them would only force every caller to carry the lookup-table extensions around.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from autodriz.hstio import sci_extensions
from autodriz.skygeom import MAS_PER_DEG as _MAS_PER_DEG
from autodriz.skygeom import linear_sip_header, offset_mas

if TYPE_CHECKING:
    from autodriz.verifydriz import ExposureData

__all__ = ["ProductStarError", "WCSError", "header_offsets", "linear_fit_floor", "linear_sip_header", "load_truth",
           "product_star_error", "registered_to_truth", "truth_wcs", "visit_error", "wcs_error"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WCSError:
    """Astrometric error of a WCS against the truth, on a pixel grid.

    Attributes
    ----------
    rms_mas : float
        Root-mean-square on-sky separation, milliarcseconds.
    max_mas : float
        Largest separation, milliarcseconds.
    mean_dx_mas, mean_dy_mas : float
        Mean offset (tested WCS minus truth) towards east and north, milliarcseconds.
    n_points : int
        Number of grid points compared.
    """

    rms_mas: float
    max_mas: float
    mean_dx_mas: float
    mean_dy_mas: float
    n_points: int


def load_truth(path: str | Path) -> dict[str, Any]:
    """Read a ``<asn>_truth.json`` written by the simulator.

    Parameters
    ----------
    path : str or Path
        The truth file.

    Returns
    -------
    dict
        The parsed JSON: ``config``, ``injected``, ``expected_default_error_mas`` and
        ``exposures`` (rootname → ``{"sci": {extver: header-keyword dict}, ...}``).
    """
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def truth_wcs(truth: Mapping[str, Any], rootname: str, extver: int) -> WCS:
    """Rebuild the true WCS of one SCI extension from the truth record.

    Parameters
    ----------
    truth : dict
        As returned by :func:`load_truth`.
    rootname : str
        Exposure rootname (case-insensitive).
    extver : int
        SCI extension version.

    Returns
    -------
    astropy.wcs.WCS
        Linear+SIP WCS, with ``pixel_shape`` set to the chip shape.
    """
    try:
        keys = truth["exposures"][rootname.lower()]["sci"][str(extver)]
    except KeyError as exc:
        raise KeyError(f"truth has no SCI,{extver} for exposure {rootname!r}") from exc
    return _wcs_from_header(linear_sip_header(keys))


def _wcs_from_header(header: fits.Header) -> WCS:
    wcs = WCS(header)
    if "NAXIS1" in header and "NAXIS2" in header:
        wcs.pixel_shape = (int(header["NAXIS1"]), int(header["NAXIS2"]))
    return wcs


def _grid(nx: int, ny: int, grid: int) -> tuple[np.ndarray, np.ndarray]:
    # 0-based pixel centres spanning the whole chip, edges included.
    xs = np.linspace(0.0, nx - 1.0, grid)
    ys = np.linspace(0.0, ny - 1.0, grid)
    gx, gy = np.meshgrid(xs, ys)
    return gx.ravel(), gy.ravel()


def _offsets_mas(
    ra: np.ndarray, dec: np.ndarray, ra0: np.ndarray, dec0: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """East/north offsets and exact great-circle separations of (ra, dec) from (ra0, dec0)."""
    r, d, r0, d0 = (np.deg2rad(a) for a in (ra, dec, ra0, dec0))
    # Vincenty formula: accurate at mas separations where the plain arccos form is not.
    dra = r - r0
    num = np.hypot(np.cos(d) * np.sin(dra), np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(dra))
    den = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(dra)
    sep = np.rad2deg(np.arctan2(num, den)) * _MAS_PER_DEG
    east = ((ra - ra0 + 180.0) % 360.0 - 180.0) * np.cos(d0) * _MAS_PER_DEG
    north = (dec - dec0) * _MAS_PER_DEG
    return east, north, sep


def header_offsets(
    header: Mapping[str, Any], true_wcs: WCS, *, grid: int = 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """East/north offsets and separations (mas) of a header WCS from a true WCS on a grid.

    Parameters
    ----------
    header : mapping
        SCI extension header holding the WCS to test (its active, primary WCS).
    true_wcs : astropy.wcs.WCS
        The truth for the same chip.
    grid : int
        Points per axis.
    """
    east, north, sep, _, _ = _chip_points(header, true_wcs, grid)
    return east, north, sep


#: Per grid point: east/north offset and separation (mas) of the tested WCS from the truth, and
#: the point's true RA/Dec (deg).
_Points = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _chip_points(header: Mapping[str, Any], true_wcs: WCS, grid: int) -> _Points:
    test = _wcs_from_header(linear_sip_header(header))
    nx = int(header.get("NAXIS1", true_wcs.pixel_shape[0]))
    ny = int(header.get("NAXIS2", true_wcs.pixel_shape[1]))
    x, y = _grid(nx, ny, grid)
    ra, dec = test.all_pix2world(x, y, 0)
    ra0, dec0 = true_wcs.all_pix2world(x, y, 0)
    return (*_offsets_mas(ra, dec, ra0, dec0), ra0, dec0)


def _summarise(east: np.ndarray, north: np.ndarray, sep: np.ndarray) -> WCSError:
    if sep.size == 0:
        raise ValueError("no grid points to compare")
    return WCSError(
        rms_mas=float(np.sqrt(np.mean(sep**2))),
        max_mas=float(np.max(sep)),
        mean_dx_mas=float(np.mean(east)),
        mean_dy_mas=float(np.mean(north)),
        n_points=int(sep.size),
    )


def _exposure_points(exposure: str | Path | fits.HDUList, truth: Mapping[str, Any], grid: int) -> _Points:
    """:func:`_chip_points` of every SCI extension of one exposure, concatenated."""
    with nullcontext(exposure) if isinstance(exposure, fits.HDUList) else fits.open(exposure) as hdul:
        rootname = str(hdul[0].header["ROOTNAME"]).strip()
        parts = [
            _chip_points(hdul[index].header, truth_wcs(truth, rootname, extver), grid)
            for index, extver in sci_extensions(hdul)
        ]
    if not parts:
        raise ValueError(f"exposure {rootname!r} has no SCI extension")
    return tuple(np.concatenate(p) for p in zip(*parts, strict=True))  # type: ignore[return-value]


def wcs_error(
    exposure_path: str | Path | fits.HDUList, truth: Mapping[str, Any], *, grid: int = 16
) -> WCSError:
    """Error of the active WCS of every SCI extension of one exposure against the truth.

    Parameters
    ----------
    exposure_path : str, Path or astropy.io.fits.HDUList
        An FLT/FLC file of the simulated visit (or an open HDUList); its ``ROOTNAME`` selects
        the truth record.
    truth : dict
        As returned by :func:`load_truth`.
    grid : int
        Grid points per axis on each chip.

    Returns
    -------
    WCSError
    """
    return _summarise(*_exposure_points(exposure_path, truth, grid)[:3])


def visit_error(
    paths: Iterable[str | Path | fits.HDUList], truth: Mapping[str, Any], *, grid: int = 16
) -> WCSError:
    """Error pooled over several exposures (all chips, all grid points together).

    Parameters
    ----------
    paths : iterable of str, Path or HDUList
        Exposure files.
    truth : dict
        As returned by :func:`load_truth`.
    grid : int
        Grid points per axis on each chip.

    Returns
    -------
    WCSError
    """
    parts = [_exposure_points(p, truth, grid)[:3] for p in paths]
    if not parts:
        raise ValueError("no exposures given")
    east, north, sep = (np.concatenate(p) for p in zip(*parts, strict=True))
    return _summarise(east, north, sep)


def _similarity_residual(east: np.ndarray, north: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Separations (mas) left after the best shift + rotation + scale removes (east, north).

    The offsets are mas; (x, y) are the grid points' tangent-plane positions (mas) about the
    exposure's centre. At these sizes (offsets ≪ field) the similarity is linear in its four
    parameters: east = tx + s·x − r·y, north = ty + r·x + s·y.
    """
    one, zero = np.ones_like(x), np.zeros_like(x)
    design = np.vstack([
        np.column_stack([one, zero, x, -y]),
        np.column_stack([zero, one, y, x]),
    ])
    target = np.concatenate([east, north])
    params, *_ = np.linalg.lstsq(design, target, rcond=None)
    left = target - design @ params
    n = east.size
    return np.hypot(left[:n], left[n:])


def linear_fit_floor(
    paths: Iterable[str | Path | fits.HDUList], truth: Mapping[str, Any], *, grid: int = 16
) -> WCSError:
    """The error vs truth that no shift + rotation + scale of each exposure can remove.

    A simulated visit with a distortion residual (``distortion_residual_mas``) has a true WCS
    that the reference distortion model cannot reach: the residual field's 2nd/3rd-order
    shape stays whatever the fit. Its constant and linear parts, seen over the (sub)array, do
    not: a fit absorbs them. This is the RMS :func:`visit_error` would report for a perfect
    per-exposure ``rscale`` fit of the given exposures (any WCS with the pipeline's distortion
    model, e.g. the default's): the floor the chosen WCS is to be read against.

    Parameters
    ----------
    paths : iterable of str, Path or HDUList
        Exposure files whose WCS carries the reference distortion (any pointing).
    truth : dict
        As returned by :func:`load_truth`.
    grid : int
        Grid points per axis on each chip.

    Returns
    -------
    WCSError
        ``rms_mas``/``max_mas`` of what is left; the mean offsets are ~0 by construction.
    """
    seps: list[np.ndarray] = []
    for path in paths:
        east, north, _, ra0, dec0 = _exposure_points(path, truth, grid)
        xt, yt = offset_mas(ra0, dec0, float(np.mean(ra0)), float(np.mean(dec0)))
        seps.append(_similarity_residual(east, north, xt, yt))
    if not seps:
        raise ValueError("no exposures given")
    sep = np.concatenate(seps)
    return WCSError(float(np.sqrt(np.mean(sep**2))), float(np.max(sep)), 0.0, 0.0, int(sep.size))


@dataclass(frozen=True)
class ProductStarError:
    """Stars detected in a drizzled product against their true positions.

    Attributes
    ----------
    median_mas : float
        Median on-sky separation of the matched stars, milliarcseconds.
    median_east_mas, median_north_mas : float
        Median offset (product minus truth) east and north, milliarcseconds.
    n_matched : int
        Detected stars matched to a true star.
    """

    median_mas: float
    median_east_mas: float
    median_north_mas: float
    n_matched: int


def product_star_error(
    product: str | Path, truth: Mapping[str, Any], *, match_radius_mas: float = 300.0, fwhm_pix: float = 2.0
) -> ProductStarError:
    """Detect stars in a DRZ/DRC and compare their sky positions with the simulator's truth.

    This measures what a user of the product sees (a star's position read off the image with the
    product's WCS), independently of the WCS bookkeeping that :func:`visit_error` checks.

    Parameters
    ----------
    product : str or Path
        A drizzled product (``SCI`` extension with its WCS).
    truth : dict
        As returned by :func:`load_truth` (its ``stars`` at the observation epoch).
    match_radius_mas : float
        Largest separation accepted as a match (nearest true star).
    fwhm_pix : float
        PSF FWHM in product pixels, for detection.

    Returns
    -------
    ProductStarError
    """
    from scipy.spatial import cKDTree

    from autodriz.detect import DetectionParams, detect_sources

    with fits.open(product) as hdul:
        sci = np.nan_to_num(np.asarray(hdul["SCI"].data, dtype=np.float32))
        wcs = WCS(hdul["SCI"].header)
    sources = detect_sources(sci, DetectionParams(fwhm_pix=fwhm_pix, max_sources=5000))
    stars = truth["stars"]
    ra0, dec0 = float(np.mean(stars["ra"])), float(np.mean(stars["dec"]))
    ra, dec = wcs.all_pix2world(np.asarray(sources["x"]), np.asarray(sources["y"]), 0)
    true_xy = np.column_stack(offset_mas(stars["ra"], stars["dec"], ra0, dec0))
    found_xy = np.column_stack(offset_mas(ra, dec, ra0, dec0))
    dist, idx = cKDTree(true_xy).query(found_xy, distance_upper_bound=match_radius_mas)
    ok = np.isfinite(dist)
    if not ok.any():
        return ProductStarError(float("nan"), float("nan"), float("nan"), 0)
    d = found_xy[ok] - true_xy[idx[ok]]
    return ProductStarError(
        float(np.median(np.hypot(d[:, 0], d[:, 1]))), float(np.median(d[:, 0])), float(np.median(d[:, 1])), int(ok.sum())
    )


def _exposure_offsets_from_truth(exposure: ExposureData, truth: Mapping[str, Any], grid: int) -> np.ndarray:
    """(east, north) mas of a loaded exposure's chip WCSs from the truth on a grid, flattened."""
    out = []
    for chip in exposure.chips:
        ny, nx = chip.shape
        x, y = _grid(nx, ny, grid)
        # Linear+SIP on both sides, as everywhere in this module (NPOL/D2IM cancel).
        w = chip.wcs.deepcopy()
        w.cpdis1 = w.cpdis2 = w.det2im1 = w.det2im2 = None
        ra, dec = w.all_pix2world(x, y, 0)
        ra0, dec0 = truth_wcs(truth, exposure.name, chip.extver).all_pix2world(x, y, 0)
        out.append(np.concatenate(offset_mas(ra, dec, ra0, dec0)))
    return np.concatenate(out)


def registered_to_truth(
    exposure: ExposureData, truth: Mapping[str, Any], *, grid: int = 12
) -> tuple[ExposureData, float]:
    """The exposure moved by the shift + rotation that best brings its WCS onto the truth.

    What a perfect fit of the exposure does: it removes the exposure's own pointing and roll
    error, not the distortion residual (no shift + rotation can), so a set of exposures treated
    this way is "registered as well as a fit can", the residual field still in each. For
    verification tests and scripts (a good candidate whose misregistration is known to be ~0).
    Gauss-Newton with a numeric Jacobian of :func:`autodriz.verifydriz.perturb_exposure` (linear
    at these sizes: two steps).

    Parameters
    ----------
    exposure : autodriz.verifydriz.ExposureData
        A loaded exposure of a simulated visit (its ``name`` is the rootname in ``truth``).
    truth : dict
        As returned by :func:`load_truth`.
    grid : int
        Grid points per axis on each chip.

    Returns
    -------
    (ExposureData, float)
        The moved exposure and the RMS (mas) left between its WCS and the truth.
    """
    from autodriz.verifydriz import aperture_centre, perturb_exposure

    centre = aperture_centre(exposure)

    def moved(q: np.ndarray) -> ExposureData:
        return perturb_exposure(exposure, shift_mas=(q[0], q[1]), rotation_deg=q[2], center=centre)

    p = np.zeros(3)  # east mas, north mas, rotation deg
    steps = np.array([1.0, 1.0, 1e-4])
    for _ in range(2):
        r0 = _exposure_offsets_from_truth(moved(p), truth, grid)
        jac = np.column_stack([
            (_exposure_offsets_from_truth(moved(p + np.eye(3)[k] * steps[k]), truth, grid) - r0) / steps[k]
            for k in range(3)
        ])
        p = p - np.linalg.lstsq(jac, r0, rcond=None)[0]
    out = moved(p)
    return out, float(np.sqrt(np.mean(_exposure_offsets_from_truth(out, truth, grid) ** 2)))
