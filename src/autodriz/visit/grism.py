"""Grism/prism groups: the direct images' WCS correction, measured and transferred."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from autodriz.exitcodes import PRODUCT_CODES
from autodriz.skygeom import linear_sip_header, mean_direction, tangent_arcsec, untangent_arcsec
from autodriz.visit.grouping import VisitGroup
from autodriz.visit.outcome import GroupOutcome

logger = logging.getLogger(__name__)


@dataclass(frozen=True)


class WCSCorrection:
    """What alignment did to a group's WCS: a rotation about a pivot, then a shift.

    In the tangent plane about ``pivot`` (east, north in arcsec): ``after = R(rotation) @ before
    + (east, north)``. Exposures of one visit share the telescope's pointing (same guide
    stars), so a grism/prism group receives the correction that its direct images got, as the
    HST pipeline gives grism exposures the direct images' solution.
    """

    wcsname: str
    source_group: str
    pivot_ra: float
    pivot_dec: float
    east_arcsec: float
    north_arcsec: float
    rotation_deg: float
    rms_mas: float
    n_points: int

    def describe(self) -> str:
        """One sentence for the log and the report."""
        return (f"{self.wcsname} of {self.source_group} transferred: shift east {self.east_arcsec * 1e3:+.1f} mas, "
                f"north {self.north_arcsec * 1e3:+.1f} mas, rotation {self.rotation_deg * 3600:+.3f}\" "
                f"({self.n_points} points, {self.rms_mas:.2f} mas rms about the fit)")


def fit_correction(
    before: tuple[np.ndarray, np.ndarray], after: tuple[np.ndarray, np.ndarray], *, wcsname: str = "",
    source_group: str = "",
) -> WCSCorrection:
    """Fit the rotation + shift that takes sky positions ``before`` to ``after`` (pure).

    Parameters
    ----------
    before, after : (ra, dec) arrays, degrees
        The same pixels evaluated with the WCS before and after alignment.
    """
    ra_b, dec_b = (np.asarray(v, dtype=float).ravel() for v in before)
    ra_a, dec_a = (np.asarray(v, dtype=float).ravel() for v in after)
    ra0, dec0 = mean_direction(ra_b, dec_b)
    xb, yb = tangent_arcsec(ra_b, dec_b, ra0, dec0)
    xa, ya = tangent_arcsec(ra_a, dec_a, ra0, dec0)
    mb, ma = np.array([xb.mean(), yb.mean()]), np.array([xa.mean(), ya.mean()])
    cxb, cyb, cxa, cya = xb - mb[0], yb - mb[1], xa - ma[0], ya - ma[1]
    theta = math.atan2(float(np.sum(cxb * cya - cyb * cxa)), float(np.sum(cxb * cxa + cyb * cya)))
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    shift = ma - rot @ mb
    model = rot @ np.vstack([xb, yb]) + shift[:, None]
    rms = float(np.sqrt(np.mean((model[0] - xa) ** 2 + (model[1] - ya) ** 2))) * 1e3
    return WCSCorrection(wcsname, source_group, ra0, dec0, float(shift[0]), float(shift[1]), math.degrees(theta),
                         rms, len(ra_b))


def correct_sky(ra: np.ndarray, dec: np.ndarray, corr: WCSCorrection) -> tuple[np.ndarray, np.ndarray]:
    """Apply a correction to sky positions (pure)."""
    x, y = tangent_arcsec(np.atleast_1d(ra), np.atleast_1d(dec), corr.pivot_ra, corr.pivot_dec)
    t = math.radians(corr.rotation_deg)
    xn = math.cos(t) * x - math.sin(t) * y + corr.east_arcsec
    yn = math.sin(t) * x + math.cos(t) * y + corr.north_arcsec
    return untangent_arcsec(xn, yn, corr.pivot_ra, corr.pivot_dec)


def apply_correction(header: fits.Header, corr: WCSCorrection) -> None:
    """Move a chip's primary WCS by ``corr``: CRVAL corrected, CD rotated (in place).

    SIP and lookup-table distortion act in pixel space and are kept. Exact for the shift; the
    rotation is applied in the chip's own tangent plane, which differs from the pivot's by far
    less than a milliarcsecond over an HST field.
    """
    if "CD1_1" not in header or "CD2_2" not in header:
        raise ValueError("apply_correction needs a CD-matrix WCS (as HST SCI headers have)")
    ra, dec = correct_sky(np.array([float(header["CRVAL1"])]), np.array([float(header["CRVAL2"])]), corr)
    header["CRVAL1"], header["CRVAL2"] = float(ra[0]), float(dec[0])
    t = math.radians(corr.rotation_deg)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    cd = np.array([[float(header.get("CD1_1", 0.0)), float(header.get("CD1_2", 0.0))],
                   [float(header.get("CD2_1", 0.0)), float(header.get("CD2_2", 0.0))]])
    new = rot @ cd
    for i in range(2):
        for j in range(2):
            header[f"CD{i + 1}_{j + 1}"] = float(new[i, j])


def _chip_wcs(keywords: Mapping[str, Any], shape: tuple[int, int]) -> WCS:

    w = WCS(linear_sip_header(keywords))
    w.pixel_shape = (shape[1], shape[0])
    return w


def _sample(shape: tuple[int, int], n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.meshgrid(np.linspace(0, shape[0] - 1, n), np.linspace(0, shape[1] - 1, n), indexing="ij")
    return xs.ravel(), ys.ravel()


def snapshot_sci_wcs(paths: Sequence[Path]) -> dict[Path, dict[int, dict[str, Any]]]:
    """The SCI headers' WCS keywords (with NAXIS) per file and EXTVER, read before a run (I/O)."""
    from autodriz.headerlets import wcs_keywords

    out: dict[Path, dict[int, dict[str, Any]]] = {}
    for path in paths:
        with fits.open(path) as hdul:
            out[path] = {
                int(h.header.get("EXTVER", 1)): {**wcs_keywords(h.header), "NAXIS1": h.header["NAXIS1"],
                                                  "NAXIS2": h.header["NAXIS2"]}
                for h in hdul if h.name == "SCI"
            }
    return out


