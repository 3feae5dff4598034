"""A new model kind is one module and one line in ``config.MODEL_KINDS``: the toy kind in
``tests/e2e/toy_kind.py`` (scikit-learn's HistGradientBoosting) trains in the night's
incremental task, is scored, ranked and shown in the report, and is registered in MLflow in
its own flavour and loaded back through the safe loader, with no other module told of it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nightshift.config.pipeline import MODEL_KINDS, ConfigError, parse_pipeline
from nightshift.night.inputs import load_model
from nightshift.night.stages import run_nightly
from nightshift.publishing import tracking
from tests.conftest import small_pipeline_dict

pytestmark = pytest.mark.e2e
DAY = dt.date(2026, 9, 15)


@pytest.fixture
def toy_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    # The one line a new kind adds to the table.
    monkeypatch.setitem(MODEL_KINDS, "hist_gradient_boosting", "tests.e2e.toy_kind")


def _pipeline() -> dict:
    data = small_pipeline_dict()
    data["models"].append({"kind": "hist_gradient_boosting", "name": "trees", "max_iter": 30})
    return data


def test_a_new_kind_trains_scores_logs_and_reports(project: Path, toy_kind: None) -> None:
    pipeline = parse_pipeline(_pipeline())
    results = run_nightly(pipeline, DAY, run_id="toy")
    assert "trees" in results["train_incremental"]["models"]
    metrics = json.loads(Path(results["publish"]["metrics"]).read_text())
    trees = metrics["models"]["trees"]
    assert trees["kind"] == "hist_gradient_boosting", trees
    assert trees["metrics"]["roc_auc"] > 0.65, trees["metrics"]
    assert trees["history"]["iterations"] > 0
    assert "trees" in metrics["ranking"]
    assert ">trees<" in Path(results["publish"]["report"]).read_text()
    # Registered in its own flavour (skops), and read back only through the safe loader.
    name = tracking.registered_name(pipeline.name, "trees")
    estimator = tracking.load_registered(pipeline, name, "1")
    scorer, files = load_model(pipeline, "trees", DAY)
    held_out = pd.read_parquet(files["_partition"].replace("models/trees", "processed"))
    np.testing.assert_allclose(
        estimator.predict_proba(_matrix(scorer, held_out))[:, 1], scorer.predict(held_out)
    )
    print(f"toy kind: ROC AUC {trees['metrics']['roc_auc']:.4f}, registered {name} v1")


def _matrix(scorer: object, frame: pd.DataFrame) -> np.ndarray:
    from nightshift.data.features import to_linear_matrix

    return to_linear_matrix(frame, scorer.stats)  # type: ignore[attr-defined]


def test_a_new_kinds_keys_are_checked_like_any_other(tmp_path: Path, toy_kind: None) -> None:
    data = _pipeline()
    data["models"][-1]["max_iter"] = 0
    with pytest.raises(ConfigError) as caught:
        parse_pipeline(data, tmp_path / "toy.yaml")
    assert caught.value.key == f"models[{len(data['models']) - 1}].max_iter", caught.value
    data["models"][-1] = {"kind": "catboost"}
    with pytest.raises(ConfigError, match="'catboost' is not a model kind; choose from"):
        parse_pipeline(data, tmp_path / "toy.yaml")
