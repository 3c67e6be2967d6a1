"""What every WCS solution strategy produces, and its private working folder."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autodriz.fitquality import FitScore

logger = logging.getLogger(__name__)

#: Marks a folder as autodriz scratch space, so that we only ever delete our own folders.
WORKDIR_MARKER = ".autodriz-workdir"


@dataclass(frozen=True)
class Candidate:
    """One candidate WCS for the whole dataset, worked out on copies of the exposures.

    Attributes
    ----------
    name : str
        Short name of the strategy (``default``, ``apriori-GSC240`` …).
    wcsname : str
        WCSNAME the solution carries in the working copies.
    workdir : Path
        The candidate's own folder.
    copies : dict
        Original exposure path → its working copy holding this candidate's WCS.
    source : str
        How the WCS was obtained, in words, for the log and report.
    updated : bool
        Whether the WCS differs from what the originals already carry (False when the header
        WCS is used as it is, so there is nothing to write back).
    notes : tuple of str
        Warnings and facts worth reporting.
    kind : str
        ``default``, ``apriori`` or ``aposteriori``: the family the selection rules rank.
    quality : int
        Fit quality, 1 (good relative + absolute fit) … 5 (fit failed), -1 not attempted;
        the pipeline default and a priori solutions are not fits and keep -1.
    details : mapping
        Strategy-specific facts for the report (fit statistics, headerlet source …).
    score : FitScore or None
        An a posteriori fit's typed score (quality, statistics, catalog, mode): what
        :mod:`autodriz.select` reads. None for candidates that are not fits.
    """

    name: str
    wcsname: str
    workdir: Path
    copies: dict[Path, Path]
    source: str
    updated: bool = True
    notes: tuple[str, ...] = field(default_factory=tuple)
    kind: str = "default"
    quality: int = -1
    details: Mapping[str, Any] = field(default_factory=dict)
    score: FitScore | None = None


def prepare_workdir(path: Path) -> Path:
    """Create an empty scratch folder at ``path``, clearing an earlier autodriz one.

    A folder that exists but is not marked as ours is never deleted: that is an error.
    """
    if path.exists():
        if not (path / WORKDIR_MARKER).exists():
            raise FileExistsError(
                f"{path} exists and was not made by autodriz; move it away or choose another --output-dir"
            )
        logger.info("removing the working folder of an earlier run: %s", path)
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / WORKDIR_MARKER).write_text("scratch folder of autodriz; safe to delete\n")
    return path


def remove_workdir(path: Path) -> None:
    """Delete a scratch folder made by :func:`prepare_workdir` (and nothing else)."""
    if (path / WORKDIR_MARKER).exists():
        shutil.rmtree(path)


def copy_exposures(originals: list[Path], workdir: Path) -> dict[Path, Path]:
    """Copy the exposures into ``workdir``; return original → copy (copies are writable)."""
    copies = {}
    for original in originals:
        dest = workdir / original.name
        shutil.copyfile(original, dest)
        dest.chmod(0o644)
        copies[original] = dest
    return copies
