"""The simulated header WCS: chip pointings, subarrays, distortion residual, updatewcs, a priori headerlets, truth."""

from __future__ import annotations

import contextlib
import io
import logging
import math
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from autodriz import truth as truth_mod
from autodriz.hstio import sci_extensions
from autodriz.skygeom import deproject as _deproject
from autodriz.skygeom import pa_rotation as _pa_rotation
from autodriz.skygeom import perturb_sky
from autodriz.skygeom import project as _project
from autodriz.simulate.detectors import (
    ACS_WFC,
    DETECTORS,
    Detector,
    FULL_CHIP_SHAPE,
    _ExposureInfo,
    _REF_EXTVER,
    _filter_keywords,
    _primary_header,
    _sci_header,
)
from autodriz.simulate.config import (
    SimulationConfig,
)

logger = logging.getLogger(__name__)


def _copy_reference_files(jref_dir: Path, det: Detector | None = None) -> None:
    det = det or ACS_WFC
    jref_dir.mkdir(parents=True, exist_ok=True)
    source = resources.files("autodriz") / "data" / det.ref_folder
    for name in det.reference_files.values():
        with resources.as_file(source / name) as src:
            shutil.copyfile(src, jref_dir / name)


def _idc_reference_pixels(idctab: Path, filt: str, det: Detector | None = None) -> dict[int, tuple[float, float]]:
    """XREF/YREF of the IDCTAB's forward model per chip (as stwcs selects it)."""
    det = det or ACS_WFC
    # fits.getdata, not Table.read: the IDCTAB's non-FITS unit strings ('chip') only warn.
    table = Table(fits.getdata(idctab, 1))
    out: dict[int, tuple[float, float]] = {}
    for _, chip in det.chips:
        sel = (table["DETCHIP"] == chip) & (np.char.strip(table["DIRECTION"].astype(str)) == "FORWARD")
        if "FILTER" in table.colnames:  # WFC3: one filter wheel
            exact = sel & (np.char.strip(table["FILTER"].astype(str)) == filt.upper())
        else:
            f1, f2 = _filter_keywords(filt)
            exact = sel & (np.char.strip(table["FILTER1"].astype(str)) == f1) & (
                np.char.strip(table["FILTER2"].astype(str)) == f2
            )
        rows = table[exact] if exact.any() else table[sel]
        out[chip] = (float(rows["XREF"][0]), float(rows["YREF"][0]))
    return out


