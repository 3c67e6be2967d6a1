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


def _assert_same_headerlet(a: fits.HDUList, b: fits.HDUList) -> None:
    """The same HDUs, headers (but the DATE each was made) and data."""
    assert [h.name for h in a] == [h.name for h in b]
    for ha, hb in zip(a, b, strict=True):
        left, right = ha.header.copy(), hb.header.copy()
        for h in (left, right):
            h.remove("DATE", ignore_missing=True)
        assert left == right, ha.name
        if ha.data is not None:
            assert np.array_equal(np.asarray(ha.data), np.asarray(hb.data)), ha.name


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
    _assert_same_headerlet(*hlets)
    # The starting copy itself is untouched.
    assert fits.getheader(source, ("SCI", 1))["WCSNAME"] != "IDC_x-FIT_REL_USER"


def test_a_pending_fit_that_fails_verification_is_never_written_and_the_next_one_wins(tmp_path, monkeypatch):
    """Two fits whose copies are pending: the better-ranked one misregisters an exposure by
    0.5″, so verification (reading it in memory) rejects it; the next one is verified the same
    way and wins. Only the winner's copies are ever written; the rejected fit never travels
    with the inputs, and products and inputs carry the winner's WCS."""
    import json
    import re

    from autodriz import pipeline
    from autodriz.cli import main
    from autodriz.exitcodes import ExitCode
    from autodriz.fitquality import FitScore, FitStatistics
    from autodriz.solutions.base import Candidate

    visit = simulate_visit(tmp_path / "v", SimulationConfig(n_exposures=3, chip_shape=(256, 512), n_stars=60,
                                                            pointing_error_mas=(0.0, 0.0), seed=7, **EXACT_WORLD))
    written: list[str] = []

    class TwoPendingFits:
        """Stands in for the a posteriori strategy: the pipeline default's WCS as two 'fits'."""

        folder, section, logger = "aposteriori", "compute_aposteriori", pipeline.logger

        def plan(self, ctx):
            return pipeline.AposterioriStrategy().plan(ctx)

        def propose(self, ctx):
            default, dataset = ctx.default, ctx.dataset
            second = dataset.exposures[1].rootname
            out = []
            for name, rms, shift in (("aposteriori-REL-BAD-rscale", 2.0, 0.5), ("aposteriori-REL-GOOD-rscale", 4.0, 0.0)):
                wcsname = f"IDC_0461802ej-FIT_REL_{name.split('-')[2]}"
                edits = {}
                for original, copy in default.copies.items():
                    with fits.open(copy) as hdul:
                        edits[original] = {
                            extver: [("WCSNAME", wcsname)]
                            + ([("CRVAL2", hdul[index].header["CRVAL2"] + shift / 3600.0)]
                               if original.name.startswith(second) and shift else [])
                            for index, extver in sci_extensions(hdul)
                        }
                copies = PendingCopies(dict(default.copies), ctx.folder(self) / name, edits)
                original_write = copies.write

                def write(copies=copies, original_write=original_write, name=name, **kwargs):
                    if not copies.written:
                        written.append(name)
                    original_write(**kwargs)

                copies.write = write
                stats = FitStatistics(geometry="rscale", succeeded=True, n_matches=150, rms_mas=rms)
                out.append(Candidate(name, wcsname, copies.folder, copies, "injected fit", kind="aposteriori",
                                     quality=1, details={"statistics": {"rms_mas": rms, "n_matches": 150}},
                                     score=FitScore(1, (), stats, catalog=name.split("-")[2], mode="REL")))
            return out

    monkeypatch.setattr(pipeline, "STRATEGIES", (*pipeline.STRATEGIES[:2], TwoPendingFits()))
    code = main([str(visit.asn_path), "--jref", str(visit.jref_dir), "--keep-workdirs"])

    assert code == ExitCode.OK
    report = json.loads((visit.directory / "jsim01010_report.json").read_text())
    by_name = {c["name"]: c for c in report["candidates"]}
    assert by_name["aposteriori-REL-BAD-rscale"]["verification"]["status"] == "fail"
    assert by_name["aposteriori-REL-GOOD-rscale"]["verification"]["status"] == "pass"
    assert report["chosen"]["name"] == "aposteriori-REL-GOOD-rscale"
    assert written == ["aposteriori-REL-GOOD-rscale"]
    assert not (visit.directory / "jsim01010_aposteriori" / "aposteriori-REL-BAD-rscale").exists()
    # The winner's copies were moved from the default's (--keep-workdirs shows it): the pixels
    # are in the winner's folder, header shadows in the default's, and the trailer says so.
    trailer = (visit.directory / "jsim01010.tra").read_text()
    said = re.search(r"INFO .*working copies of aposteriori-REL-GOOD-rscale: (\d+) of (\d+) moved from \S*jsim01010_default, "
                     r"where header shadows \(pixels read as zeros\) stay", trailer)
    assert said and int(said[1]) == int(said[2]) == len(visit.flt_paths) + len(visit.flc_paths), trailer[-3000:]
    for path in [*visit.flt_paths, *visit.flc_paths]:
        name = Path(path).name
        with fits.open(visit.directory / "jsim01010_aposteriori" / "aposteriori-REL-GOOD-rscale" / name) as won, \
                fits.open(visit.directory / "jsim01010_default" / name) as shadow:
            assert won["SCI", 1].data.any() and not shadow["SCI", 1].data.any()
            assert shadow["SCI", 1].header["WCSNAME"] == "IDC_0461802ej"
    for path in [*visit.flt_paths, *visit.flc_paths]:
        with fits.open(path) as hdul:
            assert {h.header["WCSNAME"] for h in hdul if h.name == "SCI"} == {"IDC_0461802ej-FIT_REL_GOOD"}
            assert "IDC_0461802ej-FIT_REL_BAD" not in {h.header.get("WCSNAME") for h in hdul if h.name == "HDRLET"}


