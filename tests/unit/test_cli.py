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


class PausedAirflow:
    """A LocalAirflow stand-in: a scheduler runs, the DAG's pause flag and pools are scripted."""

    home = Path("/airflow-home")

    def __init__(self, paused: bool, open_slots: int = 4, healthy: bool = True) -> None:
        self.paused, self.open_slots, self.healthy = paused, open_slots, healthy
        self.unpaused: list[str] = []
        self.created: list[tuple[str, ...]] = []

    def running(self) -> dict[str, int]:
        return {"scheduler": 1}

    def api(self, method: str, path: str, body: object = None) -> dict:
        if path == "monitor/health":
            status = "healthy" if self.healthy else "unhealthy"
            return {"scheduler": {"status": status, "latest_scheduler_heartbeat": "2026-12-01"}}
        if path == "pools":
            return {"pools": [{"name": "default_pool", "slots": 4, "open_slots": self.open_slots}]}
        if path.startswith("backfills?"):
            return {"backfills": [{"completed_at": "2026-12-01"}]}
        return {"is_paused": self.paused}

    def unpause(self, dag_id: str) -> None:
        self.unpaused.append(dag_id)
        self.paused = False

    def backfill_dry_run(self, dag_id: str, *args: str) -> str:
        return f"dry run of {dag_id} {' '.join(args)}"

    def backfill(self, *args: str) -> str:
        self.created.append(args)
        return "created"


def _backfill_cli(monkeypatch, airflow: PausedAirflow, *extra: str) -> int:
    from nightshift import cli
    from nightshift.ops import local_airflow

    monkeypatch.setattr(local_airflow, "LocalAirflow", lambda: airflow)
    dates = ["--from", "2013-03-04", "--to", "2013-03-06"]
    return cli.main(["backfill", "--pipeline", "retail_conversion", *dates, *extra])


def test_a_backfill_of_a_paused_dag_is_refused_at_once_with_what_to_run(
    monkeypatch, capsys
) -> None:
    airflow = PausedAirflow(paused=True)
    assert _backfill_cli(monkeypatch, airflow) == 1
    err = capsys.readouterr().err
    assert "nightshift_retail_conversion is paused" in err
    assert "--unpause" in err
    assert "airflow dags unpause nightshift_retail_conversion" in err
    assert airflow.created == [] and airflow.unpaused == []


def test_unpause_lets_the_backfill_run_and_says_so(monkeypatch, capsys) -> None:
    from nightshift.ops import backfill

    airflow = PausedAirflow(paused=True)
    finished = backfill.Nights(dict.fromkeys(["2013-03-04", "2013-03-05", "2013-03-06"], "success"))
    monkeypatch.setattr(backfill, "backfill", lambda *args: finished)
    assert _backfill_cli(monkeypatch, airflow, "--unpause") == 0
    out = capsys.readouterr().out
    assert airflow.unpaused == ["nightshift_retail_conversion"]
    assert "unpaused nightshift_retail_conversion for the backfill" in out
    assert "2013-03-06: success" in out


def test_dry_run_lists_the_nights_and_creates_none(monkeypatch, capsys) -> None:
    airflow = PausedAirflow(paused=True)
    assert _backfill_cli(monkeypatch, airflow, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "3 nights, 2013-03-04 to 2013-03-06 (dry run)" in out
    assert "dry run of nightshift_retail_conversion 2013-03-04 2013-03-06" in out
    assert airflow.created == [] and airflow.unpaused == []


def test_nights_queued_for_long_say_why(monkeypatch) -> None:
    from nightshift.config.pipeline import find_pipeline
    from nightshift.ops import backfill

    clock = iter(range(0, 100_000, 30))
    monkeypatch.setattr(backfill.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(backfill.time, "sleep", lambda seconds: None)
    queued = backfill.Nights({"2013-03-04": "queued", "2013-03-05": "queued"})
    done = backfill.Nights({"2013-03-04": "success", "2013-03-05": "success"})
    polls = iter([queued] * 6 + [done])
    monkeypatch.setattr(backfill, "nights", lambda *args: next(polls))
    airflow = PausedAirflow(paused=False, open_slots=0)
    lines: list[str] = []
    pipeline = find_pipeline("retail_conversion")
    backfill.backfill(airflow, pipeline, ["2013-03-04", "2013-03-05"], [], lines.append)  # type: ignore[arg-type]
    reasons = [line for line in lines if "queued for" in line]
    assert len(reasons) == 1, lines  # said once, not on every poll
    assert "no free slot in pool default_pool (4 slots)" in reasons[0]


def test_why_queued_names_a_paused_dag_and_a_dead_scheduler() -> None:
    from nightshift.ops.backfill import why_queued

    assert "d is paused" in why_queued(PausedAirflow(paused=True), "d")  # type: ignore[arg-type]
    dead = why_queued(PausedAirflow(paused=False, healthy=False), "d")  # type: ignore[arg-type]
    assert "scheduler's last heartbeat is 2026-12-01" in dead
