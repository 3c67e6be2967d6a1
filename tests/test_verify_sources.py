"""Verification on squares around detected stars (source_frame) against the whole frame."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from astropy.wcs import WCS

from autodriz.detect import DetectionParams, detect_sources
from autodriz.inputs import resolve_input
from autodriz.simulate import EXACT_WORLD, SimulationConfig, simulate_visit
from autodriz.astrometry.sources import detected_stars
from autodriz.solutions.default import make_default_candidate
from autodriz.verification.singles import OutputFrame, common_frame, drizzle_singles, source_frame
from autodriz.verifydriz import load_exposure, perturb_exposure, verify_candidate, verify_exposures


def _frame(ny: int, nx: int) -> OutputFrame:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.cdelt = [-0.05 / 3600, 0.05 / 3600]
    w.wcs.crpix = [nx / 2, ny / 2]
    return OutputFrame(w, (ny, nx), ((0, 0, nx, ny),), 0.05)


def _inside(tiles, xy):
    xy = np.asarray(xy)
    hit = np.zeros(len(xy), bool)
    for x0, y0, w, h in tiles:
        hit |= (xy[:, 0] >= x0) & (xy[:, 0] < x0 + w) & (xy[:, 1] >= y0) & (xy[:, 1] < y0 + h)
    return hit


def test_source_frame_spreads_disjoint_squares_that_hold_every_exposures_stars():
    rng = np.random.default_rng(3)
    frame = _frame(4200, 4200)
    stars = rng.uniform(0, 4200, size=(6000, 2))
    positions = [stars + rng.normal(0, 0.5, stars.shape) for _ in range(3)]
    # A fourth exposure covers one corner only (a mosaic tile's overlap).
    corner = stars[(stars[:, 0] > 3300) & (stars[:, 1] > 3300)]
    positions.append(corner)
    sparse = source_frame(frame, positions)
    assert sparse is not None
    tiles = sparse.tiles
    # Disjoint, inside the frame, a small part of it.
    for i, (x0, y0, w, h) in enumerate(tiles):
        assert x0 >= 0 and y0 >= 0 and x0 + w <= 4200 and y0 + h <= 4200
        for x1, y1, w1, h1 in tiles[i + 1:]:
            assert x0 + w <= x1 or x1 + w1 <= x0 or y0 + h <= y1 or y1 + h1 <= y0
    assert sparse.pixels < 0.25 * frame.pixels
    # Spread over the frame: squares in (nearly) every one of the 4 x 4 regions.
    regions = {(int((y0 + h / 2) // 1050), int((x0 + w / 2) // 1050)) for x0, y0, w, h in tiles}
    assert len(regions) >= 14
    # Every exposure, the corner one included, has stars in them.
    for xy in positions:
        assert _inside(tiles, xy).sum() >= 100


def test_source_frame_declines_when_it_cannot_help():
    rng = np.random.default_rng(4)
    small = _frame(600, 600)
    xy = rng.uniform(0, 600, size=(300, 2))
    assert source_frame(small, [xy, xy]) is None  # smaller than two squares
    frame = _frame(4200, 4200)
    # The two exposures' stars never share a square: nothing to compare there.
    left, right = rng.uniform(0, 1000, size=(500, 2)), rng.uniform(3000, 4200, size=(500, 2))
    assert source_frame(frame, [left, right]) is None
    assert source_frame(frame, [left]) is None  # one exposure
    # Too few stars for a fit on squares: the whole frame.
    few = rng.uniform(0, 4200, size=(150, 2))
    assert source_frame(frame, [few, few + 0.3]) is None


@pytest.fixture(scope="module")
def visit(tmp_path_factory):
    """A 4-exposure ACS/WFC visit of 1024x2048 chips, updatewcs'd, with its stars detected."""
    d = tmp_path_factory.mktemp("verify_sources")
    sim = simulate_visit(d, SimulationConfig(
        **EXACT_WORLD, n_exposures=4, seed=11, write_flc=False, chip_shape=(1024, 2048), n_stars=2500,
    ))
    dataset = resolve_input(sim.asn_path)
    cand = make_default_candidate(list(dataset.flt_paths), d / "default", {"jref": sim.jref_dir}, allow_header_wcs=False)
    exposures = [load_exposure(cand.copies[p], 336) for p in dataset.flt_paths]
    sources = []
    for exp in exposures:
        chips = {}
        for chip in exp.chips:
            table = detect_sources(chip.data, DetectionParams(), dq=np.where(chip.good, 0, 1))
            chips[chip.extver] = np.column_stack([np.asarray(table["x"]), np.asarray(table["y"])])
        sources.append(chips)
    return dataset, cand, exposures, sources


