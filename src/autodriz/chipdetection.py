"""Source detection on the chips of exposure files, in a process pool when there are cores to spare.

:mod:`autodriz.detect` searches arrays; this module gives it files: a small picklable
:class:`ChipJob` per chip, read by the worker itself (:func:`detect_chip`), run in up to
``--num-cores`` spawned processes (:func:`detect_chips`), or started early beside other work
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


def _spawn_pool(workers: int) -> Any:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # "spawn": the parent may hold threads (catalog queries, logging, a child's output reader)
    # whose locks a fork would copy in a locked state; workers only need numpy/astropy/photutils.
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=tune_process
    )


def detect_chips(jobs: Sequence[ChipJob], max_workers: int = 1) -> list[Table]:
    """Run :func:`detect_chip` on every job, in a process pool of at most ``max_workers``.

    Parameters
    ----------
    jobs : sequence of ChipJob
        Chips to detect on.
    max_workers : int
        Processes to use (``--num-cores``). With 1, or a single chip, detection runs in this
        process: a worker's start-up (imports, ~2 s) would cost more than it saves.

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
    with _spawn_pool(workers) as pool:
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
    """

    def __init__(self, jobs: Sequence[ChipJob], max_workers: int) -> None:
        workers = max(1, min(int(max_workers), len(jobs)))
        self._pool = _spawn_pool(workers)
        self._futures = {job: self._pool.submit(detect_chip, job) for job in jobs}
        logger.info("source detection started in the background on %d chips in %d processes", len(jobs), workers)

    def take(self, job: ChipJob) -> Table | None:
        """The table of ``job`` (waiting for it), or None when it was not submitted."""
        future = self._futures.get(job)
        return None if future is None else future.result()

    @property
    def jobs(self) -> tuple[ChipJob, ...]:
        """The chips submitted, in order."""
        return tuple(self._futures)

    def close(self) -> None:
        """Cancel what has not started, wait for the workers to exit."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> BackgroundDetection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
