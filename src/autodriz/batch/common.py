"""What every part of ``autodriz batch`` shares: its exit codes, errors and dataset entry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from autodriz.ledger import DONE, FAILED, SKIPPED

#: Default per-dataset wall-clock limit, seconds (a full-frame visit takes minutes, not hours).
DEFAULT_TIMEOUT = 7200.0
#: Extra time the driver waits for an answer beyond the per-dataset timeout before it gives up
#: on a task whose worker stopped answering.
DRIVER_GRACE = 120.0


class BatchExit(IntEnum):
    """Exit status of ``autodriz batch``.

    0, 2 and 130 mean what they mean for ``autodriz INPUT``; the batch's own outcomes are 20-23,
    clear of the single-dataset codes (which grow: 10 is ``LOCKED``), so that a wrapper can tell
    a campaign's status from a dataset's.
    """

    #: Every dataset named is done or skipped (nothing failed, nothing left pending).
    OK = 0
    #: Bad flag, no inputs, unreadable manifest, a glob that matches nothing, clashing roots.
    USAGE = 2
    #: Some datasets failed (this time or before, not retried); the others are done/skipped.
    SOME_FAILED = 20
    #: Every dataset named failed: nothing done or skipped (a wrong --jref, a broken install …).
    ALL_FAILED = 21
    #: The Dask cluster could not be started or reached (``--scheduler``).
    CLUSTER_ERROR = 22
    #: The ledger cannot be used: unreadable, not a ledger, or held by another running campaign.
    LEDGER_ERROR = 23
    #: Interrupted (Ctrl-C / SIGTERM): datasets in flight go back to pending; re-run to resume.
    INTERRUPTED = 130


class UsageError(ValueError):
    """The batch's inputs or options cannot be used (exit :attr:`BatchExit.USAGE`)."""


class ClusterError(RuntimeError):
    """The Dask cluster could not be started or reached (exit :attr:`BatchExit.CLUSTER_ERROR`)."""


@dataclass(frozen=True)
class Entry:
    """One dataset of a campaign."""

    input: Path
    root: str
    trailer: Path


def campaign_exit(counts: Mapping[str, int], interrupted: bool) -> BatchExit:
    """The campaign's exit status from the ledger's counts of its datasets (pure)."""
    if interrupted:
        return BatchExit.INTERRUPTED
    if counts[FAILED]:
        return BatchExit.ALL_FAILED if not (counts[DONE] or counts[SKIPPED]) else BatchExit.SOME_FAILED
    return BatchExit.OK
