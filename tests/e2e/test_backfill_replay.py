"""Backfilling is repeatable: a run of dates backfilled, backfilled again, and backfilled backwards.

Under the real scheduler (api-server, scheduler, dag-processor, a Dask scheduler and two
workers), three Airflow backfills of the same dates, three nights at a time:

1. forward, on an empty lake;
2. forward again with ``--reprocess-behavior completed``, over the lake of pass 1;
3. with ``--run-backwards``, on an empty lake again (pass 1's data moved aside), so the
   newest night runs first and every night has to prepare its own window.

Every pass must leave the same lake: the same partitions, each file byte for byte (data,
features, models, each model's held-out scores), the same rows and no row twice. What may
differ is what depends on the order the nights ran in: which model held the ``champion``
alias when a night was judged. That is checked too: run backwards, no older night takes the
alias from a newer one.

Eight dates by default, on a 2-day window: every night after the second reads a window that
only nights before it wrote, which is all the order can change. ``make test-replay`` runs the
30 dates the replay was first written with (about 9 minutes on 2 cores);
``NIGHTSHIFT_REPLAY_DATES=N`` runs N.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from nightshift.night.inputs import INPUTS_FILE
from tests.e2e.conftest import running_airflow, tiny_pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.replay, pytest.mark.timeout(3600)]

NAME = "replay_conversion"
DAG_ID = f"nightshift_{NAME}"
FIRST = dt.date(2026, 9, 1)
DATES = [
    FIRST + dt.timedelta(days=n) for n in range(int(os.environ.get("NIGHTSHIFT_REPLAY_DATES", "8")))
]
ROWS = 1500
PARALLEL = "3"
# Parts of a night's evaluation that depend on which model held the alias when it ran.
ORDER_DEPENDENT = ("champions", "deltas")


@pytest.fixture(scope="module")
def replay_airflow(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("airflow-replay")
    with running_airflow(root, NAME, True, {"": tiny_pipeline(ROWS)}) as up:
        yield up


def _digest(path: Path) -> str:
    if path.name == INPUTS_FILE:  # the partition versions a night read: named per run
        return hashlib.sha256(
            re.sub(rb"v-\d{8}T\d{6}-[0-9a-f]{8}/", b"", path.read_bytes())
        ).hexdigest()
    if path.name == "evaluation.json":
        evaluation = json.loads(path.read_bytes())
        for key in ORDER_DEPENDENT:
            evaluation.pop(key)
        return hashlib.sha256(json.dumps(evaluation, sort_keys=True).encode()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(lake: Path) -> dict[str, dict[str, object]]:
    """Return {stage/date: {meta, file name: sha256}} of every committed partition.

    Only what the manifest names counts (that is all a reader sees); version folder names
    differ from run to run and are left out.
    """
    found: dict[str, dict[str, object]] = {}
    for manifest_path in sorted(lake.rglob("_MANIFEST.json")):
        partition = manifest_path.parent
        manifest = json.loads(manifest_path.read_text())
        files = {name.split("/", 1)[1]: _digest(partition / name) for name in manifest["files"]}
        key = str(partition.relative_to(lake))
        found[key] = {"meta": manifest["meta"], **files}
    return found


def rows_per_date(lake: Path, stage: str) -> dict[str, int]:
    """Read every committed partition of ``stage``: rows per date; fail on a repeated key."""
    counts: dict[str, int] = {}
    keys: Counter[int] = Counter()
    for manifest_path in sorted((lake / stage).glob("date=*/_MANIFEST.json")):
        manifest = json.loads(manifest_path.read_text())
        frame = pd.concat(
            [pd.read_parquet(manifest_path.parent / name) for name in manifest["files"]]
        )
        counts[manifest_path.parent.name.removeprefix("date=")] = len(frame)
        keys.update(frame["session_id"].tolist())
    repeated = [key for key, seen in keys.items() if seen > 1]
    assert not repeated, f"{stage}: {len(repeated)} session_id(s) stored twice, e.g. {repeated[:3]}"
    return counts


def backfill(airflow, *extra: str) -> tuple[list[dict], float]:
    """Run one backfill of the dates to the end; return its runs and its wall time.

    A backfill that re-processes dates makes new runs beside the old ones (a partitioned
    DAG keeps each past run as history): its runs are the ones that were not there before.
    """
    before = {r["dag_run_id"] for r in airflow.runs(DAG_ID)}
    start = time.monotonic()
    airflow.backfill(
        DAG_ID, DATES[0].isoformat(), DATES[-1].isoformat(), "--max-active-runs", PARALLEL, *extra
    )
    airflow.wait_for_backfills(DAG_ID, timeout=2400)
    airflow.wait_for_runs(DAG_ID, len(before) + len(DATES), timeout=600)
    runs = [r for r in airflow.runs(DAG_ID) if r["dag_run_id"] not in before]
    seconds = time.monotonic() - start
    states = Counter(r["state"] for r in runs)
    assert states == {"success": len(DATES)}, states
    return runs, seconds


def _id(backfill: dict) -> int:
    return int(backfill["id"])


def run_date(run: dict) -> str:
    return str(run["partition_key"])


def decisions(reports: Path, model: str) -> dict[str, dict]:
    return {
        day.isoformat(): json.loads((reports / day.isoformat() / "metrics.json").read_text())[
            "decisions"
        ][model]
        for day in DATES
    }


def registry(project: Path) -> dict:
    """Return the MLflow store's run count and each model's champion (trained-for date).

    Asked in a fresh interpreter: MLflow caches one SQLAlchemy engine per store URI in the
    process, so after pass 1's store is moved aside an in-process client would still read it.
    """
    uri = f"sqlite:///{project}/data/mlflow/mlflow.db"
    code = f"""
