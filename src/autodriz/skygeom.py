"""Sky geometry in one place: gnomonic projection, mean direction, angular distance.

Every module that moves positions on the sky (the a posteriori fits, the visit grid and the
WCS transfer, the simulator's error model, verification's perturbations) uses these functions,
so that "east" and "north", the tangent point and the units mean the same everywhere.

Conventions: angles in degrees on the sky; the tangent plane's first axis points east, the
second north; :func:`project` returns radians (the standard ξ, η), :func:`tangent_arcsec` the
same in arcsec. Pure numpy; astropy's WCS machinery is used where a real WCS is involved.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from astropy.io import fits

#: Milliarcseconds per degree.
MAS_PER_DEG = 3.6e6
#: Milliarcseconds per radian.
MAS_PER_RAD = math.degrees(1.0) * MAS_PER_DEG


def project(ra: Any, dec: Any, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic projection about ``(ra0, dec0)``: standard coordinates (ξ east, η north), radians.

    Parameters
    ----------
    ra, dec : array_like
        Positions, degrees.
    ra0, dec0 : float
        Tangent point, degrees.

    Returns
    -------
    xi, eta : numpy.ndarray
    """
    a, d = np.deg2rad(np.asarray(ra, dtype=float)), np.deg2rad(np.asarray(dec, dtype=float))
    a0, d0 = math.radians(ra0), math.radians(dec0)
    cosc = math.sin(d0) * np.sin(d) + math.cos(d0) * np.cos(d) * np.cos(a - a0)
    xi = np.cos(d) * np.sin(a - a0) / cosc
    eta = (math.cos(d0) * np.sin(d) - math.sin(d0) * np.cos(d) * np.cos(a - a0)) / cosc
    return xi, eta


def deproject(xi: Any, eta: Any, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`project`: standard coordinates (radians) → (ra, dec) in degrees."""
    a0, d0 = math.radians(ra0), math.radians(dec0)
    xi = np.asarray(xi, dtype=float)
    eta = np.asarray(eta, dtype=float)
    rho = np.hypot(xi, eta)
    c = np.arctan(rho)
    with np.errstate(invalid="ignore", divide="ignore"):
        dec = np.where(rho > 0, np.arcsin(np.cos(c) * np.sin(d0) + eta * np.sin(c) * np.cos(d0) / rho), d0)
    ra = a0 + np.arctan2(xi * np.sin(c), rho * np.cos(d0) * np.cos(c) - eta * np.sin(d0) * np.sin(c))
    return np.rad2deg(ra) % 360.0, np.rad2deg(dec)


def tangent_arcsec(ra: Any, dec: Any, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`project` in arcsec: (east, north) offsets on the tangent plane."""
    xi, eta = project(ra, dec, ra0, dec0)
    return np.rad2deg(xi) * 3600.0, np.rad2deg(eta) * 3600.0


def untangent_arcsec(east: Any, north: Any, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`tangent_arcsec`: (east, north) arcsec → (ra, dec) degrees."""
    return deproject(np.deg2rad(np.asarray(east, dtype=float) / 3600.0),
                     np.deg2rad(np.asarray(north, dtype=float) / 3600.0), ra0, dec0)


def unit_vectors(ra: Any, dec: Any) -> np.ndarray:
    """Unit vectors (…, 3) of positions in degrees."""
    a, d = np.deg2rad(np.asarray(ra, dtype=float)), np.deg2rad(np.asarray(dec, dtype=float))
    return np.stack([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)], axis=-1)


def mean_direction(ra: Any, dec: Any) -> tuple[float, float]:
    """Mean direction of positions (degrees): the normalised sum of unit vectors, safe across RA 0."""
    v = unit_vectors(np.ravel(ra), np.ravel(dec)).sum(axis=0)
    return math.degrees(math.atan2(v[1], v[0])) % 360.0, math.degrees(math.asin(v[2] / np.linalg.norm(v)))


def angular_distance(ra: Any, dec: Any, ra0: float, dec0: float) -> np.ndarray:
    """Great-circle distance in degrees (haversine)."""
    r, d = np.deg2rad(np.asarray(ra, dtype=float)), np.deg2rad(np.asarray(dec, dtype=float))
    r0, d0 = math.radians(ra0), math.radians(dec0)
    a = np.sin((d - d0) / 2) ** 2 + np.cos(d) * math.cos(d0) * np.sin((r - r0) / 2) ** 2
    return np.rad2deg(2 * np.arcsin(np.sqrt(np.clip(a, 0, 1))))


def pa_rotation(angle_deg: float) -> np.ndarray:
    """Matrix acting on (east, north) that increases position angles by ``angle_deg``."""
    t = math.radians(angle_deg)
    return np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])


def perturb_sky(
    ra: Any,
    dec: Any,
    center: tuple[float, float],
    *,
    rotation_arcsec: float = 0.0,
    shift_mas: tuple[float, float] = (0.0, 0.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate positions about ``center`` and shift them, in its tangent plane.

    The error model of the simulator's header WCS and of verification's test perturbations:
    positions are projected about ``center``, rotated so that position angles grow by
    ``rotation_arcsec``, shifted by ``shift_mas`` (east, north) and projected back.

    Parameters
    ----------
    ra, dec : array_like
        Positions, degrees.
    center : (float, float)
        Rotation centre (ra, dec), degrees.
    rotation_arcsec : float
        Roll, arcsec.
    shift_mas : (float, float)
        Tangent-plane shift (east, north), mas.

    Returns
    -------
    ra, dec : numpy.ndarray
        Perturbed positions, degrees.
    """
    xi, eta = project(np.atleast_1d(ra), np.atleast_1d(dec), *center)
    rot = pa_rotation(rotation_arcsec / 3600.0)
    x2 = rot[0, 0] * xi + rot[0, 1] * eta + shift_mas[0] / MAS_PER_RAD
    y2 = rot[1, 0] * xi + rot[1, 1] * eta + shift_mas[1] / MAS_PER_RAD
    return deproject(x2, y2, *center)


def offset_mas(ra: Any, dec: Any, ra0: Any, dec0: Any) -> tuple[np.ndarray, np.ndarray]:
    """Small offsets (east, north) in mas of (ra, dec) from (ra0, dec0), RA wrap-safe."""
    ra, dec, ra0, dec0 = (np.asarray(v, dtype=float) for v in (ra, dec, ra0, dec0))
    east = ((ra - ra0 + 180.0) % 360.0 - 180.0) * np.cos(np.deg2rad(dec0)) * MAS_PER_DEG
    return east, (dec - dec0) * MAS_PER_DEG



#: Header keywords (regular expression) that make up the linear+SIP part of a celestial WCS.
_LINEAR_SIP_KEY = re.compile(
    r"^(WCSAXES|CTYPE[12]|CUNIT[12]|CRVAL[12]|CRPIX[12]|CD[12]_[12]|RADESYS|EQUINOX|"
    r"(A|B|AP|BP)_ORDER|(A|B|AP|BP)_\d+_\d+|NAXIS[12])$"
)


def linear_sip_header(header: Mapping[str, Any]) -> fits.Header:
    """Keep only the linear+SIP celestial WCS keywords of a header.

    The NPOL and D2IM lookup tables of an HST WCS are left out: two WCSs built with the same
    tables displace a pixel identically, so their difference is the linear+SIP one.
    """
    out = fits.Header()
    for key, value in header.items():
        if _LINEAR_SIP_KEY.match(key):
            out[key] = value
    return out
