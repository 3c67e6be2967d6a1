"""The common output grid every product of a visit is drizzled onto."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from autodriz.instruments import REGISTRY
from autodriz.skygeom import mean_direction, tangent_arcsec, untangent_arcsec

logger = logging.getLogger(__name__)

#: Native pixel scale (arcsec) of each detector's pipeline products, the default grid scale
#: (from the instrument registry).
NATIVE_SCALE_ARCSEC: Mapping[str, float] = MappingProxyType({r.key: r.pixel_scale_arcsec for r in REGISTRY.records})

#: Margin around the union of the exposures' footprints: fixed part (arcsec) for the alignment
#: corrections, and a fraction of the footprint's size for distortion left out by a linear
#: header WCS (OPUS-like headers without SIP).
GRID_MARGIN_ARCSEC = 2.0
GRID_MARGIN_FRACTION = 0.03


@dataclass(frozen=True)


class OutputGrid:
    """A north-up tangent-plane pixel grid (FITS conventions: CRPIX 1-based).

    Attributes
    ----------
    ra, dec : float
        CRVAL, degrees.
    scale_arcsec : float
        Pixel scale.
    nx, ny : int
        NAXIS1, NAXIS2 (even).
    crpix1, crpix2 : float
        Reference pixel (the centre of the grid).
    """

    ra: float
    dec: float
    scale_arcsec: float
    nx: int
    ny: int
    crpix1: float
    crpix2: float

    @property
    def cd(self) -> np.ndarray:
        """CD matrix, degrees per pixel: north up, east left."""
        s = self.scale_arcsec / 3600.0
        return np.array([[-s, 0.0], [0.0, s]])

    def wcs(self) -> WCS:
        """The grid as an astropy WCS with its array shape."""
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [self.ra, self.dec]
        w.wcs.crpix = [self.crpix1, self.crpix2]
        w.wcs.cd = self.cd
        w.wcs.radesys = "ICRS"
        w.wcs.set()
        w.array_shape = (self.ny, self.nx)
        return w

    def header(self) -> fits.Header:
        """Image header of the grid (WCS keywords; NAXIS written by the caller's HDU)."""
        return self.wcs().to_header()

    def drizzle_parameters(self, refimage: Path, pixfrac: float | None = None) -> dict[str, Any]:
        """AstroDrizzle ``final_*`` parameters that put a product on this grid.

        ``refimage`` supplies CRVAL and CD exactly; the explicit values say the same, so that no
        MDRIZTAB value (e.g. its own ``final_scale``) can rescale or rotate it.
        """
        params: dict[str, Any] = {
            "final_wcs": True,
            "final_refimage": f"{refimage}[1]",
            "final_ra": self.ra,
            "final_dec": self.dec,
            "final_scale": self.scale_arcsec,
            "final_rot": 0.0,
            "final_outnx": self.nx,
            "final_outny": self.ny,
            "final_crpix1": self.crpix1,
            "final_crpix2": self.crpix2,
        }
        if pixfrac is not None:
            params["final_pixfrac"] = float(pixfrac)
        return params

    def as_dict(self) -> dict[str, Any]:
        """Plain values for the report."""
        return {"crval": [self.ra, self.dec], "scale_arcsec": self.scale_arcsec, "naxis": [self.nx, self.ny],
                "crpix": [self.crpix1, self.crpix2], "cd": self.cd.tolist()}


def common_grid(
    footprints: Sequence[tuple[np.ndarray, np.ndarray]],
    scale_arcsec: float,
    *,
    margin_arcsec: float = GRID_MARGIN_ARCSEC,
    margin_fraction: float = GRID_MARGIN_FRACTION,
) -> OutputGrid:
    """North-up grid covering every footprint (pure).

    Parameters
    ----------
    footprints : sequence of (ra, dec) arrays
        Sky positions (degrees) on the edges of every chip to cover.
    scale_arcsec : float
        Output pixel scale.
    margin_arcsec, margin_fraction : float
        Margin on every side: ``margin_arcsec`` plus ``margin_fraction`` of the larger side of
        the footprints' bounding box.

    Returns
    -------
    OutputGrid
        Centred on the bounding box of the footprints (in the tangent plane about their mean
        direction), NAXIS1/NAXIS2 even, CRPIX at the centre.
    """
    if scale_arcsec <= 0:
        raise ValueError(f"pixel scale must be positive, got {scale_arcsec}")
    ra = np.concatenate([np.asarray(f[0], dtype=float).ravel() for f in footprints])
    dec = np.concatenate([np.asarray(f[1], dtype=float).ravel() for f in footprints])
    ok = np.isfinite(ra) & np.isfinite(dec)
    if not ok.any():
        raise ValueError("no finite footprint positions")
    ra, dec = ra[ok], dec[ok]
    ra0, dec0 = mean_direction(ra, dec)
    xi, eta = tangent_arcsec(ra, dec, ra0, dec0)
    # Centre on the bounding box, then measure the half-sizes about that centre.
    ra_c, dec_c = (float(v) for v in untangent_arcsec((xi.min() + xi.max()) / 2.0, (eta.min() + eta.max()) / 2.0, ra0, dec0))
    xi, eta = tangent_arcsec(ra, dec, ra_c, dec_c)
    margin = margin_arcsec + margin_fraction * max(np.ptp(xi), np.ptp(eta))
    half_x = (np.abs(xi).max() + margin) / scale_arcsec
    half_y = (np.abs(eta).max() + margin) / scale_arcsec
    nx, ny = 2 * math.ceil(half_x), 2 * math.ceil(half_y)
    return OutputGrid(ra_c, dec_c, float(scale_arcsec), nx, ny, nx / 2.0 + 0.5, ny / 2.0 + 0.5)


def _edge_points(nx: int, ny: int, n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0.0, 1.0, n)
    xs = np.concatenate([t * (nx - 1), np.full(n, nx - 1.0), (1 - t) * (nx - 1), np.zeros(n)])
    ys = np.concatenate([np.zeros(n), t * (ny - 1), np.full(n, ny - 1.0), (1 - t) * (ny - 1)])
    return xs, ys


def exposure_footprints(paths: Sequence[Path]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Sky positions on the edges of every SCI chip, from the files' header WCS (I/O).

    Archive FLTs carry their distortion (SIP, lookup tables) and it is used; a linear
    OPUS-like header is used as it is, which :func:`common_grid`'s margin allows for.
    """
    out = []
    for path in paths:
        with fits.open(path) as hdul:
            for hdu in hdul:
                if hdu.name != "SCI":
                    continue
                nx, ny = int(hdu.header["NAXIS1"]), int(hdu.header["NAXIS2"])
                try:
                    w = WCS(hdu.header, fobj=hdul)
                except (ValueError, KeyError, MemoryError) as exc:
                    logger.debug("%s: distortion of the header WCS not usable (%s); linear part only", path.name, exc)
                    w = WCS(hdu.header, relax=True)
                xs, ys = _edge_points(nx, ny)
                out.append(w.all_pix2world(xs, ys, 0))
    return out


def write_grid_file(grid: OutputGrid, path: Path) -> Path:
    """The grid as a FITS file AstroDrizzle can read as ``final_refimage`` (a 1×1 SCI)."""
    hdu = fits.ImageHDU(np.zeros((1, 1), dtype=np.uint8), header=grid.header(), name="SCI")
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path, overwrite=True)
    return path
