"""Write the outcome: the chosen WCS into the original exposures, products into place.

Inputs are sacred: each original is rewritten once, atomically (a temporary file beside it,
fsync, rename), and only after every temporary file is ready, so a failure before the renames
leaves all of them byte-identical. No file system renames several files at once, so during the
renames each original is kept under a backup name beside it (a hard link, else a copy): a rename
that fails puts back the originals already replaced, and a run killed among the renames leaves
backups that the next run on the dataset puts back before it starts
(:func:`recover_interrupted_update`). Once every rename is durable a commit marker is written
before the backups are removed, so a run killed while removing them is seen as finished, not
undone halfway. Products are moved into place only when complete.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from autodriz import failpoints
from autodriz.childproc import ChildError, run_child
from autodriz.errors import DrizzleError, UpdateError
from autodriz.headerlets import drizzlepac_hdrname, wcs_keywords
from autodriz.solutions.base import Candidate, pending_copies

logger = logging.getLogger(__name__)

TMP_SUFFIX = ".autodriz-tmp"
#: Backup of an original while the update renames are under way (never a final name).
BACKUP_SUFFIX = ".autodriz-bak"
#: Beside the first original of an update once all its renames are durable: the backups left
#: beside the originals are then stale, not a way back (removing them is not atomic either).
COMMIT_SUFFIX = ".autodriz-committed"
#: A solution within this distance (mas, anywhere on a chip) of the WCS an input already carries
#: under the same WCSNAME is that WCS: a re-run's fit lands microarcseconds from the first one's
#: (it starts from a default rebuilt from the archived headers), far below any fit's RMS.
SAME_WCS_MAS = 0.1


def _fsync(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(directory: Path) -> None:
    """Make renames in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory; the renames still happened
        pass
    finally:
        os.close(fd)


def backup_path(original: Path) -> Path:
    """Where ``original`` is kept while the update renames are under way."""
    return original.with_name(original.name + BACKUP_SUFFIX)


def commit_marker_path(original: Path) -> Path:
    """The marker saying that an update whose first original is ``original`` has committed."""
    return original.with_name(original.name + COMMIT_SUFFIX)


def _make_backup(original: Path) -> Path:
    """Keep ``original`` under its backup name: a hard link, else a complete copy.

    The copy goes through a temporary name so that a file under the backup name is always
    whole: the next run may rename it over the original.
    """
    backup = backup_path(original)
    backup.unlink(missing_ok=True)
    failpoints.hit("update.backup")
    try:
        os.link(original, backup)
    except OSError:  # no hard links here (some network/FUSE file systems): copy
        partial = backup.with_name(backup.name + TMP_SUFFIX)
        try:
            shutil.copy2(original, partial)
            _fsync(partial)
            os.replace(partial, backup)
        finally:
            partial.unlink(missing_ok=True)  # gone after the rename; left only by a failure
    return backup


def _put_back(backup: Path, original: Path) -> None:
    """Rename ``backup`` over ``original``.

    A rename between two hard links of one file does nothing and leaves both names (POSIX), so
    a backup that still is the original is simply removed.
    """
    if original.exists() and os.path.samefile(backup, original):
        backup.unlink()
    else:
        os.replace(backup, original)


