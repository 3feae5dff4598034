"""The multi-machine stack, started for real with docker-compose, driven as its users drive it.

The real docker-compose.yaml plus only compose/stand-ins/override.yaml (local images for
Postgres and the object store where Docker Hub is out of reach), profile ``cpu``: Postgres-backed
Airflow with users and roles (FAB), a Dask scheduler and worker containers, the S3 store
holding the lake, MLflow's server behind its own authentication. The pipelines folder is
mounted: the shipped examples, a 1,500-row pipeline, another team's and a broken one.
Steps run in file order on one stack; it ends with ``down -v`` and nothing of the project left.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.browser import shot_on_failure, signed_in_page
from tests.compose.stack import Stack, docker_ready
from tests.conftest import REPO
from tests.e2e.conftest import tiny_pipeline

pytestmark = [pytest.mark.compose, pytest.mark.timeout(2400)]
SCENARIO = True  # one stack's life, step by step: kept in file order (tests/conftest.py)

NAME = "compose_tiny"
DAG_ID = f"nightshift_{NAME}"
OTHER = "compose_other"  # another team's pipeline: never unpaused
BROKEN = "compose_broken"  # XGBoost refuses its parameters on the Dask worker
NIGHT = "2026-11-20"
BACKFILL = ["2026-11-10", "2026-11-11", "2026-11-12"]
SHOTS = REPO / "test-artifacts" / "screenshots"
TIMINGS: dict[str, float] = {}
USERS: dict[str, str] = {}  # name -> password, of the users the roles test creates
DIGEST = """
import datetime as dt, hashlib, json, sys
from nightshift.config.pipeline import find_pipeline
from nightshift.storage.lake import PROCESSED, lake_for, read_bytes
from nightshift.night.inputs import model_stage
pipeline = find_pipeline(sys.argv[1])
lake = lake_for(pipeline)
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
    other = {**data, "access": {"other-readers": "read", "other-oncall": "operate"}}
    broken = json.loads(json.dumps(data))
    broken["schedule"]["retries"] = 0
    [xgboost] = [m for m in broken["models"] if m["kind"] == "xgboost"]
    xgboost["params"] = {"max_depth": -1}
    data["access"] = {"tiny-readers": "read"}
    built = time.monotonic()
    folder = tmp_path_factory.mktemp("compose")
    pipelines = {**examples, NAME: data, OTHER: other, BROKEN: broken}
    stack = Stack.built(f"nightshift-test-{os.getpid()}", folder, pipelines)
    TIMINGS["build"] = time.monotonic() - built
    return stack


