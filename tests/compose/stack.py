"""The docker-compose stack as the compose tests drive it: the real docker-compose.yaml plus the
stand-in override, its own project name, a generated .env, stopped by its project alone."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import REPO, write_pipeline

FILES = ("docker-compose.yaml", "compose/stand-ins/override.yaml")


def docker_ready() -> str | None:
    """Return why Docker cannot be used here, or None when a daemon answers."""
    for tool in ("docker", "docker-compose"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (.ci/run installs docker.io and docker-compose)"
    answered = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    return None if answered.returncode == 0 else f"no Docker daemon: {answered.stderr[-300:]}"


@dataclass
class Stack:
    """One compose project: ``compose(...)`` runs docker-compose on it."""

    project: str
    env_file: Path
    env: dict[str, str] = field(default_factory=dict)
    token_: str | None = None

    @classmethod
    def built(
        cls, project: str, folder: Path, pipelines: dict[str, Path | dict[str, Any]]
    ) -> Stack:
        """Return a stack whose images are built (the stand-ins and nightshift's), with a
        generated .env and ``pipelines`` (name -> a YAML file to copy as it is, or YAML data)
        in its mounted folder."""
        mounted = folder / "pipelines"
        mounted.mkdir(parents=True)
        mounted.chmod(0o755)  # the Airflow containers' user reads the mounted folder
        for name, source in pipelines.items():
            if isinstance(source, Path):
                shutil.copy(source, mounted / f"{name}.yaml")
            else:
                write_pipeline(mounted, source, name=name)
        subprocess.run(["bash", "compose/stand-ins/build.sh"], cwd=REPO, check=True, timeout=1200)
        command = ["python3", "compose/make_env.py", "--free-ports", "--stand-ins"]
        command += ["--set", f"NIGHTSHIFT_PIPELINES_HOST_DIR={mounted}"]
        text = subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True).stdout
        env_file = folder / ".env"
        env_file.write_text(text)
        stack = cls(project, env_file, dict(re.findall(r"^([A-Z_]+)=(.*)$", text, flags=re.M)))
        stack.compose("build", "airflow-init", timeout=1500)
        return stack

    def up(self) -> float:
        """Start every service; return the seconds until all are healthy."""
        started = time.monotonic()
        self.compose("up", "-d")
        self.wait_for_api()
        self.wait_healthy()
        return time.monotonic() - started

    def wait_healthy(self, timeout: float = 300) -> None:
        """Wait until every service runs, those with a health check healthy, and airflow-init
        exited 0."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = {name: c["State"] for name, c in self.containers().items()}
            init = states.get("airflow-init_1", {})
            others = [s for n, s in states.items() if not n.startswith("airflow-init")]
            healthy = all(
                s["Status"] == "running"
                and s.get("Health", {}).get("Status", "healthy") == "healthy"
                for s in others
            )
            if init.get("Status") == "exited" and init.get("ExitCode") == 0 and healthy:
                return
            assert init.get("ExitCode", 0) == 0, self.compose("logs", "airflow-init")
            time.sleep(3)
        raise TimeoutError(f"not healthy in {timeout}s: {self.compose('ps')}")

    def compose(
        self, *args: str, check: bool = True, timeout: float = 900, profile: str = "cpu"
    ) -> str:
        command = ["docker-compose", "-p", self.project, "--env-file", str(self.env_file)]
        for name in FILES:
            command += ["-f", str(REPO / name)]
        command += ["--profile", profile, *args]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
            )
        return done.stdout + done.stderr

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
    def api(self) -> str:
        return f"http://127.0.0.1:{self.env['AIRFLOW_PORT']}"

    def wait_for_api(self, timeout: float = 300) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                with urllib.request.urlopen(f"{self.api}/api/v2/monitor/health", timeout=5):
                    return time.monotonic() - started
            except OSError:
                time.sleep(2)
        logs = self.compose("logs", "--tail", "60", "airflow-apiserver")
        raise TimeoutError(f"the api-server did not answer in {timeout}s:\n{logs}")

    def token(self) -> str:
        body = {
            "username": self.env["AIRFLOW_ADMIN_USER"],
            "password": self.env["AIRFLOW_ADMIN_PASSWORD"],
        }
        request = urllib.request.Request(
            f"{self.api}/auth/token",
            json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return str(json.load(response)["access_token"])

    def rest(self, method: str, path: str, body: Any = None) -> Any:
        self.token_ = self.token_ or self.token()
        request = urllib.request.Request(
            f"{self.api}/api/v2/{path}",
            None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {self.token_}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self.rest("GET", f"dags/{dag_id}/dagRuns?limit=100")["dag_runs"]

    def wait_for_runs(self, dag_id: str, count: int, timeout: float = 1200) -> list[dict[str, Any]]:
        """Wait until ``count`` runs of ``dag_id`` have finished; return them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            finished = [r for r in self.runs(dag_id) if r["state"] in ("success", "failed")]
            if len(finished) >= count:
                return finished
            time.sleep(5)
        raise TimeoutError(f"{dag_id}: {self.runs(dag_id)}")

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        quoted = urllib.parse.quote(run_id, safe="")
        found = self.rest("GET", f"dags/{dag_id}/dagRuns/{quoted}/taskInstances")
        return {t["task_id"]: t["state"] for t in found["task_instances"]}

    def wait_for_backfills(self, dag_id: str, count: int, timeout: float = 1200) -> None:
        """Wait until ``dag_id`` has ``count`` backfills, every one completed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.rest("GET", f"backfills?dag_id={dag_id}")["backfills"]
            if len(found) == count and all(b["completed_at"] for b in found):
                return
            time.sleep(5)
        raise TimeoutError(f"{dag_id}: {self.rest('GET', f'backfills?dag_id={dag_id}')}")
