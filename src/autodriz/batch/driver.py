"""The campaign's driver: the ledger's only writer, it submits datasets and records outcomes."""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from autodriz import __version__
from autodriz.batch.cluster import capacity, memory_limit, open_client
from autodriz.batch.common import (
    DEFAULT_TIMEOUT,
    DRIVER_GRACE,
    BatchExit,
    ClusterError,
    Entry,
    UsageError,
    campaign_exit,
)
from autodriz.batch.inputs import default_ledger_path, expand_inputs, make_entries
from autodriz.batch.plan import (
    Identities,
    estimate_memory_mb,
    format_plan,
    plan_campaign,
)
from autodriz.batch.progress import (
    PlainProgress,
    ProgressLogHandler,
    RichProgress,
    Tally,
    make_progress,
)
from autodriz.batch.summary import TABLE_LIMIT, dataset_label, short
from autodriz.batch.task import run_dataset, verdict_from_trailer
from autodriz.exitcodes import ExitCode
from autodriz.ledger import (
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    SKIPPED,
    Ledger,
    Outcome,
    Row,
    describe_owner,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchOptions:
    """Everything ``autodriz batch`` was asked to do.

    Attributes
    ----------
    inputs : tuple of str
        Paths, globs and manifests.
    ledger : Path or None
        Ledger file; None for ``<manifest>.ledger.sqlite`` beside the one manifest.
    workers : int
        Worker processes of the LocalCluster (one thread each).
    scheduler : str or None
        Address of an existing Dask scheduler; None starts a LocalCluster.
    timeout : float
        Wall-clock seconds allowed for one dataset.
    retry_failed : bool
        Run ``failed`` datasets again.
    summary_json : Path or None
        Where to write the summary as JSON.
    progress : str
        ``auto``, ``bar``, ``plain`` or ``off``.
    cli : mapping
        Processing flags as :func:`autodriz.config.load_settings` takes them (``None`` = not given).
    config : Path or None
        ``--config`` file.
    argv : tuple of str
        The batch command line (recorded in the ledger and in each trailer).
    log_level : str
        Level of the driver's own messages.
    reprocess_if : tuple of str
        Extra reasons to run a finished dataset again (:data:`autodriz.provenance.REPROCESS_CONDITIONS`).
    dry_run : bool
        Print the plan (what would run and why) and run nothing (:func:`dry_run`).
    worker_memory_mb : float or None
        ``MEMORY`` resource (MB) of each LocalCluster worker; None: no memory-aware scheduling
        on a LocalCluster (a ``--scheduler`` cluster's workers declare their own).
    """

    inputs: tuple[str, ...]
    ledger: Path | None = None
    workers: int = 1
    scheduler: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    retry_failed: bool = False
    summary_json: Path | None = None
    progress: str = "auto"
    cli: Mapping[str, Any] = field(default_factory=dict)
    config: Path | None = None
    argv: tuple[str, ...] = ()
    log_level: str = "INFO"
    reprocess_if: tuple[str, ...] = ()
    dry_run: bool = False
    worker_memory_mb: float | None = None


@dataclass(frozen=True)
class BatchReport:
    """What a campaign ended with."""

    exit_code: BatchExit
    ledger: Path
    rows: tuple[Row, ...]
    counts: Mapping[str, int]
    ran: int
    seconds: float
    workers: int
    message: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (``--summary-json``)."""
        return {
            "autodriz": __version__,
            "exit_code": int(self.exit_code),
            "exit_name": self.exit_code.name,
            "message": self.message,
            "ledger": str(self.ledger),
            "counts": dict(self.counts),
            "this_run": {
                "ran": self.ran,
                "seconds": round(self.seconds, 2),
                "workers": self.workers,
                "datasets_per_hour": round(3600.0 * self.ran / self.seconds, 1) if self.seconds > 0 else None,
            },
            # Provenance stays in the ledger and the reports: per dataset it is kilobytes.
            "datasets": [{k: v for k, v in r.as_dict().items() if k != "provenance"} for r in self.rows],
        }


def _portable_cli(cli: Mapping[str, Any]) -> dict[str, Any]:
    """Flags for the workers: paths made absolute here, where they were typed."""
    out: dict[str, Any] = {}
    for k, v in cli.items():
        out[k] = str(Path(v).absolute()) if isinstance(v, Path) else v
    return out


def _provenance_record(entry: Entry, outcome: Outcome, identities: Identities) -> str | None:
    """The provenance the ledger keeps for a finished attempt.

    The input fingerprints are those the run reported, taken after its WCS update (else taken
    here, of the inputs as the attempt left them), with the versions it ran with; settings and
    catalog are this campaign's, which the next campaign compares with its own: a worker whose
    environment differs from the driver's must not make a dataset run again every night.
    """
    from autodriz.provenance import Provenance

    reported = Provenance.from_json(outcome.provenance)
    if reported is not None and reported.inputs:
        inputs, versions = reported.inputs, reported.versions or identities.versions
    else:
        try:
            inputs, versions = identities.provenance(entry).inputs, identities.versions
        except OSError as exc:
            logger.warning("%s: inputs cannot be fingerprinted (%s); no provenance recorded", entry.root, exc)
            return None
    return Provenance(inputs, identities.settings, identities.catalog, versions).to_json()


def _outcome(result: Mapping[str, Any]) -> Outcome:
    return Outcome(
        status=result["status"],
        exit_code=result["exit_code"],
        exit_name=result["exit_name"],
        message=result["message"],
        seconds=result["seconds"],
        wcsname=result.get("wcsname"),
        report=result.get("report"),
        worker=result.get("worker"),
        peak_rss_mb=result.get("peak_rss_mb"),
        provenance=json.dumps(result["provenance"]) if result.get("provenance") else None,
    )


def _trailer_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def run_batch(options: BatchOptions, *, progress: PlainProgress | RichProgress | None = None) -> BatchReport:
    """Run a campaign; return its report. Raises only for usage, ledger and cluster errors.

    Parameters
    ----------
    options : BatchOptions
        What to run and how.
    progress : PlainProgress or RichProgress, optional
        Progress display; from ``options.progress`` when None.

    Returns
    -------
    BatchReport

    Raises
    ------
    UsageError, autodriz.errors.ConfigError, LedgerError
        Before anything runs.
    OSError
        If the Dask cluster cannot be started or reached (``CLUSTER_ERROR``).
    """
    from autodriz.config import load_settings

    progress = progress or make_progress(options.progress)
    handler = ProgressLogHandler(progress, getattr(logging, options.log_level, logging.INFO))
    pkg_logger = logging.getLogger("autodriz")
    saved_level = pkg_logger.level
    pkg_logger.addHandler(handler)
    # The handler decides what is shown; the logger must let the batch's INFO decisions through.
    pkg_logger.setLevel(handler.level if saved_level == logging.NOTSET else min(handler.level, saved_level))
    try:
        # Validate the processing flags here, once, so a typo fails the campaign at once rather
        # than every dataset on the cluster.
        settings = load_settings(cli=dict(options.cli), config_file=options.config)
        inputs, manifests = expand_inputs(options.inputs)
        if not inputs:
            raise UsageError("no inputs: give ASN/RAW/FLT paths, globs or a manifest file")
        entries = make_entries(inputs, settings.output_dir)
        ledger_path = (options.ledger or default_ledger_path(manifests)).absolute()
        identities = Identities.of(settings)
        with Ledger(ledger_path) as ledger:
            ledger.acquire(describe_owner())
            return _run_locked(options, entries, ledger, progress, identities)
    finally:
        pkg_logger.removeHandler(handler)
        pkg_logger.setLevel(saved_level)


def dry_run(options: BatchOptions) -> list[str]:
    """``autodriz batch --dry-run``: the plan a campaign would follow now, as lines; runs nothing.

    The ledger is only read (it need not exist, and its lock is not taken); the inputs of
    finished datasets are fingerprinted as the campaign would, so the lines are those a campaign
    started now would log.

    Raises
    ------
    UsageError, autodriz.errors.ConfigError, LedgerError
        As :func:`run_batch`.
    """
    from autodriz.config import load_settings

    settings = load_settings(cli=dict(options.cli), config_file=options.config)
    inputs, manifests = expand_inputs(options.inputs)
    if not inputs:
        raise UsageError("no inputs: give ASN/RAW/FLT paths, globs or a manifest file")
    entries = make_entries(inputs, settings.output_dir)
    ledger_path = (options.ledger or default_ledger_path(manifests)).absolute()
    rows: dict[str, Row] = {}
    if ledger_path.exists():
        with Ledger(ledger_path, readonly=True) as ledger:
            rows = {r.input: r for r in ledger.rows()}
    decisions = plan_campaign(entries, rows, Identities.of(settings),
                              retry_failed=options.retry_failed, reprocess_if=options.reprocess_if)
    return format_plan(decisions, ledger_path.parent)


def _run_locked(
    options: BatchOptions, entries: list[Entry], ledger: Ledger, progress: PlainProgress | RichProgress,
    identities: Identities,
) -> BatchReport:
    campaign = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    keys = [str(e.input) for e in entries]
    new = ledger.add([(str(e.input), e.root, str(e.trailer)) for e in entries])
    by_input = {str(e.input): e for e in entries}
    for key, status in ledger.recover_stale(adopt=verdict_from_trailer):
        if status != PENDING and key in by_input:
            # The adopted attempt finished (and may have updated its inputs) without reporting
            # its provenance: the inputs as it left them are what it was made from.
            with contextlib.suppress(OSError):
                ledger.set_provenance(key, identities.provenance(by_input[key]).to_json())
    ledger.set_meta(last_campaign=campaign, last_command=" ".join(options.argv), last_started=_now())
    counts = ledger.counts(keys)
    logger.info(
        "ledger %s: %d dataset(s) named (%d new): %d done, %d skipped, %d failed, %d pending",
        ledger.path, len(entries), new, counts[DONE], counts[SKIPPED], counts[FAILED], counts[PENDING],
    )
    decisions = plan_campaign(entries, {r.input: r for r in ledger.rows(keys)}, identities,
                              retry_failed=options.retry_failed, reprocess_if=options.reprocess_if)
    for d, line in zip([*decisions, None], format_plan(decisions, ledger.path.parent)):
        # Every run is worth a line; a large campaign's unchanged datasets are not.
        level = logging.INFO if d is None or d.run or len(decisions) <= TABLE_LIMIT else logging.DEBUG
        logger.log(level, "%s", line)
        if d is not None and d.baseline:
            ledger.set_provenance(str(d.entry.input), d.current.to_json())
    todo = [d.entry for d in decisions if d.run]
    reasons = {str(d.entry.input): d.reason for d in decisions}
    memory: dict[str, float] = {}
    rows_now = {r.input: r for r in ledger.rows(keys)}
    for e in todo:
        need, how = estimate_memory_mb(e, rows_now.get(str(e.input)))
        memory[str(e.input)] = round(need)
        logger.debug("%s: memory estimate %.0f MB (%s)", e.root, need, how)

    t0 = time.monotonic()
    tally = Tally(total=len(todo))
    interrupted = False
    workers = options.workers
    if todo:
        job_base = {
            "cli": _portable_cli(options.cli),
            "config": str(options.config.absolute()) if options.config else None,
            "argv": list(options.argv) or ["autodriz", "batch"],
            "timeout": options.timeout,
        }
        stack = contextlib.ExitStack()
        try:
            try:
                client = stack.enter_context(open_client(options.workers, options.scheduler,
                                                         worker_memory_mb=options.worker_memory_mb))
            except (OSError, TimeoutError) as exc:  # what distributed raises for an unreachable scheduler
                raise ClusterError(f"Dask cluster unavailable ({options.scheduler or 'local'}): {exc}") from exc
            with stack:
                workers = capacity(client)
                progress.start(tally)
                try:
                    _drive(client, todo, ledger, campaign, job_base, options.timeout, tally, progress,
                           reasons=reasons, identities=identities, memory=memory)
                except KeyboardInterrupt:
                    interrupted = True
                    logger.warning("interrupted: datasets in flight go back to pending; run the same command to resume")
                finally:
                    progress.close()
        except KeyboardInterrupt:  # during cluster start or shutdown
            interrupted = True
    ledger.set_meta(last_ended=_now())
    final = ledger.rows(keys)
    counts = ledger.counts(keys)
    code = campaign_exit(counts, interrupted)
    seconds = time.monotonic() - t0
    message = (
        f"{len(entries)} dataset(s): {counts[DONE]} done, {counts[FAILED]} failed, {counts[SKIPPED]} skipped, "
        f"{counts[PENDING] + counts[RUNNING]} not finished; ran {tally.finished} this time in {seconds:.1f} s"
    )
    return BatchReport(code, ledger.path, tuple(final), counts, tally.finished, seconds, workers, message)


def _now() -> str:
    from autodriz.ledger import utcnow

    return utcnow()


def _drive(
    client: Any,
    todo: list[Entry],
    ledger: Ledger,
    campaign: str,
    job_base: Mapping[str, Any],
    timeout: float,
    tally: Tally,
    progress: PlainProgress | RichProgress,
    *,
    reasons: Mapping[str, str] | None = None,
    identities: Identities | None = None,
    memory: Mapping[str, float] | None = None,
) -> None:
    """Keep the cluster busy with at most as many tasks as it has threads; record each outcome."""
    queue = list(reversed(todo))  # pop() from the end keeps the manifest's order
    inflight: dict[Any, tuple[Entry, float]] = {}
    reasons = reasons or {}

    def finish(entry: Entry, outcome: Outcome) -> None:
        if identities is not None:
            outcome = replace(outcome, provenance=_provenance_record(entry, outcome, identities))
        ledger.finish(str(entry.input), outcome, campaign=campaign)
        tally.add(outcome.status)
        note = "" if outcome.status == DONE else f"{outcome.exit_name or '-'}: {short(outcome.message, 120)}"
        progress.advance(dataset_label(entry.input, ledger.path.parent), outcome.status, outcome.seconds, note)

    memory = memory or {}
    limit = memory_limit(client) if memory else None
    if limit is not None:
        logger.info("workers offer MEMORY resources (largest %.0f MB): each dataset is submitted with its estimate",
                    limit)
    try:
        while queue or inflight:
            # With memory resources the scheduler holds back what does not fit; a deeper queue
            # lets a small dataset start beside a large one while another large one waits.
            while queue and len(inflight) < capacity(client) * (2 if limit is not None else 1):
                entry = queue.pop()
                ledger.mark_running(str(entry.input), campaign=campaign, trailer_offset=_trailer_size(entry.trailer),
                                    reason=reasons.get(str(entry.input)))
                if not entry.input.exists():
                    # Checked here, not on the worker: the pipeline would create the missing
                    # folder for its trailer.
                    finish(entry, Outcome(FAILED, int(ExitCode.INPUT_ERROR), ExitCode.INPUT_ERROR.name,
                                          f"input not found: {entry.input}", seconds=0.0))
                    continue
                job = {**job_base, "input": str(entry.input)}
                extra: dict[str, Any] = {}
                if limit is not None and str(entry.input) in memory:
                    need = memory[str(entry.input)]
                    if need > limit:
                        logger.warning("%s: estimated %.0f MB, more than any worker offers (%.0f MB): "
                                       "submitted as needing a whole worker", entry.root, need, limit)
                    extra["resources"] = {"MEMORY": min(need, limit)}
                fut = client.submit(run_dataset, job, key=f"autodriz-{entry.root}-{uuid.uuid4().hex[:8]}",
                                    pure=False, retries=0, **extra)
                inflight[fut] = (entry, time.monotonic())
                logger.debug("submitted %s as %s", entry.root, fut.key)
            time.sleep(0.2)
            progress.tick()
            for fut in [f for f in inflight if f.done()]:
                entry, _ = inflight.pop(fut)
                try:
                    outcome = _outcome(fut.result())
                except Exception as exc:  # noqa: BLE001 - run_dataset never raises, so this is Dask's own
                    # failure (KilledWorker after the worker died repeatedly, CancelledError …), of any type
                    outcome = Outcome(FAILED, None, "WORKER_LOST", f"the Dask task failed: {type(exc).__name__}: {exc}")
                finish(entry, outcome)
            now = time.monotonic()
            for fut in [f for f, (_, t) in inflight.items() if now - t > timeout + DRIVER_GRACE]:
                entry, _ = inflight.pop(fut)
                fut.cancel()
                finish(entry, Outcome(FAILED, None, "TIMEOUT",
                                      f"no answer from the cluster within {timeout + DRIVER_GRACE:.0f} s"))
    except BaseException:
        for entry, _ in inflight.values():
            ledger.requeue(str(entry.input), "campaign interrupted while this was running; to be run again")
        raise
