"""Settings: packaged defaults < user TOML file < environment variables < CLI flags.

Everything a run may be told from outside ends up in one frozen :class:`Settings`, together with a
record of where each value came from (``Settings.provenance``), so that the trailer and the report
can say *why* a run behaved as it did.

Layers, later wins:

1. the packaged defaults, ``config/autodriz.toml`` (see :func:`default_config_dir`);
1b. a profile, ``config/profiles/<name>.toml``, named by ``--profile NAME`` (the ``profile`` key
   of the ``cli`` mapping) or, failing that, by ``AUTODRIZ_PROFILE``; ``laptop`` (the packaged
   defaults as they are) unless named; ``archive`` runs as archive operations do;
2. a user TOML file, named by ``--config FILE`` (the ``config_file`` argument) or, failing that,
   by the environment variable ``AUTODRIZ_CONFIG``;
3. environment variables (:data:`ENVIRONMENT_VARIABLES`), including STScI's
   ``ASTROMETRY_COMPUTE_APOSTERIORI`` / ``ASTROMETRY_APPLY_APRIORI`` / ``ASTROMETRY_STEP_CONTROL``
   and the HST reference-folder variables ``jref`` / ``iref``;
4. CLI flags (the ``cli`` mapping; a value of ``None`` means "not given").

Switches accept ``on/yes/true/1`` and ``off/no/false/0`` in any case, with surrounding
whitespace; anything else, the empty string included, is a :class:`~autodriz.errors.ConfigError`
that names the variable and the accepted values. runastrodriz accepts the same words (without
``1``/``0``), so an environment that works for the pipeline works here.

This module also provides the AstroDrizzle parameter defaults per detector
(``config/astrodrizzle.toml``, :func:`astrodrizzle_defaults`), which replace the MDRIZTAB
reference table the pipeline reads.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from autodriz.errors import AutodrizError, ConfigError
from autodriz.instruments import REGISTRY, Registry

__all__ = [
    "ENVIRONMENT_VARIABLES",
    "SETTING_FLAGS",
    "SETTING_NAMES",
    "Settings",
    "astrodrizzle_defaults",
    "astrodrizzle_instrument_keys",
    "default_config_dir",
    "describe_settings",
    "load_settings",
    "parse_switch",
    "profile_names",
    "settings_table_markdown",
]

log = logging.getLogger(__name__)

DEFAULTS_FILE_NAME = "autodriz.toml"
ASTRODRIZZLE_FILE_NAME = "astrodrizzle.toml"

CONFIG_ENV = "AUTODRIZ_CONFIG"
PROFILE_ENV = "AUTODRIZ_PROFILE"
PROFILES_DIR_NAME = "profiles"
DEFAULT_PROFILE = "laptop"
STEP_CONTROL_ENV = "ASTROMETRY_STEP_CONTROL"
APPLY_APRIORI_ENV = "ASTROMETRY_APPLY_APRIORI"
COMPUTE_APOSTERIORI_ENV = "ASTROMETRY_COMPUTE_APOSTERIORI"

# Spellings of a switch. Compared after strip().lower(). The words are runastrodriz's
# (drizzlepac.util.envvar_bool_dict); 1/0 are added because shell users type them.
_TRUE_WORDS = ("on", "yes", "true", "1")
_FALSE_WORDS = ("off", "no", "false", "0")
_ACCEPTED_SWITCH_TEXT = "on/yes/true/1 or off/no/false/0 (any case)"

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: Network catalog services (``catalog_service``): VizieR, or MAST's as the HST pipeline asks it.
CATALOG_SERVICES = ("vizier", "mast")

PROVENANCE_DEFAULT = "default"
PROVENANCE_CLI = "cli"
PROVENANCE_PROFILE = "profile:"


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


def _empty_provenance() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Settings:
    """Every externally controllable setting of one run, after all layers were merged.

    Build it with :func:`load_settings`; construct it directly only in tests. Values are
    validated on construction (also by :func:`dataclasses.replace`), so a ``Settings`` that
    exists is a valid one.

    Attributes
    ----------
    compute_aposteriori : bool
        Build a posteriori candidates (fits to a reference catalog).
    apply_apriori : bool
        Build a priori candidates (headerlets from the astrometry database or store).
    allow_header_wcs : bool
        Proceed with the header WCS when distortion reference files are missing.
    keep_workdirs : bool
        Keep the per-candidate working folders.
    output_dir : pathlib.Path or None
        Folder for the products; ``None`` writes them beside the input.
    jref, iref, uref : pathlib.Path or None
        ACS / WFC3 / WFPC2 reference-file folders, one per prefix of the instrument registry
        (:mod:`autodriz.instruments`; WFPC2 is refused, ``uref`` is accepted so that its files
        can be named). Paths carry no trailing separator; add one when exporting them as the
        ``jref`` / ``iref`` / ``uref`` variables stwcs expects.
    catalog : pathlib.Path or None
        A reference catalog file or a folder of catalogs.
    cache_dir : pathlib.Path or None
        Cache for catalogs and astrometry-database headerlets.
    headerlet_store : pathlib.Path or None
        Folder of ``<rootname>_hlet.fits`` a priori headerlets.
    offline : bool
        Never use network services.
    service_timeout : float
        Seconds allowed for one service request, > 0.
    strict_services : bool
        An unreachable service is an error rather than a skipped source.
    drizzle_timeout : float
        Seconds allowed for one AstroDrizzle child process, > 0.
    num_cores : int
        Cores given to AstroDrizzle, >= 1.
    log_level : str
        One of ``DEBUG``, ``INFO``, ``WARNING``, ``ERROR``.
    verify : bool
        Check alignment candidates with drizzled images (focus and similarity indices) before
        one may win.
    max_fit_rms_mas : float
        An a posteriori fit with a larger RMS (mas) never wins: the best a priori solution does.
    use_astrometry_db : bool
        Ask the astrometry database web service for a priori solutions missing locally.
    astrometry_db_url : str
        Base URL of that service (http or https).
    catalog_service : str
        Network service for reference catalogs: ``vizier`` or ``mast`` (MAST's catalog web
        service, with the observation epoch, as the HST pipeline asks it).
    provenance : Mapping[str, str]
        Read-only map from field name to where its value came from: ``'default'``,
        ``'config:<file>'``, ``'env:<VARIABLE>'`` or ``'cli'``. Not part of equality.
    """

    compute_aposteriori: bool = True
    apply_apriori: bool = True
    allow_header_wcs: bool = False
    keep_workdirs: bool = False
    output_dir: Path | None = None
    # One field per reference-file prefix of the instrument registry (a test checks they agree).
    jref: Path | None = None
    iref: Path | None = None
    uref: Path | None = None
    catalog: Path | None = None
    cache_dir: Path | None = None
    headerlet_store: Path | None = None
    offline: bool = False
    service_timeout: float = 10.0
    strict_services: bool = False
    drizzle_timeout: float = 3600.0
    num_cores: int = 1
    log_level: str = "INFO"
    verify: bool = True
    max_fit_rms_mas: float = 100.0
    use_astrometry_db: bool = False
    astrometry_db_url: str = "https://mast.stsci.edu/portal/astrometryDB/"
    catalog_service: str = "vizier"
    # compare=False: two runs with the same values are the same configuration wherever the
    # values came from; it also keeps Settings hashable (a mapping proxy is not).
    provenance: Mapping[str, str] = field(default_factory=_empty_provenance, compare=False)

    def __post_init__(self) -> None:
        for spec in _FIELD_SPECS:
            value = getattr(self, spec.name)
            checked = _coerce_typed(spec, value, f"Settings field '{spec.name}'")
            if checked is not value:
                # Frozen: the documented way to normalise in __post_init__.
                object.__setattr__(self, spec.name, checked)
        prov = dict(self.provenance)
        unknown = sorted(set(prov) - set(SETTING_NAMES))
        if unknown:
            raise ConfigError(f"provenance names unknown settings: {', '.join(unknown)}")
        # Consumers index provenance by any field name; fill the ones nobody recorded.
        for name in SETTING_NAMES:
            prov.setdefault(name, PROVENANCE_DEFAULT)
        object.__setattr__(self, "provenance", MappingProxyType(prov))

    def as_dict(self) -> dict[str, Any]:
        """Return the settings as JSON-friendly data.

        Returns
        -------
        dict
            Field name → value, with paths as strings (``None`` stays ``None``), plus a
            ``"provenance"`` entry holding a plain dict copy of :attr:`provenance`.
        """
        out: dict[str, Any] = {}
        for name in SETTING_NAMES:
            value = getattr(self, name)
            out[name] = str(value) if isinstance(value, Path) else value
        out["provenance"] = dict(self.provenance)
        return out


# --------------------------------------------------------------------------------------------
# Field table: one row per setting. The loader, the Settings validation and
# ENVIRONMENT_VARIABLES are all driven from it so that they cannot drift apart.
# --------------------------------------------------------------------------------------------


class _FieldSpec(NamedTuple):
    name: str
    kind: str  # "bool" | "path" | "positive_float" | "positive_int" | "log_level" | "url" | "catalog_service"
    env: tuple[str, ...]  # variables read, lowest priority first
    help: str
    flag: str  # the command-line flag (a switch also has --no-<flag> when it can be turned off)


_FIELD_SPECS: tuple[_FieldSpec, ...] = (
    _FieldSpec(
        "compute_aposteriori", "bool", (COMPUTE_APOSTERIORI_ENV,),
        "a posteriori candidates (fits to a reference catalog) on/off", "--aposteriori",
    ),
    _FieldSpec(
        "apply_apriori", "bool", (APPLY_APRIORI_ENV,),
        "a priori candidates (astrometry-database headerlets) on/off", "--apriori",
    ),
    _FieldSpec(
        "allow_header_wcs", "bool", ("AUTODRIZ_ALLOW_HEADER_WCS",),
        "proceed with the header WCS when distortion reference files are missing", "--allow-header-wcs",
    ),
    _FieldSpec(
        "keep_workdirs", "bool", ("AUTODRIZ_KEEP_WORKDIRS",),
        "keep the per-candidate working folders (<root>_default/ ...)", "--keep-workdirs",
    ),
    _FieldSpec(
        "output_dir", "path", ("AUTODRIZ_OUTPUT_DIR",),
        "folder for the products (default: beside the input)", "--output-dir",
    ),
    # One per reference-file prefix of the instrument registry. HST convention first, our own
    # name second so that it wins when both are set.
    *(
        _FieldSpec(prefix, "path", (prefix, f"AUTODRIZ_{prefix.upper()}"),
                   f"{'/'.join(instruments)} reference-file folder", f"--{prefix}")
        for prefix, instruments in REGISTRY.reference_prefixes().items()
    ),
    _FieldSpec(
        "catalog", "path", ("AUTODRIZ_CATALOG",),
        "reference catalog file or folder, used before any network service", "--catalog",
    ),
    _FieldSpec(
        "cache_dir", "path", ("AUTODRIZ_CACHE_DIR",),
        "cache folder for catalogs and astrometry-database headerlets", "--cache-dir",
    ),
    _FieldSpec(
        "headerlet_store", "path", ("AUTODRIZ_HEADERLET_STORE",),
        "folder of <rootname>_hlet.fits a priori headerlets", "--headerlet-store",
    ),
    _FieldSpec("offline", "bool", ("AUTODRIZ_OFFLINE",), "never use network services", "--offline"),
    _FieldSpec(
        "service_timeout", "positive_float", ("AUTODRIZ_SERVICE_TIMEOUT",),
        "seconds allowed for one network service request (> 0)", "--service-timeout",
    ),
    _FieldSpec(
        "strict_services", "bool", ("AUTODRIZ_STRICT_SERVICES",),
        "an unreachable network service is an error instead of being skipped", "--strict-services",
    ),
    _FieldSpec(
        "drizzle_timeout", "positive_float", ("AUTODRIZ_DRIZZLE_TIMEOUT",),
        "seconds allowed for one AstroDrizzle run (> 0)", "--drizzle-timeout",
    ),
    _FieldSpec(
        "num_cores", "positive_int", ("AUTODRIZ_NUM_CORES",),
        "cores given to AstroDrizzle (>= 1)", "--num-cores",
    ),
    _FieldSpec(
        "log_level", "log_level", ("AUTODRIZ_LOG_LEVEL",),
        "DEBUG, INFO, WARNING or ERROR", "--log-level",
    ),
    _FieldSpec(
        "verify", "bool", ("AUTODRIZ_VERIFY",),
        "check alignment candidates with drizzled images before one may win", "--verify",
    ),
    _FieldSpec(
        "max_fit_rms_mas", "positive_float", ("AUTODRIZ_MAX_FIT_RMS_MAS",),
        "a posteriori fits with a larger RMS (mas) never win; the best a priori does (> 0)", "--max-fit-rms",
    ),
    _FieldSpec(
        "use_astrometry_db", "bool", ("AUTODRIZ_ASTROMETRY_DB",),
        "ask the astrometry database service for a priori solutions not found locally", "--astrometry-db",
    ),
    # stwcs's own variable first, ours second so that it wins when both are set.
    _FieldSpec(
        "astrometry_db_url", "url", ("ASTROMETRY_SERVICE_URL", "AUTODRIZ_ASTROMETRY_DB_URL"),
        "base URL of the astrometry database service (http/https)", "--astrometry-db-url",
    ),
    _FieldSpec(
        "catalog_service", "catalog_service", ("AUTODRIZ_CATALOG_SERVICE",),
        "network service for reference catalogs: vizier or mast (MAST's, as the HST pipeline asks it)", "--catalog-service",
    ),
)

SETTING_NAMES: tuple[str, ...] = tuple(spec.name for spec in _FIELD_SPECS)
"""Names of the settings (== Settings fields other than provenance, == TOML keys, == CLI keys)."""

_SPEC_BY_NAME: Mapping[str, _FieldSpec] = MappingProxyType({s.name: s for s in _FIELD_SPECS})

SETTING_FLAGS: Mapping[str, str] = MappingProxyType({s.name: s.flag for s in _FIELD_SPECS})
"""Setting name → its command-line flag; the CLI's parser is checked against it (tests)."""

