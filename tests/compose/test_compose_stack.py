"""The multi-machine stack, started for real with docker-compose, driven as its users drive it.

The real docker-compose.yaml plus only compose/stand-ins/override.yaml (local images for
Postgres and the object store where Docker Hub is out of reach), profile ``cpu``: Postgres-backed
Airflow, a Dask scheduler and worker containers, the S3 store holding the lake, MLflow's
server. The pipelines folder is mounted: the shipped examples and a 1,500-row pipeline.
Steps run in file order on one stack; it ends with ``down -v`` and nothing of the project left.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
import yaml

from tests.browser import signed_in_page
from tests.compose.stack import Stack, docker_ready
from tests.conftest import REPO
from tests.e2e.conftest import tiny_pipeline

pytestmark = [pytest.mark.compose, pytest.mark.timeout(2400)]

NAME = "compose_tiny"
DAG_ID = f"nightshift_{NAME}"
NIGHT = "2026-11-20"
BACKFILL = ["2026-11-10", "2026-11-11", "2026-11-12"]
SHOTS = REPO / "test-artifacts" / "screenshots"
TIMINGS: dict[str, float] = {}
DIGEST = """
import datetime as dt, hashlib, json, sys
from nightshift.config import find_pipeline
from nightshift.lake import PROCESSED, Lake, read_bytes
from nightshift.stages import model_stage
pipeline = find_pipeline(sys.argv[1])
lake = Lake(pipeline.lake_root(), pipeline.name)
found = {"lake": pipeline.lake_root()}
for day in sys.argv[2:]:
    for stage in [PROCESSED] + [model_stage(m.name) for m in pipeline.models]:
        part = lake.read(stage, dt.date.fromisoformat(day))
        found[f"{stage}/{day}"] = {
            name.rsplit("/", 1)[-1]: hashlib.sha256(read_bytes(path)).hexdigest()
            for name, path in zip(part.files, part.paths())
        }
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """The stand-in images and the nightshift image built, a .env written; nothing started."""
    problem = docker_ready()
    assert problem is None, problem
    examples = {path.stem: path for path in (REPO / "include" / "pipelines").glob("*.yaml")}
    data = tiny_pipeline()
    data.pop("output", None)  # the deployment decides: the object store
    built = time.monotonic()
    folder = tmp_path_factory.mktemp("compose")
    stack = Stack.built(f"nightshift-test-{os.getpid()}", folder, {**examples, NAME: data})
    TIMINGS["build"] = time.monotonic() - built
    return stack


@pytest.fixture(scope="module")
def stack(project: Stack) -> Iterator[Stack]:
    """The stack up and healthy; ``down -v`` afterwards, and nothing of it left."""
    try:
        TIMINGS["up_to_healthy"] = project.up()
        yield project
    finally:
        print(project.compose("logs", "--tail", "40", check=False)[-6000:])
        project.compose("down", "-v", "--remove-orphans", check=False)
        print("timings:", json.dumps({k: round(v, 1) for k, v in TIMINGS.items()}))
        assert project.leftovers() == [], project.leftovers()


def _digest(stack: Stack, *days: str) -> dict:
    return json.loads(stack.exec("airflow-scheduler", "python", "-c", DIGEST, NAME, *days))


def test_up_every_service_healthy_and_init_checked(stack: Stack) -> None:
    names = {name.rsplit("_", 1)[0] for name in stack.containers()}
    expected = {
        "postgres",
        "minio",
        "airflow-init",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "mlflow",
        "dask-scheduler",
        "dask-worker",
    }
    assert names == expected, names
    init = stack.compose("logs", "--no-color", "airflow-init")
    assert "Database migration done!" in init
    for example in ("retail_conversion", "basket_spend", NAME):
        assert re.search(rf"ok +\S*/{example}\.yaml -> DAG nightshift_{example}", init), example
    assert "ok     production settings" in init
    dags = {d["dag_id"] for d in stack.rest("GET", "dags")["dags"]}
    assert {"nightshift_retail_conversion", "nightshift_basket_spend", DAG_ID} <= dags
    # The shipped example keeps its lake where every worker container reads it.
    lake = stack.exec(
        "airflow-scheduler",
        "python",
        "-c",
        "from nightshift.config import find_pipeline as f; "
        "print(f('retail_conversion').lake_root())",
    )
    assert lake.strip() == "s3://nightshift/lake", lake


