"""P1's baseline: the nightly run's work as one hand-written single-process script.

No Airflow, no Dask, no lake: generate (or read) the run date, validate it with the same
pandera checks, derive the same features, read the same 7 processed days, fit the same
statistics, train XGBoost (same parameters, all cores) and the SGD model (same batches and
epochs), and score both on the run date. It reuses nightshift's pure functions so that the
comparison measures the machinery around them, not different maths.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import roc_auc_score

from nightshift.config.pipeline import Pipeline
from nightshift.data.features import fit_stats, labels, to_linear_matrix, to_tree_frame
from nightshift.data.generator import generate_day
from nightshift.data.ingest import conform, transform
from nightshift.data.preprocess import LABEL, derive_features
from nightshift.data.validate import check_frame
from nightshift.models.kinds.sgd import SGDModel
from nightshift.models.kinds.xgboost import XGBoostModel
from nightshift.models.train import _sgd_estimator, xgboost_params
from nightshift.storage.lake import SOURCE_ROW


def run(pipeline: Pipeline, day: dt.date, window_paths: list[str]) -> dict[str, Any]:
    """Do the nightly work for ``day``; return wall seconds per step and both AUCs."""
    source = pipeline.source
    steps: dict[str, float] = {}
    started = time.perf_counter()

    def step(name: str) -> None:
        steps[name] = time.perf_counter() - started - sum(steps.values())

    raw = conform(
        generate_day(day, rows=source.rows_per_day, seed=source.seed),  # type: ignore[union-attr]
        pipeline.schema_,
        "generator",
    )
    raw, _ = transform(pipeline, raw.drop(columns=SOURCE_ROW), "generator")
    step("ingest")
    blocking = [f for f in check_frame(pipeline, raw, "generator", day) if f.severity == "block"]
    if blocking:
        raise ValueError(f"the generated day does not validate: {blocking}")
    step("validate")
    held_out = derive_features(raw, pipeline)
    step("preprocess")
    window = pd.concat([pd.read_parquet(p) for p in window_paths], ignore_index=True)
    stats = fit_stats(window, pipeline)
    step("fit_features")

    spec = next(m for m in pipeline.models if isinstance(m, XGBoostModel))
    params = {**xgboost_params(pipeline, spec), "nthread": 0}
    tree = to_tree_frame(window, stats)
    dtrain = xgb.DMatrix(tree, window[LABEL], enable_categorical=True)
    booster = xgb.train(params, dtrain, num_boost_round=spec.num_boost_round)
    del dtrain, tree
    step("train_xgboost")

    sgd_spec = next(m for m in pipeline.models if isinstance(m, SGDModel))
    model = _sgd_estimator(pipeline, sgd_spec)  # the same estimator and parameters
    rng = np.random.default_rng(pipeline.training.seed)
    for _ in range(sgd_spec.epochs):
        for index in rng.permutation(len(window_paths)):
            batch = pd.read_parquet(window_paths[index])
            model.partial_fit(
                to_linear_matrix(batch, stats), labels(batch), classes=np.array([0.0, 1.0])
            )
    step("train_sgd")

    y = labels(held_out)
    xgb_auc = roc_auc_score(y, booster.inplace_predict(to_tree_frame(held_out, stats)))
    sgd_auc = roc_auc_score(y, model.predict_proba(to_linear_matrix(held_out, stats))[:, 1])
    step("evaluate")
    return {
        "seconds": time.perf_counter() - started,
        "steps": steps,
        "auc": {"xgboost": float(xgb_auc), "sgd_logistic": float(sgd_auc)},
        "rows": {"held_out": len(held_out), "window": len(window)},
    }