def recover_interrupted_update(originals: Sequence[Path]) -> list[Path]:
    """Finish or undo an update of ``originals`` that a killed run left; return what was restored.

    A backup exists only while a run is renaming its temporary files over the originals or
    removing the backups afterwards; one found by a later run (which holds the dataset lock)
    means that run died there. Without a commit marker it died among the renames: putting every
    backup back returns all the originals to their state before that run. With the marker every
    original already carries the new WCS, so the leftover backups are removed instead (putting
    back the ones not yet removed would mix old and new WCSs). Either way the inputs are never
    left partly updated. Leftover temporary files of the update are removed.
    """
    markers = [commit_marker_path(o) for o in originals if commit_marker_path(o).is_file()]
    restored, discarded = [], []
    for original in originals:
        backup = backup_path(original)
        if backup.is_file():
            if markers:
                backup.unlink()
                discarded.append(original)
            else:
                _put_back(backup, original)
                restored.append(original)
        for stale in (original.with_name(original.name + TMP_SUFFIX), backup.with_name(backup.name + TMP_SUFFIX)):
            if stale.is_file():  # test first: the folder may be read-only, with nothing to remove
                stale.unlink()
    if restored or discarded:
        _fsync_dir(originals[0].parent)
    _discard(markers)
    if restored:
        logger.warning(
            "an earlier run was killed while writing the WCS into the inputs: restored %s from its "
            "backup, so every input is back as it was before that run", ", ".join(p.name for p in restored)
        )
    if discarded:
        logger.warning(
            "an earlier run was killed after writing the WCS into every input, while removing the "
            "backups: removed the backups left of %s; the inputs keep that run's WCS",
            ", ".join(p.name for p in discarded),
        )
    return restored


#: Fit keywords the a posteriori stage writes into the SCI headers of its copies; drizzlepac
#: writes them into the delivered SCI headers (``align_utils.update_image_wcs_info``).
FIT_KEYWORDS = ("RMS_RA", "RMS_DEC", "CRDER1", "CRDER2", "NMATCHES", "FITGEOM")


def _hdrname(original: Path, wcsname: str) -> str:
    # A FITS string value holds 68 characters; stwcs does not read long-string cards back.
    return drizzlepac_hdrname(original.name, wcsname)[:68]


def _fit_primary_keywords(candidate: Candidate) -> dict[str, tuple[Any, str]]:
    """Keywords drizzlepac puts in the primary header of a fit's headerlet (CATALOG, FIT_RMS)."""
    score = candidate.score
    if candidate.kind != "aposteriori" or score is None:
        return {}
    out: dict[str, tuple[Any, str]] = {}
    if score.catalog:
        out["CATALOG"] = (score.catalog, "reference catalog of the a posteriori fit")
    stats = score.statistics
    # The precision the report shows them at (µas per axis, 0.1 µas for the total).
    for key, value, comment in (
        ("RMS_RA", round(stats.rms_ra_mas, 3), "RMS in RA of the WCS fit (mas)"),
        ("RMS_DEC", round(stats.rms_dec_mas, 3), "RMS in Dec of the WCS fit (mas)"),
        ("NMATCH", stats.n_matches, "number of matched sources in the fit"),
        ("FIT_RMS", round(stats.rms_mas, 4), "RMS (mas) of the 2D fit of the headerlet solution"),
    ):
        if math.isfinite(value):
            out[key] = (int(value) if key == "NMATCH" else float(value), comment)
    return out


def unfitted_wcsnames(candidate: Candidate) -> dict[str, str]:
    """Original (as str) → WCSNAME of the exposures a fit candidate carries but did not fit."""
    return dict(candidate.unfitted_wcsnames)


