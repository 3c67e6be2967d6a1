"""A reference catalog from a drizzled product: ``autodriz catalog PRODUCT``.

The sources of an aligned DRZ/DRC, written in the format ``--catalog`` reads
(:func:`autodriz.catalogs.read_catalog_file`), so that other filters or visits can be aligned to
a deep aligned image — what the multi-filter workflow does with TweakReg's reference image.

Columns (ECSV): ``ra``, ``dec`` (deg, ICRS, in the product's WCS), ``ra_error``, ``dec_error``
(mas, per axis), ``flux`` (the product's units, background subtracted), ``mag`` (ST magnitude
from PHOTFLAM/PHOTZPT when the product has them, else instrumental), ``snr``, ``x``, ``y``
(0-based product pixels) and ``epoch`` (decimal year: the mean of the product's EXPSTART and
EXPEND). No proper motions: the positions are those of that epoch, and the a posteriori stage
treats the catalog as a catalog without proper motions whose epoch it knows.

The position error of a source is its centroid error (FWHM / (2.355 S/N), per axis, at least the
detector's ``centroid_error_pix`` of ``config/aposteriori.toml``) combined with the uncertainty of the product's own alignment, ``RMS / sqrt(NMATCHES)`` per axis from the
fit that aligned it (``RMS_RA``/``RMS_DEC``/``NMATCHES`` in its SCI header) when known. The
catalog is never better than the frame of the product: a product drizzled with an unaligned WCS
gives a catalog in that WCS's frame (the file says so in its meta, and a warning is logged).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time
from astropy.wcs import WCS

from autodriz.errors import InputError

logger = logging.getLogger(__name__)

#: Sources below this S/N are left out by default (their centroids are too poor to align to).
DEFAULT_MIN_SNR = 5.0
#: FWHM → Gaussian sigma.
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


@dataclass(frozen=True)
class ProductCatalog:
    """Sources of one drizzled product, ready to be written as a reference catalog.

    Attributes
    ----------
    table : astropy.table.Table
        The catalog (columns in the module notes; ``meta`` says where it comes from).
    product : Path
        The DRZ/DRC it was made from.
    instrument_key : str
        ``ACS/WFC``, ``WFC3/IR`` … (detection settings used).
    epoch : float
        Decimal year of the positions.
    wcsname : str
        WCSNAME of the product (the frame of the positions).
    aligned : bool
        The product's WCS is an aligned one (an a priori or a posteriori solution, not the
        pipeline default or the raw header).
    frame_error_mas : float
        Per-axis uncertainty of the product's alignment folded into the errors (0 when unknown).
    """

    table: Table
    product: Path
    instrument_key: str
    epoch: float
    wcsname: str
    aligned: bool
    frame_error_mas: float


def instrument_key_from_header(primary: fits.Header) -> str:
    """``INSTRUME/DETECTOR`` of a product's primary header (``WFPC2`` alone), as datasets name it."""
    instrument = str(primary.get("INSTRUME", "")).strip().upper()
    if not instrument:
        raise InputError("the product's primary header has no INSTRUME: not an HST drizzled product")
    if instrument == "WFPC2":
        return "WFPC2"
    return f"{instrument}/{str(primary.get('DETECTOR', '')).strip().upper()}"


def decimal_year(mjd: float) -> float:
    """Decimal (Julian) year of an MJD."""
    return float(Time(mjd, format="mjd").jyear)


def is_aligned_wcsname(wcsname: str) -> bool:
    """True for WCSNAMEs of aligned solutions (``…-FIT_…`` a posteriori, ``…-GSC240``/``-HSC30`` a priori)."""
    name = wcsname.upper()
    return "-FIT" in name or "-GSC" in name or "-HSC" in name or "-GAIA" in name


