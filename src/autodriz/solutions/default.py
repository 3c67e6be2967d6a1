"""The pipeline-default WCS: ``updatewcs`` with the distortion model and no astrometry database.

This is what HST's calibration pipeline starts from, and what every other candidate is judged
against. It runs in ``<root>_default/`` on copies of the exposures.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from astropy.io import fits

from autodriz import failpoints
from autodriz.childproc import ChildError, ChildResult, reference_env, run_child
from autodriz.errors import ReferenceFileError, WCSStageError
from autodriz.hstio import sci_extensions
from autodriz.logs import CONSOLE
from autodriz.reffiles import distortion_files
from autodriz.config import Settings
from autodriz.solutions.base import Candidate, RunContext, StagePlan, copy_exposures, prepare_workdir
from autodriz.wcstransfer import write_transferred

logger = logging.getLogger(__name__)

#: Exposures taken after this date were guided with GSC 2.4.0 (Gaia-based) positions: their
#: default WCS is named ``…-GSC240`` (runastrodriz ``gsc240_date``, ``verify_gaia_wcsnames``).
GSC240_DATE = "2017-10-01"


def era_wcsname(wcsname: str, date_obs: str) -> str:
    """The default WCS name as the archive gives it for the observation's guide-star era.

    After :data:`GSC240_DATE` the pointing comes from GSC 2.4.0 guide stars, so a WCS without a
    fit suffix (``IDC_<idctab>``) gets ``-GSC240``, as runastrodriz's ``verify_gaia_wcsnames``
    does; earlier data and names that already carry a suffix are returned unchanged.

    Parameters
    ----------
    wcsname : str
        WCSNAME after updatewcs.
    date_obs : str
        ``DATE-OBS`` (``YYYY-MM-DD``); anything unparsable leaves the name unchanged.

    Returns
    -------
    str
    """
    date = str(date_obs).strip()[:10]
    if "-" in wcsname or len(date) != 10 or date[4] != "-" or date[7] != "-":
        return wcsname
    return f"{wcsname}-GSC240" if date > GSC240_DATE else wcsname


def _rename_default_wcs(copies: Mapping[Path, Path], wcsname: str) -> None:
    for copy in copies.values():
        with fits.open(copy, mode="update") as hdul:
            for index, _ in sci_extensions(hdul):
                hdul[index].header["WCSNAME"] = wcsname


def _header_wcsname(path: Path) -> str:
    with fits.open(path) as hdul:
        for index, _ in sci_extensions(hdul)[:1]:
            return str(hdul[index].header.get("WCSNAME", "")).strip() or "header WCS (no WCSNAME)"
    return "header WCS"


def make_default_candidate(
    originals: list[Path],
    workdir: Path,
    folders: Mapping[str, Path | None],
    *,
    allow_header_wcs: bool,
    timeout: float = 3600.0,
    twins: Mapping[Path, Path] | None = None,
    started: Callable[[], None] | None = None,
) -> Candidate:
    """Make the pipeline-default candidate on copies of ``originals`` in ``workdir``.

    Parameters
    ----------
    originals : list of Path
        Every exposure file of the dataset (FLTs and FLCs).
    workdir : Path
        The candidate's folder (``<root>_default``); created, or cleared if an earlier run made it.
    folders : mapping
        Reference-file folders by header prefix (``jref``, ``iref`` …).
    allow_header_wcs : bool
        When distortion reference files are missing, use the header WCS as it is instead of
        failing.
    timeout : float
        Seconds allowed for updatewcs.
    twins : mapping, optional
        FLC → FLT of the same exposure (both in ``originals``): updatewcs runs on the FLT only
        and the FLC's copy gets the same result (:mod:`autodriz.wcstransfer`), unless the two
        differ in more than the CTE correction; then updatewcs runs on the FLC too.
    started : callable, optional
        Called once the updatewcs child exists (:func:`autodriz.childproc.run_child`): work to
        run beside it that must not exist when this process forks it (the background source
        detection's process pool). Not called when no child runs.

    Raises
    ------
    ReferenceFileError
        Reference files are missing and ``allow_header_wcs`` is False; nothing has been copied.
    WCSStageError
        updatewcs failed.
    """
    headers = [dict(fits.getheader(p, 0)) for p in originals]
    refs = distortion_files(headers, folders)
    missing = [r for r in refs if not r.found]
    for ref in refs:
        logger.info(
            "reference file %s = %s: %s", ref.keyword, ref.value, ref.path if ref.found else "NOT FOUND"
        )
    if missing:
        names = ", ".join(f"{r.keyword}={r.value}" for r in missing)
        prefixes = sorted({r.value.split("$", 1)[0] for r in missing if "$" in r.value})
        hint = (
            f"point {'/'.join(prefixes) or 'the reference folder'} at a folder holding them "
            "(--jref/--iref or the jref/iref environment variables)"
        )
        if not allow_header_wcs:
            raise ReferenceFileError(
                f"distortion reference files not available: {names}; {hint}, "
                "or pass --allow-header-wcs to drizzle with the WCS already in the headers"
            )
        logger.warning(
            "distortion reference files not available: %s; using the header WCS as it is "
            "(--allow-header-wcs); the distortion model in the headers, if any, is kept", names
        )
        prepare_workdir(workdir)
        copies = copy_exposures(originals, workdir)
        wcsname = _header_wcsname(originals[0])
        return Candidate(
            name="default",
            wcsname=wcsname,
            workdir=workdir,
            copies=copies,
            source="header WCS as delivered (distortion reference files unavailable)",
            updated=False,
            notes=(f"missing reference files: {names}",),
        )

    prepare_workdir(workdir)
    twins = {flc: flt for flc, flt in (twins or {}).items() if flc in originals and flt in originals}
    # The updatewcs child writes each copy (read, updated in memory, written once); the FLCs
    # whose FLT twin carries its result over are written once, from the FLT's result.
    copies = {p: workdir / p.name for p in originals if p not in twins}
    result, seconds = _updatewcs(copies, workdir, folders, timeout, started=started)
    refused = _transfer_to_twins(twins, copies, workdir)
    if refused:
        more, extra = _updatewcs({p: workdir / p.name for p in refused}, workdir, folders, timeout)
        result.result["wcsnames"].update(more.result["wcsnames"])
        seconds += extra
    copies = {p: workdir / p.name for p in originals}
    names = {n for per_file in result.result["wcsnames"].values() for n in per_file}
    if len(names) != 1:
        raise WCSStageError(f"updatewcs left inconsistent WCSNAMEs across exposures: {sorted(names)}")
    wcsname = names.pop()
    dates = {str(h.get("DATE-OBS", "")) for h in headers}
    named = {era_wcsname(wcsname, d) for d in dates}
    if named != {wcsname} and len(named) == 1:
        wcsname = named.pop()
        _rename_default_wcs(copies, wcsname)
        logger.info("observed after %s (GSC 2.4.0 guide stars): the default WCS is named %s, as the archive names it",
                    GSC240_DATE, wcsname)
    logger.info("pipeline-default WCS: %s (updatewcs took %.1f s)", wcsname, seconds, extra=CONSOLE)
    return Candidate(
        name="default",
        wcsname=wcsname,
        workdir=workdir,
        copies=copies,
        source="updatewcs: distortion model, no astrometry database",
        updated=True,
    )


def _updatewcs(
    copies: Mapping[Path, Path], workdir: Path, folders: Mapping[str, Path | None], timeout: float,
    started: Callable[[], None] | None = None,
) -> tuple[ChildResult, float]:
    """Write ``copies`` (original → copy) with updatewcs's WCS (distortion model, no astrometry
    database), in one child."""
    logger.info("updatewcs (distortion model, no astrometry database) on %d copies", len(copies))
    files = [{"source": str(original), "dest": copy.name} for original, copy in copies.items()]
    try:
        result = run_child(
            {"task": "updatewcs", "files": files},
            cwd=workdir,
            env=reference_env(folders),
            timeout=timeout,
            # Not the warm server, which imports drizzlepac (~3 CPU-s) and starts once this
            # stage is done (autodriz.pipeline): a fork of this process, which has all but
            # stwcs.updatewcs imported (~0.1 CPU-s more, against ~0.7 in a fresh interpreter).
            how="here",
            started=started,
        )
    except ChildError as exc:
        involved = Path(exc.current_file).name if exc.current_file else ", ".join(p.name for p in copies.values())
        raise WCSStageError(f"updatewcs failed on {involved}: {exc.error_line}", child_log=exc.log_path) from exc
    return result, result.seconds


def _transfer_to_twins(twins: Mapping[Path, Path], copies: Mapping[Path, Path], workdir: Path) -> list[Path]:
    """Write each FLC's copy from its FLT twin's updatewcs result; return the FLCs refused."""
    refused = []
    for flc, flt in twins.items():
        try:
            failpoints.hit("default.transfer")
            why = write_transferred(flt, copies[flt], flc, workdir / flc.name)
        except OSError as exc:  # reading an original or writing the copy, as copying could fail
            raise WCSStageError(f"could not write the working copy of {flc.name}: {exc}") from exc
        if why is None:
            logger.info("%s: the pipeline-default WCS of %s carried over (same headers but the CTE "
                        "correction's): no updatewcs of its own", flc.name, flt.name)
        else:
            logger.info("%s: updatewcs runs on it too (not carried over from %s: %s)", flc.name, flt.name, why)
            refused.append(flc)
    return refused


def exposure_twins(dataset: Any) -> dict[Path, Path]:
    """FLC → FLT of every exposure that has both (``autodriz.inputs.Dataset``)."""
    return {e.flc: e.flt for e in dataset.exposures if e.flt is not None and e.flc is not None}


def reference_folders(settings: Settings) -> dict[str, Path | None]:
    """Reference-file folders by header prefix (one per prefix of the instrument registry)."""
    from autodriz.instruments import REGISTRY

    return {prefix: getattr(settings, prefix) for prefix in REGISTRY.reference_prefixes()}


class DefaultStrategy:
    """The pipeline default (:func:`make_default_candidate`): always runs, first; the fallback."""

    folder = "default"
    section = ""
    logger = logger

    def plan(self, ctx: RunContext) -> StagePlan:
        """Always runs: every other candidate starts from its copies."""
        del ctx
        return StagePlan()

    def propose(self, ctx: RunContext) -> list[Candidate]:
        """The one pipeline-default candidate, in ``<root>_default/``."""
        return [
            make_default_candidate(
                list(ctx.originals), ctx.folder(self), reference_folders(ctx.settings),
                allow_header_wcs=ctx.settings.allow_header_wcs, timeout=ctx.settings.drizzle_timeout,
                twins=exposure_twins(ctx.dataset),
                # The background detection starts once the child is forked: its pool's threads
                # must not be in this process when it forks.
                started=ctx.detected.start if ctx.detected is not None else None,
            )
        ]
