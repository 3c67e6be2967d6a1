"""The contract of a WCS solution strategy: what it reads, what it proposes, where it works.

A strategy (:class:`Strategy`) reads a :class:`RunContext` and proposes :class:`Candidate`
WCSs, each worked out on copies of the exposures in the strategy's own folder
(:func:`work_folder`, named here and nowhere else). It never decides whether a candidate wins:
:mod:`autodriz.select` does, from the candidates' typed scores and their verification.
:mod:`autodriz.pipeline` runs the strategies of a tuple in order, one stage each.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from autodriz.fitquality import FitScore
from autodriz.hstio import PIXEL_EXTNAMES

if TYPE_CHECKING:
    from autodriz.config import Settings
    from autodriz.chipdetection import BackgroundDetection
    from autodriz.inputs import Dataset

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
    copies : dict or PendingCopies
        Original exposure path → its working copy holding this candidate's WCS (an a posteriori
        fit's are written when first read: :class:`PendingCopies`).
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
    unfitted_wcsnames : mapping
        Original (as str) → WCSNAME, for exposures the candidate carries but did not fit (left
        out by :mod:`autodriz.screening`): they keep, and are delivered under, the WCS the fit
        started from.
    stars : mapping
        Original (as str) → EXTVER → ``(K, 2)`` chip pixel positions (x, y, 0-based) of the
        stars the a posteriori detection kept on that exposure, brightest first. Pixel
        positions hold for any WCS of the exposure: verification drizzles only where they are
        (:func:`autodriz.verification.singles.source_frame`). Empty when nothing was detected.
    """

    name: str
    wcsname: str
    workdir: Path
    copies: Mapping[Path, Path]
    source: str
    updated: bool = True
    notes: tuple[str, ...] = field(default_factory=tuple)
    kind: str = "default"
    quality: int = -1
    details: Mapping[str, Any] = field(default_factory=dict)
    score: FitScore | None = None
    unfitted_wcsnames: Mapping[str, str] = field(default_factory=dict)
    stars: Mapping[str, Mapping[int, np.ndarray]] = field(default_factory=dict, compare=False, repr=False)


def prepare_workdir(path: Path) -> Path:
    """Create an empty scratch folder at ``path``, clearing an earlier autodriz one.

    A folder that exists but is not marked as ours is never deleted: that is an error.
    """
    leftover = _removal_name(path)
    if leftover.exists():
        # A run killed while removing this folder left it half-deleted under its removal name.
        logger.info("finishing the removal of an earlier run's working folder: %s", leftover)
        shutil.rmtree(leftover)
    if path.exists():
        if not (path / WORKDIR_MARKER).exists():
            raise FileExistsError(
                f"{path} exists and was not made by autodriz; move it away or choose another --output-dir"
            )
        logger.info("removing the working folder of an earlier run: %s", path)
        remove_workdir(path)
    path.mkdir(parents=True)
    (path / WORKDIR_MARKER).write_text("scratch folder of autodriz; safe to delete\n")
    return path


def _removal_name(path: Path) -> Path:
    """The hidden name a working folder is renamed to while it is being deleted."""
    return path.with_name(f".{path.name}.autodriz-removing")


def remove_workdir(path: Path) -> None:
    """Delete a scratch folder made by :func:`prepare_workdir` (and nothing else).

    The folder is first renamed (atomic) to a hidden removal name, then deleted: ``rmtree``
    may unlink the marker before the rest, and a run killed in between must not leave an
    unmarked folder under the working name, which the next run would refuse to touch.
    """
    if not (path / WORKDIR_MARKER).exists():
        return
    doomed = _removal_name(path)
    if doomed.exists():
        shutil.rmtree(doomed)
    path.rename(doomed)
    shutil.rmtree(doomed)


def copy_exposures(originals: list[Path], workdir: Path) -> dict[Path, Path]:
    """Copy the exposures into ``workdir``; return original → copy (copies are writable)."""
    copies = {}
    for original in originals:
        dest = workdir / original.name
        shutil.copyfile(original, dest)
        dest.chmod(0o644)
        copies[original] = dest
    return copies


