"""Write the outcome: the chosen WCS into the original exposures, products into place.

Inputs are sacred: each original is rewritten once, atomically (a temporary file beside it,
fsync, rename), and only after every temporary file is ready, so a failure before the renames
leaves all of them byte-identical. Products are moved into place only when complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autodriz.childproc import ChildError, run_child
from autodriz.errors import UpdateError
from autodriz.solutions.base import Candidate

logger = logging.getLogger(__name__)

TMP_SUFFIX = ".autodriz-tmp"


def _fsync(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _hdrname(copy: Path, wcsname: str) -> str:
    root = copy.name.split("_")[0]
    return f"{root}_{wcsname}"[:68]


def wcs_update_job(
    candidate: Candidate, originals: Sequence[Path], *, others: Sequence[Candidate] = ()
) -> tuple[dict[str, Any], dict[Path, Path]]:
    """The child job that prepares the WCS update of ``originals``, and original → temp file.

    The job (task ``apply_headerlets``) copies each original to a temporary file beside it and
    makes the candidate's solved WCS primary there via an stwcs headerlet; the WCS it replaces
    is archived as a headerlet, and the solutions of ``others`` (the candidates that lost) are
    attached as headerlets too, so that a user can switch to any of them. It can run in its own
    child (:func:`apply_candidate_wcs`) or after a final AstroDrizzle run in the same child
    (``then``), which saves a child's start-up; :func:`commit_wcs_update` then renames.
    """
    originals = [p for p in originals if p in candidate.copies]
    temps = {original: original.with_name(original.name + TMP_SUFFIX) for original in originals}

    def others_for(original: Path, copy: Path) -> list[dict[str, str]]:
        root = copy.name.split("_")[0]
        return [
            {
                "solved": str(o.copies[original]),
                "hdrname": f"{root}_{o.name}"[:68],
                "wcsname": o.wcsname,
                "descrip": f"autodriz {o.kind} candidate: {o.source}"[:68],
            }
            for o in others
            if o is not candidate and o.updated and original in o.copies
        ]

    job = {
        "task": "apply_headerlets",
        "wcsname": candidate.wcsname,
        "descrip": f"autodriz: {candidate.source}"[:68],
        "items": [
            {
                "original": str(original),
                "solved": str(candidate.copies[original]),
                "tmp": str(temps[original]),
                "hdrname": _hdrname(candidate.copies[original], candidate.wcsname),
                "others": others_for(original, candidate.copies[original]),
            }
            for original in originals
        ],
    }
    return job, temps


def discard_temps(temps: Mapping[Path, Path]) -> None:
    """Remove prepared temporary files (the update is abandoned; the originals are untouched)."""
    for tmp in temps.values():
        tmp.unlink(missing_ok=True)


def commit_wcs_update(candidate: Candidate, temps: Mapping[Path, Path]) -> list[Path]:
    """Make prepared temporary files the originals: fsync each, then rename each over its original.

    Raises
    ------
    UpdateError
        A temporary file is missing or cannot be synced; none has been renamed, all are removed.
    """
    try:
        for tmp in temps.values():
            _fsync(tmp)
    except OSError as exc:
        discard_temps(temps)
        raise UpdateError(f"could not prepare the WCS update of the inputs: {exc}") from exc
    for original, tmp in temps.items():
        os.replace(tmp, original)
        logger.info("updated WCS of %s → %s", original.name, candidate.wcsname)
    return list(temps)


def apply_candidate_wcs(
    candidate: Candidate, *, others: Sequence[Candidate] = (), timeout: float = 600.0
) -> list[Path]:
    """Write the candidate's WCS into the original exposures; return the files updated.

    The WCS travels as an stwcs headerlet made from the candidate's working copy; it becomes the
    primary WCS of the original, and the WCS it replaces is archived as a headerlet so that the
    change can be reverted (``stwcs.wcsutil.headerlet.restore_from_headerlet``). The solutions
    of ``others`` (the candidates that lost) are attached as headerlets too, so that a user can
    switch to any of them. stwcs runs in a child process (it prints and reconfigures logging);
    this process only renames.

    Raises
    ------
    UpdateError
        Any file could not be prepared; no original has been changed.
    """
    if not candidate.updated:
        logger.info("the chosen WCS (%s) is already in the originals: nothing to write back", candidate.wcsname)
        return []
    job, temps = wcs_update_job(candidate, list(candidate.copies), others=others)
    try:
        run_child(job, cwd=candidate.workdir, timeout=timeout, label="apply_wcs")
    except (ChildError, OSError) as exc:
        discard_temps(temps)
        raise UpdateError(f"could not prepare the WCS update of the inputs: {exc}") from exc
    return commit_wcs_update(candidate, temps)


def publish(product: Path, output_dir: Path) -> Path:
    """Move a finished product into ``output_dir`` atomically; return its new path."""
    dest = output_dir / product.name
    tmp = dest.with_name(dest.name + TMP_SUFFIX)
    shutil.copyfile(product, tmp)
    _fsync(tmp)
    os.replace(tmp, dest)
    product.unlink()
    return dest


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented JSON to ``path`` via a temporary file and a rename."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    _fsync(tmp)
    os.replace(tmp, path)
    return path