def centroid_error_mas(fwhm_arcsec: float, snr: np.ndarray) -> np.ndarray:
    """Per-axis centroid error of a PSF of ``fwhm_arcsec`` at signal-to-noise ``snr``, mas."""
    snr = np.asarray(snr, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(snr > 0, fwhm_arcsec * _FWHM_TO_SIGMA / snr * 1000.0, np.inf)


def frame_error_mas(sci: fits.Header) -> float:
    """Per-axis uncertainty of the product's alignment, ``RMS / sqrt(NMATCHES)``; 0 when unknown."""
    try:
        rms = math.hypot(float(sci["RMS_RA"]), float(sci["RMS_DEC"])) / math.sqrt(2.0)
        n = int(sci["NMATCHES"])
    except (KeyError, TypeError, ValueError):
        return 0.0
    if not (math.isfinite(rms) and n > 0):
        return 0.0
    return rms / math.sqrt(n)


def st_magnitude(flux: np.ndarray, photflam: float | None, photzpt: float | None) -> tuple[np.ndarray, str]:
    """ST magnitudes of count rates (``-2.5 log10(flux PHOTFLAM) + PHOTZPT``), else instrumental."""
    flux = np.asarray(flux, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        inst = -2.5 * np.log10(flux)
    if photflam and photzpt is not None and photflam > 0:
        return inst - 2.5 * math.log10(photflam) + photzpt, "STMAG"
    return inst, "instrumental"


def detect_in_product(product: Path, instrument_key: str, native_scale_arcsec: float | None = None) -> Table:
    """Point sources on a drizzled product's SCI where its WHT is positive (I/O).

    Uses the detector's detection settings (``config/aposteriori.toml``) with the PSF size
    converted from native to output pixels. Returns :func:`autodriz.detect.detect_sources`'s table.
    """
    from autodriz.detect import detect_sources
    from autodriz.astrometry.config import load_aposteriori_config
    from autodriz.visit import NATIVE_SCALE_ARCSEC

    cfg = load_aposteriori_config(instrument_key)
    params = cfg.detection
    with fits.open(product) as hdul:
        sci = np.asarray(hdul["SCI"].data, dtype=float)
        wht = np.asarray(hdul["WHT"].data, dtype=float)
        scale = abs(float(hdul["SCI"].header.get("CD2_2", 0.0))) * 3600.0
    native = native_scale_arcsec or NATIVE_SCALE_ARCSEC.get(instrument_key, scale)
    ratio = native / scale if scale > 0 else 1.0
    params = replace(params, fwhm_pix=params.fwhm_pix * ratio, min_fwhm_pix=params.min_fwhm_pix * ratio,
                     stamp_radius=max(params.stamp_radius, math.ceil(params.stamp_radius * ratio)))
    table = detect_sources(sci, params, dq=(~(wht > 0)).astype(np.int16))
    table.meta["fwhm_pix"] = params.fwhm_pix
    table.meta["scale_arcsec"] = scale
    # The detector's centroid error (config/aposteriori.toml, [*.fit]) in arcsec: the floor of
    # what a star's position can be trusted to, whatever its S/N (the S/N estimate ignores the
    # correlated noise of drizzled pixels and the PSF model).
    table.meta["centroid_floor_arcsec"] = cfg.fit.centroid_error_pix * native
    return table


def catalog_from_product(
    product: str | Path, *, min_snr: float = DEFAULT_MIN_SNR, max_sources: int | None = None
) -> ProductCatalog:
    """Detect the sources of a DRZ/DRC and give them sky positions, fluxes, errors and an epoch.

    Parameters
    ----------
    product : path
        A drizzled product with ``SCI`` and ``WHT`` extensions (autodriz's or AstroDrizzle's).
    min_snr : float
        Leave out sources with a lower S/N estimate.
    max_sources : int, optional
        Keep at most this many, brightest first (default: the detector's detection limit).

    Raises
    ------
    InputError
        The file is missing, not a drizzled product, or no source is found on it.
    """
    product = Path(product)
    if not product.is_file():
        raise InputError(f"{product} does not exist")
    try:
        with fits.open(product) as hdul:
            primary = hdul[0].header.copy()
            sci = hdul["SCI"].header.copy()
            hdul["WHT"]  # noqa: B018 - a drizzled product has one; say so now, not later
    except (OSError, KeyError) as exc:
        raise InputError(f"{product} is not a drizzled product with SCI and WHT extensions ({exc})") from exc
    instrument_key = instrument_key_from_header(primary)
    try:
        start, end = float(primary["EXPSTART"]), float(primary["EXPEND"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{product}: no EXPSTART/EXPEND in the primary header, so no epoch") from exc
    epoch = decimal_year(0.5 * (start + end))
    wcsname = str(sci.get("WCSNAME", "")).strip() or "(no WCSNAME)"
    aligned = is_aligned_wcsname(wcsname)
    if not aligned:
        logger.warning(
            "%s was drizzled with WCS %s, which is not an aligned solution: the catalog is in that "
            "WCS's frame, with its absolute error", product.name, wcsname,
        )

    found = detect_in_product(product, instrument_key)
    if max_sources is not None:
        found = found[:max_sources]
    found = found[np.asarray(found["snr"], dtype=float) >= min_snr]
    if len(found) == 0:
        raise InputError(f"no source with S/N ≥ {min_snr:g} found on {product.name}")
    wcs = WCS(sci)
    x, y = np.asarray(found["x"], dtype=float), np.asarray(found["y"], dtype=float)
    ra, dec = wcs.all_pix2world(x, y, 0)
    scale = float(found.meta["scale_arcsec"])
    stat = np.hypot(centroid_error_mas(float(found.meta["fwhm_pix"]) * scale, found["snr"]),
                    float(found.meta["centroid_floor_arcsec"]) * 1000.0)
    frame = frame_error_mas(sci)
    err = np.hypot(stat, frame)
    photflam = sci.get("PHOTFLAM", primary.get("PHOTFLAM"))
    photzpt = sci.get("PHOTZPT", primary.get("PHOTZPT"))
    mag, mag_system = st_magnitude(found["flux"], photflam, photzpt)

    table = Table()
    table["ra"] = np.asarray(ra, dtype=float) % 360.0
    table["dec"] = np.asarray(dec, dtype=float)
    table["ra_error"] = err
    table["dec_error"] = err
    table["flux"] = np.asarray(found["flux"], dtype=float)
    table["mag"] = mag
    table["snr"] = np.asarray(found["snr"], dtype=float)
    table["x"] = x
    table["y"] = y
    table["epoch"] = np.full(len(table), epoch)
    for col, unit in (("ra", "deg"), ("dec", "deg"), ("ra_error", "mas"), ("dec_error", "mas"), ("x", "pix"), ("y", "pix"), ("epoch", "yr")):
        table[col].unit = unit
    table.meta.update({
        "catalog": catalog_name(product),
        "product": product.name,
        "wcsname": wcsname,
        "aligned": aligned,
        "instrument": instrument_key,
        "filter": _filter_of(primary),
        "epoch": round(epoch, 6),
        "mag_system": mag_system,
        "frame_error_mas": round(frame, 4),
        "comments": [
            f"Sources of {product.name} (autodriz catalog): positions in its WCS {wcsname} at epoch {epoch:.4f}",
            "ra_error/dec_error: per-axis centroid error (FWHM / (2.355 S/N), at least the detector's centroid "
            "error) with the product's alignment "
            "uncertainty (RMS / sqrt(NMATCHES)) in quadrature; flux in the product's units",
        ],
    })
    logger.info(
        "%d sources of %s (WCS %s, epoch %.4f): median position error %.2f mas per axis",
        len(table), product.name, wcsname, epoch, float(np.median(err)),
    )
    return ProductCatalog(table, product, instrument_key, epoch, wcsname, aligned, frame)


def _filter_of(primary: fits.Header) -> str:
    names = [str(primary.get(k, "")).strip() for k in ("FILTER", "FILTER1", "FILTER2", "FILTNAM1", "FILTNAM2")]
    return "/".join(n for n in names if n and not n.upper().startswith("CLEAR")) or "unknown"


def catalog_name(product: Path) -> str:
    """The catalog's name (into the WCSNAME of fits to it): the product's root, letters and digits.

    ``ib6o23020_drz.fits`` → ``IB6O23020``.
    """
    root = product.name.split("_", 1)[0]
    return "".join(ch for ch in root.upper() if ch.isalnum()) or "USER"


def default_output(product: Path) -> Path:
    """``<product stem>_refcat.ecsv`` beside the product."""
    return product.with_name(f"{product.name.removesuffix('.fits')}_refcat.ecsv")


def write_catalog(catalog: ProductCatalog, path: str | Path) -> Path:
    """Write the catalog as ECSV, atomically (a temporary file renamed into place).

    Raises
    ------
    InputError
        ``path`` is the product itself.
    """
    path = Path(path)
    if path.resolve() == catalog.product.resolve():
        raise InputError(f"refusing to write the catalog over its product {catalog.product}")
    tmp = path.with_name(f".{path.name}.autodriz-tmp")
    try:
        catalog.table.write(tmp, format="ascii.ecsv", overwrite=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