def test_a_nightly_run_through_the_rest_api(stack: Stack) -> None:
    started = time.monotonic()
    stack.rest("PATCH", f"dags/{DAG_ID}", {"is_paused": False})
    conf = {"logical_date": None, "conf": {"run_date": NIGHT}}
    run = stack.rest("POST", f"dags/{DAG_ID}/dagRuns", conf)
    [done] = stack.wait_for_runs(DAG_ID, 1)
    TIMINGS["nightly_run"] = time.monotonic() - started
    assert done["state"] == "success", stack.task_states(DAG_ID, run["dag_run_id"])
    digest = _digest(stack, NIGHT)
    assert digest["lake"] == "s3://nightshift/lake"
    assert any(name.endswith(".parquet") for name in digest[f"processed/{NIGHT}"])
    listed = stack.exec("airflow-apiserver", "ls", f"/opt/nightshift/data/reports/{NAME}/{NIGHT}")
    assert "report.html" in listed and "metrics.json" in listed, listed

    from mlflow import MlflowClient

    uri = f"http://127.0.0.1:{stack.env['MLFLOW_PORT']}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(f"nightshift/{NAME}")
    assert len(client.search_runs([experiment.experiment_id])) == 3
    champion = client.get_model_version_by_alias(f"{NAME}.xgboost", "champion")
    assert champion.tags["nightshift.trained_for"] == NIGHT


def _backfill(stack: Stack, *extra: str) -> None:
    stack.exec(
        "airflow-scheduler",
        "airflow",
        "backfill",
        "create",
        "--dag-id",
        DAG_ID,
        "--from-date",
        f"{BACKFILL[0]}T00:00:00+00:00",
        "--to-date",
        f"{BACKFILL[-1]}T12:00:00+00:00",
        "--max-active-runs",
        "1",
        *extra,
    )


def test_backfill_three_dates_then_again_gives_identical_data_and_models(stack: Stack) -> None:
    started = time.monotonic()
    _backfill(stack)
    runs = stack.wait_for_runs(DAG_ID, 1 + 3)
    assert [r["state"] for r in runs] == ["success"] * 4, runs
    first = _digest(stack, *BACKFILL)
    stack.wait_for_backfills(DAG_ID, 1)
    ended = {r["dag_run_id"]: r["end_date"] for r in runs if r["run_type"] == "backfill"}
    assert len(ended) == 3, runs
    TIMINGS["backfill_3"] = time.monotonic() - started
    # Postgres re-queues the existing runs: no pause, no retry (SQLite needs both).
    started = time.monotonic()
    _backfill(stack, "--reprocess-behavior", "completed")
    stack.wait_for_backfills(DAG_ID, 2)
    TIMINGS["backfill_3_again"] = time.monotonic() - started
    runs = stack.runs(DAG_ID)
    assert len(runs) == 4 and all(r["state"] == "success" for r in runs), runs
    # The same three runs ran again: each ended later than in the first pass.
    again = {r["dag_run_id"]: r["end_date"] for r in runs if r["run_type"] == "backfill"}
    assert again.keys() == ended.keys() and all(again[k] > ended[k] for k in ended), again
    assert _digest(stack, *BACKFILL) == first


