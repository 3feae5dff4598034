"""Backfill under the real scheduler: 3 dates asked for by date, each run keyed by its date
(shown in the UI), then one date re-run by its key and its bytes compared."""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from pathlib import Path

import pytest

from nightshift.ops.local_airflow import LocalAirflow
from tests.browser import shot_on_failure, signed_in_page
from tests.conftest import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

DAG_ID = "nightshift_e2e_conversion"
DATES = ["2026-11-01", "2026-11-02", "2026-11-03"]
SHOTS = REPO / "test-artifacts" / "screenshots"


def _digest(partition: Path) -> dict[str, str]:
    """Return file name -> sha256 of the committed version of a partition."""
    manifest = json.loads((partition / "_MANIFEST.json").read_text())
    return {
        name.split("/", 1)[1]: hashlib.sha256((partition / name).read_bytes()).hexdigest()
        for name in manifest["files"]
    }


@pytest.mark.browser
def test_backfill_three_dates_then_reprocess_one(
    airflow_project: tuple[LocalAirflow, Path],
) -> None:
    airflow, project = airflow_project
    lake = project / "data" / "lake" / "e2e_conversion"
    reports = project / "data" / "reports" / "e2e_conversion"

    airflow.unpause(DAG_ID)
    # Asked for by the dates to process; each run carries its date as its partition key.
    airflow.backfill(DAG_ID, DATES[0], DATES[-1])
    runs = airflow.wait_for_runs(DAG_ID, len(DATES), timeout=1500)
    airflow.wait_for_backfills(DAG_ID)
    assert [r["state"] for r in runs] == ["success"] * 3, runs
    assert all(r["run_type"] == "backfill" for r in runs)
    assert sorted(r["partition_key"] for r in runs) == DATES, runs
    _partition_keys_in_the_ui(airflow, runs)

    for day in DATES:
        assert (lake / "processed" / f"date={day}" / "_MANIFEST.json").exists()
        metrics = json.loads((reports / day / "metrics.json").read_text())
        assert metrics["partition_date"] == day
        assert (reports / day / "report.html").stat().st_size > 10_000
        assert metrics["models"]["xgboost"]["metrics"]["roc_auc"] > 0.6
    # The window's first day is bootstrapped by the first run; nothing else appears.
    assert sorted(p.name for p in (lake / "processed").iterdir()) == [
        "date=2026-10-30",
        "date=2026-10-31",
        *[f"date={d}" for d in DATES],
    ]

    day = DATES[1]
    processed = lake / "processed" / f"date={day}"
    model = lake / "models" / "xgboost" / f"date={day}"
    before = {
        "processed": _digest(processed),
        "model": _digest(model),
        "sgd": _digest(lake / "models" / "sgd_logistic" / f"date={day}"),
    }
    rows_before = json.loads((processed / "_MANIFEST.json").read_text())["meta"]

    # Re-run one date by its key, as the README says: the same run again, cleared.
    said = airflow.airflow("dags", "clear", DAG_ID, "--partition-key", day, "--yes")
    assert "across 1 Dag run(s)" in said, said
    [cleared] = [r for r in runs if r["partition_key"] == day]
    [again] = airflow.wait_for_runs(DAG_ID, 1, run_ids=[cleared["dag_run_id"]], timeout=900)
    assert again["state"] == "success" and again["end_date"] > cleared["end_date"], again
    assert len(airflow.runs(DAG_ID)) == 3

    after = {
        "processed": _digest(processed),
        "model": _digest(model),
        "sgd": _digest(lake / "models" / "sgd_logistic" / f"date={day}"),
    }
    assert after == before
    # Replaced, not appended: the same files and rows, still one report per day.
    assert json.loads((processed / "_MANIFEST.json").read_text())["meta"] == rows_before
    # One folder per date, and the index of them (its lock file on local disk).
    assert sorted(p.name for p in reports.iterdir() if p.is_dir()) == DATES
    assert sorted(p.name for p in reports.iterdir() if p.is_file()) == [".index.lock", "index.html"]
    assert 'data-runs="3"' in (reports / "index.html").read_text()


