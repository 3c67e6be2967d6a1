"""Verification harness: drizzle a candidate's exposures onto one common frame and verify.

Every exposure is read here (:func:`load_exposure`) and drizzled *alone* onto the same output
frame in memory by :mod:`autodriz.verification.singles` (no files, no AstroDrizzle child
process): DQ-flagged pixels get zero weight, count units become count rates, nothing else is
done to the pixels (no sky matching, no CR flagging; :mod:`autodriz.verify` is robust to
unflagged cosmic rays by design). The combined drizzle is the weight-averaged stack of these
singles — exactly what drizzling all exposures into one output would give with the same
kernel — so it costs nothing extra. :func:`verify_candidate` is what the pipeline calls.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from autodriz.hstio import Card, apply_sci_cards, chip_wcs
from autodriz.instruments import CR_BITS_ASTRODRIZZLE, CR_BITS_PIPELINE, REGISTRY
from autodriz.skygeom import mean_direction, pa_rotation
from autodriz.solutions.base import pending_copies
from autodriz.verification.singles import OutputFrame, common_frame, drizzle_singles, source_frame
from autodriz.verify import (
    UNVERIFIED,
    FocusResult,
    Thresholds,
    VerificationResult,
    load_thresholds,
    verify_tiles,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ChipData",
    "ExposureData",
    "load_exposure",
    "perturb_exposure",
    "verify_candidate",
    "verify_exposures",
]

#: DQ bits of cosmic rays flagged by an earlier drizzle (4096, AstroDrizzle's) or by the
#: calibration's CR-SPLIT combination (8192): runastrodriz resets both before aligning. A
#: detector's own bits are its registry record's ``cr_dq_bits``; these are for an unknown one.
STALE_CR_BITS = CR_BITS_ASTRODRIZZLE | CR_BITS_PIPELINE

# Errors that mean "the data cannot be verified", as opposed to a bug (TypeError, IndexError …
# surface as exit 1 with their traceback): reading an exposure (astropy raises KeyError for a
# missing extension or keyword) …
_READ_ERRORS = (OSError, ValueError, KeyError, MemoryError)
# … and measuring it (numpy's LinAlgError is a ValueError).
_MEASURE_ERRORS = (ValueError, ArithmeticError, MemoryError)


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChipData:
    """One SCI chip: its pixels and DQ as read (a memory map of the file, as a rule), which DQ
    bits are bad, and its full WCS (with distortion).

    Pixels are converted and masked window by window (:meth:`window`): verification drizzles
    squares around stars, a tenth of a chip, and converting whole chips made ~40 MB of fresh
    memory per chip to use a tenth of it.
    """

    extver: int
    sci: np.ndarray
    dq: np.ndarray | None
    bad_mask: int
    wcs: WCS

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx)."""
        return self.sci.shape  # type: ignore[return-value]

    def window(self, r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        """``(data, good)`` of rows ``r0:r1`` and columns ``c0:c1``: float32 pixels with bad
        ones set to 0, and the mask of good ones (finite, no bad DQ bit)."""
        data = np.asarray(self.sci[r0:r1, c0:c1], dtype=np.float32)
        good = np.isfinite(data)
        if self.dq is not None:
            good &= (np.asarray(self.dq[r0:r1, c0:c1]).astype(np.uint32) & np.uint32(self.bad_mask)) == 0
        return np.where(good, data, np.float32(0.0)), good

    @property
    def data(self) -> np.ndarray:
        """The whole chip's pixels, bad ones 0 (float32)."""
        return self.window(0, self.shape[0], 0, self.shape[1])[0]

    @property
    def good(self) -> np.ndarray:
        """The whole chip's good-pixel mask."""
        return self.window(0, self.shape[0], 0, self.shape[1])[1]


@dataclass(frozen=True)
class ExposureData:
    """One exposure ready to drizzle.

    Attributes
    ----------
    name : str
        Rootname (or file stem).
    path : Path or None
        File it was read from.
    exptime : float
        Seconds.
    in_units : str
        ``counts`` (electrons, divided by ``exptime`` when drizzling) or ``cps``.
    chips : tuple of ChipData
    pixel_scale_arcsec : float
        Native scale (IDCSCALE, else from the CD matrix).
    """

    name: str
    path: Path | None
    exptime: float
    in_units: str
    chips: tuple[ChipData, ...]
    pixel_scale_arcsec: float


def load_exposure(
    path: str | Path, good_bits: int = 0, sci_cards: Mapping[int, Sequence[Card]] | None = None
) -> ExposureData:
    """Open an FLT/FLC for verification: per chip its SCI and DQ pixels (memory-mapped, converted
    window by window by :meth:`ChipData.window`), which DQ bits are bad, and its full WCS.

    Parameters
    ----------
    path : str or Path
        Calibrated exposure.
    good_bits : int
        DQ bits that are *not* bad (AstroDrizzle's ``final_bits``, plus :data:`STALE_CR_BITS`
        when the cosmic-ray flags are an earlier drizzle's).
    sci_cards : mapping, optional
        EXTVER → header assignments applied (in memory only) to that SCI header before its WCS
        is read: a fit whose copies are not written (:class:`~autodriz.solutions.base.PendingCopies`).

    Returns
    -------
    ExposureData

    Raises
    ------
    OSError, ValueError, KeyError
        Unreadable file, no SCI extension, no usable WCS.
    """
    path = Path(path)
    bad_mask = int(~np.uint32(good_bits) & np.uint32(0xFFFF))
    chips = []
    # Memory-mapped: the chips' pixels are read window by window when they are drizzled.
    with fits.open(path, memmap=True) as hdul:
        if sci_cards:
            apply_sci_cards(hdul, sci_cards)
        prim = hdul[0].header
        exptime = float(prim.get("EXPTIME", 0.0) or 0.0)
        name = str(prim.get("ROOTNAME", path.name.split("_")[0])).strip().lower()
        scale = math.nan
        bunit = ""
        for idx, hdu in enumerate(hdul):
            if hdu.name != "SCI" or hdu.data is None or hdu.data.ndim != 2:
                continue
            extver = int(hdu.header.get("EXTVER", 1))
            sci = hdu.data
            try:
                dq = hdul["DQ", extver].data
            except KeyError:
                dq = None
            if dq is not None and dq.shape != sci.shape:
                dq = None
            w = chip_wcs(hdul, idx)
            if not math.isfinite(scale):
                idcscale = hdu.header.get("IDCSCALE")
                scale = float(idcscale) if idcscale else float(np.sqrt(abs(np.linalg.det(w.pixel_scale_matrix))) * 3600)
            bunit = bunit or str(hdu.header.get("BUNIT", "")).strip().upper()
            chips.append(ChipData(extver, sci, dq, bad_mask, w))
    if not chips:
        raise ValueError(f"{path.name}: no 2-D SCI extension")
    in_units = "cps" if bunit.endswith(("/S", "/SEC")) else "counts"
    if in_units == "counts" and not exptime > 0:
        raise ValueError(f"{path.name}: EXPTIME={exptime} with data in counts")
    return ExposureData(name, path, exptime if exptime > 0 else 1.0, in_units, tuple(chips), scale)


def aperture_centre(exposure: ExposureData) -> tuple[float, float]:
    """Sky position of the centre of the exposure's chips (RA, Dec in degrees)."""
    ras, decs = [], []
    for chip in exposure.chips:
        ny, nx = chip.shape
        ra, dec = chip.wcs.all_pix2world([0, nx - 1, nx - 1, 0], [0, 0, ny - 1, ny - 1], 0)
        ras.append(ra)
        decs.append(dec)
    return mean_direction(np.concatenate(ras), np.concatenate(decs))


def perturb_exposure(
    exposure: ExposureData,
    *,
    shift_mas: tuple[float, float] = (0.0, 0.0),
    rotation_deg: float = 0.0,
    center: tuple[float, float] | None = None,
) -> ExposureData:
    """A copy of ``exposure`` whose WCS is rotated about ``center`` and shifted on the sky.

    Every chip's CRVAL is moved as :func:`autodriz.simulate.perturb_sky` moves sky positions and
    its CD matrix rotated alike, so the whole exposure (distortion included) moves rigidly.
    For tests and scripts that misregister one exposure on purpose.

    Parameters
    ----------
    shift_mas : (float, float)
        Tangent-plane shift (east, north), mas.
    rotation_deg : float
        Rotation, degrees (position angles grow).
    center : (float, float), optional
        Rotation centre; default the exposure's aperture centre.
    """
    from autodriz.skygeom import perturb_sky

    center = center or aperture_centre(exposure)
    rot = pa_rotation(rotation_deg)
    chips = []
    for chip in exposure.chips:
        w = chip.wcs.deepcopy()
        ra, dec = perturb_sky(
            w.wcs.crval[0], w.wcs.crval[1], center, rotation_arcsec=rotation_deg * 3600.0, shift_mas=shift_mas
        )
        w.wcs.crval = [float(ra[0]), float(dec[0])]
        if w.wcs.has_cd():
            w.wcs.cd = rot @ w.wcs.cd
        else:
            w.wcs.pc = rot @ (w.wcs.get_pc() * w.wcs.cdelt[:, None])
            w.wcs.cdelt = [1.0, 1.0]
        w.wcs.set()
        chips.append(replace(chip, wcs=w))
    return replace(exposure, chips=tuple(chips))


# --------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------


def _unverified(reason: str, th: Thresholds, seconds: float, **details: Any) -> VerificationResult:
    return VerificationResult(
        UNVERIFIED, reason,
        FocusResult(UNVERIFIED, reason, sigma_px=th.log_sigma_px, min_z=th.min_focus_z),
        (), th.as_dict(), seconds, {}, details,
    )


def verify_exposures(
    exposures: Sequence[ExposureData],
    thresholds: Thresholds | None = None,
    *,
    kernel: str = "turbo",
    prefetch: bool = False,
    sources: Sequence[Mapping[int, np.ndarray]] | None = None,
    cell: int = 320,
) -> VerificationResult:
    """Drizzle ``exposures`` onto a common frame and run :func:`autodriz.verify.verify_tiles`.

    ``prefetch``: see :func:`drizzle_singles`. ``sources``: per exposure, EXTVER → ``(K, 2)``
    chip pixel positions (x, y, 0-based) of stars detected on it; when given, only squares of
    the frame where they are are drizzled and measured (:func:`source_frame`), if that
    covers every exposure; otherwise, and without them, the whole frame. ``cell``: the side of
    those squares, output pixels.

    Returns
    -------
    VerificationResult
        With ``timings`` (frame, drizzle, measure) and ``details`` (frame shape, tiles).
    """
    th = thresholds or Thresholds()
    t0 = time.perf_counter()
    frame = common_frame(exposures)
    whole = frame
    if sources is not None:
        sparse = source_frame(frame, _frame_positions(exposures, sources, frame), cell=cell)
        frame = sparse or frame
    t1 = time.perf_counter()
    tiles = drizzle_singles(exposures, frame, kernel=kernel, prefetch=prefetch)
    t2 = time.perf_counter()
    result = verify_tiles(
        tiles, names=[e.name for e in exposures], exptimes=[e.exptime for e in exposures],
        thresholds=th, pixel_scale_arcsec=frame.scale_arcsec, sparse=frame is not whole,
    )
    t3 = time.perf_counter()
    timings = {"frame": t1 - t0, "drizzle": t2 - t1, "measure": t3 - t2}
    details = {
        "frame_shape": list(frame.shape),
        "tiles": [list(t) for t in frame.tiles],
        "allocated_pixels": frame.pixels,
        # "sources": squares around detected stars; "whole": every pixel of every chip.
        "coverage": "whole" if frame is whole else "sources",
        "frame_pixels": whole.pixels,
        "pixel_scale_arcsec": frame.scale_arcsec,
        "kernel": kernel,
        "exposures": [e.name for e in exposures],
    }
    return replace(result, seconds=t3 - t0, timings=timings, details={**result.details, **details})


def _frame_positions(
    exposures: Sequence[ExposureData], sources: Sequence[Mapping[int, np.ndarray]], frame: OutputFrame
) -> list[np.ndarray]:
    """Each exposure's star positions (chip pixels per EXTVER) in frame pixels, through the
    chips' WCS (the one being verified)."""
    out = []
    for exp, chips in zip(exposures, sources, strict=True):
        parts = [np.empty((0, 2))]
        for chip in exp.chips:
            xy = np.asarray(chips.get(chip.extver, np.empty((0, 2))), np.float64).reshape(-1, 2)
            if xy.size:
                ra, dec = chip.wcs.all_pix2world(xy[:, 0], xy[:, 1], 0)
                parts.append(np.column_stack(frame.wcs.all_world2pix(ra, dec, 0)))
        out.append(np.concatenate(parts))
    return out


def _coverage_text(details: Mapping[str, Any]) -> str:
    if details.get("coverage") == "sources":
        share = details.get("allocated_pixels", 0) / max(details.get("frame_pixels", 1), 1)
        return f"{len(details.get('tiles', ()))} squares around stars, {share:.0%} of the frame"
    return "whole frame"


def _could_not_run(name: str, exc: BaseException, th: Thresholds, t0: float) -> VerificationResult:
    logger.warning("verification of %s could not run: %s: %s", name, type(exc).__name__, exc)
    return _unverified(f"verification could not run: {type(exc).__name__}: {exc}", th, time.perf_counter() - t0)


def verify_candidate(
    candidate: Any,
    dataset: Any,
    *,
    settings: Any | None = None,
    thresholds: Thresholds | None = None,
    use: str = "auto",
    stars: Mapping[str, Mapping[int, np.ndarray]] | None = None,
) -> VerificationResult:
    """Verify the relative alignment of a candidate WCS from its working copies.

    Parameters
    ----------
    candidate : autodriz.solutions.base.Candidate
        Its ``copies`` map each original exposure to the copy holding the candidate's WCS.
    dataset : autodriz.inputs.Dataset
        The resolved input (exposure order, instrument, FLT/FLC paths).
    settings : autodriz.config.Settings, optional
        Only ``num_cores`` is used (verification settings live in ``config/verify.toml``): with
        two or more, pixel maps are computed beside the drizzling (:func:`drizzle_singles`).
    thresholds : Thresholds, optional
        Default: ``config/verify.toml`` for the dataset's detector.
    use : str
        ``auto`` (default: the FLCs when every exposure has one — the DRC is the science
        product and its centroids are CTE-corrected — else the FLTs), ``flt`` or ``flc``.
    stars : mapping, optional
        Original (as str) → EXTVER → chip pixel positions of detected stars (the candidate's
        own ``stars`` take precedence): with them for every exposure, only squares of the frame
        around stars are drizzled and measured (:func:`verify_exposures`).

    Returns
    -------
    VerificationResult
        Never raises for data problems: a file that cannot be read, a missing WCS, no overlap
        or no sources give ``status="unverified"`` with the reason.
    """
    prefetch = int(getattr(settings, "num_cores", 1) or 1) >= 2
    t0 = time.perf_counter()
    key = getattr(dataset, "instrument_key", None)
    try:
        th = thresholds or load_thresholds(key)
    except (OSError, ValueError) as exc:
        logger.warning("verification thresholds could not be read (%s); using built-in defaults", exc)
        th = Thresholds()
    use_flc = use in ("flc", "auto") and bool(getattr(dataset, "has_flc", False))
    originals = list(dataset.flc_paths if use_flc else dataset.flt_paths or dataset.flc_paths)
    name = getattr(candidate, "name", "?")
    if len(originals) < 2:
        result = _unverified(
            "one exposure: relative alignment cannot be checked from the images", th, time.perf_counter() - t0
        )
        logger.info("verification of %s: %s", name, result.reason)
        return result
    try:
        from autodriz.config import astrodrizzle_defaults

        good_bits = int(astrodrizzle_defaults(key, len(originals)).get("final_bits", 0) or 0) if key else 0
    except (ValueError, KeyError, OSError) as exc:
        logger.info("no AstroDrizzle defaults for %s (%s): every DQ flag but cosmic rays counts as bad", key, exc)
        good_bits = 0
    # Cosmic-ray flags in the inputs are stale (an earlier drizzle's): the final AstroDrizzle
    # resets them (resetbits 4096) and flags anew, runastrodriz resets 4096+8192 before it
    # aligns. Masking them would blank the cores of stars an earlier run mistook for CRs.
    record = REGISTRY.find(key) if key else None
    good_bits |= record.cr_dq_bits if record is not None else STALE_CR_BITS
    # A fit whose copies are not written: its starting copies, with its WCS applied in memory.
    pending = pending_copies(candidate.copies)
    if pending is not None:
        reads = [(pending.sources[p], pending.edits.get(p)) for p in originals]
    else:
        reads = [(Path(candidate.copies[p]), None) for p in originals]
    try:
        exposures = [load_exposure(path, good_bits, cards) for path, cards in reads]
    except _READ_ERRORS as exc:
        return _could_not_run(name, exc, th, t0)
    known = getattr(candidate, "stars", None) or stars or {}
    sources = [known.get(str(p)) for p in originals]
    try:
        result = verify_exposures(
            exposures, th, prefetch=prefetch, sources=sources if all(s for s in sources) else None
        )
    except _MEASURE_ERRORS as exc:
        return _could_not_run(name, exc, th, t0)
    seconds = time.perf_counter() - t0
    logger.info(
        "verification of %s (%s): %s in %.1f s (drizzle %.1f s, measure %.1f s, %s): %s",
        name, getattr(candidate, "wcsname", "?"), result.status.upper(), seconds,
        result.timings.get("drizzle", 0.0), result.timings.get("measure", 0.0),
        _coverage_text(result.details), result.reason,
    )
    return replace(result, seconds=seconds, timings={**result.timings, "load": seconds - result.seconds})
