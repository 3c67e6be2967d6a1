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
import errno
import logging
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path

from autodriz import __version__
from autodriz.errors import AutodrizError, ConfigError, InputError
from autodriz.exitcodes import PRODUCT_CODES, ExitCode
from autodriz.instruments import REGISTRY, Registry

logger = logging.getLogger(__name__)

SUBCOMMANDS = ("demo", "simulate", "batch", "visit", "catalog")
DEMO_MARKER = ".autodriz-demo"


def _exit_code_table() -> str:
    return "\n".join(f"  {int(c):>3}  {c.name}" for c in ExitCode)


def _env_table() -> str:
    from autodriz.config import ENVIRONMENT_VARIABLES

    return "\n".join(f"  {name:<32} {desc}" for name, desc in ENVIRONMENT_VARIABLES)


def _add_reference_folder_flags(g: argparse._ArgumentGroup, registry: Registry) -> None:
    """One ``--<prefix> DIR`` per reference-file prefix of the instrument registry."""
    for prefix, instruments in registry.reference_prefixes().items():
        names = "/".join(instruments)
        refused = [i for i in instruments if registry.is_refused(i)]
        note = f"; {'/'.join(refused)} data are refused" if refused else ""
        g.add_argument(f"--{prefix}", type=Path,
                       help=f"folder of {names} reference files (what {prefix}$ in the headers means{note})")


def _add_processing_flags(p: argparse.ArgumentParser, registry: Registry = REGISTRY) -> None:
    g = p.add_argument_group("where things are")
    g.add_argument("-o", "--output-dir", type=Path, help="write products, trailer and report here (default: beside the input)")
    g.add_argument("--config", type=Path, help="TOML file of settings (overrides the packaged defaults and the profile; env and flags override it)")
    g.add_argument("--profile", metavar="NAME",
                   help="settings profile: laptop (default: the packaged defaults) or archive (as archive operations run: "
                        "astrometry database on, strict services …); overrides AUTODRIZ_PROFILE")
    _add_reference_folder_flags(g, registry)
    g.add_argument("--catalog", type=Path, help="reference catalog file or folder for a posteriori alignment")
    g.add_argument("--cache-dir", type=Path, help="cache for downloaded catalogs and solutions")
    g.add_argument("--headerlet-store", type=Path, help="folder of <rootname>_hlet.fits a priori solutions")

    g = p.add_argument_group("what to do")
    g.add_argument("--apriori", dest="apply_apriori", action=argparse.BooleanOptionalAction, default=None,
                   help="try a priori solutions (headerlets); overrides ASTROMETRY_APPLY_APRIORI")
    g.add_argument("--aposteriori", dest="compute_aposteriori", action=argparse.BooleanOptionalAction, default=None,
                   help="fit a posteriori solutions to reference catalogs; overrides ASTROMETRY_COMPUTE_APOSTERIORI")
    g.add_argument("--verify", dest="verify", action=argparse.BooleanOptionalAction, default=None,
                   help="check alignment candidates with drizzled images (focus, similarity) before one may win")
    g.add_argument("--max-fit-rms", dest="max_fit_rms_mas", type=float, metavar="MAS",
                   help="a posteriori fits with a larger RMS never win; the best a priori does (default 100)")
    g.add_argument("--astrometry-db", dest="use_astrometry_db", action=argparse.BooleanOptionalAction, default=None,
                   help="ask the astrometry database service for a priori solutions not found in the files "
                        "or the headerlet store (default off)")
    g.add_argument("--astrometry-db-url", dest="astrometry_db_url", metavar="URL",
                   help="base URL of the astrometry database service")
    g.add_argument("--allow-header-wcs", action="store_const", const=True, default=None,
                   help="if distortion reference files (IDCTAB …) are missing, drizzle with the header WCS "
                        "instead of stopping with exit code 4")
    g.add_argument("--keep-workdirs", action="store_const", const=True, default=None,
                   help="keep the per-candidate working folders (<root>_default/ …)")
    g.add_argument("--offline", action="store_const", const=True, default=None,
                   help="never contact network services")
    g.add_argument("--strict-services", action="store_const", const=True, default=None,
                   help="an unreachable network service is an error instead of a warning")
    g.add_argument("--service-timeout", type=float, help="seconds to wait for a network service (default 10)")
    g.add_argument("--catalog-service", choices=("vizier", "mast"), type=str.lower,
                   help="network service for reference catalogs: vizier (default) or mast (MAST's catalog web "
                        "service, epoch-propagated, as the HST pipeline asks it)")
    g.add_argument("--drizzle-timeout", type=float, help="seconds allowed for one AstroDrizzle/updatewcs run")
    g.add_argument("--num-cores", type=int,
                   help="cores (default 1); with 2 or more the DRZ and DRC are drizzled side by side")

    g = p.add_argument_group("output")
    g.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="console log level (trailer always has DEBUG)")
    g.add_argument("-q", "--quiet", action="store_true", help="console shows warnings and errors only")
    g.add_argument("--debug", action="store_true",
                   help="console shows DEBUG lines and the traceback of an unexpected error (a bug)")


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
            f"environment variables:\n{_env_table()}\n\n"
            f"exit codes:\n{_exit_code_table()}"
        ),
    )
    p.add_argument("--version", action="version", version=f"autodriz {__version__}")
    p.add_argument("input", type=Path, nargs="?", help="ASN table, RAW name, or FLT/FLC file")
    p.add_argument("--print-settings", action="store_true",
                   help="print the effective settings and where each came from (default, profile, config file, "
                        "environment, flag), and stop without running anything")
    _add_processing_flags(p, registry)
    return p


