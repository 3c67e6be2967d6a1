"""The a posteriori fits on in-memory WCSs: relative alignment, absolute fits, typed results.

Everything here works on :class:`~autodriz.astrometry.chips.ExposureSources` (each chip's WCS
and detected sources, already read) and catalog tables, and returns typed results
(:class:`RelativeFit`, :class:`Alignment`, :class:`FitOutcome`, :class:`CatalogFit`); no file is
read or written. The fitting itself is tweakwcs' (``align_wcs`` with ``FITSWCSCorrector``s and
``XYXYMatch``), as runastrodriz does; around it:

- :func:`relative_fit` aligns the exposures to the first; :func:`align_exposures` keeps the
  sources seen twice and decides FIT_REL or FIT_IMG;
- :func:`absolute_fit` fits them to a catalog with one geometry and measures the fit on its own
  terms (:mod:`autodriz.astrometry.residuals`);
- :func:`fit_catalog` tries the geometries and the FIT_IMG fallback that
  :mod:`autodriz.select` asks for, and scores each fit (:func:`autodriz.fitquality.assess_fit`).

Data that cannot be fitted gives a failed result (tweakwcs' own errors, :data:`FIT_ERRORS`);
inputs no fit could be asked of (no exposures, an unknown geometry or mode, masks or WCSs that
do not cover the chips) raise ``ValueError`` at once.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.table import Table
from astropy.wcs import WCS, NoConvergence

from autodriz import catalogs as catmod
from autodriz.astrometry.chips import (
    ChipKey,
    ExposureSources,
    all_sources,
    centroid_weights,
    confirm_sources,
    exposure_corrections_mas,
    observation_epoch,
    one_copy_per_star,
    pixel_scale_arcsec,
    radial_offset_arcsec,
    starting_wcs,
    transfer_correction,
)
from autodriz.astrometry.config import AposterioriConfig, search_radius_arcsec
from autodriz.astrometry.residuals import post_fit_residuals
from autodriz.fitquality import FitStatistics, assess_fit, pearson
from autodriz.logs import quiet_libraries
from autodriz.select import needs_image_by_image, try_sparse_geometry

logger = logging.getLogger(__name__)

#: What tweakwcs/astropy/spherical_geometry raise on data they cannot fit (turned into quality 5).
FIT_ERRORS = (ValueError, RuntimeError, ArithmeticError, IndexError, KeyError, np.linalg.LinAlgError, NoConvergence)
#: The geometries tweakwcs fits.
GEOMETRIES = ("shift", "rscale", "general")



def _make_correctors(exposures: Sequence[ExposureSources], masks: Mapping[tuple[int, int], np.ndarray] | None = None) -> list[Any]:
    """One tweakwcs corrector per chip with sources, grouped by exposure (its chips move together)."""
    from tweakwcs.correctors import FITSWCSCorrector

    correctors = []
    for i, exp in enumerate(exposures):
        for j, chip in enumerate(exp.chips):
            src = chip.sources
            if masks is not None:
                src = src[masks[(i, j)]]
            if len(src) == 0:
                continue
            cat = Table({"x": np.asarray(src["x"]), "y": np.asarray(src["y"])})
            corr = FITSWCSCorrector(
                chip.wcs.deepcopy(),
                meta={"catalog": cat, "name": f"{exp.rootname}[SCI,{chip.extver}]", "group_id": i,
                      "exposure": i, "chip": j},
            )
            correctors.append(corr)
    return correctors


@dataclass
class RelativeFit:
    """Outcome of the relative alignment between exposures.

    ``wcs`` holds every chip's WCS after the alignment (the starting ones when not ``done``);
    ``per_exposure`` what tweakwcs reported for each exposure (report).
    """

    done: bool
    wcs: dict[tuple[int, int], WCS]
    reason: str = ""
    rms_mas: float | None = None
    matches: dict[str, int] = field(default_factory=dict)
    per_exposure: dict[str, Any] = field(default_factory=dict)


def _check_inputs(
    exposures: Sequence[ExposureSources],
    geometry: str,
    wcs: Mapping[ChipKey, WCS] | None = None,
    masks: Mapping[ChipKey, np.ndarray] | None = None,
) -> None:
    """Refuse what no fit can be asked of, naming it (a caller's error, not the data's)."""
    if not exposures:
        raise ValueError("no exposures to fit")
    if geometry not in GEOMETRIES:
        raise ValueError(f"unknown fit geometry {geometry!r}: one of {', '.join(GEOMETRIES)}")
    keys = set(starting_wcs(exposures))
    for what, given in (("WCS", wcs), ("source mask", masks)):
        if given is not None and not keys <= set(given):
            raise ValueError(f"no {what} for chip(s) {sorted(keys - set(given))}")


def relative_fit(exposures: Sequence[ExposureSources], cfg: AposterioriConfig) -> RelativeFit:
    """Align every exposure to the first (tweakwcs; the chips of an exposure move together).

    Geometries are tried in ``cfg.fit.relative_geometries`` order (rscale, then shift): the
    first whose every exposure has enough matches and an RMS within ``max_relative_rms_pix`` is
    used. Sparse or poor data (few, extended, noisy sources) often support only a shift.

    Parameters
    ----------
    exposures : sequence of ExposureSources
        The exposures; with fewer than two there is nothing to align (not ``done``).
    cfg : AposterioriConfig
        ``fit.relative_geometries``, ``match.relative_*``, ``quality.min_matches``.

    Returns
    -------
    RelativeFit

    Raises
    ------
    ValueError
        A configured relative geometry tweakwcs does not know.
    """
    for geometry in cfg.fit.relative_geometries:
        if geometry not in GEOMETRIES:
            raise ValueError(f"unknown relative fit geometry {geometry!r}: one of {', '.join(GEOMETRIES)}")
    base = {(i, j): chip.wcs for i, e in enumerate(exposures) for j, chip in enumerate(e.chips)}
    if len(exposures) < 2:
        return RelativeFit(False, base, "single exposure: nothing to align relatively")
    attempts = []
    last: RelativeFit | None = None
    for geometry in cfg.fit.relative_geometries:
        result = _relative_attempt(exposures, cfg, geometry, base)
        if result.done:
            if attempts:
                result.reason = "; ".join(attempts)
            return result
        attempts.append(f"{geometry}: {result.reason}")
        last = result
    reason = "; ".join(attempts) or "no relative geometry configured"
    return RelativeFit(False, base, reason, per_exposure=last.per_exposure if last else {})


def _relative_attempt(
    exposures: Sequence[ExposureSources], cfg: AposterioriConfig, geometry: str, base: Mapping[tuple[int, int], WCS]
) -> RelativeFit:
    from tweakwcs.imalign import align_wcs
    from tweakwcs.matchutils import XYXYMatch

    correctors = _make_correctors(exposures)
    groups = {c.meta["group_id"] for c in correctors}
    if len(groups) < 2:
        return RelativeFit(False, dict(base), "fewer than two exposures have sources")
    match = XYXYMatch(
        searchrad=cfg.match.relative_searchrad_pix,
        separation=cfg.match.separation_pix,
        tolerance=cfg.match.relative_tolerance_pix,
        use2dhist=cfg.match.use2dhist,
    )
    needed = cfg.quality.min_matches.get(geometry, 4)
    try:
        with quiet_libraries(logger):
            align_wcs(correctors, refcat=None, enforce_user_order=True, expand_refcat=True, match=match,
                      minobj=needed, fitgeom=geometry, nclip=cfg.fit.nclip, sigma=(cfg.fit.sigma, "rmse"),
                      group_bb_policy=1)
    except FIT_ERRORS as exc:
        return RelativeFit(False, dict(base), f"tweakwcs: {type(exc).__name__}: {exc}")
    scale = pixel_scale_arcsec(exposures[0].chips[0].wcs) * 1000.0
    per: dict[str, Any] = {}
    failed = []
    rms = []
    for c in correctors:
        info = c.meta.get("fit_info", {})
        name = exposures[c.meta["exposure"]].rootname
        status = str(info.get("status", ""))
        if status.startswith("REFERENCE"):
            per.setdefault(name, {"status": "reference"})
            continue
        if status != "SUCCESS":
            failed.append(f"{name}: {status} (fewer than {needed} matches?)" if "matches" in status else f"{name}: {status}")
            continue
        rmse_pix = float(info.get("rmse", math.nan))
        per[name] = {
            "status": "aligned",
            "geometry": geometry,
            "nmatches": int(info.get("nmatches", 0)),
            "rms_mas": round(rmse_pix * scale, 2),
            "shift_pix": [round(float(v), 3) for v in info.get("shift", (math.nan, math.nan))],
            "rotation_deg": round(float(info.get("proper_rot", math.nan)), 5),
            "scale": round(float(info.get("<scale>", math.nan)), 7),
        }
        if not rmse_pix <= cfg.fit.max_relative_rms_pix:
            failed.append(f"{name}: RMS {rmse_pix:.2f} px > {cfg.fit.max_relative_rms_pix} px")
        rms.append(rmse_pix * scale)
    if failed:
        return RelativeFit(False, dict(base), "failed for " + "; ".join(sorted(set(failed))), per_exposure=per)
    aligned = {(c.meta["exposure"], c.meta["chip"]): c.wcs for c in correctors}
    wcs = {k: aligned.get(k, v) for k, v in base.items()}
    matches = {k: v["nmatches"] for k, v in per.items() if "nmatches" in v}
    rms_mas = float(np.sqrt(np.mean(np.square(rms)))) if rms else None
    return RelativeFit(True, wcs, "", rms_mas, matches, per)


@dataclass
class Alignment:
    """How the visit goes to the catalogs: ``mode`` REL (aligned relatively; one transformation
    for the visit) or IMG (each exposure on its own), the relative fit, and the sources used."""

    mode: str
    relative: RelativeFit
    masks: dict[ChipKey, np.ndarray]
    n_used: int


def align_exposures(exposures: Sequence[ExposureSources], cfg: AposterioriConfig) -> Alignment:
    """Align the exposures relatively, then keep the sources seen in two of them (cosmic rays
    are seen once); FIT_IMG with all sources when no relative fit is possible.

    Parameters
    ----------
    exposures : sequence of ExposureSources
        The exposures with their sources.
    cfg : AposterioriConfig
        Relative fit settings, ``match.confirm_tolerance_arcsec``, ``quality.min_matches``.

    Returns
    -------
    Alignment
    """
    n_sources = sum(len(c.sources) for e in exposures for c in e.chips)
    relative = relative_fit(exposures, cfg)
    if not relative.done:
        logger.info("no relative fit (%s): exposures fitted to the catalog one by one (FIT_IMG)", relative.reason)
        return Alignment("IMG", relative, all_sources(exposures), n_sources)
    logger.info(
        "relative fit of %d exposures (%s): RMS %.2f mas, matches %s%s",
        len(exposures), "/".join(sorted({v.get("geometry", "") for v in relative.per_exposure.values()} - {""})),
        relative.rms_mas or math.nan, relative.matches,
        f" (after: {relative.reason})" if relative.reason else "",
    )
    masks = confirm_sources(exposures, relative.wcs, cfg.match.confirm_tolerance_arcsec)
    n_conf = int(sum(m.sum() for m in masks.values()))
    logger.info("%d of %d sources seen in at least two exposures (the others are taken for cosmic rays)", n_conf, n_sources)
    if n_conf < cfg.quality.min_matches.get("shift", 4):
        logger.info("too few confirmed sources: fitting all %d detections instead", n_sources)
        return Alignment("REL", relative, all_sources(exposures), n_sources)
    return Alignment("REL", relative, masks, n_conf)


@dataclass
class FitOutcome:
    """One absolute fit: its statistics, every chip's fitted WCS (empty when it failed) and the
    details the report shows."""

    stats: FitStatistics
    wcs: dict[tuple[int, int], WCS]
    details: dict[str, Any]


def absolute_fit(
    exposures: Sequence[ExposureSources],
    start_wcs: Mapping[tuple[int, int], WCS],
    masks: Mapping[tuple[int, int], np.ndarray],
    ref: catmod.ReferenceCatalog,
    ref_table: Table,
    region: catmod.Region,
    geometry: str,
    mode: str,
    relative: RelativeFit,
    cfg: AposterioriConfig,
) -> FitOutcome:
    """Fit the (relatively aligned) exposures to the catalog with one geometry.

    Parameters
    ----------
    exposures : sequence of ExposureSources
        The exposures (at least one).
    start_wcs : mapping
        (exposure, chip) → the WCS the fit starts from (the relative fit's for FIT_REL).
    masks : mapping
        (exposure, chip) → sources used; must cover every chip.
    ref : ReferenceCatalog
        The catalog (expected error, proper motions).
    ref_table : astropy.table.Table
        Its stars on the chips (``ra``, ``dec``, ``mag``, optional ``sigma_mas``).
    region : Region
        Footprint; its centre is the tangent point of the residuals.
    geometry : str
        ``shift``, ``rscale`` or ``general``.
    mode : str
        ``REL``: all exposures as one group (one transformation); ``IMG``: each on its own.
    relative : RelativeFit
        The relative alignment (its RMS goes into the statistics).
    cfg : AposterioriConfig
        Match, fit and quality settings.

    Returns
    -------
    FitOutcome
        ``stats.succeeded`` False (and no WCS) when tweakwcs could not fit the data.

    Raises
    ------
    ValueError
        No exposures, an unknown geometry or mode, or masks/WCSs that do not cover the chips.
    """
    from tweakwcs.correctors import FITSWCSCorrector
    from tweakwcs.imalign import align_wcs
    from tweakwcs.matchutils import XYXYMatch

    _check_inputs(exposures, geometry, start_wcs, masks)
    if mode not in ("REL", "IMG"):
        raise ValueError(f"unknown fit mode {mode!r}: REL or IMG")
    scale_arcsec = pixel_scale_arcsec(exposures[0].chips[0].wcs)
    expected = math.hypot(ref.expected_error_mas, math.sqrt(2.0) * cfg.fit.centroid_error_pix * scale_arcsec * 1000.0)
    base_stats = {
        "geometry": geometry,
        "n_reference": len(ref_table),
        "expected_rms_mas": expected,
        "relative": mode == "REL" or len(exposures) == 1,
        "relative_rms_mas": relative.rms_mas,
        "has_proper_motions": ref.has_pm,
    }
    details: dict[str, Any] = {"geometry": geometry, "mode": mode, "n_reference_in_footprint": len(ref_table)}
    keep = (
        one_copy_per_star(exposures, start_wcs, masks, 0.5 * scale_arcsec)
        if mode == "REL" and len(exposures) > 1
        else {k: np.ones(int(np.count_nonzero(m)), dtype=bool) for k, m in masks.items()}
    )
    if mode == "REL" and len(exposures) > 1:
        n_all = sum(int(np.count_nonzero(m)) for m in masks.values())
        details["group_sources"] = {"detected": n_all, "one_copy_per_star": sum(int(k.sum()) for k in keep.values())}
    correctors = []
    for i, exp in enumerate(exposures):
        for j, chip in enumerate(exp.chips):
            src = chip.sources[masks[(i, j)]][keep[(i, j)]]
            if len(src) == 0:
                continue
            correctors.append(FITSWCSCorrector(
                start_wcs[(i, j)].deepcopy(),
                meta={"catalog": Table({"x": np.asarray(src["x"]), "y": np.asarray(src["y"]),
                                        "weight": centroid_weights(src, cfg.fit.centroid_error_pix, scale_arcsec)}),
                      "name": f"{exp.rootname}[SCI,{chip.extver}]",
                      "group_id": "visit" if mode == "REL" else i, "exposure": i, "chip": j},
            ))
    if not correctors:
        return FitOutcome(FitStatistics(succeeded=False, failure="no sources to fit", **base_stats), {}, details)
    refcat = Table({"RA": np.asarray(ref_table["ra"]), "DEC": np.asarray(ref_table["dec"])})
    if "sigma_mas" in ref_table.colnames:
        # tweakwcs combines the two weights as 1/w = 1/w_image + 1/w_ref, so with w = 1/σ² every
        # match is weighted by 1/(σ_cat² + σ_hst²).
        sigma = np.asarray(ref_table["sigma_mas"], dtype=float)
        refcat["weight"] = 1.0 / np.square(np.where(np.isfinite(sigma) & (sigma > 0), sigma, ref.expected_error_mas))
    match = XYXYMatch(
        searchrad=search_radius_arcsec(observation_epoch(exposures), cfg.match) / scale_arcsec, separation=cfg.match.separation_pix,
        tolerance=cfg.match.tolerance_pix, use2dhist=cfg.match.use2dhist,
    )
    messages: list[str] = []
    try:
        with quiet_libraries(logger) as messages:
            align_wcs(correctors, refcat=refcat, enforce_user_order=True, expand_refcat=False, match=match,
                      minobj=cfg.quality.min_matches.get(geometry), fitgeom=geometry, nclip=cfg.fit.nclip,
                      sigma=(cfg.fit.sigma, "rmse"), group_bb_policy=1)
    except FIT_ERRORS as exc:
        failure = f"tweakwcs: {type(exc).__name__}: {exc}"
        return FitOutcome(FitStatistics(succeeded=False, failure=failure, **base_stats), {}, details)
    statuses = {str(c.meta.get("fit_info", {}).get("status", "FAILED: no fit information")) for c in correctors}
    bad = sorted(s for s in statuses if s != "SUCCESS")
    infos = [c.meta["fit_info"] for c in correctors if c.meta.get("fit_info", {}).get("status") == "SUCCESS"]
    details["tweakwcs"] = [
        {
            "name": c.meta["name"],
            "status": str(c.meta.get("fit_info", {}).get("status")),
            "nmatches": int(c.meta.get("fit_info", {}).get("nmatches", 0)),
        }
        for c in correctors
    ]
    if messages:
        details["tweakwcs_messages"] = list(messages)
    if bad:
        failure = "; ".join(bad)
        n_fit = max((int(i.get("nmatches", 0)) for i in infos), default=0)
        if "not enough matches" in failure:
            # tweakwcs stopped before fitting; its warning says how many it found.
            found = [int(m.group(1)) for text in messages for m in [re.search(r"Not enough matches \((\d+)\)", text)] if m]
            n_found = max(found, default=n_fit)
            return FitOutcome(FitStatistics(succeeded=True, n_matches=n_found, **base_stats), {}, {**details, "failure": failure})
        return FitOutcome(FitStatistics(succeeded=False, failure=failure, **base_stats), {}, details)
    info = infos[0]
    details["fit"] = {
        "shift_pix": [round(float(v), 4) for v in info["shift"]],
        "rotation_deg": round(float(info.get("proper_rot", math.nan)), 6),
        "scale": round(float(info.get("<scale>", math.nan)), 8),
        "skew_deg": round(float(info.get("skew", math.nan)), 6),
        "rmse_pix": round(float(info.get("rmse", math.nan)), 4),
        "tweakwcs_nmatches": sum(int(i.get("nmatches", 0)) for i in infos) if mode == "IMG" else int(info.get("nmatches", 0)),
    }
    new_wcs = {(c.meta["exposure"], c.meta["chip"]): c.wcs for c in correctors}
    # Chips without sources follow their exposure (same correction as a sibling chip).
    for i, exp in enumerate(exposures):
        for j in range(len(exp.chips)):
            if (i, j) not in new_wcs:
                sib = next((k for k in range(len(exp.chips)) if (i, k) in new_wcs), None)
                if sib is None:
                    failure = f"exposure {exp.rootname} has no sources to fit"
                    return FitOutcome(FitStatistics(succeeded=False, failure=failure, **base_stats), {}, details)
                new_wcs[(i, j)] = transfer_correction(start_wcs[(i, sib)], new_wcs[(i, sib)], start_wcs[(i, j)])
    rmse_mas = float(info.get("rmse", 0.0)) * scale_arcsec * 1000.0
    radius = max(cfg.match.tolerance_pix * scale_arcsec, 3.0 * rmse_mas / 1000.0)
    resid = post_fit_residuals(exposures, new_wcs, masks, ref_table, region, radius)
    mag_r = pearson(resid.img_mag, resid.ref_mag)
    corrections = exposure_corrections_mas(exposures, start_wcs, new_wcs)
    for p, c in zip(resid.per_exposure, corrections, strict=True):
        p["correction_mas"] = [round(c[0], 3), round(c[1], 3)]
    if mode == "REL":
        # One transformation for the visit: consistency = the exposures' mean residuals agree.
        offsets = [tuple(p["mean_offset_mas"]) for p in resid.per_exposure if p["mean_offset_mas"] is not None]
    else:
        # Each exposure fitted on its own: consistency = their corrections agree (the pointing
        # error of one visit is common to its exposures).
        offsets = corrections
    stats = FitStatistics(
        succeeded=True,
        n_matches=resid.n_matches,
        rms_mas=resid.rms_mas,
        rms_ra_mas=resid.rms_ra_mas,
        rms_dec_mas=resid.rms_dec_mas,
        radial_offset_arcsec=radial_offset_arcsec(exposures, start_wcs, new_wcs),
        mag_correlation=mag_r,
        exposure_offsets_mas=offsets,
        exposure_matches=[p["n_matches"] for p in resid.per_exposure],
        **base_stats,
    )
    details.update({
        "per_exposure": resid.per_exposure,
        "match_radius_arcsec": round(radius, 4),
        "residuals": resid.vectors,
    })
    return FitOutcome(stats, new_wcs, details)


@dataclass(frozen=True)
class CatalogFit:
    """One geometry fitted to one catalog: the outcome and its quality (1–5) with the reasons."""

    mode: str
    geometry: str
    outcome: FitOutcome
    quality: int
    reasons: tuple[str, ...]


def fit_catalog(
    exposures: Sequence[ExposureSources],
    alignment: Alignment,
    catalog: catmod.ReferenceCatalog,
    ref_table: Table,
    region: catmod.Region,
    cfg: AposterioriConfig,
) -> list[CatalogFit]:
    """Every fit of the visit to one catalog, scored, in the order tried.

    Each configured geometry, and the sparse one when none of them is usable
    (:func:`autodriz.select.try_sparse_geometry`); after FIT_REL, the pipeline's fallback FIT_IMG
    (the exposures one by one from their starting WCS with all their sources) when no relative
    fit is usable (:func:`autodriz.select.needs_image_by_image`).

    Parameters
    ----------
    exposures : sequence of ExposureSources
        The exposures.
    alignment : Alignment
        From :func:`align_exposures`.
    catalog : ReferenceCatalog
        The catalog.
    ref_table : astropy.table.Table
        Its stars on the chips.
    region : Region
        The footprint.
    cfg : AposterioriConfig
        Fit settings and quality thresholds.

    Returns
    -------
    list of CatalogFit
    """
    attempts = [(alignment.mode, alignment.relative.wcs, alignment.masks)]
    if alignment.mode == "REL":
        attempts.append(("IMG", starting_wcs(exposures), all_sources(exposures)))
    fits: list[CatalogFit] = []
    for mode, start, masks in attempts:
        if mode == "IMG" and alignment.mode == "REL":
            if not needs_image_by_image([f.quality for f in fits if f.mode == "REL"]):
                break
            logger.info("catalog %s: no usable relative fit; fitting the exposures one by one (FIT_IMG)", catalog.name)

        def fit(geometry: str, mode: str = mode, start: Mapping[ChipKey, WCS] = start,
                masks: Mapping[ChipKey, np.ndarray] = masks) -> CatalogFit:
            outcome = absolute_fit(exposures, start, masks, catalog, ref_table, region, geometry, mode,
                                   alignment.relative, cfg)
            quality, reasons = assess_fit(outcome.stats, cfg.quality)
            return CatalogFit(mode, geometry, outcome, quality, tuple(reasons))

        geometries = list(cfg.fit.geometries)
        tried = [fit(geometry) for geometry in geometries]
        sparse = cfg.fit.sparse_geometry
        if sparse and sparse not in geometries and try_sparse_geometry([f.quality for f in tried]):
            logger.info("catalog %s: no %s fit usable; trying a %s fit (sparse field)", catalog.name, "/".join(geometries), sparse)
            tried.append(fit(sparse))
        fits += tried
    return fits
