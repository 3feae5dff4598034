"""`nightshift check --production`: each unsafe setting is refused with its name and the fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nightshift.ops.production import production_problems
from tests.conftest import REPO

SAFE_AIRFLOW = {
    ("core", "auth_manager"): (
        "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    ),
    ("core", "simple_auth_manager_all_admins"): "False",
    ("core", "fernet_key"): "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE=",
    ("database", "sql_alchemy_conn"): "postgresql+psycopg2://airflow:x@postgres:5432/airflow",
    ("api", "secret_key"): "k" * 40,
    ("api_auth", "jwt_secret"): "j" * 40,
}
SAFE_ENV = {
    "DASK_SCHEDULER_HOST": "dask-scheduler",
    "DASK_DASHBOARD_ADDRESS": "dask-scheduler:8787",
    "POSTGRES_PASSWORD": "a-long-random-secret-1",
    "AIRFLOW_ADMIN_PASSWORD": "a-long-random-secret-2",
    "MINIO_ROOT_PASSWORD": "a-long-random-secret-3",
    "MLFLOW_ADMIN_PASSWORD": "a-long-random-secret-4",
    "MLFLOW_TRACKING_URI": "http://mlflow:5000",
    "MLFLOW_TRACKING_USERNAME": "nightshift",
    "MLFLOW_TRACKING_PASSWORD": "a-long-random-secret-4",
    "MLFLOW_SECRET_KEY": "m" * 40,
}


def _problems(airflow: dict | None = None, env: dict | None = None) -> list[str]:
    settings = {**SAFE_AIRFLOW, **(airflow or {})}
    return production_problems(lambda s, k: settings.get((s, k)), {**SAFE_ENV, **(env or {})})


def test_a_safe_deployment_passes() -> None:
    assert _problems() == []


@pytest.mark.parametrize(
    ("airflow", "env", "expected"),
    [
        ({("core", "simple_auth_manager_all_admins"): "True"}, {}, "every visitor of the UI"),
        ({("core", "fernet_key"): ""}, {}, "[core] fernet_key is empty"),
        ({("core", "fernet_key"): None}, {}, "[core] fernet_key is empty"),
        ({("database", "sql_alchemy_conn"): "sqlite:////x/airflow.db"}, {}, "parallel backfills"),
        ({}, {"DASK_SCHEDULER_HOST": "0.0.0.0"}, "DASK_SCHEDULER_HOST='0.0.0.0'"),
        ({}, {"DASK_DASHBOARD_ADDRESS": ":8787"}, "the Dask dashboard listens on every"),
        ({}, {"DASK_DASHBOARD_ADDRESS": "0.0.0.0:8787"}, "the Dask dashboard listens on every"),
        ({}, {"POSTGRES_PASSWORD": "airflow"}, "POSTGRES_PASSWORD is a default password"),
        ({}, {"MINIO_ROOT_PASSWORD": "minioadmin"}, "MINIO_ROOT_PASSWORD is a default password"),
        ({}, {"AIRFLOW_ADMIN_PASSWORD": "admin"}, "AIRFLOW_ADMIN_PASSWORD is a default"),
        ({}, {"AIRFLOW_ADMIN_PASSWORD": "short-1"}, "is 7 characters; use at least 12"),
        ({}, {"MLFLOW_ADMIN_PASSWORD": "password"}, "MLFLOW_ADMIN_PASSWORD is a default"),
        ({}, {"MLFLOW_TRACKING_USERNAME": ""}, "move the champion alias"),
        ({}, {"MLFLOW_TRACKING_PASSWORD": ""}, "move the champion alias"),
        ({("api", "secret_key"): "secret"}, {}, "[api] secret_key (AIRFLOW__API__SECRET_KEY)"),
        ({("api_auth", "jwt_secret"): None}, {}, "[api_auth] jwt_secret"),
        ({("api_auth", "jwt_secret"): "short-but-not-a-default"}, {}, "JWT_SECRET) is weak"),
        ({}, {"MLFLOW_SECRET_KEY": "changeme"}, "MLFLOW_SECRET_KEY is weak"),
        ({}, {"POSTGRES_PASSWORD": "long-pass@word#1"}, "'#@', which ends the password part"),
        ({}, {"NIGHTSHIFT_HOST_ADDRESS": "0.0.0.0"}, "(compose profile multi-host) listens on"),
        (
            {},
            {"NIGHTSHIFT_HOST_ADDRESS": "10.0.0.5", "AWS_ENDPOINT_URL": "http://minio:9000"},
            "published on NIGHTSHIFT_HOST_ADDRESS='10.0.0.5' for other machines but spoken to",
        ),
    ],
)
def test_each_unsafe_setting_is_refused(airflow, env, expected) -> None:
    problems = _problems(airflow, env)
    assert len(problems) == 1 and expected in problems[0], problems


def test_team_roles_need_an_auth_manager_that_enforces_them() -> None:
    settings = SAFE_AIRFLOW.copy()
    access = {"shop": {"shop-readers": "read"}, "open": {}}
    problems = production_problems(lambda s, k: settings.get((s, k)), SAFE_ENV, access)
    assert len(problems) == 1 and "pipeline shop limits access to ['shop-readers']" in problems[0]
    settings[("core", "auth_manager")] = (
        "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
    )
    assert production_problems(lambda s, k: settings.get((s, k)), SAFE_ENV, access) == []


def test_mlflow_credentials_are_needed_only_for_a_server() -> None:
    # A token signs requests as well as a password; a local store has no server to guard.
    unsigned = {"MLFLOW_TRACKING_USERNAME": "", "MLFLOW_TRACKING_PASSWORD": ""}
    assert _problems(env={**unsigned, "MLFLOW_TRACKING_TOKEN": "t0ken"}) == []
    assert _problems(env={**unsigned, "MLFLOW_TRACKING_URI": "sqlite:////x/mlflow.db"}) == []


MUTUAL = {
    "NIGHTSHIFT_DASK_ADDRESS": "tls://dask:8786",
    "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
    "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": "/certs/ca.pem",
    "DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__CERT": "/certs/scheduler.pem",
    "DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__KEY": "/certs/scheduler-key.pem",
}


def test_an_object_store_for_other_machines_speaks_tls() -> None:
    # Published on loopback (one machine) plain HTTP inside compose's network is allowed;
    # published for other machines, only https.
    for address in ("127.0.0.1", "localhost"):
        env = {"NIGHTSHIFT_HOST_ADDRESS": address, "AWS_ENDPOINT_URL": "http://minio:9000"}
        assert _problems(env=env) == []
    env = {"NIGHTSHIFT_HOST_ADDRESS": "10.0.0.5", "AWS_ENDPOINT_URL": "https://minio:9000"}
    assert _problems(env=env) == []


def test_a_wildcard_bind_is_allowed_with_tls_and_mutual_authentication_only() -> None:
    published = {"DASK_SCHEDULER_HOST": "0.0.0.0"}
    assert _problems(env={**published, **MUTUAL}) == []
    # A tls:// address alone is not enough: without the authority anyone may join.
    [problem] = _problems(env={**published, "NIGHTSHIFT_DASK_ADDRESS": "tls://dask:8786"})
    assert "missing: DASK_DISTRIBUTED__COMM__TLS__CA_FILE, " in problem
    assert "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=True" in problem
    assert "nightshift dask-certs" in problem
    for name in [name for name in MUTUAL if name.startswith("DASK_")]:
        [problem] = _problems(env={**published, **MUTUAL, name: ""})
        assert name in problem, (name, problem)
    plaintext = {**published, **MUTUAL, "NIGHTSHIFT_DASK_ADDRESS": "tcp://dask:8786"}
    [problem] = _problems(env=plaintext)
    assert "a tls:// NIGHTSHIFT_DASK_ADDRESS (not 'tcp://dask:8786')" in problem


def test_the_command_refuses_the_embedded_defaults(tmp_path: Path) -> None:
    # The local defaults (SQLite, no Fernet key, all-admins) are fine for one laptop, never
    # for a shared deployment: the command exits 1 and names each setting.
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/airflow.db",
        "AIRFLOW__CORE__FERNET_KEY": "",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "DASK_SCHEDULER_HOST": "0.0.0.0",
        "POSTGRES_PASSWORD": "postgres",
    }
    result = subprocess.run(
        [sys.executable, "-m", "nightshift.cli", "check", "--production"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    refused = [line for line in result.stdout.splitlines() if line.startswith("refuse")]
    for expected in ("all_admins", "fernet_key", "SQLite", "DASK_SCHEDULER_HOST", "POSTGRES"):
        assert any(expected in line for line in refused), (expected, refused)


@pytest.mark.compose_file
def test_compose_runs_the_check_and_passes_it_when_filled_in(filled_env: Path) -> None:
    from tests.unit.test_compose import _compose

    result = _compose(filled_env, "config")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    init = services["airflow-init"]
    assert "nightshift check --production" in " ".join(init["command"])
    env = {k: str(v) for k, v in init["environment"].items()}

    def airflow(section: str, key: str) -> str | None:
        return env.get(
            f"AIRFLOW__{section.upper()}__{key.upper()}", SAFE_AIRFLOW.get((section, key))
        )

    assert production_problems(airflow, env) == []
    scheduler = services["dask-scheduler"]["command"]
    assert (
        "--host dask-scheduler" in scheduler
        and "--dashboard-address dask-scheduler:8787" in scheduler
    )
