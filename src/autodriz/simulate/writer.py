""":func:`simulate_visit`: the files of one truth-known visit."""

from __future__ import annotations

import logging
import dataclasses
import json
import math
from pathlib import Path
from typing import Any
import numpy as np
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS
from autodriz import truth as truth_mod
from autodriz.asn import write_asn_table
from autodriz.skygeom import MAS_PER_RAD as _MAS_PER_RAD
from autodriz.skygeom import perturb_sky
from autodriz.skygeom import project as _project
from autodriz.simulate.detectors import (
    DETECTORS,
    MDRIZTAB_NAME,
    _ExposureInfo,
    _REF_EXTVER,
    _photometry,
    _primary_header,
    _sci_header,
)
from autodriz.simulate.config import (
    SimulatedVisit,
    SimulationConfig,
    rootnames,
)
from autodriz.simulate.wcs import (
    _ChipWCS,
    _Pointing,
    _apply_distortion_residual,
    _apply_sky_skew,
    _apriori_hdulist,
    _apriori_headerlet_hdu,
    _companion_header,
    _copy_reference_files,
    _full_wcs,
    _idc_reference_pixels,
    _mosaic_centre,
    _run_updatewcs,
    _sci_extensions,
    _subarray_ltv,
    _truth_record,
    _wcs_only_hdulist,
    apriori_wcsname,
    distortion_residual_field,
)
from autodriz.simulate.sky import (
    _add_cosmic_rays,
    _default_dithers,
    _footprint_boxes,
    _make_galaxies,
    _make_stars,
    _render_galaxies,
    _render_stars,
    _saturate_and_bleed,
    positions_at_epoch,
)
from autodriz.simulate.mdriztab import (
    write_mdriztab,
)

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# the visit
# --------------------------------------------------------------------------------------------


def _config_record(config: SimulationConfig) -> dict[str, Any]:
    rec = dataclasses.asdict(config)
    rec["catalog"] = str(config.catalog) if config.catalog is not None else None
    return rec