def _cli_settings(args: argparse.Namespace, registry: Registry = REGISTRY) -> dict:
    from autodriz.config import SETTING_NAMES

    # Every setting has a flag whose dest is its name (config.SETTING_FLAGS; test_cli checks it);
    # a registry's reference-file prefixes are flags too (one registry record adds one).
    keys = dict.fromkeys([*SETTING_NAMES, *registry.reference_prefixes()])
    cli = {k: getattr(args, k, None) for k in keys}
    cli["profile"] = getattr(args, "profile", None)
    if getattr(args, "quiet", False):
        cli["log_level"] = "WARNING"
    if getattr(args, "debug", False):
        cli["log_level"] = "DEBUG"
    return cli


def _load(args: argparse.Namespace, **overrides):
    from autodriz.config import load_settings

    cli = _cli_settings(args)
    cli.update({k: v for k, v in overrides.items() if cli.get(k) is None})
    return load_settings(cli=cli, config_file=args.config)


def _probe_writable(folder: Path) -> OSError | None:
    """The error that creating a file in ``folder`` raises, or None if it can be written.

    A real write, because ``os.access`` says yes to root on a read-only mount and no to a user
    whose ACLs would allow it.
    """
    try:
        fd, name = tempfile.mkstemp(prefix=".autodriz-probe-", dir=folder)
    except OSError as exc:
        return exc
    os.close(fd)
    os.unlink(name)
    return None


def _preflight(input_path: Path, output_dir: Path | None) -> None:
    """Refuse, before a trailer or lock is written, places autodriz cannot write.

    The trailer and lock go beside the input (or into --output-dir) and the chosen WCS is
    written back into the exposures beside the input, so both folders must be writable; finding
    out after the drizzling is too late, and finding out while opening the trailer ends in a
    traceback.
    """
    if output_dir is not None and output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"--output-dir {output_dir} exists and is not a folder")
    if not input_path.is_file():
        return  # resolution says what is wrong with it, in the trailer
    folder = input_path.absolute().parent
    exc = _probe_writable(folder)
    if exc is not None:
        raise InputError(
            f"dataset folder {folder} is not writable ({exc.strerror or exc}; "
            f"{'read-only file system' if exc.errno == errno.EROFS else 'permission denied' if exc.errno in (errno.EACCES, errno.EPERM) else 'cannot create files'}): "
            "autodriz writes the lock and the chosen WCS into the exposures there; copy the dataset "
            "to a writable folder"
        )
    if output_dir is not None and output_dir.is_dir():
        exc = _probe_writable(output_dir)
        if exc is not None:
            raise ConfigError(f"--output-dir {output_dir} is not writable ({exc.strerror or exc})")


def _check_catalog(settings) -> None:
    """A catalog file the user named must be readable: say so now, not after the drizzling.

    Without this a garbage ``--catalog`` only shows as a warning and a default-WCS run (exit 9).
    """
    path = settings.catalog
    if not settings.compute_aposteriori or path is None or not Path(path).is_file():
        return
    from autodriz.catalogs import read_catalog_file

    try:
        read_catalog_file(path)
    except AutodrizError:
        raise
    except Exception as exc:  # astropy's readers raise many types for a file that is not a table
        raise ConfigError(f"--catalog {path} is not a readable reference catalog ({type(exc).__name__}: {exc})") from exc