import json
from mlflow import MlflowClient
client = MlflowClient(tracking_uri={uri!r}, registry_uri={uri!r})
experiment = client.get_experiment_by_name("nightshift/{NAME}")
runs = client.search_runs([experiment.experiment_id], max_results=1000)
champions = {{
    model: client.get_model_version_by_alias("{NAME}." + model, "champion").tags[
        "nightshift.trained_for"
    ]
    for model in ("xgboost", "sgd_logistic")
}}
print(json.dumps({{"runs": len(runs), "champions": champions}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def test_thirty_dates_twice_and_backwards_leave_the_same_lake(replay_airflow) -> None:
    airflow, project = replay_airflow
    lake = project / "data" / "lake" / NAME
    reports = project / "data" / "reports" / NAME
    airflow.unpause(DAG_ID)
    timings: dict[str, float] = {}

    # Pass 1: forward, on an empty lake.
    runs, timings["forward"] = backfill(airflow)
    assert sorted(run_date(r) for r in runs) == [d.isoformat() for d in DATES]
    first = fingerprint(lake)
    raw = rows_per_date(lake, "raw")
    processed = rows_per_date(lake, "processed")
    # The dates and the two window days before the first: each once, whole.
    window_start = DATES[0] - dt.timedelta(days=2)
    expected_dates = [
        (window_start + dt.timedelta(days=n)).isoformat() for n in range(len(DATES) + 2)
    ]
    assert sorted(raw) == expected_dates
    assert raw == processed
    from nightshift.data.generator import generate_day

    for day in (expected_dates[0], expected_dates[-1]):
        assert raw[day] == len(generate_day(dt.date.fromisoformat(day), ROWS, seed=7)), day
    stages = Counter(key.rsplit("/date=", 1)[0] for key in first)
    # raw, validation, processed for every day; features, 3 models, evaluation for each night.
    days, nights = len(expected_dates), len(DATES)
    assert stages == {
        "raw": days,
        "validation": days,
        "processed": days,
        "features": nights,
        "models/xgboost": nights,
        "models/sgd_logistic": nights,
        "models/base_rate": nights,
        "evaluation": nights,
    }, stages
    forward_registry = registry(project)
    assert forward_registry["runs"] == 3 * len(DATES)
    index = (reports / "index.html").read_text()
    assert f'data-runs="{len(DATES)}"' in index
    # Three nights at a time, the alias still only moves forward: it names the newest night
    # whose model was promoted.
    forward = decisions(reports, "xgboost")
    promoted_forward = sorted(day for day, d in forward.items() if d["promoted"])
    assert promoted_forward and forward_registry["champions"]["xgboost"] == promoted_forward[-1]

    # Pass 2: the same backfill again over the same lake; every date is run again.
    again, timings["again"] = backfill(airflow, "--reprocess-behavior", "completed")
    latest = max(airflow.api("GET", f"backfills?dag_id={DAG_ID}")["backfills"], key=_id)
    assert latest["reprocess_behavior"] == "completed" and latest["completed_at"], latest
    assert sorted(run_date(r) for r in again) == sorted(run_date(r) for r in runs)
    assert min(r["start_date"] for r in again) > max(r["end_date"] for r in runs)
    second = fingerprint(lake)
    assert second.keys() == first.keys()
    changed = sorted(key for key in first if first[key] != second[key])
    assert not changed, f"re-running the backfill changed {changed}"
    assert rows_per_date(lake, "raw") == raw and rows_per_date(lake, "processed") == processed
    # Nothing twice anywhere: one MLflow run per model and night (the re-run's new Airflow
    # runs reused them: the same models, scored the same),
    # one index entry per date.
    assert registry(project)["runs"] == 3 * len(DATES)
    assert f'data-runs="{len(DATES)}"' in (reports / "index.html").read_text()

    # Pass 3: backwards, on an empty lake (pass 1-2's data moved aside).
    kept = project / "data-forward"
    shutil.move(project / "data", kept)
    backwards, timings["backwards"] = backfill(
        airflow, "--reprocess-behavior", "completed", "--run-backwards"
    )
    started = [run_date(r) for r in sorted(backwards, key=lambda r: r["start_date"])]
    newest = {d.isoformat() for d in DATES[-int(PARALLEL) :]}
    assert set(started[: int(PARALLEL)]) == newest and started[-1] == DATES[0].isoformat(), started
    third = fingerprint(lake)
    assert third.keys() == first.keys()
    changed = sorted(key for key in first if first[key] != third[key])
    assert not changed, f"running the backfill backwards changed {changed}"
    assert rows_per_date(lake, "raw") == raw and rows_per_date(lake, "processed") == processed
    backward_registry = registry(project)
    assert backward_registry["runs"] == 3 * len(DATES)

    # The order shows only in the champion: backwards, the newest nights were judged first
    # and no older night took the alias from them.
    backward = decisions(reports, "xgboost")
    promoted_backward = sorted(day for day, d in backward.items() if d["promoted"])
    assert promoted_backward and set(promoted_backward) <= newest, promoted_backward
    assert backward_registry["champions"]["xgboost"] in newest
    kept_reasons = {d["reason"].split(":")[0] for d in backward.values() if not d["promoted"]}
    print(
        f"{len(DATES)} dates x 3 backfills: forward {timings['forward']:.0f} s, again "
        f"{timings['again']:.0f} s, backwards {timings['backwards']:.0f} s; "
        f"{len(first)} partitions identical in all three; {sum(raw.values())} rows; "
        f"xgboost promoted forward on {promoted_forward}, backwards on {promoted_backward}; "
        f"backwards kept because {sorted(kept_reasons)[:3]}"
    )
