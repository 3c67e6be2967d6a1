"""Process one dataset end to end: resolve, candidates, choice, products.

This is the single-dataset function that the CLI calls and that batch processing maps over many
datasets. It never changes the working directory or the environment of the calling process, and
it turns every outcome into an :class:`~autodriz.exitcodes.ExitCode`.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from astropy.io import fits

from autodriz import __version__
from autodriz.allocator import drop_cached_pages, release_free_memory
from autodriz.astrometry.sources import early_stars, start_background_detection
from autodriz.choosing import aposteriori_start, remove_failed_workdirs, remove_workdirs, select_candidate
from autodriz.childproc import start_warm_server
from autodriz.config import Settings, astrodrizzle_defaults
from autodriz.drizzle import FORCED_PARAMETERS, run_final_drizzles
from autodriz.errors import AutodrizError, UpdateError
from autodriz.exitcodes import ExitCode
from autodriz.inputs import Dataset, resolve_input
from autodriz.locks import dataset_lock
from autodriz.logs import (
    CONSOLE,
    package_versions,
    run_logging,
    stage,
    waypoint,
    write_trailer_header,
)
from autodriz.products import (
    commit_wcs_update,
    detach_kept_copies,
    discard_temps,
    keep_delivered_wcs,
    pair_twins,
    products_or_none,
    publish,
    recover_interrupted_update,
    round_to_delivered_precision,
    round_wcs_to_delivered_precision,
    wcs_update_job,
    write_json_atomic,
)
from autodriz.provenance import dataset_provenance
from autodriz.report import (
    ChosenRecord,
    DatasetRecord,
    DrizzleRecord,
    RunStatus,
    build_report,
    plain,
    report_pictures,
    weight_map_check,
    write_html,
)
from autodriz.runresult import RunResult, summary_lines
from autodriz.select import is_default_only, rejected_candidates
from autodriz.solutions.aposteriori import AposterioriStrategy
from autodriz.solutions.apriori import AprioriStrategy
from autodriz.solutions.base import Candidate, RunContext, Strategy, pending_copies, remove_workdir
from autodriz.solutions.default import DefaultStrategy, exposure_twins, reference_folders
from autodriz.verify import VerificationResult

logger = logging.getLogger(__name__)

#: The strategies a run tries, in order, one stage each. The first makes the pipeline default
#: (one candidate of kind ``default``) that every other starts from and that is the fallback.
#: Adding a strategy is one module with a :class:`~autodriz.solutions.base.Strategy` and one
#: entry here.
STRATEGIES: tuple[Strategy, ...] = (DefaultStrategy(), AprioriStrategy(), AposterioriStrategy())

_SUFFIXES = ("_asn", "_raw", "_flt", "_flc", "_c0m", "_c0f", "_c1m", "_c1f", "_d0m", "_d0f")


def guess_root(path: Path) -> str:
    """Product root guessed from a file name (``ib6o23020_asn.fits`` → ``ib6o23020``)."""
    stem = path.name.split(".")[0]
    for suffix in _SUFFIXES:
        if stem.lower().endswith(suffix):
            return stem[: -len(suffix)].lower()
    return stem.lower()


def _child_log_location(log: Path, kept: bool, trailer: Path) -> str:
    """Where the log of a child that failed can be read once the run is over.

    The log sits in a candidate's folder, which the run removes unless ``--keep-workdirs``;
    every line of it is also in the trailer, tagged with the log's name.
    """
    if kept:
        return f"child log {log}"
    return f"child log {log.name} is in the trailer {trailer}, lines tagged [{log.stem}]; --keep-workdirs keeps the file"


def _alignment_plan(
    ctx: RunContext, strategies: Sequence[Strategy], spectroscopic_wcs: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """Which alignment stages run, and why the others do not, in words.

    Each strategy says whether its stage runs (:meth:`~autodriz.solutions.base.Strategy.plan`):
    grism/prism data get the a priori solutions (the archive's updatewcs with the astrometry
    database applies them to every exposure) but no a posteriori fit (no point sources). In a
    visit, ``spectroscopic_wcs`` says where a grism dataset's WCS came from instead (the direct
    images' correction), and then no alignment stage runs.

    Returns
    -------
    (list of str, dict)
        The plan's lines; folder → why, for the stages that are skipped.
    """
    dataset = ctx.dataset
    if spectroscopic_wcs is not None:
        grism = f"{'/'.join(dataset.filters) or 'these'} exposures are grism/prism (spectroscopic) images"
        line = f"alignment skipped: {grism}; drizzled with {spectroscopic_wcs}"
        return [line], {s.folder: line for s in strategies}
    lines: list[str] = []
    skipped: dict[str, str] = {}
    for strategy in strategies:
        plan = strategy.plan(ctx)
        lines.extend(plan.lines)
        if plan.skipped is not None:
            skipped[strategy.folder] = plan.skipped
    return lines, skipped


def process(
    input_path: str | Path,
    settings: Settings,
    *,
    argv: list[str] | None = None,
    drizzle_overrides: Mapping[str, Any] | None = None,
    spectroscopic_wcs: Callable[[Candidate], Candidate] | None = None,
    strategies: Sequence[Strategy] | None = None,
) -> RunResult:
    """Process one dataset; never raises for expected failures, returns their exit code.

    Parameters
    ----------
    input_path : str or Path
        ASN table, RAW name, or a single FLT/FLC.
    settings : Settings
        Effective settings.
    argv : list of str, optional
        Command line, recorded in the trailer.
    drizzle_overrides : mapping, optional
        AstroDrizzle parameters for the final products that win over the MDRIZTAB, e.g. the
        shared ``final_*`` output grid of a multi-filter visit (:mod:`autodriz.visit`).
    spectroscopic_wcs : callable, optional
        For grism/prism data only: turns the default candidate (its working copies) into the
        candidate to drizzle and write back, e.g. with the WCS correction that the direct
        images of the same visit received (:mod:`autodriz.visit`).
    strategies : sequence of Strategy, optional
        The strategies to run, in order (default :data:`STRATEGIES`); the first must make the
        pipeline default.

    Returns
    -------
    RunResult
    """
    input_path = Path(input_path)
    root = guess_root(input_path)
    output_dir = (settings.output_dir or input_path.resolve().parent).resolve()
    trailer = output_dir / f"{root}.tra"
    t0 = time.perf_counter()
    workdirs: list[Path] = []
    with run_logging(trailer, console_level=settings.log_level) as log:
        write_trailer_header(settings.as_dict(), argv or ["autodriz", str(input_path)])
        waypoint(log, "START", root, f"input={input_path}", f"autodriz={__version__}")
        try:
            result = _process(
                input_path, settings, output_dir, trailer, workdirs, drizzle_overrides, spectroscopic_wcs,
                tuple(strategies) if strategies is not None else STRATEGIES,
            )
        except AutodrizError as exc:
            message = str(exc)
            if exc.child_log is not None:
                message += f" ({_child_log_location(exc.child_log, settings.keep_workdirs, trailer)})"
            logger.error("%s", message)
            result = RunResult(exc.exit_code, message, root, trailer=trailer)
        except KeyboardInterrupt:
            logger.error("interrupted; the inputs are untouched unless their update had completed")
            result = RunResult(ExitCode.INTERRUPTED, "interrupted", root, trailer=trailer)
        except Exception as exc:  # a bug: keep the traceback in the trailer, say so, exit 1
            logger.exception("internal error: %s", exc)
            result = RunResult(ExitCode.INTERNAL_ERROR, f"internal error: {exc}", root, trailer=trailer)
        finally:
            if not settings.keep_workdirs:
                for wd in workdirs:
                    remove_workdir(wd)
            elif workdirs:
                logger.info("working folders kept (--keep-workdirs): %s", ", ".join(map(str, workdirs)))
        seconds = time.perf_counter() - t0
        result = replace(result, seconds=seconds)
        waypoint(
            log,
            "VERDICT",
            result.exit_code.name,
            f"exit={int(result.exit_code)}",
            f"wcsname={result.wcsname or '-'}",
            f"products={','.join(p.name for p in result.products) or '-'}",
            f"seconds={seconds:.1f}",
        )
    return result


def _process(
    input_path: Path,
    settings: Settings,
    output_dir: Path,
    trailer: Path,
    workdirs: list[Path],
    drizzle_overrides: Mapping[str, Any] | None = None,
    spectroscopic_wcs: Callable[[Candidate], Candidate] | None = None,
    strategies: tuple[Strategy, ...] = STRATEGIES,
) -> RunResult:
    timings: dict[str, float] = {}
    with stage(logger, "resolve", timings):
        dataset = resolve_input(input_path)
    root = dataset.root
    logger.info(
        "dataset %s: %s, %d exposure(s) %s%s, filters %s, DRIZCORR=%s",
        root, dataset.instrument_key, len(dataset.exposures),
        ", ".join(e.rootname for e in dataset.exposures),
        " (FLT + FLC)" if dataset.has_flc else " (FLT)",
        "/".join(dataset.filters) or "-", dataset.drizcorr, extra=CONSOLE,
    )
    if dataset.ignored_paths:
        logger.warning(
            "not processed, so they keep their WCS and get no product: %s",
            ", ".join(p.name for p in dataset.ignored_paths),
        )
    if dataset.asn_built:
        logger.info("association table was built outside the archive: %s", dataset.asn_built)
    if not dataset.drizzle_requested:
        msg = f"DRIZCORR={dataset.drizcorr} for {root}: drizzling not requested, no products written"
        logger.info(msg)
        return RunResult(ExitCode.DRIZCORR_OMIT, msg, root, trailer=trailer)

    with dataset_lock(dataset.directory, root), contextlib.ExitStack() as background:
        return _process_dataset(
            dataset, input_path, settings, output_dir, trailer, workdirs, timings, drizzle_overrides,
            spectroscopic_wcs, strategies, background,
        )


def _process_dataset(
    dataset: Dataset,
    input_path: Path,
    settings: Settings,
    output_dir: Path,
    trailer: Path,
    workdirs: list[Path],
    timings: dict[str, float],
    drizzle_overrides: Mapping[str, Any] | None = None,
    spectroscopic_wcs: Callable[[Candidate], Candidate] | None = None,
    strategies: tuple[Strategy, ...] = STRATEGIES,
    background: contextlib.ExitStack | None = None,
) -> RunResult:
    root = dataset.root
    verifications: dict[str, VerificationResult] = {}
    output_dir.mkdir(parents=True, exist_ok=True)
    folders = reference_folders(settings)
    originals = [*dataset.flt_paths, *dataset.flc_paths]
    # Under the lock: a run killed among the final renames left backups; put them back first.
    recover_interrupted_update(originals)
    # Source detection reads only pixels: with >= 2 cores it runs beside the default stage's
    # child (closed, workers and all, when the run ends however it ends). Its workers start
    # once that child is forked from this process (DefaultStrategy), without their threads.
    early = start_background_detection(dataset, settings, start=False) if background is not None else None
    if early is not None:
        background.enter_context(early)

    starts: list[Candidate | None] = []

    def verified_start() -> Candidate | None:
        # Verified once, when a strategy first asks: a run whose fits are off verifies nothing early.
        if not starts:
            # The background detection's stars (the a posteriori stage waits for them anyway):
            # the a priori candidates are verified on squares around them.
            stars = (lambda: early_stars(early, dataset)) if early is not None else None
            starts.append(aposteriori_start(ctx.candidates, dataset, settings, verifications, stars=stars))
        return starts[0]

    ctx = RunContext(dataset, settings, output_dir, tuple(originals), verified_start=verified_start, detected=early)
    first, *alignment = strategies
    with stage(logger, first.folder, timings):
        workdirs.append(ctx.folder(first))
        made = first.propose(ctx)
    if early is not None:
        early.start()  # when the stage forked no child (header WCS): now
    if len(made) != 1 or made[0].kind != "default":
        raise ValueError(f"strategy {first.folder!r} must make exactly one default candidate, made {len(made)}")
    default = made[0]
    grism_wcs = None
    if dataset.is_spectroscopic and spectroscopic_wcs is not None:
        default = spectroscopic_wcs(default)
        grism_wcs = f"{default.wcsname}: {default.source}"
    ctx = replace(ctx, default=default, candidates=(default,))
    # The final drizzles' children are forked from a server that imports drizzlepac once
    # (autodriz.childproc) instead of each importing it anew. It imports from here on, while
    # the fits (one core) and verification run: started at the run's start it slowed source
    # detection and the default stage's updatewcs, which keep both cores busy; started at the
    # select stage it left a core idle through the a posteriori fits.
    start_warm_server()
    plan, skipped_stages = _alignment_plan(ctx, alignment, grism_wcs)
    for line in plan:
        logger.info(line)

    for strategy in alignment:
        if strategy.folder in skipped_stages:
            waypoint(logger, "SKIPPED", strategy.folder, skipped_stages[strategy.folder])
            continue
        with stage(logger, strategy.folder, timings):
            workdirs.append(ctx.folder(strategy))
            ctx = replace(ctx, candidates=ctx.candidates + tuple(strategy.propose(ctx)))
    candidates = list(ctx.candidates)
    alignment_requested = any(s.folder not in skipped_stages for s in alignment)

    with stage(logger, "select", timings):
        selection = select_candidate(candidates, dataset, settings, verifications)
        winner, why = selection.winner, selection.reason
    # Verification's arrays are freed; with the tuned allocator this process would keep them
    # through the final drizzles, whose children need the memory (autodriz.allocator).
    release_free_memory()
    # So is the page cache of the originals: their pixels were read for detection and the
    # default's copies and are not read again (the update writes over the drizzled copies; its
    # backups are hard links). Freed now, it is the memory the final drizzles' children start
    # on: ~7 s less system time each for a full-size ACS/WFC visit (allocator.drop_cached_pages).
    dropped = drop_cached_pages([*dataset.flt_paths, *dataset.flc_paths])
    logger.debug("page cache of %d original(s) released before the final drizzles", dropped)

    defaults = astrodrizzle_defaults(dataset.instrument_key, len(dataset.exposures))
    groups = [list(paths) for paths in (dataset.flt_paths, dataset.flc_paths)]
    # The WCS update of the originals is prepared (temporary files beside them) by the same
    # child that drizzles them, after AstroDrizzle: one child start-up less, and DRZ + update of
    # the FLTs can run beside DRC + update of the FLCs. Nothing is renamed before both succeed.
    # What travels with the delivered files besides the winner: the other solutions a user may
    # switch to, but never one that was pruned or that verification rejected.
    failed = rejected_candidates(selection, verifications)
    others = [c for c in candidates if c is not winner and c.copies and c.name not in failed]
    for c in candidates:
        if c is not winner and c.copies and c.name in failed:
            logger.info("candidate %s (%s) is not attached to the inputs as a headerlet: it was pruned or "
                        "failed verification", c.name, c.wcsname)
    # Verification is over: nothing reads the pixels of the copies a winning fit started from
    # again, so they become its working copies (renamed, not copied: 1.4 GB less to write for a
    # full-size ACS/WFC visit); header shadows stay behind for the headerlets made from them.
    # The fit's WCS is rounded as the delivered inputs will carry it in the same opening of
    # each copy that writes the fit into it (a second pass over them cost ~0.4 s).
    pending = pending_copies(winner.copies)
    if pending is not None:
        pending.write(take_sources=True, finish=round_wcs_to_delivered_precision if winner.updated else None)
    # A re-run on autodriz's own output: the inputs already carry the winner; keep them as they are.
    winner = keep_delivered_wcs(winner)
    if winner.updated and pending is None:
        round_to_delivered_precision(winner)
    # The delivered files start from the default's headers (updatewcs run), as runastrodriz's
    # processing in place leaves them.
    updates = [wcs_update_job(winner, g, others=others, start=default) if winner.updated else (None, {})
               for g in groups]
    temps = {o: t for _, group_temps in updates for o, t in group_temps.items()}
    if len(updates) == 2 and updates[0][0] and updates[1][0]:
        # The stwcs work of an exposure's update is done once for its FLT and FLC: whichever
        # drizzle child gets there first prepares it, the other maps the file names.
        share = Path(tempfile.mkdtemp(prefix="twins-", dir=winner.workdir))
        pairs = pair_twins(updates[0][0], updates[1][0], exposure_twins(dataset), share)
        logger.info("%d exposure(s) whose FLT and FLC updates share one preparation", pairs)
    try:
        with stage(logger, "drizzle", timings):
            # One AstroDrizzle run per kind of calibrated file: FLTs make the DRZ, CTE-corrected
            # FLCs the DRC, both with the same WCS.
            runs = run_final_drizzles(
                [[winner.copies[p] for p in g] for g in groups],
                root, winner.workdir, folders, defaults,
                num_cores=settings.num_cores, timeout=settings.drizzle_timeout,
                then=[job for job, _ in updates],
                overrides=drizzle_overrides,
                # Written by each drizzle child, before the inputs are updated and anything is
                # published: products are complete.
                sregion=True,
            )

        with stage(logger, "update-inputs", timings):
            failed = [r for r in runs if r.then_error]
            if failed:
                raise UpdateError(
                    "could not prepare the WCS update of "
                    + "; ".join(str(r.then_error) for r in failed) + "; inputs untouched",
                    child_log=failed[0].log,
                )
            if winner.updated:
                updated = commit_wcs_update(winner, temps)
                logger.info("WCS %s written into %d input exposure(s)", winner.wcsname, len(updated), extra=CONSOLE)
                over = sum(len((r.then_result or {}).get("written_over_drizzled") or ()) for r in runs)
                # Why a file was written whole is in the child's output (the trailer).
                logger.info("%d of %d updated exposure(s) written over their final drizzle's copy (pixels left "
                            "in place), %d written whole", over, len(updated), len(updated) - over)
                shared = sum(len((r.then_result or {}).get("from_twin") or ()) for r in runs)
                if shared:
                    # Why one was not is in the child's output (the trailer).
                    logger.info("%d updated exposure(s) made from their FLT/FLC twin's update (stwcs run once for "
                                "both)", shared)
                if over and settings.keep_workdirs:
                    detach_kept_copies(winner.workdir, updated)
                # Said once the inputs carry it (a failed rename above restores them all).
                for run in runs:
                    result = run.then_result or {}
                    for name, skipped in sorted((result.get("not_attached") or {}).items()):
                        if skipped:
                            logger.info("%s: %s not attached again: a headerlet or WCS of that WCSNAME is "
                                        "already in the file", Path(name).name, ", ".join(skipped))
                    for name, repeated in sorted((result.get("duplicate_wcsnames") or {}).items()):
                        logger.warning("%s: headerlets sharing a WCSNAME (the file brought them): %s",
                                       Path(name).name, ", ".join(repeated))
                    for name, count in sorted((result.get("cr_pixels") or {}).items()):
                        logger.info("%s: %d pixels flagged as cosmic rays (DQ %d) by the final AstroDrizzle",
                                    Path(name).name, count, FORCED_PARAMETERS["crbit"])
            else:
                logger.info("the chosen WCS (%s) is already in the originals: nothing to write back", winner.wcsname,
                            extra=CONSOLE)
                updated = []
    finally:
        # Whatever failed (drizzle, preparation, interruption): no temporary file is left.
        discard_temps(temps)
    # Their headerlets now travel with the inputs; what is left of a candidate that failed is
    # noise even for someone debugging with --keep-workdirs.
    remove_failed_workdirs(candidates, selection, verifications)

    outputs = [*(run.product.name for run in runs), f"{root}_report.json", f"{root}_report.html"]
    # The inputs are final: with >= 2 cores their fingerprints (reads and SHA-256, GIL-free) are
    # taken while the products are checked and the report is built.
    provenance = None
    if settings.num_cores >= 2 and background is not None:
        pool = background.enter_context(ThreadPoolExecutor(max_workers=1))
        provenance = pool.submit(dataset_provenance, input_path, settings, dataset=dataset, workers=settings.num_cores)
    with stage(logger, "products", timings), products_or_none(output_dir, outputs, winner.wcsname):
        products = tuple(publish(run.product, output_dir) for run in runs)
        for p in products:
            logger.info("product: %s", p, extra=CONSOLE)
        if not settings.keep_workdirs and background is not None:
            # Published (hard links): the working folders (GBs of copies and AstroDrizzle
            # intermediates) go while the report is written; the run waits for it before it ends.
            remover = threading.Thread(target=remove_workdirs, args=(list(workdirs),), name="autodriz-rmtree")
            remover.start()
            background.callback(remover.join)
        qa = {}
        made = {run.product.name: run.weight_check for run in runs}
        for p in products:
            # Checked by the drizzle child while the map was in its memory; read here otherwise.
            check = made.get(p.name)
            if check is None:
                with fits.open(p) as hdul:
                    check = weight_map_check(hdul["WHT"].data)
            qa[p.name] = check
            level = logging.WARNING if check.flagged else logging.INFO
            logger.log(level, "weight map of %s: std/mean %.3f (flagged at ≥ %.2f)%s",
                       p.name, check.ratio, check.limit, ": FLAGGED" if check.flagged else "")
        # Known here already (a later failure is in the trailer): the page's summary line says it.
        default_only = is_default_only(winner, alignment_requested=alignment_requested)
        exit_code = ExitCode.DEFAULT_ONLY if default_only else ExitCode.OK
        record = build_report(
            version=__version__,
            versions=package_versions(),
            input_path=input_path,
            dataset=DatasetRecord.of(dataset),
            candidates=candidates,
            verdicts=selection.verdicts,
            chosen=ChosenRecord(winner.name, winner.wcsname, why),
            verifications=verifications,
            alignment=plan,
            skipped_stages=skipped_stages,
            # From each product's own header (D###DATA), checked against the plan.
            drizzle_runs=[DrizzleRecord.of(r) for r in runs],
            timings=timings,
            qa=qa,
            updated_inputs=updated,
            products=products,
            settings=settings.as_dict(),
            status=RunStatus.of(exit_code),
            # Taken after the update: the inputs as this run leaves them are what a later run
            # compares. Hashed in threads: filled in below, once the page's pictures are made.
            provenance=None if provenance is not None else dataset_provenance(
                input_path, settings, dataset=dataset).as_dict(),
        )
        # One plain form for both: the page shows what the JSON says (~0.1 s per conversion).
        plain_record = record.as_dict()
        # Thumbnails and fit charts (~0.7 s) while the threads hash the inputs (~0.7 s).
        pictures = report_pictures(plain_record)
        if provenance is not None:
            plain_record["provenance"] = plain(provenance.result().as_dict())
        report = write_json_atomic(output_dir / f"{root}_report.json", plain_record)
        write_html(plain_record, output_dir / f"{root}_report.html", pictures=pictures)
    # Alignment was asked for but the default won: products are fine, the astrometry is only
    # the pipeline default's, and the exit code says so for the archive's wrappers.
    return RunResult(
        exit_code,
        f"{root}: {', '.join(p.name for p in products)} with WCS {winner.wcsname}"
        + (f" (default only: {why})" if default_only else ""),
        root,
        products=products,
        wcsname=winner.wcsname,
        updated_inputs=tuple(updated),
        trailer=trailer,
        report=report,
        notes=winner.notes,
        summary=summary_lines(selection.verdicts),
    )
