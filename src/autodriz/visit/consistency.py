"""Cross-filter consistency: sources of two products on the common grid compared (pure) and detected (I/O)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


#: Sources matched between two filters' products must agree to this, in output pixels (median
#: offset), for the visit to count as consistent. A 0.1 px colour-gradient artefact is what the
#: hand reductions autodriz replaces accepted.
CONSISTENCY_TOLERANCE_PIX = 0.1

#: Matching radius between two products' sources, output pixels. Two filters aligned to the same
#: catalog agree to a few hundredths of a pixel; 1 px keeps neighbours apart.
MATCH_RADIUS_PIX = 1.0

#: Fewest matched sources for the consistency check to give a verdict.
MIN_MATCHES = 5


@dataclass(frozen=True)


class Consistency:
    """How well the sources of one product agree with those of the reference product.

    Offsets are product minus reference, in output pixels of the common grid.
    """

    reference: str
    product: str
    n_reference: int
    n_product: int
    n_matched: int
    dx_pix: float
    dy_pix: float
    offset_pix: float
    rms_pix: float
    tolerance_pix: float
    status: str
    reason: str


def consistency(
    ref_xy: np.ndarray,
    xy: np.ndarray,
    *,
    reference: str = "reference",
    product: str = "product",
    tolerance_pix: float = CONSISTENCY_TOLERANCE_PIX,
    radius_pix: float = MATCH_RADIUS_PIX,
    min_matches: int = MIN_MATCHES,
) -> Consistency:
    """Match two source lists on one grid and compare their median offset with the tolerance.

    Each source of ``xy`` is paired with its nearest reference source within ``radius_pix``
    (pairs sharing a reference source are dropped). Pairs more than 5 robust sigma (but at
    least 0.1 px) from the median are rejected before the median and RMS are taken.

    Returns
    -------
    Consistency
        ``status`` is ``pass`` (median offset ≤ tolerance), ``fail``, or ``unknown`` (fewer
        than ``min_matches`` pairs).
    """
    from scipy.spatial import cKDTree

    ref_xy = np.asarray(ref_xy, dtype=float).reshape(-1, 2)
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    nan = float("nan")

    def result(n: int, dx: float, dy: float, rms: float, status: str, reason: str) -> Consistency:
        return Consistency(reference, product, len(ref_xy), len(xy), n, dx, dy, math.hypot(dx, dy), rms,
                           tolerance_pix, status, reason)

    if len(ref_xy) == 0 or len(xy) == 0:
        return result(0, nan, nan, nan, "unknown", "no sources to match")
    dist, idx = cKDTree(ref_xy).query(xy, distance_upper_bound=radius_pix)
    hit = np.isfinite(dist)
    counts = np.bincount(idx[hit], minlength=len(ref_xy) + 1)
    hit &= counts[np.minimum(idx, len(ref_xy))] == 1
    d = xy[hit] - ref_xy[idx[hit]]
    if len(d) >= 3:
        med = np.median(d, axis=0)
        r = np.hypot(*(d - med).T)
        sigma = 1.4826 * np.median(r)
        d = d[r <= max(5.0 * sigma, 0.1)]
    if len(d) < min_matches:
        return result(len(d), nan, nan, nan, "unknown",
                      f"{len(d)} matched source(s), fewer than {min_matches}: cannot judge")
    dx, dy = (float(v) for v in np.median(d, axis=0))
    rms = float(np.sqrt(np.mean(np.sum((d - (dx, dy)) ** 2, axis=1))))
    off = math.hypot(dx, dy)
    ok = off <= tolerance_pix
    return result(
        len(d), dx, dy, rms, "pass" if ok else "fail",
        f"{len(d)} sources: median offset ({dx:+.3f}, {dy:+.3f}) px = {off:.3f} px "
        f"{'≤' if ok else '>'} {tolerance_pix} px; rms {rms:.3f} px",
    )


def product_sources(product: Path, instrument_key: str, native_scale_arcsec: float | None = None) -> np.ndarray:
    """Point sources (0-based x, y) on a drizzled product's SCI where its WHT is positive (I/O).

    Uses the detector's detection settings (``config/aposteriori.toml``) with the PSF size
    converted from native to output pixels.
    """
    from autodriz.productcatalog import detect_in_product

    table = detect_in_product(product, instrument_key, native_scale_arcsec)
    return np.column_stack([np.asarray(table["x"], float), np.asarray(table["y"], float)])

