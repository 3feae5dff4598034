"""Fixtures for the e2e tier: a project home with small pipelines, and real Airflow services."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from nightshift.local_airflow import LocalAirflow, fresh
from tests.conftest import small_pipeline_dict, write_pipeline


@pytest.fixture(scope="module")
def airflow_project(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalAirflow, Path]]:
    """Start api-server, scheduler and dag-processor on loopback for one small pipeline.

    No Dask address is given, so every task starts its own local cluster: the path that has
    to survive the real scheduler. Every service is stopped by its pid afterwards.
    """
    root = tmp_path_factory.mktemp("airflow-e2e")
    pipelines = root / "pipelines"
    pipelines.mkdir()
    data = small_pipeline_dict(rows=6000, window=2, batch=2500)
    # Starting today means unpausing queues no scheduled run; backfills still reach the past.
    data["schedule"].update(
        {"start_date": dt.date.today().isoformat(), "retries": 1, "retry_delay_minutes": 0.1}
    )
    write_pipeline(pipelines, data, name="e2e_conversion")
    airflow = fresh(
        root / "airflow-home",
        extra_env={
            "NIGHTSHIFT_PIPELINES_DIR": str(pipelines),
            "NIGHTSHIFT_HOME": str(root / "project"),
        },
    )
    try:
        airflow.start(services=("api-server", "scheduler", "dag-processor"), dask=False)
        airflow.wait_for_dag("nightshift_e2e_conversion")
        yield airflow, root / "project"
    finally:
        stopped = airflow.stop()
        assert airflow.running() == {}, f"still running after stop: {airflow.running()}"
        print(f"stopped {stopped}")
