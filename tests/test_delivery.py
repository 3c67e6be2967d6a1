"""The pure parts of what is delivered besides the WCS: CR flags and footprints."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from matplotlib.path import Path as PolygonPath

from autodriz.delivery import MAX_REGIONS, footprint_polygons, merge_cr_flags, sregion_text


def test_cr_flags_are_taken_from_the_drizzled_copy_and_other_bits_from_the_original():
    original = np.array([[4096 | 16, 4096, 0, 256]], dtype=np.int16)  # two stale CR flags
    drizzled = np.array([[16, 0, 4096, 4096 | 8]], dtype=np.int16)  # the copy's bit 8 is not ours
    merged = merge_cr_flags(original, drizzled, 4096)
    assert merged.tolist() == [[16, 0, 4096, 256 | 4096]]
    assert merged.dtype == original.dtype
    with pytest.raises(ValueError, match="shapes differ"):
        merge_cr_flags(original, drizzled[:, :2], 4096)


def _inside(polygons, points):
    inside = np.zeros(len(points), dtype=bool)
    for poly in polygons:
        inside |= PolygonPath(poly).contains_points(points)
    return inside


def test_footprint_contains_every_covered_pixel_centre_one_polygon_per_region():
    mask = np.zeros((60, 80), dtype=bool)
    mask[5:30, 5:40] = True  # an L: a concave region …
    mask[5:55, 5:15] = True
    yy, xx = np.mgrid[0:60, 0:80]
    mask[(xx - 62) ** 2 + (yy - 40) ** 2 < 100] = True  # … and a separate disc
    polygons = footprint_polygons(mask)
    assert len(polygons) == 2
    ys, xs = np.nonzero(mask)
    assert _inside(polygons, np.column_stack([xs, ys]).astype(float)).all()
    # Pixels well away from both regions are outside.
    assert not _inside(polygons, np.array([[70.0, 5.0], [50.0, 55.0]])).any()
    assert footprint_polygons(np.zeros((4, 4), dtype=bool)) == []


def test_regions_are_scipys_4_connected_labels_each_hull_over_its_own_pixels():
    # The regions come from runs along rows joined where adjacent rows share a column: the
    # same regions as ndimage.label's 4-connectivity, in the same order, each polygon the hull
    # of its own region's pixel corners (diagonal neighbours are separate regions).
    from scipy import ndimage
    from scipy.spatial import ConvexHull

    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(400):
        mask = rng.random(tuple(rng.integers(1, 30, 2))) < rng.uniform(0.05, 0.8)
        labels, n = ndimage.label(mask)
        if not 0 < n <= MAX_REGIONS:
            continue
        polygons = footprint_polygons(mask)
        assert len(polygons) == n
        for index, polygon in enumerate(polygons, start=1):
            ys, xs = np.nonzero(labels == index)
            corners = np.unique(np.concatenate([np.column_stack([xs + dx, ys + dy])
                                                for dx in (-0.5, 0.5) for dy in (-0.5, 0.5)]), axis=0)
            assert np.array_equal(polygon, corners[ConvexHull(corners).vertices])
        checked += 1
    assert checked > 100


def test_many_specks_give_one_polygon_around_all():
    mask = np.zeros((40, 40), dtype=bool)
    mask[::3, ::3] = True
    assert mask.sum() > MAX_REGIONS
    (polygon,) = footprint_polygons(mask)
    ys, xs = np.nonzero(mask)
    assert _inside([polygon], np.column_stack([xs, ys]).astype(float)).all()


def test_sregion_text_is_drizzlepacs_format_closed_polygons():
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [10.0, 10.0]
    wcs.wcs.cdelt = [-1e-5, 1e-5]
    square = np.array([[0.0, 0.0], [19.0, 0.0], [19.0, 19.0], [0.0, 19.0]])
    text = sregion_text([square, square + 30], wcs)
    parts = [p for p in text.split("POLYGON ICRS") if p.strip()]
    assert text.startswith("POLYGON ICRS ") and len(parts) == 2
    coords = np.array(parts[0].split(), dtype=float).reshape(-1, 2)
    assert len(coords) == 5 and np.allclose(coords[0], coords[-1])
    assert np.allclose(coords[:4], wcs.all_pix2world(square, 0))


def test_exposure_sregion_is_drizzlepacs_compute_sregion_on_a_real_flt(shared_data, tmp_path):
    # The WCS update writes S_REGION of each chip itself (drizzlepac's compute_sregion insists on
    # a file opened in update mode): the text must be drizzlepac's, to the digit, SIP included.
    import gzip
    import shutil

    from drizzlepac.haputils import processing_utils

    from autodriz.delivery import exposure_sregion

    flt = tmp_path / "ib6o23rtq_flt.fits"
    with gzip.open(shared_data / "real" / "wfc3ir_goodss" / "ib6o23rtq_flt.fits.gz") as src, flt.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    with fits.open(flt) as hdul:
        ours = exposure_sregion(hdul, 1)
    with fits.open(flt, mode="update") as hdul:
        processing_utils.compute_sregion(hdul)
    theirs = fits.getheader(flt, ("SCI", 1)).cards["S_REGION"]
    assert ours.startswith("POLYGON ICRS ") and len(ours.split()) == 2 + 2 * 5
    assert fits.Card("S_REGION", ours).image == theirs.image  # the card as written, CONTINUEs included