def _partition_keys_in_the_ui(airflow: LocalAirflow, runs: list[dict]) -> None:
    """Open each run in the Airflow UI: its page shows its partition key, the date."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser, page = signed_in_page(playwright, airflow.base_url, "admin", airflow.password())
        for run in sorted(runs, key=lambda r: r["partition_key"]):
            key, quoted = run["partition_key"], urllib.parse.quote(run["dag_run_id"])
            shot = SHOTS / f"09-backfill-partition-key-{key}.png"
            with shot_on_failure(page, shot.with_name(f"failed-{shot.name}")):
                page.goto(f"{airflow.base_url}/dags/{DAG_ID}/runs/{quoted}")
                expect(page.get_by_text("Partition Key").first).to_be_visible()
                expect(page.get_by_text(key, exact=True).first).to_be_visible()
            page.screenshot(path=shot, full_page=True)
        browser.close()


def test_sigkill_of_a_task_mid_write_leaves_no_partial_partition(
    airflow_project: tuple[LocalAirflow, Path],
) -> None:
    """SIGKILL the ingest task's process while it writes the day's raw batches."""
    import datetime as dt
    import os
    import signal
    import time

    from nightshift.config.pipeline import find_pipeline
    from nightshift.data.ingest import ingest_date
    from nightshift.storage.lake import Lake

    airflow, project = airflow_project
    dag_id, day = "nightshift_e2e_conversion_big", "2026-10-20"
    partition = project / "data" / "lake" / "e2e_conversion_big" / "raw" / f"date={day}"
    airflow.unpause(dag_id)
    run_id = airflow.trigger(dag_id, {"run_date": day})

    killed: dict = {}
    deadline = time.monotonic() + 600
    while not killed and time.monotonic() < deadline:
        ti = airflow.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/ingest")
        if ti["state"] == "running" and ti.get("pid") and partition.exists():
            # A version folder with some batches in it that no manifest names: mid-write.
            writing = [v for v in partition.glob("v-*") if any(v.glob("batch-*.parquet"))]
            if writing and not (partition / "_MANIFEST.json").exists():
                os.kill(ti["pid"], signal.SIGKILL)
                killed = {
                    "pid": ti["pid"],
                    "try": ti["try_number"],
                    "batches_written": len(list(writing[0].glob("batch-*.parquet"))),
                    "version": writing[0].name,
                }
        time.sleep(0.02)
    assert killed, "never caught the ingest task mid-write"
    # No partial partition is visible: nothing names the half-written version.
    assert not (partition / "_MANIFEST.json").exists()

    [run] = airflow.wait_for_runs(dag_id, 1, run_ids=[run_id], timeout=1200)
    assert run["state"] == "success", airflow.task_states(dag_id, run_id)
    ingest = airflow.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/ingest")
    assert ingest["try_number"] == killed["try"] + 1
    manifest = json.loads((partition / "_MANIFEST.json").read_text())
    assert all(not name.startswith(killed["version"]) for name in manifest["files"])

    # The retry's output is byte-identical to a clean, uninterrupted ingest of the same day.
    pipeline = find_pipeline("e2e_conversion_big", project.parent / "pipelines")
    clean_lake = Lake(str(project.parent / "clean-lake"), pipeline.name)
    clean = ingest_date(pipeline, clean_lake, dt.date.fromisoformat(day))
    committed = {
        name.split("/", 1)[1]: hashlib.sha256((partition / name).read_bytes()).hexdigest()
        for name in manifest["files"]
    }
    reference = {
        name.split("/", 1)[1]: hashlib.sha256(Path(path).read_bytes()).hexdigest()
        for name, path in zip(clean.files, clean.paths(), strict=True)
    }
    assert committed == reference and len(committed) > killed["batches_written"]
    print(
        f"killed ingest (pid {killed['pid']}) after {killed['batches_written']} of "
        f"{len(committed)} batches; the retry committed identical bytes"
    )
