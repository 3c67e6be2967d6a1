"""Multi-filter visits: every filter aligned to one absolute frame and drizzled onto one grid.

``autodriz visit PATHS...`` takes the calibrated exposures of a visit (FLT/FLC files, folders,
several ASN tables), groups them by instrument, detector and filter, and runs the
single-association pipeline (:func:`autodriz.pipeline.process`: same candidates, same
selection, same reference catalog) once per group, with one difference: every group's final
AstroDrizzle run writes onto the same output grid, so that colours can be measured pixel by
pixel. Afterwards the sources of every imaging product are matched with those of the first
filter's product and their offsets must agree within :data:`CONSISTENCY_TOLERANCE_PIX`.

How the pieces fit:

1. :func:`collect_datasets` resolves what was named (I/O, headers only);
   :func:`group_datasets` groups the resolved exposures by ``INSTRUMENT/DETECTOR`` and filter
   (pure; ACS ``FILTER1``/``FILTER2`` with ``CLEAR*`` dropped, as :mod:`autodriz.inputs` reads
   them). A group that is exactly one association table runs from that table; any other group
   (loose FLT/FLCs, several tables of one filter) gets an association table written beside its
   exposures, marked ``ASNBUILT`` (:func:`write_group_asn`), so the pipeline runs it unchanged.
2. :func:`common_grid` (pure) makes one north-up tangent-plane grid at the chosen scale
   (default: the detector's native scale) that covers every chip of every exposure of every
   group, plus a margin for the alignment corrections still to come and for distortion that a
   linear header WCS leaves out. The grid is written to a small FITS header file and handed to
   AstroDrizzle as ``final_refimage`` together with the same values as explicit ``final_ra``,
   ``final_dec``, ``final_scale``, ``final_rot``, ``final_outnx/outny`` and
   ``final_crpix1/2``: drizzlepac then takes CRVAL, CD and NAXIS from that one header for every
   product (bit-identical), instead of rotating and rescaling each group's own default frame.
3. :func:`consistency` (pure) matches sources between two products on that grid and compares
   the median offset with the tolerance; :func:`product_sources` detects them (I/O edge).
4. :func:`process_visit` runs it all and writes ``<visit>_visit_report.json`` and
   ``<visit>_visit_report.html``; its exit code is the worst of the groups'
   (:func:`worst_exit_code`).

Grism/prism groups are drizzled on the same grid after the imaging; they get no alignment of
their own (see :func:`autodriz.pipeline._alignment_plan`).
"""

from __future__ import annotations

import html
import json
import logging
import math
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from autodriz import __version__
from autodriz.asn import write_asn_table
from autodriz.config import Settings
from autodriz.errors import InputError
from autodriz.exitcodes import PRODUCT_CODES, ExitCode
from autodriz.inputs import Dataset, Exposure, resolve_input
from autodriz.instruments import REGISTRY
from autodriz.logs import run_logging, waypoint
from autodriz.skygeom import linear_sip_header, mean_direction, tangent_arcsec, untangent_arcsec

logger = logging.getLogger(__name__)

#: Native pixel scale (arcsec) of each detector's pipeline products, the default grid scale
#: (from the instrument registry).
NATIVE_SCALE_ARCSEC: Mapping[str, float] = MappingProxyType({r.key: r.pixel_scale_arcsec for r in REGISTRY.records})

#: Sources matched between two filters' products must agree to this, in output pixels (median
#: offset), for the visit to count as consistent. A 0.1 px colour-gradient artefact is what the
#: hand reductions autodriz replaces accepted.
CONSISTENCY_TOLERANCE_PIX = 0.1

#: Matching radius between two products' sources, output pixels. Two filters aligned to the same
#: catalog agree to a few hundredths of a pixel; 1 px keeps neighbours apart.
MATCH_RADIUS_PIX = 1.0

#: Fewest matched sources for the consistency check to give a verdict.
MIN_MATCHES = 5

#: Margin around the union of the exposures' footprints: fixed part (arcsec) for the alignment
#: corrections, and a fraction of the footprint's size for distortion left out by a linear
#: header WCS (OPUS-like headers without SIP).
GRID_MARGIN_ARCSEC = 2.0
GRID_MARGIN_FRACTION = 0.03

#: ``ASNBUILT`` text of the association tables this module writes for loose exposures.
BUILT_BY = "autodriz visit (one filter group)"

