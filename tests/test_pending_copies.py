"""A fit's working copies are written only when read (autodriz.solutions.base.PendingCopies).

Until then, verification and a loser's headerlet apply the fit to the starting copies in memory;
what they see must be exactly what the written copies hold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from autodriz.hstio import apply_sci_cards, chip_wcs, chip_wcs_cards, sci_extensions, solution_keywords
from autodriz.simulate import EXACT_WORLD, SimulationConfig, simulate_visit
from autodriz.solutions.base import PendingCopies, copy_exposures, pending_copies
from autodriz.verifydriz import load_exposure


@pytest.fixture(scope="module")
def visit(tmp_path_factory):
    out = tmp_path_factory.mktemp("visit")
    return simulate_visit(out / "v", SimulationConfig(n_exposures=2, chip_shape=(64, 128), n_stars=15, seed=11,
                                                      **EXACT_WORLD))


def _fitted(path: Path) -> dict[int, list]:
    """Edits of a made-up fit: every chip moved by 0.2″ and rotated a little."""
    keywords = solution_keywords(42, 3.25, 4.5, "rscale", "a posteriori solution relatively aligned to USER")
    edits = {}
    with fits.open(path) as hdul:
        for index, extver in sci_extensions(hdul):
            w = chip_wcs(hdul, index)
            w.wcs.crval = w.wcs.crval + np.array([0.2 / 3600, -0.1 / 3600])
            a = np.radians(0.01)
            w.wcs.cd = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ w.wcs.cd
            edits[extver] = chip_wcs_cards(w, "IDC_x-FIT_REL_USER", keywords)
    return edits


def test_nothing_is_written_until_an_item_is_read_then_the_copies_hold_the_fit(visit, tmp_path):
    (tmp_path / "start").mkdir()
    sources = copy_exposures([Path(p) for p in (*visit.flt_paths, *visit.flc_paths)], tmp_path / "start")
    edits = {o: _fitted(c) for o, c in sources.items()}
    before = {c: c.read_bytes() for c in sources.values()}
    pending = PendingCopies(sources, tmp_path / "fit", edits)

    assert len(pending) == len(sources) and all(o in pending for o in sources) and list(pending) == list(sources)
    assert pending_copies(pending) is pending and not (tmp_path / "fit").exists()
    assert pending == PendingCopies(sources, tmp_path / "fit", edits)

    original = next(iter(sources))
    copy = pending[original]
    assert copy == tmp_path / "fit" / sources[original].name and pending.written and pending_copies(pending) is None
    # Every copy is written at once, the starting copies are left as they were.
    assert all((tmp_path / "fit" / c.name).is_file() for c in sources.values())
    assert {c: c.read_bytes() for c in sources.values()} == before
    with fits.open(copy) as hdul:
        sci = hdul["SCI", 1].header
        assert sci["WCSNAME"] == "IDC_x-FIT_REL_USER" and sci["NMATCHES"] == 42 and sci["FITGEOM"] == "rscale"
        assert sci["CRVAL1"] == dict(edits[original][1])["CRVAL1"] != fits.getheader(sources[original], ("SCI", 1))["CRVAL1"]


def test_verification_reads_the_fit_in_memory_as_it_would_read_the_written_copy(visit, tmp_path):
    folder = tmp_path / "start"
    folder.mkdir()
    original = Path(visit.flc_paths[0])
    source = copy_exposures([original], folder)[original]
    edits = {original: _fitted(source)}
    pending = PendingCopies({original: source}, tmp_path / "fit", edits)
    in_memory = load_exposure(source, 0, edits[original])
    assert not pending.written
    written = load_exposure(pending[original], 0)
    plain = load_exposure(source, 0)
    for a, b, c in zip(in_memory.chips, written.chips, plain.chips, strict=True):
        xy = np.array([[0.0, 0.0], [127.0, 63.0], [40.5, 17.25]])
        sky_a, sky_b, sky_c = (w.all_pix2world(xy, 0) for w in (a.wcs, b.wcs, c.wcs))
        assert np.array_equal(sky_a, sky_b)
        assert np.abs(sky_a - sky_c).max() * 3.6e6 > 50  # the fit moved it (0.2″)
        assert np.array_equal(a.data, b.data)


def test_a_losers_headerlet_from_memory_equals_the_one_from_its_written_copy(visit, tmp_path):
    from stwcs.wcsutil import headerlet

    from autodriz._child import _solved

    folder = tmp_path / "start"
    folder.mkdir()
    original = Path(visit.flt_paths[0])
    source = copy_exposures([original], folder)[original]
    cards = _fitted(source)
    written = tmp_path / "written_flt.fits"
    written.write_bytes(source.read_bytes())
    with fits.open(written, mode="update") as hdul:
        apply_sci_cards(hdul, cards)
    as_json = {str(k): [[key, list(v) if isinstance(v, tuple) else v] for key, v in c] for k, c in cards.items()}
    hlets = []
    for other in ({"solved": str(written)}, {"solved": str(source), "sci_cards": as_json}):
        with _solved(other) as solved:
            hlets.append(headerlet.create_headerlet(solved, hdrname="h", wcsname="IDC_x-FIT_REL_USER",
                                                    author="autodriz", logging=False))
    from_file, from_memory = hlets
    assert [h.name for h in from_file] == [h.name for h in from_memory]
    for a, b in zip(from_file, from_memory, strict=True):
        ha, hb = a.header.copy(), b.header.copy()
        for h in (ha, hb):
            h.remove("DATE", ignore_missing=True)
        assert ha == hb, a.name
        if a.data is not None:
            assert np.array_equal(a.data, b.data)
    # The starting copy itself is untouched.
    assert fits.getheader(source, ("SCI", 1))["WCSNAME"] != "IDC_x-FIT_REL_USER"