def test_window_drizzle_equals_the_whole_chip_drizzle_in_the_squares(visit):
    _, _, exposures, _ = visit
    frame = common_frame(exposures)
    whole = drizzle_singles(exposures, frame)
    # Squares well inside the first data tile (and one across its edge).
    x0, y0, w, h = frame.tiles[0]
    squares = ((x0 + 40, y0 + 60, 64, 64), (x0 + w // 2, y0 + h // 2, 48, 80), (x0 + w - 30, y0 + 100, 64, 64))
    sparse = OutputFrame(frame.wcs, frame.shape, squares, frame.scale_arcsec)
    assert sparse.pixels < 0.25 * sum(c.shape[0] * c.shape[1] for e in exposures for c in e.chips)
    tiles = drizzle_singles(exposures, sparse)
    for (sx, sy, sw, sh), tile in zip(squares, tiles, strict=True):
        assert tile.origin == (sx, sy)
        for e in range(len(exposures)):
            ref = whole[0].singles[e][sy - y0: sy - y0 + sh, sx - x0: sx - x0 + sw]
            refw = whole[0].weights[e][sy - y0: sy - y0 + sh, sx - x0: sx - x0 + sw]
            got, gotw = tile.singles[e][: ref.shape[0], : ref.shape[1]], tile.weights[e][: ref.shape[0], : ref.shape[1]]
            # drizzle drops an input pixel whose centre lands outside the output array: the
            # square's outermost output pixels miss part of their weight, as a tile's edge does.
            ref, refw, got, gotw = (a[2:-2, 2:-2] for a in (ref, refw, got, gotw))
            assert np.count_nonzero(refw) > 0
            np.testing.assert_allclose(gotw, refw, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))


@pytest.mark.parametrize("shift_mas", [0.0, 15.0, 250.0])
def test_squares_around_stars_give_the_whole_frames_verdict(visit, shift_mas):
    _, _, exposures, sources = visit
    exposures = list(exposures)
    if shift_mas:
        exposures[1] = perturb_exposure(exposures[1], shift_mas=(shift_mas, 0.0))
    whole = verify_exposures(exposures)
    squares = verify_exposures(exposures, sources=sources, cell=192)
    assert whole.details["coverage"] == "whole"
    assert squares.details["coverage"] == "sources"
    assert squares.details["allocated_pixels"] < 0.5 * whole.details["allocated_pixels"]
    assert squares.status == whole.status, (squares.reason, whole.reason)
    expected = "pass" if not shift_mas else "fail"
    assert squares.status == expected, squares.reason
    for a, b in zip(squares.similarity, whole.similarity, strict=True):
        assert a.method == b.method == "sources"
        assert a.n_sources >= 40
        # The same offsets within their errors (0.3 px = 15 mas; 5 px = 250 mas).
        assert abs(a.offset_px - b.offset_px) < 0.05 + 0.02 * b.offset_px, (a.name, a.offset_px, b.offset_px)
    if shift_mas:
        assert [s.status for s in squares.similarity] == ["pass", "fail", "pass", "pass"]


def test_verify_candidate_uses_the_candidates_stars(visit, monkeypatch):
    import autodriz.verifydriz as verifydriz

    dataset, cand, _, sources = visit
    stars = {str(p): chips for p, chips in zip(dataset.flt_paths, sources, strict=True)}
    plain = verify_candidate(cand, dataset)
    assert plain.details["coverage"] == "whole"
    # This visit's frame is too small for the default 320 px squares to save much: smaller ones.
    real = verifydriz.verify_exposures
    monkeypatch.setattr(verifydriz, "verify_exposures", lambda *a, **k: real(*a, **k, cell=192))
    own = verify_candidate(replace(cand, stars=stars), dataset)
    assert own.details["coverage"] == "sources" and own.status == plain.status == "pass"
    assert verify_candidate(cand, dataset, stars=stars).details["coverage"] == "sources"
    # An exposure without stars: the whole frame, as without any.
    partial = dict(stars)
    partial[str(dataset.flt_paths[0])] = {}
    assert verify_candidate(cand, dataset, stars=partial).details["coverage"] == "whole"


def test_detected_stars_are_keyed_by_every_original_and_chip():
    from astropy.table import Table

    from autodriz.astrometry.chips import Chip, ExposureSources

    table = Table({"x": [10.0, 20.0], "y": [5.0, 6.0]})
    exp = ExposureSources("j1", None, ("a_flt.fits", "a_flc.fits"), None)
    exp.chips.append(Chip(1, None, table, (100, 100)))
    exp.chips.append(Chip(2, None, table[:0], (100, 100)))
    stars = detected_stars([exp])
    assert set(stars) == {"a_flt.fits", "a_flc.fits"}
    assert set(stars["a_flc.fits"]) == {1}  # a chip without stars is left out
    np.testing.assert_array_equal(stars["a_flt.fits"][1], [[10.0, 5.0], [20.0, 6.0]])
