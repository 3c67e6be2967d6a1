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

The AstroDrizzle parameter defaults per detector
(``config/astrodrizzle.toml``, :func:`astrodrizzle_defaults`), which replace the MDRIZTAB
reference table the pipeline reads, are in :mod:`autodriz.drizzleparams`; the packaged files in
:mod:`autodriz.configfiles`; the parsing of one value by kind in :mod:`autodriz.settingvalues`.
Their public names are re-exported here.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from autodriz.configfiles import (
    DEFAULTS_FILE_NAME,
    default_config_dir,
    profile_file,
    profile_names,
    read_toml,
)
from autodriz.drizzleparams import astrodrizzle_defaults, astrodrizzle_instrument_keys
from autodriz.errors import ConfigError
from autodriz.instruments import REGISTRY
from autodriz.settingvalues import (
    ACCEPTED_SWITCH_TEXT,
    FieldSpec,
    coerce_typed,
    parse_switch,
    parse_text,
    to_path,
)

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

CONFIG_ENV = "AUTODRIZ_CONFIG"
PROFILE_ENV = "AUTODRIZ_PROFILE"
DEFAULT_PROFILE = "laptop"
STEP_CONTROL_ENV = "ASTROMETRY_STEP_CONTROL"
APPLY_APRIORI_ENV = "ASTROMETRY_APPLY_APRIORI"
COMPUTE_APOSTERIORI_ENV = "ASTROMETRY_COMPUTE_APOSTERIORI"


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
            checked = coerce_typed(spec, value, f"Settings field '{spec.name}'")
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


_FIELD_SPECS: tuple[FieldSpec, ...] = (
    FieldSpec(
        "compute_aposteriori", "bool", (COMPUTE_APOSTERIORI_ENV,),
        "a posteriori candidates (fits to a reference catalog) on/off", "--aposteriori",
    ),
    FieldSpec(
        "apply_apriori", "bool", (APPLY_APRIORI_ENV,),
        "a priori candidates (astrometry-database headerlets) on/off", "--apriori",
    ),
    FieldSpec(
        "allow_header_wcs", "bool", ("AUTODRIZ_ALLOW_HEADER_WCS",),
        "proceed with the header WCS when distortion reference files are missing", "--allow-header-wcs",
    ),
    FieldSpec(
        "keep_workdirs", "bool", ("AUTODRIZ_KEEP_WORKDIRS",),
        "keep the per-candidate working folders (<root>_default/ ...)", "--keep-workdirs",
    ),
    FieldSpec(
        "output_dir", "path", ("AUTODRIZ_OUTPUT_DIR",),
        "folder for the products (default: beside the input)", "--output-dir",
    ),
    # One per reference-file prefix of the instrument registry. HST convention first, our own
    # name second so that it wins when both are set.
    *(
        FieldSpec(prefix, "path", (prefix, f"AUTODRIZ_{prefix.upper()}"),
                   f"{'/'.join(instruments)} reference-file folder", f"--{prefix}")
        for prefix, instruments in REGISTRY.reference_prefixes().items()
    ),
    FieldSpec(
        "catalog", "path", ("AUTODRIZ_CATALOG",),
        "reference catalog file or folder, used before any network service", "--catalog",
    ),
    FieldSpec(
        "cache_dir", "path", ("AUTODRIZ_CACHE_DIR",),
        "cache folder for catalogs and astrometry-database headerlets", "--cache-dir",
    ),
    FieldSpec(
        "headerlet_store", "path", ("AUTODRIZ_HEADERLET_STORE",),
        "folder of <rootname>_hlet.fits a priori headerlets", "--headerlet-store",
    ),
    FieldSpec("offline", "bool", ("AUTODRIZ_OFFLINE",), "never use network services", "--offline"),
    FieldSpec(
        "service_timeout", "positive_float", ("AUTODRIZ_SERVICE_TIMEOUT",),
        "seconds allowed for one network service request (> 0)", "--service-timeout",
    ),
    FieldSpec(
        "strict_services", "bool", ("AUTODRIZ_STRICT_SERVICES",),
        "an unreachable network service is an error instead of being skipped", "--strict-services",
    ),
    FieldSpec(
        "drizzle_timeout", "positive_float", ("AUTODRIZ_DRIZZLE_TIMEOUT",),
        "seconds allowed for one AstroDrizzle run (> 0)", "--drizzle-timeout",
    ),
    FieldSpec(
        "num_cores", "positive_int", ("AUTODRIZ_NUM_CORES",),
        "cores given to AstroDrizzle (>= 1)", "--num-cores",
    ),
    FieldSpec(
        "log_level", "log_level", ("AUTODRIZ_LOG_LEVEL",),
        "DEBUG, INFO, WARNING or ERROR", "--log-level",
    ),
    FieldSpec(
        "verify", "bool", ("AUTODRIZ_VERIFY",),
        "check alignment candidates with drizzled images before one may win", "--verify",
    ),
    FieldSpec(
        "max_fit_rms_mas", "positive_float", ("AUTODRIZ_MAX_FIT_RMS_MAS",),
        "a posteriori fits with a larger RMS (mas) never win; the best a priori does (> 0)", "--max-fit-rms",
    ),
    FieldSpec(
        "use_astrometry_db", "bool", ("AUTODRIZ_ASTROMETRY_DB",),
        "ask the astrometry database service for a priori solutions not found locally", "--astrometry-db",
    ),
    # stwcs's own variable first, ours second so that it wins when both are set.
    FieldSpec(
        "astrometry_db_url", "url", ("ASTROMETRY_SERVICE_URL", "AUTODRIZ_ASTROMETRY_DB_URL"),
        "base URL of the astrometry database service (http/https)", "--astrometry-db-url",
    ),
    FieldSpec(
        "catalog_service", "catalog_service", ("AUTODRIZ_CATALOG_SERVICE",),
        "network service for reference catalogs: vizier or mast (MAST's, as the HST pipeline asks it)", "--catalog-service",
    ),
)

