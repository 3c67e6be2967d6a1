"""Process exit codes of ``autodriz``.

The archive's own wrappers act on named stage codes, so every way a run can end has a name
here and one row in the README's table. Nothing but ``OK`` is returned when no product was
written.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a run of ``autodriz`` did, as its process exit status."""

    #: Products written; the chosen WCS was applied to the input exposures.
    OK = 0
    #: An unexpected internal error (a bug): see the trailer for the traceback.
    INTERNAL_ERROR = 1
    #: Bad command line, configuration file or environment variable value.
    USAGE = 2
    #: The input cannot be used: not found, not an HST exposure/association, members missing,
    #: not yet calibrated (no FLT/FLC beside a RAW), or a member fails the input check
    #: (extensions, shapes, BITPIX, EXPTIME/EXPSTART/DATE-OBS; :mod:`autodriz.validate`).
    INPUT_ERROR = 3
    #: A distortion reference file named in the headers (IDCTAB, NPOLFILE, D2IMFILE) cannot be
    #: found and the header WCS was not allowed as a fallback (``--allow-header-wcs``).
    REFERENCE_FILES_MISSING = 4
    #: DRIZCORR is OMIT for this dataset: nothing to drizzle, by request. No products.
    DRIZCORR_OMIT = 5
    #: A WCS stage (updatewcs or an alignment fit) failed in a way that left no usable WCS, or a
    #: member's WCS keywords fail the input check (missing, singular, wrong pixel scale, CTYPE/SIP
    #: inconsistent, far from the other members), before any work.
    WCS_FAILED = 6
    #: AstroDrizzle failed, wrote no product, or wrote one that does not hold every exposure it
    #: was given (NDRIZIM/D###DATA) or whose frame does not fit the inputs' footprint; or the
    #: products could not be written after the inputs were updated (none is left; the inputs
    #: carry the chosen WCS and the next run makes the products).
    DRIZZLE_FAILED = 7
    #: Drizzling worked but the chosen WCS could not be written back to the inputs; the inputs are
    #: untouched and no product is published (products must match the inputs they came from).
    UPDATE_FAILED = 8
    #: Products written with the pipeline-default WCS because no alignment candidate was
    #: eligible or passed verification, although alignment was requested. (When alignment is
    #: off by request, or grism/prism data of a visit got the direct images' correction: OK.)
    DEFAULT_ONLY = 9
    #: Another autodriz is processing the same dataset (lock file beside the inputs).
    LOCKED = 10
    #: WFPC2 data: refused, not supported (C0M/C1M pairs, ``uref$`` distortion files, per-chip
    #: PC/WF scales and photometric equalisation are not implemented). Inputs untouched.
    WFPC2_UNSUPPORTED = 11
    #: Interrupted (Ctrl-C / SIGINT); inputs are untouched unless the final update had finished.
    INTERRUPTED = 130


#: The exit codes after which products exist (the one place that knows it).
PRODUCT_CODES: frozenset[ExitCode] = frozenset({ExitCode.OK, ExitCode.DEFAULT_ONLY})