_CALIBRATED_SUFFIXES = ("_flt.fits", "_flc.fits", "_c0m.fits")


# --------------------------------------------------------------------------------------------
# grouping
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VisitGroup:
    """Exposures of one instrument/detector/filter, processed as one association.

    Attributes
    ----------
    instrument_key : str
        ``INSTRUMENT/DETECTOR`` (``ACS/WFC``, ``WFC3/IR``).
    filter : str
        Filter name(s) joined by ``/`` (``F606W``; ``CLEAR*`` dropped), ``NONE`` without any.
    root : str
        Product root of the group (the association's, or ``<visit>_<filter>`` when built).
    exposures : tuple of Exposure
        The exposures, in input order.
    asn : Path or None
        The association table that holds exactly these exposures, if one was given.
    spectroscopic : bool
        Grism/prism data.
    """

    instrument_key: str
    filter: str
    root: str
    exposures: tuple[Exposure, ...]
    asn: Path | None = None
    spectroscopic: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """(instrument/detector, filter): what the visit groups by."""
        return (self.instrument_key, self.filter)

    @property
    def directory(self) -> Path:
        """Folder of the exposures (a group's exposures must share one)."""
        return self.exposures[0].paths[0].parent

    @property
    def flt_paths(self) -> tuple[Path, ...]:
        """The group's FLT (or C0M) files."""
        return tuple(e.flt for e in self.exposures if e.flt is not None)

    @property
    def paths(self) -> tuple[Path, ...]:
        """Every calibrated file of the group (FLT and FLC)."""
        return tuple(p for e in self.exposures for p in e.paths)


def filter_label(filters: Sequence[str]) -> str:
    """Group label of a filter combination: ``("F606W",)`` → ``F606W``; none → ``NONE``."""
    return "/".join(filters) if filters else "NONE"


def default_visit_root(datasets: Sequence[Dataset]) -> str:
    """``ipppss`` of the first exposure (HST: instrument, program, visit), e.g. ``ib6o23``."""
    return datasets[0].exposures[0].rootname[:6].lower()


def group_datasets(datasets: Sequence[Dataset], visit_root: str) -> list[VisitGroup]:
    """Group resolved datasets by instrument/detector/filter (pure).

    Parameters
    ----------
    datasets : sequence of Dataset
        What :func:`collect_datasets` resolved (association tables and single exposures).
    visit_root : str
        Prefix of the product roots of groups that need a built association table.

    Returns
    -------
    list of VisitGroup
        Imaging groups first, then grism/prism groups, each in order of first appearance.

    Raises
    ------
    InputError
        An association mixes filters, an exposure is named twice, or a group's exposures lie in
        different folders (an association table can only name exposures beside it).
    """
    order: list[tuple[str, str]] = []
    members: dict[tuple[str, str], list[Exposure]] = {}
    sources: dict[tuple[str, str], list[Dataset]] = {}
    seen: dict[Path, str] = {}
    for ds in datasets:
        labels = {filter_label(e.filters) for e in ds.exposures}
        if len(labels) > 1:
            raise InputError(
                f"{ds.input.name} mixes filters ({', '.join(sorted(labels))}); a visit is grouped by "
                "filter: give the exposures (or one association per filter) instead"
            )
        key = (ds.instrument_key, labels.pop())
        for exposure in ds.exposures:
            for path in exposure.paths:
                resolved = path.resolve()
                if resolved in seen:
                    raise InputError(f"{path.name} is named twice (by {seen[resolved]} and {ds.input.name})")
                seen[resolved] = ds.input.name
        if key not in members:
            order.append(key)
            members[key] = []
            sources[key] = []
        members[key].extend(ds.exposures)
        sources[key].append(ds)

    ambiguous = {f for _, f in order if sum(1 for _, g in order if g == f) > 1}
    groups = []
    for key in order:
        exposures = tuple(members[key])
        folders = {e.paths[0].parent.resolve() for e in exposures}
        if len(folders) > 1:
            raise InputError(
                f"{key[0]} {key[1]}: exposures lie in different folders ({', '.join(map(str, sorted(folders)))}); "
                "put the exposures of one filter into one folder"
            )
        only = sources[key][0] if len(sources[key]) == 1 else None
        if only is not None and only.kind == "asn":
            root, asn = only.root, only.input
        else:
            label = key[1].lower().replace("/", "_")
            if key[1] in ambiguous:  # one filter name on two detectors: name the detector too
                label = f"{key[0].split('/')[-1].lower()}_{label}"
            root, asn = f"{visit_root}_{label}", None
        spectroscopic = any(ds.is_spectroscopic for ds in sources[key])
        groups.append(VisitGroup(key[0], key[1], root, exposures, asn, spectroscopic))
    roots = [g.root for g in groups]
    if len(set(roots)) != len(roots):
        raise InputError(f"two groups would write the same products ({', '.join(roots)})")
    return [g for g in groups if not g.spectroscopic] + [g for g in groups if g.spectroscopic]


