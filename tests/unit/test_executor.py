"""The preloading LocalExecutor: what its workers import, and that it still is LocalExecutor."""

from __future__ import annotations

import inspect
import json
import logging
import subprocess
import sys

import pytest
from airflow.executors import local_executor

from nightshift.ops import executor
from nightshift.ops.executor import PRELOAD, PreloadingLocalExecutor, preload


def test_preload_imports_every_library_the_stages_use_and_no_nightshift_module() -> None:
    code = (
        "import sys, json; from nightshift.ops.executor import preload; "
        "failed = preload(); "
        "print(json.dumps([failed, sorted(m for m in sys.modules if m.startswith('nightshift.'))]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    failed, ours = json.loads(out.strip().splitlines()[-1])
    assert failed == {}
    # Only the executor module itself (and its empty package): nightshift's code is imported
    # fresh by each task, so a change reaches the next task without restarting the scheduler.
    assert ours == ["nightshift.ops", "nightshift.ops.executor"]


def test_a_library_that_fails_to_import_is_reported_not_raised() -> None:
    assert preload(("no_such_library_xyz",)) == {
        "no_such_library_xyz": "ModuleNotFoundError: No module named 'no_such_library_xyz'"
    }


def test_the_worker_is_started_with_exactly_the_arguments_airflow_passes() -> None:
    # _spawn_worker copies LocalExecutor's; if Airflow changes the worker's signature, fail
    # here rather than in a scheduler.
    ours = inspect.getsource(PreloadingLocalExecutor._spawn_worker)
    theirs = inspect.getsource(local_executor.LocalExecutor._spawn_worker)
    assert ours.count('": ') == theirs.count('": ')
    for name in inspect.signature(local_executor._run_worker).parameters:
        assert f'"{name}":' in ours and f'"{name}":' in theirs, name
    assert issubclass(PreloadingLocalExecutor, local_executor.LocalExecutor)
    assert "sklearn.linear_model" in PRELOAD and executor._run_worker is (
        local_executor._run_worker
    )


def test_wait_for_executor_waits_for_every_worker_s_preload_line(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    from nightshift.ops.local_airflow import LocalAirflow

    with caplog.at_level(logging.INFO, logger=executor.log.name):
        preload(())
    (line,) = [r.getMessage() for r in caplog.records if r.name == executor.log.name]
    airflow = LocalAirflow(home=tmp_path, parallelism=3)
    (tmp_path / "run").mkdir()
    log = tmp_path / "run" / "scheduler.log"
    log.write_text(f"... [info] {line} [nightshift.ops.executor]\n" * 2)
    with pytest.raises(TimeoutError, match="3 workers did not preload"):
        airflow.wait_for_executor(timeout=1)
    log.write_text(log.read_text() * 2)
    # Every worker has preloaded: it returns (the seconds it waited) instead of timing out.
    assert airflow.wait_for_executor(timeout=1) >= 0