class PendingCopies(Mapping[Path, Path]):
    """Working copies written only when first read: original → copy, as a ``Candidate.copies``.

    An a posteriori fit changes a few keywords of each SCI header (:func:`autodriz.hstio.chip_wcs_cards`)
    of copies that are otherwise its starting candidate's. Most fits lose, and a loser is never
    drizzled: its copies (1.4 GB for a full-size ACS/WFC visit with FLT and FLC) need never be
    written. Until they are, :attr:`sources` (the starting candidate's copies) and :attr:`edits`
    say what they would hold: verification applies the edits in memory to what it reads
    (:func:`autodriz.verifydriz.verify_candidate`), and the update of the inputs makes the
    headerlet of a loser from them (:func:`autodriz.products.wcs_update_job`). Reading an item
    (the winner's final drizzle) writes every copy first, into ``folder``, as
    :func:`copy_exposures` and :func:`autodriz.hstio.apply_sci_cards` would.

    Membership, length and iteration never write; two of them are equal when they would write
    the same files.
    """

    def __init__(
        self, sources: Mapping[Path, Path], folder: Path, edits: Mapping[Path, Mapping[int, Sequence[Any]]]
    ) -> None:
        self.sources = dict(sources)
        self.folder = Path(folder)
        self.edits = {original: dict(by_extver) for original, by_extver in edits.items()}
        self._written = False

    @property
    def written(self) -> bool:
        """Whether the copies are on disk."""
        return self._written

    def write(self, *, take_sources: bool = False, finish: Callable[[Any], object] | None = None) -> None:
        """Write the copies (once): copy each source into :attr:`folder`, then apply its edits.

        Parameters
        ----------
        take_sources : bool
            Move each source into :attr:`folder` instead of copying it, and leave a
            :func:`header_shadow` under its name: for the winner, once nothing will read the
            sources' pixels again (verification is over). Its starting candidate's headerlet
            is still made from the shadow, whose headers and small extensions are the
            source's; its pixels, 1.4 GB for a full-size ACS/WFC visit, are not written a
            second time. A source on another file system, or one that is an original, is
            copied as before.
        finish : callable, optional
            Called with each copy's HDUList, opened in update mode, after its edits (in the
            same opening): e.g. :func:`autodriz.products.round_wcs_to_delivered_precision`.
        """
        if self._written:
            return
        from astropy.io import fits

        from autodriz.hstio import apply_sci_cards

        t0 = time.perf_counter()
        prepare_workdir(self.folder)
        copies, moved = {}, set()
        originals = {o.resolve() for o in self.sources}
        for source in self.sources.values():
            dest = self.folder / source.name
            if take_sources and source.resolve() not in originals and _move_leaving_shadow(source, dest):
                moved.add(source)
                copies[source] = dest
            else:
                copies.update(copy_exposures([source], self.folder))
        t1 = time.perf_counter()
        for original, source in self.sources.items():
            by_extver = self.edits.get(original)
            if by_extver or finish is not None:
                with fits.open(copies[source], mode="update") as hdul:
                    if by_extver:
                        apply_sci_cards(hdul, by_extver)
                    if finish is not None:
                        finish(hdul)
        self._written = True
        seconds = f"{t1 - t0:.2f} s, edits {time.perf_counter() - t1:.2f} s"
        if moved:
            # Said where a user of --keep-workdirs looks: the folder the copies came from now
            # holds header shadows, whose pixels read as zeros.
            logger.info(
                "working copies of %s: %d of %d moved from %s, where header shadows (pixels read as "
                "zeros) stay for the headerlets made from them (%s)",
                self.folder.name, len(moved), len(copies),
                ", ".join(sorted({str(p.parent) for p in moved})), seconds,
            )
        else:
            logger.debug("working copies written in %s (%d copied; %s)", self.folder, len(copies), seconds)

    def __getitem__(self, original: Path) -> Path:
        source = self.sources[original]
        self.write()
        return self.folder / source.name

    def __iter__(self) -> Iterator[Path]:
        return iter(self.sources)

    def __len__(self) -> int:
        return len(self.sources)

    def __contains__(self, original: object) -> bool:
        return original in self.sources

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PendingCopies):
            return NotImplemented
        return (self.sources, self.folder, self.edits) == (other.sources, other.folder, other.edits)

    __hash__ = None  # type: ignore[assignment]  # mutable (written or not), like the dict it stands for

    def __repr__(self) -> str:
        state = "written" if self._written else "not written"
        return f"PendingCopies({len(self)} files in {self.folder}, {state})"


#: Extensions whose pixels a headerlet never reads: a header shadow leaves them as holes.
SHADOWED_EXTNAMES = PIXEL_EXTNAMES


def header_shadow(source: Path, dest: Path) -> None:
    """Write ``dest``: ``source`` byte for byte, but for the pixels of SCI, ERR and DQ.

    Those data blocks are left as holes of a sparse file, which read as zeros and take neither
    disk nor page cache; every header and every other extension (distortion arrays, headerlets,
    WCSCORR) is copied exactly, so a headerlet made from the shadow is the one made from the
    source. The layout comes from astropy (each HDU's ``fileinfo``); no HDU is parsed beyond
    it. (``HDUList.fileinfo`` would also serialise every header of the file to see whether one
    was resized, on each call: ~0.017 s per delivered full-size file of 19 extensions.)
    """
    from astropy.io import fits

    with fits.open(source, memmap=True, lazy_load_hdus=False) as hdul:
        spans = []
        for hdu in hdul:
            info = hdu.fileinfo()
            hole = hdu.name in SHADOWED_EXTNAMES and hdu.header.get("NAXIS", 0) > 0
            end = info["datLoc"] + (0 if hole else info["datSpan"])
            spans.append((info["hdrLoc"], end))
    size = source.stat().st_size
    with open(source, "rb") as src, open(dest, "wb") as out:
        for start, end in spans:
            src.seek(start)
            out.seek(start)
            out.write(src.read(end - start))
        out.truncate(size)