def _is_calibrated(path: Path) -> bool:
    return path.name.lower().endswith(_CALIBRATED_SUFFIXES)


def collect_datasets(paths: Sequence[str | Path]) -> list[Dataset]:
    """Resolve association tables, FLT/FLC files and folders into datasets (reads headers only).

    A folder contributes its association tables (except those this module built on an earlier
    run) and every calibrated exposure that none of them names; an FLC whose FLT sits beside it
    travels with the FLT.

    Raises
    ------
    InputError
        Nothing usable was named, or a path cannot be resolved (see
        :func:`autodriz.inputs.resolve_input`).
    """
    datasets: list[Dataset] = []
    for raw in paths:
        path = Path(raw).expanduser().absolute()
        if not path.is_dir():
            datasets.append(resolve_input(path))
            continue
        covered: set[str] = set()
        for asn in sorted(path.glob("*_asn.fits")):
            built = str(fits.getheader(asn, 0).get("ASNBUILT", "") or "")
            if built.startswith("autodriz visit"):
                logger.info("%s: skipped, it was built by an earlier autodriz visit run", asn.name)
                continue
            ds = resolve_input(asn)
            datasets.append(ds)
            covered.update(str(p.resolve()) for e in ds.exposures for p in e.paths)
        for file in sorted(p for p in path.iterdir() if p.is_file() and _is_calibrated(p)):
            if str(file.resolve()) in covered:
                continue
            if file.name.lower().endswith("_flc.fits") and file.with_name(
                file.name[: -len("_flc.fits")] + "_flt.fits"
            ).is_file():
                continue  # picked up with its FLT
            ds = resolve_input(file)
            datasets.append(ds)
            covered.update(str(p.resolve()) for e in ds.exposures for p in e.paths)
    if not datasets:
        raise InputError("no association table or calibrated exposure (FLT/FLC) found in " + ", ".join(map(str, paths)))
    return datasets


def write_group_asn(group: VisitGroup) -> Path:
    """Association table for a group that has none, written atomically beside its exposures.

    Raises
    ------
    InputError
        ``<root>_asn.fits`` exists and was not written by this module (it is never replaced).
    """
    path = group.directory / f"{group.root}_asn.fits"
    if path.exists():
        built = str(fits.getheader(path, 0).get("ASNBUILT", "") or "")
        if not built.startswith("autodriz visit"):
            raise InputError(f"{path} exists and was not built by autodriz visit; give --visit-root to choose another name")
    instrument, _, detector = group.instrument_key.partition("/")
    tmp = path.with_name(path.name + ".autodriz-tmp")
    write_asn_table(
        tmp, group.root, [e.rootname for e in group.exposures],
        instrument=instrument, detector=detector or instrument, built_by=BUILT_BY,
    )
    with fits.open(tmp, mode="update") as hdul:
        hdul[0].header["FILENAME"] = path.name
        hdul[0].header["ASN_TAB"] = path.name
    tmp.replace(path)
    logger.info("%s %s: association table %s written for %d exposure(s) (ASNBUILT)",
                group.instrument_key, group.filter, path.name, len(group.exposures))
    return path


