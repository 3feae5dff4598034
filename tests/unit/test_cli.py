"""The CLI: its environment for the airflow command line, run progress, backfill by dates."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path


def test_env_lets_a_shell_run_this_virtualenvs_airflow(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "nightshift.cli", "env"],
        env={"NIGHTSHIFT_AIRFLOW_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert f"export AIRFLOW_HOME={tmp_path / 'home'}" in out
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=" in out
    path = subprocess.run(
        ["bash", "-c", f"{out}\ncommand -v airflow"], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert path == str(Path(sys.executable).parent / "airflow")


def test_a_watched_run_reports_each_change_of_its_tasks_once(monkeypatch) -> None:
    from nightshift.cli import progress_line
    from nightshift.ops import airflow_api
    from nightshift.ops.airflow_api import AirflowAPI

    polls = [
        {"ingest": "running", "validate": None},
        {"ingest": "running", "validate": None},  # no change: no line
        {"ingest": "success", "validate": "running"},
        {"ingest": "success", "validate": "success"},
    ]

    class Scripted(AirflowAPI):
        def task_states(self, dag_id: str, run_id: str) -> dict:
            return polls.pop(0)

        def api(self, method: str, path: str, body=None, token=None) -> dict:
            return {"state": "success" if not polls else "running", "dag_run_id": "r"}

    monkeypatch.setattr(airflow_api.time, "sleep", lambda seconds: None)
    lines: list[str] = []
    run = Scripted().watch_run("d", "r", lambda states: lines.append(progress_line(states)))
    assert run["state"] == "success"
    assert lines == [
        "  0/2 tasks done; running: ingest",
        "  1/2 tasks done; running: validate",
        "  2/2 tasks done",
    ]


def test_a_watched_run_shows_each_new_progress_line_of_a_running_task_once(monkeypatch) -> None:
    from nightshift.ops import airflow_api
    from nightshift.ops.airflow_api import AirflowAPI

    logged = [
        {"preprocess": "p 2026-01-02 preprocess: batch 1/10 (10%)"},
        {"preprocess": "p 2026-01-02 preprocess: batch 1/10 (10%)"},  # nothing new: no line
        {"preprocess": "p 2026-01-02 preprocess: batch 10/10 (100%)"},
        {"train_distributed": "p xgboost: round 20/200 (10%)"},
    ]

    class Scripted(AirflowAPI):
        def task_states(self, dag_id: str, run_id: str) -> dict:
            return {"preprocess": "running"}

        def progress(self, dag_id: str, run_id: str) -> dict:
            return logged.pop(0)

        def api(self, method: str, path: str, body=None, token=None) -> dict:
            return {"state": "success" if not logged else "running", "dag_run_id": "r"}

    monkeypatch.setattr(airflow_api.time, "sleep", lambda seconds: None)
    shown: list[tuple[str, str]] = []
    Scripted().watch_run("d", "r", lambda states: None, progress=lambda *a: shown.append(a))
    assert shown == [
        ("preprocess", "p 2026-01-02 preprocess: batch 1/10 (10%)"),
        ("preprocess", "p 2026-01-02 preprocess: batch 10/10 (100%)"),
        ("train_distributed", "p xgboost: round 20/200 (10%)"),
    ]


def test_backfill_takes_dates_and_says_what_is_wrong_before_asking_airflow(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    from nightshift.cli import main
    from nightshift.ops.backfill import Nights, night_dates

    monkeypatch.setenv("NIGHTSHIFT_AIRFLOW_HOME", str(tmp_path / "no-airflow-here"))
    args = ["backfill", "--pipeline", "retail_conversion", "--from", "2026-11-05"]
    assert main([*args, "--to", "2026-11-01"]) == 2
    assert "--to 2026-11-01 is before --from 2026-11-05" in capsys.readouterr().err
    assert main([*args, "--to", "2026-11-07"]) == 1
    assert "no scheduler runs from" in capsys.readouterr().err
    assert night_dates(dt.date(2026, 10, 31), dt.date(2026, 11, 1)) == ["2026-10-31", "2026-11-01"]
    states = {"2026-11-01": "success", "2026-11-02": "running", "2026-11-03": "queued"}
    assert Nights(states).line() == "  1/3 nights done; running: 2026-11-02"
    assert not Nights(states).finished
