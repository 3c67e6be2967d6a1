"""Choose the WCS that is applied: every rule of the choice, as pure functions.

This module answers "why did this WCS win". It reads typed records only (a candidate's
:class:`~autodriz.fitquality.FitScore`, verification outcomes, settings values) and holds every
rule (documented in the README, "How the WCS is chosen"):

1. **Eligibility** (:func:`fit_eligibility`): a candidate without working copies (its strategy
   failed) is out. An a posteriori fit is eligible when it is *valid* — quality 1, 2 or 3 (enough
   matches for its geometry, RMS below the 150 mas validity limit, plausible radial offset,
   exposures consistent), whatever its RMS class, as the archive pipeline applies such fits
   (drizzlepac ``align.perform_align``: any valid fit below ``MAX_FIT_LIMIT``) — and its RMS is
   no larger than ``max_fit_rms_mas`` (``--max-fit-rms``).
2. **Geometry** (:func:`geometry_test`): of the fits of one catalog and mode, the simplest
   geometry (``rscale``, the pipeline's) is preferred; a richer one (``general``: skew and
   anisotropic scale) is preferred only when it has enough matches and explains the residuals
   significantly better (F-test, p below ``alpha``).
3. **Rank** (:func:`rank_candidates`): a posteriori fits first — by the quality of their catalog
   and mode's preferred geometry, catalog preference, relative (``REL``) before image-by-image
   (``IMG``), preferred geometry first, RMS — then a priori solutions (HSC before GSC before
   others, the astrometry database's own preference; a solution's name breaks ties), then the
   pipeline default, always last.
4. **Verify in rank order** (done by the caller, which stops at the first pass, see
   :func:`verification_order`). Verification says ``pass``, ``fail`` or ``unverified``.
5. **Choose** (:func:`choose`): the best-ranked candidate that passed wins; failing that, the
   best-ranked unverified one (a fit then stands on its statistics). So a quality-3 fit that the
   images verify beats an a priori solution, and one they cannot judge ranks below a verified
   a priori solution. A candidate that failed verification never wins.
6. **The default is the fallback** and, when alignment was asked for, makes the run
   ``DEFAULT_ONLY`` (:func:`is_default_only`).

The a posteriori search itself follows rules kept here too: which fits get working copies
(:func:`is_usable_fit`), when to try the sparse-field geometry (:func:`try_sparse_geometry`),
when to fall back to image-by-image fits (:func:`needs_image_by_image`) and when to stop trying
further catalogs (:func:`catalog_search_done`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from autodriz.fitquality import FAILED, TOO_FEW_MATCHES, VALID_QUALITIES, FitScore
from autodriz.solutions.base import Candidate
from autodriz.verify import FAIL, PASS, UNVERIFIED, VerificationResult

#: A priori solution families by preference (substring of the WCSNAME suffix).
APRIORI_PRIORITY: tuple[str, ...] = ("HSC", "GSC")

#: Free parameters of one transformation per fit geometry (tweakwcs ``fitgeom``).
GEOMETRY_PARAMETERS: Mapping[str, int] = {"shift": 2, "rshift": 3, "rscale": 4, "general": 6}

#: A richer geometry must beat a simpler one at this significance (F-test p-value) …
GEOMETRY_TEST_ALPHA = 1e-3
#: … with at least this many matches (drizzlepac's minimum for a ``general`` fit).
GEOMETRY_TEST_MIN_MATCHES = 25

_MODE_ORDER = {"REL": 0, "IMG": 1}


@dataclass(frozen=True)
class GeometryTest:
    """Whether a richer fit geometry explains the residuals significantly better.

    Attributes
    ----------
    catalog, mode : str
        Which fits were compared.
    simple, rich : str
        The geometries compared (e.g. ``rscale``, ``general``).
    preferred : str
        The geometry that won the test.
    statistic : float
        F statistic (NaN when the test could not be made).
    p_value : float
        Probability of an improvement at least this large by chance (NaN when not made).
    reason : str
        One sentence: which test decided, its value and threshold.
    """

    catalog: str
    mode: str
    simple: str
    rich: str
    preferred: str
    statistic: float
    p_value: float
    reason: str


@dataclass(frozen=True)
class Ranking:
    """Eligible candidates best first (the default last) and why the others were pruned.

    ``remarks`` adds, per candidate name, what the geometry test said about it.
    """

    order: tuple[Candidate, ...]
    pruned: Mapping[str, str]
    geometry_tests: tuple[GeometryTest, ...] = ()
    remarks: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Verdict:
    """What became of one candidate."""

    name: str
    wcsname: str
    kind: str
    status: str  # "chosen" | "lost" | "pruned"
    reason: str


@dataclass(frozen=True)
class Selection:
    """The winner, why it won, and a verdict for every candidate (the winner's included)."""

    winner: Candidate
    reason: str
    verdicts: tuple[Verdict, ...]


def _apriori_rank(candidate: Candidate) -> tuple[int, str]:
    suffix = candidate.wcsname.rsplit("-", 1)[-1].upper()
    for i, family in enumerate(APRIORI_PRIORITY):
        if family in suffix:
            return i, candidate.wcsname
    return len(APRIORI_PRIORITY), candidate.wcsname


def fit_rms_mas(candidate: Candidate) -> float:
    """The fit RMS (mas) of an a posteriori candidate, inf when it has no finite one."""
    if candidate.score is None:
        return math.inf
    rms = candidate.score.rms_mas
    return rms if math.isfinite(rms) else math.inf


# --------------------------------------------------------------------------------------------
# the a posteriori search


def is_usable_fit(quality: int) -> bool:
    """Whether a fit of this quality gets working copies (it may be applied): a valid fit."""
    return quality in VALID_QUALITIES


def try_sparse_geometry(qualities: Sequence[int]) -> bool:
    """Try the sparse-field geometry (``shift``) when no richer geometry gave a valid fit.

    Only too few matches or a failed fit count as "no valid fit": a valid but poor fit of a
    richer geometry is better than a shift.
    """
    return all(q in (TOO_FEW_MATCHES, FAILED) for q in qualities)


def needs_image_by_image(relative_qualities: Sequence[int]) -> bool:
    """Fit the exposures one by one (``FIT_IMG``) when no relative fit to a catalog is valid.

    The pipeline's fallback (drizzlepac ``align``: ``match_default_fit`` after
    ``match_relative_fit``).
    """
    return not any(is_usable_fit(q) for q in relative_qualities)


def catalog_search_done(best_quality: int | None, stop_at_quality: int) -> bool:
    """Stop trying further catalogs once one gave a fit of at least this quality.

    The pipeline stops at the first catalog with a quality-1 fit and keeps looking after a
    compromised or poor one (``align.perform_align``); ``stop_at_quality`` (aposteriori.toml)
    says where we stop.
    """
    return best_quality is not None and is_usable_fit(best_quality) and best_quality <= stop_at_quality


# --------------------------------------------------------------------------------------------
# eligibility, geometry and rank


def fit_eligibility(candidate: Candidate, *, max_fit_rms_mas: float) -> str | None:
    """Why an a posteriori candidate may not win, or None when it is eligible.

    Parameters
    ----------
    candidate : Candidate
        ``kind == "aposteriori"`` with working copies.
    max_fit_rms_mas : float
        RMS limit of an eligible fit (``--max-fit-rms``).

    Returns
    -------
    str or None
    """
    score = candidate.score
    if score is None:
        return "no fit score recorded"
    if not score.valid:
        why = "; ".join(candidate.notes) if candidate.notes else ""
        return f"fit quality {score.quality} is not a valid fit" + (f": {why}" if why else "")
    rms = fit_rms_mas(candidate)
    if rms > max_fit_rms_mas:
        return (
            f"fit RMS {rms:.1f} mas exceeds the {max_fit_rms_mas:g} mas limit (--max-fit-rms): "
            "reverting to the a priori solutions"
        )
    return None


def geometry_test(
    simple: FitScore,
    rich: FitScore,
    *,
    alpha: float = GEOMETRY_TEST_ALPHA,
    min_matches: int = GEOMETRY_TEST_MIN_MATCHES,
) -> GeometryTest:
    """Does ``rich`` explain the residuals significantly better than ``simple``? (F-test)

    Both fits were made on the same sources and catalog. With ``n`` matched stars (two
    residual components each), residual sums of squares ``RSS = n · RMS²`` and ``p``
    parameters per transformation (× the number of transformations), the extra parameters
    are justified when ``F = ((RSS_s − RSS_r) / Δp) / (RSS_r / (2n − p_r))`` has a p-value
    below ``alpha``. The matched sets of the two fits may differ by a few clipped stars; the
    smaller ``n`` is used, which makes the test conservative.

    Parameters
    ----------
    simple, rich : FitScore
        Valid fits with fewer and more parameters.
    alpha : float
        Significance threshold.
    min_matches : int
        The richer geometry needs at least this many matches.

    Returns
    -------
    GeometryTest
    """
    # The F distribution's survival function, which scipy.stats.f.sf itself calls: importing
    # scipy.stats costs the run ~0.4 s of its main process, scipy.special a fraction of that.
    from scipy.special import fdtrc

    def result(preferred: str, statistic: float, p: float, reason: str) -> GeometryTest:
        return GeometryTest(simple.catalog, simple.mode, simple.geometry, rich.geometry, preferred, statistic, p, reason)

    n_rich = rich.statistics.n_matches
    if n_rich < min_matches:
        return result(simple.geometry, math.nan, math.nan,
                      f"{rich.geometry} not preferred: {n_rich} matches, fewer than the {min_matches} it needs")
    n = min(simple.statistics.n_matches, n_rich)
    k = max(1, rich.n_transforms)
    p_s = GEOMETRY_PARAMETERS.get(simple.geometry, 4) * k
    p_r = GEOMETRY_PARAMETERS.get(rich.geometry, 6) * k
    dof = 2 * n - p_r
    rss_s, rss_r = n * simple.rms_mas**2, n * rich.rms_mas**2
    if p_r <= p_s or dof <= 0 or not (math.isfinite(rss_s) and math.isfinite(rss_r)):
        return result(simple.geometry, math.nan, math.nan,
                      f"{rich.geometry} not preferred: the F-test cannot be made ({n} matches)")
    if rss_r <= 0:
        statistic = math.inf if rss_s > 0 else 0.0
    else:
        statistic = max(0.0, (rss_s - rss_r) / (p_r - p_s) / (rss_r / dof))
    p_value = float(fdtrc(p_r - p_s, dof, statistic)) if math.isfinite(statistic) else 0.0
    detail = (
        f"F-test {rich.geometry} vs {simple.geometry}: RMS {rich.rms_mas:.2f} vs {simple.rms_mas:.2f} mas, "
        f"n = {n}, F = {statistic:.2f}, p = {p_value:.2g}"
    )
    if p_value < alpha:
        return result(rich.geometry, statistic, p_value,
                      f"{rich.geometry} preferred: {detail} < {alpha:g}")
    return result(simple.geometry, statistic, p_value,
                  f"{simple.geometry} preferred: {detail} ≥ {alpha:g}, the extra terms are not significant")


def _preferred_geometries(
    fits: Sequence[Candidate], alpha: float, min_matches: int
) -> tuple[Candidate, list[GeometryTest]]:
    """The preferred fit of one catalog and mode (simplest geometry unless beaten) and the tests."""
    by_size = sorted(fits, key=lambda c: (GEOMETRY_PARAMETERS.get(c.score.geometry, 99), c.name))  # type: ignore[union-attr]
    current = by_size[0]
    tests = []
    for other in by_size[1:]:
        test = geometry_test(current.score, other.score, alpha=alpha, min_matches=min_matches)  # type: ignore[arg-type]
        tests.append(test)
        if test.preferred == other.score.geometry:  # type: ignore[union-attr]
            current = other
    return current, tests


def rank_candidates(
    candidates: Iterable[Candidate],
    *,
    max_fit_rms_mas: float,
    geometry_alpha: float = GEOMETRY_TEST_ALPHA,
    geometry_min_matches: int = GEOMETRY_TEST_MIN_MATCHES,
) -> Ranking:
    """Prune and order candidates by the rules above (no drizzle needed).

    Parameters
    ----------
    candidates : iterable of Candidate
        Exactly one of them has ``kind == "default"``.
    max_fit_rms_mas : float
        RMS limit of an eligible a posteriori fit.
    geometry_alpha, geometry_min_matches : float, int
        See :func:`geometry_test`.

    Returns
    -------
    Ranking
    """
    candidates = list(candidates)
    defaults = [c for c in candidates if c.kind == "default"]
    if len(defaults) != 1:
        raise ValueError(f"expected exactly one default candidate, got {len(defaults)}")
    pruned: dict[str, str] = {}
    aposteriori, apriori = [], []
    for c in candidates:
        if c.kind == "default":
            continue
        if not c.copies:
            pruned[c.name] = "no solution: " + ("; ".join(c.notes) or "the strategy produced no WCS")
            continue
        if c.kind == "aposteriori":
            why = fit_eligibility(c, max_fit_rms_mas=max_fit_rms_mas)
            if why is None:
                aposteriori.append(c)
            else:
                pruned[c.name] = why
        elif c.kind == "apriori":
            apriori.append(c)
        else:
            pruned[c.name] = f"unknown candidate kind {c.kind!r}"

    groups: dict[tuple[str, str], list[Candidate]] = {}
    for c in aposteriori:
        groups.setdefault((c.score.catalog, c.score.mode), []).append(c)  # type: ignore[union-attr]
    keys: dict[str, tuple] = {}
    tests: list[GeometryTest] = []
    remarks: dict[str, str] = {}
    for fits in groups.values():
        preferred, group_tests = _preferred_geometries(fits, geometry_alpha, geometry_min_matches)
        tests += group_tests
        if group_tests:
            text = "; ".join(t.reason for t in group_tests)
            for c in fits:
                remarks[c.name] = text
        head = preferred.score
        for c in fits:
            keys[c.name] = (
                head.quality, head.catalog_rank, _MODE_ORDER.get(head.mode, 9),  # type: ignore[union-attr]
                0 if c is preferred else 1, fit_rms_mas(c), c.name,
            )
    order = (
        sorted(aposteriori, key=lambda c: keys[c.name])
        + sorted(apriori, key=_apriori_rank)
        + defaults
    )
    return Ranking(tuple(order), pruned, tuple(tests), remarks)


def verification_order(ranking: Ranking) -> tuple[Candidate, ...]:
    """The candidates to verify, best first; the caller stops at the first that passes.

    The default is never verified for the choice: it is the fallback whatever its images say.
    """
    return tuple(c for c in ranking.order if c.kind != "default")


def is_default_only(winner: Candidate, *, alignment_requested: bool) -> bool:
    """Alignment was asked for but the default won: the run's astrometry is only the default's."""
    return alignment_requested and winner.kind == "default"


def choose(
    ranking: Ranking,
    verifications: Mapping[str, VerificationResult],
    *,
    require_verification: bool = True,
) -> Selection:
    """Pick the winner from a ranking and the verification outcomes gathered so far.

    Parameters
    ----------
    ranking : Ranking
        From :func:`rank_candidates`.
    verifications : mapping
        Candidate name → its :class:`~autodriz.verify.VerificationResult`, for the candidates
        that were verified; its ``status`` is ``pass``, ``fail`` or ``unverified`` and its
        ``reason`` says why.
    require_verification : bool
        When False (verification switched off), a candidate nobody verified counts as passed.

    Returns
    -------
    Selection
    """
    alignment = [c for c in ranking.order if c.kind != "default"]
    # (status, reason) of every alignment candidate that has an outcome.
    status: dict[str, tuple[str, str] | None] = {}
    for c in alignment:
        record = verifications.get(c.name)
        if record is not None:
            status[c.name] = (record.status, record.reason)
        else:
            status[c.name] = None if require_verification else (PASS, "verification off")
    passing = [c for c in alignment if (o := status[c.name]) is not None and o[0] == PASS]
    unverifiable = [c for c in alignment if (o := status[c.name]) is not None and o[0] == UNVERIFIED]
    chosen = passing[0] if passing else (unverifiable[0] if unverifiable else None)

    winner: Candidate | None = None
    reason = ""
    verdicts: list[Verdict] = []
    failed: list[str] = []
    for c in ranking.order:
        if c.kind != "default" and c is not chosen:
            outcome = status[c.name]
            if outcome is None:
                why = "not verified" if winner is None else f"ranked below the winner {winner.name}"
            elif outcome[0] == FAIL:
                failed.append(c.name)
                why = f"failed verification: {outcome[1]}"
            elif winner is not None:
                why = f"ranked below the winner {winner.name} (verification {outcome[0]}: {outcome[1]})"
            else:
                why = f"verification {outcome[0]}: {outcome[1]}; a better-verified candidate exists"
            verdicts.append(Verdict(c.name, c.wcsname, c.kind, "lost", why))
            continue
        if c is chosen:
            winner = c
            st, summary = status[c.name]  # type: ignore[misc]  # the chosen one has an outcome
            if st == PASS:
                rank = "best-ranked" if c is alignment[0] else "best-ranked verified"
                reason = f"{rank} {c.kind} candidate; verification: {summary}"
            else:
                reason = (
                    f"best-ranked {c.kind} candidate that did not fail; the images could not verify it "
                    f"({summary}), so it stands on its fit statistics"
                    if c.kind == "aposteriori"
                    else f"best-ranked {c.kind} candidate that did not fail; the images could not verify it ({summary})"
                )
            verdicts.append(Verdict(c.name, c.wcsname, c.kind, "chosen", reason))
            continue
        if c.kind == "default":
            if winner is not None:
                verdicts.append(Verdict(c.name, c.wcsname, c.kind, "lost", f"ranked below the winner {winner.name}"))
                continue
            winner = c
            if failed:
                reason = "no alignment candidate passed verification (" + ", ".join(failed) + "): pipeline default"
            elif len(ranking.order) == 1 and not ranking.pruned:
                reason = "the pipeline-default WCS is the only candidate"
            elif len(ranking.order) == 1:
                reason = "no alignment candidate was eligible: pipeline default"
            else:
                reason = "no alignment candidate passed: pipeline default"
            own = verifications.get(c.name)
            if own is not None and own.status == FAIL:
                reason += f" (its own verification failed: {own.reason})"
            verdicts.append(Verdict(c.name, c.wcsname, c.kind, "chosen", reason))
    assert winner is not None  # the default is always in the ranking
    remarks = ranking.remarks or {}
    verdicts = [replace(v, reason=f"{v.reason}; {remarks[v.name]}") if v.name in remarks else v for v in verdicts]
    if winner.name in remarks:
        reason = f"{reason}; {remarks[winner.name]}"
    for name, why in ranking.pruned.items():
        verdicts.append(Verdict(name, "", "", "pruned", why))
    return Selection(winner, reason, tuple(verdicts))


def rejected_candidates(selection: Selection, verifications: Mapping[str, VerificationResult]) -> set[str]:
    """Names of the candidates pruned before drizzling or rejected by verification.

    They never travel with the delivered files (as headerlets) and their folders are removed.
    """
    pruned = {v.name for v in selection.verdicts if v.status == "pruned"}
    return pruned | {name for name, record in verifications.items() if record.status == FAIL}