#: Python type of a Settings field per kind of setting (the dataclass is checked against it).
SETTING_TYPES: Mapping[str, str] = MappingProxyType({
    s.name: {"bool": "bool", "path": "Path | None", "positive_float": "float", "positive_int": "int"}.get(s.kind, "str")
    for s in _FIELD_SPECS
})

#: Markers around the generated settings table in README.md.
README_TABLE_START = "<!-- settings table: generated by autodriz.config.settings_table_markdown -->"
README_TABLE_END = "<!-- end of settings table -->"


def _shown(value: Any) -> str:
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"`{value}`"


def settings_table_markdown() -> str:
    """The README's table of settings, made from the one declaration of them.

    One row per setting: its TOML key (``config/autodriz.toml``, ``--config``), command-line
    flag, environment variables (later wins), default and meaning. README.md holds this text
    between :data:`README_TABLE_START` and :data:`README_TABLE_END`; a test fails when they
    differ (regenerate with ``python -c "from autodriz.config import settings_table_markdown as
    t; print(t())"``).

    Returns
    -------
    str
        Markdown, one line per row, no trailing newline.
    """
    defaults = Settings()
    rows = [
        "| setting (TOML key) | flag | environment (later wins) | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for spec in _FIELD_SPECS:
        env = ", ".join(f"`{v}`" for v in spec.env)
        # Escaped for Markdown: a bare <root> would be taken for an HTML tag.
        meaning = spec.help.replace("|", "\\|").replace("<", "&lt;")
        rows.append(f"| `{spec.name}` | `{spec.flag}` | {env} | {_shown(getattr(defaults, spec.name))} | {meaning} |")
    return "\n".join(rows)


def _build_environment_help() -> tuple[tuple[str, str], ...]:
    rows: list[tuple[str, str]] = [
        (CONFIG_ENV, "user TOML settings file (same keys as config/autodriz.toml); --config wins"),
        (PROFILE_ENV, f"settings profile ({DEFAULT_PROFILE} by default, or archive); --profile wins"),
    ]
    for spec in _FIELD_SPECS:
        for var in spec.env:
            text = spec.help
            if spec.kind == "bool":
                text += f"; {_ACCEPTED_SWITCH_TEXT}"
            if var in REGISTRY.reference_prefixes():
                text += f" (HST convention; AUTODRIZ_{var.upper()} wins if both are set)"
            rows.append((var, text))
    rows.append(
        (
            STEP_CONTROL_ENV,
            f"deprecated: sets both {APPLY_APRIORI_ENV} and {COMPUTE_APOSTERIORI_ENV}, "
            "each of which wins when set explicitly",
        )
    )
    return tuple(rows)


ENVIRONMENT_VARIABLES: tuple[tuple[str, str], ...] = _build_environment_help()
"""(name, one-line description) of every environment variable :func:`load_settings` reads."""


# --------------------------------------------------------------------------------------------
# Value parsing
# --------------------------------------------------------------------------------------------


def parse_switch(text: str, what: str) -> bool:
    """Interpret an on/off string the way the HST pipeline does.

    Parameters
    ----------
    text : str
        The raw value, e.g. ``" Yes "``.
    what : str
        Where it came from, for the error message (``"environment variable X"``).

    Returns
    -------
    bool

    Raises
    ------
    ConfigError
        For anything but on/yes/true/1 or off/no/false/0 (any case, surrounding whitespace
        ignored); the empty string included.
    """
    word = text.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ConfigError(f"{what} has value {text!r}; accepted values: {_ACCEPTED_SWITCH_TEXT}")


def _parse_text(spec: _FieldSpec, text: str, what: str, base_dir: Path | None = None) -> Any:
    """Turn a string (environment or CLI) into the field's type, validating it."""
    if spec.kind == "bool":
        return parse_switch(text, what)
    if spec.kind == "path":
        return _to_path(text, what, base_dir)
    if spec.kind == "positive_float":
        try:
            number = float(text.strip())
        except ValueError:
            raise ConfigError(
                f"{what} has value {text!r}; expected a number of seconds > 0"
            ) from None
        return _check_positive_float(number, what)
    if spec.kind == "positive_int":
        try:
            number = int(text.strip())
        except ValueError:
            raise ConfigError(f"{what} has value {text!r}; expected an integer >= 1") from None
        return _check_positive_int(number, what)
    if spec.kind == "log_level":
        return _check_log_level(text, what)
    if spec.kind == "url":
        return _check_url(text, what)
    if spec.kind == "catalog_service":
        return _check_catalog_service(text, what)
    raise AssertionError(f"unhandled setting kind {spec.kind!r}")  # a bug in _FIELD_SPECS


def _coerce_typed(spec: _FieldSpec, value: Any, what: str, base_dir: Path | None = None) -> Any:
    """Validate an already-typed value (TOML, CLI, direct construction); strings are parsed
    only where the field is textual in nature (paths, log level)."""
    if spec.kind == "bool":
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{what} must be true or false, not {value!r}")
    if spec.kind == "path":
        if value is None:
            return None
        if isinstance(value, (str, os.PathLike)):
            return _to_path(value, what, base_dir)
        raise ConfigError(f"{what} must be a path (string), not {value!r}")
    if spec.kind == "positive_float":
        # bool is an int subclass: True would silently become 1.0 second.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _check_positive_float(float(value), what)
        raise ConfigError(f"{what} must be a number of seconds > 0, not {value!r}")
    if spec.kind == "positive_int":
        if isinstance(value, int) and not isinstance(value, bool):
            return _check_positive_int(value, what)
        raise ConfigError(f"{what} must be an integer >= 1, not {value!r}")
    if spec.kind == "log_level":
        if isinstance(value, str):
            return _check_log_level(value, what)
        raise ConfigError(f"{what} must be one of {', '.join(LOG_LEVELS)}, not {value!r}")
    if spec.kind == "url":
        if isinstance(value, str):
            return _check_url(value, what)
        raise ConfigError(f"{what} must be an http(s) URL, not {value!r}")
    if spec.kind == "catalog_service":
        if isinstance(value, str):
            return _check_catalog_service(value, what)
        raise ConfigError(f"{what} must be one of {', '.join(CATALOG_SERVICES)}, not {value!r}")
    raise AssertionError(f"unhandled setting kind {spec.kind!r}")


def _to_path(value: str | os.PathLike[str], what: str, base_dir: Path | None) -> Path:
    text = os.fspath(value)
    if not str(text).strip():
        # Path("") would silently mean the current folder.
        raise ConfigError(f"{what} is empty; give a path or leave it unset")
    path = Path(text).expanduser()
    if not path.is_absolute():
        # Absolute now: AstroDrizzle children run with another working directory. Relative
        # paths in a TOML file are relative to that file, elsewhere to the current directory.
        path = (base_dir if base_dir is not None else Path.cwd()) / path
    return path


def _check_url(text: str, what: str) -> str:
    url = text.strip()
    if not url.lower().startswith(("http://", "https://")) or len(url) < 10:
        raise ConfigError(f"{what} has value {text!r}; expected an http:// or https:// URL")
    return url


def _check_catalog_service(text: str, what: str) -> str:
    name = text.strip().lower()
    if name not in CATALOG_SERVICES:
        raise ConfigError(f"{what} has value {text!r}; accepted values: {', '.join(CATALOG_SERVICES)}")
    return name


def _check_positive_float(number: float, what: str) -> float:
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{what} is {number!r}; expected a finite number of seconds > 0")
    return number


def _check_positive_int(number: int, what: str) -> int:
    if number < 1:
        raise ConfigError(f"{what} is {number!r}; expected an integer >= 1")
    return number


def _check_log_level(text: str, what: str) -> str:
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{what} has value {text!r}; accepted values: {', '.join(LOG_LEVELS)}")
    return level


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def default_config_dir() -> Path:
    """Find the folder holding the packaged ``autodriz.toml`` and ``astrodrizzle.toml``.

    In an installed wheel the repository's ``config/`` folder is shipped as
    ``autodriz/config/``; in a source or editable checkout it is ``<repo>/config``.

    Returns
    -------
    pathlib.Path
        The first of those two folders that contains ``autodriz.toml``.

    Raises
    ------
    AutodrizError
        When neither exists (a broken installation, hence not a ConfigError).
    """
    packaged = resources.files("autodriz") / "config"
    candidates: list[Path] = []
    # files() returns a Traversable; for a normal (non-zip) install it is a real path.
    if isinstance(packaged, Path):
        candidates.append(packaged)
    else:
        candidates.append(Path(str(packaged)))
    # src/autodriz/config.py → parents[2] is the repository root.
    candidates.append(Path(__file__).resolve().parents[2] / "config")
    for folder in candidates:
        if (folder / DEFAULTS_FILE_NAME).is_file():
            return folder
    tried = ", ".join(str(c) for c in candidates)
    raise AutodrizError(f"packaged configuration not found (looked in {tried}); reinstall autodriz")


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a folder, not a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc}") from None


