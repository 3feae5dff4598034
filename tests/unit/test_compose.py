"""docker-compose.yaml, the multi-machine shape, validated by docker-compose itself.

Debian's ``docker-compose`` (1.29) resolves and validates the file without a Docker daemon;
``.ci/run`` installs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.compose_file

COMPOSE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"


def _compose(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is not installed (apt-get install docker-compose; .ci/run does)"
    # Only the env file may supply values: nothing leaks in from the caller's environment.
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return subprocess.run(
        [
            binary,
            "--project-directory",
            str(REPO),
            "-f",
            str(COMPOSE),
            "--env-file",
            str(env_file),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_compose_config_is_valid_with_a_filled_env(filled_env: Path) -> None:
    result = _compose(filled_env, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    # .env.example as shipped: names every setting, leaves every secret empty.
    result = _compose(ENV_EXAMPLE, "config", "-q")
    assert result.returncode != 0
    assert "set POSTGRES_PASSWORD in .env" in result.stderr
    empty = tmp_path / "empty.env"
    empty.write_text("")
    assert "set POSTGRES_USER in .env" in _compose(empty, "config", "-q").stderr


def test_no_secret_has_a_default_and_every_setting_is_in_the_example() -> None:
    text = COMPOSE.read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)", text))
    documented = set(re.findall(r"^([A-Z_]+)=", ENV_EXAMPLE.read_text(), flags=re.M))
    assert used <= documented, f"not in .env.example: {sorted(used - documented)}"
    for name in used:
        # ${NAME:?message} or ${NAME}: a missing value is an error, never a silent default.
        assert not re.search(r"\$\{" + name + r":?-", text), f"{name} has a default in compose"
    for key, value in re.findall(
        r"^\s*([A-Z_]*(?:PASSWORD|SECRET|KEY)[A-Z_]*):\s*(.+)$", text, re.M
    ):
        if key.endswith("_FILE") or value.endswith(".pem"):
            continue  # a path (a key file in a volume), not a secret
        assert value.startswith("${"), f"{key} is set to a literal value in docker-compose.yaml"


def test_the_resolved_file_has_the_multi_machine_shape(filled_env: Path) -> None:
    result = _compose(filled_env, "config")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) >= {
        "postgres",
        "airflow-init",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "dask-scheduler",
        "dask-worker",
        "dask-cuda-worker",
        "minio",
        "mlflow",
    }
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor"):
        env = services[name]["environment"]
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert env["NIGHTSHIFT_DASK_ADDRESS"] == "tls://dask-scheduler:8786"
        assert env["DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY"].endswith("/client-key.pem")
        assert env["NIGHTSHIFT_LAKE"] == "s3://nightshift/lake"
        assert env["AWS_ENDPOINT_URL"] == "https://minio:9000"
        assert env["AWS_CA_BUNDLE"] == "/opt/nightshift/ca/ca.pem"
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert services[name]["depends_on"]["airflow-init"]["condition"] == (
            "service_completed_successfully"
        )
    # Secrets come from the env file.
    secrets = dict(
        line.split("=", 1) for line in filled_env.read_text().splitlines() if "=" in line
    )
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == secrets["POSTGRES_PASSWORD"]
    assert (
        services["airflow-scheduler"]["environment"]["AIRFLOW__CORE__FERNET_KEY"]
        == (secrets["AIRFLOW_FERNET_KEY"])
    )
    # GPU workers reserve NVIDIA devices and run dask-cuda; CPU workers are plain dask workers.
    gpu = services["dask-cuda-worker"]
    assert gpu["command"].startswith("dask cuda worker tls://dask-scheduler:8786")
    assert "--device-memory-limit" in gpu["command"]
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert (device["driver"], device["capabilities"]) == ("nvidia", ["gpu"])
    assert services["dask-worker"]["command"].startswith("dask worker tls://dask-scheduler:8786")
    # Under contention the workers come first (cgroup weight: 8x the default's).
    assert services["dask-worker"]["cpu_shares"] == services["dask-cuda-worker"]["cpu_shares"]
    assert services["dask-worker"]["cpu_shares"] == 8192
    # Dask is TLS with mutual authentication: every role its own pair, encryption required.
    for name, role in (("dask-scheduler", "SCHEDULER"), ("dask-worker", "WORKER")):
        env = services[name]["environment"]
        assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"
        assert env[f"DASK_DISTRIBUTED__COMM__TLS__{role}__CERT"].endswith(".pem"), name
    assert services["dask-scheduler"]["command"].startswith("dask scheduler --protocol tls")
    assert services["dask-worker"]["environment"]["AWS_ENDPOINT_URL"] == "https://minio:9000"
    # MLflow: registry in its own Postgres database, artifacts in MinIO, after airflow-init
    # (which creates that database).
    # Its own authentication (users in a second database) guards the champion alias, and
    # every Airflow service signs in as nightshift's service account, MLflow's admin.
    mlflow = services["mlflow"]
    command = " ".join(mlflow["command"])
    assert "postgresql+psycopg2://" in command and "@postgres:5432" in command
    assert '{server}/mlflow"' in command and '{server}/mlflow_auth"' in command
    assert "--artifacts-destination s3://nightshift/mlflow" in command
    assert "mlflow server --app-name basic-auth" in command
    assert mlflow["environment"]["MLFLOW_AUTH_ADMIN_USERNAME"] == secrets["MLFLOW_ADMIN_USER"]
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "https://minio:9000"
    assert mlflow["environment"]["AWS_CA_BUNDLE"] == "/opt/nightshift/ca/ca.pem"
    assert mlflow["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert '("mlflow", "mlflow_auth")' in " ".join(services["airflow-init"]["command"])
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor"):
        env = services[name]["environment"]
        assert env["MLFLOW_TRACKING_USERNAME"] == secrets["MLFLOW_ADMIN_USER"]
        assert env["MLFLOW_TRACKING_PASSWORD"] == secrets["MLFLOW_ADMIN_PASSWORD"]
        assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith(".FabAuthManager")
    # On one machine (.env.example's NIGHTSHIFT_HOST_ADDRESS) only loopback ports are
    # published; MinIO speaks TLS with the certificate the certificates service made.
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published and all(str(p).startswith("127.0.0.1:") for p in published), published
    assert "--certs-dir /opt/nightshift/store-certs" in services["minio"]["command"]
    made = " ".join(services["certificates"]["command"])
    assert "nightshift dask-certs" in made and "--host minio" in made
    assert services["minio"]["depends_on"]["certificates"]["condition"] == (
        "service_completed_successfully"
    )


def test_worker_kinds_are_compose_profiles() -> None:
    # docker-compose 1.29 drops `profiles` from `config` output, so read the file itself.
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert services["dask-worker"]["profiles"] == ["cpu"]
    assert services["dask-cuda-worker"]["profiles"] == ["gpu"]
    # One scheduler or the other: on compose's network with its workers, or on the host's
    # network for workers on other machines (compose/worker-host.yaml).
    assert services["dask-scheduler"]["profiles"] == ["cpu", "gpu"]
    assert services["dask-scheduler-host"]["profiles"] == ["multi-host"]
    always = [name for name, s in services.items() if "profiles" not in s]
    assert "airflow-scheduler" in always and "dask-scheduler" not in always
    for name in always:  # nothing that always starts waits for a scheduler that may not
        assert "dask-scheduler" not in (services[name].get("depends_on") or {}), name


def test_every_published_host_port_comes_from_the_env_file(filled_env: Path) -> None:
    raw = yaml.safe_load(COMPOSE.read_text())["services"]
    ports = [str(p) for s in raw.values() for p in s.get("ports", [])]
    # Loopback, but for the object store's S3 port, which other machines reach.
    s3 = "${NIGHTSHIFT_HOST_ADDRESS:?set NIGHTSHIFT_HOST_ADDRESS in .env}:${MINIO_PORT"
    assert ports and all(p.startswith(("127.0.0.1:${", s3)) for p in ports), ports
    moved = filled_env.read_text()
    for name, port in (("AIRFLOW", 18080), ("MLFLOW", 15000), ("DASK_DASHBOARD", 18787)):
        moved = re.sub(rf"^{name}_PORT=.*$", f"{name}_PORT={port}", moved, flags=re.M)
    moved = re.sub(r"^MINIO_CONSOLE_PORT=.*$", "MINIO_CONSOLE_PORT=19001", moved, flags=re.M)
    moved = re.sub(r"^MINIO_PORT=.*$", "MINIO_PORT=19000", moved, flags=re.M)
    filled_env.write_text(moved)
    services = yaml.safe_load(_compose(filled_env, "config").stdout)["services"]
    published = {
        str(p["published"]) if isinstance(p, dict) else str(p).split(":")[1]
        for s in services.values()
        for p in s.get("ports", [])
    }
    assert published == {"18080", "15000", "18787", "19001", "19000"}, published
    # MLflow's server allows the Host header a browser sends through the published port.
    assert services["mlflow"]["environment"]["MLFLOW_PORT"] == "15000"
    assert "localhost:$${MLFLOW_PORT}" in " ".join(services["mlflow"]["command"])


def test_the_shipped_pipelines_leave_the_lake_to_the_deployment() -> None:
    # On compose NIGHTSHIFT_LAKE puts the lake where every worker container reads it; a YAML
    # that pins a local path would write it inside one container only.
    for path in (REPO / "include" / "pipelines").glob("*.yaml"):
        output = yaml.safe_load(path.read_text()).get("output") or {}
        assert "lake" not in output and "reports" not in output, path.name


def test_pipelines_are_mounted_into_every_airflow_service(filled_env: Path) -> None:
    services = yaml.safe_load(_compose(filled_env, "config").stdout)["services"]
    airflow = [name for name in services if name.startswith("airflow-")]
    assert len(airflow) == 5, airflow
    for name in airflow:
        # docker-compose 1.29 prints short syntax (source:target:mode), v2 long syntax.
        mounts = [
            v
            if isinstance(v, dict)
            else dict(zip(("source", "target", "mode"), v.split(":"), strict=False))
            for v in services[name]["volumes"]
        ]
        [mount] = [v for v in mounts if v["target"] == "/opt/nightshift/include/pipelines"]
        assert mount.get("read_only") is True or mount.get("mode") == "ro", mount
        assert Path(mount["source"]) == REPO / "include" / "pipelines"


def test_the_readme_steps_are_the_ones_the_compose_tests_follow() -> None:
    # tests/compose runs the README's "Without Docker Hub" commands as they are written.
    from tests.compose.stack import readme_steps

    steps = readme_steps()
    assert steps[0] == "make compose-images", steps
    assert any(
        step.startswith("python3 compose/make_env.py") and step.endswith("> .env") for step in steps
    )
    assert steps[-1].endswith("--profile cpu up -d"), steps
    assert all("#" not in step for step in steps), steps


def test_a_generated_secret_never_starts_with_a_dash(monkeypatch) -> None:
    # CI once drew "-4AeT…" for a user's password, and `airflow users create --password -4AeT…`
    # refused it as an unknown option; the admin's password from make_env reaches that command.
    import importlib.util
    import secrets

    spec = importlib.util.spec_from_file_location("make_env", REPO / "compose" / "make_env.py")
    assert spec and spec.loader
    make_env = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_env)
    drawn = iter(["-4AeTAODtCQIgMp339cH0Q", "-x", "4AeTAODtCQIgMp339cH0Q"])
    monkeypatch.setattr(secrets, "token_urlsafe", lambda n: next(drawn))
    assert make_env.secret() == "4AeTAODtCQIgMp339cH0Q"
    # And the compose file passes the admin's password as `--password=…`, never as a lone word.
    text = COMPOSE.read_text()
    assert '--password="$$AIRFLOW_ADMIN_PASSWORD"' in text
    assert '--password "' not in text


WORKER_HOST = REPO / "compose" / "worker-host.yaml"
WORKER_ENV = REPO / "compose" / "worker-host.env.example"


def _worker_host(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return subprocess.run(
        ["docker-compose", "-f", str(WORKER_HOST), "--env-file", str(env_file), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_a_worker_host_joins_the_main_hosts_scheduler_and_store_over_tls(tmp_path: Path) -> None:
    # As shipped, the worker host's env file leaves the main host's addresses and the
    # certificates' folder empty: compose refuses to start until they are filled in.
    refused = _worker_host(WORKER_ENV, "--profile", "cpu", "config", "-q")
    assert refused.returncode != 0 and "in the env file" in refused.stderr, refused.stderr
    filled = {
        "DASK_SCHEDULER_ADDRESS": "tls://10.0.0.5:8786",
        "DASK_CERTS_DIR": str(tmp_path / "certs"),
        "DASK_WORKER_INTERFACE": "eth0",
        "DASK_WORKER_NAME": "gpu-box-1",
        "NIGHTSHIFT_OBJECT_STORE": "https://10.0.0.5:9000",
        "AWS_ACCESS_KEY_ID": "nightshift",
        "AWS_SECRET_ACCESS_KEY": "secret-of-the-deployment-made-long-enough",
    }
    text = WORKER_ENV.read_text()
    for name, value in filled.items():
        text = re.sub(rf"^{name}=$", f"{name}={value}", text, flags=re.M)
    env_file = tmp_path / "worker-host.env"
    env_file.write_text(text)
    for profile, service, command in (
        ("cpu", "dask-worker", "dask worker tls://10.0.0.5:8786 --interface eth0"),
        ("gpu", "dask-cuda-worker", "dask cuda worker tls://10.0.0.5:8786 --interface eth0"),
    ):
        resolved = _worker_host(env_file, "--profile", profile, "config")
        assert resolved.returncode == 0, resolved.stderr
        worker = yaml.safe_load(resolved.stdout)["services"][service]
        assert worker["command"].startswith(command), worker["command"]
        # On the host's network (XGBoost's collective reaches each worker at its own address),
        # nothing published, the worker's certificate pair and encryption required.
        assert worker["network_mode"] == "host" and "ports" not in worker
        env = worker["environment"]
        assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"
        assert env["DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY"].endswith("/worker-key.pem")
        assert env["AWS_ENDPOINT_URL"] == "https://10.0.0.5:9000"
        assert env["AWS_CA_BUNDLE"] == "/opt/nightshift/dask-certs/ca.pem"
        [certs] = worker["volumes"]
        mount = certs if isinstance(certs, str) else f"{certs['source']}:{certs['target']}:ro"
        assert mount.startswith(str(tmp_path / "certs")) and mount.endswith(":ro"), certs


def test_the_multi_host_scheduler_listens_on_the_hosts_address(filled_env: Path) -> None:
    moved = re.sub(
        r"^NIGHTSHIFT_HOST_ADDRESS=.*$",
        "NIGHTSHIFT_HOST_ADDRESS=10.0.0.5",
        filled_env.read_text(),
        flags=re.M,
    )
    filled_env.write_text(moved)
    resolved = _compose(filled_env, "--profile", "multi-host", "config")
    assert resolved.returncode == 0, resolved.stderr
    services = yaml.safe_load(resolved.stdout)["services"]
    scheduler = services["dask-scheduler-host"]
    assert scheduler["network_mode"] == "host" and "ports" not in scheduler
    assert scheduler["command"].startswith("dask scheduler --protocol tls --host 10.0.0.5 --port")
    assert "--dashboard-address 127.0.0.1:" in scheduler["command"]
    # 1.29 prints short syntax: host_ip:published:target/protocol.
    assert "10.0.0.5:9000:9000/tcp" in [str(p) for p in services["minio"]["ports"]]
