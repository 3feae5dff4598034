"""The nightly run as an on-call team lives with it, under the real scheduler and triggerer:
a file that arrives late is waited for; a night that fails, a quarantined file, a night whose
model regressed and a night whose features drifted each send exactly one e-mail and one
webhook post, to a real SMTP server and an HTTP receiver on 127.0.0.1; so does a scheduled
night whose report is late for its deadline; a healthy night sends none. The scenarios run
in file order on one Airflow (SCENARIO)."""

from __future__ import annotations

import datetime as dt
import html
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nightshift.data.generator import generate_day
from nightshift.ops.local_airflow import LocalAirflow
from tests.conftest import write_pipeline
from tests.e2e.conftest import running_airflow, tiny_pipeline
from tests.receivers import Inbox, receivers

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1200)]
SCENARIO = True  # tests/conftest.py keeps these tests in file order

NAME = "on_call"
DAG_ID = f"nightshift_{NAME}"
TO = ["oncall@example.com", "ml-team@example.com"]
# Each scenario's night has its own days: (its window's two days, then the night itself).
HEALTHY = dt.date(2026, 10, 10)
LATE = dt.date(2026, 10, 14)
NEVER = dt.date(2026, 10, 20)
QUARANTINED = dt.date(2026, 10, 24)
REGRESSED = dt.date(2026, 10, 28)
DRIFTED = dt.date(2026, 11, 1)


@dataclass
class OnCall:
    airflow: LocalAirflow
    project: Path
    landing: Path
    inbox: Inbox


def _day(landing: Path, day: dt.date, change: Any = None) -> None:
    """Write one day's file as the user's export would, optionally changed first."""
    frame = generate_day(day, rows=1500, seed=3)
    if change is not None:
        frame = change(frame)
    frame.to_csv(landing / f"{day}.csv", index=False)


def _window(landing: Path, night: dt.date, change: Any = None) -> None:
    for offset in (2, 1):
        _day(landing, night - dt.timedelta(days=offset), change)


def _pipeline(landing: Path) -> dict:
    data = tiny_pipeline()
    data["source"] = {
        "kind": "files",
        "path": str(landing / "{date}.csv"),
        "format": "csv",
        "wait": {"timeout_minutes": 0.75, "poke_seconds": 2},
    }
    data["schedule"]["retries"] = 0
    data["alerts"] = {
        "email": {"conn_id": "nightshift_smtp", "to": TO},
        "webhook": {"conn_id": "nightshift_webhook"},
        "regression": 0.05,
    }
    return data


@pytest.fixture(scope="module")
def on_call(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnCall]:
    root = tmp_path_factory.mktemp("on-call")
    landing = root / "landing"
    landing.mkdir()
    with (
        receivers() as inbox,
        running_airflow(
            root,
            NAME,
            dask=True,
            pipelines={"": _pipeline(landing)},
            extra_env=inbox.connections(),
            services=("api-server", "scheduler", "dag-processor", "triggerer"),
        ) as (airflow, project),
    ):
        airflow.unpause(DAG_ID)
        yield OnCall(airflow, project, landing, inbox)