def _settings_from_toml(path: Path, what: str) -> dict[str, Any]:
    """Read and validate a settings TOML file (flat keys, all known)."""
    data = _read_toml(path, what)
    unknown = sorted(k for k in data if k not in _SPEC_BY_NAME)
    if unknown:
        raise ConfigError(
            f"{what} {path} has unknown key(s): {', '.join(unknown)}; "
            f"known keys: {', '.join(SETTING_NAMES)}"
        )
    base_dir = path.resolve().parent
    values: dict[str, Any] = {}
    for key, value in data.items():
        values[key] = _coerce_typed(
            _SPEC_BY_NAME[key], value, f"key '{key}' in {path}", base_dir=base_dir
        )
    return values


def profile_names() -> tuple[str, ...]:
    """Names of the packaged profiles (``config/profiles/<name>.toml``), sorted."""
    folder = default_config_dir() / PROFILES_DIR_NAME
    return tuple(sorted(p.stem for p in folder.glob("*.toml")))


def _profile_file(name: str, what: str) -> Path:
    names = profile_names()
    if name not in names:
        raise ConfigError(f"{what} names the profile {name!r}; known profiles: {', '.join(names)}")
    return default_config_dir() / PROFILES_DIR_NAME / f"{name}.toml"


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_settings(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
    *,
    warn: Callable[[str], None] | None = None,
) -> Settings:
    """Merge defaults, a user TOML file, environment variables and CLI flags.

    Parameters
    ----------
    cli : Mapping[str, Any], optional
        Setting name (see :data:`SETTING_NAMES`) → value from the command line. ``None``
        values mean "flag not given". Values may be typed (bool, int, float, Path) or strings,
        which are parsed like environment values. Unknown names raise ConfigError, so filter
        ``vars(args)`` through :data:`SETTING_NAMES`. The key ``profile`` names the profile
        (``--profile``; it wins over ``AUTODRIZ_PROFILE``).
    env : Mapping[str, str], optional
        The environment; ``os.environ`` when ``None``. Only read, never changed.
    config_file : str or pathlib.Path, optional
        The user's settings file (``--config``). When ``None``, ``AUTODRIZ_CONFIG`` is used
        if set. A named file that does not exist is an error.
    warn : callable, optional
        Also called with the text of every warning (e.g. the deprecation of
        ``ASTROMETRY_STEP_CONTROL``), so that the CLI or the report can collect them; warnings
        are always logged at WARNING as well.

    Returns
    -------
    Settings
        Frozen, validated, with :attr:`Settings.provenance` filled for every field.

    Raises
    ------
    ConfigError
        For an unreadable or invalid file, an unknown key, or a value that does not parse,
        naming the file/variable/flag and the accepted values.
    """
    environ: Mapping[str, str] = os.environ if env is None else env

    def _warn(message: str) -> None:
        log.warning("%s", message)
        if warn is not None:
            warn(message)

    values: dict[str, Any] = {}
    provenance: dict[str, str] = {}

    # Layer 0: the dataclass defaults, so that every field has a value and provenance.
    for spec in _FIELD_SPECS:
        values[spec.name] = _dataclass_default(spec.name)
        provenance[spec.name] = PROVENANCE_DEFAULT

    # Layer 1: packaged defaults file; still "default" provenance for the user.
    defaults_path = default_config_dir() / DEFAULTS_FILE_NAME
    values.update(_settings_from_toml(defaults_path, "packaged settings file"))

    # Layer 1b: the profile (laptop = the packaged defaults as they are).
    cli = dict(cli or {})
    profile = cli.pop("profile", None)
    what = "--profile"
    if profile is None and (env_profile := environ.get(PROFILE_ENV)) is not None:
        profile, what = env_profile.strip(), f"environment variable {PROFILE_ENV}"
    profile_path = _profile_file(profile or DEFAULT_PROFILE, what)
    for key, value in _settings_from_toml(profile_path, "profile").items():
        values[key] = value
        provenance[key] = f"{PROVENANCE_PROFILE}{profile_path.stem}"

    # Layer 2: the user's file.
    user_file: Path | None = None
    if config_file is not None:
        user_file = _to_path(config_file, "--config", None)
    elif (env_config := environ.get(CONFIG_ENV)) is not None:
        user_file = _to_path(env_config, f"environment variable {CONFIG_ENV}", None)
    if user_file is not None:
        user_values = _settings_from_toml(user_file, "settings file")
        label = f"config:{user_file}"
        for key, value in user_values.items():
            values[key] = value
            provenance[key] = label
        log.info("settings file %s read (%d setting(s))", user_file, len(user_values))

    # Layer 3: environment.
    for key, (value, var) in _settings_from_env(environ, _warn).items():
        values[key] = value
        provenance[key] = f"env:{var}"

    # Layer 4: CLI.
    for key, value in cli.items():
        if key not in _SPEC_BY_NAME:
            raise ConfigError(
                f"unknown command-line setting '{key}'; known: {', '.join(SETTING_NAMES)}"
            )
        if value is None:
            continue
        spec = _SPEC_BY_NAME[key]
        # Named by setting, not by flag: the CLI is free to spell its flags differently
        # (e.g. --apriori/--no-apriori for apply_apriori).
        what = f"command-line setting '{key}'"
        if isinstance(value, str) and spec.kind != "path":
            values[key] = _parse_text(spec, value, what)
        else:
            values[key] = _coerce_typed(spec, value, what)
        provenance[key] = PROVENANCE_CLI

    settings = Settings(**values, provenance=MappingProxyType(provenance))
    shown = settings.as_dict()
    for name in SETTING_NAMES:
        source = settings.provenance[name]
        if source != PROVENANCE_DEFAULT:
            log.info("setting %s = %r (from %s)", name, shown[name], source)
    return settings


