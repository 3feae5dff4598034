"""The preloading LocalExecutor: what its workers import, and that it still is LocalExecutor."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

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