def _move_leaving_shadow(source: Path, dest: Path) -> bool:
    """Rename ``source`` to ``dest`` and leave its :func:`header_shadow`; False if not renamable."""
    try:
        os.rename(source, dest)
    except OSError as exc:
        if exc.errno == errno.EXDEV:  # another file system: the caller copies
            return False
        raise
    dest.chmod(0o644)
    header_shadow(dest, source)
    return True


def pending_copies(copies: Mapping[Path, Path]) -> PendingCopies | None:
    """``copies`` when they are :class:`PendingCopies` not yet written, else None (files on disk)."""
    return copies if isinstance(copies, PendingCopies) and not copies.written else None


def work_folder(workroot: Path, root: str, folder: str) -> Path:
    """The working folder of a strategy for one dataset: ``<workroot>/<root>_<folder>``.

    The one place that names the folders (``jb1f89010_default``, ``…_apriori``,
    ``…_aposteriori``); strategies and the pipeline both ask it.
    """
    return Path(workroot) / f"{root}_{folder}"


@dataclass(frozen=True)
class RunContext:
    """What a strategy may read when it proposes candidates for one dataset.

    Attributes
    ----------
    dataset : Dataset
        The resolved input.
    settings : Settings
        Effective settings of the run.
    workroot : Path
        Folder that receives the strategies' working folders (the output folder).
    originals : tuple of Path
        Every exposure file of the dataset (FLTs, then FLCs); never modified by a strategy.
    default : Candidate or None
        The pipeline-default candidate every alignment strategy starts from; None while the
        first strategy (the one that makes it) runs.
    candidates : tuple of Candidate
        What the strategies before this one proposed (the default first).
    verified_start : callable
        Returns the best a priori candidate the images verify, or None (the pipeline verifies
        on the first call and remembers): where a fit should start, as runastrodriz aligns
        from the a priori WCS it applied.
    detected : BackgroundDetection or None
        Source tables being detected on the originals' pixels since the run began (with
        ``--num-cores`` >= 2; detection needs no WCS), for a strategy that measures sources.
    """

    dataset: Dataset
    settings: Settings
    workroot: Path
    originals: tuple[Path, ...]
    default: Candidate | None = None
    candidates: tuple[Candidate, ...] = ()
    verified_start: Callable[[], Candidate | None] = field(default=lambda: None, compare=False)
    detected: BackgroundDetection | None = field(default=None, compare=False)

    @property
    def root(self) -> str:
        """The dataset's product root (``jb1f89010``)."""
        return self.dataset.root

    def folder(self, strategy: Strategy) -> Path:
        """The working folder of ``strategy`` for this dataset (see :func:`work_folder`)."""
        return work_folder(self.workroot, self.dataset.root, strategy.folder)


@dataclass(frozen=True)
class StagePlan:
    """Whether a strategy's stage runs for a dataset, in words for the log and the report.

    Attributes
    ----------
    lines : tuple of str
        What the plan says about this stage (on or off and why, exposures left out …).
    skipped : str or None
        Why the stage does not run; None when it runs.
    """

    lines: tuple[str, ...] = ()
    skipped: str | None = None


def switch_plan(settings: Settings, section: str, title: str, on: str) -> StagePlan:
    """The plan of a stage that only a settings switch turns off.

    Parameters
    ----------
    settings : Settings
        Effective settings.
    section : str
        The Settings switch (empty: the stage cannot be switched off).
    title : str
        The stage in words (``a priori``).
    on : str
        What the stage does when on, after ``"<title> stage on: "``.

    Returns
    -------
    StagePlan
    """
    if section and not getattr(settings, section):
        line = f"{title} stage off ({settings.provenance.get(section, 'settings')})"
        return StagePlan((line,), line)
    return StagePlan((f"{title} stage on: {on}",))


@runtime_checkable
class Strategy(Protocol):
    """A way of obtaining candidate WCSs for a dataset; the pipeline runs one stage per strategy.

    Attributes
    ----------
    folder : str
        Names the strategy's stage (trailer waypoints, report timings) and its working folder
        ``<root>_<folder>`` (:func:`work_folder`).
    section : str
        The :class:`~autodriz.config.Settings` switch that turns it on (``apply_apriori``,
        ``compute_aposteriori``); empty when it cannot be switched off. Its own parameters, if
        any, live in ``config/<folder>.toml``.
    logger : logging.Logger
        The logger of the strategy's module (``autodriz.…``: the trailer records that
        hierarchy): its decisions are logged there at INFO.
    """

    folder: str
    section: str
    logger: logging.Logger

    def plan(self, ctx: RunContext) -> StagePlan:
        """Whether the stage runs for ``ctx.dataset`` (``ctx.default`` is set) and why, in words.

        The pipeline logs the lines at INFO, keeps them in the report and, for a stage that is
        skipped, logs a ``SKIPPED`` waypoint instead of running it.
        """
        ...

    def propose(self, ctx: RunContext) -> list[Candidate]:
        """Candidates for ``ctx.dataset`` (possibly none), each with copies in its own folder.

        A candidate that could not be made is returned without copies and with the reason in
        ``notes``; only what the user must act on (a missing reference file, a strict service
        that is down) is raised, as an :class:`~autodriz.errors.AutodrizError`.
        """
        ...
