"""Simulate an ACS/WFC visit whose true WCS is known.

:func:`simulate_visit` writes an association of FLT (and FLC) exposures, an ASN table, a
Gaia-like reference catalog, the distortion reference files (``jref/``) and
``<asn>_truth.json``. The WCS that matters is made by the same code the pipeline uses:

1. Each exposure gets an "OPUS-like" linear header WCS for the true pointing (reference-chip
   CRVAL at the IDCTAB reference pixel, PA_V3 in the primary header, CD/ORIENTAT per chip) and
   names the real ACS/WFC reference files (``jref$0461802ej_idc.fits`` …).
2. The **truth** is what ``stwcs.updatewcs.updatewcs(use_db=False)`` makes of that unperturbed
   header (run in memory on a copy whose reference-file keywords are absolute paths, so the
   calling process's environment is never touched). Stars are rendered where that WCS, with
   SIP, NPOL and D2IM, puts them.
3. The files carry a *perturbed* header: every header position is rotated about the reference
   chip's CRVAL by ``rotation_error_arcsec`` (PA_V3, ORIENTAT and CD rotated alike) and shifted
   by ``pointing_error_mas`` (+ optional per-exposure jitter) in the tangent plane. Running
   updatewcs on the written files therefore gives truth + the injected error, which the
   simulator measures itself (``expected_default_error_mas``).

Geometry: SCI,1 is WFC2 (CCDCHIP=2), SCI,2 is WFC1 (CCDCHIP=1). Chips smaller than the full
2048x4096 are cut as subarrays centred on each chip's IDCTAB reference pixel, with the same
LTV1/LTV2 on both chips (the IDCTAB model is defined on the full chips; updatewcs, NPOL and
D2IM honour LTV only in that arrangement, see :func:`_subarray_ltv`).
"""

# The simulator is split by subject; every name (private ones too, which tests reach for) is
# re-exported so that ``from autodriz.simulate import X`` and ``simulate.X`` keep working.

from __future__ import annotations

from autodriz.skygeom import perturb_sky
from autodriz.simulate.detectors import (  # noqa: F401
    ACS_WFC,
    DETECTORS,
    Detector,
    FULL_CHIP_SHAPE,
    MDRIZTAB_NAME,
    REFERENCE_FILES,
    WFC3_IR,
    WFC3_UVIS,
    _ExposureInfo,
    _INDEF_INT,
    _PHOTOMETRY,
    _PHOTOMETRY_IR,
    _PHOTOMETRY_UVIS,
    _REF_EXTVER,
    _WHEEL2,
    _acs_wfc_primary,
    _acs_wfc_sci,
    _common_primary_keywords,
    _filter_keywords,
    _photometry,
    _primary_header,
    _sci_header,
    _template,
    _wfc3_ir_primary,
    _wfc3_ir_sci,
    _wfc3_uvis_primary,
    _wfc3_uvis_sci,
)
from autodriz.simulate.config import (  # noqa: F401
    EXACT_WORLD,
    SimulatedVisit,
    SimulationConfig,
    _GAIA_EPOCH,
    config_for_detector,
    rootnames,
)
from autodriz.simulate.wcs import (  # noqa: F401
    _ChipWCS,
    _Pointing,
    _RESIDUAL_TERMS,
    _apply_distortion_residual,
    _apply_sky_skew,
    _apriori_hdulist,
    _apriori_headerlet_hdu,
    _companion_header,
    _copy_reference_files,
    _full_wcs,
    _idc_reference_pixels,
    _mosaic_centre,
    _quiet_stwcs,
    _run_updatewcs,
    _sci_extensions,
    _subarray_ltv,
    _truth_record,
    _wcs_only_hdulist,
    apriori_wcsname,
    distortion_residual_field,
)
from autodriz.simulate.sky import (  # noqa: F401
    GAIA_LIMIT_G,
    _GAIA_DR3_ERRORS,
    _add_cosmic_rays,
    _default_dithers,
    _footprint_boxes,
    _hostile_catalog,
    _magnitudes,
    _make_galaxies,
    _make_stars,
    _psf_components,
    _random_positions,
    _render_galaxies,
    _render_stars,
    _saturate_and_bleed,
    gaia_dr3_errors,
    positions_at_epoch,
)
from autodriz.simulate.mdriztab import (  # noqa: F401
    write_mdriztab,
)
from autodriz.simulate.writer import (  # noqa: F401
    _config_record,
    _json_default,
    _offset_mas,
    simulate_visit,
)

__all__ = [
    "EXACT_WORLD",
    "ACS_WFC",
    "DETECTORS",
    "Detector",
    "FULL_CHIP_SHAPE",
    "MDRIZTAB_NAME",
    "REFERENCE_FILES",
    "WFC3_IR",
    "WFC3_UVIS",
    "SimulatedVisit",
    "SimulationConfig",
    "config_for_detector",
    "rootnames",
    "apriori_wcsname",
    "distortion_residual_field",
    "GAIA_LIMIT_G",
    "gaia_dr3_errors",
    "positions_at_epoch",
    "write_mdriztab",
    "simulate_visit",
    "perturb_sky",
]