def wcs_update_job(
    candidate: Candidate,
    originals: Sequence[Path],
    *,
    others: Sequence[Candidate] = (),
    start: Candidate | None = None,
) -> tuple[dict[str, Any], dict[Path, Path]]:
    """The child job that prepares the WCS update of ``originals``, and original → temp file.

    The job (task ``apply_headerlets``) copies each original to a temporary file beside it and
    makes the candidate's solved WCS primary there via an stwcs headerlet; the WCS it replaces
    is archived as a headerlet, and the solutions of ``others`` are attached as headerlets too,
    so that a user can switch to any of them. The caller decides which candidates are worth
    carrying (not those pruned or failed); each headerlet gets drizzlepac's HDRNAME
    ``<file>_<wcsname>-hlet.fits`` and a WCSNAME no other in the file has
    (:func:`autodriz.headerlets.unique_wcsnames`, applied in the child, which sees the file). The
    winner's fit keywords (:data:`FIT_KEYWORDS`) go into the SCI headers and its headerlet's
    primary header. It can run in its own child (:func:`apply_candidate_wcs`) or after a final
    AstroDrizzle run in the same child (``then``), which saves a child's start-up;
    :func:`commit_wcs_update` then renames.

    ``start``, the pipeline-default candidate (updatewcs run), gives the delivered file its
    headers and small extensions, as runastrodriz's in-place processing leaves them: the
    distortion keywords and tables updatewcs writes (``IDCTHETA``, ``WCSDVARR`` …), the ERR and
    DQ WCSs it updates, and the default WCS archived as an alternate WCS when the winner
    replaces it. The pixels still come from the original. Without it (or when updatewcs did
    not run), the original's headers are the base.
    """
    originals = [p for p in originals if p in candidate.copies]
    temps = {original: original.with_name(original.name + TMP_SUFFIX) for original in originals}
    # An exposure screened out of the fit (autodriz.screening) keeps the WCS the fit started
    # from, under that WCS's own name: it is delivered as it was drizzled, never named a fit.
    unfitted = unfitted_wcsnames(candidate)

    def solved(o: Candidate, original: Path) -> dict[str, Any]:
        # A fit whose copies were never written (it lost): its headerlet is made from its
        # starting copy with its WCS applied in memory, in the child.
        pending = pending_copies(o.copies)
        if pending is None:
            return {"solved": str(o.copies[original])}
        cards = pending.edits.get(original) or {}
        return {"solved": str(pending.sources[original]), "sci_cards": {str(k): v for k, v in cards.items()}}

    def others_for(original: Path) -> list[dict[str, Any]]:
        return [
            {
                **solved(o, original),
                "wcsname": o.wcsname,
                # Only a fit has a geometry to tell two fits of one WCSNAME apart.
                "geometry": o.score.geometry if o.kind == "aposteriori" and o.score is not None else "",
                "descrip": f"autodriz {o.kind} candidate: {o.source}"[:68],
                "primary_keywords": _fit_primary_keywords(o),
            }
            for o in others
            if o is not candidate and o.updated and original in o.copies
            and str(original) not in unfitted_wcsnames(o)
        ]

    # Headers read from the default's copies (always written; header shadows once the winner's
    # copies were moved from them: only their pixels are gone).
    with_start = start is not None and start.updated and start.kind == "default"
    job = {
        "task": "apply_headerlets",
        "wcsname": candidate.wcsname,
        "descrip": f"autodriz: {candidate.source}"[:68],
        "fit_keywords": list(FIT_KEYWORDS) if candidate.kind == "aposteriori" else [],
        "primary_keywords": _fit_primary_keywords(candidate),
        "items": [
            {
                "original": str(original),
                "solved": str(candidate.copies[original]),
                "tmp": str(temps[original]),
                "hdrname": _hdrname(original, unfitted.get(str(original), candidate.wcsname)),
                "others": others_for(original),
                **({"start": str(start.copies[original])} if with_start and original in start.copies else {}),
                **({"wcsname": unfitted[str(original)], "primary_keywords": {}, "fit_keywords": []}
                   if str(original) in unfitted else {}),
            }
            for original in originals
        ],
    }
    return job, temps


#: Item keys that name one file of a twin pair; everything else in the two items must agree.
_PER_FILE_KEYS = frozenset({"original", "solved", "tmp", "hdrname", "start"})


def _twin_signature(item: Mapping[str, Any]) -> str:
    same = {k: v for k, v in item.items() if k not in _PER_FILE_KEYS and k != "others"}
    same["others"] = [{k: v for k, v in o.items() if k != "solved"} for o in item.get("others", ())]
    same["has_start"] = "start" in item
    return json.dumps(same, sort_keys=True, default=str)


