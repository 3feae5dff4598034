"""A client of an Airflow's public REST API (``/api/v2``): sign in, runs, backfills, tasks.

``AirflowAPI`` is a base class: a subclass says where the api-server is (``base_url``), who
signs in (``credentials``) and, optionally, where to look when it does not answer
(``diagnosis``). ``ops.local_airflow.LocalAirflow`` (the embedded services) and the compose
tests' stack both are one.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

FINISHED = ("success", "failed")


class AirflowAPI:
    """REST calls against the api-server at ``base_url``, signed in as ``credentials()``."""

    @property
    def base_url(self) -> str:
        """The api-server's address, e.g. ``http://127.0.0.1:8080``."""
        raise NotImplementedError

    def credentials(self) -> tuple[str, str]:
        """Return the user name and password the client signs in with."""
        raise NotImplementedError

    def diagnosis(self, service: str) -> str:
        """Return what helps explain why ``service`` did not answer (its log's end)."""
        return ""

    # -- calls -----------------------------------------------------------------------------

    def token(self, user: str | None = None, password: str | None = None) -> str:
        """Sign in (as ``user``, or as ``credentials()``); return the access token."""
        if user is None:
            user, password = self.credentials()
        body = json.dumps({"username": user, "password": password}).encode()
        request = urllib.request.Request(
            f"{self.base_url}/auth/token",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return str(json.load(response)["access_token"])

    def call(self, token: str, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        """Request ``path`` (from the server's root) with ``token``; return (status, body),
        also for a refusal (4xx). A server error (5xx) raises."""
        request = urllib.request.Request(
            f"{self.base_url}{path}",
            None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            if error.code >= 500:
                raise
            return error.code, error.read()

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        """Call ``/api/v2/<path>`` and return the decoded JSON; any HTTP error raises
        RuntimeError with the server's answer."""
        request = urllib.request.Request(
            f"{self.base_url}/api/v2/{path.lstrip('/')}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {token or self.token()}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise RuntimeError(f"{method} {path}: HTTP {exc.code}: {detail}") from None

    # -- waiting ---------------------------------------------------------------------------

    def wait_for_api(self, timeout: float = 180) -> float:
        """Wait until the api-server answers, its task execution API included; return the
        seconds it took. Raise with ``diagnosis`` if it does not.

        The execution API builds its versioned routes on its first request: 2.9 s on 2 cores,
        which the first task after a start would otherwise spend in the API server (seen as
        the first ``PATCH .../run`` of a night)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                with urllib.request.urlopen(f"{self.base_url}/api/v2/monitor/health", timeout=5):
                    pass
                with urllib.request.urlopen(f"{self.base_url}/execution/health", timeout=60):
                    return time.monotonic() - started
            except OSError:
                time.sleep(1)
        raise TimeoutError(
            f"the API server did not answer at {self.base_url} in {timeout}s:\n"
            f"{self.diagnosis('api-server')}"
        )

    def wait_for_dag(self, dag_id: str, timeout: float = 240) -> None:
        """Wait until the DAG processor has parsed and serialized ``dag_id``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.api("GET", f"dags/{dag_id}/details")
                return
            except RuntimeError:
                time.sleep(2)
        raise TimeoutError(
            f"{dag_id} was not parsed in {timeout}s:\n{self.diagnosis('dag-processor')}"
        )

    def wait_for_runs(
        self,
        dag_id: str,
        count: int,
        timeout: float = 1800,
        run_ids: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` runs (or the given runs) have finished and none is left
        running; return the finished ones."""
        wanted = set(run_ids or [])
        deadline = time.monotonic() + timeout
        finished: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            runs = [r for r in self.runs(dag_id) if not wanted or r["dag_run_id"] in wanted]
            finished = [r for r in runs if r["state"] in FINISHED]
            if len(finished) >= count and len(finished) == len(runs):
                return finished
            time.sleep(3)
        raise TimeoutError(f"{dag_id}: {len(finished)}/{count} runs finished in {timeout}s")

    def watch_run(
        self,
        dag_id: str,
        run_id: str,
        report: Callable[[dict[str, str]], None],
        timeout: float = 3600,
        progress: Callable[[str, str], None] | None = None,
    ) -> dict[str, Any]:
        """Wait until the run finishes, calling ``report`` with its task states each time they
        change (not on every poll), and ``progress`` with each new progress line a running
        task logged (task id, line); return the finished run."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        said: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = self.task_states(dag_id, run_id)
            if states != seen:
                report(states)
                seen = states
            news = self.progress(dag_id, run_id) if progress is not None else {}
            for task_id, line in news.items():
                if said.get(task_id) != line and progress is not None:
                    progress(task_id, line)
                    said[task_id] = line
            quoted = urllib.parse.quote(run_id, safe="")
            run = self.api("GET", f"dags/{dag_id}/dagRuns/{quoted}")
            if run["state"] in FINISHED:
                return dict(run)
            time.sleep(2)
        raise TimeoutError(f"{dag_id} {run_id}: not finished in {timeout}s: {seen}")

    def progress(self, dag_id: str, run_id: str) -> dict[str, str]:
        """The latest ``nightshift.config.progress`` line in each running task's log."""
        quoted = urllib.parse.quote(run_id, safe="")
        runs = f"dags/{dag_id}/dagRuns/{quoted}/taskInstances"
        found = {}
        for ti in self.api("GET", runs)["task_instances"]:
            if ti["state"] != "running":
                continue
            path = f"{runs}/{ti['task_id']}/logs/{ti['try_number']}?full_content=true"
            log = self.api("GET", path)
            lines = [
                str(entry.get("event"))
                for entry in log.get("content", [])
                if isinstance(entry, dict) and entry.get("logger") == "nightshift.progress"
            ]
            if lines:
                found[ti["task_id"]] = lines[-1]
        return found

    def wait_for_backfills(self, dag_id: str, timeout: float = 1800) -> list[dict[str, Any]]:
        """Wait until every backfill of ``dag_id`` is marked complete; return them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            backfills = list(self.api("GET", f"backfills?dag_id={dag_id}")["backfills"])
            if all(b["completed_at"] for b in backfills):
                return backfills
            time.sleep(3)
        raise TimeoutError(f"{dag_id}: backfills still running after {timeout}s")

    # -- DAGs, runs and tasks --------------------------------------------------------------

    def unpause(self, dag_id: str) -> None:
        """Unpause a DAG."""
        self.api("PATCH", f"dags/{dag_id}", {"is_paused": False})

    def pause(self, dag_id: str) -> None:
        """Pause a DAG."""
        self.api("PATCH", f"dags/{dag_id}", {"is_paused": True})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Trigger a run of a DAG with ``conf``; return its run id. A run for a given
        ``run_date`` carries that date as its partition key, as scheduled runs do."""
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if conf and conf.get("run_date"):
            body["partition_key"] = str(conf["run_date"])
        run = self.api("POST", f"dags/{dag_id}/dagRuns", body)
        return str(run["dag_run_id"])

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Return a DAG's runs (the newest 100)."""
        return list(self.api("GET", f"dags/{dag_id}/dagRuns?limit=100&order_by=-id")["dag_runs"])

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        """Return each task's state in one run."""
        quoted = urllib.parse.quote(run_id, safe="")
        instances = self.api("GET", f"dags/{dag_id}/dagRuns/{quoted}/taskInstances")
        return {ti["task_id"]: ti["state"] for ti in instances["task_instances"]}

    def cancel_open_backfills(self, dag_id: str) -> list[int]:
        """Cancel every backfill of ``dag_id`` that has not completed; return their ids."""
        cancelled = []
        for backfill in self.api("GET", f"backfills?dag_id={dag_id}")["backfills"]:
            if not backfill["completed_at"]:
                self.api("PUT", f"backfills/{backfill['id']}/cancel")
                cancelled.append(int(backfill["id"]))
        return cancelled