def _run_process(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.input is None and not args.print_settings:
        parser.error("the following arguments are required: input")
    from autodriz.pipeline import guess_root, process

    settings = _load(args)
    if args.print_settings:
        from autodriz.config import describe_settings

        print("\n".join(describe_settings(settings)))
        return int(ExitCode.OK)
    _preflight(args.input, settings.output_dir)
    _check_catalog(settings)
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


#: Per-exposure errors of ``autodriz simulate``/``demo``: exposures within a visit differ by a few
#: to tens of mas (the real ib6o23 WFC3/IR exposures in shared/data by up to ~80 mas).
DEMO_RELATIVE_ERROR_MAS = 10.0
DEMO_RELATIVE_ROTATION_ARCSEC = 0.5
DEMO_DISTORTION_RESIDUAL_MAS = 5.0


def _simulate_parser(prog: str, default_dir: Path | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Write a synthetic HST visit with a known true WCS.")
    if default_dir is None:
        p.add_argument("directory", type=Path, help="folder to write the visit into (created)")
    p.add_argument("--seed", type=int, default=1, help="random seed (same seed, same pixels)")
    p.add_argument("--exposures", type=int, default=2, help="number of exposures (default 2)")
    p.add_argument("--chip-shape", type=int, nargs=2, metavar=("NY", "NX"), default=(256, 512),
                   help="pixels per chip (default 256 512, a subarray centred on each chip; 2048 4096 is a full "
                        "ACS/WFC chip, 2051 4096 a full WFC3/UVIS chip; WFC3/IR defaults to its full 1014 1014)")
    p.add_argument("--pointing-error", type=float, nargs=2, metavar=("EAST_MAS", "NORTH_MAS"), default=(150.0, -100.0),
                   help="error of the header WCS, in mas on the sky (default 150 -100)")
    p.add_argument("--rotation-error", type=float, default=0.0, help="roll error of the header WCS in arcsec")
    # Realistic by default: exposures of one visit do not share one pointing error exactly
    # (guide-star re-acquisition), and no distortion model is exact.
    p.add_argument("--relative-error", type=float, default=DEMO_RELATIVE_ERROR_MAS, metavar="MAS",
                   help="RMS per-axis pointing error of each exposure on top of the common one, mas "
                        f"(default {DEMO_RELATIVE_ERROR_MAS:g}; 0 = all exposures share one error)")
    p.add_argument("--relative-rotation", type=float, default=DEMO_RELATIVE_ROTATION_ARCSEC, metavar="ARCSEC",
                   help=f"RMS roll error of each exposure, arcsec (default {DEMO_RELATIVE_ROTATION_ARCSEC:g})")
    p.add_argument("--distortion-residual", type=float, default=DEMO_DISTORTION_RESIDUAL_MAS, metavar="MAS",
                   help="RMS over a full chip of the true distortion's departure from the reference model, mas "
                        f"(default {DEMO_DISTORTION_RESIDUAL_MAS:g}: the ACS/WFC solution's published accuracy; "
                        "a centred subarray sees little of it)")
    p.add_argument("--stars", type=int, default=200, help="number of synthetic stars")
    from autodriz.simulate import DETECTORS

    p.add_argument("--detector", choices=tuple(DETECTORS), default="ACS/WFC",
                   help="ACS/WFC (default; two chips, FLT+FLC), WFC3/UVIS (two chips, FLT+FLC, F555W, the "
                        "reconstructed IDCTAB 2731450pi without NPOL/D2IM) or WFC3/IR (one 1014x1014 chip, FLT in "
                        "e-/s, F140W, the reconstructed IDCTAB w3m18525i; --chip-shape defaults to the full frame)")
    return p


def _simulation_config(args: argparse.Namespace):
    from autodriz.simulate import config_for_detector

    record = REGISTRY.get(args.detector)
    # --chip-shape's default is a two-chip detector's centred subarray; a one-chip detector
    # (WFC3/IR) takes its full frame unless told.
    full_frame = len(record.ccdchips) == 1 and tuple(args.chip_shape) == (256, 512)
    chip_shape = record.chip_shape if full_frame else tuple(args.chip_shape)
    return config_for_detector(
        args.detector,
        n_exposures=args.exposures,
        chip_shape=chip_shape,
        pointing_error_mas=tuple(args.pointing_error),
        rotation_error_arcsec=args.rotation_error,
        relative_error_mas=args.relative_error,
        relative_rotation_arcsec=args.relative_rotation,
        distortion_residual_mas=args.distortion_residual,
        # The demo's catalog stays exact (every star, exact proper motions), as before the
        # simulator's defaults became Gaia DR3-like: with them the demo measured 5.0 mas rms
        # instead of ~0.5 (proper-motion errors over the 11 years to the catalog epoch).
        gaia_dr3_errors=False,
        no_pm_fraction=0.0,
        n_stars=args.stars,
        seed=args.seed,
    )


def _run_simulate(argv: Sequence[str]) -> int:
    args = _simulate_parser("autodriz simulate", None).parse_args(argv)
    from autodriz.simulate import simulate_visit

    visit = simulate_visit(args.directory, _simulation_config(args))
    print(f"visit written to {visit.directory}")
    print(f"  association: {visit.asn_path.name}")
    print(f"  exposures:   {', '.join(p.name for p in (*visit.flt_paths, *visit.flc_paths))}")
    print(f"  truth:       {visit.truth_path.name}; reference catalog: {visit.catalog_path.name}")
    print(f"  process it:  autodriz {visit.asn_path} --{visit.jref_dir.name} {visit.jref_dir} --catalog {visit.catalog_path}")
    return 0


def _run_demo(argv: Sequence[str]) -> int:
    p = _simulate_parser("autodriz demo", Path("autodriz-demo"))
    p.description = (
        "Simulate a small ACS/WFC visit with a known true WCS and a known pointing error, process it, "
        "and say how far the chosen WCS is from the truth."
    )
    p.add_argument("-o", "--output-dir", type=Path, default=Path("autodriz-demo"), help="demo folder (default ./autodriz-demo)")
    _add_processing_flags_demo(p)
    args = p.parse_args(argv)
    from autodriz.config import load_settings
    from autodriz.pipeline import process
    from autodriz.simulate import simulate_visit
    from autodriz.truth import load_truth, visit_error

    demo_dir = args.output_dir.resolve()
    if demo_dir.exists():
        if not (demo_dir / DEMO_MARKER).exists() and any(demo_dir.iterdir()):
            print(f"autodriz demo: {demo_dir} exists and is not an autodriz demo folder; choose another --output-dir", file=sys.stderr)
            return int(ExitCode.USAGE)
        shutil.rmtree(demo_dir)
    demo_dir.mkdir(parents=True)
    (demo_dir / DEMO_MARKER).write_text("made by autodriz demo; safe to delete\n")
    print(f"autodriz demo: simulating an {args.detector} visit in {demo_dir} …")
    visit = simulate_visit(demo_dir, _simulation_config(args))
    settings = load_settings(
        cli={visit.jref_dir.name: visit.jref_dir, "catalog": visit.catalog_path, "log_level": "WARNING" if args.quiet else None},
        config_file=args.config,
    )
    result = process(visit.asn_path, settings, argv=["autodriz", "demo", *argv])
    print(f"autodriz demo: {result.exit_code.name} (exit {int(result.exit_code)}): {result.message}")
    for line in result.summary:
        print(f"  candidate {line}")
    if result.exit_code not in PRODUCT_CODES:
        return int(result.exit_code)
    truth = load_truth(visit.truth_path)
    err = visit_error(list(visit.flt_paths), truth)
    print(f"  products:     {', '.join(str(p) for p in result.products)}")
    print(f"  trailer:      {result.trailer}")
    print(f"  report:       {result.report}")
    print(f"  chosen WCS:   {result.wcsname}")
    print(
        f"  error vs truth: {err.rms_mas:.1f} mas rms, {err.max_mas:.1f} mas max "
        f"(mean offset east {err.mean_dx_mas:+.1f}, north {err.mean_dy_mas:+.1f} mas; "
        f"injected pointing error {args.pointing_error[0]:+.0f}, {args.pointing_error[1]:+.0f} mas)"
    )
    return int(result.exit_code)


def _batch_parser() -> argparse.ArgumentParser:
    from autodriz.batch import add_batch_arguments, batch_exit_table

    p = argparse.ArgumentParser(
        prog="autodriz batch",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Process many datasets with the same single-dataset function as `autodriz INPUT`, each in its\n"
            "own process, on Dask distributed (a local cluster, or --scheduler ADDRESS). A SQLite ledger\n"
            "records every dataset's status, so running the same command again resumes: done and skipped\n"
            "datasets are not run again, failed ones only with --retry-failed."
        ),
        epilog=(
            "ledger statuses: pending, running, done (exit 0), skipped (exit 5, DRIZCORR=OMIT), failed (anything\n"
            "else, a crash or the --timeout)\n\n"
            f"exit codes of autodriz batch:\n{batch_exit_table()}"
        ),
    )
    add_batch_arguments(p)
    _add_processing_flags(p)
    return p


def _run_batch(argv: Sequence[str]) -> int:
    args = _batch_parser().parse_args(argv)
    from autodriz.batch import run_batch_command

    return run_batch_command(args, _cli_settings(args), ["autodriz", "batch", *argv])


def _visit_parser() -> argparse.ArgumentParser:
    from autodriz.visit import CONSISTENCY_TOLERANCE_PIX, NATIVE_SCALE_ARCSEC

    scales = ", ".join(f"{k} {v}" for k, v in NATIVE_SCALE_ARCSEC.items())
    p = argparse.ArgumentParser(
        prog="autodriz visit",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Process a multi-filter visit: group the calibrated exposures by instrument/detector/filter\n"
            "(ACS: FILTER1/FILTER2, whichever is not CLEAR), run the single-dataset pipeline on each group\n"
            "(same candidates, same selection, one reference catalog for all), and drizzle every filter\n"
            "onto one north-up grid that covers them all, so that colours can be measured pixel by pixel.\n\n"
            "PATHS are ASN tables, FLT/FLC files and folders (a folder gives its ASN tables and the\n"
            "exposures none of them names). A group that is exactly one ASN table runs from it; other groups\n"
            "get an ASN table <visit>_<filter>_asn.fits written beside their exposures (marked ASNBUILT).\n"
            "Grism/prism groups are drizzled on the same grid without alignment of their own.\n\n"
            "Afterwards sources are matched between each filter's product and the first filter's; their\n"
            f"median offset must be <= {CONSISTENCY_TOLERANCE_PIX} px. Products: one <group>_drz/_drc.fits per\n"
            "filter (with its own trailer and report), <visit>_visit_report.json/.html and <visit>_visit.tra."
        ),
        epilog=(
            f"native scales (arcsec/px, the default --final-scale): {scales}\n\n"
            "exit code: the worst of the groups' (a failure beats 9 DEFAULT_ONLY, which beats 0 OK);\n"
            "the codes are those of `autodriz INPUT` (see autodriz --help)."
        ),
    )
    p.add_argument("paths", nargs="+", type=Path, help="ASN tables, FLT/FLC files or folders of one visit")
    g = p.add_argument_group("the common grid")
    g.add_argument("--visit-root", help="root of the visit report and of built ASN tables (default: ipppss of the first exposure)")
    g.add_argument("--final-scale", type=float, metavar="ARCSEC",
                   help="output pixel scale (default: the first group's native scale)")
    g.add_argument("--pixfrac", type=float, help="final_pixfrac of every product (default: the MDRIZTAB's)")
    g.add_argument("--wht-type", choices=("EXP", "IVM", "ERR"), type=str.upper,
                   help="final_wht_type of every product (default: the MDRIZTAB's, EXP)")
    _add_processing_flags(p)
    return p