def _dataclass_default(name: str) -> Any:
    for f in dataclasses.fields(Settings):
        if f.name == name:
            return f.default
    raise AssertionError(f"Settings has no field {name!r}")  # a bug in _FIELD_SPECS


def _settings_from_env(
    environ: Mapping[str, str], warn: Callable[[str], None]
) -> dict[str, tuple[Any, str]]:
    """Read the environment layer: setting name → (value, variable it came from)."""
    found: dict[str, tuple[Any, str]] = {}

    # The deprecated switch goes first so that the explicit variables, read below, override it
    # (runastrodriz: "If [ASTROMETRY_APPLY_APRIORI] is set, it will override any value set in
    # the old variable").
    step_text = environ.get(STEP_CONTROL_ENV)
    if step_text is not None:
        step = parse_switch(step_text, f"environment variable {STEP_CONTROL_ENV}")
        warn(
            f"{STEP_CONTROL_ENV} is deprecated; use {APPLY_APRIORI_ENV} and "
            f"{COMPUTE_APOSTERIORI_ENV} instead (treating {STEP_CONTROL_ENV}={step_text.strip()} "
            "as both, unless they are set)"
        )
        found["apply_apriori"] = (step, STEP_CONTROL_ENV)
        found["compute_aposteriori"] = (step, STEP_CONTROL_ENV)

    for spec in _FIELD_SPECS:
        for var in spec.env:  # lowest priority first: later variables overwrite
            text = environ.get(var)
            if text is None:
                continue
            found[spec.name] = (_parse_text(spec, text, f"environment variable {var}"), var)
    return found