def pair_twins(flt_job: dict[str, Any] | None, flc_job: dict[str, Any] | None, twins: Mapping[Path, Path],
               folder: Path) -> int:
    """Let the FLT and FLC jobs of one visit share the stwcs work of each exposure's update.

    Marks each FLT item and the FLC item of the same exposure (``twins``: FLC → FLT, as
    :func:`autodriz.solutions.default.exposure_twins` gives them) as twins, when the two would be
    prepared alike (same WCS, solutions, keywords; both from the pipeline default's copies):
    the first child to reach an exposure prepares its file, the other makes its own from it
    (:mod:`autodriz.twinprep`). ``folder``, new and empty, is where the two children say which
    exposures they took and finished. The FLT job goes through its items in order, the FLC job
    from the end. Returns the number of pairs (0: the jobs are left as they were).
    """
    if not flt_job or not flc_job:
        return 0
    job_level = ("task", "wcsname", "descrip", "fit_keywords", "primary_keywords")
    if any(flt_job.get(k) != flc_job.get(k) for k in job_level):
        return 0
    flcs = {str(twins[Path(item["original"])]): item for item in flc_job["items"] if Path(item["original"]) in twins}
    pairs = 0
    for item in flt_job["items"]:
        twin = flcs.get(item["original"])
        if twin is None or "start" not in item:
            continue
        if item["solved"] == item["start"]:
            # The default won: its copies are the drizzled files, which each child writes over.
            continue
        if _twin_signature(item) != _twin_signature(twin):
            continue
        key = Path(item["original"]).stem
        for a, b in ((item, twin), (twin, item)):
            a["twin"] = {
                "key": key, "original": b["original"], "tmp": b["tmp"], "start": b["start"],
                "solved": b["solved"], "others_solved": [o["solved"] for o in b.get("others", ())],
            }
        pairs += 1
    if pairs:
        flt_job["share"] = {"dir": str(folder), "order": 1}
        flc_job["share"] = {"dir": str(folder), "order": -1}
    return pairs


def detach_kept_copies(folder: Path, originals: Sequence[Path]) -> int:
    """Give each working file under ``folder`` that is one of ``originals`` (a hard link) its own copy.

    A delivered exposure is written over its final drizzle's working copy and renamed over the
    original (:func:`autodriz._child._write_over_drizzled`): the working copy and the delivered
    file are then one file. Kept for a user (``--keep-workdirs``), a change to the copy must
    not reach the delivered file. Returns how many were copied.
    """
    copied = 0
    for original in originals:
        for path in folder.rglob(original.name):
            if path.is_file() and os.path.samefile(path, original):
                part = path.with_name(path.name + TMP_SUFFIX)
                shutil.copyfile(original, part)
                os.replace(part, path)
                copied += 1
    return copied


def discard_temps(temps: Mapping[Path, Path]) -> None:
    """Remove prepared temporary files (the update is abandoned; the originals are untouched)."""
    _discard(list(temps.values()))


def commit_wcs_update(candidate: Candidate, temps: Mapping[Path, Path]) -> list[Path]:
    """Make prepared temporary files the originals: fsync each, then rename all, or none.

    Raises
    ------
    UpdateError
        A temporary file is missing or cannot be synced (none renamed, all removed), or a rename
        failed (those already renamed are put back from their backups).
    """
    try:
        for tmp in temps.values():
            failpoints.hit("update.fsync")
            _fsync(tmp)
    except OSError as exc:
        discard_temps(temps)
        raise UpdateError(f"could not prepare the WCS update of the inputs: {exc}; inputs untouched") from exc
    _replace_all(temps)
    unfitted = unfitted_wcsnames(candidate)
    for original in temps:
        if str(original) in unfitted:
            logger.info("updated WCS of %s → %s (left out of the fit: the WCS it started from)",
                        original.name, unfitted[str(original)])
        else:
            logger.info("updated WCS of %s → %s", original.name, candidate.wcsname)
    return list(temps)


