"""The docker-compose stack as the compose tests drive it: the real docker-compose.yaml plus the
stand-in override, its own project name, a generated .env, stopped by its project alone."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nightshift.ops.airflow_api import AirflowAPI
from tests.conftest import REPO, write_pipeline

FILES = ("docker-compose.yaml", "compose/stand-ins/override.yaml")
ONE_SHOT = ("certificates", "airflow-init")  # services that run once and exit 0
NO_DOCKER_HUB = "**Without Docker Hub.**"  # the README paragraph whose commands the tests run


def _own_ports(checkout: Path, pipelines: Path) -> dict[str, str]:
    """Give the checkout's .env free loopback ports and the mounted ``pipelines`` folder;
    return its values."""
    spec = importlib.util.spec_from_file_location("make_env", checkout / "compose/make_env.py")
    assert spec is not None and spec.loader is not None
    make_env = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_env)
    values = {name: str(make_env.free_port()) for name in make_env.PORTS}
    values["AIRFLOW_BASE_URL"] = f"http://127.0.0.1:{values['AIRFLOW_PORT']}"
    values["MLFLOW_UI_URL"] = f"http://127.0.0.1:{values['MLFLOW_PORT']}"
    values["NIGHTSHIFT_PIPELINES_HOST_DIR"] = str(pipelines)
    # The address worker hosts reach this one at: Docker's bridge address on this machine, as a
    # user planning worker hosts picks their LAN address (never one outside this machine).
    values["NIGHTSHIFT_HOST_ADDRESS"] = bridge_gateway()
    env_file = checkout / ".env"
    text = env_file.read_text()
    for name, value in values.items():
        text = re.sub(rf"^{name}=.*$", f"{name}={value}", text, flags=re.M)
    env_file.write_text(text)
    return dict(re.findall(r"^([A-Z_]+)=(.*)$", text, flags=re.M))


def docker_compose(
    checkout: Path, options: list[str], args: tuple[str, ...], check: bool, timeout: float
) -> str:
    """Run ``docker-compose <options> <args>`` in ``checkout``; return its output, and raise
    with its end when it fails and ``check``."""
    done = subprocess.run(
        ["docker-compose", *options, *args],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def bridge_gateway() -> str:
    """Return this machine's address on Docker's default bridge (172.17.0.1 as a rule):
    reachable from every container and from this machine, from no other machine."""
    shown = subprocess.run(
        [
            "docker",
            "network",
            "inspect",
            "bridge",
            "--format",
            "{{(index .IPAM.Config 0).Gateway}}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return shown.stdout.strip()


def docker_ready() -> str | None:
    """Return why Docker cannot be used here, or None when a daemon answers."""
    for tool in ("docker", "docker-compose"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (.ci/run installs docker.io and docker-compose)"
    answered = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    return None if answered.returncode == 0 else f"no Docker daemon: {answered.stderr[-300:]}"


def readme_steps() -> list[str]:
    """Return the commands of docs/deployment.md's "Without Docker Hub" block, comments dropped: the
    steps a new user follows, which the compose tests follow too."""
    text = (REPO / "docs" / "deployment.md").read_text()
    block = text[text.index(NO_DOCKER_HUB) :].split("```bash\n", 1)[1].split("```", 1)[0]
    return [re.sub(r"\s+#.*$", "", line) for line in block.splitlines() if line.strip()]


def fresh_checkout(target: Path) -> Path:
    """Copy what a clone of this working tree holds (tracked files, and new ones git does not
    ignore) to ``target``: no .venv, no .env, no data."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():  # a tracked file deleted in the working tree is left out
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    return target