def _run_visit(argv: Sequence[str]) -> int:
    args = _visit_parser().parse_args(argv)
    if args.final_scale is not None and not args.final_scale > 0:
        raise ConfigError(f"--final-scale must be > 0, got {args.final_scale}")
    if args.pixfrac is not None and not 0 < args.pixfrac <= 1:
        raise ConfigError(f"--pixfrac must be in (0, 1], got {args.pixfrac}")
    from autodriz.visit import process_visit

    settings = _load(args)
    for path in args.paths:
        _preflight(path, settings.output_dir)
        if path.is_dir() and (exc := _probe_writable(path)) is not None:
            # Built ASN tables, locks and the chosen WCS are written there.
            raise InputError(f"visit folder {path} is not writable ({exc.strerror or exc}); copy the visit to a "
                             "writable folder")
    _check_catalog(settings)
    result = process_visit(
        args.paths, settings, visit_root=args.visit_root, final_scale=args.final_scale, pixfrac=args.pixfrac,
        final_wht_type=args.wht_type, argv=["autodriz", "visit", *argv],
    )
    stream = sys.stdout if result.exit_code in PRODUCT_CODES else sys.stderr
    print(f"autodriz visit: {result.exit_code.name} (exit {int(result.exit_code)}): {result.message}", file=stream)
    for o in result.outcomes:
        print(f"  {o.group.instrument_key} {o.group.filter}: {o.exit_code.name} {o.wcsname or '-'} "
              f"{', '.join(str(p) for p in o.products) or '(no products)'}", file=stream)
    for c in result.consistency:
        print(f"  cross-filter {c.product} vs {c.reference}: {c.status}: {c.reason}", file=stream)
    if result.report:
        print(f"autodriz visit: report {result.report}", file=stream)
    return int(result.exit_code)


