"""How uniform a drizzled product's weight map is over its footprint (a products-stage check).

Computed in the child that drizzled the product, whose weight map is still in memory
(:func:`autodriz._child._astrodrizzle`), or by the parent from the product file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: std(WHT)/mean(WHT) over the footprint at or above which the weight map is flagged.
WEIGHT_RATIO_LIMIT = 0.3
#: Pixels of weight map read at a time by :func:`weight_map_check`.
WEIGHT_BLOCK_PIXELS = 1 << 20


@dataclass(frozen=True)
class WeightCheck:
    """Uniformity of a drizzle weight map over its footprint."""

    ratio: float
    limit: float
    flagged: bool
    footprint_pixels: int


def weight_map_check(wht: np.ndarray, limit: float = WEIGHT_RATIO_LIMIT) -> WeightCheck:
    """std/mean of the weight map where it is positive; flagged when ≥ ``limit``.

    A strongly non-uniform weight map over the footprint means uneven coverage or many rejected
    pixels; NaN-only or empty maps give ``ratio = nan`` and are flagged.
    """
    w = np.atleast_1d(np.asarray(wht))
    # Two passes over blocks of rows (mean, then squared deviations from it, in float64): a
    # product's map is read from its file as it goes, and no full-size boolean, copy or float64
    # temporary is made (~200 MB of fresh memory per product otherwise).
    rows = max(1, WEIGHT_BLOCK_PIXELS // max(w[:1].size, 1))
    blocks = [w[i:i + rows] for i in range(0, w.shape[0], rows)]
    n, total = 0, 0.0
    for block in blocks:
        good = np.isfinite(block) & (block > 0)
        n += int(np.count_nonzero(good))
        total += float(np.sum(block, where=good, dtype=np.float64))
    if n == 0:
        return WeightCheck(float("nan"), limit, True, 0)
    mean = total / n
    squares = 0.0
    for block in blocks:
        good = np.isfinite(block) & (block > 0)
        deviation = block[good].astype(np.float64) - mean
        squares += float(np.dot(deviation, deviation))
    ratio = math.sqrt(squares / n) / mean
    return WeightCheck(ratio, limit, ratio >= limit, n)
