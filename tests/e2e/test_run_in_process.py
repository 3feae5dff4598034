"""A whole nightly run of a small pipeline in one process, and the run-date rules."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from nightshift.airflow_dag import partition_date_for
from nightshift.config import find_pipeline
from nightshift.stages import run_nightly

pytestmark = pytest.mark.e2e


def test_nightly_run_publishes_report_and_metrics(project: Path) -> None:
    pipeline = find_pipeline("retail_conversion")
    day = dt.date(2026, 9, 15)
    results = run_nightly(pipeline, day, run_id="test")
    report = Path(results["publish"]["report"])
    metrics = json.loads(Path(results["publish"]["metrics"]).read_text())
    assert report.exists() and report.read_text().startswith("<!DOCTYPE html>")
    assert metrics["partition_date"] == "2026-09-15"
    # Out of time: the held-out day is never in the training window.
    assert metrics["training_window"]["dates"] == ["2026-09-13", "2026-09-14"]
    assert set(metrics["models"]) == {"xgboost", "sgd_logistic", "base_rate"}
    assert metrics["models"]["xgboost"]["metrics"]["roc_auc"] > 0.65
    assert metrics["models"]["base_rate"]["metrics"]["roc_auc"] in (0.5, None)
    assert metrics["data"]["held_out"]["rows"] > 3000
    assert set(metrics["timings"]) >= {"ingest", "preprocess", "train_distributed", "evaluate"}
    # Drift covers the features, the label's rate and the time of day; not the day-level time
    # features, on which one held-out day always differs from a window of several.
    assert {"label", "hour", "channel", "page_views"} <= set(metrics["drift"])
    assert not {"day_of_week", "is_weekend"} & set(metrics["drift"])
    assert metrics["drift"]["label"]["kind"] == "categorical"
    # Preprocessing statistics were saved beside every model.
    lake = project / "data" / "lake" / "retail_conversion" / "models"
    for model in ("xgboost", "sgd_logistic", "base_rate"):
        manifest = json.loads((lake / model / "date=2026-09-15" / "_MANIFEST.json").read_text())
        assert any(f.endswith("/features.json") for f in manifest["files"])


def _context(
    run_type: str, key: str | None, run_after: dt.datetime, run_date: str | None = None
) -> dict:
    run = SimpleNamespace(run_type=run_type, run_after=run_after, logical_date=None)
    run.partition_key = key
    return {"params": {"run_date": run_date}, "dag_run": run}


def test_run_date_rules(project: Path) -> None:
    from airflow.timetables.base import TimeRestriction

    from nightshift.airflow_dag import nightly_timetable

    pipeline = find_pipeline("retail_conversion")  # Europe/Amsterdam, 02:30 nightly
    utc = dt.UTC
    # A scheduled run processes its partition key: the date before its 02:30, local time.
    earliest = dt.datetime(2026, 11, 21, 23, 0, tzinfo=utc)  # the 22nd's midnight, local
    restriction = TimeRestriction(earliest=earliest, latest=None, catchup=True)
    info = nightly_timetable(pipeline.schedule).next_dagrun_info_v2(
        last_dagrun_info=None, restriction=restriction
    )
    assert (info.run_after, info.partition_key) == (
        dt.datetime(2026, 11, 22, 1, 30, tzinfo=utc),
        "2026-11-21",
    )
    scheduled = _context("scheduled", info.partition_key, info.run_after)
    assert partition_date_for(pipeline, scheduled) == dt.date(2026, 11, 21)
    # A manual run with no date processes the last complete day before it was asked.
    asked = dt.datetime(2026, 11, 23, 23, 30, tzinfo=utc)  # already the 24th in Amsterdam
    assert partition_date_for(pipeline, _context("manual", None, asked)) == dt.date(2026, 11, 23)
    # The trigger form's date, or the partition key given with the trigger, says which.
    assert partition_date_for(pipeline, _context("manual", None, asked, "2026-10-01")) == dt.date(
        2026, 10, 1
    )
    assert partition_date_for(pipeline, _context("manual", "2026-10-02", asked)) == dt.date(
        2026, 10, 2
    )
    both = _context("manual", "2026-10-02", asked, "2026-10-01")
    with pytest.raises(ValueError, match="run_date 2026-10-01 and partition key 2026-10-02"):
        partition_date_for(pipeline, both)
