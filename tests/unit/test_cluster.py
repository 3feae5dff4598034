"""Which Dask cluster a task gets, and the local cluster host's lifetime."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distributed import Client

from nightshift.models.cluster import (
    ClusterError,
    ClusterPlan,
    airflow_connection_address,
    combine_accelerators,
    dask_client,
    on_idle_cores,
    plan_cluster,
    shares_this_machine,
    visible_gpus,
)


def test_an_address_in_the_environment_wins() -> None:
    plan = plan_cluster(
        {"NIGHTSHIFT_DASK_ADDRESS": "tcp://10.0.0.5:8786", "NIGHTSHIFT_DASK_MODE": "local"},
        cores=8,
        gpus=4,
        has_dask_cuda=True,
        connection_address="tcp://other:8786",
    )
    assert plan == ClusterPlan(
        "external", "NIGHTSHIFT_DASK_ADDRESS=tcp://10.0.0.5:8786", address="tcp://10.0.0.5:8786"
    )


def test_an_airflow_connection_names_the_scheduler() -> None:
    plan = plan_cluster({}, cores=8, gpus=0, has_dask_cuda=False, connection_address="tcp://s:1")
    assert (plan.mode, plan.address, plan.reason) == (
        "external",
        "tcp://s:1",
        "Airflow connection 'nightshift_dask'",
    )


def test_gpus_with_dask_cuda_give_one_worker_per_gpu() -> None:
    plan = plan_cluster(
        {"NIGHTSHIFT_DASK_DEVICE_MEMORY_LIMIT": "0.6"}, cores=32, gpus=4, has_dask_cuda=True
    )
    assert (plan.mode, plan.workers, plan.device_memory_limit) == ("local-cuda", 4, "0.6")
    assert "4 GPU(s)" in plan.reason


def test_gpus_without_dask_cuda_fall_back_to_cpu_and_say_why() -> None:
    plan = plan_cluster({}, cores=8, gpus=2, has_dask_cuda=False)
    assert (plan.mode, plan.workers) == ("local", 8)
    assert "dask-cuda is not installed" in plan.reason and "'gpu' extra" in plan.reason


def test_no_gpu_gives_one_cpu_worker_per_core_with_a_memory_limit() -> None:
    plan = plan_cluster({}, cores=2, gpus=0, has_dask_cuda=True)
    assert (plan.mode, plan.workers, plan.memory_limit) == ("local", 2, "auto")
    sized = plan_cluster(
        {"NIGHTSHIFT_DASK_WORKERS": "3", "NIGHTSHIFT_DASK_MEMORY_LIMIT": "2GiB"},
        cores=2,
        gpus=0,
        has_dask_cuda=False,
    )
    assert (sized.workers, sized.memory_limit) == (3, "2GiB")


def test_a_forced_mode_is_honoured_or_refused_with_the_setting_named() -> None:
    assert plan_cluster({"NIGHTSHIFT_DASK_MODE": "local"}, 4, 2, True).mode == "local"
    with pytest.raises(ClusterError, match="NIGHTSHIFT_DASK_MODE=local-cuda, but no GPU"):
        plan_cluster({"NIGHTSHIFT_DASK_MODE": "local-cuda"}, 4, 0, True)
    with pytest.raises(ClusterError, match=r"dask-cuda is not installed.*gpu"):
        plan_cluster({"NIGHTSHIFT_DASK_MODE": "local-cuda"}, 4, 1, False)
    with pytest.raises(ClusterError, match=r"NIGHTSHIFT_DASK_MODE='kubernetes'"):
        plan_cluster({"NIGHTSHIFT_DASK_MODE": "kubernetes"}, 4, 0, False)
    with pytest.raises(ClusterError, match="NIGHTSHIFT_DASK_WORKERS='zero'"):
        plan_cluster({"NIGHTSHIFT_DASK_WORKERS": "zero"}, 4, 0, False)


def test_visible_gpus_reads_the_driver_and_cuda_visible_devices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\n"
        "echo 'GPU 0: NVIDIA H100 (UUID: GPU-a)'\n"
        "echo 'GPU 1: NVIDIA H100 (UUID: GPU-b)'\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))  # where shutil.which finds the driver tool
    assert visible_gpus({}) == 2
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1"}) == 1
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == 0
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == 0
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert visible_gpus({}) == 0  # no driver at all


def test_the_gpu_path_needs_a_gpu_of_its_own_on_every_worker() -> None:
    def gpu(device: str, cudf: bool = True) -> dict:
        return {"gpu": device, "cudf": cudf}

    assert combine_accelerators({}).xgboost_device == "cpu"
    both = combine_accelerators({"a": gpu("h1:0"), "b": gpu("h1:1")})
    assert (both.dataframe_backend, both.xgboost_device) == ("cudf", "cuda")
    two_hosts = combine_accelerators({"a": gpu("h1:0"), "b": gpu("h2:0")})
    assert two_hosts.xgboost_device == "cuda"
    mixed = combine_accelerators({"a": gpu("h1:0"), "b": gpu("", cudf=False)})
    assert (mixed.dataframe_backend, mixed.xgboost_device) == ("pandas", "cpu")
    no_cudf = combine_accelerators({"a": gpu("h1:0", cudf=False)})
    assert (no_cudf.dataframe_backend, no_cudf.xgboost_device) == ("pandas", "cuda")
    # One CPU worker per core on a GPU machine: every worker sees the same GPU.
    shared = combine_accelerators({"a": gpu("h1:0"), "b": gpu("h1:0")})
    assert (shared.dataframe_backend, shared.xgboost_device) == ("pandas", "cpu")


def test_a_worker_names_its_own_gpu_only_when_dask_cuda_pinned_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    from nightshift.models import cluster

    monkeypatch.setattr(cluster, "visible_gpus", lambda: 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,2,0")
    assert cluster._worker_accelerators()["gpu"] == f"{socket.gethostname()}:1"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert cluster._worker_accelerators()["gpu"] == ""
    monkeypatch.setattr(cluster, "visible_gpus", lambda: 0)
    assert cluster._worker_accelerators() == {"gpu": "", "cudf": False}


def test_the_airflow_connection_is_read_from_airflows_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_NIGHTSHIFT_DASK", "tcp://dask-scheduler:8786")
    assert airflow_connection_address() == "tcp://dask-scheduler:8786"
    monkeypatch.setenv(
        "AIRFLOW_CONN_NIGHTSHIFT_DASK",
        json.dumps({"conn_type": "generic", "extra": {"address": "tls://sched:8786"}}),
    )
    assert airflow_connection_address() == "tls://sched:8786"
    monkeypatch.delenv("AIRFLOW_CONN_NIGHTSHIFT_DASK")
    assert airflow_connection_address() is None


def test_a_local_cluster_runs_work_and_is_gone_after(caplog: pytest.LogCaptureFixture) -> None:
    plan = ClusterPlan("local", "test", workers=1, memory_limit="1GiB")
    with caplog.at_level("INFO", logger="nightshift.models.cluster"), dask_client(plan) as client:
        assert client.submit(sum, [1, 2, 3]).result() == 6
        address = client.scheduler.address
        # The same scheduler, used as an external one.
        external = ClusterPlan("external", "test", address=address)
        with dask_client(external) as other:
            assert other.submit(len, "four").result() == 4
    assert "Dask mode: local (test), 1 CPU worker(s), memory limit 1GiB" in caplog.text
    assert "dashboard http://127.0.0.1:" in caplog.text
    with pytest.raises(OSError):
        Client(address, timeout="2s")


def test_the_cluster_host_ends_when_its_task_is_killed() -> None:
    script = (
        "import sys, time\n"
        "from nightshift.models.cluster import ClusterPlan, cluster_host\n"
        "with cluster_host(ClusterPlan('local', 't', workers=1)) as address:\n"
        "    print(address, flush=True)\n"
        "    time.sleep(600)\n"
    )
    task = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert task.stdout is not None
    address = task.stdout.readline().strip()
    with Client(address, timeout="10s") as client:
        assert client.submit(abs, -1).result() == 1
    os.kill(task.pid, signal.SIGKILL)  # as Airflow does when a task times out hard
    task.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            Client(address, timeout="2s").close()
        except OSError:
            return
        time.sleep(1)
    pytest.fail(f"the cluster at {address} outlived its killed task by 60 s")


@pytest.mark.parametrize(
    ("mode", "address", "shared"),
    [
        ("local", "", True),
        ("external", "tcp://127.0.0.1:8786", True),  # make up's scheduler, on this machine
        ("external", "tcp://localhost:8786", True),
        pytest.param("external", "tls://[::1]:8786", True, id="external-ipv6-loopback"),
        ("external", "tcp://dask-scheduler:8786", False),  # docker-compose's service
        ("external", "tcp://10.1.2.3:8786", False),
    ],
)
def test_workers_share_this_machine_on_a_local_cluster_or_a_scheduler_on_this_host(
    mode: str, address: str, shared: bool
) -> None:
    assert shares_this_machine(ClusterPlan(mode, "test", address=address or None)) is shared


def _where_it_ran(value: int) -> dict[str, object]:
    autogroup = Path("/proc/self/autogroup")
    return {
        "value": value * 2,
        "pid": os.getpid(),
        "session": os.getsid(0),
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "autogroup": autogroup.read_text() if autogroup.exists() else None,
    }


def test_work_on_idle_cores_runs_in_a_session_of_its_own_at_the_lowest_priority() -> None:
    seen = on_idle_cores(_where_it_ran, 21)
    assert seen["value"] == 42
    assert seen["pid"] != os.getpid() and seen["session"] == seen["pid"]
    assert seen["nice"] == 19
    if seen["autogroup"] is not None:  # Linux's autogroup scheduling: the session's share
        assert str(seen["autogroup"]).strip().endswith("nice 19")
    assert os.getpriority(os.PRIO_PROCESS, 0) != 19  # this process is untouched


def _fails() -> None:
    raise ValueError("bad batch in batch-00003.parquet")


def _dies() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_work_on_idle_cores_fails_with_its_own_error_or_says_it_died() -> None:
    with pytest.raises(ValueError, match=r"batch-00003\.parquet"):
        on_idle_cores(_fails)
    with pytest.raises(RuntimeError, match="_dies died in its lowest-priority process"):
        on_idle_cores(_dies)


def _task_with_work_on_idle_cores(script: str) -> tuple[subprocess.Popen[str], int]:
    """Start a task process that defines ``work`` (prints its pid, sleeps) and runs
    ``script``, which hands ``work`` to ``on_idle_cores``; return it and the child's pid."""
    prelude = (
        "import os, signal, sys, time\n"
        "from nightshift.models.cluster import on_idle_cores\n"
        "def work() -> None:\n"
        "    print(os.getpid(), flush=True)\n"
        "    time.sleep(600)\n"
    )
    task = subprocess.Popen(
        [sys.executable, "-c", prelude + script], stdout=subprocess.PIPE, text=True
    )
    assert task.stdout is not None
    return task, int(task.stdout.readline())


def test_work_on_idle_cores_ends_when_its_task_is_killed() -> None:
    task, child = _task_with_work_on_idle_cores("on_idle_cores(work)\n")
    os.kill(task.pid, signal.SIGKILL)  # as Airflow does when a task times out hard
    task.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(child, signal.SIGKILL)
    pytest.fail(f"the lowest-priority child {child} outlived its killed task by 30 s")


def test_work_on_idle_cores_stops_when_its_task_is_told_to_stop() -> None:
    task, child = _task_with_work_on_idle_cores(
        "def stop(*_):\n"
        "    raise KeyboardInterrupt  # as Airflow's task runner raises on SIGTERM\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "try:\n"
        "    on_idle_cores(work)\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(3)\n"
    )
    task.send_signal(signal.SIGTERM)
    assert task.wait(timeout=30) == 3
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