def _catalog_parser() -> argparse.ArgumentParser:
    from autodriz.productcatalog import DEFAULT_MIN_SNR

    p = argparse.ArgumentParser(
        prog="autodriz catalog",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Write the sources of a drizzled product (DRZ/DRC) as a reference catalog that --catalog reads:\n"
            "sky positions in the product's WCS, position errors (mas), fluxes, ST magnitudes and the\n"
            "epoch of the observations. Align other filters or visits to a deep aligned image with it:\n\n"
            "  autodriz f160w_asn.fits --catalog f160w_refcat.ecsv     # first align the deep image\n"
            "  autodriz catalog f160w_drz.fits -o f160w_refcat.ecsv\n"
            "  autodriz f105w_asn.fits --catalog f160w_refcat.ecsv"
        ),
        epilog="exit codes: 0 catalog written; 2 bad flag; 3 product missing, not a DRZ/DRC, or no source found",
    )
    p.add_argument("product", type=Path, help="a drizzled product (<root>_drz.fits / _drc.fits)")
    p.add_argument("-o", "--output", type=Path,
                   help="ECSV file to write (default: <product>_refcat.ecsv beside the product)")
    p.add_argument("--min-snr", type=float, default=DEFAULT_MIN_SNR,
                   help=f"leave out sources with a lower S/N (default {DEFAULT_MIN_SNR:g})")
    p.add_argument("--max-sources", type=int, help="keep at most this many sources, brightest first")
    p.add_argument("-q", "--quiet", action="store_true", help="print warnings and errors only")
    p.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error (a bug)")
    return p


