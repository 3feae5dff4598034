"""Compose against the embedded default: seconds from `up` to all-healthy, and one nightly run.

The same 1,500-row pipeline (tests/e2e/conftest.py's tiny_pipeline) runs one night on the
docker-compose stack (Postgres, a Dask scheduler and worker containers, the lake in the S3
store, MLflow's server; the stand-in images, compose/stand-ins/) and on the embedded default
(SQLite Airflow, a local Dask scheduler and workers, local files), in this one bench run.
Prints compose / embedded and writes bench/out/compose.json. Needs Docker.

    .venv/bin/python bench/compose.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.compose.stack import Stack, docker_ready  # noqa: E402
from tests.e2e.conftest import running_airflow, tiny_pipeline  # noqa: E402

NAME, NIGHT = "bench_compose", "2026-11-20"
DAG_ID = f"nightshift_{NAME}"


def on_compose(folder: Path) -> dict[str, float]:
    """Start the stack, run one night through the REST API, stop it (down -v)."""
    data = tiny_pipeline()
    data.pop("output", None)  # the deployment decides: the object store
    stack = Stack.built(f"nightshift-bench-{os.getpid()}", folder, {NAME: data})
    try:
        healthy = stack.up()
        stack.rest("PATCH", f"dags/{DAG_ID}", {"is_paused": False})
        started = time.monotonic()
        conf = {"logical_date": None, "conf": {"run_date": NIGHT}}
        stack.rest("POST", f"dags/{DAG_ID}/dagRuns", conf)
        [run] = stack.wait_for_runs(DAG_ID, 1)
        assert run["state"] == "success", run
        return {"up_to_healthy_s": healthy, "night_s": time.monotonic() - started}
    finally:
        stack.compose("down", "-v", "--remove-orphans", check=False)


def on_embedded(folder: Path) -> dict[str, float]:
    """The same night under `nightshift up`'s embedded default, started as the tests do."""
    folder.mkdir(parents=True)
    data = tiny_pipeline()
    with running_airflow(folder, NAME, True, pipelines={"": data}) as (airflow, _):
        airflow.unpause(DAG_ID)
        started = time.monotonic()
        run_id = airflow.trigger(DAG_ID, {"run_date": NIGHT})
        [run] = airflow.wait_for_runs(DAG_ID, 1, run_ids=[run_id], timeout=1200)
        assert run["state"] == "success", run
        return {"night_s": time.monotonic() - started}


def main() -> int:
    problem = docker_ready()
    if problem:
        print(f"bench/compose.py needs Docker: {problem}")
        return 1
    with tempfile.TemporaryDirectory(prefix="nightshift-bench-compose-") as tmp:
        compose = on_compose(Path(tmp) / "compose")
        embedded = on_embedded(Path(tmp) / "embedded")
    result = {
        "compose": compose,
        "embedded": embedded,
        "night_ratio_compose_over_embedded": compose["night_s"] / embedded["night_s"],
        "cpus": os.cpu_count(),
    }
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "compose.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