def _correction_samples(
    outcome: GroupOutcome, before_run: Mapping[Path, Mapping[int, Mapping[str, Any]]]
) -> dict[Path, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] | None:
    """Per exposure of a direct-image group: sky positions of sample pixels under its default
    WCS and under its chosen one (I/O). None when the group kept its default."""
    from autodriz.headerlets import (
        embedded_headerlets,
        headerlet_bytes,
        headerlet_chip_wcs,
        wcs_keywords,
    )

    if outcome.report is None or not outcome.report.is_file():
        return None
    report = json.loads(outcome.report.read_text(encoding="utf-8"))
    chosen = report.get("chosen", {})
    if chosen.get("name") == "default":
        return None
    # The default's solution travels with the inputs as a headerlet of its WCSNAME.
    default_wcsname = next((str(c.get("wcsname") or "") for c in report.get("candidates", []) if c.get("name") == "default"), "")
    out: dict[Path, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    for path in outcome.group.flt_paths or outcome.group.paths:
        snapshot = before_run.get(path, {})
        archived = next(
            (h for h in embedded_headerlets(path) if default_wcsname and h.wcsname.upper() == default_wcsname.upper()),
            None,
        )
        defaults = {ev: kw for (_, ev), kw in headerlet_chip_wcs(headerlet_bytes(archived)).items()} if archived else {}
        samples: list[tuple[np.ndarray, ...]] = []
        with fits.open(path) as hdul:
            for hdu in hdul:
                if hdu.name != "SCI":
                    continue
                extver = int(hdu.header.get("EXTVER", 1))
                shape = (int(hdu.header["NAXIS2"]), int(hdu.header["NAXIS1"]))
                before_kw = defaults.get(extver) or snapshot.get(extver)
                if before_kw is None:
                    continue
                xs, ys = _sample(shape)
                rb, db = _chip_wcs(before_kw, shape).all_pix2world(xs, ys, 0)
                ra, da = _chip_wcs(wcs_keywords(hdu.header), shape).all_pix2world(xs, ys, 0)
                samples.append((rb, db, ra, da))
        if samples:
            out[path] = tuple(np.concatenate(parts) for parts in zip(*samples))  # type: ignore[assignment]
    return out or None


def _chosen_wcsname(outcome: GroupOutcome) -> str:
    if outcome.wcsname:
        return outcome.wcsname
    if outcome.report is None or not outcome.report.is_file():
        return ""
    return str(json.loads(outcome.report.read_text(encoding="utf-8")).get("chosen", {}).get("wcsname", ""))


def measure_correction(
    outcome: GroupOutcome, before_run: Mapping[Path, Mapping[int, Mapping[str, Any]]]
) -> WCSCorrection | None:
    """What alignment did to a direct-image group: its chosen WCS against its default (I/O).

    The default is the ``<root>_default`` headerlet the pipeline attached to each exposure, or,
    when the default was the header WCS as it was (nothing to attach), the WCS read before the
    run. One rotation + shift for the whole group; None when the group kept its default
    (nothing to transfer).
    """
    return _group_correction(outcome, _correction_samples(outcome, before_run))


def _group_correction(outcome: GroupOutcome, samples: Mapping[Path, tuple[np.ndarray, ...]] | None) -> WCSCorrection | None:
    if samples is None:
        return None
    rb, db, ra, da = (np.concatenate(parts) for parts in zip(*samples.values()))
    return fit_correction(
        (rb, db), (ra, da), wcsname=_chosen_wcsname(outcome),
        source_group=f"{outcome.group.filter} ({outcome.group.root})",
    )


def measure_exposure_corrections(
    outcome: GroupOutcome, before_run: Mapping[Path, Mapping[int, Mapping[str, Any]]]
) -> dict[Path, WCSCorrection]:
    """What alignment did to each exposure of a direct-image group (I/O; see
    :func:`measure_correction`). Empty when the group kept its default.

    Exposures of one visit differ in their pointing errors (each dither is a new guide-star
    pointing: tens of mas on the real GOODS-S F140W visit), so a grism exposure taken at the
    same pointing as one direct image needs that image's correction, not the group's mean.
    """
    return _exposure_corrections(outcome, _correction_samples(outcome, before_run))


def _exposure_corrections(
    outcome: GroupOutcome, samples: Mapping[Path, tuple[np.ndarray, ...]] | None
) -> dict[Path, WCSCorrection]:
    wcsname = _chosen_wcsname(outcome)
    return {
        path: fit_correction((rb, db), (ra, da), wcsname=wcsname,
                             source_group=f"{path.name[:9]}, {outcome.group.filter} ({outcome.group.root})")
        for path, (rb, db, ra, da) in (samples or {}).items()
    }


def exposure_centre(chips: Mapping[int, Mapping[str, Any]]) -> tuple[float, float]:
    """Sky position of the centre of an exposure's chips under the given WCS keywords (pure).

    ``chips`` maps EXTVER to the SCI WCS keywords with NAXIS1/NAXIS2, as
    :func:`snapshot_sci_wcs` records them.
    """
    ras, decs = [], []
    for kw in chips.values():
        shape = (int(kw["NAXIS2"]), int(kw["NAXIS1"]))
        r, d = _chip_wcs(kw, shape).all_pix2world([(shape[1] - 1) / 2.0], [(shape[0] - 1) / 2.0], 0)
        ras.append(float(r[0])), decs.append(float(d[0]))
    return mean_direction(np.array(ras), np.array(decs))


#: A grism/prism exposure shares the pointing of a direct image when the centres of the two,
#: under their header WCS read before the run, agree to this (arcsec). Pairs taken at one dither
#: position agree to a few mas (7 mas on GOODS-S), while dithers step further (≥ 19″ between the
#: GOODS-S pointings; 0.2-0.4″ in the synthetic ACS visit of the tests). The nearest direct image
#: must also be at least :data:`PAIR_AMBIGUITY_RATIO` times closer than the next one; an exposure
#: without such a partner gets the group's correction.
PAIR_RADIUS_ARCSEC = 0.25
PAIR_AMBIGUITY_RATIO = 2.0


@dataclass(frozen=True)


class ExposurePair:
    """A grism/prism exposure and the direct image taken at its pointing (or None)."""

    grism: str
    direct: str | None
    separation_arcsec: float
    reason: str


def pair_by_pointing(
    grism_centres: Mapping[str, tuple[float, float]],
    direct_centres: Mapping[str, tuple[float, float]],
    *,
    radius_arcsec: float = PAIR_RADIUS_ARCSEC,
    ambiguity_ratio: float = PAIR_AMBIGUITY_RATIO,
) -> list[ExposurePair]:
    """Pair each grism/prism exposure with the direct image at the same pointing (pure).

    Parameters
    ----------
    grism_centres, direct_centres : mapping of name to (ra, dec), degrees
        Centres of the exposures (:func:`exposure_centre`).
    radius_arcsec : float
        Largest separation of a pair.
    ambiguity_ratio : float
        The nearest direct image must be this many times closer than the second nearest.

    Returns
    -------
    list of ExposurePair
        In the order of ``grism_centres``; ``direct`` is None, with the reason, when no direct
        image qualifies.
    """
    from autodriz.skygeom import angular_distance

    names = list(direct_centres)
    ra = np.array([direct_centres[n][0] for n in names], dtype=float)
    dec = np.array([direct_centres[n][1] for n in names], dtype=float)
    pairs = []
    for grism, (g_ra, g_dec) in grism_centres.items():
        if not names:
            pairs.append(ExposurePair(grism, None, float("nan"), "no direct image"))
            continue
        sep = angular_distance(ra, dec, g_ra, g_dec) * 3600.0
        order = np.argsort(sep)
        best = float(sep[order[0]])
        second = float(sep[order[1]]) if len(order) > 1 else float("inf")
        if best > radius_arcsec:
            pairs.append(ExposurePair(grism, None, best,
                                      f"nearest direct image {names[order[0]]} is {best:.3f}\" away (> {radius_arcsec}\")"))
        elif second < ambiguity_ratio * best:
            pairs.append(ExposurePair(grism, None, best,
                                      f"ambiguous: {names[order[0]]} at {best:.3f}\", {names[order[1]]} at {second:.3f}\""))
        else:
            pairs.append(ExposurePair(grism, names[order[0]], best, f"same pointing, {best * 1e3:.0f} mas apart"))
    return pairs


def mean_expstart(group: VisitGroup) -> float:
    """Mean EXPSTART (MJD) of a group's exposures, NaN when none has one (I/O)."""
    values = []
    for path in group.flt_paths or group.paths:
        value = fits.getheader(path, 0).get("EXPSTART")
        if value is not None:
            values.append(float(value))
    return float(np.mean(values)) if values else float("nan")


def direct_images_for(spectra: VisitGroup, imaging: Sequence[VisitGroup], starts: Mapping[str, float]) -> VisitGroup | None:
    """The direct-image group whose correction a grism/prism group gets (pure).

    Same instrument/detector, closest in time (mean EXPSTART); the first such group when the
    times are unknown.
    """
    same = [g for g in imaging if g.instrument_key == spectra.instrument_key]
    if not same:
        return None
    t = starts.get(spectra.root, float("nan"))
    if not math.isfinite(t):
        return same[0]
    return min(same, key=lambda g: abs(starts.get(g.root, float("inf")) - t) if math.isfinite(
        starts.get(g.root, float("nan"))) else float("inf"))


def transfer_to(corr: WCSCorrection, per_exposure: Mapping[str, WCSCorrection] | None = None) -> Any:
    """The ``spectroscopic_wcs`` hook of :func:`autodriz.pipeline.process`: move the default
    candidate's working copies by ``corr`` and name the result after the direct images' WCS.

    ``per_exposure`` maps an exposure's file name to the correction of the direct image taken at
    its pointing; those exposures get that correction instead of the group's ``corr``.
    """
    from autodriz.solutions.base import Candidate

    own = dict(per_exposure or {})

    def transfer(candidate: Candidate) -> Candidate:
        applied = {}
        for original, copy in candidate.copies.items():
            this = own.get(Path(original).name, corr)
            applied[Path(original).name] = this
            with fits.open(copy, mode="update") as hdul:
                for hdu in hdul:
                    if hdu.name == "SCI":
                        apply_correction(hdu.header, this)
                        hdu.header["WCSNAME"] = corr.wcsname
        logger.info("grism/prism WCS: %s", corr.describe())
        for name, this in applied.items():
            if this is not corr:
                logger.info("grism/prism WCS of %s: %s", name, this.describe())
        return replace(
            candidate, wcsname=corr.wcsname, updated=True,
            source=f"{candidate.source}; then the direct images' correction ({corr.wcsname} of {corr.source_group})",
            notes=(*candidate.notes, corr.describe()),
            details={**dict(candidate.details), "wcs_transfer": asdict(corr),
                     "wcs_transfer_per_exposure": {n: asdict(c) for n, c in applied.items()}},
        )

    return transfer


def grism_hook(
    group: VisitGroup,
    imaging: Sequence[VisitGroup],
    starts: Mapping[str, float],
    outcomes: Sequence[GroupOutcome],
    before_run: Mapping[Path, Mapping[int, Mapping[str, Any]]],
) -> tuple[Any, str]:
    """The WCS hook for a grism/prism group and a sentence for the report, logged at INFO.

    ``outcomes`` are the groups run so far (the direct images run before their grism);
    ``before_run`` the SCI WCS keywords of every exposure read before the visit ran
    (:func:`snapshot_sci_wcs`). The hook is None when the grism keeps its default WCS.
    """
    direct = direct_images_for(group, imaging, starts)
    done = next((o for o in outcomes if direct is not None and o.group.root == direct.root), None)
    if direct is None or done is None:
        note = f"no direct images of {group.instrument_key} in this visit: the grism keeps its pipeline-default WCS"
    elif done.exit_code not in PRODUCT_CODES:
        note = f"the direct images ({direct.filter}) failed ({done.exit_code.name}): the grism keeps its pipeline-default WCS"
    else:
        # Read once: the group's correction and each exposure's come from the same samples.
        samples = _correction_samples(done, before_run)
        corr = _group_correction(done, samples)
        if corr is None:
            note = (f"the direct images ({direct.filter}) kept their pipeline-default WCS ({done.wcsname}): "
                    "the grism keeps its own default WCS, made the same way")
        else:
            per_exposure, pairing = _pair_corrections(group, _exposure_corrections(done, samples), before_run)
            note = f"{corr.describe()}; {pairing}"
            logger.info("%s %s: drizzled on the common grid with the direct images' WCS solution: %s",
                        group.instrument_key, group.filter, note)
            return transfer_to(corr, per_exposure), note
    logger.info("%s %s: drizzled on the common grid; %s", group.instrument_key, group.filter, note)
    return None, note


def _pair_corrections(
    group: VisitGroup, direct: Mapping[Path, WCSCorrection], before_run: Mapping[Path, Mapping[int, Mapping[str, Any]]]
) -> tuple[dict[str, WCSCorrection], str]:
    """Each grism exposure's own correction: that of the direct image (``direct``: each direct
    exposure's correction) at its pointing.

    Returns the corrections by grism file name and a sentence saying who got whose (and which
    exposures fall back to the group's correction, and why).
    """
    direct_centres = {p.name: exposure_centre(before_run[p]) for p in direct if before_run.get(p)}
    grism_paths = [p for p in group.flt_paths or group.paths if before_run.get(p)]
    pairs = pair_by_pointing({p.name: exposure_centre(before_run[p]) for p in grism_paths}, direct_centres)
    by_name = {p.name: c for p, c in direct.items()}
    own = {pair.grism: by_name[pair.direct] for pair in pairs if pair.direct is not None}
    parts = [f"{pair.grism[:9]} ← {pair.direct[:9]} ({pair.reason})" if pair.direct is not None
             else f"{pair.grism[:9]}: the group's correction ({pair.reason})" for pair in pairs]
    for part in parts:
        logger.info("grism/prism pairing: %s", part)
    return own, "per exposure: " + "; ".join(parts) if parts else "no exposure to pair"
