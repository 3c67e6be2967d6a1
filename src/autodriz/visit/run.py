"""Running a visit: every group through the pipeline onto one grid, then the cross-filter check."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path


from autodriz import __version__
from autodriz.config import Settings
from autodriz.errors import InputError
from autodriz.exitcodes import PRODUCT_CODES
from autodriz.logs import run_logging, waypoint
from autodriz.visit.consistency import Consistency, consistency, product_sources
from autodriz.visit.grid import NATIVE_SCALE_ARCSEC, common_grid, exposure_footprints, write_grid_file
from autodriz.visit.grism import grism_hook, mean_expstart, snapshot_sci_wcs
from autodriz.visit.grouping import collect_datasets, default_visit_root, group_datasets, write_group_asn
from autodriz.visit.outcome import GroupOutcome, VisitResult, worst_exit_code
from autodriz.visit.report import write_visit_report

logger = logging.getLogger(__name__)


def process_visit(
    paths: Sequence[str | Path],
    settings: Settings,
    *,
    visit_root: str | None = None,
    final_scale: float | None = None,
    pixfrac: float | None = None,
    final_wht_type: str | None = None,
    argv: list[str] | None = None,
) -> VisitResult:
    """Process every filter of a visit onto one grid; never raises for expected failures.

    Parameters
    ----------
    paths : sequence of str or Path
        ASN tables, FLT/FLC files and folders.
    settings : Settings
        Effective settings, used for every group (one reference catalog for all).
    visit_root : str, optional
        Root of the visit's report (and of built association tables); default ``ipppss`` of the
        first exposure.
    final_scale : float, optional
        Output pixel scale, arcsec; default the first group's native scale.
    pixfrac : float, optional
        ``final_pixfrac`` for every product; default the MDRIZTAB's.
    final_wht_type : str, optional
        ``final_wht_type`` (``EXP``, ``IVM``, ``ERR``); default the MDRIZTAB's.
    argv : list of str, optional
        Command line, recorded in the trailers.

    Returns
    -------
    VisitResult
    """
    from autodriz.pipeline import process

    t0 = time.perf_counter()
    try:
        datasets = collect_datasets(paths)
    except InputError as exc:
        logger.error("%s", exc)
        return VisitResult(exc.exit_code, visit_root or "visit", None, message=str(exc))
    root = (visit_root or default_visit_root(datasets)).lower()
    output_dir = (settings.output_dir or datasets[0].directory).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    trailer = output_dir / f"{root}_visit.tra"
    workdir = output_dir / f"{root}_visit"
    try:
        with run_logging(trailer, console_level=settings.log_level) as log:
            waypoint(log, "START", root, f"inputs={','.join(map(str, paths))}", f"autodriz={__version__}")
            groups = group_datasets(datasets, root)
            for g in groups:
                logger.info("group %s %s → %s: %d exposure(s) %s%s", g.instrument_key, g.filter, g.root,
                            len(g.exposures), ", ".join(e.rootname for e in g.exposures),
                            " (grism/prism: drizzled on the grid, no alignment of its own)" if g.spectroscopic else "")
            scale = final_scale or NATIVE_SCALE_ARCSEC.get(groups[0].instrument_key)
            if scale is None:
                raise InputError(f"no native pixel scale known for {groups[0].instrument_key}; give --final-scale")
            grid = common_grid(exposure_footprints([p for g in groups for p in g.flt_paths or g.paths]), scale)
            logger.info(
                "common grid: north up, %.4f\"/px, %d × %d px, CRVAL %.8f %.8f (%s)", grid.scale_arcsec, grid.nx,
                grid.ny, grid.ra, grid.dec,
                "--final-scale" if final_scale else f"native scale of {groups[0].instrument_key}",
            )
            workdir.mkdir(exist_ok=True)
            refimage = write_grid_file(grid, workdir / f"{root}_grid.fits")
            overrides = grid.drizzle_parameters(refimage, pixfrac)
            if final_wht_type:
                overrides["final_wht_type"] = final_wht_type.upper()
            inputs = [g.asn if g.asn is not None else write_group_asn(g) for g in groups]
    except InputError as exc:
        logger.error("%s", exc)
        shutil.rmtree(workdir, ignore_errors=True)
        return VisitResult(exc.exit_code, root, None, message=str(exc))

    outcomes: list[GroupOutcome] = []
    imaging = [g for g in groups if not g.spectroscopic]
    # The grism exposures' own header WCS is read too: it says which direct image shares each one's pointing.
    before_run = snapshot_sci_wcs([p for g in groups for p in g.flt_paths or g.paths]) if len(imaging) < len(groups) else {}
    starts = {g.root: mean_expstart(g) for g in groups} if len(imaging) < len(groups) else {}
    try:
        for group, input_path in zip(groups, inputs, strict=True):
            hook, transfer_note = None, ""
            if group.spectroscopic:
                hook, transfer_note = grism_hook(group, imaging, starts, outcomes, before_run)
            result = process(input_path, settings, argv=argv, drizzle_overrides=overrides, spectroscopic_wcs=hook)
            outcomes.append(GroupOutcome(group, input_path, result.exit_code, result.message, result.wcsname,
                                         result.products, result.report, result.trailer, transfer_note))
    finally:
        if not settings.keep_workdirs:
            shutil.rmtree(workdir, ignore_errors=True)

    with run_logging(trailer, console_level=settings.log_level) as log:
        for o in outcomes:
            logger.info("group %s %s: %s (exit %d): %s", o.group.instrument_key, o.group.filter, o.exit_code.name,
                        int(o.exit_code), o.message)
        checks = _check_consistency(outcomes)
        code = worst_exit_code([o.exit_code for o in outcomes])
        report = write_visit_report(output_dir, root, grid, outcomes, checks, code, settings)
        seconds = time.perf_counter() - t0
        waypoint(log, "VERDICT", code.name, f"exit={int(code)}",
                 f"products={','.join(p.name for o in outcomes for p in o.products) or '-'}",
                 f"seconds={seconds:.1f}")
    failed = [c for c in checks if c.status == "fail"]
    message = (
        f"{root}: {len(outcomes)} group(s) on one {grid.nx}×{grid.ny} grid at {grid.scale_arcsec}\"/px; "
        + (f"cross-filter check FAILED for {', '.join(c.product for c in failed)}" if failed
           else "cross-filter check " + (", ".join(f"{c.product} {c.status}" for c in checks) or "not run"))
    )
    return VisitResult(code, root, grid, tuple(outcomes), tuple(checks), report, message)


def _imaging_product(outcome: GroupOutcome) -> Path | None:
    """The product the cross-filter check measures: the DRC if there is one, else the DRZ."""
    if outcome.group.spectroscopic or outcome.exit_code not in PRODUCT_CODES:
        return None
    by_kind = {p.name[-8:-5]: p for p in outcome.products}
    return by_kind.get("drc") or by_kind.get("drz")


def _check_consistency(outcomes: Sequence[GroupOutcome]) -> list[Consistency]:
    """Sources of every imaging product against those of the first one, logged at INFO."""
    measured = [(o, p) for o in outcomes if (p := _imaging_product(o)) is not None]
    if len(measured) < 2:
        logger.info("cross-filter check: fewer than two imaging products, nothing to compare")
        return []
    (ref_outcome, ref_product), *others = measured
    ref_xy = product_sources(ref_product, ref_outcome.group.instrument_key)
    checks = []
    for outcome, product in others:
        xy = product_sources(product, outcome.group.instrument_key)
        check = consistency(ref_xy, xy, reference=ref_product.name, product=product.name)
        level = logging.WARNING if check.status == "fail" else logging.INFO
        logger.log(level, "cross-filter check %s vs %s: %s: %s", product.name, ref_product.name, check.status,
                   check.reason)
        checks.append(check)
    return checks

