"""A whole nightly run of a small pipeline in one process, and the run-date rules."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from nightshift.config.pipeline import find_pipeline
from nightshift.config.records import NightSummary
from nightshift.night.stages import run_nightly

pytestmark = pytest.mark.e2e


def test_nightly_run_publishes_report_and_metrics(project: Path) -> None:
    pipeline = find_pipeline("retail_conversion")
    day = dt.date(2026, 9, 15)
    results = run_nightly(pipeline, day, run_id="test")
    report = Path(results["publish"]["report"])
    metrics = json.loads(Path(results["publish"]["metrics"]).read_text())
    assert report.exists() and report.read_text().startswith("<!DOCTYPE html>")
    assert metrics["partition_date"] == "2026-09-15"
    # metrics.json reads back into the NightSummary that wrote it (alerts and the command line
    # read it so).
    again = NightSummary.from_dict(metrics).to_dict()
    assert json.loads(json.dumps(again, sort_keys=True, default=str)) == metrics
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