def _wait_until_running(stack: Stack, run_id: str, tasks: tuple[str, ...]) -> str:
    """Wait until one of ``tasks`` of the run is running; return its name."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        states = stack.task_states(DAG_ID, run_id)
        running = [task for task in tasks if states.get(task) == "running"]
        if running:
            return running[0]
        assert states.get("publish") != "success", f"finished before any of {tasks}: {states}"
        time.sleep(0.5)
    raise TimeoutError(stack.task_states(DAG_ID, run_id))


def test_a_crashed_worker_container_comes_back_and_the_run_succeeds(stack: Stack) -> None:
    # `docker kill` is a manual stop, which Docker's restart policy leaves alone; a crash
    # (OOM killer, segfault) is what it handles: SIGKILL the container's main process.
    before = stack.containers()["dask-worker_1"]
    conf = {"logical_date": None, "conf": {"run_date": "2026-11-21"}}
    run = stack.rest("POST", f"dags/{DAG_ID}/dagRuns", conf)
    _wait_until_running(stack, run["dag_run_id"], ("preprocess", "train_distributed"))
    os.kill(before["State"]["Pid"], signal.SIGKILL)
    finished = stack.wait_for_runs(DAG_ID, 5)
    [mine] = [r for r in finished if r["dag_run_id"] == run["dag_run_id"]]
    assert mine["state"] == "success", stack.task_states(DAG_ID, run["dag_run_id"])
    after = stack.containers()["dask-worker_1"]
    assert after["RestartCount"] >= before["RestartCount"] + 1
    assert after["State"]["Status"] == "running"


def test_a_restarted_scheduler_container_finishes_the_run(stack: Stack) -> None:
    # The tasks run inside the scheduler's container (LocalExecutor): a restart kills them,
    # and the new scheduler resets the orphans; the task retries finish the run.
    conf = {"logical_date": None, "conf": {"run_date": "2026-11-22"}}
    run = stack.rest("POST", f"dags/{DAG_ID}/dagRuns", conf)
    _wait_until_running(stack, run["dag_run_id"], ("preprocess", "fit_features", "evaluate"))
    started = time.monotonic()
    stack.compose("restart", "airflow-scheduler")
    finished = stack.wait_for_runs(DAG_ID, 6)
    TIMINGS["run_after_scheduler_restart"] = time.monotonic() - started
    [mine] = [r for r in finished if r["dag_run_id"] == run["dag_run_id"]]
    assert mine["state"] == "success", stack.task_states(DAG_ID, run["dag_run_id"])


def test_down_and_up_keep_runs_reports_and_the_registry(stack: Stack) -> None:
    stack.compose("down")
    stack.up()
    stack.token_ = None
    assert len(stack.runs(DAG_ID)) == 6
    listed = stack.exec("airflow-apiserver", "ls", f"/opt/nightshift/data/reports/{NAME}")
    assert NIGHT in listed and BACKFILL[0] in listed, listed
    from mlflow import MlflowClient

    uri = f"http://127.0.0.1:{stack.env['MLFLOW_PORT']}"
    champion = MlflowClient(uri, uri).get_model_version_by_alias(f"{NAME}.xgboost", "champion")
    assert champion.tags["nightshift.trained_for"]


def test_a_browser_logs_in_and_opens_model_reports(stack: Stack) -> None:
    from playwright.sync_api import expect, sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        user, password = stack.env["AIRFLOW_ADMIN_USER"], stack.env["AIRFLOW_ADMIN_PASSWORD"]
        browser, page = signed_in_page(playwright, stack.api, user, password)
        page.get_by_role("button", name="Browse").click()
        page.get_by_role("menuitem", name="Model reports").click()
        frame = page.frame_locator("iframe").first
        expect(frame.get_by_role("heading", name=NAME)).to_be_visible()
        expect(frame.get_by_text(NIGHT).first).to_be_visible()
        page.screenshot(path=SHOTS / "20-compose-model-reports.png", full_page=True)
        browser.close()


def test_the_gpu_image_starts_dask_cuda_worker_without_a_gpu(project: Stack) -> None:
    # Built with the gpu extra (dask-cuda) on the same base; no GPU is needed to start it.
    started = time.monotonic()
    project.compose("build", "dask-cuda-worker", profile="gpu", timeout=1500)
    TIMINGS["build_gpu_image"] = time.monotonic() - started
    shown = subprocess.run(
        ["docker", "run", "--rm", "nightshift-gpu:latest", "dask", "cuda", "worker", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "--device-memory-limit" in shown.stdout
    resolved = yaml.safe_load(project.compose("config", profile="gpu"))["services"]
    [devices] = resolved["dask-cuda-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices["driver"] == "nvidia" and devices["capabilities"] == ["gpu"], devices
