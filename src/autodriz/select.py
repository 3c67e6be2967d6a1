"""Choose the WCS that is applied: pure functions of candidates, scores and settings.

Rules, in order (documented in the README):

1. **Prune before drizzling.** A candidate without working copies (its strategy failed) is out.
   An a posteriori fit is eligible only with fit quality 1 or 2 and an RMS no larger than
   ``max_fit_rms_mas``; a larger RMS means the a priori solutions (then the default) are used
   instead, as archive operators asked after finding ~5 % of WFPC2 a posteriori fits above
   100 mas.
2. **Rank the eligible.** A posteriori fits first (by quality, then catalog preference, then
   RMS), then a priori solutions (HSC before GSC before others, the astrometry database's own
   preference; a solution's name breaks ties), then the pipeline default, always last.
3. **Verify in rank order** (done by the caller, which stops at the first pass so that no more
   drizzles are spent than needed). Verification says ``pass``, ``fail`` or ``unverified``
   (the images could not say, e.g. too few common sources). The best-ranked candidate that
   passed wins; failing that, the best-ranked unverified one, chosen on its fit statistics or
   a priori standing alone. A candidate that failed verification never wins.
4. **The default is the fallback**: it wins when no alignment candidate is eligible and passed
   or was unverifiable, whatever its own verification says (it is what the pipeline would have
   delivered).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from autodriz.solutions.base import Candidate

#: A priori solution families by preference (substring of the WCSNAME suffix).
APRIORI_PRIORITY: tuple[str, ...] = ("HSC", "GSC")


@dataclass(frozen=True)
class Ranking:
    """Eligible candidates best first (the default last) and why the others were pruned."""

    order: tuple[Candidate, ...]
    pruned: Mapping[str, str]


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


def _number(value: object, default: float = math.inf) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def fit_rms_mas(candidate: Candidate) -> float:
    """The fit RMS (mas) a candidate recorded, inf when it has none.

    A posteriori strategies keep their fit statistics under ``details["statistics"]``; a flat
    ``details["rms_mas"]`` is accepted too.
    """
    d = candidate.details
    stats = d.get("statistics")
    if isinstance(stats, Mapping) and "rms_mas" in stats:
        return _number(stats.get("rms_mas"))
    return _number(d.get("rms_mas"))


def _aposteriori_key(candidate: Candidate) -> tuple[float, float, float, str]:
    return (
        float(candidate.quality),
        _number(candidate.details.get("catalog_rank"), 99.0),
        fit_rms_mas(candidate),
        candidate.name,
    )


def rank_candidates(candidates: Iterable[Candidate], *, max_fit_rms_mas: float) -> Ranking:
    """Prune and order candidates by the rules above (no drizzle needed).

    Parameters
    ----------
    candidates : iterable of Candidate
        Exactly one of them has ``kind == "default"``.
    max_fit_rms_mas : float
        RMS limit of an eligible a posteriori fit.

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
            rms = fit_rms_mas(c)
            if c.quality not in (1, 2):
                why = "; ".join(c.notes) if c.notes else ""
                pruned[c.name] = f"fit quality {c.quality} (only 1 or 2 may win)" + (f": {why}" if why else "")
            elif rms > max_fit_rms_mas:
                pruned[c.name] = (
                    f"fit RMS {rms:.1f} mas exceeds the {max_fit_rms_mas:g} mas limit: "
                    "reverting to the a priori solutions"
                )
            else:
                aposteriori.append(c)
        elif c.kind == "apriori":
            apriori.append(c)
        else:
            pruned[c.name] = f"unknown candidate kind {c.kind!r}"
    order = (
        sorted(aposteriori, key=_aposteriori_key)
        + sorted(apriori, key=_apriori_rank)
        + defaults
    )
    return Ranking(tuple(order), pruned)


PASS, FAIL, UNVERIFIED = "pass", "fail", "unverified"


def choose(
    ranking: Ranking,
    verified: Mapping[str, tuple[str, str]],
    *,
    require_verification: bool = True,
) -> Selection:
    """Pick the winner from a ranking and the verification outcomes gathered so far.

    Parameters
    ----------
    ranking : Ranking
        From :func:`rank_candidates`.
    verified : mapping
        Candidate name → (status, summary) for the candidates that were verified; status is
        ``pass``, ``fail`` or ``unverified``.
    require_verification : bool
        When False (verification switched off), a candidate nobody verified counts as passed.

    Returns
    -------
    Selection
    """
    alignment = [c for c in ranking.order if c.kind != "default"]
    status = {}
    for c in alignment:
        outcome = verified.get(c.name)
        if outcome is None and not require_verification:
            outcome = (PASS, "verification off")
        status[c.name] = outcome
    passing = [c for c in alignment if status[c.name] is not None and status[c.name][0] == PASS]
    unverifiable = [c for c in alignment if status[c.name] is not None and status[c.name][0] == UNVERIFIED]
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
            st, summary = status[c.name]
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
            outcome = verified.get(c.name)
            if outcome is not None and outcome[0] == FAIL:
                reason += f" (its own verification failed: {outcome[1]})"
            verdicts.append(Verdict(c.name, c.wcsname, c.kind, "chosen", reason))
    assert winner is not None  # the default is always in the ranking
    for name, why in ranking.pruned.items():
        verdicts.append(Verdict(name, "", "", "pruned", why))
    return Selection(winner, reason, tuple(verdicts))
