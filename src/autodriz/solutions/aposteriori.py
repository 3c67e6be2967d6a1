"""A posteriori candidates: sources → reference catalogs → tweakwcs fits → fit quality.

Entry point: :func:`make_aposteriori_candidates`; this module orchestrates, the work is done in
:mod:`autodriz.astrometry` (settings, sources, fits, residuals) and :mod:`autodriz.hstio` (chip
WCS read/write). Starting from the pipeline-default candidate (its copies carry the
distortion-corrected WCS), it

1. detects stars on every chip (:mod:`autodriz.detect`), on the FLCs when every exposure has
   one (CTE-corrected centroids), otherwise on the FLTs;
2. aligns the exposures to each other (tweakwcs, ``rscale``, small search radius) and drops
   sources not seen in two exposures (cosmic rays);
3. for each reference catalog (:mod:`autodriz.catalogs`) and fit geometry (``rscale``,
   ``general``; ``shift`` for sparse fields), fits the whole visit to the catalog as one group
   (``FIT_REL``), or, when the relative fit failed or there is a single exposure, each exposure
   on its own (``FIT_IMG``);
4. measures the fit on its own terms (post-fit cross-match: matches, RMS, per-exposure offsets,
   magnitude correlation) and scores it with :func:`autodriz.fitquality.assess_fit`;
5. describes each usable fit as copies of the default's exposures in
   ``<workroot>/<root>_aposteriori/<candidate name>/`` (FLT and FLC of an exposure get the same
   WCS, ``WCSNAME = IDC_<idctab>-FIT_<REL|IMG>_<CATALOG>``), written only if the fit is drizzled
   (:class:`~autodriz.solutions.base.PendingCopies`), and returns one
   :class:`~autodriz.solutions.base.Candidate` per attempt — failures included, with
   quality 4/5 (or -1 when not attempted) and the reason in ``notes``.

It never raises for data problems (no sources, no catalog, fits that fail) and never changes the
working directory, stdout or the logging configuration (tweakwcs' loggers are quietened during
the fits and restored after).
"""

from __future__ import annotations

import math
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from autodriz import catalogs as catmod
from autodriz.astrometry.chips import ExposureSources, observation_epoch
from autodriz.astrometry.config import AposterioriConfig, load_aposteriori_config
from autodriz.astrometry.fit import Alignment, FitOutcome, align_exposures, fit_catalog
from autodriz.astrometry.sources import detected_stars, footprint, load_exposures, prefilter_reference
from autodriz.config import Settings
from autodriz.chipdetection import BackgroundDetection
from autodriz.fitquality import FAILED, NOT_ATTEMPTED, QUALITY_MEANING, FitScore
from autodriz.hstio import chip_wcs_cards, solution_keywords
from autodriz.inputs import Dataset
from autodriz.logs import CONSOLE
from autodriz.select import catalog_search_done, is_usable_fit
from autodriz.solutions.base import (
    Candidate,
    PendingCopies,
    RunContext,
    StagePlan,
    prepare_workdir,
    switch_plan,
    work_folder,
)

logger = logging.getLogger(__name__)


def _wcsname_base(default: Candidate, dataset: Dataset) -> tuple[str, str | None]:
    """``IDC_<idctab>`` (what a -FIT_ name extends) and a note when it is not one."""
    name = default.wcsname.strip()
    if name.upper().startswith("IDC_"):
        return name.split("-", 1)[0], None
    idctab = next((e.idctab for e in dataset.exposures if e.idctab), None)
    if default.updated is False:
        # The header WCS as delivered (no distortion model applied by us): keep its own name.
        base = name if name and "header WCS" not in name else "HEADER"
        return base.split("-", 1)[0], (
            f"fits start from the header WCS ({default.wcsname}); the distortion model "
            f"{idctab or '(none)'} was not applied, so the WCSNAME extends '{base.split('-', 1)[0]}'"
        )
    if idctab:
        root = Path(idctab.split("$", 1)[-1]).name.split("_idc")[0]
        return f"IDC_{root}", None
    return name or "HEADER", None


def _not_done(
    name: str, wcsname: str, workdir: Path, quality: int, reason: str, details: Mapping[str, Any],
    score: FitScore | None = None,
) -> Candidate:
    logger.info("a posteriori %s: quality %d (%s): %s", name, quality, QUALITY_MEANING.get(quality, "?"), reason)
    return Candidate(
        name=name, wcsname=wcsname, workdir=workdir, copies={}, source=f"a posteriori fit: {reason}",
        updated=False, notes=(reason,), kind="aposteriori", quality=quality, details=dict(details), score=score,
    )


