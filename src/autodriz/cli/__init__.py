"""The ``autodriz`` command.

``autodriz INPUT``         process one dataset (ASN table, RAW name, or one FLT/FLC)
``autodriz demo``          simulate a small visit with a known true WCS and process it
``autodriz simulate DIR``  write a synthetic visit to DIR
``autodriz batch INPUTS``  process many datasets on Dask with a resumable ledger
``autodriz visit PATHS``   every filter of a visit aligned to one frame, drizzled onto one grid
``autodriz catalog PRODUCT``  the sources of an aligned DRZ/DRC as a reference catalog for --catalog
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from autodriz import __version__
from autodriz.cli.common import add_processing_flags, check_catalog, env_table, exit_code_table, load_from_args, preflight
from autodriz.errors import AutodrizError, InputError
from autodriz.exitcodes import PRODUCT_CODES, ExitCode
from autodriz.instruments import REGISTRY, Registry

logger = logging.getLogger(__name__)

SUBCOMMANDS = ("demo", "simulate", "batch", "visit", "catalog")


def build_parser(registry: Registry = REGISTRY) -> argparse.ArgumentParser:
    """The parser for ``autodriz INPUT``; ``demo`` and ``simulate`` have their own.

    Parameters
    ----------
    registry : Registry, optional
        Instruments whose reference-folder flags (``--jref`` …) the parser has.
    """
    p = argparse.ArgumentParser(
        prog="autodriz",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Drizzle an HST dataset with the best astrometry available, like STScI's runastrodriz.\n\n"
            "INPUT is an association table (ie6d07030_asn.fits), a RAW name standing for its calibrated\n"
            "exposure (ie6d07abq_raw.fits → ie6d07abq_flt/_flc.fits), or one _flt/_flc file.\n"
            "Products (<root>_drz.fits, <root>_drc.fits from CTE-corrected FLCs), the trailer <root>.tra\n"
            "and <root>_report.json are written beside the input (or to --output-dir). The chosen WCS is\n"
            "written into the input exposures at the very end, atomically; any failure before leaves\n"
            "them byte-identical.\n\n"
            "other commands:\n"
            "  autodriz demo [-h]          simulate a small ACS/WFC visit with a known true WCS and process it\n"
            "  autodriz simulate DIR [-h]  write a synthetic visit (ASN, FLT/FLC, truth, catalog, jref/) to DIR\n"
            "  autodriz batch INPUTS [-h]  process many datasets (paths, globs, manifests) on Dask, resumably\n"
            "  autodriz visit PATHS [-h]   a multi-filter visit: each filter aligned, all drizzled onto one grid\n"
            "  autodriz catalog PRODUCT [-h]  an aligned DRZ/DRC's sources as a reference catalog (--catalog)"
        ),
        epilog=(
            "settings: packaged config/autodriz.toml < --profile NAME (or AUTODRIZ_PROFILE) < --config FILE\n"
            "(or AUTODRIZ_CONFIG) < environment < flags; autodriz --print-settings shows the result\n\n"
            f"environment variables:\n{env_table()}\n\n"
            f"exit codes:\n{exit_code_table()}"
        ),
    )
    p.add_argument("--version", action="version", version=f"autodriz {__version__}")
    p.add_argument("input", type=Path, nargs="?", help="ASN table, RAW name, or FLT/FLC file")
    p.add_argument("--print-settings", action="store_true",
                   help="print the effective settings and where each came from (default, profile, config file, "
                        "environment, flag), and stop without running anything")
    add_processing_flags(p, registry)
    return p


def _run_process(argv: Sequence[str], *, own_process: bool = False) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.input is None and not args.print_settings:
        parser.error("the following arguments are required: input")
    from autodriz.pipeline import guess_root, process

    if own_process:
        # The modules just imported live as long as this process: frozen, the collector's full
        # passes during the run skip them (~0.3 s of the main process's 0.45 s in collections,
        # full-size ACS/WFC visit). Never in a library caller's process, whose garbage it would keep.
        gc.freeze()

    settings = load_from_args(args)
    if args.print_settings:
        from autodriz.config import describe_settings

        print("\n".join(describe_settings(settings)))
        return int(ExitCode.OK)
    preflight(args.input, settings.output_dir)
    check_catalog(settings)
    trailer = (settings.output_dir or args.input.absolute().parent) / f"{guess_root(args.input)}.tra"
    if trailer.exists() and not trailer.is_file():
        raise InputError(f"the trailer {trailer} exists and is not a file; move it away")
    result = process(args.input, settings, argv=["autodriz", *argv])
    wrote_products = result.exit_code in PRODUCT_CODES
    stream = sys.stdout if wrote_products else sys.stderr
    print(f"autodriz: {result.exit_code.name} (exit {int(result.exit_code)}): {result.message}", file=stream)
    for line in result.summary:
        print(f"  candidate {line}", file=stream)
    if result.trailer:
        print(f"autodriz: trailer {result.trailer}", file=stream)
    return int(result.exit_code)



def _subcommand(name: str) -> Callable[[Sequence[str]], int]:
    """The function that runs ``autodriz NAME ARGS`` (each lives in its own module of this package)."""
    from autodriz.cli import batch, catalog, simulate, visit

    return {
        "demo": simulate.run_demo, "simulate": simulate.run_simulate, "batch": batch.run_batch,
        "visit": visit.run_visit, "catalog": catalog.run_catalog,
    }[name]


def _in_a_child_importing_main() -> bool:
    # multiprocessing (spawn and forkserver, which autodriz's children use) imports the parent's
    # main script in every child and marks the process as "inheriting" meanwhile, as its own
    # check on starting processes reads it.
    import multiprocessing

    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def console() -> NoReturn:
    """The ``autodriz`` command and ``python -m autodriz``: :func:`main` in a process of its own.

    The process ends with the command, so what it made is frozen (:func:`gc.freeze`) before the
    interpreter exits: its exit then skips the collector's passes over every object of
    astropy, scipy, matplotlib … (0.3-0.6 s of one idle core at the end of each run, 0.06 s frozen).
    """
    code = main(own_process=True)
    gc.freeze()
    sys.exit(code)


def main(argv: Sequence[str] | None = None, *, own_process: bool = False) -> int:
    """Run the ``autodriz`` command; return the process exit code.

    ``own_process``: the process exists for this command alone (:func:`console`); a library
    caller's process (the default) keeps its garbage collector as it was.

    Called while a child process of autodriz imports the calling script (a script that calls
    this without ``if __name__ == "__main__":``, which multiprocessing re-imports in every
    child), it runs nothing and returns ``USAGE`` with a message on stderr: the child goes on
    with its own work instead of starting a second run on the same files beside the first.
    """
    if _in_a_child_importing_main():
        print("autodriz: not run again in a child process importing the script that called "
              "autodriz.cli.main: put the call under 'if __name__ == \"__main__\":' "
              "(Python's multiprocessing requires it)", file=sys.stderr)
        return int(ExitCode.USAGE)
    argv = list(sys.argv[1:] if argv is None else argv)
    # This process is autodriz's own: its big arrays should not cost the kernel more than the
    # work on them (autodriz.allocator; a library caller's process is left as it is).
    from autodriz.allocator import tune_process

    tune_process()
    # Read before parsing, so that an error while parsing or loading settings honours it too.
    debug = "--debug" in argv
    try:
        if argv and argv[0] in SUBCOMMANDS:
            return _subcommand(argv[0])(argv[1:])
        return _run_process(argv, own_process=own_process)
    except AutodrizError as exc:  # raised before a run's own handling starts (e.g. bad settings)
        print(f"autodriz: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("autodriz: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:  # a bug outside a run's own handling: one line, traceback on --debug
        if debug:
            traceback.print_exc(file=sys.stderr)
        print(f"autodriz: INTERNAL_ERROR (exit {int(ExitCode.INTERNAL_ERROR)}): internal error: "
              f"{type(exc).__name__}: {exc}" + ("" if debug else " (run with --debug for the traceback)"),
              file=sys.stderr)
        return int(ExitCode.INTERNAL_ERROR)
