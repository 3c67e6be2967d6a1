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

``scripts/failpoints.py`` fails every failpoint of a full run (a priori, a posteriori, catalog)
and of a batch (ledger commits); its output is in docs/reliability.md. The subset here stays
within CI's budget: each trial is most of a run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import failpointing

#: One or two failpoints of every boundary kind of the default-only run (``name``, ``N``).
SUBSET: tuple[tuple[str, int], ...] = (
    ("child-start.updatewcs", 1),
    ("updatewcs", 2),  # the FLC, after the FLT was done
    ("astrodrizzle", 1),
    ("child-start.astrodrizzle", 2),  # the DRC's child, after the DRZ was made
    ("update.prepare", 2),
    ("update.fsync", 2),
    ("update.backup", 1),
    ("update.rename", 2),  # the FLT already renamed: it must be put back
    ("publish.copy", 2),  # the inputs are updated, the DRZ already published
    ("report.html", 1),
)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> failpointing.Reference:
    base = tmp_path_factory.mktemp("failpoints")
    pristine = failpointing.make_visit(base / "pristine")
    (base / "reference").mkdir()
    return failpointing.reference(pristine, base / "reference", failpointing.DEFAULT_ONLY)


def test_record_run_lists_every_boundary_of_the_run(reference: failpointing.Reference) -> None:
    names = {name for name, _ in reference.failpoints}
    assert names >= {name for name, _ in SUBSET}, sorted(names)
    # FLT and FLC: two of each per-file boundary, two drizzles.
    counts = {name: max(n for m, n in reference.failpoints if m == name) for name in names}
    assert counts["update.rename"] == counts["updatewcs"] == counts["astrodrizzle"] == 2, counts
    print("\nfailpoints of the default-only run:", ", ".join(f"{n}:{k}" for n, k in reference.failpoints))


@pytest.mark.parametrize("name,n", SUBSET, ids=[f"{n}:{k}" for n, k in SUBSET])
def test_failure_at_a_boundary_ends_deliberately(
    name: str, n: int, reference: failpointing.Reference, tmp_path: Path,
) -> None:
    assert (name, n) in reference.failpoints
    # A rerun only where the inputs changed: an untouched visit is the pristine one.
    trial = failpointing.trial(reference, name, n, tmp_path, rerun=None)
    assert not trial.problems, f"{trial.failpoint}: exit {trial.code} {trial.state}: {trial.problems}\n{trial.verdict}"
    assert trial.code not in (0, 9), f"{trial.failpoint} did not fail the run: {trial.verdict}"