def make_aposteriori_candidates(
    default: Candidate,
    dataset: Dataset,
    settings: Settings,
    workroot: Path,
    *,
    service: catmod.CatalogService | None = None,
    config_path: Path | None = None,
    start: Candidate | None = None,
    early: BackgroundDetection | None = None,
) -> list[Candidate]:
    """Fit the visit to reference catalogs; one candidate per catalog × geometry tried.

    Parameters
    ----------
    default : Candidate
        The pipeline-default candidate; its WCSNAME is what the fits' names extend, and its
        copies (FLT and FLC) are the starting point unless ``start`` is given.
    dataset : Dataset
        The resolved input.
    settings : Settings
        ``catalog``, ``cache_dir``, ``offline``, ``service_timeout``, ``strict_services`` are used.
    workroot : Path
        Folder that receives ``<root>_aposteriori/`` (the output directory).
    service : CatalogService, optional
        Network catalog service (default: VizieR via astroquery); tests pass a stub.
    config_path : Path, optional
        Another ``aposteriori.toml``.
    start : Candidate, optional
        The WCS the fits start from when it is better than the default: the best verified a
        priori solution, as runastrodriz aligns from the a priori WCS it applied.
    early : BackgroundDetection, optional
        Chips already being searched (:func:`start_background_detection`); the others are
        searched here.

    Returns
    -------
    list of Candidate
        ``kind="aposteriori"``; usable fits (quality 1–3) carry copies with the fitted WCS;
        failed attempts carry no copies, quality 4/5 (or -1 when not attempted) and the reason.

    Raises
    ------
    CatalogServiceError
        Only with ``settings.strict_services`` when the catalog service is unreachable.
    ConfigError
        The a posteriori settings file is unreadable.
    """
    t0 = time.perf_counter()
    cfg = load_aposteriori_config(dataset.instrument_key, config_path)
    top = work_folder(workroot, dataset.root, AposterioriStrategy.folder)
    base, base_note = _wcsname_base(default, dataset)
    origin = start if start is not None else default
    common: dict[str, Any] = {"parameters": cfg.as_dict(), "start": origin.wcsname}
    if start is not None:
        logger.info("a posteriori fits start from %s (%s), the best verified a priori solution", start.wcsname, start.name)
    if base_note:
        logger.info("a posteriori: %s", base_note)
        common["wcsname_note"] = base_note
    logger.info(
        "a posteriori stage for %s (%s): parameters from %s, catalogs %s",
        dataset.root, dataset.instrument_key, cfg.source, ", ".join(cfg.catalogs.order),
    )
    prepare_workdir(top)

    exposures = load_exposures(origin.copies, dataset, cfg.detection, settings.num_cores, early)
    # Exposures that cannot be aligned ride along in every fit's copies with the starting WCS,
    # so that they are drizzled (and delivered) with it, as runastrodriz leaves them.
    passengers = tuple(p for e in dataset.exposures if e.not_alignable for p in e.paths if p in origin.copies)
    if passengers:
        common["not_fitted"] = {e.rootname: list(e.not_alignable) for e in dataset.exposures if e.not_alignable}
    n_sources = sum(len(c.sources) for e in exposures for c in e.chips)
    if not exposures or n_sources == 0:
        reason = "no sources detected on any chip: nothing to fit"
        return [_not_done("aposteriori", f"{base}-FIT", top, FAILED, reason, {**common, "n_sources": 0})]

    # 1. relative alignment, then keep sources seen twice.
    alignment = align_exposures(exposures, cfg)
    relative = alignment.relative
    common["relative_fit"] = {
        "done": relative.done, "reason": relative.reason, "rms_mas": relative.rms_mas,
        "per_exposure": relative.per_exposure,
    }
    common["sources"] = {
        "detected": n_sources, "used": alignment.n_used, "detected_on": [e.detect_path.name for e in exposures],
        "per_chip": {f"{e.rootname}[SCI,{c.extver}]": len(c.sources) for e in exposures for c in e.chips},
    }
    region = footprint(exposures, cfg.catalogs.footprint_margin_arcsec)
    epoch = observation_epoch(exposures)
    common["epoch"] = epoch
    logger.info(
        "footprint: centre %.6f %+.6f, radius %.2f′ (with %.0f″ margin); observation epoch %s",
        region.ra, region.dec, region.radius * 60, cfg.catalogs.footprint_margin_arcsec,
        f"{epoch:.4f}" if epoch else "unknown",
    )
    visit = _Visit(exposures, alignment, region, cfg, base, top, origin, passengers, detected_stars(exposures))

    # 2. the catalogs in order of preference, until one gives a good enough fit.
    candidates: list[Candidate] = []
    best: tuple[int, str] | None = None
    catalog_iter = catmod.iter_catalogs(
        cfg.catalogs.order, region, epoch, specs=cfg.catalogs.specs, catalog_path=settings.catalog,
        cache_dir=settings.cache_dir, offline=settings.offline, timeout=settings.service_timeout,
        strict_services=settings.strict_services,
        service=service if service is not None else catmod.make_service(settings.catalog_service, cfg.catalogs),
        unknown_pm_mas_yr=cfg.catalogs.unknown_pm_mas_yr,
        max_gap_without_pm_yr=cfg.catalogs.max_gap_without_pm_yr,
    )
    seen: list[str] = []
    for item in catalog_iter:
        seen.append(item.name)
        if isinstance(item, catmod.CatalogUnavailable):
            candidates.append(visit.not_done(item.name, NOT_ATTEMPTED, f"catalog {item.name} unavailable: {item.reason}", common))
            continue
        # catalog_rank: position in the preference order, which the selection uses to break ties.
        cat_details = {**common, "catalog": item.summary(), "catalog_rank": len(seen) - 1}
        ref_table = prefilter_reference(
            item.table, exposures, cfg.catalogs.footprint_margin_arcsec, cfg.catalogs.max_reference_stars
        )
        logger.info("catalog %s: %d stars on the chips (± %.0f″)", item.name, len(ref_table), cfg.catalogs.footprint_margin_arcsec)
        if len(ref_table) == 0:
            candidates.append(visit.not_done(item.name, FAILED, f"catalog {item.name} has no star on the exposures", cat_details))
            continue
        for q in _fit_catalog(visit, item, ref_table, cat_details, candidates):
            if best is None or q < best[0]:
                best = (q, item.name)
        if catalog_search_done(best[0] if best else None, cfg.stop_at_quality):
            break
    # Not pulled from the generator, so never looked up (no service request for them).
    if best is not None and catalog_search_done(best[0], cfg.stop_at_quality) and not (settings.catalog and settings.catalog.is_file()):
        candidates += [visit.not_done(name, NOT_ATTEMPTED, f"not attempted: {best[1]} already gave quality {best[0]}", common)
                       for name in cfg.catalogs.order if name not in seen]
    logger.info(
        "a posteriori stage: %d candidate(s), qualities %s, %.1f s",
        len(candidates), [c.quality for c in candidates], time.perf_counter() - t0, extra=CONSOLE,
    )
    return candidates


