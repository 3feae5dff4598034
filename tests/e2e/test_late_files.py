"""A file that arrives late: the night waits for it in the triggerer, then runs; a file that
never comes fails the night with "no file after N minutes". Real scheduler and triggerer."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from nightshift.generator import generate_day
from tests.e2e.conftest import running_airflow, tiny_pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1200)]

NAME = "late_files"
DAG_ID = f"nightshift_{NAME}"
DAY = dt.date(2026, 10, 14)


def _write_day(landing: Path, day: dt.date) -> None:
    generate_day(day, rows=1500, seed=3).to_csv(landing / f"{day}.csv", index=False)


def _pipeline(landing: Path) -> dict:
    data = tiny_pipeline()
    data["source"] = {
        "kind": "files",
        "path": str(landing / "{date}.csv"),
        "format": "csv",
        "wait": {"timeout_minutes": 0.75, "poke_seconds": 2},
    }
    return data


def _wait_for_state(airflow, run_id: str, task: str, state: str, timeout: float = 300) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if airflow.task_states(DAG_ID, run_id).get(task) == state:
            return
        time.sleep(1)
    raise TimeoutError(f"{task} never {state}: {airflow.task_states(DAG_ID, run_id)}")


def test_a_night_waits_for_a_late_file_and_fails_when_it_never_comes(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    for offset in (2, 1):  # the window's days are there already
        _write_day(landing, DAY - dt.timedelta(days=offset))
    with running_airflow(
        tmp_path,
        NAME,
        dask=False,
        pipelines={"": _pipeline(landing)},
        services=("api-server", "scheduler", "dag-processor", "triggerer"),
    ) as (airflow, _):
        airflow.unpause(DAG_ID)
        late = airflow.trigger(DAG_ID, {"run_date": DAY.isoformat()})
        # The file is not there: the wait is deferred (no worker slot held) ...
        _wait_for_state(airflow, late, "wait_for_source", "deferred")
        assert airflow.task_states(DAG_ID, late).get("ingest") in (None, "none", "scheduled")
        # ... until it arrives; then the night runs.
        _write_day(landing, DAY)
        [run] = airflow.wait_for_runs(DAG_ID, 1, run_ids=[late], timeout=900)
        assert run["state"] == "success", airflow.task_states(DAG_ID, late)

        never = DAY + dt.timedelta(days=1)
        missing = airflow.trigger(DAG_ID, {"run_date": never.isoformat()})
        [run] = airflow.wait_for_runs(DAG_ID, 1, run_ids=[missing], timeout=600)
        states = airflow.task_states(DAG_ID, missing)
        assert run["state"] == "failed" and states["wait_for_source"] == "failed", states
        assert states.get("ingest") in ("upstream_failed", None), states
        path = f"dags/{DAG_ID}/dagRuns/{missing}/taskInstances/wait_for_source/logs/1"
        log = str(airflow.api("GET", f"{path}?full_content=true"))
        assert f"{never}.csv: no file after 0.75 minutes" in log, log[-2000:]
