"""What a setting's value may be: its declaration record and the parsing and checks by kind.

Every setting is declared once (:data:`autodriz.config._FIELD_SPECS`, one :class:`FieldSpec`
each); a value from a TOML file, the environment, the command line or a direct construction is
turned into the field's type here, or refused with a :class:`~autodriz.errors.ConfigError` that
names where it came from and what is accepted.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, NamedTuple

from autodriz.errors import ConfigError

# Spellings of a switch. Compared after strip().lower(). The words are runastrodriz's
# (drizzlepac.util.envvar_bool_dict); 1/0 are added because shell users type them.
_TRUE_WORDS = ("on", "yes", "true", "1")
_FALSE_WORDS = ("off", "no", "false", "0")
ACCEPTED_SWITCH_TEXT = "on/yes/true/1 or off/no/false/0 (any case)"

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: Network catalog services (``catalog_service``): VizieR, or MAST's as the HST pipeline asks it.
CATALOG_SERVICES = ("vizier", "mast")


class FieldSpec(NamedTuple):
    """One setting's declaration: name, kind of value, environment variables, help and flag."""

    name: str
    kind: str  # "bool" | "path" | "positive_float" | "positive_int" | "log_level" | "url" | "catalog_service"
    env: tuple[str, ...]  # variables read, lowest priority first
    help: str
    flag: str  # the command-line flag (a switch also has --no-<flag> when it can be turned off)


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
    raise ConfigError(f"{what} has value {text!r}; accepted values: {ACCEPTED_SWITCH_TEXT}")


def parse_text(spec: FieldSpec, text: str, what: str, base_dir: Path | None = None) -> Any:
    """Turn a string (environment or CLI) into the field's type, validating it."""
    if spec.kind == "bool":
        return parse_switch(text, what)
    if spec.kind == "path":
        return to_path(text, what, base_dir)
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


def coerce_typed(spec: FieldSpec, value: Any, what: str, base_dir: Path | None = None) -> Any:
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
            return to_path(value, what, base_dir)
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


def to_path(value: str | os.PathLike[str], what: str, base_dir: Path | None) -> Path:
    """A non-empty path setting, made absolute (relative to ``base_dir``, else the current folder)."""
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