# --------------------------------------------------------------------------------------------
# the common grid
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputGrid:
    """A north-up tangent-plane pixel grid (FITS conventions: CRPIX 1-based).

    Attributes
    ----------
    ra, dec : float
        CRVAL, degrees.
    scale_arcsec : float
        Pixel scale.
    nx, ny : int
        NAXIS1, NAXIS2 (even).
    crpix1, crpix2 : float
        Reference pixel (the centre of the grid).
    """

    ra: float
    dec: float
    scale_arcsec: float
    nx: int
    ny: int
    crpix1: float
    crpix2: float

    @property
    def cd(self) -> np.ndarray:
        """CD matrix, degrees per pixel: north up, east left."""
        s = self.scale_arcsec / 3600.0
        return np.array([[-s, 0.0], [0.0, s]])

    def wcs(self) -> WCS:
        """The grid as an astropy WCS with its array shape."""
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [self.ra, self.dec]
        w.wcs.crpix = [self.crpix1, self.crpix2]
        w.wcs.cd = self.cd
        w.wcs.radesys = "ICRS"
        w.wcs.set()
        w.array_shape = (self.ny, self.nx)
        return w

    def header(self) -> fits.Header:
        """Image header of the grid (WCS keywords; NAXIS written by the caller's HDU)."""
        return self.wcs().to_header()

    def drizzle_parameters(self, refimage: Path, pixfrac: float | None = None) -> dict[str, Any]:
        """AstroDrizzle ``final_*`` parameters that put a product on this grid.

        ``refimage`` supplies CRVAL and CD exactly; the explicit values say the same, so that no
        MDRIZTAB value (e.g. its own ``final_scale``) can rescale or rotate it.
        """
        params: dict[str, Any] = {
            "final_wcs": True,
            "final_refimage": f"{refimage}[1]",
            "final_ra": self.ra,
            "final_dec": self.dec,
            "final_scale": self.scale_arcsec,
            "final_rot": 0.0,
            "final_outnx": self.nx,
            "final_outny": self.ny,
            "final_crpix1": self.crpix1,
            "final_crpix2": self.crpix2,
        }
        if pixfrac is not None:
            params["final_pixfrac"] = float(pixfrac)
        return params

    def as_dict(self) -> dict[str, Any]:
        """Plain values for the report."""
        return {"crval": [self.ra, self.dec], "scale_arcsec": self.scale_arcsec, "naxis": [self.nx, self.ny],
                "crpix": [self.crpix1, self.crpix2], "cd": self.cd.tolist()}


def common_grid(
    footprints: Sequence[tuple[np.ndarray, np.ndarray]],
    scale_arcsec: float,
    *,
    margin_arcsec: float = GRID_MARGIN_ARCSEC,
    margin_fraction: float = GRID_MARGIN_FRACTION,
) -> OutputGrid:
    """North-up grid covering every footprint (pure).

    Parameters
    ----------
    footprints : sequence of (ra, dec) arrays
        Sky positions (degrees) on the edges of every chip to cover.
    scale_arcsec : float
        Output pixel scale.
    margin_arcsec, margin_fraction : float
        Margin on every side: ``margin_arcsec`` plus ``margin_fraction`` of the larger side of
        the footprints' bounding box.

    Returns
    -------
    OutputGrid
        Centred on the bounding box of the footprints (in the tangent plane about their mean
        direction), NAXIS1/NAXIS2 even, CRPIX at the centre.
    """
    if scale_arcsec <= 0:
        raise ValueError(f"pixel scale must be positive, got {scale_arcsec}")
    ra = np.concatenate([np.asarray(f[0], dtype=float).ravel() for f in footprints])
    dec = np.concatenate([np.asarray(f[1], dtype=float).ravel() for f in footprints])
    ok = np.isfinite(ra) & np.isfinite(dec)
    if not ok.any():
        raise ValueError("no finite footprint positions")
    ra, dec = ra[ok], dec[ok]
    ra0, dec0 = mean_direction(ra, dec)
    xi, eta = tangent_arcsec(ra, dec, ra0, dec0)
    # Centre on the bounding box, then measure the half-sizes about that centre.
    ra_c, dec_c = (float(v) for v in untangent_arcsec((xi.min() + xi.max()) / 2.0, (eta.min() + eta.max()) / 2.0, ra0, dec0))
    xi, eta = tangent_arcsec(ra, dec, ra_c, dec_c)
    margin = margin_arcsec + margin_fraction * max(np.ptp(xi), np.ptp(eta))
    half_x = (np.abs(xi).max() + margin) / scale_arcsec
    half_y = (np.abs(eta).max() + margin) / scale_arcsec
    nx, ny = 2 * math.ceil(half_x), 2 * math.ceil(half_y)
    return OutputGrid(ra_c, dec_c, float(scale_arcsec), nx, ny, nx / 2.0 + 0.5, ny / 2.0 + 0.5)


def _edge_points(nx: int, ny: int, n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0.0, 1.0, n)
    xs = np.concatenate([t * (nx - 1), np.full(n, nx - 1.0), (1 - t) * (nx - 1), np.zeros(n)])
    ys = np.concatenate([np.zeros(n), t * (ny - 1), np.full(n, ny - 1.0), (1 - t) * (ny - 1)])
    return xs, ys