@pytest.fixture(scope="module")
def stack(project: Stack) -> Iterator[Stack]:
    """The stack up and healthy; ``down -v`` afterwards, and nothing of it left."""
    saved = {name: os.environ.get(name) for name in project.mlflow_env()}
    os.environ.update(project.mlflow_env())  # MlflowClient signs in as the service account
    try:
        TIMINGS["up_to_healthy"] = project.up()
        yield project
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
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
    admin = stack.env["AIRFLOW_ADMIN_USER"]
    assert f'User "{admin}" created with role "Admin"' in init
    assert "role tiny-readers: read (nightshift_compose_tiny)" in init
    assert "role other-oncall: operate (nightshift_compose_other)" in init
    dags = {d["dag_id"] for d in stack.rest("GET", "dags")["dags"]}
    assert {"nightshift_retail_conversion", "nightshift_basket_spend", DAG_ID} <= dags
    # The shipped example keeps its lake where every worker container reads it.
    lake = stack.exec(
        "airflow-scheduler",
        "python",
        "-c",
        "from nightshift.config.pipeline import find_pipeline as f; "
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

    client = MlflowClient(tracking_uri=stack.mlflow, registry_uri=stack.mlflow)
    experiment = client.get_experiment_by_name(f"nightshift/{NAME}")
    assert len(client.search_runs([experiment.experiment_id])) == 3
    champion = client.get_model_version_by_alias(f"{NAME}.xgboost", "champion")
    assert champion.tags["nightshift.trained_for"] == NIGHT


def test_a_shipped_example_runs_unchanged(stack: Stack) -> None:
    # basket_spend's own YAML (regression, 100,000 rows a day, no output pins), mounted as it
    # ships. The trigger form's window_days=1 keeps CI to two days of data instead of six,
    # and the night the scheduler starts on unpausing (yesterday, the whole window) is
    # stopped, as an operator would.
    started = time.monotonic()
    dag_id = "nightshift_basket_spend"
    conf = {"logical_date": None, "conf": {"run_date": NIGHT, "window_days": 1}}
    run = stack.rest("POST", f"dags/{dag_id}/dagRuns", conf)
    stack.rest("PATCH", f"dags/{dag_id}", {"is_paused": False})
    deadline = time.monotonic() + 120
    while not (scheduled := [r for r in stack.runs(dag_id) if r["run_type"] == "scheduled"]):
        assert time.monotonic() < deadline, stack.runs(dag_id)
        time.sleep(1)
    quoted = urllib.parse.quote(scheduled[0]["dag_run_id"], safe="")
    stack.rest("PATCH", f"dags/{dag_id}/dagRuns/{quoted}", {"state": "failed"})
    finished = stack.wait_for_runs(dag_id, 2)
    stack.rest("PATCH", f"dags/{dag_id}", {"is_paused": True})
    TIMINGS["shipped_example_night"] = time.monotonic() - started
    [mine] = [r for r in finished if r["dag_run_id"] == run["dag_run_id"]]
    assert mine["state"] == "success", stack.task_states(dag_id, run["dag_run_id"])
    folder = f"/opt/nightshift/data/reports/basket_spend/{NIGHT}"
    assert "report.html" in stack.exec("airflow-apiserver", "ls", folder)
    # Its processed partition is in the object store, where every worker container reads it.
    digest = json.loads(
        stack.exec("airflow-scheduler", "python", "-c", DIGEST, "basket_spend", NIGHT)
    )
    assert digest["lake"] == "s3://nightshift/lake" and digest[f"processed/{NIGHT}"], digest


def _dags(stack: Stack, token: str) -> set[str]:
    return {d["dag_id"] for d in json.loads(stack.call(token, "GET", "/api/v2/dags")[1])["dags"]}


def test_team_roles_decide_who_reads_and_runs_what(stack: Stack) -> None:
    # One team's viewer reads its pipeline's reports and cannot trigger it; another team's
    # viewer sees neither that DAG nor its reports; that team's on-call triggers only its own
    # DAG; an Op reads and triggers any.
    report = f"/nightshift-reports/files/{NAME}/{NIGHT}/report.html"
    reports = "/nightshift-reports/runs.json"
    trigger = {"logical_date": None, "conf": {"run_date": NIGHT}}
    other_runs = f"/api/v2/dags/nightshift_{OTHER}/dagRuns"
    roles = {
        "tiny-viewer": "tiny-readers",
        "other-viewer": "other-readers",
        "other-oncaller": "other-oncall",
        "operator": "Op",
    }
    USERS.update({user: stack.add_user(user, role) for user, role in roles.items()})
    token = {user: stack.token(user, USERS[user]) for user in roles}
    viewer, outsider = token["tiny-viewer"], token["other-viewer"]
    assert _dags(stack, viewer) == {DAG_ID}
    status, page = stack.call(viewer, "GET", report)
    assert status == 200 and NIGHT.encode() in page
    assert set(json.loads(stack.call(viewer, "GET", reports)[1])) == {NAME}
    assert stack.call(viewer, "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", trigger)[0] == 403
    assert _dags(stack, outsider) == {f"nightshift_{OTHER}"}
    assert stack.call(outsider, "GET", report)[0] == 404
    assert json.loads(stack.call(outsider, "GET", reports)[1]) == {OTHER: []}
    assert stack.call(outsider, "POST", other_runs, trigger)[0] == 403
    oncall = token["other-oncaller"]
    assert stack.call(oncall, "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", trigger)[0] == 403
    assert stack.call(oncall, "POST", other_runs, trigger)[0] == 200  # paused: it stays queued
    assert stack.call(token["operator"], "GET", report)[0] == 200
    assert stack.call(token["operator"], "POST", other_runs, trigger)[0] == 200


DASK_PEERS = """
import sys
from distributed import Client
try:
    with Client(sys.argv[1], timeout=10) as client:
        print(sorted(w["name"] for w in client.scheduler_info()["workers"].values()))
        print(sorted(client.scheduler_info()["workers"]))
except Exception as exc:
    print(f"refused: {type(exc).__name__}: {exc}")
"""


def test_dask_speaks_tls_with_mutual_authentication_only(stack: Stack) -> None:
    # Airflow's containers hold the client certificate: they see the workers, at tls://.
    seen = stack.exec("airflow-scheduler", "python", "-c", DASK_PEERS, "tls://dask-scheduler:8786")
    print(f"the scheduler's workers, from Airflow: {seen}")
    addresses = seen.strip().splitlines()[-1]
    assert addresses.count("tls://") == int(stack.env["DASK_CPU_WORKERS"]), seen
    # A container without the cluster's certificates (MLflow's, same image) is refused over
    # plaintext and over TLS alike.
    for scheme in ("tcp", "tls"):
        said = stack.exec("mlflow", "python", "-c", DASK_PEERS, f"{scheme}://dask-scheduler:8786")
        print(f"{scheme} without a certificate: {said.strip()}")
        assert said.startswith("refused:"), said


def test_a_failure_on_a_dask_worker_shows_in_the_task_log(stack: Stack) -> None:
    dag_id = f"nightshift_{BROKEN}"
    stack.rest("PATCH", f"dags/{dag_id}", {"is_paused": False})
    run = stack.rest("POST", f"dags/{dag_id}/dagRuns", {"logical_date": None, "conf": {}})
    [done] = stack.wait_for_runs(dag_id, 1)
    states = stack.task_states(dag_id, run["dag_run_id"])
    assert done["state"] == "failed" and states["train_distributed"] == "failed", states
    quoted = urllib.parse.quote(run["dag_run_id"], safe="")
    path = f"dags/{dag_id}/dagRuns/{quoted}/taskInstances/train_distributed/logs/1"
    log = json.dumps(stack.rest("GET", f"{path}?full_content=true"))
    # The worker's own exception and the frames it ran on the worker, not only "failed".
    assert "XGBoostError" in log, log[-3000:]
    assert "value -1 for Parameter max_depth" in log, log[-3000:]
    assert '"name": "do_train"' in log, log[-3000:]


def _backfill(stack: Stack, *extra: str) -> None:
    stack.exec(
        "airflow-scheduler",
        "airflow",
        "backfill",
        "create",
        "--dag-id",
        DAG_ID,
        "--from-date",
        f"{BACKFILL[0]}T00:00:00",
        "--to-date",
        f"{BACKFILL[-1]}T23:59:59",
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
    assert len(stack.wait_for_backfills(DAG_ID)) == 1
    ended = {r["dag_run_id"]: r["end_date"] for r in runs if r["run_type"] == "backfill"}
    assert len(ended) == 3, runs
    TIMINGS["backfill_3"] = time.monotonic() - started
    # On Postgres: no pause, no retry (SQLite needs both).
    started = time.monotonic()
    _backfill(stack, "--reprocess-behavior", "completed")
    assert len(stack.wait_for_backfills(DAG_ID)) == 2
    TIMINGS["backfill_3_again"] = time.monotonic() - started
    runs = stack.runs(DAG_ID)
    assert len(runs) == 7 and all(r["state"] == "success" for r in runs), runs
    # Each date ran again as a new run of its partition key, after the first pass; Airflow
    # keeps the first runs as history.
    again = [r for r in runs if r["run_type"] == "backfill" and r["dag_run_id"] not in ended]
    assert sorted(r["partition_key"] for r in again) == BACKFILL, again
    assert min(r["start_date"] for r in again) > max(ended.values()), again
    assert _digest(stack, *BACKFILL) == first


def _set_alias(stack: Stack, body: dict, user: tuple[str, str] | None) -> int:
    """POST an alias move to MLflow's REST API as ``user`` (None: anonymous); the status."""
    headers = {"Content-Type": "application/json"}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(user).encode()).decode()
    request = urllib.request.Request(
        f"{stack.mlflow}/api/2.0/mlflow/registered-models/alias",
        json.dumps(body).encode(),
        headers=headers,
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_only_the_service_account_moves_the_champion_alias(stack: Stack) -> None:
    from mlflow import MlflowClient
    from mlflow.server import get_app_client

    model = f"{NAME}.xgboost"
    client = MlflowClient(stack.mlflow, stack.mlflow)
    champion = client.get_model_version_by_alias(model, "champion").version
    versions = [v.version for v in client.search_model_versions(f"name = '{model}'")]
    [other, *_] = [v for v in versions if v != champion]
    password = secrets.token_urlsafe(16)
    get_app_client("basic-auth", tracking_uri=stack.mlflow).create_user("analyst", password)
    body = {"name": model, "alias": "champion", "version": other}
    assert _set_alias(stack, body, None) == 401  # anonymous
    assert _set_alias(stack, body, ("analyst", password)) == 403  # signed in, reads only
    assert client.get_model_version_by_alias(model, "champion").version == champion
    # The service account may (the nightly runs do); put the champion back afterwards.
    service = (stack.env["MLFLOW_ADMIN_USER"], stack.env["MLFLOW_ADMIN_PASSWORD"])
    assert _set_alias(stack, body, service) == 200
    assert _set_alias(stack, {**body, "version": champion}, service) == 200


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
    assert len(stack.runs(DAG_ID)) == 9  # every run so far: 1 + 3 + 3 backfilled + 2
    listed = stack.exec("airflow-apiserver", "ls", f"/opt/nightshift/data/reports/{NAME}")
    assert NIGHT in listed and BACKFILL[0] in listed, listed
    from mlflow import MlflowClient

    client = MlflowClient(stack.mlflow, stack.mlflow)
    champion = client.get_model_version_by_alias(f"{NAME}.xgboost", "champion")
    assert champion.tags["nightshift.trained_for"]


def _model_reports(playwright: Any, stack: Stack, user: str, password: str) -> tuple[Any, Any]:
    """Sign ``user`` in and open Browse -> Model reports; return (browser, page)."""
    browser, page = signed_in_page(playwright, stack.base_url, user, password)
    with shot_on_failure(page, SHOTS / f"failed-model-reports-{user}.png"):
        page.get_by_role("button", name="Browse").click()
        page.get_by_role("menuitem", name="Model reports").click()
    return browser, page


def test_a_browser_logs_in_and_opens_model_reports(stack: Stack) -> None:
    from playwright.sync_api import expect, sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    admin = (stack.env["AIRFLOW_ADMIN_USER"], stack.env["AIRFLOW_ADMIN_PASSWORD"])
    with sync_playwright() as playwright:
        browser, page = _model_reports(playwright, stack, *admin)
        frame = page.frame_locator("iframe").first
        with shot_on_failure(page, SHOTS / "failed-20-compose-model-reports.png"):
            expect(frame.get_by_role("heading", name=NAME)).to_be_visible()
            expect(frame.get_by_text(NIGHT).first).to_be_visible()
            expect(frame.get_by_role("heading", name=OTHER)).to_be_visible()
        page.screenshot(path=SHOTS / "20-compose-model-reports.png", full_page=True)
        browser.close()
        # A team's viewer sees its own pipeline's reports and nobody else's.
        browser, page = _model_reports(playwright, stack, "tiny-viewer", USERS["tiny-viewer"])
        frame = page.frame_locator("iframe").first
        with shot_on_failure(page, SHOTS / "failed-21-compose-model-reports-team-viewer.png"):
            expect(frame.get_by_role("heading", name=NAME)).to_be_visible()
            expect(frame.get_by_text(NIGHT).first).to_be_visible()
            expect(frame.get_by_role("heading", name=OTHER)).to_have_count(0)
        page.screenshot(path=SHOTS / "21-compose-model-reports-team-viewer.png", full_page=True)
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
