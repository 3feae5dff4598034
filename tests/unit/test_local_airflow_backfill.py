"""LocalAirflow.backfill on SQLite: a creation refused with "database is locked" is redone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nightshift.ops import local_airflow
from nightshift.ops.local_airflow import LocalAirflow

LOCKED = (
    "airflow backfill create --dag-id d failed (1): sqlalchemy.exc.OperationalError: "
    "(sqlite3.OperationalError) database is locked"
)


class Recorder(LocalAirflow):
    """A LocalAirflow whose CLI and REST calls are scripted and recorded."""

    def __init__(self, failures: list[str], paused: bool = False) -> None:
        super().__init__(home=Path("/nonexistent"))
        self.failures = list(failures)
        self.paused = paused
        self.calls: list[Any] = []
        self.open_backfills = [{"id": 7, "completed_at": "2026-01-01"}]
        self.next_id = 7

    def airflow(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        self.calls.append(("cli", *args[:2], "paused" if self.paused else "unpaused"))
        if self.failures:
            self.next_id += 1  # the refused creation left a partial backfill behind
            self.open_backfills.append({"id": self.next_id, "completed_at": None})
            raise RuntimeError(self.failures.pop(0))
        return "created"

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        self.calls.append((method, path))
        if method == "GET" and path == "dags/d":
            return {"is_paused": self.paused}
        if method == "PATCH":
            self.paused = bool(body["is_paused"])
            return {}
        if method == "GET" and path.startswith("backfills"):
            return {"backfills": [dict(b) for b in self.open_backfills]}
        if method == "PUT":
            for backfill in self.open_backfills:
                if path == f"backfills/{backfill['id']}/cancel":
                    backfill["completed_at"] = "now"
            return {}
        raise AssertionError((method, path))


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_airflow.time, "sleep", lambda seconds: None)


def test_a_locked_creation_is_cancelled_and_created_again_while_the_dag_is_paused() -> None:
    airflow = Recorder([LOCKED, LOCKED])
    assert airflow.backfill("d", "2026-09-01", "2026-09-30", "--reprocess-behavior", "completed")
    creations = [c for c in airflow.calls if c[0] == "cli"]
    assert creations == [("cli", "backfill", "create", "paused")] * 3
    cancels = [c for c in airflow.calls if c[0] == "PUT"]
    # Each refused creation's partial backfill, never the completed one from before.
    assert [path for _, path in cancels] == ["backfills/8/cancel", "backfills/9/cancel"]
    assert airflow.paused is False  # unpaused again, as it was


def test_a_dag_that_was_paused_stays_paused() -> None:
    airflow = Recorder([], paused=True)
    airflow.backfill("d", "2026-09-01", "2026-09-02")
    assert airflow.paused is True


def test_any_other_failure_is_raised_at_once_and_the_dag_unpaused() -> None:
    airflow = Recorder(["airflow backfill create failed (1): No runs to create"])
    with pytest.raises(RuntimeError, match="No runs to create"):
        airflow.backfill("d", "2026-09-01", "2026-09-02")
    assert [c for c in airflow.calls if c[0] == "PUT"] == []
    assert airflow.paused is False


def test_it_gives_up_after_the_last_attempt() -> None:
    airflow = Recorder([LOCKED] * 3)
    with pytest.raises(RuntimeError, match="database is locked"):
        airflow.backfill("d", "2026-09-01", "2026-09-02", attempts=3)
    assert len([c for c in airflow.calls if c[0] == "cli"]) == 3
    assert airflow.paused is False


def test_secrets_are_created_private_not_made_so_after(tmp_path: Path, monkeypatch) -> None:
    """The Fernet key, JWT secret and admin password never exist world-readable, even for the
    moment between a write and a chmod."""
    import os
    import stat

    monkeypatch.setattr(Path, "chmod", lambda self, mode: None)  # no fixing up afterwards
    old = os.umask(0o022)
    try:
        airflow = LocalAirflow(home=tmp_path)
        airflow.password()
        airflow._secret("fernet_key", lambda: "k")
    finally:
        os.umask(old)
    for path in (tmp_path / "simple_auth_manager_passwords.json", tmp_path / "secrets/fernet_key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_stale_pid_file_never_signals_an_unrelated_process(tmp_path: Path, monkeypatch) -> None:
    """After a reboot a pid file's pid may name another process (here: this test's own):
    the recorded start time tells them apart, and `down` signals nothing."""
    import os

    from nightshift.ops.local_airflow import _start_time

    airflow = LocalAirflow(home=tmp_path)
    (tmp_path / "run").mkdir()
    pid_file = tmp_path / "run" / "scheduler.pid"
    pid_file.write_text(f"{os.getpid()} {_start_time(os.getpid()) - 3600}")
    signalled: list[int] = []
    monkeypatch.setattr(os, "killpg", lambda pid, sig: signalled.append(pid))
    assert airflow.pid("scheduler") is None and not pid_file.exists()
    assert airflow.stop() == [] and signalled == []
    # The same pid with its own start time is the service.
    pid_file.write_text(f"{os.getpid()} {_start_time(os.getpid())}")
    assert airflow.pid("scheduler") == os.getpid()