# --------------------------------------------------------------------------------------------
# AstroDrizzle parameters
# --------------------------------------------------------------------------------------------

_ROW_KEY = re.compile(r"^n([1-9][0-9]*)$")
# Steps that need at least two exposures: with one there is nothing to take a median of.
_MULTI_EXPOSURE_STEPS = ("driz_separate", "median", "blot", "driz_cr")


def _load_astrodrizzle_table(path: Path | None = None) -> tuple[Path, dict[str, Any]]:
    if path is None:
        path = default_config_dir() / ASTRODRIZZLE_FILE_NAME
    data = _read_toml(path, "AstroDrizzle parameter file")
    if not isinstance(data.get("default"), dict):
        raise ConfigError(f"AstroDrizzle parameter file {path} has no [default] table")
    return path, data


def astrodrizzle_instrument_keys() -> tuple[str, ...]:
    """List the instrument keys :func:`astrodrizzle_defaults` knows.

    Returns
    -------
    tuple of str
        Section names of ``config/astrodrizzle.toml`` other than ``default``, e.g.
        ``("ACS/WFC", "ACS/HRC", ...)``.
    """
    _, data = _load_astrodrizzle_table()
    return tuple(k for k in data if k != "default")


def astrodrizzle_defaults(
    instrument_key: str,
    n_exposures: int,
    *,
    exptime_ratio: float | None = None,
    table_file: str | Path | None = None,
    registry: Registry = REGISTRY,
) -> dict[str, Any]:
    """AstroDrizzle parameters for a detector and a number of exposures.

    Mirrors the pipeline's MDRIZTAB row selection: ``[default]``, then the detector's section
    (the row for two exposures), then the sub-table ``n<K>`` with the largest ``K <=
    n_exposures``. For a single exposure the separate-drizzle, median, blot and CR steps are
    switched off whatever the table says, since they need at least two images.

    Parameters
    ----------
    instrument_key : str
        ``"INSTRUMENT/DETECTOR"`` as in the headers, e.g. ``"ACS/WFC"``, ``"WFC3/IR"``; case is
        ignored. An instrument with a single section (``"WFPC2"``) accepts any detector
        (``"WFPC2/PC"``) or none.
    n_exposures : int
        Number of exposures that will be drizzled together, >= 1.
    exptime_ratio : float, optional
        Longest / shortest exposure time. Above 2, as in runastrodriz, ``combine_type`` becomes
        ``"median"`` with ``combine_nhigh = 0`` because minmed assumes similar exposures.
    table_file : str or pathlib.Path, optional
        Another parameter file with the same layout (default: the packaged
        ``astrodrizzle.toml``).
    registry : Registry, optional
        Maps the detector to its section (:attr:`InstrumentDetector.config_key`); default
        :data:`autodriz.instruments.REGISTRY`.

    Returns
    -------
    dict
        Parameter name → value, ready for ``AstroDrizzle(**params)``; a new dict each call.

    Raises
    ------
    ConfigError
        For an instrument key the table does not have, or a malformed table.
    ValueError
        When ``n_exposures`` < 1.
    """
    if isinstance(n_exposures, bool) or not isinstance(n_exposures, int) or n_exposures < 1:
        raise ValueError(f"n_exposures must be an integer >= 1, not {n_exposures!r}")
    path, data = _load_astrodrizzle_table(None if table_file is None else Path(table_file))

    section_name = _find_section(data, registry.config_key(instrument_key), path)
    section = data[section_name]
    base = {k: v for k, v in section.items() if not isinstance(v, dict)}
    rows: dict[int, dict[str, Any]] = {}
    for key, value in section.items():
        if not isinstance(value, dict):
            continue
        match = _ROW_KEY.match(key)
        if match is None:
            raise ConfigError(
                f"AstroDrizzle parameter file {path}: [\"{section_name}\".{key}] is not a row; "
                "rows are named n<K> (K = minimum number of exposures, e.g. n1, n6)"
            )
        rows[int(match.group(1))] = value

    params: dict[str, Any] = dict(data["default"])
    params.update(base)
    if n_exposures == 1:
        chosen = 1 if 1 in rows else None
    else:
        eligible = [k for k in rows if 1 < k <= n_exposures]
        chosen = max(eligible) if eligible else None
    if chosen is not None:
        params.update(rows[chosen])

    if n_exposures == 1:
        for step in _MULTI_EXPOSURE_STEPS:
            params[step] = False
    elif exptime_ratio is not None and exptime_ratio > 2:
        params["combine_type"] = "median"
        params["combine_nhigh"] = 0

    row_text = f"row n{chosen}" if chosen is not None else "section values only"
    log.debug(
        "AstroDrizzle defaults for %s with %d exposure(s): [%s] %s",
        instrument_key, n_exposures, section_name, row_text,
    )
    return params


