"""Task start-up: the stock LocalExecutor against nightshift's PreloadingLocalExecutor.

The same small backfill (NIGHTS nights of the e2e tests' 1,500-row ``tiny_pipeline``, two at
a time, the tasks on a Dask scheduler and two workers) runs under the real scheduler twice,
once per executor, each on a fresh Airflow home and lake; --first picks the order. Prints the
backfill's wall time, the median run and the median duration of each task, and the ratios
stock ÷ preloading. Both sides run the same installed bytecode. Writes bench/out/executor.json.

    .venv/bin/python bench/executor.py [--nights 8] [--first stock|preloading]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench.scale import machine  # noqa: E402
from tests.e2e.conftest import running_airflow, tiny_pipeline  # noqa: E402

EXECUTORS = {
    "stock": "LocalExecutor",
    "preloading": "nightshift.ops.executor.PreloadingLocalExecutor",
}
NAME = "bench_executor"
DAG_ID = f"nightshift_{NAME}"


def _seconds(start: str | None, end: str | None) -> float:
    if not start or not end:
        return float("nan")
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


def measure(executor: str, nights: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"nightshift-bench-{executor.rsplit('.', 1)[-1]}-"))
    env = {"AIRFLOW__CORE__EXECUTOR": executor}
    with running_airflow(root, NAME, True, {"": tiny_pipeline()}, env) as (airflow, _):
        airflow.unpause(DAG_ID)
        first = dt.date(2026, 9, 1)
        start = time.monotonic()
        airflow.backfill(
            DAG_ID,
            first.isoformat(),
            (first + dt.timedelta(days=nights - 1)).isoformat(),
            "--max-active-runs",
            "2",
        )
        airflow.wait_for_backfills(DAG_ID, timeout=3600)
        runs = airflow.wait_for_runs(DAG_ID, nights, timeout=600)
        wall = time.monotonic() - start
        assert all(r["state"] == "success" for r in runs), [r["state"] for r in runs]
        tasks: dict[str, list[float]] = {}
        for run in runs:
            listed = airflow.api("GET", f"dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances")[
                "task_instances"
            ]
            for ti in listed:
                tasks.setdefault(ti["task_id"], []).append(
                    _seconds(ti["start_date"], ti["end_date"])
                )
    return {
        "executor": executor,
        "nights": nights,
        "backfill_wall_s": round(wall, 1),
        "median_run_s": round(
            statistics.median(_seconds(r["start_date"], r["end_date"]) for r in runs), 2
        ),
        "median_task_s": {k: round(statistics.median(v), 2) for k, v in tasks.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nights", type=int, default=8)
    parser.add_argument("--first", choices=sorted(EXECUTORS), default="stock")
    args = parser.parse_args()
    os.environ.pop("NIGHTSHIFT_DASK_ADDRESS", None)
    order = [args.first, *(k for k in EXECUTORS if k != args.first)]
    results = {}
    for key in order:
        print(f"{key}: {EXECUTORS[key]}, {args.nights} nights ...", flush=True)
        results[key] = measure(EXECUTORS[key], args.nights)
        print(json.dumps(results[key], indent=1), flush=True)
    stock, warm = results["stock"], results["preloading"]
    ratios = {
        "backfill_wall": round(stock["backfill_wall_s"] / warm["backfill_wall_s"], 2),
        "median_run": round(stock["median_run_s"] / warm["median_run_s"], 2),
        **{
            f"task:{task}": round(seconds / warm["median_task_s"][task], 2)
            for task, seconds in stock["median_task_s"].items()
        },
    }
    print("stock / preloading:")
    for key, ratio in ratios.items():
        print(f"  {key:24s} {ratio:5.2f}x")
    out = BENCH / "out"
    out.mkdir(exist_ok=True)
    (out / "executor.json").write_text(
        json.dumps(
            {
                "when": dt.datetime.now(dt.UTC).isoformat(),
                "machine": machine(),
                "order": order,
                "results": results,
                "ratios": ratios,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
