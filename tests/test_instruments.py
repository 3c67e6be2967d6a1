"""The instrument registry (autodriz.instruments) and the code that reads it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from autodriz.cli import build_parser
from autodriz.cli.common import cli_settings
from autodriz.config import ENVIRONMENT_VARIABLES, SETTING_NAMES, Settings, astrodrizzle_defaults
from autodriz.errors import ConfigError, InputError, WCSStageError, WFPC2UnsupportedError
from autodriz.inputs import resolve_input
from autodriz.instruments import REGISTRY, InstrumentDetector, Registry
from autodriz.pipeline import reference_folders
from autodriz.astrometry.config import load_aposteriori_config
from autodriz.verify import load_thresholds
from test_inputs import write_exposure

#: A detector HST never had: everything autodriz needs to know about it is this one record.
TOY = InstrumentDetector(
    instrument="TOY", detector="CAM", ref_prefix="tref", pixel_scale_arcsec=0.1,
    nominal_scale_range_arcsec=(0.1, 0.1), ccdchips=(1,), chip_shape=(512, 512), psf_fwhm_arcsec=0.2,
    cr_dq_bits=4096, calibration_pipeline="caltoy", product_suffixes=("flt",),
    # Its TOML sections are ACS/WFC's until it has its own.
    config_key="ACS/WFC",
)
TOY_KEYWORDS = {"INSTRUME": "TOY", "DETECTOR": "CAM", "FILTER": "F606W", "IDCTAB": "tref$toy_idc.fits"}


def toy_exposure(path: Path, scale_arcsec: float = 0.1) -> Path:
    """A tiny calibrated TOY/CAM exposure: SCI of that pixel scale, ERR and DQ beside it."""
    write_exposure(path, **TOY_KEYWORDS)
    with fits.open(path, mode="update") as hdul:
        hdul["SCI"].header["CD1_1"] = -scale_arcsec / 3600.0
        hdul["SCI"].header["CD2_2"] = scale_arcsec / 3600.0
        hdul.append(fits.ImageHDU(np.zeros((4, 4), dtype=np.float32), name="ERR"))
        hdul.append(fits.ImageHDU(np.zeros((4, 4), dtype=np.int16), name="DQ"))
    return path


def test_registry_records_what_the_modules_used_to_hard_code():
    assert REGISTRY.keys() == ("ACS/WFC", "ACS/HRC", "ACS/SBC", "WFC3/UVIS", "WFC3/IR", "WFPC2")
    assert dict(REGISTRY.reference_prefixes()) == {"jref": ("ACS",), "iref": ("WFC3",), "uref": ("WFPC2",)}
    assert dict(REGISTRY.supported_detectors()) == {"ACS": ("WFC", "HRC", "SBC"), "WFC3": ("UVIS", "IR")}
    assert REGISTRY.is_refused("WFPC2") and not REGISTRY.is_refused("ACS")
    assert REGISTRY.find("wfpc2/pc").key == "WFPC2"  # instrument-level record matches any chip
    assert REGISTRY.get("WFC3/UVIS").ccdchips == (2, 1) and REGISTRY.get("WFC3/UVIS").has_flc
    assert not REGISTRY.get("WFC3/IR").has_flc
    assert REGISTRY.calibration_pipeline("WFC3") == "calwf3"
    assert REGISTRY.get("ACS/WFC").psf_fwhm_pix == pytest.approx(2.0)
    with pytest.raises(KeyError, match="STIS/CCD"):
        REGISTRY.get("STIS/CCD")


def test_registry_refuses_a_duplicate_and_a_malformed_record():
    with pytest.raises(ValueError, match="ACS/WFC"):
        Registry(REGISTRY.records + (REGISTRY.get("ACS/WFC"),))
    with pytest.raises(ValueError, match="lower-case"):
        dataclasses.replace(TOY, ref_prefix="TREF")
    # with_records replaces a record of the same key instead of duplicating it.
    wider = dataclasses.replace(REGISTRY.get("ACS/WFC"), psf_fwhm_arcsec=0.2)
    assert REGISTRY.with_records(wider).get("ACS/WFC").psf_fwhm_arcsec == 0.2
    assert REGISTRY.get("ACS/WFC").psf_fwhm_arcsec == 0.10  # the default registry is untouched


def test_settings_environment_and_flags_have_one_folder_per_prefix():
    prefixes = list(REGISTRY.reference_prefixes())
    assert [n for n in SETTING_NAMES if n in prefixes] == prefixes
    assert {f.name for f in dataclasses.fields(Settings)} >= set(prefixes)
    env = {name for name, _ in ENVIRONMENT_VARIABLES}
    assert all({p, f"AUTODRIZ_{p.upper()}"} <= env for p in prefixes)
    args = build_parser().parse_args(["x_flt.fits", "--uref", "/refs/wfpc2"])
    assert cli_settings(args)["uref"] == Path("/refs/wfpc2")
    settings = Settings(jref=Path("/a"), uref=Path("/c"))
    assert reference_folders(settings) == {"jref": Path("/a"), "iref": None, "uref": Path("/c")}


def test_a_toy_instrument_is_one_registry_record(tmp_path):
    toy_registry = REGISTRY.with_records(TOY)
    flt = toy_exposure(tmp_path / "toy00001q_flt.fits")

    # inputs: unknown to the default registry, accepted with the toy record.
    with pytest.raises(InputError, match="'TOY' is not supported"):
        resolve_input(flt)
    dataset = resolve_input(flt, registry=toy_registry)
    assert dataset.instrument_key == "TOY/CAM" and dataset.filters == ("F606W",)
    # validate reads the record's pixel scale: a 0.05"/px TOY file is not a TOY/CAM exposure.
    wrong = toy_exposure(tmp_path / "toy00002q_flt.fits", scale_arcsec=0.05)
    with pytest.raises(WCSStageError, match="TOY/CAM pixels are 0.1"):
        resolve_input(wrong, registry=toy_registry)

    # config: the record's config key picks the TOML sections.
    with pytest.raises(ConfigError, match="TOY/CAM"):
        astrodrizzle_defaults("TOY/CAM", 3)
    assert astrodrizzle_defaults("TOY/CAM", 3, registry=toy_registry) == astrodrizzle_defaults("ACS/WFC", 3)

    # cli: the toy's reference-file prefix is a flag.
    parser = build_parser(toy_registry)
    args = parser.parse_args([str(flt), "--tref", str(tmp_path)])
    assert cli_settings(args, toy_registry)["tref"] == tmp_path
    assert "--tref" in parser.format_help() and "TOY reference files" in parser.format_help()
    with pytest.raises(SystemExit):
        build_parser().parse_args([str(flt), "--tref", str(tmp_path)])


def test_wfpc2_is_recognised_and_refused(tmp_path):
    flt = write_exposure(tmp_path / "u40x010hm_flt.fits", INSTRUME="WFPC2")
    with pytest.raises(WFPC2UnsupportedError):
        resolve_input(flt)


def test_config_sections_follow_the_config_key():
    assert load_aposteriori_config("WFC3/UVIS").detection.fwhm_pix == pytest.approx(1.8)
    assert load_thresholds("WFC3/IR") == load_thresholds("wfc3/ir")


def test_registry_psf_agrees_with_the_detection_settings():
    """config/aposteriori.toml's per-detector fwhm_pix is the registry's PSF FWHM in pixels (±15 %)."""
    for record in REGISTRY.records:
        fwhm_pix = load_aposteriori_config(record.key).detection.fwhm_pix
        assert fwhm_pix == pytest.approx(record.psf_fwhm_pix, rel=0.15), record.key
