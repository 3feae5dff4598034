"""P6: compose against the embedded default on the same night, and where the extra time goes.

The same pipeline (bench/scale.py's: retail_conversion at ``--rows`` a day, a ``--window``-day
window, as P1) runs its night on the docker-compose stack (Postgres, a Dask scheduler and worker
containers, the lake in the S3 store, MLflow's server; the stand-in images, compose/stand-ins/)
and on the embedded default (SQLite Airflow, a local Dask scheduler and workers, local files),
in this one bench run. The window's earlier days are processed first on each side (not timed),
as earlier nights would have; then the night runs twice on each side and the faster counts (as
P1). Prints compose / embedded and the profile of where compose's extra time goes: each task's
body and span on both sides, the window read from the lake on each side (the S3 round-trips),
the MLflow requests a night makes, how XGBoost held the window on each side, and the seconds
between a task's start and its body (task start); writes bench/out/compose.json. Needs Docker.

    .venv/bin/python bench/compose.py --rows 1000000 --window 7    # P6 (about 30 minutes)
    .venv/bin/python bench/compose.py --rows 1500 --window 2       # start-up dominated
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any, NamedTuple

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import scale  # noqa: E402

from nightshift.models.cluster import usable_cores  # noqa: E402
from tests.compose.stack import Stack, docker_ready  # noqa: E402

NAME = "bench_conversion"
DAG_ID = f"nightshift_{NAME}"
REPEATS = 2
# Inside the scheduler container: the window's earlier days through ingest, validate and
# preprocess, on the stack's Dask cluster and lake, as earlier nights leave them.
SETUP = """
import datetime as dt, sys, time
from nightshift.config.pipeline import find_pipeline
from nightshift.night.stages import ingest, preprocess, validate
pipeline, day = find_pipeline(sys.argv[1]), dt.date.fromisoformat(sys.argv[2])
window = int(sys.argv[3])
t0 = time.perf_counter()
for offset in range(window, 0, -1):
    dates = ingest(pipeline, day - dt.timedelta(days=offset)).dates
    validate(pipeline, dates)
    preprocess(pipeline, dates)
print(f"setup: {window} days processed in {time.perf_counter() - t0:.0f}s")
"""
# The window's processed batches read whole, one after the other, as the workers read them
# (storage.lake.read_frame): the lake's round-trips, local files or S3.
READ_WINDOW = """
import datetime as dt, json, sys, time
from nightshift.config.pipeline import find_pipeline
from nightshift.night.inputs import training_paths
from nightshift.storage.lake import read_frame
pipeline = find_pipeline(sys.argv[1])
paths = training_paths(pipeline, dt.date.fromisoformat(sys.argv[2]))[0]
t0 = time.perf_counter()
rows = sum(len(read_frame(path)) for path in paths)
print(json.dumps({"files": len(paths), "rows": rows, "seconds": time.perf_counter() - t0}))
"""
# MLflow's server logs one line per request (uvicorn); its health checks are not the night's.
MLFLOW_REQUEST = re.compile(r'"(GET|POST|PATCH|DELETE) /(api|ajax-api)/')


class Side(NamedTuple):
    """One side's nights, and what its profile needs beyond them."""

    nights: list[scale.Night]
    window_read: dict[str, float]
    mlflow_requests_per_night: float | None
    xgboost_window: list[str]  # each night's "XGBoost holds the window ..." log line


def on_compose(folder: Path, data: dict[str, Any], window: int) -> Side:
    """Start the stack, process the window's earlier days, run the night ``REPEATS`` times
    through the REST API, read the window from the lake once, stop it (down -v)."""
    data = {k: v for k, v in data.items() if k != "output"}  # the deployment decides: S3
    stack = Stack.built(f"nightshift-bench-{os.getpid()}", folder, {NAME: data})
    # The embedded default's workers: one a core, each that share of the machine's memory
    # (Dask's "auto"); .env's example gives compose's 4 GiB, and XGBoost would hold the
    # window another way on one side than on the other.
    cores = usable_cores()
    share = psutil.virtual_memory().total // cores
    stack.set_env(DASK_CPU_WORKERS=str(cores), DASK_WORKER_MEMORY=str(share))
    day = scale.DAY.isoformat()
    try:
        print(f"compose: up to healthy in {stack.up():.0f} s", flush=True)
        said = stack.exec("airflow-scheduler", "python", "-c", SETUP, NAME, day, str(window))
        print(said.strip().splitlines()[-1], flush=True)
        stack.rest("PATCH", f"dags/{DAG_ID}", {"is_paused": False})
        before = len(MLFLOW_REQUEST.findall(stack.compose("logs", "--no-color", "mlflow")))
        nights = [scale._one_night(stack, DAG_ID) for _ in range(REPEATS)]
        after = len(MLFLOW_REQUEST.findall(stack.compose("logs", "--no-color", "mlflow")))
        # From the scheduler's container (the pipelines are mounted there): the same store,
        # network and settings as the workers'.
        read = stack.exec("airflow-scheduler", "python", "-c", READ_WINDOW, NAME, day)
        held = [_held(json.dumps(stack.rest("GET", _log_path(night)))) for night in nights]
        window_read = json.loads(read.strip().splitlines()[-1])
        return Side(nights, window_read, (after - before) / REPEATS, held)
    finally:
        stack.compose("down", "-v", "--remove-orphans", check=False)


