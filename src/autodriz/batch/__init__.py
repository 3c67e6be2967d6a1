"""``autodriz batch``: reprocess many datasets on Dask distributed, resumably, with a ledger.

How a campaign runs
-------------------
1. The inputs (paths, globs, manifest files) are expanded into datasets, each keyed by its
   absolute input path, and added to the SQLite ledger (:mod:`autodriz.ledger`) as ``pending``
   unless they are already there. The ledger's lock is taken first, so a ``running`` row found
   now was left by a campaign that died: it is adopted from its trailer's verdict if that attempt
   finished, otherwise it goes back to ``pending``.
2. What is left to do (``pending``, and ``failed`` with ``--retry-failed``) is submitted to a
   Dask cluster — a :class:`distributed.LocalCluster` of ``--workers`` processes with one thread
   each (drizzlepac is not thread-safe), or an existing cluster with ``--scheduler``. No more
   tasks are in flight than the cluster has threads, so submission is when a dataset starts and
   a killed campaign leaves at most that many rows ``running``.
3. Each task (:func:`run_dataset`, on a worker) runs ``python -m autodriz.batch --run-one`` in
   its own process *session*: that child calls the same :func:`autodriz.pipeline.process` as
   ``autodriz INPUT``, with its own trailer, and prints its :class:`RunResult` as one JSON line.
   The session is killed as a whole on the per-dataset timeout, and the child kills its own
   session when the worker that started it dies, so a hang, a segfault or ``kill -9`` of the
   campaign never leaves drizzlepac running on its own.
4. The driver (this process, the only writer of the ledger) records every outcome in its own
   transaction and shows progress; at the end it prints a summary and writes ``--summary-json``.

A dataset is ``done`` only when its run wrote products: ``OK`` (exit 0) or ``DEFAULT_ONLY``
(exit 9, products with the pipeline-default WCS); ``DRIZCORR_OMIT`` (exit 5,
nothing to drizzle by request) is ``skipped``; every other exit code, a crash and a timeout are
``failed``. ``done`` and ``skipped`` are never run again; ``failed`` only with ``--retry-failed``.

Modules: :mod:`~autodriz.batch.inputs` (paths, globs, manifests → entries),
:mod:`~autodriz.batch.task` (the Dask task and its child process), :mod:`~autodriz.batch.plan`
(reprocessing rules, memory estimates), :mod:`~autodriz.batch.driver` (the campaign),
:mod:`~autodriz.batch.cluster` (Dask client), :mod:`~autodriz.batch.progress`,
:mod:`~autodriz.batch.summary` (tables, summary, ``--status``), :mod:`~autodriz.batch.command`
(the CLI command); :mod:`~autodriz.batch.common` holds the exit codes, errors and
:class:`Entry` they share. Their public names are re-exported here.
"""

from autodriz.batch.cluster import open_client
from autodriz.batch.command import (
    add_batch_arguments,
    batch_exit_table,
    run_batch_command,
)
from autodriz.batch.common import (
    DEFAULT_TIMEOUT,
    DRIVER_GRACE,
    BatchExit,
    ClusterError,
    Entry,
    UsageError,
)
from autodriz.batch.driver import BatchOptions, BatchReport, dry_run, run_batch
from autodriz.batch.inputs import (
    default_ledger_path,
    expand_inputs,
    make_entries,
    read_manifest,
)
from autodriz.batch.plan import (
    MEASURED_MARGIN,
    MEMORY_BASE_MB,
    MEMORY_MB_PER_MPIX,
    Decision,
    Identities,
    decide,
    estimate_memory_mb,
    format_plan,
    input_megapixels,
    memory_model_mb,
    plan_campaign,
)
from autodriz.batch.progress import (
    NoProgress,
    PlainProgress,
    RichProgress,
    Tally,
    make_progress,
)
from autodriz.batch.summary import (
    dataset_label,
    format_status,
    format_summary,
    format_table,
)
from autodriz.batch.task import RESULT_MARK, classify, run_dataset, verdict_from_trailer

__all__ = [
    "DEFAULT_TIMEOUT", "DRIVER_GRACE", "MEASURED_MARGIN", "MEMORY_BASE_MB", "MEMORY_MB_PER_MPIX", "RESULT_MARK",
    "BatchExit", "BatchOptions", "BatchReport", "ClusterError", "Decision", "Entry", "Identities", "NoProgress",
    "PlainProgress", "RichProgress", "Tally", "UsageError", "add_batch_arguments", "batch_exit_table", "classify",
    "dataset_label", "decide", "default_ledger_path", "dry_run", "estimate_memory_mb", "expand_inputs", "format_plan",
    "format_status", "format_summary", "format_table", "input_megapixels", "make_entries", "make_progress",
    "memory_model_mb", "open_client", "plan_campaign", "read_manifest", "run_batch", "run_batch_command",
    "run_dataset", "verdict_from_trailer",
]
