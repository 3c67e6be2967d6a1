"""What a campaign runs and what each dataset needs: the reprocessing rules and the memory model."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autodriz.batch.common import Entry
from autodriz.batch.summary import dataset_label, short
from autodriz.ledger import DONE, FAILED, PENDING, RUNNING, SKIPPED, Row

#: Memory model of one dataset's run, MB = base + per-megapixel * (SCI pixels of every FLT/FLC).
#: The base covers the interpreter with drizzlepac/stwcs/astropy loaded and the small
#: verification drizzles; the per-pixel part AstroDrizzle's in-memory copies (single drizzles,
#: median, blot) of the inputs. Calibrated on the two figures HST operations works with — a
#: full ACS/WFC association of 4 exposures with FLT + FLC (8 files x 16.8 Mpix = 134 Mpix) needs
#: about 3 GB, a WFC3/IR one (4 x 1.03 Mpix) about 0.4 GB — and checked against the peaks the
#: ledger records (``peak_rss_mb``), which replace the model once a dataset has run.
MEMORY_BASE_MB = 350.0
MEMORY_MB_PER_MPIX = 20.0
#: Margin on a measured peak (the peak is of the largest process, not of the tree).
MEASURED_MARGIN = 1.25


def memory_model_mb(megapixels: float) -> float:
    """Estimated peak memory (MB) of a dataset whose FLT/FLC SCI arrays hold ``megapixels``."""
    return MEMORY_BASE_MB + MEMORY_MB_PER_MPIX * max(0.0, megapixels)


def input_megapixels(entry: Entry) -> float:
    """SCI pixels of every FLT/FLC of the dataset, in millions, from the headers (no data read)."""
    from astropy.io import fits

    from autodriz.provenance import dataset_files

    total = 0
    for path in dataset_files(entry.input):
        if path.name.lower().endswith(("_asn.fits", "_asn.fits.gz")) or not path.exists():
            continue
        with contextlib.suppress(OSError, ValueError), fits.open(path) as hdul:
            total += sum(int(h.header.get("NAXIS1", 0)) * int(h.header.get("NAXIS2", 0))
                         for h in hdul if h.name == "SCI")
    return total / 1e6


def estimate_memory_mb(entry: Entry, row: Row | None = None) -> tuple[float, str]:
    """A dataset's memory need (MB) and how it was obtained: its measured peak, else the model."""
    if row is not None and row.peak_rss_mb:
        return MEASURED_MARGIN * row.peak_rss_mb, f"measured peak {row.peak_rss_mb:.0f} MB x {MEASURED_MARGIN}"
    mpix = input_megapixels(entry)
    return memory_model_mb(mpix), f"model: {mpix:.2f} Mpix"


@dataclass(frozen=True)
class Decision:
    """Whether one dataset runs in this campaign, and why (one line of the plan)."""

    entry: Entry
    run: bool
    reason: str
    #: Its provenance now, when it was computed (datasets with a ledger row).
    current: Any = None
    #: Record ``current`` as the row's provenance without running (a row from a schema-1 ledger).
    baseline: bool = False


def decide(
    entry: Entry, row: Row | None, current: Any, *, retry_failed: bool, reprocess_if: Sequence[str] = ()
) -> Decision:
    """The reprocessing rule for one dataset (pure: ledger row and provenance in, decision out).

    New and pending datasets run; ``done``/``skipped``/``failed`` ones run again when what they
    were made from changed (:func:`autodriz.provenance.changes`: inputs, settings, catalog, and
    versions with ``--reprocess-if``); a failed one also with ``--retry-failed``. A row without
    provenance (from a ledger written before it was recorded) is not run because of that: the
    provenance now becomes its baseline, so that a whole archive is not reprocessed on upgrade.
    """
    from autodriz.provenance import Provenance, changes

    if row is None or (row.status == PENDING and row.attempts == 0):
        return Decision(entry, True, "new dataset")
    if row.status == PENDING:
        return Decision(entry, True, f"pending: {short(row.message, 100) or 'not finished'}")
    if row.status == RUNNING:
        return Decision(entry, True, "left running by a campaign that stopped (or is running now)")
    recorded = Provenance.from_json(row.provenance)
    what = {DONE: "done", SKIPPED: "skipped (nothing to drizzle)", FAILED: f"failed ({row.exit_name or '-'})"}[row.status]
    if recorded is None or current is None:
        if row.status == FAILED:
            return Decision(entry, retry_failed, f"{what}; " + ("--retry-failed" if retry_failed else
                                                                 "give --retry-failed to run it again"))
        return Decision(entry, False, f"{what}; no provenance recorded (older ledger): today's is kept as its baseline",
                        current, baseline=current is not None)
    reasons = changes(recorded, current, reprocess_if)
    if reasons:
        return Decision(entry, True, f"{what} before; " + "; ".join(reasons), current)
    if row.status == FAILED and retry_failed:
        return Decision(entry, True, f"{what}, unchanged; --retry-failed", current)
    hint = "; give --retry-failed to run it again" if row.status == FAILED else ""
    return Decision(entry, False, f"{what}, nothing changed since {row.ended_at or '?'}{hint}", current)


@dataclass(frozen=True)
class Identities:
    """The campaign-wide parts of a provenance, computed once per campaign."""

    settings: Mapping[str, Any]
    catalog: Mapping[str, Any]
    versions: Mapping[str, str]

    @classmethod
    def of(cls, settings: Any) -> Identities:
        from autodriz.provenance import (
            catalog_identity,
            current_versions,
            settings_identity,
        )

        return cls(settings_identity(settings), catalog_identity(settings), current_versions())

    def provenance(self, entry: Entry, previous: Any = None) -> Any:
        """The dataset's provenance now (files whose stat did not change are not read again)."""
        from autodriz.provenance import Provenance, dataset_files, fingerprint_inputs

        files = [p for p in dataset_files(entry.input) if p.exists()]
        return Provenance(fingerprint_inputs(files, previous.inputs if previous is not None else ()),
                          self.settings, self.catalog, self.versions)


def plan_campaign(
    entries: Sequence[Entry], rows: Mapping[str, Row], identities: Identities, *,
    retry_failed: bool, reprocess_if: Sequence[str] = (),
) -> list[Decision]:
    """A decision for every entry, in the manifest's order; reads the inputs of finished datasets."""
    from autodriz.provenance import Provenance

    out = []
    for e in entries:
        row = rows.get(str(e.input))
        current = None
        if row is not None and row.status in (DONE, SKIPPED, FAILED):
            previous = Provenance.from_json(row.provenance)
            try:
                current = identities.provenance(e, previous)
            except OSError as exc:  # unreadable now: run it, the run says what is wrong
                out.append(Decision(e, True, f"inputs cannot be read ({exc})"))
                continue
        out.append(decide(e, row, current, retry_failed=retry_failed, reprocess_if=reprocess_if))
    return out


def format_plan(decisions: Sequence[Decision], base: Path | None = None) -> list[str]:
    """The plan as lines, ``plan: run <input>: <why>`` / ``plan: skip <input>: <why>``, then counts."""
    lines = [f"plan: {'run ' if d.run else 'skip'} {dataset_label(d.entry.input, base)}: {d.reason}" for d in decisions]
    n = sum(d.run for d in decisions)
    lines.append(f"plan: {n} to run, {len(decisions) - n} not run")
    return lines
