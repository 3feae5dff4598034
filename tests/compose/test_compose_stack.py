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
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.browser import shot_on_failure, signed_in_page
from tests.compose.stack import Stack, WorkerHost, docker_ready
from tests.conftest import REPO, small_pipeline_dict
from tests.e2e.conftest import scheduled_from_today, tiny_pipeline

pytestmark = [pytest.mark.compose, pytest.mark.timeout(2400)]
SCENARIO = True  # one stack's life, step by step: kept in file order (tests/conftest.py)

NAME = "compose_tiny"
DAG_ID = f"nightshift_{NAME}"
OTHER = "compose_other"  # another team's pipeline: never unpaused
BROKEN = "compose_broken"  # XGBoost refuses its parameters on the Dask worker
HOSTS = "compose_hosts"  # batches and training long enough to spread over two machines
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
    hosts = scheduled_from_today(small_pipeline_dict(rows=50_000, window=2, batch=6250))
    # A worker lost before XGBoost's ranks have all joined leaves the others waiting in the
    # collective's bootstrap until this timeout (600 s by default), then the task retries.
    hosts["training"]["collective_timeout_seconds"] = 60
    [xgb] = [m for m in hosts["models"] if m["kind"] == "xgboost"]
    xgb["num_boost_round"] = 300
    built = time.monotonic()
    folder = tmp_path_factory.mktemp("compose")
    pipelines = {**examples, NAME: data, OTHER: other, BROKEN: broken, HOSTS: hosts}
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
        project.compose("down", "--remove-orphans", check=False, profile="multi-host")
        project.compose("down", "-v", "--remove-orphans", check=False)
        print("timings:", json.dumps({k: round(v, 1) for k, v in TIMINGS.items()}))
        assert project.leftovers() == [], project.leftovers()


def _digest(stack: Stack, *days: str) -> dict:
    return json.loads(stack.exec("airflow-scheduler", "python", "-c", DIGEST, NAME, *days))


