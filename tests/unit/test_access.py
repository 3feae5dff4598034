"""Team access: a pipeline's `access:` becomes its DAG's access_control, and `nightshift roles`
creates each team role with FAB's own security manager, without the reach over every DAG."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nightshift.access import access_control, team_roles
from nightshift.config.pipeline import ConfigError, parse_pipeline
from tests.conftest import small_pipeline_dict, write_pipeline

FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"


def _pipeline(name: str, access: dict[str, str]):
    return parse_pipeline({**small_pipeline_dict(), "name": name, "access": access}, f"{name}.yaml")


def test_access_levels_become_per_dag_permissions() -> None:
    pipeline = _pipeline("alpha", {"fraud-analysts": "read", "fraud-oncall": "operate"})
    assert access_control(pipeline) == {
        "fraud-analysts": {"DAGs": {"can_read"}, "DAG Runs": {"can_read"}},
        "fraud-oncall": {
            "DAGs": {"can_read", "can_edit"},
            "DAG Runs": {"can_read", "can_create"},
        },
    }
    assert access_control(_pipeline("beta", {})) is None


def test_a_role_gets_the_most_any_pipeline_grants_it() -> None:
    pipelines = [_pipeline("a", {"team": "operate"}), _pipeline("b", {"team": "read", "x": "read"})]
    assert team_roles(pipelines) == {"team": "operate", "x": "read"}


@pytest.mark.parametrize(
    ("access", "expected"),
    [
        ({"Viewer": "read"}, "'Viewer' is one of Airflow's built-in roles"),
        ({"team": "write"}, "access.team"),
        ({"bad/role": "read"}, "access"),
    ],
)
def test_bad_access_is_refused_with_its_key(access: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        _pipeline("alpha", access)
    assert expected in str(error.value) and "alpha.yaml" in str(error.value)


def _airflow(home: Path, pipelines: Path, *command: str) -> str:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__AUTH_MANAGER": FAB,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "NIGHTSHIFT_PIPELINES_DIR": str(pipelines),
    }
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(
        [str(bin_dir / command[0]), *command[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def _permissions(home: Path, pipelines: Path, role: str) -> set[tuple[str, str]]:
    shown = _airflow(home, pipelines, "airflow", "roles", "list", "-p", "-o", "json")
    listed = json.loads(shown[shown.index("\n[") :])  # after FAB's log lines
    return {
        (action, entry["resource"])
        for entry in listed
        if entry["name"] == role
        for action in entry["action"].split(",")
    }


def test_nightshift_roles_creates_team_roles_without_every_dag(tmp_path: Path) -> None:
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    alpha = {**small_pipeline_dict(), "access": {"team-a": "read", "team-a-oncall": "operate"}}
    write_pipeline(pipelines, alpha, name="alpha")
    home = tmp_path / "home"
    _airflow(home, pipelines, "airflow", "db", "migrate")
    _airflow(home, pipelines, "airflow", "sync-perm")
    shown = _airflow(home, pipelines, "nightshift", "roles")
    assert "role team-a: read (nightshift_alpha)" in shown
    assert "role team-a-oncall: operate (nightshift_alpha)" in shown
    reader = _permissions(home, pipelines, "team-a")
    oncall = _permissions(home, pipelines, "team-a-oncall")
    # No reach over every DAG; the DAG menu and the rest of Viewer's (or User's) reading stay.
    for role in (reader, oncall):
        assert not {("can_read", "DAGs"), ("can_edit", "DAGs"), ("can_delete", "DAGs")} & role
        assert {("menu_access", "DAGs"), ("can_read", "Task Logs")} <= role
        assert ("can_read", "Plugins") in role  # the UI's Model reports entry needs it
    assert ("can_create", "DAG Runs") in oncall and ("can_create", "DAG Runs") not in reader
    # A role that drops to `read` loses what `operate` gave it; running it twice is the same.
    alpha["access"] = {"team-a": "read", "team-a-oncall": "read"}
    write_pipeline(pipelines, alpha, name="alpha")
    _airflow(home, pipelines, "nightshift", "roles")
    _airflow(home, pipelines, "nightshift", "roles")
    assert _permissions(home, pipelines, "team-a-oncall") == reader