def _with_small_extensions(path: Path) -> None:
    """Give an exposure what updatewcs and earlier runs attach: a distortion array and a table."""
    rng = np.random.default_rng(5)
    with fits.open(path, mode="append") as hdul:
        hdul.append(fits.ImageHDU(rng.normal(size=(33, 65)).astype(np.float32), name="WCSDVARR", ver=1))
        hdul.append(fits.BinTableHDU.from_columns([fits.Column("WCS_ID", "24A", array=["IDC_x", "IDC_x-FIT"])],
                                                  name="WCSCORR"))


def test_a_header_shadow_is_the_file_but_for_the_pixels_of_sci_err_dq(visit, tmp_path):
    import os

    from autodriz.solutions.base import header_shadow

    source = tmp_path / "src_flt.fits"
    source.write_bytes(Path(visit.flt_paths[0]).read_bytes())
    _with_small_extensions(source)
    shadow = tmp_path / "shadow_flt.fits"
    header_shadow(source, shadow)
    assert shadow.stat().st_size == source.stat().st_size
    # Pixels not written: a sparse file (SCI, ERR, DQ of two 64x128 chips are holes).
    assert os.stat(shadow).st_blocks * 512 < source.stat().st_size
    with fits.open(source) as a, fits.open(shadow) as b:
        assert [h.name for h in a] == [h.name for h in b]
        for ha, hb in zip(a, b, strict=True):
            assert ha.header.tostring() == hb.header.tostring(), ha.name
            if ha.name in ("SCI", "ERR", "DQ"):
                assert not hb.data.any() and (ha.name == "DQ" or ha.data.any())  # zeros for the pixels
            elif ha.data is not None:
                assert np.array_equal(np.asarray(ha.data), np.asarray(hb.data)), ha.name
        ends = {(h.name, h.ver): a.fileinfo(i) for i, h in enumerate(a)}
    # Byte for byte outside the shadowed data blocks.
    raw, shadowed = source.read_bytes(), bytearray(shadow.read_bytes())
    for (name, _), info in ends.items():
        if name in ("SCI", "ERR", "DQ"):
            start, stop = info["datLoc"], info["datLoc"] + info["datSpan"]
            shadowed[start:stop] = raw[start:stop]
    assert bytes(shadowed) == raw


