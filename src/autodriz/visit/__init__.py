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

Modules (each one concern; this package re-exports their public names, so
``from autodriz.visit import …`` works as it did when the visit was one module):

- :mod:`~autodriz.visit.grouping` — collect and group the exposures, built association tables;
- :mod:`~autodriz.visit.grid` — the common output grid;
- :mod:`~autodriz.visit.consistency` — the cross-filter check (pure) and its source detection;
- :mod:`~autodriz.visit.grism` — the direct images' correction measured, paired, transferred;
- :mod:`~autodriz.visit.outcome` — what the groups and the visit ended with (result types);
- :mod:`~autodriz.visit.report` — the visit report (JSON, and the page through
  :mod:`autodriz.report`'s template);
- :mod:`~autodriz.visit.run` — :func:`process_visit`.
"""

from autodriz.visit.consistency import (
    CONSISTENCY_TOLERANCE_PIX,
    MATCH_RADIUS_PIX,
    MIN_MATCHES,
    Consistency,
    consistency,
    product_sources,
)
from autodriz.visit.grid import (
    GRID_MARGIN_ARCSEC,
    GRID_MARGIN_FRACTION,
    NATIVE_SCALE_ARCSEC,
    OutputGrid,
    common_grid,
    exposure_footprints,
    write_grid_file,
)
from autodriz.visit.grism import (
    PAIR_AMBIGUITY_RATIO,
    PAIR_RADIUS_ARCSEC,
    ExposurePair,
    WCSCorrection,
    apply_correction,
    correct_sky,
    direct_images_for,
    exposure_centre,
    fit_correction,
    grism_hook,
    mean_expstart,
    measure_correction,
    measure_exposure_corrections,
    pair_by_pointing,
    snapshot_sci_wcs,
    transfer_to,
)
from autodriz.visit.grouping import (
    BUILT_BY,
    VisitGroup,
    collect_datasets,
    default_visit_root,
    filter_label,
    group_datasets,
    write_group_asn,
)
from autodriz.visit.outcome import GroupOutcome, VisitResult, worst_exit_code
from autodriz.visit.report import GroupRecord, VisitRecord, visit_banner, write_visit_html, write_visit_report
from autodriz.visit.run import process_visit

__all__ = [
    "BUILT_BY",
    "CONSISTENCY_TOLERANCE_PIX",
    "GRID_MARGIN_ARCSEC",
    "GRID_MARGIN_FRACTION",
    "MATCH_RADIUS_PIX",
    "MIN_MATCHES",
    "NATIVE_SCALE_ARCSEC",
    "PAIR_AMBIGUITY_RATIO",
    "PAIR_RADIUS_ARCSEC",
    "Consistency",
    "ExposurePair",
    "GroupRecord",
    "GroupOutcome",
    "OutputGrid",
    "VisitGroup",
    "VisitRecord",
    "VisitResult",
    "WCSCorrection",
    "apply_correction",
    "collect_datasets",
    "common_grid",
    "consistency",
    "correct_sky",
    "default_visit_root",
    "direct_images_for",
    "exposure_centre",
    "exposure_footprints",
    "filter_label",
    "fit_correction",
    "grism_hook",
    "group_datasets",
    "mean_expstart",
    "measure_correction",
    "measure_exposure_corrections",
    "pair_by_pointing",
    "process_visit",
    "product_sources",
    "snapshot_sci_wcs",
    "transfer_to",
    "visit_banner",
    "worst_exit_code",
    "write_grid_file",
    "write_group_asn",
    "write_visit_html",
    "write_visit_report",
]
