"""The packaged configuration folder and its TOML files (settings defaults, profiles, AstroDrizzle)."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from autodriz.errors import AutodrizError, ConfigError

DEFAULTS_FILE_NAME = "autodriz.toml"
ASTRODRIZZLE_FILE_NAME = "astrodrizzle.toml"
PROFILES_DIR_NAME = "profiles"


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
    # src/autodriz/configfiles.py → parents[2] is the repository root.
    candidates.append(Path(__file__).resolve().parents[2] / "config")
    for folder in candidates:
        if (folder / DEFAULTS_FILE_NAME).is_file():
            return folder
    tried = ", ".join(str(c) for c in candidates)
    raise AutodrizError(f"packaged configuration not found (looked in {tried}); reinstall autodriz")


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file's content; ConfigError naming ``what`` and the path when it cannot be read."""
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


def profile_names() -> tuple[str, ...]:
    """Names of the packaged profiles (``config/profiles/<name>.toml``), sorted."""
    folder = default_config_dir() / PROFILES_DIR_NAME
    return tuple(sorted(p.stem for p in folder.glob("*.toml")))


def profile_file(name: str, what: str) -> Path:
    """The packaged profile ``name``; ConfigError naming ``what`` and the known profiles if none."""
    names = profile_names()
    if name not in names:
        raise ConfigError(f"{what} names the profile {name!r}; known profiles: {', '.join(names)}")
    return default_config_dir() / PROFILES_DIR_NAME / f"{name}.toml"
