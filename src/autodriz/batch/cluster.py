"""The Dask cluster of a campaign: a client to it, its threads and its workers' memory."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def open_client(workers: int, scheduler: str | None, *, worker_memory_mb: float | None = None) -> Iterator[Any]:
    """A Dask client: to ``scheduler`` if given, else to a loopback LocalCluster of ``workers``.

    ``worker_memory_mb`` gives each LocalCluster worker a ``MEMORY`` resource of that many MB
    (as ``dask worker --resources MEMORY=…`` does on a cluster), so datasets are submitted with
    their memory estimates.

    The LocalCluster's worker processes are children of this process and exit when it does
    (distributed's processes watch their parent), so nothing outlives a killed campaign.
    """
    from distributed import Client, LocalCluster

    if scheduler:
        logger.info("submitting to the Dask scheduler at %s", scheduler)
        with Client(scheduler, timeout="30s") as client:
            yield client
        return
    logger.info("starting a local Dask cluster: %d worker process(es), 1 thread each", workers)
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,  # drizzlepac/stwcs are not thread-safe: one dataset per process
            processes=True,
            host="127.0.0.1",
            scheduler_port=0,
            dashboard_address=None,
            silence_logs=logging.ERROR,
            **({"resources": {"MEMORY": worker_memory_mb}} if worker_memory_mb else {}),
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def capacity(client: Any) -> int:
    """Threads in the cluster now (at least 1, so a cluster still starting gets one task)."""
    try:
        return max(1, sum(client.nthreads().values()))
    except (OSError, TimeoutError):
        return 1


def memory_limit(client: Any) -> float | None:
    """The largest ``MEMORY`` resource a worker of the cluster offers; None when none offers one."""
    try:
        workers = client.scheduler_info().get("workers", {})
    except (OSError, TimeoutError):
        return None
    limits = [float(w.get("resources", {}).get("MEMORY", 0)) for w in workers.values()]
    return max(limits) if limits and max(limits) > 0 else None
