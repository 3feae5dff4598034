"""Airflow's LocalExecutor, with workers that import the task libraries once.

Under LocalExecutor on Linux every task is an ``os.fork`` of one of the executor's worker
processes. A stock worker has only Airflow loaded, so each nightshift task imports pandas,
Dask, XGBoost, scikit-learn, MLflow and matplotlib again: 2-8 s of CPU per task, more than a
small night's tasks compute, and on a 2-core machine it decides how many nights a backfill
gets through. These workers import those libraries before their first task, and the tasks
forked from them start with them loaded (shared copy-on-write, never between two tasks'
Python objects).

Only third-party libraries are preloaded, never nightshift's own modules: a change to
nightshift's code reaches the next task without restarting the scheduler, as with the stock
executor. Upgrading one of the preloaded libraries needs a scheduler restart (it already
did for the scheduler itself). A library that fails to import is logged and skipped; the
task that needs it then fails with the import error itself.

Select it with ``AIRFLOW__CORE__EXECUTOR=nightshift.ops.executor.PreloadingLocalExecutor``
(``nightshift up`` and docker-compose do); everything else is LocalExecutor's.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import time
from typing import Any

from airflow.executors.local_executor import LocalExecutor, _run_worker

log = logging.getLogger(__name__)

# What the stages import, heaviest first. Importing starts no threads of these libraries'
# own that a fork would lose mid-work (OpenBLAS and Arrow's jemalloc handle fork themselves;
# OpenMP starts its pool only when XGBoost first trains, which a worker never does).
PRELOAD = (
    "pandas",
    "pyarrow.parquet",
    "pandera.pandas",
    "dask.dataframe",
    "distributed",
    "xgboost.dask",
    "sklearn.linear_model",
    "sklearn.metrics",
    "skops.io",
    "mlflow",
    "mlflow.sklearn",
    "mlflow.xgboost",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "matplotlib.pyplot",
    "jinja2",
)


# Logged by each worker once its libraries are loaded (LocalAirflow.wait_for_executor reads it).
PRELOADED = "nightshift executor: worker preloaded"


def preload(modules: tuple[str, ...] = PRELOAD) -> dict[str, str]:
    """Import ``modules``; return those that failed, with the error (logged, not raised)."""
    import matplotlib

    matplotlib.use("Agg")  # no display in a worker; pyplot would otherwise probe for one
    failed: dict[str, str] = {}
    start = time.perf_counter()
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a missing optional library must not stop the executor
            failed[name] = f"{type(exc).__name__}: {exc}"
            log.warning("nightshift executor: could not preload %s: %s", name, exc)
    log.info(
        PRELOADED + " %d libraries in %.1f s",
        len(modules) - len(failed),
        time.perf_counter() - start,
    )
    return failed


def _run_preloaded_worker(**kwargs: Any) -> None:
    preload()
    _run_worker(**kwargs)


class PreloadingLocalExecutor(LocalExecutor):
    """LocalExecutor whose worker processes preload :data:`PRELOAD` before their first task."""

    def _spawn_worker(self) -> None:
        process = multiprocessing.Process(
            target=_run_preloaded_worker,
            kwargs={
                "logger_name": self.log.name,
                "input": self.activity_queue,
                "output": self.result_queue,
                "unread_messages": self._unread_messages,
                "team_conf": self.conf,
            },
        )
        process.start()
        assert process.pid is not None  # started above
        self.workers[process.pid] = process