def _run_catalog(argv: Sequence[str]) -> int:
    args = _catalog_parser().parse_args(argv)
    if args.min_snr < 0:
        raise ConfigError(f"--min-snr must be >= 0, got {args.min_snr}")
    if args.max_sources is not None and args.max_sources < 1:
        raise ConfigError(f"--max-sources must be >= 1, got {args.max_sources}")
    from autodriz.productcatalog import catalog_from_product, default_output, write_catalog

    # This command has no trailer: its decisions (e.g. an unaligned product) go to the console.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("autodriz catalog: %(levelname)s: %(message)s"))
    handler.setLevel(logging.WARNING if args.quiet else logging.INFO)
    package_logger = logging.getLogger("autodriz")
    old_level = package_logger.level
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    try:
        catalog = catalog_from_product(args.product, min_snr=args.min_snr, max_sources=args.max_sources)
        output = write_catalog(catalog, args.output or default_output(args.product))
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(old_level)
    err = catalog.table["ra_error"]
    print(
        f"autodriz catalog: {len(catalog.table)} sources of {catalog.product.name} written to {output}\n"
        f"  WCS {catalog.wcsname}{'' if catalog.aligned else ' (NOT an aligned solution)'}, epoch {catalog.epoch:.4f}, "
        f"position error {float(min(err)):.1f}-{float(max(err)):.1f} mas per axis (median {float(sorted(err)[len(err) // 2]):.1f})\n"
        f"  use it with: autodriz OTHER_INPUT --catalog {output}"
    )
    return 0


def _add_processing_flags_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML file of settings")
    p.add_argument("-q", "--quiet", action="store_true", help="console shows warnings and errors only")
    p.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error (a bug)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``autodriz`` command; return the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Read before parsing, so that an error while parsing or loading settings honours it too.
    debug = "--debug" in argv
    try:
        if argv and argv[0] == "demo":
            return _run_demo(argv[1:])
        if argv and argv[0] == "simulate":
            return _run_simulate(argv[1:])
        if argv and argv[0] == "batch":
            return _run_batch(argv[1:])
        if argv and argv[0] == "visit":
            return _run_visit(argv[1:])
        if argv and argv[0] == "catalog":
            return _run_catalog(argv[1:])
        return _run_process(argv)
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