def simulate_visit(outdir: str | Path, config: SimulationConfig = SimulationConfig()) -> SimulatedVisit:
    """Write a simulated ACS/WFC visit with a known true WCS.

    Parameters
    ----------
    outdir : str or Path
        Folder to write into (created if missing). It receives ``<asn>_asn.fits``,
        ``<root>_flt.fits`` / ``_flc.fits``, ``<asn>_truth.json``, ``<asn>_refcat.ecsv`` and
        ``jref/`` (reference files; point ``jref`` at it with a trailing slash).
    config : SimulationConfig
        What to simulate.

    Returns
    -------
    SimulatedVisit
        Paths of the products.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    asn_lower = config.asn_id.lower()
    det = DETECTORS[config.detector]
    jref_dir = outdir / det.ref_folder
    _copy_reference_files(jref_dir, det)
    mdriztab_path: Path | None = None
    mdriztab_kw = "N/A"
    if config.write_mdriztab:
        mdriztab_path = write_mdriztab(jref_dir / MDRIZTAB_NAME)
        mdriztab_kw = f"jref${MDRIZTAB_NAME}"

    seeds = np.random.SeedSequence(config.seed).spawn(config.n_exposures + 2)
    rng_stars = np.random.default_rng(seeds[0])
    rng_jitter = np.random.default_rng(seeds[1])

    names = rootnames(config.asn_id, config.n_exposures)
    t0 = Time(f"{config.date_obs}T{config.time_obs}", format="isot", scale="utc").mjd
    # Exposures follow each other with a realistic overhead between them.
    infos_base = [(names[k], k, t0 + k * (config.exptime + 150.0) / 86400.0) for k in range(config.n_exposures)]

    # Pass 1: where does a seed pointing land? Aim the mosaic centre at (ra, dec).
    idc_ref = _idc_reference_pixels(jref_dir / det.reference_files["IDCTAB"], config.filter, det)
    scale_deg = det.pixel_scale / 3600.0
    seed_chips = {}
    for extver, ccdchip in det.chips:
        ltv = _subarray_ltv(config.chip_shape, ccdchip, det.full_shape)
        xref, yref = idc_ref[ccdchip]
        t = math.radians(config.pa_v3)
        # A rough CD (roll only): updatewcs rebuilds CD from PA_V3 and the IDCTAB anyway.
        cd = scale_deg * np.array([[-math.cos(t), math.sin(t)], [math.sin(t), math.cos(t)]])
        seed_chips[extver] = _ChipWCS(np.array([config.ra, config.dec]), np.array([xref + ltv[0], yref + ltv[1]]), cd)
    seed = _Pointing(seed_chips, config.pa_v3)
    first = _ExposureInfo(names[0], 0, infos_base[0][2], 0.0, (0.0, 0.0))
    pass1 = _run_updatewcs(_wcs_only_hdulist(config, first, seed, jref_dir))
    aim = _mosaic_centre(pass1, config.chip_shape)
    ref_ra, ref_dec = perturb_sky(
        config.ra, config.dec, (config.ra, config.dec),
        shift_mas=tuple(-v for v in _offset_mas(aim, (config.ra, config.dec))),  # type: ignore[arg-type]
    )
    # The OPUS-like layout: pass-1 linear WCS of both chips, moved to the aimed pointing.
    layout = _Pointing(
        {extver: _ChipWCS.from_header(pass1[idx].header) for extver, idx in _sci_extensions(pass1).items()},
        config.pa_v3,
    )
    layout = layout.moved((float(ref_ra[0]), float(ref_dec[0])))
    base_linear = WCS(naxis=2)
    ref_chip = layout.chips[_REF_EXTVER]
    base_linear.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    base_linear.wcs.crval = ref_chip.crval
    base_linear.wcs.crpix = ref_chip.crpix
    base_linear.wcs.cd = ref_chip.cd
    idc_scale = float(pass1[_sci_extensions(pass1)[_REF_EXTVER]].header.get("IDCSCALE", 0.05))

    dithers = config.dither_arcsec or _default_dithers(config.n_exposures, idc_scale)

    exposures: list[dict[str, Any]] = []
    truth_exposures: dict[str, Any] = {}
    default_hduls: list[fits.HDUList] = []
    per_exposure_shift: dict[str, list[float]] = {}
    per_exposure_roll: dict[str, float] = {}
    # Separate seeded streams (not spawned from ``seeds``): adding them changes no earlier draw.
    rng_roll = np.random.default_rng([config.seed, 1801])
    residual = (
        distortion_residual_field(
            np.random.default_rng([config.seed, 1802]), config.distortion_residual_mas, idc_scale, det
        )
        if config.distortion_residual_mas > 0
        else {}
    )
    for (root, k, expstart), dither in zip(infos_base, dithers, strict=True):
        epoch = float(Time(expstart, format="mjd").decimalyear)
        info = _ExposureInfo(root, k, expstart, epoch, (float(dither[0]), float(dither[1])))
        # Moving the telescope by +d (detector x/y) makes the reference pixel see the sky that
        # sat at crpix + d before.
        dpix = np.array(dither, dtype=float) / idc_scale
        cra, cdec = base_linear.wcs_pix2world([ref_chip.crpix[0] + dpix[0]], [ref_chip.crpix[1] + dpix[1]], 1)
        opus = layout.moved((float(cra[0]), float(cdec[0])))
        truth_hdul = _run_updatewcs(_wcs_only_hdulist(config, info, opus, jref_dir))
        if config.skew_error:
            _apply_sky_skew(truth_hdul, config.skew_error)
        if residual:
            _apply_distortion_residual(truth_hdul, residual)

        jitter = (
            rng_jitter.normal(0.0, config.relative_error_mas, 2) if config.relative_error_mas > 0 else np.zeros(2)
        )
        shift = (config.pointing_error_mas[0] + float(jitter[0]), config.pointing_error_mas[1] + float(jitter[1]))
        per_exposure_shift[root] = [shift[0], shift[1]]
        # Its own stream, so visits made before roll jitter existed keep their bytes.
        roll = config.rotation_error_arcsec + (
            float(rng_roll.normal(0.0, config.relative_rotation_arcsec)) if config.relative_rotation_arcsec > 0 else 0.0
        )
        per_exposure_roll[root] = roll
        header_pointing = opus.perturbed(roll, shift)
        default_hduls.append(_run_updatewcs(_wcs_only_hdulist(config, info, header_pointing, jref_dir)))

        truth_exposures[root] = {
            "flt": f"{root}_flt.fits",
            "flc": f"{root}_flc.fits" if config.write_flc else None,
            "expstart_mjd": expstart,
            "epoch": epoch,
            "dither_arcsec": list(info.dither_arcsec),
            "pa_v3_true": opus.pa_v3,
            "pa_v3_header": header_pointing.pa_v3,
            "shift_mas": [shift[0], shift[1]],
            "opus_true": {str(e): c.keywords() for e, c in opus.chips.items()},
            "sci": _truth_record(truth_hdul),
        }
        apriori = {}
        for name, east, north in config.apriori_errors_mas:
            if (name, k) in {(m[0], int(m[1])) for m in config.apriori_missing}:
                continue
            apriori[name] = _apriori_hdulist(
                truth_hdul, apriori_wcsname(name, det.key), (float(east), float(north)), det
            )
        exposures.append({"info": info, "truth": truth_hdul, "header": header_pointing, "apriori": apriori})

    truth: dict[str, Any] = {
        "format": "autodriz-simulation-truth/1",
        "asn_id": config.asn_id.upper(),
        "config": _config_record(config),
        "injected": {
            "pointing_error_mas": list(config.pointing_error_mas),
            "rotation_error_arcsec": config.rotation_error_arcsec,
            "relative_error_mas": config.relative_error_mas,
            "skew_error": config.skew_error,
            "relative_rotation_arcsec": config.relative_rotation_arcsec,
            "distortion_residual_mas": config.distortion_residual_mas,
            "shift_mas_per_exposure": per_exposure_shift,
            "rotation_arcsec_per_exposure": per_exposure_roll,
        },
        "detector": det.key,
        "reference_files": {k: f"{det.ref_folder}${v}" for k, v in det.reference_files.items()},
        "aim": {"ra": config.ra, "dec": config.dec},
        "exposures": truth_exposures,
    }
    default_error = truth_mod.visit_error(default_hduls, truth)
    truth["expected_default_error_mas"] = default_error.rms_mas
    truth["expected_default_error"] = dataclasses.asdict(default_error)
    logger.info(
        "simulated header WCS error after updatewcs: rms %.2f mas (max %.2f)",
        default_error.rms_mas, default_error.max_mas,
    )

    if config.apriori_errors_mas:
        truth["apriori"] = {}
        for name, east, north in config.apriori_errors_mas:
            having = [e for e in exposures if name in e["apriori"]]
            err = truth_mod.visit_error([e["apriori"][name] for e in having], truth) if having else None
            truth["apriori"][name] = {
                "wcsname": apriori_wcsname(name, det.key),
                "error_mas": [float(east), float(north)],
                "exposures": [e["info"].rootname for e in having],
                "missing": [e["info"].rootname for e in exposures if name not in e["apriori"]],
                "expected_error_mas": err.rms_mas if err else None,
            }
            logger.info(
                "simulated a priori solution %s: error (%.1f, %.1f) mas, rms vs truth %s mas, in %d exposure(s)",
                apriori_wcsname(name, det.key), east, north, f"{err.rms_mas:.2f}" if err else "-", len(having),
            )

    # Stars over the footprint of all exposures: one detector-aligned box per chip.
    chip_wcs = {extver: [_full_wcs(e["truth"], extver) for e in exposures] for extver, _ in det.chips}
    cd = chip_wcs[_REF_EXTVER][0].wcs.cd
    orient = math.degrees(math.atan2(cd[0, 1], cd[1, 1]))
    footprint = _footprint_boxes(chip_wcs, config.chip_shape, (config.ra, config.dec), orient, margin_arcsec=1.0)
    stars = _make_stars(config, rng_stars, footprint, (config.ra, config.dec))
    phot = _photometry(config.filter, det.key)
    flux_rate = 10.0 ** (-0.4 * (np.asarray(stars["phot_g_mean_mag"]) - phot["ZP_AB"]))
    galaxies = _make_galaxies(config, footprint)
    galaxy_rate = 10.0 ** (-0.4 * (np.asarray(galaxies["mag"]) - phot["ZP_AB"]))

    flt_paths: list[Path] = []
    flc_paths: list[Path] = []
    for exp, seed_seq in zip(exposures, seeds[2:], strict=True):
        info: _ExposureInfo = exp["info"]
        rng = np.random.default_rng(seed_seq)
        ra_t, dec_t = positions_at_epoch(stars, info.epoch)
        chips_data = []
        n_cr = 0
        for extver, ccdchip in det.chips:
            wcs = _full_wcs(exp["truth"], extver)
            x, y = wcs.all_world2pix(ra_t, dec_t, 0, tolerance=1e-6, maxiter=50, quiet=True)
            model = np.full(config.chip_shape, config.sky_electrons, dtype=float)
            ok = np.isfinite(x) & np.isfinite(y)
            _render_stars(model, x[ok], y[ok], flux_rate[ok] * config.exptime, config.psf_fwhm_pix)
            if len(galaxies):
                gx, gy = wcs.all_world2pix(galaxies["ra"], galaxies["dec"], 0, tolerance=1e-6, maxiter=50, quiet=True)
                _render_galaxies(
                    model, gx, gy, galaxy_rate * config.exptime,
                    np.asarray(galaxies["r_eff_pix"]), np.asarray(galaxies["axis_ratio"]), np.asarray(galaxies["pa_rad"]),
                )
            sci = rng.poisson(model).astype(float)
            saturated = _saturate_and_bleed(sci, config.full_well)
            sci += rng.normal(0.0, config.read_noise, config.chip_shape) if config.read_noise > 0 else 0.0
            n_cr += _add_cosmic_rays(sci, config.cosmic_ray_fraction, rng)
            err = np.sqrt(np.maximum(sci, 0.0) + config.read_noise**2)
            dq = np.where(saturated, 256, 0).astype(np.int16)
            if det.bunit.endswith("/S"):
                # WFC3/IR FLTs are count rates (the ramp fit divides by the exposure time).
                sci, err = sci / config.exptime, err / config.exptime
            chips_data.append((extver, ccdchip, sci.astype(np.float32), err.astype(np.float32), dq))
        logger.debug("%s: %d pixels hit by cosmic rays", info.rootname, n_cr)

        aim_ra, aim_dec = _mosaic_centre(exp["truth"], config.chip_shape)
        header_pointing: _Pointing = exp["header"]
        for suffix in ("flt", "flc") if config.write_flc else ("flt",):
            hdus: list[Any] = [
                fits.PrimaryHDU(header=_primary_header(config, info, header_pointing.pa_v3, suffix, mdriztab_kw))
            ]
            for extver, ccdchip, sci, err, dq in chips_data:
                ltv = _subarray_ltv(config.chip_shape, ccdchip, det.full_shape)
                chip = header_pointing.chips[extver]
                pa_aper = chip.keywords()["ORIENTAT"]
                sci_hdr = _sci_header(config, info, extver, ccdchip, chip, ltv, (aim_ra, aim_dec, pa_aper))
                sci_hdr["GOODMIN"] = float(sci.min())
                sci_hdr["GOODMAX"] = float(sci.max())
                sci_hdr["GOODMEAN"] = float(sci.mean(dtype=np.float64))
                hdus.append(fits.ImageHDU(sci, header=sci_hdr))
                hdus.append(fits.ImageHDU(err, header=_companion_header(sci_hdr, "ERR", det.bunit)))
                hdus.append(fits.ImageHDU(dq, header=_companion_header(sci_hdr, "DQ", det.bunit)))
            # A priori solutions travel as HDRLET extensions after the science extensions, as
            # in archive files.
            for extver, (name, shifted) in enumerate(exp["apriori"].items(), start=1):
                hdus.append(
                    _apriori_headerlet_hdu(
                        shifted, info.rootname, suffix, name, apriori_wcsname(name, det.key), extver,
                        Time(info.expstart, format="mjd").isot[:19],
                    )
                )
            path = outdir / f"{info.rootname}_{suffix}.fits"
            fits.HDUList(hdus).writeto(path, overwrite=True)
            (flt_paths if suffix == "flt" else flc_paths).append(path)

    asn_path = write_asn_table(
        outdir / f"{asn_lower}_asn.fits",
        config.asn_id,
        names,
        instrument=det.instrument,
        detector=det.detector,
        built_by="autodriz.simulate",
    )

    catalog_path = outdir / f"{asn_lower}_refcat.ecsv"
    columns = ["source_id", "ra", "dec", "ra_error", "dec_error", "pmra", "pmdec", "ref_epoch", "phot_g_mean_mag"]
    if "pmra_error" in stars.colnames:
        columns[7:7] = ["pmra_error", "pmdec_error"]
    refcat = stars[np.asarray(stars["in_catalog"], dtype=bool)][columns]
    refcat.meta["comments"] = [
        f"Simulated Gaia-like reference catalog for {config.asn_id.upper()} (autodriz.simulate)",
        "ra/dec at ref_epoch (J2016.0); pmra includes cos(dec); errors and proper motions in mas(/yr)",
    ]
    refcat.write(catalog_path, format="ascii.ecsv", overwrite=True)

    epoch_mid = float(np.mean([e["info"].epoch for e in exposures]))
    ra_mid, dec_mid = positions_at_epoch(stars, epoch_mid)
    truth["stars"] = {
        "epoch": epoch_mid,
        "source_id": [int(s) for s in stars["source_id"]],
        "ra": ra_mid.tolist(),
        "dec": dec_mid.tolist(),
        "mag": np.asarray(stars["phot_g_mean_mag"]).tolist(),
    }
    truth_path = outdir / f"{asn_lower}_truth.json"
    truth_path.write_text(json.dumps(truth, indent=1, default=_json_default), encoding="utf-8")

    return SimulatedVisit(
        directory=outdir,
        asn_path=asn_path,
        flt_paths=tuple(flt_paths),
        flc_paths=tuple(flc_paths),
        truth_path=truth_path,
        catalog_path=catalog_path,
        jref_dir=jref_dir,
        mdriztab_path=mdriztab_path,
    )


def _offset_mas(pos: tuple[float, float], ref: tuple[float, float]) -> tuple[float, float]:
    """Tangent-plane (east, north) offset of ``pos`` from ``ref``, mas."""
    xi, eta = _project(np.array([pos[0]]), np.array([pos[1]]), *ref)
    return float(xi[0] * _MAS_PER_RAD), float(eta[0] * _MAS_PER_RAD)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer | np.bool_):
        return obj.item()
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
