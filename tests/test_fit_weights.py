"""The weighted fit autodriz relies on: tweakwcs honours a ``weight`` column.

``astrometry/fit.py`` gives every reference star the weight 1/σ² of its own catalog
error (proper-motion error included) and every detected source 1/σ² of its centroid error;
the claim that a star with a poor proper motion counts less rests on tweakwcs using them.
An earlier check saw identical fits with and without the columns — there all stars had the
same error, so the weights were uniform. This test makes them matter.
"""
from __future__ import annotations

import logging

import numpy as np
from astropy.table import Table
from astropy.wcs import WCS
from tweakwcs.correctors import FITSWCSCorrector
from tweakwcs.imalign import align_wcs
from tweakwcs.matchutils import XYXYMatch


def _shift_of_fit(weights: np.ndarray | None, dec_bias_mas: np.ndarray) -> float:
    """Dec shift (mas) that a shift fit gives at the reference pixel."""
    rng = np.random.default_rng(1)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [512.0, 512.0]
    wcs.wcs.cd = np.array([[-0.05, 0.0], [0.0, 0.05]]) / 3600.0
    wcs.pixel_shape = (1024, 1024)
    x = rng.uniform(0, 1024, dec_bias_mas.size)
    y = rng.uniform(0, 1024, dec_bias_mas.size)
    ra, dec = wcs.all_pix2world(x, y, 0)
    ref = Table({"RA": ra, "DEC": dec + dec_bias_mas / 3.6e6})
    if weights is not None:
        ref["weight"] = weights
    corrector = FITSWCSCorrector(wcs.deepcopy(), meta={"catalog": Table({"x": x, "y": y}), "name": "im"})
    logging.getLogger("tweakwcs").setLevel(logging.WARNING)
    align_wcs([corrector], refcat=ref, fitgeom="shift", nclip=0,
              match=XYXYMatch(searchrad=5, separation=0.1, tolerance=1, use2dhist=False))
    _, before = wcs.all_pix2world([512.0], [512.0], 0)
    _, after = corrector.wcs.all_pix2world([512.0], [512.0], 0)
    return float((after[0] - before[0]) * 3.6e6)


def test_reference_weights_pull_the_fit_towards_precise_stars():
    # half the stars are 20 mas off in Dec and declare σ = 50 mas; the other half are exact, σ = 1 mas
    n = 200
    biased = np.arange(n) < n // 2
    bias = np.where(biased, 20.0, 0.0)
    sigma = np.where(biased, 50.0, 1.0)
    unweighted = _shift_of_fit(None, bias)
    weighted = _shift_of_fit(1.0 / sigma**2, bias)
    assert abs(unweighted - 10.0) < 0.1  # the plain mean of the two halves
    assert abs(weighted) < 0.1  # 1/σ² = 1/2500 against 1: the biased half counts 0.04 %


def test_uniform_weights_change_nothing():
    bias = np.where(np.arange(200) < 100, 20.0, 0.0)
    assert abs(_shift_of_fit(np.full(200, 1.0 / 14.7**2), bias) - _shift_of_fit(None, bias)) < 1e-6
