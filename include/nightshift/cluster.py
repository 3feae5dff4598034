"""The one place that owns a Dask cluster's lifetime.

``dask_client()`` connects to ``NIGHTSHIFT_DASK_ADDRESS`` when it is set (a shared scheduler,
such as the one ``make up`` or docker-compose starts), and otherwise starts a local cluster
for the duration of the block and tears it down after.

The local cluster's scheduler and workers run as fresh ``dask`` interpreters
(``SubprocessCluster``), not as multiprocessing children of the caller. Under Airflow's real
scheduler the task process runs with the metadata DB deliberately made unreachable
(``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=airflow-db-not-allowed:///``) and its ``__main__`` is the
``airflow`` entry point, so ``LocalCluster(processes=True)``'s spawned workers re-import
Airflow and die with "Could not parse SQLAlchemy URL". Fresh interpreters never import it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from distributed import Client

log = logging.getLogger(__name__)

ADDRESS_ENV = "NIGHTSHIFT_DASK_ADDRESS"
WORKERS_ENV = "NIGHTSHIFT_DASK_WORKERS"


def local_worker_count() -> int:
    """Return how many single-threaded workers the local cluster starts: one per core."""
    configured = os.environ.get(WORKERS_ENV)
    if configured:
        return max(1, int(configured))
    return max(1, len(os.sched_getaffinity(0)))


def describe(client: Client) -> str:
    """Return a one-line description of the cluster: mode, workers, threads, dashboard."""
    info = client.scheduler_info(n_workers=-1)
    workers = info.get("workers", {})
    threads = sum(w.get("nthreads", 0) for w in workers.values())
    return (
        f"scheduler {client.scheduler.address}, {len(workers)} workers, {threads} threads, "
        f"dashboard {client.dashboard_link}"
    )


@contextmanager
def dask_client() -> Iterator[Client]:
    """Yield a connected Client; a local cluster started here is closed on exit."""
    address = os.environ.get(ADDRESS_ENV)
    if address:
        with Client(address, timeout="30s") as client:
            log.info("Dask mode: external, %s", describe(client))
            yield client
        return

    from distributed.deploy.subprocess import SubprocessCluster

    workers = local_worker_count()
    cluster = SubprocessCluster(
        host="127.0.0.1",
        n_workers=workers,
        threads_per_worker=1,
        dashboard_address="127.0.0.1:0",
        worker_kwargs={"memory_limit": os.environ.get("NIGHTSHIFT_DASK_MEMORY_LIMIT", "auto")},
    )
    try:
        with Client(cluster) as client:
            client.wait_for_workers(workers, timeout=60)
            log.info("Dask mode: local (subprocess workers), %s", describe(client))
            yield client
    finally:
        cluster.close()