@dataclass(frozen=True)
class _Visit:
    """What every fit of one stage shares: the exposures, their alignment, where results go."""

    exposures: list[ExposureSources]
    alignment: Alignment
    region: catmod.Region
    cfg: AposterioriConfig
    base: str  # what the WCSNAMEs extend (IDC_<idctab>)
    top: Path  # <root>_aposteriori
    origin: Candidate  # the candidate whose copies the fits start from
    passengers: tuple[Path, ...]  # unfitted exposures' originals, carried with the starting WCS
    stars: Mapping[str, Mapping[int, np.ndarray]]  # every fit's Candidate.stars (the same detection)

    def not_done(self, catalog: str, quality: int, reason: str, details: Mapping[str, Any]) -> Candidate:
        """A catalog that gave no fit (unavailable, no stars, not attempted)."""
        mode = self.alignment.mode
        name = f"aposteriori-{mode}-{catalog}"
        return _not_done(name, f"{self.base}-FIT_{mode}_{catalog}", self.top / name, quality, reason, details)


def _fit_catalog(
    visit: _Visit, catalog: catmod.ReferenceCatalog, ref_table: Table, cat_details: Mapping[str, Any],
    candidates: list[Candidate],
) -> list[int]:
    """Fit the visit to one catalog (:func:`~autodriz.astrometry.fit.fit_catalog`); append one
    candidate per fit; return the usable qualities."""
    usable: list[int] = []
    for fit in fit_catalog(visit.exposures, visit.alignment, catalog, ref_table, visit.region, visit.cfg):
        mode, outcome, q, reasons = fit.mode, fit.outcome, fit.quality, fit.reasons
        name, wcsname = f"aposteriori-{mode}-{catalog.name}-{fit.geometry}", f"{visit.base}-FIT_{mode}_{catalog.name}"
        details = {**cat_details, **outcome.details, "statistics": outcome.stats.as_report_dict(),
                   "quality_reasons": list(reasons)}
        score = FitScore(
            quality=q, reasons=reasons, statistics=outcome.stats, catalog=catalog.name,
            catalog_rank=int(cat_details.get("catalog_rank", 99)), mode=mode,
            n_transforms=1 if mode == "REL" else len(visit.exposures),
        )
        if not is_usable_fit(q) or not outcome.wcs:
            candidates.append(_not_done(name, wcsname, visit.top / name, q, "; ".join(reasons), details, score))
            continue
        candidates.append(_materialise(visit, name, wcsname, outcome, catalog, score, details))
        usable.append(q)
    return usable


