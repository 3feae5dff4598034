"""The embedded MLflow store survives being opened by several task processes at once."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from nightshift.config.pipeline import parse_pipeline
from nightshift.publishing import tracking
from tests.conftest import small_pipeline_dict


def _open_store(location: str, queue: multiprocessing.Queue) -> None:
    data = small_pipeline_dict()
    data["output"] = {"mlflow": location}
    pipeline = parse_pipeline(data, "race.yaml")
    try:
        mlflow_client = tracking.client(pipeline)
        tracking.experiment_id(mlflow_client, pipeline)
        queue.put(tracking.champion(mlflow_client, "retail_conversion.xgboost") is None)
    except Exception as exc:  # reported to the test, which names it
        queue.put(repr(exc))


def test_parallel_first_use_creates_the_store_once(tmp_path: Path) -> None:
    # Without the lock, parallel first uses run MLflow's migrations twice and leave a
    # half-migrated database ("table _alembic_tmp_experiments already exists").
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [
        context.Process(target=_open_store, args=(str(tmp_path / "mlflow"), queue))
        for _ in range(4)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    outcomes = [queue.get(timeout=5) for _ in processes]
    assert outcomes == [True] * 4, outcomes
    assert (tmp_path / "mlflow" / "mlflow.db").exists()


def test_store_locations(tmp_path: Path) -> None:
    data = small_pipeline_dict()
    data["output"] = {"mlflow": "http://mlflow:5000"}
    assert tracking.store(parse_pipeline(data, "x.yaml")) == ("http://mlflow:5000", None)
    data["output"] = {"mlflow": str(tmp_path / "ml")}
    uri, artifacts = tracking.store(parse_pipeline(data, "x.yaml"))
    assert (uri, artifacts) == (
        f"sqlite:///{tmp_path}/ml/mlflow.db",
        f"file://{tmp_path}/ml/artifacts",
    )


def test_opening_a_store_does_not_leak_it_into_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MLflow's set_tracking_uri exports MLFLOW_TRACKING_URI; left there, every process started
    # afterwards (and every pipeline parsed afterwards) would use this pipeline's store.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = small_pipeline_dict()
    data["output"] = {"mlflow": str(tmp_path / "one")}
    tracking.client(parse_pipeline(data, "one.yaml"))
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert parse_pipeline(small_pipeline_dict(), "two.yaml").output.mlflow == "data/mlflow"


def test_report_links_use_the_browser_address_of_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    data = small_pipeline_dict()
    data["output"] = {"mlflow": "http://mlflow:5000"}
    pipeline = parse_pipeline(data, "x.yaml")
    monkeypatch.delenv("NIGHTSHIFT_MLFLOW_UI_URL", raising=False)
    assert tracking.run_url(pipeline, "1", "abc") == "http://mlflow:5000/#/experiments/1/runs/abc"
    monkeypatch.setenv("NIGHTSHIFT_MLFLOW_UI_URL", "http://localhost:5000/")
    assert tracking.run_url(pipeline, "1", "abc") == (
        "http://localhost:5000/#/experiments/1/runs/abc"
    )


def test_a_long_curve_is_logged_a_thousand_steps_to_a_request() -> None:
    from nightshift.publishing.tracking import _log_curves

    class Client:
        def __init__(self) -> None:
            self.batches: list[list] = []

        def log_batch(self, run_id, metrics):
            self.batches.append(metrics)

    curve = [1.0 / r for r in range(1, 2502)]
    history = {"epoch_loss": [0.7, 0.6], "train": curve, "metric": "rmse"}
    mlflow_client = Client()
    _log_curves(mlflow_client, "run", history)
    assert [len(batch) for batch in mlflow_client.batches] == [1000, 1000, 503]
    logged = [m for batch in mlflow_client.batches for m in batch]
    assert [(m.key, m.step) for m in logged[:3]] == [
        ("epoch_loss", 1),
        ("epoch_loss", 2),
        ("train_rmse", 1),
    ]
    assert logged[-1].key == "train_rmse" and logged[-1].step == 2501