def exposure_footprints(paths: Sequence[Path]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Sky positions on the edges of every SCI chip, from the files' header WCS (I/O).

    Archive FLTs carry their distortion (SIP, lookup tables) and it is used; a linear
    OPUS-like header is used as it is, which :func:`common_grid`'s margin allows for.
    """
    out = []
    for path in paths:
        with fits.open(path) as hdul:
            for hdu in hdul:
                if hdu.name != "SCI":
                    continue
                nx, ny = int(hdu.header["NAXIS1"]), int(hdu.header["NAXIS2"])
                try:
                    w = WCS(hdu.header, fobj=hdul)
                except (ValueError, KeyError, MemoryError) as exc:
                    logger.debug("%s: distortion of the header WCS not usable (%s); linear part only", path.name, exc)
                    w = WCS(hdu.header, relax=True)
                xs, ys = _edge_points(nx, ny)
                out.append(w.all_pix2world(xs, ys, 0))
    return out


def write_grid_file(grid: OutputGrid, path: Path) -> Path:
    """The grid as a FITS file AstroDrizzle can read as ``final_refimage`` (a 1×1 SCI)."""
    hdu = fits.ImageHDU(np.zeros((1, 1), dtype=np.uint8), header=grid.header(), name="SCI")
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path, overwrite=True)
    return path


# --------------------------------------------------------------------------------------------
# cross-filter consistency
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Consistency:
    """How well the sources of one product agree with those of the reference product.

    Offsets are product minus reference, in output pixels of the common grid.
    """

    reference: str
    product: str
    n_reference: int
    n_product: int
    n_matched: int
    dx_pix: float
    dy_pix: float
    offset_pix: float
    rms_pix: float
    tolerance_pix: float
    status: str
    reason: str


def consistency(
    ref_xy: np.ndarray,
    xy: np.ndarray,
    *,
    reference: str = "reference",
    product: str = "product",
    tolerance_pix: float = CONSISTENCY_TOLERANCE_PIX,
    radius_pix: float = MATCH_RADIUS_PIX,
    min_matches: int = MIN_MATCHES,
) -> Consistency:
    """Match two source lists on one grid and compare their median offset with the tolerance.

    Each source of ``xy`` is paired with its nearest reference source within ``radius_pix``
    (pairs sharing a reference source are dropped). Pairs more than 5 robust sigma (but at
    least 0.1 px) from the median are rejected before the median and RMS are taken.

    Returns
    -------
    Consistency
        ``status`` is ``pass`` (median offset ≤ tolerance), ``fail``, or ``unknown`` (fewer
        than ``min_matches`` pairs).
    """
    from scipy.spatial import cKDTree

    ref_xy = np.asarray(ref_xy, dtype=float).reshape(-1, 2)
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    nan = float("nan")

    def result(n: int, dx: float, dy: float, rms: float, status: str, reason: str) -> Consistency:
        return Consistency(reference, product, len(ref_xy), len(xy), n, dx, dy, math.hypot(dx, dy), rms,
                           tolerance_pix, status, reason)

    if len(ref_xy) == 0 or len(xy) == 0:
        return result(0, nan, nan, nan, "unknown", "no sources to match")
    dist, idx = cKDTree(ref_xy).query(xy, distance_upper_bound=radius_pix)
    hit = np.isfinite(dist)
    counts = np.bincount(idx[hit], minlength=len(ref_xy) + 1)
    hit &= counts[np.minimum(idx, len(ref_xy))] == 1
    d = xy[hit] - ref_xy[idx[hit]]
    if len(d) >= 3:
        med = np.median(d, axis=0)
        r = np.hypot(*(d - med).T)
        sigma = 1.4826 * np.median(r)
        d = d[r <= max(5.0 * sigma, 0.1)]
    if len(d) < min_matches:
        return result(len(d), nan, nan, nan, "unknown",
                      f"{len(d)} matched source(s), fewer than {min_matches}: cannot judge")
    dx, dy = (float(v) for v in np.median(d, axis=0))
    rms = float(np.sqrt(np.mean(np.sum((d - (dx, dy)) ** 2, axis=1))))
    off = math.hypot(dx, dy)
    ok = off <= tolerance_pix
    return result(
        len(d), dx, dy, rms, "pass" if ok else "fail",
        f"{len(d)} sources: median offset ({dx:+.3f}, {dy:+.3f}) px = {off:.3f} px "
        f"{'≤' if ok else '>'} {tolerance_pix} px; rms {rms:.3f} px",
    )


def product_sources(product: Path, instrument_key: str, native_scale_arcsec: float | None = None) -> np.ndarray:
    """Point sources (0-based x, y) on a drizzled product's SCI where its WHT is positive (I/O).

    Uses the detector's detection settings (``config/aposteriori.toml``) with the PSF size
    converted from native to output pixels.
    """
    from autodriz.productcatalog import detect_in_product

    table = detect_in_product(product, instrument_key, native_scale_arcsec)
    return np.column_stack([np.asarray(table["x"], float), np.asarray(table["y"], float)])


# --------------------------------------------------------------------------------------------
# grism/prism: the direct images' WCS correction, transferred
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# running a visit
# --------------------------------------------------------------------------------------------


def worst_exit_code(codes: Sequence[ExitCode]) -> ExitCode:
    """The visit's exit code: any failure (highest code) beats DEFAULT_ONLY, which beats OK."""
    failures = [c for c in codes if c not in PRODUCT_CODES]
    if failures:
        return max(failures)
    if ExitCode.DEFAULT_ONLY in codes:
        return ExitCode.DEFAULT_ONLY
    return ExitCode.OK


@dataclass(frozen=True)
class GroupOutcome:
    """One group's run."""

    group: VisitGroup
    input: Path
    exit_code: ExitCode
    message: str
    wcsname: str | None
    products: tuple[Path, ...]
    report: Path | None
    trailer: Path | None
    #: For grism/prism groups: the direct images' correction applied, or why none was.
    wcs_transfer: str = ""


@dataclass(frozen=True)
class VisitResult:
    """The outcome of a visit."""

    exit_code: ExitCode
    root: str
    grid: OutputGrid | None
    outcomes: tuple[GroupOutcome, ...] = ()
    consistency: tuple[Consistency, ...] = ()
    report: Path | None = None
    message: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)


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
                hook, transfer_note = _grism_hook(group, imaging, starts, outcomes, before_run)
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
        report = _write_visit_report(output_dir, root, grid, outcomes, checks, code, settings)
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


