"""A priori WCS candidates: the headerlets HST exposures already carry, offline first.

runastrodriz asks only the astrometry database web service for a priori solutions (and, when
offline, loses about two minutes per call retrying) while the very same headerlets are often
embedded in the files. Here the sources are, in order:

1. ``HDRLET`` extensions embedded in each exposure;
2. a headerlet store folder (``settings.headerlet_store``) of ``<rootname>*_hlet.fits`` files;
3. only when enabled and not offline, the astrometry database (:mod:`autodriz.astrometrydb`),
   one try, bounded by ``settings.service_timeout``.

A solution (``-GSC240``, ``-HSC30`` …) is usable only when every file of the dataset (FLT and FLC
of every member) has it, made for the IDCTAB in use; otherwise the log says which file lacked it
or why its headerlet did not fit. Each usable solution becomes a :class:`Candidate` worked in
``<root>_apriori/<solution>/`` on copies of the pipeline-default copies, with the headerlet applied
as primary WCS by stwcs in a child process, and checked: the copy's WCS must equal the
headerlet's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astropy.io import fits

from autodriz import headerlets as H
from autodriz.astrometrydb import AstrometryDB
from autodriz.childproc import ChildError, run_child
from autodriz.config import Settings
from autodriz.inputs import Dataset
from autodriz.logs import CONSOLE
from autodriz.solutions.base import Candidate, RunContext, StagePlan, prepare_workdir, switch_plan, work_folder

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class FileFacts:
    """What the a priori stage needs to know about one exposure file."""

    original: Path
    working: Path
    rootname: str
    idcroot: str | None


@dataclass(frozen=True)
class Solution:
    """One a priori solution that every file of the dataset has."""

    short: str
    wcsname: str
    headerlets: Mapping[Path, H.HeaderletInfo]

    @property
    def sources(self) -> tuple[str, ...]:
        """Distinct sources, in file order."""
        return tuple(dict.fromkeys(h.source for h in self.headerlets.values()))


@dataclass(frozen=True)
class Inventory:
    """What the a priori stage found, before any file was written.

    Attributes
    ----------
    usable : tuple of Solution
        Solutions every file has, in order of first appearance.
    rejected : mapping
        Solution short name → reasons it is not usable (which file lacked it, and why).
    service : str
        What happened with the astrometry database, in words.
    service_seconds : float
        Time spent on it.
    """

    usable: tuple[Solution, ...]
    rejected: Mapping[str, tuple[str, ...]]
    service: str
    service_seconds: float = 0.0
    files: tuple[FileFacts, ...] = field(default_factory=tuple)


def service_options(settings: Settings) -> tuple[bool, str]:
    """Whether to use the astrometry database, and its URL (settings ``use_astrometry_db`` and
    ``astrometry_db_url``; env ``AUTODRIZ_ASTROMETRY_DB``, ``ASTROMETRY_SERVICE_URL``)."""
    return settings.use_astrometry_db, settings.astrometry_db_url


def _file_facts(default: Candidate) -> list[FileFacts]:
    facts = []
    for original, working in default.copies.items():
        header = fits.getheader(working, 0)
        rootname = str(header.get("ROOTNAME", "")).strip().lower() or original.name.split("_")[0].lower()
        facts.append(FileFacts(original, working, rootname, H.idc_root(header.get("IDCTAB"))))
    return facts


def _fits_file(info: H.HeaderletInfo, facts: FileFacts) -> str | None:
    """Why ``info`` cannot serve ``facts``' file, or None when it can."""
    if facts.idcroot is None:
        return f"{facts.original.name} names no IDCTAB, so no a priori solution can be matched to it"
    if info.idcroot != facts.idcroot:
        return (
            f"{info.describe()} ({info.wcsname}) was made for IDCTAB {info.idcroot or 'unknown'}, "
            f"but {facts.original.name} uses {facts.idcroot}"
        )
    if info.destim and info.destim != facts.rootname:
        return f"{info.describe()} is for exposure {info.destim}, not {facts.rootname}"
    return None


