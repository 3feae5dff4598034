"""Fixtures for the e2e tier: a project home with small pipelines, and real Airflow services."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from nightshift.ops.local_airflow import LocalAirflow, fresh
from tests.conftest import small_pipeline_dict, write_pipeline


def scheduled_from_today(data: dict, **schedule: object) -> dict:
    """Return ``data`` starting today, so unpausing queues no scheduled run (backfills still
    reach the past), retried once after 6 s."""
    data["schedule"].update(
        {
            "start_date": dt.date.today().isoformat(),
            "retries": 1,
            "retry_delay_minutes": 0.1,
            **schedule,
        }
    )
    return data


def tiny_pipeline(rows: int = 1500) -> dict:
    """Return a pipeline whose nights are mostly orchestration: one batch a day, 2-day
    window, 10 boosting rounds (the replay test's 90 nights, bench/executor.py)."""
    data = scheduled_from_today(small_pipeline_dict(rows=rows, window=2, batch=2500))
    for model in data["models"]:
        model.update({"num_boost_round": 10} if model["kind"] == "xgboost" else {})
    data["evaluation"]["bootstrap_samples"] = 100
    return data


def e2e_pipelines() -> dict[str, dict]:
    """The small pipeline most e2e tests run, and one whose days are big enough to kill a
    task in the middle of writing one."""
    data = scheduled_from_today(small_pipeline_dict(rows=6000, window=2, batch=2500))
    big = small_pipeline_dict(rows=300_000, window=1, batch=10_000)
    big["schedule"].update(data["schedule"])
    for model in big["models"]:
        model.update({"num_boost_round": 10} if model["kind"] == "xgboost" else {})
    return {"": data, "_big": big}


def project_airflow(root: Path, extra_env: dict[str, str] | None = None) -> LocalAirflow:
    """Return a LocalAirflow on a fresh ``root/airflow-home`` (nothing started) whose
    pipelines are the YAMLs in ``root/pipelines`` and whose project home is ``root/project``."""
    return fresh(
        root / "airflow-home",
        extra_env={
            "NIGHTSHIFT_PIPELINES_DIR": str(root / "pipelines"),
            "NIGHTSHIFT_HOME": str(root / "project"),
            **(extra_env or {}),
        },
    )


@contextmanager
def running_airflow(
    root: Path,
    name: str,
    dask: bool,
    pipelines: dict[str, dict] | None = None,
    extra_env: dict[str, str] | None = None,
    services: tuple[str, ...] = ("api-server", "scheduler", "dag-processor"),
) -> Iterator[tuple[LocalAirflow, Path]]:
    """Start api-server, scheduler and dag-processor on loopback for small pipelines.

    ``pipelines`` maps a suffix of ``name`` to a pipeline (default :func:`e2e_pipelines`).
    With ``dask`` a Dask scheduler and workers run as separate processes and tasks use their
    address; without, every task starts its own local cluster. ``extra_env`` is added to
    every Airflow command's environment. Every service is stopped by its pid afterwards, and
    the test fails if one survives.
    """
    folder = root / "pipelines"
    folder.mkdir()
    pipelines = e2e_pipelines() if pipelines is None else pipelines
    for suffix, data in pipelines.items():
        write_pipeline(folder, data, name=f"{name}{suffix}")
    airflow = project_airflow(
        root,
        {
            # A task whose process vanishes is noticed within seconds, not five minutes.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            **(extra_env or {}),
        },
    )
    try:
        airflow.start(services=services, dask=dask)
        for suffix in pipelines:
            airflow.wait_for_dag(f"nightshift_{name}{suffix}")
        yield airflow, root / "project"
    finally:
        stopped = airflow.stop()
        assert airflow.running() == {}, f"still running after stop: {airflow.running()}"
        print(f"stopped {stopped}")


@pytest.fixture(scope="module")
def airflow_project(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalAirflow, Path]]:
    """Airflow on loopback where each Dask task starts its own local cluster (``nightshift up
    --no-dask``). The other slow modules run as ``make up`` does, on a shared Dask cluster: a
    task's own cluster costs seconds of CPU for its worker processes, on every task."""
    with running_airflow(tmp_path_factory.mktemp("airflow-e2e"), "e2e_conversion", False) as up:
        yield up


@pytest.fixture(scope="module")
def airflow_with_dask(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalAirflow, Path]]:
    """Airflow on loopback whose tasks use a separately started Dask scheduler and workers."""
    with running_airflow(tmp_path_factory.mktemp("airflow-ui"), "ui_conversion", True) as up:
        yield up