def _materialise(
    visit: _Visit, name: str, wcsname: str, outcome: FitOutcome, catalog: catmod.ReferenceCatalog, score: FitScore,
    details: dict[str, Any],
) -> Candidate:
    """A usable fit as the candidate: copies of the starting candidate's exposures with the fitted
    WCS, written when first read (:class:`~autodriz.solutions.base.PendingCopies`)."""
    quality, reasons, stats = score.quality, score.reasons, outcome.stats
    folder, origin, passengers = visit.top / name, visit.origin, visit.passengers
    originals = [p for e in visit.exposures for p in e.originals] + list(passengers)
    kind_text = "relatively aligned to" if score.mode == "REL" else "aligned image by image to"
    keywords = solution_keywords(
        stats.n_matches, _mas_keyword(stats.rms_ra_mas), _mas_keyword(stats.rms_dec_mas),
        stats.geometry, f"a posteriori solution {kind_text} {catalog.name.upper()}",
    )
    # FLT and FLC of an exposure get the same WCS, chip by chip (EXTVER); the copies are written
    # only if the candidate is drizzled (PendingCopies), the winner.
    edits = {
        original: {chip.extver: chip_wcs_cards(outcome.wcs[(i, j)], wcsname, keywords) for j, chip in enumerate(exp.chips)}
        for i, exp in enumerate(visit.exposures)
        for original in exp.originals
    }
    by_original = PendingCopies({orig: origin.copies[orig] for orig in originals}, folder, edits)
    notes = (tuple(reasons) if quality != 1 else ()) + tuple(catalog.notes)
    logger.info(
        "a posteriori %s: quality %d (%s), %d matches, RMS %.2f mas, offset %.3f″ → %s in %s",
        name, quality, QUALITY_MEANING[quality], stats.n_matches, stats.rms_mas, stats.radial_offset_arcsec,
        wcsname, folder,
    )
    for r in reasons:
        logger.info("  %s: %s", name, r)
    how = "relative, then absolute" if score.mode == "REL" else "image by image"
    return Candidate(
        name=name, wcsname=wcsname, workdir=folder, copies=by_original, updated=True, notes=notes,
        source=f"tweakwcs {stats.geometry} fit ({how}) to {catalog.name} from {catalog.origin}",
        kind="aposteriori", quality=quality, details=details, score=score,
        # What the delivered file of an unfitted exposure is named after (autodriz.products).
        unfitted_wcsnames={str(p): origin.wcsname for p in passengers},
        stars=visit.stars,
    )


def _mas_keyword(value: float) -> float:
    """A fit's RMS as its header keywords carry it: to the µas, 0 when there is none."""
    return round(value, 3) if math.isfinite(value) else 0.0


class AposterioriStrategy:
    """Fits to reference catalogs (:func:`make_aposteriori_candidates`), ``compute_aposteriori``.

    Grism/prism data have no point sources to fit, and exposures the screening left out
    (:mod:`autodriz.screening`) are not fitted: when that is all of them, the stage is skipped.
    """

    folder = "aposteriori"
    section = "compute_aposteriori"
    logger = logger

    def plan(self, ctx: RunContext) -> StagePlan:
        """Skipped for grism/prism data, when switched off or when no exposure can be aligned."""
        dataset = ctx.dataset
        if dataset.is_spectroscopic:
            grism = f"{'/'.join(dataset.filters) or 'these'} exposures are grism/prism (spectroscopic) images"
            line = f"a posteriori stage skipped: {grism}, which have no point sources to fit"
            return StagePlan((line,), line)
        switched = switch_plan(ctx.settings, self.section, "a posteriori", "sources → reference catalogs → tweakwcs fits")
        if switched.skipped:
            return switched
        screened = [e for e in dataset.exposures if e.not_alignable]
        if screened and len(screened) == len(dataset.exposures):
            line = (
                "a posteriori stage skipped: no exposure can be aligned ("
                + "; ".join(f"{e.rootname}: {', '.join(e.not_alignable)}" for e in screened) + ")"
            )
            return StagePlan((line,), line)
        # One line per exposure, as runastrodriz logs analyze.py's verdicts.
        return StagePlan(switched.lines + tuple(
            f"exposure {e.rootname} left out of source detection and fitting (drizzled with the "
            f"WCS the fits start from): {', '.join(e.not_alignable)}"
            for e in screened
        ))

    def propose(self, ctx: RunContext) -> list[Candidate]:
        """One candidate per catalog × geometry tried, starting from ``ctx.verified_start()``."""
        assert ctx.default is not None, "the a posteriori stage runs after the default's"
        start = ctx.verified_start()
        return make_aposteriori_candidates(ctx.default, ctx.dataset, ctx.settings, ctx.workroot, start=start,
                                           early=ctx.detected)