def _grism_hook(
    group: VisitGroup,
    imaging: Sequence[VisitGroup],
    starts: Mapping[str, float],
    outcomes: Sequence[GroupOutcome],
    before_run: Mapping[Path, Mapping[int, Mapping[str, Any]]],
) -> tuple[Any, str]:
    """The WCS hook for a grism/prism group and a sentence for the report, logged at INFO."""
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


def _write_visit_report(
    output_dir: Path,
    root: str,
    grid: OutputGrid,
    outcomes: Sequence[GroupOutcome],
    checks: Sequence[Consistency],
    code: ExitCode,
    settings: Settings,
) -> Path:
    """``<root>_visit_report.json`` and ``.html`` (combined report; per-group reports linked).

    Per group: its outcome, products, the weight-map check of each product (from the group's
    own report), the grism WCS transfer; then the grid and the cross-filter checks.
    """
    from autodriz.products import write_json_atomic
    from autodriz.report import _plain

    def weight_checks(o: GroupOutcome) -> dict[str, Any]:
        # The weight-map check of each product, as its own report recorded it.
        if o.report is None or not o.report.is_file():
            return {}
        return json.loads(o.report.read_text(encoding="utf-8")).get("qa", {})

    data = _plain({
        "schema": 1,
        "autodriz": __version__,
        "visit": root,
        "exit_code": int(code),
        "exit_name": code.name,
        "grid": grid.as_dict(),
        "groups": [
            {
                "instrument": o.group.instrument_key,
                "filter": o.group.filter,
                "root": o.group.root,
                "input": o.input,
                "asn_built": o.group.asn is None,
                "spectroscopic": o.group.spectroscopic,
                "wcs_transfer": o.wcs_transfer or None,
                "exposures": [e.rootname for e in o.group.exposures],
                "exit_code": int(o.exit_code),
                "exit_name": o.exit_code.name,
                "message": o.message,
                "wcsname": o.wcsname,
                "products": list(o.products),
                "weight_maps": weight_checks(o),
                "report": o.report,
                "trailer": o.trailer,
            }
            for o in outcomes
        ],
        "consistency": {
            "tolerance_pix": CONSISTENCY_TOLERANCE_PIX,
            "checks": [asdict(c) for c in checks],
        },
        "settings": settings.as_dict(),
    })
    path = write_json_atomic(output_dir / f"{root}_visit_report.json", data)
    _write_visit_html(data, output_dir / f"{root}_visit_report.html")
    logger.info("visit report: %s", path)
    return path