def _wait_for_state(airflow, run_id: str, task: str, state: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if airflow.task_states(DAG_ID, run_id).get(task) == state:
            return
        time.sleep(1)
    raise TimeoutError(f"{task} never {state}: {airflow.task_states(DAG_ID, run_id)}")


def _night(on_call: OnCall, day: dt.date, state: str) -> str:
    """Trigger the night of ``day`` and wait for it to end in ``state``; return its run id."""
    run_id = on_call.airflow.trigger(DAG_ID, {"run_date": day.isoformat()})
    [run] = on_call.airflow.wait_for_runs(DAG_ID, 1, run_ids=[run_id], timeout=900)
    assert run["state"] == state, on_call.airflow.task_states(DAG_ID, run_id)
    return run_id


def _one_message(on_call: OnCall, before: tuple[int, int], day: dt.date, run_id: str) -> tuple:
    """The one e-mail and the one webhook post this night sent (and no more); check what
    every message must say: the pipeline, the date, the run's link."""
    inbox = on_call.inbox
    inbox.wait_for(before[0] + 1, before[1] + 1)
    mails, posts = inbox.mails[before[0] :], inbox.posts[before[1] :]
    assert (len(mails), len(posts)) == (1, 1), (mails, posts)
    [mail], [post] = mails, posts
    assert post["path"] == "/hooks/on-call"
    assert post["pipeline"] == NAME and post["date"] == day.isoformat()
    assert post["title"].startswith(f"{NAME} {day}: ") and post["text"].startswith(post["title"])
    run_link = post["links"]["run"]
    assert run_link.startswith(on_call.airflow.base_url) and run_link.endswith(
        run_id.replace(":", "%3A").replace("+", "%2B")
    ), run_link
    assert mail["subject"] == f"[nightshift] {post['title']}"
    assert mail["to"] == ",".join(TO)
    assert all(html.escape(d) in mail["body"] for d in post["details"]), (mail, post)
    print(f"alert: {mail['subject']} | {post['events']} | {post['details']}")
    return mail, post


def test_a_healthy_night_sends_nothing(on_call: OnCall) -> None:
    _window(on_call.landing, HEALTHY)
    _day(on_call.landing, HEALTHY)
    _night(on_call, HEALTHY, "success")
    on_call.inbox.wait_for(1, 1, timeout=15, settle=0)
    assert on_call.inbox.count() == (0, 0), (on_call.inbox.mails, on_call.inbox.posts)


def test_a_night_waits_for_a_late_file_and_then_runs(on_call: OnCall) -> None:
    airflow, before = on_call.airflow, on_call.inbox.count()
    _window(on_call.landing, LATE)
    late = airflow.trigger(DAG_ID, {"run_date": LATE.isoformat()})
    # The file is not there: the wait is deferred (no worker slot held) ...
    _wait_for_state(airflow, late, "wait_for_source", "deferred")
    assert airflow.task_states(DAG_ID, late).get("ingest") in (None, "none", "scheduled")
    # ... until it arrives; then the night runs.
    _day(on_call.landing, LATE)
    [run] = airflow.wait_for_runs(DAG_ID, 1, run_ids=[late], timeout=900)
    assert run["state"] == "success", airflow.task_states(DAG_ID, late)
    assert on_call.inbox.count() == before, (on_call.inbox.mails, on_call.inbox.posts)


def test_a_file_that_never_comes_fails_the_night_and_one_alert_says_so(on_call: OnCall) -> None:
    airflow, before = on_call.airflow, on_call.inbox.count()
    run_id = _night(on_call, NEVER, "failed")
    states = airflow.task_states(DAG_ID, run_id)
    assert states["wait_for_source"] == "failed", states
    assert states.get("ingest") in ("upstream_failed", None), states
    path = f"dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/wait_for_source/logs/1"
    log = str(airflow.api("GET", f"{path}?full_content=true"))
    assert f"{NEVER}.csv: no file after 0.75 minutes" in log, log[-2000:]

    _, post = _one_message(on_call, before, NEVER, run_id)
    assert post["events"] == ["failed"]
    assert post["title"] == f"{NAME} {NEVER}: the night failed"
    assert "task wait_for_source failed" in post["details"][0]


def test_a_quarantined_file_sends_one_alert_naming_the_column(on_call: OnCall) -> None:
    before = on_call.inbox.count()
    _window(on_call.landing, QUARANTINED)
    _day(on_call.landing, QUARANTINED, lambda f: f.rename(columns={"basket_value": "basket"}))
    run_id = _night(on_call, QUARANTINED, "failed")

    mail, post = _one_message(on_call, before, QUARANTINED, run_id)
    assert post["events"] == ["quarantined"]
    assert "basket_value" in post["details"][0], post
    assert f"/files/{NAME}/{QUARANTINED}/validation.html" in post["links"]["validation"]
    assert "basket_value" in mail["body"] and "validation.html" in mail["body"]


def _shuffled_labels(frame):
    labels = frame["converted"].to_numpy().copy()
    np.random.default_rng(0).shuffle(labels)
    return frame.assign(converted=labels)


def test_a_regressed_night_keeps_the_champion_and_sends_one_alert(on_call: OnCall) -> None:
    before = on_call.inbox.count()
    # The window's labels are noise: tonight's models learn nothing; the champion stays.
    _window(on_call.landing, REGRESSED, _shuffled_labels)
    _day(on_call.landing, REGRESSED)
    run_id = _night(on_call, REGRESSED, "success")

    _, post = _one_message(on_call, before, REGRESSED, run_id)
    assert "regressed" in post["events"], post
    assert any(d.startswith("xgboost: roc_auc ") for d in post["details"]), post
    assert f"/files/{NAME}/{REGRESSED}/report.html" in post["links"]["report"]
    report = on_call.project / "data" / "reports" / NAME / str(REGRESSED) / "metrics.json"
    assert report.exists()


def test_a_drifted_night_sends_one_alert_naming_the_features(on_call: OnCall) -> None:
    before = on_call.inbox.count()
    _window(on_call.landing, DRIFTED)
    _day(on_call.landing, DRIFTED, lambda f: f.assign(session_seconds=f["session_seconds"] * 4))
    run_id = _night(on_call, DRIFTED, "success")

    _, post = _one_message(on_call, before, DRIFTED, run_id)
    assert "drifted" in post["events"], post
    assert any("session_seconds (PSI" in d for d in post["details"]), post


def test_a_scheduled_night_past_its_deadline_sends_one_alert(on_call: OnCall) -> None:
    airflow, before = on_call.airflow, on_call.inbox.count()
    # A pipeline of its own, written now: its report is due at the first whole minute at
    # least 20 s from now (a deadline is a wall-clock HH:MM), and its file never comes.
    # Scheduled nightly three minutes ago: unpausing starts one scheduled run, for the latest
    # date (manual and backfilled runs have no deadline).
    now = dt.datetime.now(dt.UTC)
    due = (now + dt.timedelta(seconds=80)).strftime("%H:%M")
    started = now - dt.timedelta(minutes=3)
    data = _pipeline(on_call.landing / "never")
    data["schedule"].update(
        cron=f"{started.minute} {started.hour} * * *",
        start_date=(now.date() - dt.timedelta(days=2)).isoformat(),
        timezone="UTC",
        deadline=due,
    )
    data["source"]["wait"] = {"timeout_minutes": 15, "poke_seconds": 5}
    data["alerts"]["on"] = ["deadline_missed"]
    dag_id = f"{DAG_ID}_deadline"
    write_pipeline(on_call.project.parent / "pipelines", data, name=f"{NAME}_deadline")
    airflow.wait_for_dag(dag_id)
    airflow.unpause(dag_id)
    deadline = time.monotonic() + 120
    while not (runs := airflow.runs(dag_id)) and time.monotonic() < deadline:
        time.sleep(2)
    airflow.pause(dag_id)  # one scheduled night is enough
    [run] = runs
    assert run["run_type"] == "scheduled", run

    on_call.inbox.wait_for(before[0] + 1, before[1] + 1, timeout=300)
    mails, posts = on_call.inbox.mails[before[0] :], on_call.inbox.posts[before[1] :]
    assert (len(mails), len(posts)) == (1, 1), (mails, posts)
    [post] = posts
    day = dt.date.fromisoformat(run["partition_key"])
    assert day == started.date() - dt.timedelta(days=1), run
    assert post["events"] == ["deadline_missed"] and post["date"] == day.isoformat()
    assert post["pipeline"] == f"{NAME}_deadline"
    assert post["title"].endswith(f"report not published by its deadline ({due} UTC)"), post
    assert post["links"]["run"].endswith(run["dag_run_id"].replace(":", "%3A").replace("+", "%2B"))
    assert mails[0]["subject"] == f"[nightshift] {post['title']}"
    print(f"alert: {mails[0]['subject']} | {post['events']} | {post['details']}")
    # The night is still waiting for its file: it was late, not failed.
    assert airflow.task_states(dag_id, run["dag_run_id"])["wait_for_source"] == "deferred"
