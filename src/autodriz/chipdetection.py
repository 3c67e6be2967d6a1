"""Source detection on the chips of exposure files, in a process pool when there are cores to spare.

:mod:`autodriz.detect` searches arrays; this module gives it files: a small picklable
:class:`ChipJob` per chip, read by the worker itself (:func:`detect_chip`), run in up to
``--num-cores`` worker processes (:func:`detect_chips`), or started early beside other work
(:class:`BackgroundDetection`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.table import Table

from autodriz.allocator import tune_process
from autodriz.detect import DetectionParams, detect_sources, empty_source_table

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChipJob:
    """One chip to detect on: the file, the SCI extension's EXTVER, and the settings."""

    path: str
    extver: int
    params: DetectionParams


def _extension(hdul: Any, name: str, extver: int) -> Any:
    # astropy's (EXTNAME, EXTVER) lookup: case-insensitive, a missing EXTVER counts as 1.
    try:
        return hdul[name, extver]
    except KeyError:
        return None


def detect_chip(job: ChipJob) -> Table:
    """Read one chip's SCI (and DQ/ERR when they match its shape) and run :func:`detect_sources`.

    A module-level function of a small picklable job, so that a process pool can run it: the
    worker reads the pixels itself instead of receiving ~100 MB of arrays per chip.
    """
    from astropy.io import fits

    with fits.open(job.path, memmap=True) as hdul:
        sci_hdu = _extension(hdul, "SCI", job.extver)
        if sci_hdu is None or sci_hdu.data is None:
            table = empty_source_table()
            table.meta.update({"n_raw": 0, "reason": "no SCI data"})
            return table
        sci = np.array(sci_hdu.data, dtype=float)
        dq_hdu = _extension(hdul, "DQ", job.extver)
        err_hdu = _extension(hdul, "ERR", job.extver)
        dq = np.array(dq_hdu.data) if dq_hdu is not None and dq_hdu.data is not None else None
        err = np.array(err_hdu.data) if err_hdu is not None and err_hdu.data is not None else None
    if dq is not None and dq.shape != sci.shape:
        dq = None
    if err is not None and err.shape != sci.shape:
        err = None
    return detect_sources(sci, job.params, dq=dq, err=err)


def pool_start_method() -> str:
    """How detection workers start: ``"fork"`` while this process runs a single thread, else ``"spawn"``.

    A forked worker starts with this process's imports (numpy, astropy, photutils, autodriz:
    ~1.2 CPU-s per spawned worker, measured in ``docs/benchmarks.md``); a fork is safe only while
    no other thread may hold a lock the worker would inherit locked (catalog queries, a batch
    task's watchdog, a test harness), so with threads running the workers start afresh: the
    rule of every fork of this process (:func:`autodriz.childproc.can_fork_here`).
    """
    from autodriz.childproc import can_fork_here

    return "fork" if can_fork_here() else "spawn"


def _pool(workers: int, start_method: str | None = None) -> Any:
    import multiprocessing
    import sys
    from concurrent.futures import ProcessPoolExecutor

    method = start_method or pool_start_method()
    if method == "fork":
        # What the workers will use, imported once here instead of in each of them.
        import photutils.background  # noqa: F401
        import photutils.detection  # noqa: F401
        import scipy.ndimage  # noqa: F401
        import scipy.spatial  # noqa: F401

        import autodriz.centroid  # noqa: F401
        import autodriz.daofind  # noqa: F401

        # Buffered output would be written again by each worker as it exits.
        sys.stdout.flush()
        sys.stderr.flush()
    logger.debug("detection workers: %d, started by %s", workers, method)
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context(method), initializer=tune_process
    )


def detect_chips(jobs: Sequence[ChipJob], max_workers: int = 1, start_method: str | None = None) -> list[Table]:
    """Run :func:`detect_chip` on every job, in a process pool of at most ``max_workers``.

    Parameters
    ----------
    jobs : sequence of ChipJob
        Chips to detect on.
    max_workers : int
        Processes to use (``--num-cores``). With 1, or a single chip, detection runs in this
        process: a worker's start-up would cost more than it saves.
    start_method : {"fork", "spawn"}, optional
        How the workers start; by default :func:`pool_start_method`.

    Returns
    -------
    list of astropy.table.Table
        One table per job, in the order of ``jobs`` (results do not depend on the number of
        workers: each chip is detected independently and deterministically).
    """
    workers = max(1, min(int(max_workers), len(jobs)))
    if workers == 1:
        return [detect_chip(job) for job in jobs]
    logger.info("source detection on %d chips in %d processes", len(jobs), workers)
    with _pool(workers, start_method) as pool:
        return list(pool.map(detect_chip, jobs))


class BackgroundDetection:
    """Chips detected in a process pool while the caller does something else.

    Detection needs only the pixels (not the WCS), so it can run beside work that changes
    headers, e.g. the pipeline-default stage's updatewcs child. Use as a context manager:
    leaving it cancels what has not started and waits for the workers to exit, so no
    process outlives the run.

    Parameters
    ----------
    jobs : sequence of ChipJob
        Chips to detect on.
    max_workers : int
        Processes (``--num-cores``).
    start_method : {"fork", "spawn"}, optional
        How the workers start; by default :func:`pool_start_method`.
    start : bool
        Start the workers now; with False, at :meth:`start` (or the first :meth:`take`), e.g.
        once a child has been forked from this process without the pool's threads.
    """

    def __init__(self, jobs: Sequence[ChipJob], max_workers: int, start_method: str | None = None,
                 *, start: bool = True) -> None:
        self._jobs = tuple(dict.fromkeys(jobs))
        self._workers = max(1, min(int(max_workers), len(self._jobs)))
        self._start_method = start_method
        self._pool: Any = None
        self._futures: dict[ChipJob, Any] = {}
        if start:
            self.start()

    def start(self) -> None:
        """Start the workers on every chip (once; ``start=False`` left it for later)."""
        if self._pool is not None:
            return
        self._pool = _pool(self._workers, self._start_method)
        self._futures = {job: self._pool.submit(detect_chip, job) for job in self._jobs}
        logger.info("source detection started in the background on %d chips in %d processes",
                    len(self._jobs), self._workers)

    def take(self, job: ChipJob) -> Table | None:
        """The table of ``job`` (starting the workers if need be, waiting for it), or None when
        it is not one of the jobs."""
        self.start()
        future = self._futures.get(job)
        return None if future is None else future.result()

    @property
    def jobs(self) -> tuple[ChipJob, ...]:
        """The chips to detect on, in order."""
        return self._jobs

    def close(self) -> None:
        """Cancel what has not started, wait for the workers to exit."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> BackgroundDetection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