def _subarray_ltv(chip_shape: tuple[int, int], ccdchip: int, full_shape: tuple[int, int] = FULL_CHIP_SHAPE) -> tuple[float, float]:
    """LTV1/LTV2 of the subarray cut from a chip: centred on the full chip, the same for both.

    Why not next to the inter-chip gap: updatewcs (stwcs 1.7 MakeWCS) evaluates the reference
    chip's frame at ``CRPIX - IDCXREF`` of *each* chip and re-centres the IDCTAB polynomial at
    ``CRPIX - LTV``, dropping the constant terms that re-centring creates. That is exact only
    when both chips share LTV1/LTV2 and sit at ``CRPIX = IDC reference pixel + LTV`` (as real
    single-chip ACS subarrays and full frames do). Subarrays at the gap (different LTV2 per
    chip) misplace WFC1 by arcminutes, so the simulator does not make them.
    """
    del ccdchip  # same cut on both chips (see above)
    ny, nx = chip_shape
    return -float((full_shape[1] - nx) // 2), -float((full_shape[0] - ny) // 2)


def _apply_sky_skew(hdul: fits.HDUList, skew: float) -> None:
    """Shear the sky mapping of every chip: (east, north) → (east + skew·north, north).

    About the reference chip's CRVAL, in its tangent plane: each chip's CD becomes M·CD and its
    CRVAL moves by M. SIP and lookup tables act before CD (pixel frame) and stay as they are.
    """
    sci = _sci_extensions(hdul)
    ref = hdul[sci[_REF_EXTVER]].header
    centre = (float(ref["CRVAL1"]), float(ref["CRVAL2"]))
    m = np.array([[1.0, skew], [0.0, 1.0]])
    for idx in sci.values():
        hdr = hdul[idx].header
        xi, eta = _project(np.array([hdr["CRVAL1"]]), np.array([hdr["CRVAL2"]]), *centre)
        ra, dec = _deproject(m[0, 0] * xi + m[0, 1] * eta, m[1, 0] * xi + m[1, 1] * eta, *centre)
        hdr["CRVAL1"], hdr["CRVAL2"] = float(ra[0]), float(dec[0])
        cd = np.array([[hdr["CD1_1"], hdr["CD1_2"]], [hdr["CD2_1"], hdr["CD2_2"]]], dtype=float)
        # CD maps pixels to intermediate (east, north) coordinates: the shear is a left product.
        new = m @ cd
        for (r, c), value in np.ndenumerate(new):
            hdr[f"CD{r + 1}_{c + 1}"] = float(value)


#: Polynomial orders of the distortion residual: 2 and 3 only, because a constant or linear
#: residual is what every WCS fit removes (shift, rotation, scale, skew) and so tests nothing.
_RESIDUAL_TERMS: tuple[tuple[int, int], ...] = tuple((p, t - p) for t in (2, 3) for p in range(t + 1))


def distortion_residual_field(
    rng: np.random.Generator, rms_mas: float, pixel_scale_arcsec: float, det: Detector | None = None
) -> dict[int, dict[str, float]]:
    """Random smooth distortion residual per chip, as SIP coefficients to add.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the random coefficients.
    rms_mas : float
        RMS length of the displacement over the full chip, mas.
    pixel_scale_arcsec : float
        Detector pixel scale (the SIP acts in pixels).

    Returns
    -------
    dict
        EXTVER → {``A_p_q``/``B_p_q``: coefficient} for the 2nd- and 3rd-order terms, in pixels
        per pixel**(p+q) about the full chip's centre (where the IDC reference pixel, and so
        CRPIX, sits), normalised so the displacement has RMS ``rms_mas`` on a full chip.
    """
    det = det or ACS_WFC
    half = (det.full_shape[1] / 2.0, det.full_shape[0] / 2.0)
    # Normalised coordinates in [-1, 1] over the full chip, for the RMS normalisation.
    gx, gy = np.meshgrid(np.linspace(-1.0, 1.0, 41), np.linspace(-1.0, 1.0, 41))
    out: dict[int, dict[str, float]] = {}
    for extver, _ in det.chips:
        ca = rng.normal(size=len(_RESIDUAL_TERMS))
        cb = rng.normal(size=len(_RESIDUAL_TERMS))
        dx = sum(c * gx**p * gy**q for c, (p, q) in zip(ca, _RESIDUAL_TERMS, strict=True))
        dy = sum(c * gx**p * gy**q for c, (p, q) in zip(cb, _RESIDUAL_TERMS, strict=True))
        rms_pix = float(np.sqrt(np.mean(dx**2 + dy**2)))
        norm = rms_mas / 1000.0 / pixel_scale_arcsec / rms_pix
        coeffs: dict[str, float] = {}
        for (p, q), a, b in zip(_RESIDUAL_TERMS, ca, cb, strict=True):
            scale = norm / (half[0] ** p * half[1] ** q)
            coeffs[f"A_{p}_{q}"] = float(a * scale)
            coeffs[f"B_{p}_{q}"] = float(b * scale)
        out[extver] = coeffs
    return out


def _apply_distortion_residual(hdul: fits.HDUList, residual: Mapping[int, Mapping[str, float]]) -> None:
    """Add the residual's SIP terms to every chip of the true WCS.

    SIP is referenced to CRPIX, which the simulator keeps at the IDC reference pixel (full-chip
    centre) in subarray coordinates, so the same coefficients describe the same detector field
    for any subarray.
    """
    for extver, idx in _sci_extensions(hdul).items():
        hdr = hdul[idx].header
        if not str(hdr.get("CTYPE1", "")).endswith("-SIP"):
            raise ValueError(f"true WCS of SCI,{extver} has no SIP to add a distortion residual to")
        for axis in ("A", "B"):
            if int(hdr.get(f"{axis}_ORDER", 0)) < 3:
                hdr[f"{axis}_ORDER"] = 3
        for key, value in residual[extver].items():
            hdr[key] = float(hdr.get(key, 0.0)) + value


# --------------------------------------------------------------------------------------------
# headers and updatewcs
# --------------------------------------------------------------------------------------------


@dataclass
class _ChipWCS:
    """Linear header WCS of one chip (what OPUS writes)."""

    crval: np.ndarray
    crpix: np.ndarray
    cd: np.ndarray

    def keywords(self) -> dict[str, Any]:
        return {
            "CTYPE1": "RA---TAN",
            "CTYPE2": "DEC--TAN",
            "CRVAL1": float(self.crval[0]),
            "CRVAL2": float(self.crval[1]),
            "CRPIX1": float(self.crpix[0]),
            "CRPIX2": float(self.crpix[1]),
            "CD1_1": float(self.cd[0, 0]),
            "CD1_2": float(self.cd[0, 1]),
            "CD2_1": float(self.cd[1, 0]),
            "CD2_2": float(self.cd[1, 1]),
            "ORIENTAT": float(math.degrees(math.atan2(self.cd[0, 1], self.cd[1, 1]))),
        }

    @classmethod
    def from_header(cls, header: Mapping[str, Any]) -> _ChipWCS:
        return cls(
            crval=np.array([header["CRVAL1"], header["CRVAL2"]], dtype=float),
            crpix=np.array([header["CRPIX1"], header["CRPIX2"]], dtype=float),
            cd=np.array(
                [[header["CD1_1"], header["CD1_2"]], [header["CD2_1"], header["CD2_2"]]], dtype=float
            ),
        )


@dataclass
class _Pointing:
    """Header pointing of one exposure: chip WCSs (by EXTVER) and PA_V3."""

    chips: dict[int, _ChipWCS]
    pa_v3: float

    def moved(self, new_ref_crval: tuple[float, float]) -> _Pointing:
        """The same layout with the reference chip's CRVAL moved (rigid tangent-plane move)."""
        old = self.chips[_REF_EXTVER].crval
        chips = {}
        for extver, chip in self.chips.items():
            xi, eta = _project(np.array([chip.crval[0]]), np.array([chip.crval[1]]), old[0], old[1])
            ra, dec = _deproject(xi, eta, *new_ref_crval)
            chips[extver] = _ChipWCS(np.array([ra[0], dec[0]]), chip.crpix.copy(), chip.cd.copy())
        return _Pointing(chips, self.pa_v3)

    def perturbed(self, rotation_arcsec: float, shift_mas: tuple[float, float]) -> _Pointing:
        """Apply the error model (see :func:`perturb_sky`) to every header position."""
        center = (float(self.chips[_REF_EXTVER].crval[0]), float(self.chips[_REF_EXTVER].crval[1]))
        rot = _pa_rotation(rotation_arcsec / 3600.0)
        chips = {}
        for extver, chip in self.chips.items():
            ra, dec = perturb_sky(
                chip.crval[0], chip.crval[1], center, rotation_arcsec=rotation_arcsec, shift_mas=shift_mas
            )
            # CD maps pixels to (east, north); rotating the sky frame is a left product.
            chips[extver] = _ChipWCS(np.array([ra[0], dec[0]]), chip.crpix.copy(), rot @ chip.cd)
        return _Pointing(chips, self.pa_v3 + rotation_arcsec / 3600.0)


def _companion_header(sci: fits.Header, extname: str, bunit: str = "ELECTRONS") -> fits.Header:
    """ERR/DQ header: identification and WCS copied from the SCI header, as calacs writes."""
    hdr = fits.Header()
    hdr["EXTNAME"] = extname
    keep = (
        "EXTVER ROOTNAME EXPNAME WCSAXES CRPIX1 CRPIX2 CRVAL1 CRVAL2 CTYPE1 CTYPE2 CD1_1 CD1_2 "
        "CD2_1 CD2_2 LTV1 LTV2 LTM1_1 LTM2_2 PA_APER VAFACTOR ORIENTAT WCSNAME RADESYS"
    ).split()
    for key in keep:
        hdr[key] = (sci[key], sci.comments[key])
    hdr.set("BUNIT", bunit if extname == "ERR" else "UNITLESS", after="EXPNAME")
    return hdr


def _wcs_only_hdulist(
    config: SimulationConfig,
    info: _ExposureInfo,
    pointing: _Pointing,
    jref_dir: Path,
) -> fits.HDUList:
    """An in-memory exposure with zero pixels, for running updatewcs on its header alone.

    The reference-file keywords are absolute paths, which stwcs resolves without ``jref`` in
    the environment, so the calling process's environment is left alone.
    """
    det = DETECTORS[config.detector]
    primary = _primary_header(config, info, pointing.pa_v3, "flt", "N/A")
    for key, name in det.reference_files.items():
        primary[key] = str((jref_dir / name).resolve())
    hdus: list[fits.hdu.base.ExtensionHDU | fits.PrimaryHDU] = [fits.PrimaryHDU(header=primary)]
    # updatewcs only needs the SCI shape (NAXISn); a broadcast zero array costs no memory
    # even for full-size chips. ERR/DQ just receive a copy of the WCS.
    zeros = np.broadcast_to(np.float32(0.0), config.chip_shape)
    for extver, ccdchip in det.chips:
        ltv = _subarray_ltv(config.chip_shape, ccdchip, det.full_shape)
        sci = _sci_header(config, info, extver, ccdchip, pointing.chips[extver], ltv, (0.0, 0.0, 0.0))
        hdus.append(fits.ImageHDU(zeros, header=sci))
        hdus.append(fits.ImageHDU(np.zeros((1, 1), np.float32), header=_companion_header(sci, "ERR")))
        hdus.append(fits.ImageHDU(np.zeros((1, 1), np.int16), header=_companion_header(sci, "DQ")))
    return fits.HDUList(hdus)


def _run_updatewcs(hdul: fits.HDUList) -> fits.HDUList:
    """Run the real ``updatewcs(use_db=False)`` on an in-memory exposure, in place."""
    from stwcs.updatewcs import updatewcs

    # stwcs print()s progress and resets its own loggers' levels: capture the former into our
    # DEBUG log and restore the latter, so that simulating leaves the caller's console and
    # logging as they were.
    stwcs_loggers = [logging.getLogger(n) for n in logging.root.manager.loggerDict if n.startswith("stwcs")]
    levels = [lg.level for lg in stwcs_loggers]
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # checkfiles=False: the HDUList has no file behind it (nothing to convert).
            updatewcs(hdul, use_db=False, checkfiles=False)
    finally:
        for lg, level in zip(stwcs_loggers, levels):
            lg.setLevel(level)
        for line in captured.getvalue().splitlines():
            logger.debug("updatewcs: %s", line)
    return hdul


@contextlib.contextmanager
def _quiet_stwcs() -> Any:
    """Silence stwcs for the duration: its print()s go to our DEBUG log, its loggers are off.

    stwcs logs every headerlet it creates at INFO/DEBUG and sets its own loggers' levels;
    the caller's console must not see that, so its loggers are disabled meanwhile and their
    level and state restored afterwards. Import stwcs before entering, so its loggers exist.
    """
    stwcs_loggers = [
        lg for n, lg in logging.root.manager.loggerDict.items()
        if n.startswith("stwcs") and isinstance(lg, logging.Logger)
    ]
    states = [(lg.level, lg.disabled) for lg in stwcs_loggers]
    captured = io.StringIO()
    try:
        for lg in stwcs_loggers:
            lg.disabled = True
        with contextlib.redirect_stdout(captured), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, (level, disabled) in zip(stwcs_loggers, states, strict=True):
            lg.setLevel(level)
            lg.disabled = disabled
        for line in captured.getvalue().splitlines():
            logger.debug("stwcs: %s", line)


def apriori_wcsname(name: str, detector: str = "ACS/WFC") -> str:
    """WCSNAME of a simulated a priori solution: ``IDC_<idctab>-<name>`` (``IDC_0461802ej-HSC30``)."""
    return f"IDC_{DETECTORS[detector].idc_root}-{name}"


def _apriori_hdulist(
    truth_hdul: fits.HDUList, wcsname: str, shift_mas: tuple[float, float], det: Detector | None = None
) -> fits.HDUList:
    """A copy of the true in-memory exposure whose SCI WCSs are shifted by ``shift_mas``.

    Every chip's CRVAL moves by the same tangent-plane shift about the reference chip's CRVAL
    (as :func:`perturb_sky` defines the error); CD, SIP and lookup tables stay those of the truth,
    i.e. the distortion model in use. Reference-file keywords are put back to ``jref$`` names,
    which is what the headerlet will record.
    """
    det = det or ACS_WFC
    hdul = fits.HDUList([h.copy() for h in truth_hdul])
    for key, name in det.reference_files.items():
        hdul[0].header[key] = f"{det.ref_folder}${name}"
    sci = _sci_extensions(hdul)
    ref = hdul[sci[_REF_EXTVER]].header
    center = (float(ref["CRVAL1"]), float(ref["CRVAL2"]))
    for idx in sci.values():
        hdr = hdul[idx].header
        ra, dec = perturb_sky(hdr["CRVAL1"], hdr["CRVAL2"], center, shift_mas=shift_mas)
        hdr["CRVAL1"] = float(ra[0])
        hdr["CRVAL2"] = float(dec[0])
        hdr["WCSNAME"] = wcsname
        # updatewcs recorded where it read the lookup tables (our temporary absolute paths);
        # a headerlet should name them as the archive does, and the bytes must not depend on
        # the output folder.
        for key, ref in (("NPOLEXT", "NPOLFILE"), ("D2IMEXT", "D2IMFILE")):
            if key in hdr and ref in det.reference_files:
                hdr[key] = f"{det.ref_folder}${det.reference_files[ref]}"
    return hdul


def _apriori_headerlet_hdu(
    shifted: fits.HDUList, rootname: str, suffix: str, name: str, wcsname: str, extver: int, date: str
) -> fits.hdu.base.NonstandardExtHDU:
    """A real stwcs headerlet of ``shifted``, wrapped as an ``HDRLET`` extension."""
    from stwcs.wcsutil import headerlet

    shifted[0].header["FILENAME"] = f"{rootname}_{suffix}.fits"
    with _quiet_stwcs():
        hlet = headerlet.create_headerlet(
            shifted,
            sciext="SCI",
            hdrname=f"{rootname}_{suffix}_{wcsname}-hlet.fits",
            wcsname=wcsname,
            author="autodriz.simulate",
            descrip=f"Simulated a priori WCS ({name}): truth + known error",
            # stwcs's decorator treats a *missing* ``logging`` keyword as "on": it would add a
            # FileHandler to its logger and write headerlet.log into the working directory.
            logging=False,
        )
        # Fixed DATE (not the wall clock): same seed, same bytes.
        hlet[0].header["DATE"] = date
        hlet[0].header["CATALOG"] = (name, "Astrometric catalog used for headerlet solution")
        hdu = headerlet.HeaderletHDU.fromheaderlet(hlet)
    hdu.header["EXTVER"] = extver
    return hdu


def _sci_extensions(hdul: fits.HDUList) -> dict[int, int]:
    """EXTVER → HDU index of the SCI extensions (the simulator's view of :func:`hstio.sci_extensions`)."""
    return {extver: index for index, extver in sci_extensions(hdul)}


def _truth_record(hdul: fits.HDUList) -> dict[str, dict[str, Any]]:
    """Per SCI extension, the keywords that rebuild the true WCS with astropy alone."""
    out: dict[str, dict[str, Any]] = {}
    for extver, idx in _sci_extensions(hdul).items():
        hdr = hdul[idx].header
        rec: dict[str, Any] = dict(truth_mod.linear_sip_header(hdr).items())
        rec["NAXIS1"] = int(hdr["NAXIS1"])
        rec["NAXIS2"] = int(hdr["NAXIS2"])
        for key in ("CCDCHIP", "LTV1", "LTV2", "WCSNAME", "IDCXREF", "IDCYREF", "VAFACTOR"):
            if key in hdr:
                rec[key] = hdr[key]
        out[str(extver)] = rec
    return out


def _full_wcs(hdul: fits.HDUList, extver: int) -> WCS:
    """WCS with SIP + NPOL (CPDIS) + D2IM lookup tables, as the truth for rendering stars."""
    return WCS(hdul[_sci_extensions(hdul)[extver]].header, fobj=hdul)


def _mosaic_centre(hdul: fits.HDUList, chip_shape: tuple[int, int]) -> tuple[float, float]:
    """Sky position halfway between the centres of the chips (the centre of a single chip)."""
    ny, nx = chip_shape
    vecs = []
    for extver in sorted(_sci_extensions(hdul)):
        ra, dec = _full_wcs(hdul, extver).all_pix2world([(nx - 1) / 2.0], [(ny - 1) / 2.0], 0)
        a, d = math.radians(float(ra[0])), math.radians(float(dec[0]))
        vecs.append(np.array([math.cos(d) * math.cos(a), math.cos(d) * math.sin(a), math.sin(d)]))
    v = np.sum(vecs, axis=0)
    return math.degrees(math.atan2(v[1], v[0])) % 360.0, math.degrees(math.asin(v[2] / np.linalg.norm(v)))
