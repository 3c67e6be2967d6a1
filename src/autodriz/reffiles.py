"""Find the distortion reference files an exposure's header names.

HST headers name reference files as ``<prefix>$<file>`` (``jref$`` for ACS, ``iref$`` for WFC3,
``uref$`` for WFPC2); the prefix is an environment variable holding a folder. We resolve them
against the folders in the settings instead of the process environment, so the check is pure
apart from looking at the file system.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

#: Header keywords of the distortion model that updatewcs applies.
DISTORTION_KEYWORDS = ("IDCTAB", "NPOLFILE", "D2IMFILE")

_UNSET = frozenset({"", "N/A", "NONE"})


@dataclass(frozen=True)
class ReferenceFile:
    """One reference file named in a header, and where (whether) it was found."""

    keyword: str
    value: str
    path: Path | None

    @property
    def found(self) -> bool:
        return names_a_file(self.path)


def names_a_file(path: Path | None) -> bool:
    """True if ``path`` is an existing regular file.

    A header value that no file system takes for a path (longer than NAME_MAX, a NUL byte) names
    no file: ``Path.is_file`` raises for it instead of answering False.
    """
    if path is None:
        return False
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def resolve_reference(value: str | None, folders: Mapping[str, Path | None]) -> Path | None:
    """Return the path that ``prefix$name`` (or a plain path) stands for, or None if unset.

    Parameters
    ----------
    value : str or None
        Header value such as ``jref$0461802ej_idc.fits``.
    folders : mapping
        Prefix (``jref``, ``iref`` …) to folder; a prefix with no folder resolves to None.
    """
    if value is None or value.strip().upper() in _UNSET:
        return None
    value = value.strip()
    if "$" in value:
        prefix, name = value.split("$", 1)
        folder = folders.get(prefix.lower())
        if folder is None:
            return None
        return Path(folder) / name
    return Path(value)


def distortion_files(
    headers: Iterable[Mapping[str, str | None]], folders: Mapping[str, Path | None]
) -> list[ReferenceFile]:
    """List the distinct distortion reference files the given primary headers name.

    Keywords set to ``N/A`` are not listed: the instrument has no such correction.
    """
    seen: dict[tuple[str, str], ReferenceFile] = {}
    for header in headers:
        for key in DISTORTION_KEYWORDS:
            value = header.get(key)
            if value is None or str(value).strip().upper() in _UNSET:
                continue
            value = str(value).strip()
            if (key, value) not in seen:
                seen[(key, value)] = ReferenceFile(key, value, resolve_reference(value, folders))
    return list(seen.values())
