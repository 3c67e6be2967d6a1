"""What a visit's groups and the visit itself ended with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


from autodriz.exitcodes import PRODUCT_CODES, ExitCode
from autodriz.visit.consistency import Consistency
from autodriz.visit.grid import OutputGrid
from autodriz.visit.grouping import VisitGroup


def worst_exit_code(codes: Sequence[ExitCode]) -> ExitCode:
    """The visit's exit code: any failure (highest code) beats DEFAULT_ONLY, which beats OK."""
    failures = [c for c in codes if c not in PRODUCT_CODES]
    if failures:
        return max(failures)
    if ExitCode.DEFAULT_ONLY in codes:
        return ExitCode.DEFAULT_ONLY
    return ExitCode.OK


@dataclass(frozen=True)


class GroupOutcome:
    """One group's run."""

    group: VisitGroup
    input: Path
    exit_code: ExitCode
    message: str
    wcsname: str | None
    products: tuple[Path, ...]
    report: Path | None
    trailer: Path | None
    #: For grism/prism groups: the direct images' correction applied, or why none was.
    wcs_transfer: str = ""


@dataclass(frozen=True)


class VisitResult:
    """The outcome of a visit."""

    exit_code: ExitCode
    root: str
    grid: OutputGrid | None
    outcomes: tuple[GroupOutcome, ...] = ()
    consistency: tuple[Consistency, ...] = ()
    report: Path | None = None
    message: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