SETTING_NAMES: tuple[str, ...] = tuple(spec.name for spec in _FIELD_SPECS)
"""Names of the settings (== Settings fields other than provenance, == TOML keys, == CLI keys)."""

_SPEC_BY_NAME: Mapping[str, FieldSpec] = MappingProxyType({s.name: s for s in _FIELD_SPECS})

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
                text += f"; {ACCEPTED_SWITCH_TEXT}"
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


def _settings_from_toml(path: Path, what: str) -> dict[str, Any]:
    """Read and validate a settings TOML file (flat keys, all known)."""
    data = read_toml(path, what)
    unknown = sorted(k for k in data if k not in _SPEC_BY_NAME)
    if unknown:
        raise ConfigError(
            f"{what} {path} has unknown key(s): {', '.join(unknown)}; "
            f"known keys: {', '.join(SETTING_NAMES)}"
        )
    base_dir = path.resolve().parent
    values: dict[str, Any] = {}
    for key, value in data.items():
        values[key] = coerce_typed(
            _SPEC_BY_NAME[key], value, f"key '{key}' in {path}", base_dir=base_dir
        )
    return values


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
    profile_path = profile_file(profile or DEFAULT_PROFILE, what)
    for key, value in _settings_from_toml(profile_path, "profile").items():
        values[key] = value
        provenance[key] = f"{PROVENANCE_PROFILE}{profile_path.stem}"

    # Layer 2: the user's file.
    user_file: Path | None = None
    if config_file is not None:
        user_file = to_path(config_file, "--config", None)
    elif (env_config := environ.get(CONFIG_ENV)) is not None:
        user_file = to_path(env_config, f"environment variable {CONFIG_ENV}", None)
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
            values[key] = parse_text(spec, value, what)
        else:
            values[key] = coerce_typed(spec, value, what)
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
            found[spec.name] = (parse_text(spec, text, f"environment variable {var}"), var)
    return found


# --------------------------------------------------------------------------------------------
# AstroDrizzle parameters
# --------------------------------------------------------------------------------------------


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
