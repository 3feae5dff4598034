"""A pipeline that requires a person to approve each new champion, under the real scheduler:
a night that earned promotion waits ("awaiting approval" in its report and on the Model
reports page); rejecting it in the Airflow UI keeps the champion, approving it moves the
alias; both answers are in the report and the registry. The steps run in file order
(SCENARIO): the second night is approved after the first was rejected."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from nightshift.ops.local_airflow import LocalAirflow
from tests.browser import shot_on_failure, signed_in_page
from tests.conftest import REPO
from tests.e2e.conftest import running_airflow, tiny_pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1200)]
SCENARIO = True  # tests/conftest.py keeps these tests in file order

NAME = "approval"
DAG_ID = f"nightshift_{NAME}"
SHOTS = REPO / "test-artifacts" / "screenshots"
REJECTED, APPROVED = dt.date(2026, 10, 10), dt.date(2026, 10, 14)


@pytest.fixture(scope="module")
def approval(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalAirflow, Path]]:
    data = tiny_pipeline()
    data["evaluation"].update(approval="required", approval_hours=2)
    # A pipeline whose approver has 18 seconds: nobody answers it.
    quick = tiny_pipeline()
    quick["evaluation"].update(approval="required", approval_hours=0.005)
    root = tmp_path_factory.mktemp("approval")
    pipelines = {"": data, "_quick": quick}
    with running_airflow(root, NAME, dask=True, pipelines=pipelines) as (airflow, project):
        airflow.unpause(DAG_ID)
        airflow.unpause(f"{DAG_ID}_quick")
        yield airflow, project


def _awaiting(airflow: LocalAirflow, day: dt.date, dag_id: str = DAG_ID) -> str:
    """Trigger the night of ``day``; wait until it asks for approval; return its run id."""
    run_id = airflow.trigger(dag_id, {"run_date": day.isoformat()})
    deadline = time.monotonic() + 600
    while (states := airflow.task_states(dag_id, run_id)).get("approve") != "awaiting_input":
        assert "failed" not in states.values(), states
        assert time.monotonic() < deadline, states
        time.sleep(3)
    _deferral_drained(airflow, dag_id, run_id, deadline)
    return run_id


def _deferral_drained(airflow: LocalAirflow, dag_id: str, run_id: str, deadline: float) -> None:
    """Wait until the scheduler has processed the executor's event for the approval task's
    exit into deferral. Airflow 3.3.2 fails a resumed task when that event is drained only
    after an answer has requeued it ("finished with state success, but the task instance's
    state attribute is queued": apache/airflow#67287, #72716); a test answers in seconds,
    before a busy two-core scheduler always has. A person answers in minutes."""
    line = f"TaskInstance Finished: dag_id={dag_id}, task_id=approve, run_id={run_id},"
    while line not in (airflow.home / "run" / "scheduler.log").read_text(errors="replace"):
        assert time.monotonic() < deadline, airflow.diagnosis("scheduler")
        time.sleep(1)


def _metrics(project: Path, day: dt.date, name: str = NAME) -> dict:
    return json.loads((project / "data" / "reports" / name / str(day) / "metrics.json").read_text())


def _answer_in_the_ui(airflow: LocalAirflow, run_id: str, option: str, shot: str) -> None:
    """Open the run's approval task in the Airflow UI and press ``option`` (before that, the
    Model reports page shows the night as awaiting approval)."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser, page = signed_in_page(playwright, airflow.base_url, "admin", airflow.password())
        run = urllib.parse.quote(run_id)
        with shot_on_failure(page, SHOTS / f"failed-{shot}"):
            page.goto(f"{airflow.base_url}/nightshift-reports/")
            expect(page.get_by_text("awaiting approval:").first).to_be_visible()
            page.screenshot(path=SHOTS / shot.replace(".png", "-model-reports.png"), full_page=True)
            page.goto(f"{airflow.base_url}/dags/{DAG_ID}/runs/{run}/tasks/approve/required_actions")
            expect(page.get_by_text(f"Promote tonight's {NAME} model?").first).to_be_visible()
            page.screenshot(path=SHOTS / shot, full_page=True)
            page.get_by_role("button", name=option, exact=True).click()
            expect(page.get_by_text("response successful").first).to_be_visible()
        browser.close()