def _find_section(data: Mapping[str, Any], instrument_key: str, path: Path) -> str:
    sections = {k.upper(): k for k in data if k != "default" and isinstance(data[k], dict)}
    key = instrument_key.strip().upper()
    if key in sections:
        return sections[key]
    instrument = key.split("/", 1)[0]
    if instrument in sections:  # instrument with a single section (WFPC2)
        return sections[instrument]
    raise ConfigError(
        f"no AstroDrizzle parameters for instrument key {instrument_key!r} in {path}; "
        f"known keys: {', '.join(sections.values())}"
    )


# --------------------------------------------------------------------------------------------
# Showing the settings
# --------------------------------------------------------------------------------------------


def _source_words(source: str) -> str:
    """A provenance label as a person reads it (``env:X`` → ``environment X``)."""
    if source == PROVENANCE_CLI:
        return "flag"
    for prefix, words in (("env:", "environment "), ("config:", "config file "), (PROVENANCE_PROFILE, "profile ")):
        if source.startswith(prefix):
            return words + source[len(prefix):]
    return source


def describe_settings(settings: Settings) -> list[str]:
    """The effective settings, one line each, with where each value came from.

    What ``autodriz --print-settings`` prints; nothing is run or written.

    Returns
    -------
    list of str
        A heading, then ``name  value  source`` per setting; the source is ``default``,
        ``profile NAME``, ``config file PATH``, ``environment VARIABLE`` or ``flag``.
    """
    shown = settings.as_dict()
    profiles = sorted({s[len(PROVENANCE_PROFILE):] for s in settings.provenance.values()
                       if s.startswith(PROVENANCE_PROFILE)})
    lines = [
        f"autodriz settings (profile {', '.join(profiles) or DEFAULT_PROFILE}; later wins: default < profile "
        "< config file < environment < flag)",
    ]
    width = max(len(n) for n in SETTING_NAMES)
    for name in SETTING_NAMES:
        value = shown[name]
        text = "(not set)" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        lines.append(f"  {name:<{width}}  {text:<44}  {_source_words(settings.provenance[name])}")
    return lines