def _fmt(value: Any, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else html.escape(str(value))


def _weight_text(checks: Mapping[str, Any]) -> str:
    """``name ratio ok|FLAGGED`` per product, for the groups table."""
    parts = []
    for name, chk in checks.items():
        ratio = chk.get("ratio")
        parts.append(f"{html.escape(Path(name).name)} {'—' if ratio is None else f'{ratio:.3f}'} "
                     f"{'FLAGGED' if chk.get('flagged') else 'ok'}")
    return "<br>".join(parts) or "-"


def _report_link(report: str | None) -> str:
    if not report:
        return "-"
    name = html.escape(Path(report).name.replace(".json", ".html"), quote=True)
    return f"<a href='{name}'>report</a>"


def _write_visit_html(data: Mapping[str, Any], path: Path) -> Path:
    esc = html.escape
    g = data["grid"]
    group_rows = "".join(
        f"<tr><td>{esc(x['instrument'])}</td><td>{esc(x['filter'])}</td><td>{esc(x['root'])}</td>"
        f"<td>{len(x['exposures'])}</td><td>{esc(x['exit_name'])}</td><td>{esc(x['wcsname'] or '-')}</td>"
        f"<td>{', '.join(esc(Path(p).name) for p in x['products'])}</td><td>{_weight_text(x['weight_maps'])}</td>"
        f"<td>{_report_link(x['report'])}</td></tr>"
        for x in data["groups"]
    )
    grism_rows = "".join(
        f"<li>{esc(x['instrument'])} {esc(x['filter'])} ({esc(x['root'])}): drizzled on the common grid; "
        f"{esc(x['wcs_transfer'] or '')}</li>"
        for x in data["groups"] if x["spectroscopic"]
    )
    check_rows = "".join(
        f"<tr class='{esc(c['status'])}'><td>{esc(c['product'])}</td><td>{esc(c['reference'])}</td><td>{c['n_matched']}</td>"
        f"<td>{_fmt(c['dx_pix'])}</td><td>{_fmt(c['dy_pix'])}</td><td>{_fmt(c['offset_pix'])}</td>"
        f"<td>{_fmt(c['rms_pix'])}</td><td>{esc(c['status'])}</td></tr>"
        for c in data["consistency"]["checks"]
    ) or "<tr><td colspan='8'>fewer than two imaging products: nothing to compare</td></tr>"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>autodriz visit {esc(data['visit'])}</title>
<style>body {{ font-family: sans-serif; margin: 2em; }} table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
td, th {{ border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; }} tr.fail {{ background: #fdd; }}
tr.pass {{ background: #dfd; }}</style></head><body>
<h1>autodriz visit: {esc(data['visit'])}</h1>
<p>Exit: {esc(data['exit_name'])} ({data['exit_code']}); autodriz {esc(data['autodriz'])}.</p>
<h2>Common grid</h2><p id="grid">north up, {g['scale_arcsec']}"/px, {g['naxis'][0]} × {g['naxis'][1]} px,
CRVAL {g['crval'][0]:.8f} {g['crval'][1]:.8f}, CRPIX {g['crpix'][0]} {g['crpix'][1]}</p>
<h2>Groups</h2><table id="groups"><tr><th>instrument</th><th>filter</th><th>root</th><th>exposures</th>
<th>exit</th><th>WCSNAME</th><th>products</th><th>weight maps (std/mean)</th><th>report</th></tr>{group_rows}</table>
{'<h2>Grism/prism</h2><ul id="grism">' + grism_rows + '</ul>' if grism_rows else ''}
<h2>Cross-filter consistency</h2>
<p>Sources matched between each product and the first filter's; the median offset must be ≤
{data['consistency']['tolerance_pix']} px.</p>
<table id="consistency"><tr><th>product</th><th>reference</th><th>matched</th><th>dx (px)</th><th>dy (px)</th>
<th>offset (px)</th><th>rms (px)</th><th>verdict</th></tr>{check_rows}</table>
</body></html>
"""
    tmp = path.with_name(path.name + ".autodriz-tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