@dataclass
class Stack(AirflowAPI):
    """One compose project in its own checkout: ``compose(...)`` runs docker-compose on it;
    its Airflow's REST API is called as ``AirflowAPI`` does for the embedded one."""

    project: str
    checkout: Path
    start: str  # the README's `up -d` command
    env: dict[str, str] = field(default_factory=dict)
    token_: str | None = None

    @classmethod
    def built(
        cls, project: str, folder: Path, pipelines: dict[str, Path | dict[str, Any]]
    ) -> Stack:
        """Follow the README's "Without Docker Hub" steps in a fresh checkout up to the last
        (``up -d``, see :meth:`up`): stand-in images, a generated .env, the nightshift image.
        The .env then gets free loopback ports, as the README says to pick beside a local
        ``make up``, and a mounted folder holding ``pipelines`` (name -> a YAML file to copy
        as it is, or YAML data)."""
        checkout = fresh_checkout(folder / "nightshift")
        mounted = folder / "pipelines"
        mounted.mkdir(parents=True)
        mounted.chmod(0o755)  # the Airflow containers' user reads the mounted folder
        for name, source in pipelines.items():
            if isinstance(source, Path):
                shutil.copy(source, mounted / f"{name}.yaml")
            else:
                write_pipeline(mounted, source, name=name)
        *prepare, start = readme_steps()
        assert start.endswith("--profile cpu up -d"), start
        stack = cls(project, checkout, start)
        for step in prepare:
            stack.shell(step, timeout=1500)
            if step.endswith("> .env"):
                stack.env = _own_ports(checkout, mounted)
        assert stack.env, f"no README step writes .env: {prepare}"
        return stack

    def shell(self, command: str, timeout: float = 900) -> str:
        """Run a README command as its user would, in the checkout, on this project."""
        env = {**os.environ, "COMPOSE_PROJECT_NAME": self.project}
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=self.checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{command} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        return done.stdout + done.stderr

    def up(self) -> float:
        """Start every service with the README's command; return the seconds until all are
        healthy."""
        started = time.monotonic()
        try:
            self.shell(self.start)
        except RuntimeError as exc:  # a service that others wait on failed: say why
            init = self.compose("logs", "--no-color", "--tail", "80", "airflow-init", check=False)
            raise RuntimeError(f"{exc}\nairflow-init's log:\n{init}") from None
        self.wait_for_api(timeout=300)
        self.wait_healthy()
        return time.monotonic() - started

    def wait_healthy(self, timeout: float = 300) -> None:
        """Wait until every service runs, those with a health check healthy, and the one-shot
        ones (certificates, airflow-init) exited 0."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = {name: c["State"] for name, c in self.containers().items()}
            once = [states.get(f"{name}_1", {}) for name in ONE_SHOT]
            others = [s for n, s in states.items() if n.rsplit("_", 1)[0] not in ONE_SHOT]
            healthy = all(
                s["Status"] == "running"
                and s.get("Health", {}).get("Status", "healthy") == "healthy"
                for s in others
            )
            done = all(s.get("Status") == "exited" and s.get("ExitCode") == 0 for s in once)
            if done and healthy:
                return
            for name, state in zip(ONE_SHOT, once, strict=True):
                assert state.get("ExitCode", 0) == 0, self.compose("logs", name)
            time.sleep(3)
        raise TimeoutError(f"not healthy in {timeout}s: {self.compose('ps')}")

    def set_env(self, **values: str) -> None:
        """Change settings in the checkout's .env, as its user edits it."""
        env_file = self.checkout / ".env"
        text = env_file.read_text()
        for name, value in values.items():
            text = re.sub(rf"^{name}=.*$", f"{name}={value}", text, flags=re.M)
        env_file.write_text(text)
        self.env.update(values)

    def compose(
        self, *args: str, check: bool = True, timeout: float = 900, profile: str = "cpu"
    ) -> str:
        files = [part for name in FILES for part in ("-f", str(self.checkout / name))]
        options = ["-p", self.project, *files, "--profile", profile]
        return docker_compose(self.checkout, options, args, check, timeout)

    def exec(self, service: str, *command: str, timeout: float = 300) -> str:
        return self.compose("exec", "-T", service, *command, timeout=timeout)

    def containers(self) -> dict[str, dict[str, Any]]:
        """Return each of the project's containers' state, by service name and number."""
        ids = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if not ids:
            return {}
        found = json.loads(subprocess.check_output(["docker", "inspect", *ids]))
        return {
            c["Config"]["Labels"]["com.docker.compose.service"]
            + "_"
            + c["Config"]["Labels"]["com.docker.compose.container-number"]: c
            for c in found
        }

    def leftovers(self) -> list[str]:
        """Return every container, network and volume of the project still there."""
        label = f"label=com.docker.compose.project={self.project}"
        found = []
        for kind in (["ps", "-aq"], ["network", "ls", "-q"], ["volume", "ls", "-q"]):
            listed = subprocess.check_output(["docker", *kind, "--filter", label], text=True)
            found += [f"{kind[0]}:{item}" for item in listed.split()]
        return found

    @property
    def base_url(self) -> str:
        """The api-server's address on this machine."""
        return f"http://127.0.0.1:{self.env['AIRFLOW_PORT']}"

    def credentials(self) -> tuple[str, str]:
        """The admin from .env."""
        return self.env["AIRFLOW_ADMIN_USER"], self.env["AIRFLOW_ADMIN_PASSWORD"]

    def diagnosis(self, service: str) -> str:
        """The end of the service's container log."""
        container = {"api-server": "airflow-apiserver", "dag-processor": "airflow-dag-processor"}
        return self.compose("logs", "--tail", "60", container.get(service, service))

    def rest(self, method: str, path: str, body: Any = None) -> Any:
        """Call the REST API (``/api/v2/<path>``) as the admin, signed in once per start."""
        self.token_ = self.token_ or self.token()
        return self.api(method, path, body, token=self.token_)

    def add_user(self, name: str, role: str) -> str:
        """Create an Airflow user with ``role`` as an admin does (the FAB CLI); return its
        password."""
        password = secrets.token_urlsafe(16)
        self.exec(
            "airflow-apiserver",
            *("airflow", "users", "create", "--username", name, "--role", role),
            *(f"--password={password}", "--email", f"{name}@example.org"),
            *("--firstname", name, "--lastname", "test"),
        )
        return password

    @property
    def mlflow(self) -> str:
        return f"http://127.0.0.1:{self.env['MLFLOW_PORT']}"

    def mlflow_env(self) -> dict[str, str]:
        """The MLflow client's credentials: nightshift's service account, as tasks sign in."""
        return {
            "MLFLOW_TRACKING_USERNAME": self.env["MLFLOW_ADMIN_USER"],
            "MLFLOW_TRACKING_PASSWORD": self.env["MLFLOW_ADMIN_PASSWORD"],
        }


@dataclass
class WorkerHost:
    """Another machine's workers: compose/worker-host.yaml in its own project, with its own env
    file (compose/worker-host.env.example filled in), started and stopped as its user would."""

    project: str
    checkout: Path
    env_file: Path

    @classmethod
    def written(cls, project: str, checkout: Path, folder: Path, **values: str) -> WorkerHost:
        """Fill in the example env file with ``values`` in ``folder``; nothing started."""
        text = (checkout / "compose" / "worker-host.env.example").read_text()
        for name, value in values.items():
            text, found = re.subn(rf"^{name}=.*$", f"{name}={value}", text, flags=re.M)
            assert found == 1, name
        env_file = folder / f"{project}.env"
        env_file.write_text(text)
        return cls(project, checkout, env_file)

    def compose(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        options = ["-p", self.project, "-f", "compose/worker-host.yaml"]
        options += ["--env-file", str(self.env_file), "--profile", "cpu"]
        return docker_compose(self.checkout, options, args, check, timeout)