def find_apriori_solutions(
    default: Candidate,
    settings: Settings,
    *,
    use_service: bool | None = None,
    service_url: str | None = None,
) -> Inventory:
    """Inventory the a priori solutions of every file of the default candidate.

    Parameters
    ----------
    default : Candidate
        The pipeline-default candidate; its working copies tell the IDCTAB in use, its keys are
        the original files, whose embedded headerlets are read (read-only).
    settings : Settings
        ``headerlet_store``, ``offline``, ``service_timeout``, ``strict_services`` are used.
    use_service, service_url : optional
        Override :func:`service_options`.

    Returns
    -------
    Inventory

    Raises
    ------
    autodriz.astrometrydb.ServiceUnavailableError
        The service is enabled, unreachable and ``settings.strict_services`` is set.
    """
    facts = _file_facts(default)
    # Per file, per solution: the headerlets found, in source order.
    offers: dict[Path, dict[str, list[H.HeaderletInfo]]] = {f.original: {} for f in facts}
    order: dict[str, None] = {}

    def offer(f: FileFacts, info: H.HeaderletInfo) -> None:
        short = info.short
        if short is None:
            return
        order.setdefault(short, None)
        offers[f.original].setdefault(short, []).append(info)

    for f in facts:
        embedded = H.embedded_headerlets(f.original)
        names = [h.wcsname for h in embedded if h.short]
        logger.info(
            "%s: embedded a priori headerlets: %s", f.original.name, ", ".join(names) if names else "none"
        )
        for info in embedded:
            offer(f, info)

    by_root: dict[str, list[FileFacts]] = {}
    for f in facts:
        by_root.setdefault(f.rootname, []).append(f)

    store = settings.headerlet_store
    if store is not None:
        for rootname, group in by_root.items():
            found = [h for h in H.store_headerlets(store, rootname) if h.short]
            logger.info(
                "headerlet store %s: %s has %s", store, rootname,
                ", ".join(f"{h.wcsname} ({h.path.name if h.path else h.hdrname})" for h in found) or "nothing",
            )
            for info in found:
                for f in group:
                    offer(f, info)

    enabled, url = service_options(settings)
    if use_service is not None:
        enabled = use_service
    if service_url is not None:
        url = service_url
    service_seconds = 0.0
    if not enabled:
        service = "astrometry database not consulted (not enabled; --astrometry-db or AUTODRIZ_ASTROMETRY_DB=on enables it)"
        logger.info(service)
    elif settings.offline:
        service = "astrometry database not consulted (offline)"
        logger.info(service)
    else:
        client = AstrometryDB(url, timeout=settings.service_timeout, strict=settings.strict_services)
        t0 = time.monotonic()
        got = 0
        for rootname, group in by_root.items():
            # Solutions every file of this exposure already has locally are not downloaded.
            have = set.intersection(*({h.wcsname for v in offers[f.original].values() for h in v} for f in group))
            for info in client.headerlets(rootname, wanted=lambda n: H.apriori_short_name(n) is not None, skip=have):
                got += 1
                for f in group:
                    offer(f, info)
            if client.reason:
                break
        service_seconds = time.monotonic() - t0
        service = (
            f"astrometry database {url}: unavailable ({client.reason}) after {service_seconds:.2f} s"
            if client.reason
            else f"astrometry database {url}: {got} headerlet(s) received in {service_seconds:.2f} s"
        )
        logger.info(service)

    usable: list[Solution] = []
    rejected: dict[str, tuple[str, ...]] = {}
    for short in order:
        chosen: dict[Path, H.HeaderletInfo] = {}
        reasons: list[str] = []
        for f in facts:
            candidates = offers[f.original].get(short, [])
            misfits = []
            for info in candidates:
                why = _fits_file(info, f)
                if why is None:
                    chosen[f.original] = info
                    break
                misfits.append(why)
            else:
                if not candidates:
                    reasons.append(f"exposure {f.rootname} ({f.original.name}) lacks it")
                else:
                    reasons.append(f"exposure {f.rootname} ({f.original.name}) has no compatible one: " + "; ".join(misfits))
        if reasons:
            rejected[short] = tuple(reasons)
            logger.info("a priori solution %s not usable: %s", short, "; ".join(reasons))
            continue
        wcsnames = sorted({h.wcsname for h in chosen.values()})
        solution = Solution(short, wcsnames[0], chosen)
        usable.append(solution)
        logger.info(
            "a priori solution %s (%s) usable: all %d file(s) have it, from %s",
            short, ", ".join(wcsnames), len(chosen), " + ".join(solution.sources),
        )
    return Inventory(tuple(usable), rejected, service, service_seconds, tuple(facts))