def apply_candidate_wcs(
    candidate: Candidate, *, others: Sequence[Candidate] = (), timeout: float = 600.0
) -> list[Path]:
    """Write the candidate's WCS into the original exposures in a child of its own; return them.

    The pipeline prepares the update after the final drizzles instead (:func:`wcs_update_job`
    as their ``then``); this is the same for callers without a drizzle. The WCS travels as an
    stwcs headerlet made from the candidate's working copy; it becomes the primary WCS of the
    original, and the WCS it replaces is archived as a headerlet so that the change can be
    reverted (``stwcs.wcsutil.headerlet.restore_from_headerlet``).

    Raises
    ------
    UpdateError
        Any file could not be prepared, or a rename over an original failed; no original has
        been changed (those already renamed are put back from their backups).
    """
    if not candidate.updated:
        logger.info("the chosen WCS (%s) is already in the originals: nothing to write back", candidate.wcsname)
        return []
    job, temps = wcs_update_job(candidate, list(candidate.copies), others=others)
    try:
        run_child(job, cwd=candidate.workdir, timeout=timeout, label="apply_wcs")
    except ChildError as exc:
        discard_temps(temps)
        involved = Path(exc.current_file).name if exc.current_file else ", ".join(p.name for p in temps)
        raise UpdateError(
            f"could not prepare the WCS update of {involved}: {exc.error_line}; inputs untouched",
            child_log=exc.log_path,
        ) from exc
    except OSError as exc:
        discard_temps(temps)
        raise UpdateError(f"could not prepare the WCS update of the inputs: {exc}; inputs untouched") from exc
    return commit_wcs_update(candidate, temps)


