"""The GPU benchmark's script runs here in its CPU-only mode, so it cannot rot between GPUs.

``bench/gpu/p5.py`` is what bench/gpu/run.sh runs on a GPU machine; this runs the same code
path on a small sample, with the CPU cluster only, in a fresh interpreter as run.sh does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def test_p5_script_in_cpu_only_mode_writes_its_record(tmp_path: Path) -> None:
    out = tmp_path / "p5.json"
    command = [sys.executable, "bench/gpu/p5.py", "--cpu-only", "--rows", "20000"]
    command += ["--days", "2", "--rounds", "5", "--out", str(out)]
    subprocess.run(command, cwd=REPO, check=True, timeout=300, capture_output=True)
    record = json.loads(out.read_text())
    [cpu] = record["fits"]
    assert cpu["device"] == "cpu" and cpu["cluster"] == "local" and cpu["rounds"] == 5
    assert 0.6 < cpu["roc_auc"] <= 1.0
    assert 15_000 < record["rows"] < 25_000 and record["p5_cpu_over_gpu"] is None
    assert record["versions"]["xgboost"] and record["window_days"] == 2


def test_the_gpu_wheels_are_pinned_once_each() -> None:
    lines = (REPO / "bench" / "gpu" / "wheels.txt").read_text().splitlines()
    pins = [line.split("==") for line in lines if line and not line.startswith("#")]
    names = [name for name, _ in pins]
    assert len(names) == len(set(names)) and all(version for _, version in pins), pins
    assert {"xgboost-cu13", "dask-cuda", "distributed", "pydantic"} <= set(names)
