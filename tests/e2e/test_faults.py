"""Faults during a run: what is killed, and what the run and the lake look like afterwards."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nightshift.config.pipeline import find_pipeline
from nightshift.night import stages
from nightshift.storage.lake import lake_for

pytestmark = pytest.mark.e2e

DAY = dt.date(2026, 9, 15)


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _start_worker(target: list[str], name: str) -> subprocess.Popen:
    """Start one single-thread Dask worker without a nanny (a SIGKILL really kills it)."""
    return subprocess.Popen(
        [
            _bin("dask"),
            "worker",
            *target,
            "--nthreads",
            "1",
            "--no-nanny",
            "--host",
            "127.0.0.1",
            "--name",
            name,
            "--no-dashboard",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[tuple[str, dict[str, subprocess.Popen]]]:
    """A Dask scheduler and two single-thread workers without nannies, as separate processes."""
    scheduler_file = tmp_path / "scheduler.json"
    processes: dict[str, subprocess.Popen] = {}
    processes["scheduler"] = subprocess.Popen(
        [
            _bin("dask"),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--dashboard-address",
            "127.0.0.1:0",
            "--scheduler-file",
            str(scheduler_file),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not scheduler_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    for name in ("worker-a", "worker-b"):
        processes[name] = _start_worker(["--scheduler-file", str(scheduler_file)], name)
    import json

    from distributed import Client

    address = json.loads(scheduler_file.read_text())["address"]
    with Client(address, timeout="30s") as client:
        client.wait_for_workers(2, timeout=60)
    try:
        yield address, processes
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            try:
                # A scheduler whose workers were killed lingers on SIGTERM; five seconds is
                # plenty for a clean exit, then each is stopped by its own pid.
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _digests(partition) -> list[str]:
    return [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in partition.paths()]


def test_killing_a_dask_worker_mid_preprocess_changes_nothing(
    project: Path, dask_cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    address, processes = dask_cluster
    monkeypatch.setenv("NIGHTSHIFT_DASK_ADDRESS", address)
    pipeline = find_pipeline("retail_conversion").model_copy()
    data = pipeline.model_dump(by_alias=True)
    data["source"]["rows_per_day"] = 40_000
    data["training"]["batch_size"] = 1000  # 40 batches: plenty of work to interrupt
    from nightshift.config.pipeline import parse_pipeline

    pipeline = parse_pipeline(data, pipeline.source_file)
    lake = lake_for(pipeline)
    stages.ingest(pipeline, DAY)
    stages.validate(pipeline, [DAY], DAY)

    start = time.monotonic()
    stages.preprocess(pipeline, [DAY])
    clean = lake.read("processed", DAY)
    clean_seconds = time.monotonic() - start

    # Run it again, and SIGKILL worker-a the moment it is processing a batch.
    from distributed import Client

    killed: dict[str, object] = {}

    def kill_when_busy() -> None:
        with Client(address, timeout="30s") as watcher:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                busy = {
                    watcher.scheduler_info()["workers"][w]["name"]: tasks
                    for w, tasks in watcher.processing().items()
                    if tasks and w in watcher.scheduler_info()["workers"]
                }
                if busy.get("worker-a"):
                    os.kill(processes["worker-a"].pid, signal.SIGKILL)
                    killed.update(at=time.monotonic(), tasks=busy["worker-a"])
                    return
                time.sleep(0.005)

    watcher = threading.Thread(target=kill_when_busy)
    watcher.start()
    start = time.monotonic()
    result = stages.preprocess(pipeline, [DAY])
    faulty_seconds = time.monotonic() - start
    watcher.join()
    assert killed, "worker-a was never seen processing a batch"
    assert processes["worker-a"].wait(timeout=10) == -signal.SIGKILL
    again = lake.read("processed", DAY)
    # A new version was committed, byte for byte the clean one, with every batch.
    assert again.files != clean.files
    assert _digests(again) == _digests(clean)
    assert again.meta["rows_per_batch"] == clean.meta["rows_per_batch"]
    assert sum(again.meta["rows_per_batch"]) == lake.read("raw", DAY).meta["rows"]
    print(
        f"killed worker-a while it ran {killed['tasks']}; clean {clean_seconds:.1f}s, "
        f"with the kill {faulty_seconds:.1f}s; {len(again.files)} batches identical; {result}"
    )


@pytest.mark.parametrize(
    ("lost", "memory"),
    # SIGKILL: the process dies, its sockets reset. SIGSTOP: it freezes, as a machine that
    # drops off the network does, and only the collective timeout notices. in_memory:
    # xgboost.dask's own tasks; external: nightshift's, each rank streaming its batches (in
    # the slow tier, so make test-fast stays within its five minutes; make test runs them).
    [
        pytest.param(signal.SIGKILL, "in_memory", id="killed"),
        pytest.param(signal.SIGSTOP, "in_memory", id="frozen"),
        pytest.param(signal.SIGKILL, "external", id="killed-streamed", marks=pytest.mark.slow),
        pytest.param(signal.SIGSTOP, "external", id="frozen-streamed", marks=pytest.mark.slow),
    ],
)
def test_losing_a_worker_during_xgboost_training_fails_fast_and_the_retry_succeeds(
    project: Path, dask_cluster, monkeypatch: pytest.MonkeyPatch, lost: int, memory: str
) -> None:
    from distributed import Client

    from nightshift.config.pipeline import parse_pipeline
    from nightshift.publishing import tracking

    address, processes = dask_cluster
    monkeypatch.setenv("NIGHTSHIFT_DASK_ADDRESS", address)
    data = find_pipeline("retail_conversion").model_dump(by_alias=True)
    data["training"]["collective_timeout_seconds"] = 15
    data["training"]["memory"] = memory
    pipeline = parse_pipeline(data, "faults.yaml")
    # Last night's run made a champion.
    stages.run_nightly(pipeline, DAY - dt.timedelta(days=1), run_id="night-before")
    mlflow_client = tracking.client(pipeline)
    champion = tracking.champion(mlflow_client, "retail_conversion.xgboost")
    assert champion is not None

    # Tonight: everything up to training, then a long training run that loses worker-b.
    data["models"][0]["num_boost_round"] = 3000
    pipeline = parse_pipeline(data, "faults.yaml")
    stages.ingest(pipeline, DAY)
    stages.validate(pipeline, [DAY], DAY)
    stages.preprocess(pipeline, [DAY])
    stages.fit_features(pipeline, DAY)
    killed: dict[str, float] = {}

    def kill_while_training() -> None:
        with Client(address, timeout="30s") as watcher:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                workers = watcher.scheduler_info()["workers"]
                training = {
                    workers[w]["name"]
                    for w, tasks in watcher.processing().items()
                    if w in workers and any("train" in str(t) for t in tasks)
                }
                if "worker-b" in training:
                    time.sleep(2)  # well into the boosting rounds
                    os.kill(processes["worker-b"].pid, lost)
                    killed["at"] = time.monotonic()
                    return
                time.sleep(0.01)

    watcher = threading.Thread(target=kill_while_training)
    watcher.start()
    import xgboost

    # The collective (XGBoost's ring allreduce or allgather between the workers, whichever
    # was under way) fails, and the task with it.
    with pytest.raises(
        xgboost.core.XGBoostError, match=r"Ring (?i:allreduce|allgather) failed"
    ) as caught:
        stages.train_distributed(pipeline, DAY)
    failed_after = time.monotonic() - killed["at"]
    watcher.join()
    # Fast: bounded by the pipeline's collective timeout (15 s here), not XGBoost's default of
    # 30 minutes. The bound is ten times the timeout, far from any machine's noise.
    assert failed_after < 10 * data["training"]["collective_timeout_seconds"], failed_after
    if lost == signal.SIGSTOP:
        # A frozen peer is noticed by the pipeline's collective timeout (15 s here), not by
        # XGBoost's default of 30 minutes, so a night never hangs on a lost machine.
        assert "Poll timeout:15 seconds" in str(caught.value), str(caught.value)[-600:]
    assert not lake_for(pipeline).has("models/xgboost", DAY)
    assert tracking.champion(mlflow_client, "retail_conversion.xgboost") == champion
    os.kill(processes["worker-b"].pid, signal.SIGKILL)  # a frozen one is gone for good too
    processes["worker-b"].wait(timeout=30)

    # The retry (Airflow's, on a cluster whose worker came back) succeeds.
    processes["worker-c"] = _start_worker([address], "worker-c")
    with Client(address, timeout="30s") as client:
        client.wait_for_workers(2, timeout=60)
        # The scheduler forgets a frozen worker only after its heartbeat timeout; the retry
        # (like Airflow's, minutes later) runs on the live ones.
        for worker, info in client.scheduler_info()["workers"].items():
            if info["name"] == "worker-b":
                client.retire_workers([worker], close_workers=False, remove=True)
    data["models"][0]["num_boost_round"] = 30
    retried = stages.train_distributed(parse_pipeline(data, "faults.yaml"), DAY)
    assert lake_for(pipeline).has("models/xgboost", DAY), retried
    assert tracking.champion(mlflow_client, "retail_conversion.xgboost") == champion
    print(
        f"training failed {failed_after:.1f}s after the worker was lost ({lost.name}): "
        f"{type(caught.value).__name__}"
    )
