"""The select stage's actions around :mod:`autodriz.select`'s rules: verify in rank order, choose, tidy.

:mod:`autodriz.select` holds every rule as a pure function; this module runs them on a dataset:
it drizzles the verifications (:func:`autodriz.verifydriz.verify_candidate`) in the order the
rules give until one passes, logs each verdict at INFO, and removes the folders of candidates
that lost for cause.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from autodriz.config import Settings
from autodriz.inputs import Dataset
from autodriz.logs import CONSOLE
from autodriz.select import Selection, choose, rank_candidates, rejected_candidates, verification_order
from autodriz.solutions.base import Candidate, remove_workdir
from autodriz.verify import PASS, VerificationResult
from autodriz.verifydriz import verify_candidate

logger = logging.getLogger(__name__)


def verify_until_pass(
    order: tuple[Candidate, ...],
    dataset: Dataset,
    settings: Settings,
    verifications: dict[str, VerificationResult],
    stars: Mapping[str, Mapping[int, Any]] | None = None,
) -> Candidate | None:
    """Verify candidates in rank order until one passes; return it (None when none did).

    A candidate verified earlier in the run (an a priori solution checked before the a
    posteriori stage) is not drizzled again. Verification drizzles (in memory, the lightweight
    ``drizzle`` library) cost a fraction of an AstroDrizzle run each; stopping at the first pass
    keeps that to what the choice needs.
    """
    # Where the a posteriori detection found stars (pixel positions, valid for every
    # candidate's WCS): verification drizzles only there.
    stars = next((c.stars for c in order if getattr(c, "stars", None)), stars)
    for candidate in order:
        if candidate.name not in verifications:
            verifications[candidate.name] = verify_candidate(candidate, dataset, settings=settings, stars=stars)
        if verifications[candidate.name].status == PASS:
            return candidate
    return None


def aposteriori_start(
    candidates: Sequence[Candidate],
    dataset: Dataset,
    settings: Settings,
    verifications: dict[str, VerificationResult],
    stars: Callable[[], Mapping[str, Mapping[int, Any]] | None] | None = None,
) -> Candidate | None:
    """The best a priori solution that the images verify: where the a posteriori fits start.

    ``stars``: gives the stars the background detection found (waiting for it), so that
    verification drizzles only around them (see :func:`verify_until_pass`).
    """
    apriori = [c for c in candidates if c.kind in ("default", "apriori")]
    if not settings.verify or len(apriori) < 2:
        return None
    ranking = rank_candidates(apriori, max_fit_rms_mas=settings.max_fit_rms_mas)
    best = verify_until_pass(verification_order(ranking), dataset, settings, verifications,
                             stars=stars() if stars is not None else None)
    if best is None:
        logger.info("no a priori solution verified: the a posteriori fits start from the pipeline default")
    return best


def select_candidate(
    candidates: Sequence[Candidate],
    dataset: Dataset,
    settings: Settings,
    verifications: dict[str, VerificationResult],
) -> Selection:
    """Rank, verify in rank order until one passes, choose; log every verdict at INFO."""
    ranking = rank_candidates(candidates, max_fit_rms_mas=settings.max_fit_rms_mas)
    for name, why in ranking.pruned.items():
        logger.info("candidate %s pruned before drizzling: %s", name, why)
    for test in ranking.geometry_tests:
        logger.info("fit geometry for %s (%s): %s", test.catalog, test.mode, test.reason)
    if settings.verify:
        verify_until_pass(verification_order(ranking), dataset, settings, verifications)
    else:
        logger.info("verification off (%s): the best-ranked candidate wins on its fit statistics",
                    settings.provenance.get("verify", "settings"))
    selection = choose(ranking, verifications, require_verification=settings.verify)
    for v in selection.verdicts:
        logger.info("candidate %s (%s): %s: %s", v.name, v.wcsname or "-", v.status, v.reason)
    logger.info("chosen WCS: %s (%s): %s", selection.winner.wcsname, selection.winner.name, selection.reason,
                extra=CONSOLE)
    return selection


def remove_workdirs(workdirs: Sequence[Path]) -> None:
    """Delete the run's working folders (in a thread: unlinking releases the GIL)."""
    for wd in workdirs:
        try:
            remove_workdir(wd)
        except OSError as exc:  # the products are out; a folder left behind is worth a word only
            logger.warning("could not remove the working folder %s: %s", wd, exc)


def remove_failed_workdirs(
    candidates: Sequence[Candidate], selection: Selection, verifications: Mapping[str, VerificationResult]
) -> None:
    """Delete the folders of candidates that were pruned or failed verification.

    Only a candidate's own folder (one holding its copies) goes; a folder shared with, or
    holding the folder of, a candidate that did not fail (or the default's) is kept.
    """
    failed = rejected_candidates(selection, verifications)
    needed = [c.workdir.resolve() for c in candidates if c.name not in failed or c is selection.winner]
    for c in candidates:
        wd = c.workdir.resolve()
        if (
            c.name in failed and c is not selection.winner and c.copies and wd.is_dir()
            and not any(n == wd or n.is_relative_to(wd) for n in needed)
        ):
            remove_workdir(wd)
            logger.info("removed the working folder of failed candidate %s: %s", c.name, wd)