def make_apriori_candidates(
    default: Candidate,
    dataset: Dataset,
    settings: Settings,
    workroot: Path,
    *,
    use_service: bool | None = None,
    service_url: str | None = None,
    timeout: float | None = None,
) -> list[Candidate]:
    """One candidate per usable a priori solution, each in ``<root>_apriori/<solution>/``.

    Parameters
    ----------
    default : Candidate
        The pipeline-default candidate (``copies``: original → copy with the default WCS).
    dataset : Dataset
        The resolved input (its ``root`` names the working folder).
    settings : Settings
        Effective settings (``apply_apriori``, ``headerlet_store``, ``offline``,
        ``service_timeout``, ``strict_services``, ``drizzle_timeout``).
    workroot : Path
        Folder in which ``<root>_apriori/`` is made (the output folder).
    use_service, service_url : optional
        Override :func:`service_options` (tests, callers with their own settings).
    timeout : float, optional
        Seconds allowed for the stwcs child; default ``settings.drizzle_timeout``.

    Returns
    -------
    list of Candidate
        Possibly empty; ``<root>_apriori/`` is created only when there is something to do.

    Raises
    ------
    autodriz.astrometrydb.ServiceUnavailableError
        Only with ``settings.strict_services`` and an enabled, unreachable service.
    """
    if not settings.apply_apriori:
        logger.info("a priori stage off (%s)", settings.provenance.get("apply_apriori", "settings"))
        return []
    inventory = find_apriori_solutions(default, settings, use_service=use_service, service_url=service_url)
    if not inventory.usable:
        logger.info("no usable a priori solution: no a priori candidate", extra=CONSOLE)
        return []

    # Absolute: the stwcs child runs in another working directory.
    root_dir = prepare_workdir(work_folder(Path(workroot).resolve(), dataset.root, AprioriStrategy.folder))
    items: list[dict[str, str]] = []
    plans: list[tuple[Solution, Path, dict[Path, Path], dict[Path, Path]]] = []
    for solution in inventory.usable:
        workdir = prepare_workdir(root_dir / solution.short)
        copies: dict[Path, Path] = {}
        hlet_files: dict[Path, Path] = {}
        for original, info in solution.headerlets.items():
            # Written by the child, from the default's copy with the headerlet applied in memory.
            copy = workdir / original.name
            # The headerlet goes into the folder whatever its source: what was applied stays
            # next to the copy it was applied to.
            hlet = H.write_headerlet(info, workdir / f"{original.name.split('.')[0]}_{solution.short}_hlet.fits")
            copies[original] = copy
            hlet_files[original] = hlet
            items.append({"source": str(Path(default.copies[original]).resolve()), "copy": str(copy),
                          "headerlet": str(hlet)})
        plans.append((solution, workdir, copies, hlet_files))

    # Each copy is read, changed and written by itself: with cores to spare, the copies are
    # shared among children (one core idled while a single child wrote 16 full-size copies).
    children = max(1, min(settings.num_cores, len(items)))
    logger.info(
        "applying %d a priori solution(s) to %d copies (stwcs, %d child process%s)",
        len(plans), len(items), children, "es" if children > 1 else "",
    )
    limit = timeout if timeout is not None else settings.drizzle_timeout

    def apply(k: int) -> Mapping[str, Any]:
        share = items[k::children]
        label = "apply_apriori" if children == 1 else f"apply_apriori_{k + 1}"
        return run_child({"task": "apply_apriori", "items": share}, cwd=root_dir, timeout=limit, label=label).result

    try:
        if children == 1:
            results = [apply(0)]
        else:
            with ThreadPoolExecutor(max_workers=children, thread_name_prefix="apriori") as pool:
                results = list(pool.map(apply, range(children)))
    except ChildError as exc:
        logger.warning("a priori headerlets could not be applied (%s): no a priori candidate", exc)
        return []
    errors: Mapping[str, str] = {k: v for r in results for k, v in (r.get("errors") or {}).items()}

    candidates = []
    for solution, workdir, copies, hlet_files in plans:
        problems = [f"{Path(c).name}: {errors[str(c)]}" for c in copies.values() if str(c) in errors]
        if not problems:
            for original, copy in copies.items():
                diffs = H.wcs_differences(copy, hlet_files[original].read_bytes())
                if diffs:
                    problems.append(f"{copy.name}: applied WCS differs from the headerlet: {'; '.join(diffs[:3])}")
        if problems:
            logger.warning("a priori solution %s dropped: %s", solution.short, "; ".join(problems))
            continue
        details: dict[str, Any] = {
            "solution": solution.short,
            "wcsname": solution.wcsname,
            "sources": list(solution.sources),
            "headerlets": {
                original.name: {
                    "wcsname": info.wcsname,
                    "hdrname": info.hdrname,
                    "source": info.source,
                    "from": info.describe(),
                    "applied_file": hlet_files[original].name,
                    "distname": info.distname,
                }
                for original, info in solution.headerlets.items()
            },
            "verified": "applied WCS equals the headerlet's in every copy",
            "service": inventory.service,
            "service_seconds": round(inventory.service_seconds, 3),
            "not_usable": {k: list(v) for k, v in inventory.rejected.items()},
        }
        candidate = Candidate(
            name=f"apriori-{solution.short}",
            wcsname=solution.wcsname,
            workdir=workdir,
            copies=copies,
            source=" + ".join(solution.sources),
            updated=True,
            kind="apriori",
            details=details,
        )
        logger.info(
            "candidate %s: %s from %s, applied to %d copies in %s",
            candidate.name, candidate.wcsname, candidate.source, len(copies), workdir, extra=CONSOLE,
        )
        candidates.append(candidate)
    return candidates


class AprioriStrategy:
    """A priori solutions (:func:`make_apriori_candidates`), switched by ``apply_apriori``."""

    folder = "apriori"
    section = "apply_apriori"
    logger = logger

    def plan(self, ctx: RunContext) -> StagePlan:
        """On unless ``apply_apriori`` is off; says which sources are asked, in order."""
        s = ctx.settings
        return switch_plan(
            s, self.section, "a priori",
            "headerlets embedded in the files, then the headerlet store"
            + (", then the astrometry database" if s.use_astrometry_db and not s.offline else ""),
        )

    def propose(self, ctx: RunContext) -> list[Candidate]:
        """One candidate per usable a priori solution, in ``<root>_apriori/<solution>/``."""
        assert ctx.default is not None, "the a priori stage runs after the default's"
        return make_apriori_candidates(ctx.default, ctx.dataset, ctx.settings, ctx.workroot)
