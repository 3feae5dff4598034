"""The embedded default: Airflow (SQLite, LocalExecutor) and a Dask cluster on this machine.

Everything lives in an Airflow home inside the project (``.airflow/``, ignored by git): the
config, generated secrets and login, the SQLite database, logs and the pid of each service.
Services bind to 127.0.0.1 and are stopped by their own pid (and its process group).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nightshift.config.settings import PROJECT_ROOT, setting, text_setting
from nightshift.ops.airflow_api import AirflowAPI

log = logging.getLogger(__name__)

AIRFLOW_SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")
USERNAME = "admin"


def _start_time(pid: int) -> float:
    """When process ``pid`` started (seconds since the epoch, as the kernel says)."""
    import psutil

    return float(psutil.Process(pid).create_time())


def _started_at(pid: int, started: float | None) -> bool:
    """Whether process ``pid`` runs and started at ``started`` (None: a pid file from before
    start times were recorded, trusted as it was)."""
    import psutil

    try:
        if started is None:
            return bool(psutil.pid_exists(pid))
        return abs(_start_time(pid) - started) < 0.01
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` readable by its owner alone from the start (a secret is never, even
    for a moment, a file the umask left readable), and write ``text``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(text)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _airflow_home() -> Path:
    """The embedded Airflow's home: ``NIGHTSHIFT_AIRFLOW_HOME``, else the checkout's."""
    return Path(setting("NIGHTSHIFT_AIRFLOW_HOME") or PROJECT_ROOT / ".airflow")


def _port(name: str) -> int:
    """A port setting, as a number; a value that is none names the variable."""
    value = text_setting(name)
    if not value.isdigit():
        raise ValueError(f"{name}={value!r}: a port is a number")
    return int(value)


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


@dataclass
class LocalAirflow(AirflowAPI):
    """An Airflow home and the services started from it; its REST calls are ``AirflowAPI``'s."""

    home: Path = field(default_factory=_airflow_home)
    project: Path = PROJECT_ROOT
    # Read when a LocalAirflow is made, not when this module is imported.
    api_port: int = field(default_factory=lambda: _port("NIGHTSHIFT_API_PORT"))
    dask_port: int = field(default_factory=lambda: _port("NIGHTSHIFT_DASK_PORT"))
    dask_dashboard_port: int = field(
        default_factory=lambda: _port("NIGHTSHIFT_DASK_DASHBOARD_PORT")
    )
    parallelism: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)

    # -- configuration -------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The api-server's address on this machine."""
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def dask_address(self) -> str:
        """The local Dask scheduler's address."""
        return f"tcp://127.0.0.1:{self.dask_port}"

    def _secret(self, name: str, make: Any) -> str:
        path = self.home / "secrets" / name
        if not path.exists():
            _write_private(path, make())
        return path.read_text().strip()

    def credentials(self) -> tuple[str, str]:
        """The embedded login: ``admin`` and its generated password."""
        return USERNAME, self.password()

    def diagnosis(self, service: str) -> str:
        """The end of ``service``'s log."""
        return self.logs(service)

    def password(self) -> str:
        """Return the admin password, creating the login on first use."""
        passwords = self.home / "simple_auth_manager_passwords.json"
        if not passwords.exists():
            _write_private(passwords, json.dumps({USERNAME: secrets.token_urlsafe(12)}))
        return str(json.loads(passwords.read_text())[USERNAME])

    def env(self, with_dask: bool = False) -> dict[str, str]:
        """Return the environment every Airflow command of this home runs with."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.password()
        fernet = self._secret(
            "fernet_key", lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        )
        database = self.home / "airflow.db"
        values = {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.project / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.project / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "nightshift.ops.executor.PreloadingLocalExecutor",
            # Sized for a small machine: the default of 32 starts 32 worker processes.
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(self.parallelism),
            "AIRFLOW__CORE__FERNET_KEY": fernet,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(
                self.home / "simple_auth_manager_passwords.json"
            ),
            # A busy timeout lets CLI commands (backfill create) wait for the scheduler's write
            # lock instead of failing with "database is locked".
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{database}?timeout=60",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": self._secret("api_secret", lambda: secrets.token_hex(32)),
            "AIRFLOW__API_AUTH__JWT_SECRET": self._secret("jwt", lambda: secrets.token_hex(32)),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
            "NIGHTSHIFT_HOME": setting("NIGHTSHIFT_HOME") or str(self.project),
        }
        if with_dask:
            values["NIGHTSHIFT_DASK_ADDRESS"] = self.dask_address
        values.update(self.extra_env)
        return values

    def airflow(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        """Run an ``airflow`` CLI command against this home; return its output."""
        completed = subprocess.run(
            [_bin("airflow"), *args],
            env={**os.environ, **self.env(with_dask=self._dask_running())},
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.project,
        )
        if check and completed.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} failed ({completed.returncode}):\n"
                f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
            )
        return completed.stdout

    # -- processes ---------------------------------------------------------------------

    def _pid_file(self, service: str) -> Path:
        return self.home / "run" / f"{service}.pid"

    def pid(self, service: str) -> int | None:
        """Return the pid of a running service, or None.

        The pid file holds the pid and its process's start time: after a reboot (or long
        enough) the pid may name an unrelated process, which must never be signalled, so a
        pid whose process started at another time is a stale file, removed."""
        path = self._pid_file(service)
        if not path.exists():
            return None
        pid, _, started = path.read_text().strip().partition(" ")
        if not _started_at(int(pid), float(started) if started else None):
            path.unlink(missing_ok=True)
            return None
        return int(pid)

    def _dask_running(self) -> bool:
        return self.pid("dask-scheduler") is not None

    def _start(self, service: str, command: list[str], env: dict[str, str]) -> int:
        if (running := self.pid(service)) is not None:
            return running
        logs = self.home / "run"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"{service}.log", "ab") as out:
            process = subprocess.Popen(
                command,
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.project,
                start_new_session=True,
            )
        self._pid_file(service).write_text(f"{process.pid} {_start_time(process.pid)}")
        log.info("started %s (pid %d), log %s", service, process.pid, logs / f"{service}.log")
        return process.pid

    def init_db(self) -> None:
        """Create or upgrade the SQLite database, in WAL mode so readers don't block writers."""
        import sqlite3

        self.airflow("db", "migrate", timeout=600)
        with sqlite3.connect(self.home / "airflow.db") as connection:
            connection.execute("PRAGMA journal_mode=WAL")

    def start_dask(self, workers: int | None = None) -> None:
        """Start a shared Dask scheduler and workers on loopback for the Airflow tasks."""
        from nightshift.models.cluster import local_worker_count

        env = {k: v for k, v in self.env().items() if not k.startswith("AIRFLOW")}
        self._start(
            "dask-scheduler",
            [
                _bin("dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.dask_port),
                "--dashboard-address",
                f"127.0.0.1:{self.dask_dashboard_port}",
            ],
            env,
        )
        self._start(
            "dask-worker",
            [
                _bin("dask"),
                "worker",
                self.dask_address,
                "--host",
                "127.0.0.1",
                "--nworkers",
                str(workers or local_worker_count()),
                "--nthreads",
                "1",
                "--memory-limit",
                "auto",
                "--no-dashboard",
            ],
            env,
        )

    def start(self, services: Iterable[str] = AIRFLOW_SERVICES, dask: bool = True) -> None:
        """Start the services (and a shared Dask cluster) and wait until the API answers."""
        self.init_db()
        if dask:
            self.start_dask()
        env = self.env(with_dask=dask)
        for service in services:
            command = [_bin("airflow"), service]
            if service == "scheduler":
                command = [*RESTART_ON_EXIT, *command]
            self._start(service, command, env)
        self.wait_for_api()

    def stop(self, timeout: float = 30) -> list[str]:
        """Stop every service this home started, by pid; return the names stopped."""
        services = [*reversed(AIRFLOW_SERVICES), "dask-worker", "dask-scheduler"]
        pids = {name: pid for name in services if (pid := self.pid(name)) is not None}
        # Signal every process group first, then wait for them together.
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, pid in pids.items():
            _wait_group(pid, deadline)
            self._pid_file(name).unlink(missing_ok=True)
        return list(pids)

    def running(self) -> dict[str, int]:
        """Return each running service's pid, by name."""
        names = [*AIRFLOW_SERVICES, "dask-scheduler", "dask-worker"]
        return {name: pid for name in names if (pid := self.pid(name)) is not None}

    def wait_for_executor(self, timeout: float = 180) -> float:
        """Wait until every executor worker has preloaded its libraries; return the seconds
        waited. A just-started scheduler's first task waits this long (12-14 s for 4 workers
        on 2 cores, measured); a benchmark waits it out, as a night on a long-running
        scheduler never sees it."""
        from nightshift.ops.executor import PRELOADED

        started = time.monotonic()
        log = self.home / "run" / "scheduler.log"
        while time.monotonic() - started < timeout:
            text = log.read_text(errors="replace") if log.exists() else ""
            if text.count(PRELOADED) >= self.parallelism:
                return time.monotonic() - started
            time.sleep(0.5)
        raise TimeoutError(
            f"the executor's {self.parallelism} workers did not preload in {timeout}s:\n"
            f"{self.diagnosis('scheduler')}"
        )

    def logs(self, service: str, tail: int = 4000) -> str:
        """Return the end of a service's log."""
        path = self.home / "run" / f"{service}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def backfill_dry_run(self, dag_id: str, first: str, last: str, *extra: str) -> str:
        """Return what ``backfill create --dry-run`` lists for the dates ``first`` to ``last``."""
        return self.airflow(*_backfill_command(dag_id, first, last), *extra, "--dry-run")

    def backfill(
        self,
        dag_id: str,
        first: str,
        last: str,
        *extra: str,
        attempts: int = 20,
    ) -> str:
        """Create a backfill of ``dag_id`` for the dates ``first`` to ``last`` (YYYY-MM-DD).

        Each night's partition key is the date it processes; Airflow reads the range's bounds
        as wall-clock times in the DAG's timezone, so from the first date's midnight to the
        last one's end is exactly those dates.

        On SQLite, Airflow's ``backfill create`` can fail half-way with "database is locked"
        when another process writes while it creates the runs: it writes them in SAVEPOINT
        transactions, which SQLite cannot upgrade to a write once another connection has
        written: any write by the scheduler (its heartbeat, every 5 s) or the dag-processor
        during the second or two of creation. Seen here (before runs had partition keys, when
        re-processing re-queued the existing runs) on 8 of 15 re-processing creations, after
        0-28 of 30 runs. So the DAG is paused
        while the runs are created, keeping the scheduler off the ones already queued, and a
        creation that fails that way has its partial backfill cancelled (its queued runs
        become failed, which ``completed`` re-processes) and is created again: at that rate,
        20 attempts all failing is rarer than one in 100,000.
        """
        command = [*_backfill_command(dag_id, first, last), *extra]
        was_paused = bool(self.api("GET", f"dags/{dag_id}")["is_paused"])
        self.pause(dag_id)
        try:
            return self._create_backfill(dag_id, command, attempts)
        finally:
            if not was_paused:
                self.unpause(dag_id)

    def _create_backfill(self, dag_id: str, command: list[str], attempts: int) -> str:
        """Run ``backfill create``; on "database is locked", cancel the partial one, retry."""
        for attempt in range(1, attempts + 1):
            try:
                return self.airflow(*command)
            except RuntimeError as exc:
                if "database is locked" not in str(exc) or attempt == attempts:
                    raise
                cancelled = self.cancel_open_backfills(dag_id)
                log.warning(
                    "backfill of %s: SQLite refused a write (database is locked); "
                    "cancelled the partial backfill %s, creating it again (%d/%d)",
                    dag_id,
                    cancelled,
                    attempt + 1,
                    attempts,
                )
                # Off the beat of the scheduler's 5-second heartbeat writes.
                time.sleep(1 + 3 * random.random())
        raise AssertionError("unreachable")


def _backfill_command(dag_id: str, first: str, last: str) -> list[str]:
    """Airflow's ``backfill create`` of the nights of ``first`` to ``last`` (YYYY-MM-DD)."""
    return [
        "backfill",
        "create",
        "--dag-id",
        dag_id,
        "--from-date",
        f"{dt.date.fromisoformat(first)}T00:00:00",
        "--to-date",
        f"{dt.date.fromisoformat(last)}T23:59:59",
    ]


# The scheduler can die on a transient database race (seen here on SQLite at the start of a
# backfill: "StaleDataError: UPDATE statement on table 'dag_run' expected to update 2 row(s);
# 0 were matched", apache/airflow#63926). As compose's `restart: unless-stopped` does, start
# it again; `stop` ends the loop with the rest of the process group.
RESTART_ON_EXIT = [
    "bash",
    "-c",
    'trap \'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 0\' TERM INT; '
    'while :; do "$@" & child=$!; wait "$child"; '
    'echo "nightshift: $1 exited with status $?; restarting in 2 s" >&2; sleep 2; done',
    "restart-on-exit",
]


def _wait_group(pid: int, deadline: float) -> None:
    """Wait until process group ``pid`` is gone; SIGKILL what is left at ``deadline``."""
    while time.monotonic() < deadline:
        # A leader started by this process stays a zombie (and keeps its group alive) until
        # it is reaped here.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def fresh(home: Path, **kwargs: Any) -> LocalAirflow:
    """Return a LocalAirflow on an empty home with free ports (for tests and benchmarks)."""
    shutil.rmtree(home, ignore_errors=True)
    return LocalAirflow(
        home=home,
        api_port=_free_port(),
        dask_port=_free_port(),
        dask_dashboard_port=_free_port(),
        **kwargs,
    )
