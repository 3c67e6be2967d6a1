"""What the fits are given: each exposure's chips and sources, and the catalog stars on them.

The I/O edge of the a posteriori stage: chip WCSs are read from the working copies the fits
start from (:mod:`autodriz.hstio`), sources are detected on the originals' pixels
(:mod:`autodriz.detect`, in up to ``num_cores`` processes, possibly already in the background
while the default stage ran). Only reads; nothing is written.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from autodriz import catalogs as catmod
from autodriz.astrometry.chips import Chip, ExposureSources, pixel_scale_arcsec
from autodriz.astrometry.config import load_aposteriori_config
from autodriz.config import Settings
from autodriz.chipdetection import BackgroundDetection, ChipJob, detect_chips
from autodriz.detect import DetectionParams
from autodriz.errors import ConfigError
from autodriz.hstio import chip_shape, chip_wcs, sci_extensions
from autodriz.inputs import Dataset
from autodriz.skygeom import mean_direction

logger = logging.getLogger(__name__)


def detect_original(exp: Any, default_copies: Mapping[Path, Path] | None, use_flc: bool) -> Path:
    """The original whose pixels are searched: the FLC when every exposure has one, else the FLT."""
    def present(p: Path | None) -> bool:
        return p is not None and (default_copies is None or p in default_copies)

    if use_flc and present(exp.flc):
        return exp.flc
    if present(exp.flt):
        return exp.flt
    return next(p for p in exp.paths if default_copies is None or p in default_copies)


def start_background_detection(
    dataset: Dataset, settings: Settings, config_path: Path | None = None, *, start: bool = True
) -> BackgroundDetection | None:
    """Start source detection on the originals' pixels while the default stage runs.

    Detection reads only pixels (SCI, DQ, ERR), which the default and a priori stages do not
    change (they write headers of copies), so the chips can be searched while updatewcs runs
    in its child. Only with ``num_cores`` >= 2 (with one core the run stays serial, as asked)
    and when the a posteriori stage will run. Returns None when not started; the stage then
    detects as usual. A settings file that cannot be read is left for the stage to report.
    With ``start=False`` the workers start at :meth:`BackgroundDetection.start` (the pipeline
    calls it once the default stage's child is forked).
    """
    if settings.num_cores < 2 or not settings.compute_aposteriori or dataset.is_spectroscopic:
        return None
    try:
        params = load_aposteriori_config(dataset.instrument_key, config_path).detection
    except ConfigError:
        return None
    jobs = []
    for exp in dataset.exposures:
        if exp.not_alignable or not exp.paths:
            continue
        path = detect_original(exp, None, dataset.has_flc)
        try:
            with fits.open(path) as hdul:
                jobs += [ChipJob(str(path), extver, params) for _, extver in sci_extensions(hdul, images_only=True)]
        except (OSError, ValueError) as exc:  # unreadable: the default stage says so, with its exit code
            logger.debug("no background detection: %s: %s", path.name, exc)
            return None
    return BackgroundDetection(jobs, settings.num_cores, start=start) if jobs else None


def star_positions(table: Table) -> np.ndarray:
    """``(K, 2)`` pixel positions (x, y, 0-based) of a detection table's rows, in its order."""
    return np.column_stack([np.asarray(table["x"], float), np.asarray(table["y"], float)])


def detected_stars(exposures: Sequence[ExposureSources]) -> dict[str, dict[int, np.ndarray]]:
    """Original (as str) → EXTVER → pixel positions of the stars kept on each chip (chips
    without any left out): what verification drizzles around
    (:func:`autodriz.verification.singles.source_frame`)."""
    return {
        str(original): {chip.extver: star_positions(chip.sources) for chip in exp.chips if len(chip.sources)}
        for exp in exposures
        for original in exp.originals
    }


def early_stars(early: BackgroundDetection, dataset: Dataset) -> dict[str, dict[int, np.ndarray]]:
    """Original (as str) → EXTVER → ``(K, 2)`` pixel positions of the stars the background
    detection kept (waiting for it), for every file of each exposure it searched: where the
    verification of a priori candidates drizzles (:func:`autodriz.verification.singles.source_frame`).
    The tables stay in ``early`` for the a posteriori stage.
    """
    by_path: dict[str, dict[int, np.ndarray]] = {}
    for job in early.jobs:
        table = early.take(job)
        if table is not None and len(table):
            by_path.setdefault(job.path, {})[job.extver] = star_positions(table)
    return {
        str(path): by_path[str(searched)]
        for exp in dataset.exposures
        if (searched := next((p for p in exp.paths if str(p) in by_path), None)) is not None
        for path in exp.paths
    }


def load_exposures(
    copies: Mapping[Path, Path],
    dataset: Dataset,
    params: DetectionParams,
    num_cores: int = 1,
    early: BackgroundDetection | None = None,
) -> list[ExposureSources]:
    """Each alignable exposure's chips: WCS from its working copy, sources detected on its pixels.

    Parameters
    ----------
    copies : mapping of Path to Path
        Original → working copy of the candidate the fits start from.
    dataset : Dataset
        The exposures (screened ones are left out).
    params : DetectionParams
        Detection settings of the detector.
    num_cores : int
        Processes for the chips not yet searched.
    early : BackgroundDetection, optional
        Chips searched in the background (:func:`start_background_detection`); closed here.

    Returns
    -------
    list of ExposureSources
        Exposures with at least one readable chip; a chip whose WCS cannot be read is left out
        (said at INFO).
    """
    use_flc = dataset.has_flc
    out: list[ExposureSources] = []
    # Headers and WCS here; pixels are read and searched per chip by detect_chips, in up to
    # num_cores processes (detection is ~3 s per full ACS/WFC chip and chips are independent),
    # unless the chip was already searched in the background (same original, same settings).
    pending: list[tuple[ExposureSources, int, WCS, tuple[int, int], ChipJob]] = []
    for exp in dataset.exposures:
        if exp.not_alignable:  # screened (autodriz.screening); the plan said so
            continue
        originals = tuple(p for p in exp.paths if p in copies)
        if not originals:
            logger.info("exposure %s has no working copy in the default candidate; skipped", exp.rootname)
            continue
        searched = detect_original(exp, copies, use_flc)
        path = copies[searched]
        with fits.open(path) as hdul:
            expstart = hdul[0].header.get("EXPSTART")
            item = ExposureSources(exp.rootname, path, originals, float(expstart) if expstart is not None else None)
            for index, extver in sci_extensions(hdul, images_only=True):
                try:
                    wcs = chip_wcs(hdul, index)
                except (ValueError, KeyError, MemoryError) as exc:
                    logger.info("%s SCI,%d: WCS unreadable (%s); chip not used", path.name, extver, exc)
                    continue
                shape = chip_shape(hdul[index].header)
                pending.append((item, extver, wcs, shape, ChipJob(str(searched), extver, params)))
        out.append(item)
    tables = [early.take(job) if early is not None else None for *_, job in pending]
    if early is not None:
        early.close()  # idle workers would hold memory through the final drizzles
    todo = [k for k, t in enumerate(tables) if t is None]
    if early is not None and todo:
        logger.info("%d chip(s) were not searched in the background: searching them now", len(todo))
    for k, table in zip(todo, detect_chips(
        [ChipJob(str(pending[k][0].detect_path), pending[k][1], params) for k in todo], num_cores
    ), strict=True):
        tables[k] = table
    for (item, extver, wcs, shape, _), table in zip(pending, tables, strict=True):
        item.chips.append(Chip(extver, wcs, table, shape))
        logger.info(
            "%s SCI,%d: %d sources kept of %d detections (%d rejected by shape as cosmic rays/hot pixels)%s",
            item.detect_path.name, extver, len(table), table.meta.get("n_raw", 0), table.meta.get("n_rejected_shape", 0),
            f"; {table.meta['reason']}" if "reason" in table.meta else "",
        )
    return [item for item in out if item.chips]


def footprint(exposures: Sequence[ExposureSources], margin_arcsec: float) -> catmod.Region:
    """The circle on the sky that holds every chip (corners and centre), plus ``margin_arcsec``."""
    ras, decs = [], []
    for exp in exposures:
        for chip in exp.chips:
            ny, nx = chip.shape
            x = np.array([0, nx - 1, nx - 1, 0, (nx - 1) / 2])
            y = np.array([0, 0, ny - 1, ny - 1, (ny - 1) / 2])
            ra, dec = chip.wcs.all_pix2world(x, y, 0)
            ras.append(ra)
            decs.append(dec)
    ra = np.concatenate(ras)
    dec = np.concatenate(decs)
    ra0, dec0 = mean_direction(ra, dec)
    radius = float(catmod.angular_distance(ra, dec, ra0, dec0).max()) + margin_arcsec / 3600.0
    return catmod.Region(ra0, dec0, radius)


def prefilter_reference(table: Table, exposures: Sequence[ExposureSources], margin_arcsec: float, max_stars: int) -> Table:
    """Catalog stars that fall on some chip (± margin), brightest first, at most ``max_stars``.

    Uses the linear (``wcs_world2pix``) transformation, which never fails to converge; the
    distortion is at most a few tens of pixels at the corners and the margin absorbs it.
    """
    if len(table) == 0:
        return table
    ra = np.asarray(table["ra"], dtype=float)
    dec = np.asarray(table["dec"], dtype=float)
    keep = np.zeros(len(table), dtype=bool)
    for exp in exposures:
        for chip in exp.chips:
            scale = pixel_scale_arcsec(chip.wcs)
            m = margin_arcsec / scale
            ny, nx = chip.shape
            with np.errstate(invalid="ignore"):
                x, y = chip.wcs.wcs_world2pix(ra, dec, 0)
            keep |= np.isfinite(x) & np.isfinite(y) & (x > -m) & (x < nx - 1 + m) & (y > -m) & (y < ny - 1 + m)
    cut = table[keep]
    if len(cut) > max_stars:
        mag = np.asarray(cut["mag"], dtype=float)
        order = np.argsort(np.where(np.isfinite(mag), mag, np.inf), kind="stable")[:max_stars]
        cut = cut[np.sort(order)]
    return cut