def test_up_every_service_healthy_and_init_checked(stack: Stack) -> None:
    names = {name.rsplit("_", 1)[0] for name in stack.containers()}
    expected = {
        "postgres",
        "certificates",
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


def _wait_until_running(
    stack: Stack, run_id: str, tasks: tuple[str, ...], dag_id: str = DAG_ID
) -> str:
    """Wait until one of ``tasks`` of the run is running; return its name."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        states = stack.task_states(dag_id, run_id)
        running = [task for task in tasks if states.get(task) == "running"]
        if running:
            return running[0]
        assert states.get("publish") != "success", f"finished before any of {tasks}: {states}"
        time.sleep(0.5)
    raise TimeoutError(stack.task_states(dag_id, run_id))


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


# -- more machines: workers on other hosts (docs/deployment.md, "More machines") --------------
# Emulated on this one machine: host-a's workers on the host's network (as a worker host runs
# them, and the main host's own when it computes too), host-b's on a Docker network of its own
# that stands for another machine on the LAN: its own address, reaching the main host only at
# NIGHTSHIFT_HOST_ADDRESS (Docker's bridge address here), where the scheduler listens and the
# object store is published. Nothing of host-b shares the main project's network.
HOST_B: dict[str, str] = {}  # host-b's worker address, once it has joined


def _copy_worker_certificates(stack: Stack, certs: Path) -> None:
    """Copy the authority and the worker pair out of the dask-certs volume, as a user copies
    them to a worker host, readable by the image's user (uid 50000) only."""
    certs.mkdir()
    container = stack.containers()["airflow-scheduler_1"]["Id"]
    for name in ("ca.pem", "worker.pem", "worker-key.pem"):
        source = f"{container}:/opt/nightshift/dask-certs/{name}"
        subprocess.run(["docker", "cp", source, str(certs / name)], check=True)
        os.chown(certs / name, 50000, 0)
    (certs / "worker-key.pem").chmod(0o600)


@pytest.fixture(scope="module")
def worker_hosts(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Two worker hosts' compose projects, written from compose/worker-host.env.example; each
    taken down (and host-b's network removed) afterwards."""
    folder = tmp_path_factory.mktemp("worker-hosts")
    _copy_worker_certificates(stack, folder / "certs")
    lan = f"{stack.project}-lan"
    subprocess.run(["docker", "network", "create", lan], check=True, capture_output=True)
    address = stack.env["NIGHTSHIFT_HOST_ADDRESS"]
    common = {
        "DASK_SCHEDULER_ADDRESS": f"tls://{address}:{stack.env['DASK_SCHEDULER_PORT']}",
        "DASK_CERTS_DIR": str(folder / "certs"),
        "NIGHTSHIFT_OBJECT_STORE": f"https://{address}:{stack.env['MINIO_PORT']}",
        "AWS_ACCESS_KEY_ID": stack.env["MINIO_ROOT_USER"],
        "AWS_SECRET_ACCESS_KEY": stack.env["MINIO_ROOT_PASSWORD"],
        "DASK_CPU_WORKERS": "1",
        "DASK_WORKER_MEMORY": "3GiB",
    }
    where = {"host-a": ("host", "docker0"), "host-b": (lan, "eth0")}
    hosts = {
        name: WorkerHost.written(
            f"{stack.project}-{name}",
            stack.checkout,
            folder,
            DASK_WORKER_NETWORK=network,
            DASK_WORKER_INTERFACE=interface,
            DASK_WORKER_NAME=name,
            **common,
        )
        for name, (network, interface) in where.items()
    }
    try:
        yield hosts
    finally:
        for host in hosts.values():
            print(host.compose("logs", "--no-color", "--tail", "40", check=False)[-4000:])
            host.compose("down", "-v", check=False)
        subprocess.run(["docker", "network", "rm", lan], capture_output=True)


def _workers(stack: Stack) -> dict[str, str]:
    """The scheduler's workers as Airflow's tasks see them: name -> address."""
    address = stack.env["NIGHTSHIFT_DASK_ADDRESS"]
    listed = stack.exec("airflow-scheduler", "python", "-c", DASK_WORKERS, address)
    return json.loads(listed.strip().splitlines()[-1])


DASK_WORKERS = """
import json, sys
from distributed import Client
with Client(sys.argv[1], timeout=30) as client:
    workers = client.scheduler_info(n_workers=-1)["workers"]
    print(json.dumps({w["name"]: address for address, w in workers.items()}))
"""


def test_the_main_host_moves_its_dask_scheduler_onto_the_hosts_network(stack: Stack) -> None:
    # The README's steps to add machines: stop compose's own workers and scheduler, point
    # Airflow at the scheduler on the host's address, start profile multi-host.
    started = time.monotonic()
    stack.compose("rm", "--stop", "--force", "dask-worker", "dask-scheduler")
    address, port = stack.env["NIGHTSHIFT_HOST_ADDRESS"], stack.env["DASK_SCHEDULER_PORT"]
    stack.set_env(NIGHTSHIFT_DASK_ADDRESS=f"tls://{address}:{port}")
    stack.compose("up", "-d", profile="multi-host")  # Airflow's services anew: .env changed
    stack.wait_for_api(timeout=300)
    stack.wait_healthy()
    stack.token_ = None
    TIMINGS["to_multi_host"] = time.monotonic() - started
    names = {name.rsplit("_", 1)[0] for name in stack.containers()}
    assert "dask-scheduler-host" in names and not names & {"dask-scheduler", "dask-worker"}
    assert _workers(stack) == {}  # no worker yet: they are on other machines


def test_worker_hosts_join_the_scheduler_over_tls(stack: Stack, worker_hosts: dict) -> None:
    started = time.monotonic()
    for host in worker_hosts.values():
        host.compose("up", "-d")
    deadline = time.monotonic() + 180
    while set(workers := _workers(stack)) != {"host-a", "host-b"}:
        assert time.monotonic() < deadline, (workers, worker_hosts["host-b"].compose("logs"))
        time.sleep(2)
    TIMINGS["worker_hosts_joined"] = time.monotonic() - started
    print(f"the scheduler's workers: {workers}")
    address = stack.env["NIGHTSHIFT_HOST_ADDRESS"]
    # host-a at the host's address, host-b at its own network's: two networks, one cluster.
    assert workers["host-a"].startswith(f"tls://{address}:"), workers
    assert workers["host-b"].startswith("tls://") and address not in workers["host-b"], workers
    HOST_B["address"] = workers["host-b"]


def _task_log(stack: Stack, dag_id: str, run_id: str, task: str, attempt: int) -> str:
    quoted = urllib.parse.quote(run_id, safe="")
    path = f"dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task}/logs/{attempt}"
    return json.dumps(stack.rest("GET", f"{path}?full_content=true"))


def test_a_night_runs_on_both_hosts_and_survives_losing_one(
    stack: Stack, worker_hosts: dict
) -> None:
    dag_id = f"nightshift_{HOSTS}"
    stack.rest("PATCH", f"dags/{dag_id}", {"is_paused": False})
    started = time.monotonic()
    run = stack.rest("POST", f"dags/{dag_id}/dagRuns", {"logical_date": None, "conf": {}})
    run_id = run["dag_run_id"]
    _wait_until_running(stack, run_id, ("train_distributed",), dag_id)
    time.sleep(4)  # into the training: the workers have loaded their batches
    worker_hosts["host-b"].compose("kill")  # a manual kill: Docker leaves it down
    killed = time.monotonic() - started
    [done] = stack.wait_for_runs(dag_id, 1)
    TIMINGS["night_on_two_hosts"] = time.monotonic() - started
    assert done["state"] == "success", stack.task_states(dag_id, run_id)
    quoted = urllib.parse.quote(run_id, safe="")
    tries = stack.rest("GET", f"dags/{dag_id}/dagRuns/{quoted}/taskInstances/train_distributed")
    print(
        f"host-b killed {killed:.0f} s into the night; train_distributed tried", tries["try_number"]
    )
    # Preprocess ran batches on both hosts, and said so in its task log.
    host_a = stack.env["NIGHTSHIFT_HOST_ADDRESS"]
    host_b = HOST_B["address"].split("://", 1)[1].rsplit(":", 1)[0]
    log = _task_log(stack, dag_id, run_id, "preprocess", 1)
    [line] = re.findall(r"processed \d+ batches on the cluster \(by host: [^)]*\)", log)[-1:]
    print(line)
    assert f"{host_a} x" in line and f"{host_b} x" in line, line
    assert "2 workers (" in log and host_b in log, log[-2000:]
    assert set(_workers(stack)) == {"host-a"}
    worker_hosts["host-b"].compose("up", "-d")  # back for the next steps


def _refused_worker(stack: Stack, scheme: str, certs: Path | None) -> str:
    """Start a worker on host-b's network that the scheduler must refuse: plaintext, or TLS
    with a certificate another authority signed. Return its output."""
    address = (
        f"{scheme}://{stack.env['NIGHTSHIFT_HOST_ADDRESS']}:{stack.env['DASK_SCHEDULER_PORT']}"
    )
    command = ["docker", "run", "--rm", "--network", f"{stack.project}-lan"]
    if certs is not None:
        command += ["-v", f"{certs}:/opt/nightshift/dask-certs:ro"]
        for name, value in (
            ("REQUIRE_ENCRYPTION", "True"),
            ("TLS__CA_FILE", "/opt/nightshift/dask-certs/ca.pem"),
            ("TLS__WORKER__CERT", "/opt/nightshift/dask-certs/worker.pem"),
            ("TLS__WORKER__KEY", "/opt/nightshift/dask-certs/worker-key.pem"),
        ):
            command += ["-e", f"DASK_DISTRIBUTED__COMM__{name}={value}"]
    command += ["nightshift:latest", "dask", "worker", address, "--death-timeout", "20"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode != 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_a_plaintext_worker_and_a_foreign_certificate_are_refused(
    stack: Stack, worker_hosts: dict, tmp_path: Path
) -> None:
    from nightshift.ops.dask_tls import make_certificates

    plaintext = _refused_worker(stack, "tcp", None)
    foreign = make_certificates(tmp_path / "foreign", ["host-c"]).folder
    for path in foreign.iterdir():
        os.chown(path, 50000, 0)
    signed_elsewhere = _refused_worker(stack, "tls", foreign)
    said = stack.compose("logs", "--no-color", "dask-scheduler-host", profile="multi-host")
    handshakes = [line for line in said.splitlines() if "TLS handshake failed" in line]
    print("plaintext worker:", plaintext.strip().splitlines()[-1])
    print("foreign certificate:", [x for x in signed_elsewhere.splitlines() if "TLS" in x][-1:])
    print("scheduler:", *handshakes[-2:], sep="\n  ")
    assert any("WRONG_VERSION_NUMBER" in line for line in handshakes), said[-3000:]
    assert "TLS certificate does not match" in signed_elsewhere, signed_elsewhere[-3000:]
    assert set(_workers(stack)) <= {"host-a", "host-b"}


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
