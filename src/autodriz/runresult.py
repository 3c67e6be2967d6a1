"""What processing one dataset returns (:class:`RunResult`) and the console's one line per candidate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from autodriz.exitcodes import ExitCode
from autodriz.select import Verdict


@dataclass(frozen=True)
class RunResult:
    """The outcome of processing one dataset."""

    exit_code: ExitCode
    message: str
    root: str
    products: tuple[Path, ...] = ()
    wcsname: str | None = None
    updated_inputs: tuple[Path, ...] = ()
    trailer: Path | None = None
    report: Path | None = None
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: One line per candidate: its verdict and why (for the command's stdout summary).
    summary: tuple[str, ...] = field(default_factory=tuple)


#: Longest reason in a console summary line; the trailer and the report keep the whole text.
SUMMARY_REASON_CHARS = 120


def _shorten(text: str, limit: int = SUMMARY_REASON_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def summary_lines(verdicts: Sequence[Verdict], limit: int = SUMMARY_REASON_CHARS) -> tuple[str, ...]:
    """One short console line per candidate; candidates that failed for the same reason share one.

    Five catalogs skipped because one service is unreachable are one fact, not five lines: the
    a posteriori candidates whose reasons differ only by their catalog's name (and by "not asked
    again") are grouped as ``aposteriori-REL-GAIAeDR3, -GAIADR3 …``. The trailer and the report
    keep every reason whole.
    """
    groups: dict[tuple[str, str, str], list[Verdict]] = {}
    for v in verdicts:
        catalog = v.name.rsplit("-", 1)[-1] if v.name.startswith("aposteriori-") and v.status != "chosen" else ""
        reason = v.reason.replace("catalog service not asked again: ", "")
        key = (v.status, v.wcsname or "-", reason.replace(catalog, "{catalog}") if catalog else v.name + reason)
        groups.setdefault(key, []).append(v)
    lines = []
    for (status, wcsname, _), members in groups.items():
        first = members[0]
        names = first.name + "".join(", -" + m.name.rsplit("-", 1)[-1] for m in members[1:])
        lines.append(f"{status:>6}  {names} ({wcsname}): {_shorten(first.reason, limit)}")
    return tuple(lines)
