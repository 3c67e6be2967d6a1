"""A failure at each kind of I/O boundary of a real run ends deliberately and leaves things whole.

One record run of the smallest simulated visit (default WCS only: updatewcs, two AstroDrizzle
runs, the final update of FLT and FLC, products, reports) lists every failpoint it passes
(:mod:`autodriz.failpoints`). CI then fails a deterministic subset, one or two of every boundary
kind of that run (a child that crashes at start, updatewcs, AstroDrizzle, the preparation, fsync,
backup and rename of the final update, publishing a product, writing a report), each in a fresh
copy, and checks what :mod:`failpointing` says: a documented exit code other than 1 with one
verdict line, no partial product under a final name, the inputs all untouched or all updated,
and, when they were updated, that the next run succeeds with the reference run's WCS (a visit
left untouched is byte-identical to the pristine one, whose run is the reference).

The catalog cache and service boundaries: CI fails every ``catalog.*``, ``cache.*`` and
``service.*`` failpoint of an a posteriori run whose catalog comes from MAST's catalog service (a
loopback fake serving the visit's catalog) with an empty cache (the service is asked, its answer
cached); ``-m slow`` also with that cache (read instead of the service).

The whole enumeration is ``-m slow`` (each trial is most of a run, so the full run's list took
48 min on the shared 2-core machine at load 8-15, the batch's over an hour): every failpoint of a full run (a priori, a posteriori, verification;
>= 25 distinct) and every failpoint of ``autodriz batch`` (ledger commits included). Each prints
the list it hit: ``pytest -m slow -s tests/reliability/test_failpoints.py``.
``scripts/failpoints.py`` is the same enumeration outside pytest.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import failpointing
import fakeservice
import pytest

#: One or two failpoints of every boundary kind of the default-only run (``name``, ``N``).
SUBSET: tuple[tuple[str, int], ...] = (
    # One per kind of boundary (CI time); every failpoint of a run is tried by the slow
    # enumerations below (`pytest -m slow -s tests/reliability/test_failpoints.py`).
    ("child-start.updatewcs", 1),
    ("astrodrizzle", 1),
    ("update.fsync", 2),
    ("update.rename", 2),  # the FLT already renamed: it must be put back
    ("publish.copy", 2),  # the inputs are updated, the DRZ already published
    ("report.html", 1),
)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return failpointing.make_visit(tmp_path_factory.mktemp("failpoints-visit") / "pristine")


@pytest.fixture(scope="module")
def reference(pristine: Path, tmp_path_factory: pytest.TempPathFactory) -> failpointing.Reference:
    return failpointing.reference(pristine, tmp_path_factory.mktemp("reference"), failpointing.DEFAULT_ONLY)


def _listed(trials: list[failpointing.Trial]) -> str:
    return "\n".join(f"{'PROBLEM' if t.problems else 'ok':<8}{t.failpoint:<44} exit {t.code:<3} inputs {t.state:<10} "
                     f"rerun {t.rerun_code if t.rerun_code is not None else '-':<3} {t.verdict[:110]}"
                     + (f"\n        {t.problems}" if t.problems else "") for t in trials)


def test_record_run_lists_every_boundary_of_the_run(reference: failpointing.Reference) -> None:
    names = {name for name, _ in reference.failpoints}
    assert names >= {name for name, _ in SUBSET}, sorted(names)
    # FLT and FLC: two of each per-file boundary, two drizzles; updatewcs runs on the FLT only
    # and its result is carried over to the FLC (autodriz.wcstransfer).
    counts = {name: max(n for m, n in reference.failpoints if m == name) for name in names}
    assert counts["update.rename"] == counts["astrodrizzle"] == 2, counts
    assert counts["updatewcs"] == counts["default.transfer"] == 1, counts
    print("\nfailpoints of the default-only run:", ", ".join(f"{n}:{k}" for n, k in reference.failpoints))


@pytest.mark.parametrize("name,n", SUBSET, ids=[f"{n}:{k}" for n, k in SUBSET])
def test_failure_at_a_boundary_ends_deliberately(
    name: str, n: int, reference: failpointing.Reference, tmp_path: Path,
) -> None:
    assert (name, n) in reference.failpoints
    # A rerun only where the inputs changed: an untouched visit is the pristine one.
    trial = failpointing.forked_trial(reference, name, n, tmp_path, rerun=None)
    assert not trial.problems, f"{trial.failpoint}: exit {trial.code} {trial.state}: {trial.problems}\n{trial.verdict}"
    assert trial.code not in (0, 9), f"{trial.failpoint} did not fail the run: {trial.verdict}"


@pytest.fixture(scope="module")
def mast(pristine: Path) -> Iterator[fakeservice.FakeService]:
    with pytest.MonkeyPatch.context() as mp:
        services = fakeservice.fake_services(mp)
        start = next(services)
        yield start("catalog", body=failpointing.mast_csv(pristine))
        services.close()


#: Boundaries of the catalog: its file, the cache, the service.
CATALOG_KINDS = ("catalog.", "cache.", "service.")


@pytest.fixture(scope="module")
def cold(pristine: Path, mast: fakeservice.FakeService, tmp_path_factory: pytest.TempPathFactory
         ) -> failpointing.Reference:
    """Record run with an empty cache: the service is asked and its answer cached."""
    ref = failpointing.reference(pristine, tmp_path_factory.mktemp("cold"), failpointing.SERVICE, mast_url=mast.url)
    assert mast.requests, "the fake catalog service was not asked"
    return ref


def _catalog_trials(ref: failpointing.Reference, label: str, tmp_path: Path) -> list[failpointing.Trial]:
    trials = []
    for name, n in ref.failpoints:
        if name.startswith(CATALOG_KINDS):
            work = tmp_path / f"{label}-{name}-{n}"
            work.mkdir()
            t = failpointing.forked_trial(ref, name, n, work, rerun=None)
            t.failpoint = f"{label} cache {t.failpoint}"
            trials.append(t)
    print(f"\ncatalog/cache/service failpoints hit ({label} cache):\n" + _listed(trials))
    return trials


@pytest.mark.slow
def test_every_catalog_cache_and_service_failpoint_with_an_empty_cache(
    cold: failpointing.Reference, tmp_path: Path,
) -> None:
    names = {n for n, _ in cold.failpoints}
    assert {"service.catalog", "cache.write"} <= names, cold.failpoints
    trials = _catalog_trials(cold, "cold", tmp_path)
    assert {t.failpoint.split()[-1] for t in trials} >= {"service.catalog:1", "cache.write:1"}
    assert not [t for t in trials if t.problems], _listed(trials)


@pytest.mark.slow
def test_every_catalog_cache_and_service_failpoint_with_a_warm_cache(
    pristine: Path, cold: failpointing.Reference, mast: fakeservice.FakeService, tmp_path: Path,
) -> None:
    # The same visit with the cache the cold run filled: read from it, the service not asked.
    warm_pristine = tmp_path / "warm-pristine"
    shutil.copytree(pristine, warm_pristine)
    shutil.copytree(cold.after / "cache", warm_pristine / "cache")
    (tmp_path / "warm").mkdir()
    warm = failpointing.reference(warm_pristine, tmp_path / "warm", failpointing.SERVICE, mast_url=mast.url)
    assert any(n == "cache.read" for n, _ in warm.failpoints), warm.failpoints
    assert not any(n == "service.catalog" for n, _ in warm.failpoints), warm.failpoints
    trials = _catalog_trials(warm, "warm", tmp_path)
    assert "cache.read:1" in {t.failpoint.split()[-1] for t in trials}
    assert not [t for t in trials if t.problems], _listed(trials)


@pytest.mark.slow
def test_every_failpoint_of_a_full_run(pristine: Path, tmp_path: Path) -> None:
    ref = failpointing.reference(pristine, tmp_path / "reference", failpointing.FULL)
    trials = []
    for name, n in ref.failpoints:
        work = tmp_path / f"{name}-{n}"
        work.mkdir()
        trials.append(failpointing.forked_trial(ref, name, n, work, rerun=None))
        print("\n" + _listed(trials[-1:]), flush=True)  # as it goes: the whole list takes most of an hour
    print(f"\nevery failpoint of a full run ({len(trials)}):\n" + _listed(trials))
    assert len({t.failpoint for t in trials}) >= 25
    assert not [t for t in trials if t.problems], _listed(trials)


@pytest.mark.slow
def test_every_failpoint_of_a_batch(pristine: Path, tmp_path: Path) -> None:
    ref = failpointing.batch_reference(pristine, tmp_path / "reference")
    assert any(name == "ledger.commit" for name, _ in ref.failpoints), ref.failpoints
    trials = []
    for name, n in ref.failpoints:
        work = tmp_path / f"{name}-{n}"
        work.mkdir()
        trials.append(failpointing.batch_trial(ref, name, n, work))
        print("\n" + _listed(trials[-1:]), flush=True)
    print(f"\nevery failpoint of a batch ({len(trials)}):\n" + _listed(trials))
    assert len({t.failpoint for t in trials}) >= 25
    assert not [t for t in trials if t.problems], _listed(trials)
