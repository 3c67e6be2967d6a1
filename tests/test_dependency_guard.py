"""Guards against dependency upgrades that silently break the drizzlepac paths we rely on.

photutils 3.0 breaks drizzlepac's source extraction (KeyError 'local_background') while
runastrodriz still exits 0; pyproject pins photutils<3. This test calls that code path on a
synthetic star field, so an upgrade that breaks it fails here, loudly.
"""

from __future__ import annotations

from importlib.metadata import version

import numpy as np
from packaging.version import Version


def _star_field(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ny, nx = 200, 200
    yy, xx = np.mgrid[0:ny, 0:nx]
    positions = rng.uniform(15, 185, size=(25, 2))
    img = rng.normal(10.0, 1.0, size=(ny, nx))
    sigma = 1.5
    for x, y in positions:
        img += 800.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return img.astype(np.float32), positions


def test_photutils_is_below_3():
    assert Version(version("photutils")) < Version("3"), "drizzlepac's source extraction breaks with photutils 3"


def test_drizzlepac_extract_sources_finds_the_stars():
    from drizzlepac.haputils.astrometric_utils import extract_sources

    img, positions = _star_field()
    result = extract_sources(img, fwhm=3.5, source_box=7, classify=False)
    table = result[0] if isinstance(result, tuple) else result
    assert table is not None and len(table) >= 20
    xs = np.asarray(table["xcentroid"], dtype=float)
    ys = np.asarray(table["ycentroid"], dtype=float)
    nearest = np.array([np.min(np.hypot(xs - x, ys - y)) for x, y in positions])
    # Nearly every injected star is found, within a small fraction of a pixel (a blended pair may
    # come out as one source, hence not all).
    assert (nearest < 0.3).mean() >= 0.9, np.sort(nearest)
