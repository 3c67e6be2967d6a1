"""What the ``autodriz`` commands share: the processing flags, settings from flags, pre-flight checks."""

from __future__ import annotations

import argparse
import errno
import os
import tempfile
from pathlib import Path

from autodriz.errors import AutodrizError, ConfigError, InputError
from autodriz.exitcodes import ExitCode
from autodriz.instruments import REGISTRY, Registry


def exit_code_table() -> str:
    return "\n".join(f"  {int(c):>3}  {c.name}" for c in ExitCode)


def env_table() -> str:
    from autodriz.config import ENVIRONMENT_VARIABLES

    return "\n".join(f"  {name:<32} {desc}" for name, desc in ENVIRONMENT_VARIABLES)


def add_reference_folder_flags(g: argparse._ArgumentGroup, registry: Registry) -> None:
    """One ``--<prefix> DIR`` per reference-file prefix of the instrument registry."""
    for prefix, instruments in registry.reference_prefixes().items():
        names = "/".join(instruments)
        refused = [i for i in instruments if registry.is_refused(i)]
        note = f"; {'/'.join(refused)} data are refused" if refused else ""
        g.add_argument(f"--{prefix}", type=Path,
                       help=f"folder of {names} reference files (what {prefix}$ in the headers means{note})")


def add_processing_flags(p: argparse.ArgumentParser, registry: Registry = REGISTRY) -> None:
    g = p.add_argument_group("where things are")
    g.add_argument("-o", "--output-dir", type=Path, help="write products, trailer and report here (default: beside the input)")
    g.add_argument("--config", type=Path, help="TOML file of settings (overrides the packaged defaults and the profile; env and flags override it)")
    g.add_argument("--profile", metavar="NAME",
                   help="settings profile: laptop (default: the packaged defaults) or archive (as archive operations run: "
                        "astrometry database on, strict services …); overrides AUTODRIZ_PROFILE")
    add_reference_folder_flags(g, registry)
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
                   help="keep the per-candidate working folders (<root>_default/ …); the copies a "
                        "winning fit started from are moved into its folder, leaving header-only "
                        "shadows (pixels read as zeros)")
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



def cli_settings(args: argparse.Namespace, registry: Registry = REGISTRY) -> dict:
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


def load_from_args(args: argparse.Namespace, **overrides):
    from autodriz.config import load_settings

    cli = cli_settings(args)
    cli.update({k: v for k, v in overrides.items() if cli.get(k) is None})
    return load_settings(cli=cli, config_file=args.config)


def probe_writable(folder: Path) -> OSError | None:
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


def preflight(input_path: Path, output_dir: Path | None) -> None:
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
    exc = probe_writable(folder)
    if exc is not None:
        raise InputError(
            f"dataset folder {folder} is not writable ({exc.strerror or exc}; "
            f"{'read-only file system' if exc.errno == errno.EROFS else 'permission denied' if exc.errno in (errno.EACCES, errno.EPERM) else 'cannot create files'}): "
            "autodriz writes the lock and the chosen WCS into the exposures there; copy the dataset "
            "to a writable folder"
        )
    if output_dir is not None and output_dir.is_dir():
        exc = probe_writable(output_dir)
        if exc is not None:
            raise ConfigError(f"--output-dir {output_dir} is not writable ({exc.strerror or exc})")


def check_catalog(settings) -> None:
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