def on_embedded(data: dict[str, Any], rows: int, window: int) -> Side:
    """The same night under the embedded default, started as P1 starts it; the window read
    from its lake (local files) once."""
    from nightshift.config.pipeline import parse_pipeline

    home = Path(tempfile.mkdtemp(prefix="nightshift-bench-p6-"))
    (home / "pipelines").mkdir()
    (home / "pipelines" / f"{NAME}.yaml").write_text(yaml.safe_dump(data))
    os.environ["NIGHTSHIFT_HOME"] = str(home / "project")
    os.environ["NIGHTSHIFT_PIPELINES_DIR"] = str(home / "pipelines")
    scale._process_window(parse_pipeline(data, f"{NAME}.yaml"), rows, window)
    nights = scale._nightly_under_airflow(home, REPEATS)
    logs = home / "airflow" / "logs"
    held = [
        _held("".join(path.read_text() for path in logs.glob(f"**/run_id={run}/**/*.log")))
        for run in (night.run["dag_run_id"] for night in nights)
    ]
    read = subprocess.run(
        [sys.executable, "-c", READ_WINDOW, NAME, scale.DAY.isoformat()],
        capture_output=True,
        text=True,
        check=True,
    )
    return Side(nights, json.loads(read.stdout.strip().splitlines()[-1]), None, held)


def _log_path(night: scale.Night) -> str:
    run = urllib.parse.quote(night.run["dag_run_id"], safe="")
    task = "taskInstances/train_distributed/logs/1?full_content=true"
    return f"dags/{DAG_ID}/dagRuns/{run}/{task}"


def _held(log: str) -> str:
    """How XGBoost held the window, as train_distributed's log says."""
    found = re.findall(r"XGBoost holds the window [^\"\n]*", log)
    return found[-1] if found else "not in the task log"


def _fastest(nights: list[scale.Night]) -> scale.Night:
    return min(nights, key=lambda n: scale._since(n.run, n.run["end_date"]))


def profile(compose: scale.Night, embedded: scale.Night) -> list[dict[str, Any]]:
    """Each task's body and its span (queued to done, scheduler included) on both sides,
    largest extra first."""
    rows = []
    for task in compose.bodies:
        span_c = compose.spans[task][1] - compose.spans[task][0]
        span_e = embedded.spans[task][1] - embedded.spans[task][0]
        rows.append(
            {
                "task": task,
                "body_compose_s": round(compose.bodies[task], 1),
                "body_embedded_s": round(embedded.bodies[task], 1),
                "span_compose_s": round(span_c, 1),
                "span_embedded_s": round(span_e, 1),
                "extra_s": round(span_c - span_e, 1),
            }
        )
    return sorted(rows, key=lambda r: -r["extra_s"])


def summary(compose: Side, embedded: Side) -> dict[str, Any]:
    """The ratio of the fastest nights, and the profile of where compose's extra time goes."""
    fast_c, fast_e = _fastest(compose.nights), _fastest(embedded.nights)
    wall_c = scale._since(fast_c.run, fast_c.run["end_date"])
    wall_e = scale._since(fast_e.run, fast_e.run["end_date"])

    def task_start(night: scale.Night) -> float:
        spans = night.spans.items()
        return round(sum(end - start - night.bodies[task] for task, (start, end) in spans), 1)

    return {
        "compose_nights_s": [scale._since(n.run, n.run["end_date"]) for n in compose.nights],
        "embedded_nights_s": [scale._since(n.run, n.run["end_date"]) for n in embedded.nights],
        "ratio_compose_over_embedded": wall_c / wall_e,
        "tasks": profile(fast_c, fast_e),
        "task_start_s": {"compose": task_start(fast_c), "embedded": task_start(fast_e)},
        "window_read": {"compose_s3": compose.window_read, "embedded_files": embedded.window_read},
        "mlflow_requests_per_night": compose.mlflow_requests_per_night,
        "xgboost_window": {"compose": compose.xgboost_window, "embedded": embedded.xgboost_window},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--window", type=int, default=7)
    args = parser.parse_args()
    problem = docker_ready()
    if problem:
        print(f"bench/compose.py needs Docker: {problem}")
        return 1
    data = scale._pipeline(args.rows, args.window)
    data["name"] = NAME
    with tempfile.TemporaryDirectory(prefix="nightshift-bench-compose-") as tmp:
        compose = on_compose(Path(tmp) / "compose", data, args.window)
    embedded = on_embedded(data, args.rows, args.window)
    result = {
        "target": "<= 1.1",
        "rows_per_day": args.rows,
        "window_days": args.window,
        **summary(compose, embedded),
        "cpus": os.cpu_count(),
    }
    scale.OUT.mkdir(parents=True, exist_ok=True)
    (scale.OUT / "compose.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