def test_taking_the_sources_writes_the_same_copies_and_leaves_headerlet_sources(visit, tmp_path):
    from stwcs.wcsutil import headerlet

    from autodriz._child import _solved

    originals = [Path(p) for p in (*visit.flt_paths, *visit.flc_paths)]
    starts = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        starts[name] = copy_exposures(originals, tmp_path / name)
        for copy in starts[name].values():
            _with_small_extensions(copy)
    edits = {o: _fitted(c) for o, c in starts["a"].items()}
    copied = PendingCopies(starts["a"], tmp_path / "fit-a", edits)
    moved = PendingCopies(starts["b"], tmp_path / "fit-b", edits)
    before = {o: starts["b"][o].read_bytes() for o in originals}
    copied.write()
    moved.write(take_sources=True)
    for original in originals:
        # The same working copy, and the starting one still in place, as a shadow.
        assert moved[original].read_bytes() == copied[original].read_bytes()
        source = starts["b"][original]
        assert source.is_file() and source.read_bytes() != before[original]
        with fits.open(source) as shadow:
            assert not shadow["SCI", 1].data.any()
        # Headerlets of the starting candidate and of a losing fit from it, made from the shadow,
        # are those made from the real starting copy.
        as_json = {str(k): [[key, list(v) if isinstance(v, tuple) else v] for key, v in c]
                   for k, c in edits[original].items()}
        for extra in ({}, {"sci_cards": as_json}):
            made = []
            for other in ({"solved": str(starts["a"][original]), **extra}, {"solved": str(source), **extra}):
                with _solved(other) as solved:
                    made.append(headerlet.create_headerlet(solved, hdrname="h", wcsname=None, author="autodriz",
                                                           logging=False))
            _assert_same_headerlet(*made)


def test_an_original_is_never_taken_as_a_source(visit, tmp_path):
    """A pending copy whose source is an input file (never so in a run) copies it, as before."""
    original = tmp_path / "in_flt.fits"
    original.write_bytes(Path(visit.flt_paths[0]).read_bytes())
    before = original.read_bytes()
    pending = PendingCopies({original: original}, tmp_path / "fit", {original: _fitted(original)})
    pending.write(take_sources=True)
    assert original.read_bytes() == before and pending[original].is_file()


def test_finish_is_applied_to_every_copy_in_the_opening_that_writes_its_fit(visit, tmp_path):
    """The winner's WCS is rounded to the delivered precision as its fit is written, edited or not."""
    from autodriz.products import round_wcs_to_delivered_precision

    (tmp_path / "start").mkdir()
    sources = copy_exposures([Path(p) for p in visit.flt_paths], tmp_path / "start")
    first, second = sources
    edits = {first: _fitted(sources[first])}  # the second exposure left out of the fit
    pending = PendingCopies(sources, tmp_path / "fit", edits)
    seen = []

    def finish(hdul: fits.HDUList) -> None:
        seen.append(Path(hdul.filename()).name)
        assert round_wcs_to_delivered_precision(hdul) >= 0

    fitted_values = [c[1] for cards in edits[first].values() for c in cards if isinstance(c[1], float)]
    assert any(v != float(f"{v:.13E}") for v in fitted_values)  # there is something to round
    pending.write(finish=finish)
    assert sorted(seen) == sorted(c.name for c in sources.values())
    for original in sources:
        with fits.open(pending[original]) as hdul:
            for index, _ in sci_extensions(hdul):
                header = hdul[index].header
                for key in ("CRVAL1", "CRVAL2", "CD1_1", "CD2_2"):
                    assert header[key] == float(f"{header[key]:.13E}"), key
                    if original == first:  # the fit's value, rounded
                        fitted = dict((c[0], c[1]) for c in edits[first][hdul[index].ver] if isinstance(c[1], float))
                        assert header[key] == float(f"{fitted[key]:.13E}"), key
