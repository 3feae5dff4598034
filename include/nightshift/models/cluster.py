"""The one place that decides which Dask cluster a task uses, and owns its lifetime.

Three modes, chosen by :func:`plan_cluster` from the environment:

``external``
    ``NIGHTSHIFT_DASK_ADDRESS`` (or the Airflow connection ``nightshift_dask``) names a running
    scheduler: the one ``make up`` or docker-compose starts, or what dask-kubernetes /
    dask-jobqueue expose. Nothing is started; workers may be CPU or ``dask cuda worker``.
``local-cuda``
    GPUs are visible and dask-cuda is installed (the ``gpu`` extra): a ``LocalCUDACluster``,
    one worker per GPU, with a device memory limit and spilling to host memory.
``local``
    Otherwise a CPU ``LocalCluster``: one single-threaded worker per core, each with a host
    memory limit; Dask spills to disk past it.

``NIGHTSHIFT_DASK_MODE=local`` or ``local-cuda`` forces a local mode.

Local clusters run inside a fresh ``python -m nightshift.models.cluster_host`` interpreter, never in
the calling process. Under Airflow's real scheduler the task process runs with the metadata DB
deliberately unreachable and its ``__main__`` is the ``airflow`` entry point, so workers that
a ``LocalCluster(processes=True)`` spawns from it re-import Airflow and die with "Could not
parse SQLAlchemy URL". Workers spawned from the host interpreter never import Airflow. The host
reads its stdin until the task closes it, so it also ends when the task is killed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from distributed import Client

from nightshift.config.settings import is_loopback, setting, text_setting

log = logging.getLogger(__name__)

ADDRESS_ENV = "NIGHTSHIFT_DASK_ADDRESS"
CONNECTION_ENV = "NIGHTSHIFT_DASK_CONN_ID"
MODE_ENV = "NIGHTSHIFT_DASK_MODE"
WORKERS_ENV = "NIGHTSHIFT_DASK_WORKERS"
MEMORY_ENV = "NIGHTSHIFT_DASK_MEMORY_LIMIT"
DEVICE_MEMORY_ENV = "NIGHTSHIFT_DASK_DEVICE_MEMORY_LIMIT"
HOST_START_TIMEOUT = 120.0

Mode = Literal["external", "local-cuda", "local"]
T = TypeVar("T")


class ClusterError(RuntimeError):
    """The cluster configuration cannot be honoured; the message says which setting."""


@dataclass(frozen=True)
class ClusterPlan:
    """Which cluster to use and how to size it; ``reason`` says why, for the task log."""

    mode: Mode
    reason: str
    address: str | None = None
    workers: int = 0
    memory_limit: str = "auto"
    device_memory_limit: str = "0.8"


def plan_cluster(
    env: Mapping[str, str],
    cores: int,
    gpus: int,
    has_dask_cuda: bool,
    connection_address: str | None = None,
) -> ClusterPlan:
    """Return the cluster plan for this environment (a pure function: no I/O)."""
    address = text_setting(ADDRESS_ENV, env).strip()
    if address:
        return ClusterPlan("external", f"{ADDRESS_ENV}={address}", address=address)
    if connection_address:
        conn_id = text_setting(CONNECTION_ENV, env)
        return ClusterPlan(
            "external", f"Airflow connection '{conn_id}'", address=connection_address
        )

    forced = text_setting(MODE_ENV, env).strip() or "auto"
    if forced not in ("auto", "local", "local-cuda"):
        raise ClusterError(
            f"{MODE_ENV}={forced!r}: choose 'auto', 'local' or 'local-cuda' "
            f"(or set {ADDRESS_ENV} for an external scheduler)"
        )
    memory_limit = text_setting(MEMORY_ENV, env)
    workers_setting = text_setting(WORKERS_ENV, env).strip()
    if workers_setting and (not workers_setting.isdigit() or int(workers_setting) < 1):
        raise ClusterError(f"{WORKERS_ENV}={workers_setting!r}: expected a positive integer")

    if forced == "local-cuda" or (forced == "auto" and gpus > 0 and has_dask_cuda):
        if gpus == 0:
            raise ClusterError(f"{MODE_ENV}=local-cuda, but no GPU is visible")
        if not has_dask_cuda:
            raise ClusterError(
                f"{MODE_ENV}=local-cuda, but dask-cuda is not installed: "
                "install the 'gpu' extra (uv sync --extra gpu)"
            )
        count = min(gpus, int(workers_setting)) if workers_setting else gpus
        return ClusterPlan(
            "local-cuda",
            f"{gpus} GPU(s) visible and dask-cuda installed",
            workers=count,
            memory_limit=memory_limit,
            device_memory_limit=text_setting(DEVICE_MEMORY_ENV, env),
        )

    if forced == "local":
        reason = f"{MODE_ENV}=local"
    elif gpus > 0:
        reason = (
            f"{gpus} GPU(s) visible but dask-cuda is not installed "
            "(install the 'gpu' extra to use them); CPU workers"
        )
    else:
        reason = "no GPU visible; CPU workers"
    count = int(workers_setting) if workers_setting else max(1, cores)
    return ClusterPlan("local", reason, workers=count, memory_limit=memory_limit)


def visible_gpus(env: Mapping[str, str] | None = None) -> int:
    """Return how many NVIDIA GPUs this process may use (0 without a driver)."""
    env = os.environ if env is None else env
    restricted = env.get("CUDA_VISIBLE_DEVICES")
    if restricted is not None:
        devices = [d for d in restricted.split(",") if d.strip() and d.strip() != "-1"]
        if not devices:
            return 0
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    found = sum(1 for line in listed.stdout.splitlines() if line.startswith("GPU "))
    return min(found, len(devices)) if restricted is not None else found


def has_dask_cuda() -> bool:
    """Whether dask-cuda is installed here (the gpu extra)."""
    import importlib.util

    return importlib.util.find_spec("dask_cuda") is not None


def airflow_connection_address(env: Mapping[str, str] | None = None) -> str | None:
    """Return the scheduler address from the Airflow connection, if one is defined.

    The connection (default id ``nightshift_dask``, e.g. ``AIRFLOW_CONN_NIGHTSHIFT_DASK=
    tcp://dask-scheduler:8786``) is looked up through Airflow's secrets backends, so it may
    live in the metadata DB, an environment variable or a vault.
    """
    env = os.environ if env is None else env
    conn_id = text_setting(CONNECTION_ENV, env)
    if f"AIRFLOW_CONN_{conn_id.upper()}" not in env and "AIRFLOW_CTX_DAG_ID" not in env:
        return None  # not inside an Airflow task and no env connection: nothing to look up
    try:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
    except Exception as exc:  # missing connection, or no Airflow context to ask
        log.debug("no Airflow connection %r: %s", conn_id, exc)
        return None
    extra = conn.extra_dejson or {}
    if extra.get("address"):
        return str(extra["address"])
    if not conn.host:
        return None
    scheme = conn.conn_type if conn.conn_type in ("tcp", "tls", "ucx", "ws", "wss") else "tcp"
    return f"{scheme}://{conn.host}:{conn.port or 8786}"


def local_worker_count() -> int:
    """Return how many single-threaded workers a local CPU cluster starts: one per core."""
    return plan_cluster(os.environ, usable_cores(), 0, False).workers


def usable_cores() -> int:
    """Return the cores this process may run on (its CPU affinity, as a container's limit)."""
    return max(1, len(os.sched_getaffinity(0)))


LOWEST_PRIORITY = 19


def shares_this_machine(plan: ClusterPlan) -> bool:
    """Return whether the plan's workers run on this machine: a local cluster, or a scheduler
    on loopback or this host's name (``make up``'s, or one started beside Airflow)."""
    if plan.mode != "external":
        return True
    from urllib.parse import urlsplit

    host = urlsplit(plan.address or "").hostname or ""
    return host == socket.gethostname() or is_loopback(host)


def on_idle_cores(fn: Callable[..., T], *args: Any) -> T:
    """Return ``fn(*args)``, run in a forked child at the lowest CPU priority.

    The batch-wise models train in a task process while XGBoost trains on the Dask workers;
    on one machine a third busy process slows all of XGBoost's ranks, which wait for each other
    every round (2 cores: 117.6 s beside SGD against 96.3 s alone). A nice value alone does not
    yield to them: Linux shares the CPU between sessions (autogroups) first, and the workers
    run in another session than the task (``make up``'s). The child starts a session of its
    own and sets it, and itself, to nice 19: it runs on the cores the workers leave idle, on
    all of them once XGBoost is done, and at full speed where the machine has cores to spare.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    log.info(
        "the Dask workers share this machine: %s runs at the lowest CPU priority (nice %d, "
        "a session of its own), on the cores they leave idle",
        getattr(fn, "__name__", fn),
        LOWEST_PRIORITY,
    )
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(1, mp_context=context, initializer=_lowest_priority) as pool:
        try:
            return pool.submit(fn, *args).result()
        except BrokenProcessPool:
            raise RuntimeError(
                f"{getattr(fn, '__name__', fn)} died in its lowest-priority process "
                "(killed, or out of memory); see the task log"
            ) from None
        except BaseException:
            # Stopped meanwhile (Airflow's SIGTERM raises here): leaving the pool would wait
            # for the work to end. The pool has no public way to stop a running call.
            for process in list(getattr(pool, "_processes", {}).values()):
                process.kill()
            raise


def _lowest_priority() -> None:
    """In the forked child: its own session, so its own autogroup, both at nice 19; it dies
    with the task (a session of its own escapes the task's process group)."""
    import ctypes

    os.setsid()
    with contextlib.suppress(OSError):  # a kernel without autogroup scheduling
        Path("/proc/self/autogroup").write_text(str(LOWEST_PRIORITY))
    os.setpriority(os.PRIO_PROCESS, 0, LOWEST_PRIORITY)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


_PR_SET_PDEATHSIG = 1


def describe(client: Client) -> str:
    """Return a one-line description of the cluster: workers by host, threads, dashboard."""
    from nightshift.data.preprocess import by_host

    info = client.scheduler_info(n_workers=-1)
    workers = info.get("workers", {})
    threads = sum(w.get("nthreads", 0) for w in workers.values())
    return (
        f"scheduler {client.scheduler.address}, {len(workers)} workers "
        f"({by_host(workers)}), {threads} threads, dashboard {client.dashboard_link}"
    )


def current_plan() -> ClusterPlan:
    """Return the plan for this process's environment."""
    address = None if setting(ADDRESS_ENV) else airflow_connection_address()
    gpus = visible_gpus()
    return plan_cluster(os.environ, usable_cores(), gpus, has_dask_cuda(), address)


@contextmanager
def dask_client(plan: ClusterPlan | None = None) -> Iterator[Client]:
    """Yield a connected Client; a local cluster started here is closed on exit."""
    plan = plan or current_plan()
    if plan.mode == "external":
        assert plan.address is not None
        with Client(plan.address, timeout="30s") as client:
            log.info("Dask mode: external (%s), %s", plan.reason, describe(client))
            yield client
        return

    with cluster_host(plan) as address, Client(address, timeout="30s") as client:
        client.wait_for_workers(plan.workers, timeout=HOST_START_TIMEOUT)
        unit = "GPU worker(s)" if plan.mode == "local-cuda" else "CPU worker(s)"
        log.info(
            "Dask mode: %s (%s), %d %s, memory limit %s per worker, %s",
            plan.mode,
            plan.reason,
            plan.workers,
            unit,
            plan.memory_limit,
            describe(client),
        )
        yield client


@contextmanager
def cluster_host(plan: ClusterPlan) -> Iterator[str]:
    """Start a local cluster in a fresh interpreter; yield its scheduler address."""
    # The host never needs Airflow's settings; keep them (and the unreachable DB URL) away.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__DATABASE")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nightshift.models.cluster_host", json.dumps(asdict(plan))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        address = _read_address(proc)
        yield address
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the host closes its cluster and exits
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            log.warning("Dask cluster host %d did not stop in 60 s; killing it", proc.pid)
            proc.kill()
            proc.wait()


def _read_address(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + HOST_START_TIMEOUT
    while time.monotonic() < deadline:
        if selector.select(timeout=1.0):
            line = proc.stdout.readline()
            if not line:
                break
            message: dict[str, Any] = json.loads(line)
            if "error" in message:
                raise ClusterError(f"local Dask cluster did not start: {message['error']}")
            return str(message["address"])
        if proc.poll() is not None:
            break
    proc.kill()
    raise ClusterError(
        f"local Dask cluster did not start within {HOST_START_TIMEOUT:.0f} s "
        f"(host exit code {proc.poll()}); see the log above"
    )


@dataclass(frozen=True)
class Accelerators:
    """What every worker of a cluster can use: a GPU, and cuDF for GPU dataframes."""

    gpu: bool = False
    cudf: bool = False

    @property
    def dataframe_backend(self) -> Literal["cudf", "pandas"]:
        """The DataFrame library the workers preprocess with."""
        return "cudf" if self.gpu and self.cudf else "pandas"

    @property
    def xgboost_device(self) -> Literal["cuda", "cpu"]:
        """The device XGBoost trains on."""
        return "cuda" if self.gpu else "cpu"


def _worker_accelerators() -> dict[str, Any]:
    """Run on a worker: its own GPU (``host:device``, empty without one) and cuDF.

    A GPU is a worker's own when dask-cuda started it: dask-cuda puts that GPU first in each
    worker's ``CUDA_VISIBLE_DEVICES``. Plain workers on a GPU machine all see the same GPUs.
    """
    import importlib.util
    import socket

    gpu = visible_gpus() > 0
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    own = f"{socket.gethostname()}:{first}" if gpu and first else ""
    return {"gpu": own, "cudf": gpu and importlib.util.find_spec("cudf") is not None}


def combine_accelerators(answers: Mapping[str, Mapping[str, Any]]) -> Accelerators:
    """Return what *every* worker has: a GPU of its own, and cuDF.

    One CPU-only worker means the CPU path for all, and so do workers that share a GPU:
    XGBoost refuses two ranks on one device ("Multiple processes within communication group
    running on same CUDA device", seen with one CPU worker per core on an H100 machine).
    """
    if not answers:
        return Accelerators()
    devices = [str(a.get("gpu") or "") for a in answers.values()]
    own_gpus = all(devices) and len(set(devices)) == len(devices)
    return Accelerators(
        gpu=own_gpus,
        cudf=own_gpus and all(a.get("cudf", False) for a in answers.values()),
    )


def accelerators(client: Client) -> Accelerators:
    """Ask every worker what it has; log the compute path chosen."""
    found = combine_accelerators(client.run(_worker_accelerators))
    log.info(
        "compute path: dataframes on %s, XGBoost on %s",
        found.dataframe_backend,
        found.xgboost_device,
    )
    return found