def _champion(airflow: LocalAirflow) -> dict:
    """``nightshift champion`` for the pipeline's XGBoost model: the alias and its history."""
    command = [sys.executable, "-m", "nightshift.cli", "champion", "--pipeline", NAME]
    out = subprocess.run(
        [*command, "--model", "xgboost"],
        env={**os.environ, **airflow.env()},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return dict(json.loads(out))


@pytest.mark.browser
def test_a_rejected_promotion_keeps_the_champion(approval: tuple[LocalAirflow, Path]) -> None:
    airflow, project = approval
    run_id = _awaiting(airflow, REJECTED)
    # Published while it waits: the report and the Model reports page say so.
    metrics = _metrics(project, REJECTED)
    assert metrics["approval"]["state"] == "awaiting", metrics["approval"]
    assert "awaiting approval" in metrics["champion"]["reason"]
    report = (project / "data" / "reports" / NAME / str(REJECTED) / "report.html").read_text()
    assert "Awaiting approval" in report
    index = (project / "data" / "reports" / NAME / "index.html").read_text()
    assert "awaiting approval" in index
    assert _champion(airflow)["champion"] is None

    _answer_in_the_ui(airflow, run_id, "Reject", "10-approval-asked.png")
    [run] = airflow.wait_for_runs(DAG_ID, 1, run_ids=[run_id], timeout=600)
    assert run["state"] == "success", airflow.task_states(DAG_ID, run_id)
    metrics = _metrics(project, REJECTED)
    assert metrics["approval"]["state"] == "rejected" and metrics["approval"]["by"] == "admin"
    assert not metrics["champion"]["promoted"]
    assert metrics["champion"]["reason"].endswith("rejected by admin"), metrics["champion"]
    champion = _champion(airflow)
    assert champion["champion"] is None, champion
    [entry] = champion["history"]  # the refusal, in the registry's champion history
    assert entry["event"] == "not approved" and entry["reason"].endswith("rejected by admin")
    print(f"rejected: {entry}")


@pytest.mark.browser
def test_an_approved_promotion_moves_the_alias(approval: tuple[LocalAirflow, Path]) -> None:
    airflow, project = approval
    run_id = _awaiting(airflow, APPROVED)
    assert _metrics(project, APPROVED)["approval"]["state"] == "awaiting"

    _answer_in_the_ui(airflow, run_id, "Approve", "11-approval-approve.png")
    [run] = airflow.wait_for_runs(DAG_ID, 1, run_ids=[run_id], timeout=600)
    assert run["state"] == "success", airflow.task_states(DAG_ID, run_id)
    metrics = _metrics(project, APPROVED)
    assert metrics["approval"]["state"] == "approved" and metrics["approval"]["by"] == "admin"
    assert metrics["champion"]["promoted"], metrics["champion"]
    champion = _champion(airflow)
    assert champion["champion"]["trained_for"] == str(APPROVED), champion
    refused, entry = champion["history"]
    assert refused["when"] == str(REJECTED) and "event" not in entry
    assert entry["reason"].endswith("approved by admin"), entry
    # Both answers, in the index of the Model reports page.
    index = (project / "data" / "reports" / NAME / "index.html").read_text()
    assert "rejected by admin" in index and "approved by admin" in index
    print(f"approved: {entry}")


def test_no_answer_in_time_keeps_the_champion(approval: tuple[LocalAirflow, Path]) -> None:
    airflow, project = approval
    dag_id, name = f"{DAG_ID}_quick", f"{NAME}_quick"
    run_id = _awaiting(airflow, REJECTED, dag_id)
    # Nobody answers: the scheduler answers the default ("Reject") when the time is up.
    [run] = airflow.wait_for_runs(dag_id, 1, run_ids=[run_id], timeout=300)
    assert run["state"] == "success", airflow.task_states(dag_id, run_id)
    metrics = _metrics(project, REJECTED, name)
    assert metrics["approval"]["state"] == "timed_out" and metrics["approval"]["by"] is None
    assert not metrics["champion"]["promoted"]
    assert metrics["champion"]["reason"].endswith("so the champion is kept"), metrics["champion"]
    print(f"no answer: {metrics['champion']['reason']}")