def _discard(paths: Sequence[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _replace_all(temps: Mapping[Path, Path]) -> None:
    """Rename every temporary file over its original: all of them, or none.

    Raises
    ------
    UpdateError
        A backup or a rename failed; every original is as it was (or, if even putting one back
        failed, the message says where its backup is).
    """
    backups: dict[Path, Path] = {}
    try:
        for original in temps:
            backups[original] = _make_backup(original)
    except OSError as exc:
        _discard(list(backups.values()) + list(temps.values()))
        raise UpdateError(
            f"could not keep a backup of {original} before updating it ({exc.strerror or exc}); "
            "inputs untouched"
        ) from exc
    directories = {original.parent for original in temps}
    for directory in directories:
        _fsync_dir(directory)

    replaced: list[Path] = []
    for original, tmp in temps.items():
        try:
            failpoints.hit("update.rename")
            os.replace(tmp, original)
        except OSError as exc:
            not_restored = _roll_back(replaced, backups)
            _discard([b for o, b in backups.items() if o not in replaced] + list(temps.values()))
            if not_restored:
                raise UpdateError(
                    f"could not write the WCS into {original} ({exc.strerror or exc}), and could not put "
                    f"back {', '.join(str(p) for p in not_restored)}: restore each from its "
                    f"{BACKUP_SUFFIX} file beside it"
                ) from exc
            raise UpdateError(
                f"could not write the WCS into {original} ({exc.strerror or exc}); "
                f"inputs untouched ({len(replaced)} already updated were restored)"
            ) from exc
        replaced.append(original)
    for directory in directories:
        _fsync_dir(directory)
    # Every original is updated and the renames are durable: the backups have done their job.
    # Removing them one by one is not atomic, so first say durably that the update committed.
    try:
        marker = _write_commit_marker(list(temps))
    except OSError as exc:
        # The renames are durable but not yet marked: backups left now would be put back by the
        # next run. Remove them (as before the marker existed); a kill here is the one window left.
        logger.warning("could not mark the WCS update as committed (%s); removing the backups directly", exc)
        _discard(list(backups.values()))
        return
    try:
        for backup in backups.values():
            failpoints.hit("update.discard-backup")
            backup.unlink(missing_ok=True)
        for directory in directories:
            _fsync_dir(directory)
        marker.unlink()
    except OSError as exc:
        # Every input has its new WCS; the marker tells the next run to remove what is left.
        logger.warning(
            "the WCS is written into every input, but a backup could not be removed (%s): the next "
            "run on this dataset removes the %s files", exc, BACKUP_SUFFIX,
        )


def _write_commit_marker(originals: Sequence[Path]) -> Path:
    """Durably mark the update of ``originals`` as committed; return the marker's path."""
    marker = commit_marker_path(originals[0])
    partial = marker.with_name(marker.name + TMP_SUFFIX)
    failpoints.hit("update.commit")
    partial.write_text("".join(f"{o.name}\n" for o in originals))
    _fsync(partial)
    os.replace(partial, marker)
    _fsync_dir(marker.parent)
    return marker


def _roll_back(replaced: Sequence[Path], backups: Mapping[Path, Path]) -> list[Path]:
    """Put the backups of ``replaced`` back; return the originals that could not be restored."""
    failed = []
    for original in replaced:
        try:
            _put_back(backups[original], original)
        except OSError as exc:
            logger.error("could not restore %s from %s: %s", original, backups[original], exc)
            failed.append(original)
    for directory in {o.parent for o in replaced}:
        _fsync_dir(directory)
    return failed


@contextlib.contextmanager
def products_or_none(output_dir: Path, names: Sequence[str], wcsname: str | None) -> Iterator[None]:
    """Publish the products and reports inside this block: all of them, or none.

    The inputs were updated just before (the products must match them), so a write that fails
    here (disk full, I/O error) cannot be undone by putting the inputs back. What is undone is
    what was published: none of ``names`` is left under its final name, and the error says that
    the inputs carry the chosen WCS and that the next run makes the products.

    Raises
    ------
    DrizzleError
        A product or report could not be written (exit 7: no product).
    """
    try:
        yield
    except OSError as exc:
        for name in names:
            for path in (output_dir / name, output_dir / (name + TMP_SUFFIX)):
                path.unlink(missing_ok=True)
        raise DrizzleError(
            f"could not write the products into {output_dir} ({exc.strerror or exc}); none was left under its "
            f"final name; the inputs already carry the chosen WCS {wcsname}: run again to make the products"
        ) from exc


def publish(product: Path, output_dir: Path) -> Path:
    """Move a finished product into ``output_dir`` atomically; return its new path.

    The temporary name is a hard link to the product when both are on one file system (a
    full-size DRZ is ~200 MB: no copy), a copy otherwise; either way the product stays in its
    working folder until the final name exists.
    """
    dest = output_dir / product.name
    tmp = dest.with_name(dest.name + TMP_SUFFIX)
    failpoints.hit("publish.copy")
    tmp.unlink(missing_ok=True)  # a link cannot replace a leftover of an interrupted run
    try:
        os.link(product, tmp)
    except OSError as exc:
        logger.debug("cannot hard-link %s into %s (%s): copying it", product.name, output_dir, exc)
        shutil.copyfile(product, tmp)
    _fsync(tmp)
    failpoints.hit("publish.rename")
    os.replace(tmp, dest)
    product.unlink()
    return dest


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented JSON to ``path`` via a temporary file and a rename."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    failpoints.hit("report.json")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    _fsync(tmp)
    os.replace(tmp, path)
    return path


def _sky_grid(header: Mapping[str, Any], shape: tuple[int, int]) -> Any:
    """Sky positions (deg) of a 5 x 5 grid over a chip, from its linear + SIP WCS keywords."""
    import numpy as np
    from astropy.io import fits
    from astropy.wcs import WCS

    keys = {k: v for k, v in wcs_keywords(header).items() if not k.startswith(("CPDIS", "D2IMDIS", "WCSNAME"))}
    wcs = WCS(fits.Header(keys))
    ny, nx = shape
    x, y = np.meshgrid(np.linspace(0, nx - 1, 5), np.linspace(0, ny - 1, 5))
    return np.column_stack(wcs.all_pix2world(x.ravel(), y.ravel(), 0))


def wcs_offset_mas(a: Mapping[str, Any], b: Mapping[str, Any], shape: tuple[int, int]) -> float:
    """Largest distance (mas) between where two chip WCSs put the same pixel (5 x 5 grid)."""
    import numpy as np

    pa, pb = _sky_grid(a, shape), _sky_grid(b, shape)
    dra = (pa[:, 0] - pb[:, 0] + 180.0) % 360.0 - 180.0
    dx = dra * np.cos(np.radians(pa[:, 1]))
    return float(np.max(np.hypot(dx, pa[:, 1] - pb[:, 1])) * 3.6e6)


def keep_delivered_wcs(candidate: Candidate, tolerance_mas: float = SAME_WCS_MAS) -> Candidate:
    """The winner as "nothing to write back" when the inputs already carry it (a re-run).

    A run on autodriz's own output chooses the same solution again, but computed anew it differs
    from the one the inputs carry by rounding (microarcseconds); writing it would change the
    inputs, the products and the fingerprints on every run. When every input already delivers
    this solution — ``DRIZCORR = COMPLETE``, every chip's WCSNAME the candidate's, and the
    candidate's WCS within ``tolerance_mas`` of it everywhere on every chip — the inputs' WCS
    keywords are copied into the candidate's working copies (so the products are drizzled with
    exactly the delivered WCS, as the first run's were) and the candidate is returned with
    ``updated=False``: the inputs are left byte-identical.

    Returns
    -------
    Candidate
        ``candidate`` itself when anything differs, else a copy with ``updated=False``.
    """
    from astropy.io import fits

    if not candidate.updated or not candidate.copies:
        return candidate
    worst = 0.0
    plans: list[tuple[Path, dict[int, dict[str, Any]]]] = []
    for original, copy in candidate.copies.items():
        with fits.open(original) as orig, fits.open(copy) as work:
            if str(orig[0].header.get("DRIZCORR", "")).strip().upper() != "COMPLETE":
                return candidate
            chips: dict[int, dict[str, Any]] = {}
            for index, hdu in enumerate(work):
                if hdu.name != "SCI":
                    continue
                key = ("SCI", int(hdu.header.get("EXTVER", 1)))
                try:
                    delivered = orig[key].header
                except KeyError:
                    return candidate
                if str(delivered.get("WCSNAME", "")).strip() != candidate.wcsname.strip():
                    return candidate
                shape = (int(hdu.header.get("NAXIS2", 1)), int(hdu.header.get("NAXIS1", 1)))
                worst = max(worst, wcs_offset_mas(delivered, hdu.header, shape))
                if worst > tolerance_mas:
                    return candidate
                chips[index] = wcs_keywords(delivered)
            plans.append((copy, chips))
    for copy, chips in plans:
        with fits.open(copy, mode="update") as work:
            for index, keys in chips.items():
                header = work[index].header
                for stale in [k for k in wcs_keywords(header) if k not in keys]:
                    del header[stale]
                for k, v in keys.items():
                    header[k] = v
    logger.info(
        "%s (%s) is already the WCS of the inputs (within %.3f mas of it, limit %.2f mas): the inputs are "
        "left as they are and the products are drizzled with their WCS",
        candidate.name, candidate.wcsname, worst, tolerance_mas,
    )
    from dataclasses import replace

    note = f"already delivered in the inputs (re-run): within {worst:.3f} mas of their WCS, not written again"
    return replace(candidate, updated=False, notes=(*candidate.notes, note))


#: Keywords a fit writes at full double precision, which the delivered headers (written by
#: wcslib through the stwcs headerlet) carry to 14 significant digits.
_FIT_WCS_KEYWORDS = ("CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2")


def round_wcs_to_delivered_precision(hdul: Any) -> int:
    """Round the SCI headers' WCS of an open working copy as the delivered inputs will carry it.

    The fit leaves ``CRVAL``/``CRPIX``/``CD`` at full double precision in the copies, but the
    WCS written into the inputs through a headerlet has 14 significant digits (wcslib's
    ``%.13E``-equivalent formatting): a difference of a few microarcseconds, yet enough that a
    later run, which drizzles with the delivered WCS, would make products differing in the last
    bits. Drizzling with the delivered values from the start makes a re-run's products identical.
    Returns the number of values changed.
    """
    changed = 0
    for hdu in hdul:
        if hdu.name != "SCI":
            continue
        for key in _FIT_WCS_KEYWORDS:
            value = hdu.header.get(key)
            if isinstance(value, float):
                rounded = float(f"{value:.13E}")
                if rounded != value:
                    hdu.header[key] = rounded
                    changed += 1
    return changed


def round_to_delivered_precision(candidate: Candidate) -> None:
    """:func:`round_wcs_to_delivered_precision` on each of the winner's working copies."""
    from astropy.io import fits

    for copy in candidate.copies.values():
        with fits.open(copy, mode="update") as hdul:
            round_wcs_to_delivered_precision(hdul)
