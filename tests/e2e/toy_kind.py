"""A toy model kind, to show that a new kind is one module and one line in
``config.MODEL_KINDS``: scikit-learn's ``HistGradientBoosting`` on the window's batches, saved
and logged with skops. Nothing else in nightshift is told about it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from nightshift.config.pipeline import CLASSIFICATION, ModelName, ModelSpec
from nightshift.data.features import FeatureStats, labels, to_linear_matrix
from nightshift.data.preprocess import training_batch
from nightshift.models.kinds.base import ModelKind, Scorer, TrainJob, load_skops, log_skops
from nightshift.models.safe_models import UnsafeModel
from nightshift.models.train import TrainedModel

ESTIMATORS = "sklearn.ensemble._hist_gradient_boosting"


class HistGradientBoostingModel(ModelSpec):
    kind: Literal["hist_gradient_boosting"]
    name: ModelName = "hist_gradient_boosting"
    max_iter: int = Field(50, gt=0)


class TreesScorer(Scorer):
    def __init__(self, estimator: Any, stats: FeatureStats, task: str) -> None:
        super().__init__("hist_gradient_boosting", stats, task)
        self.estimator = estimator

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        x = to_linear_matrix(frame, self.stats)
        if self.task == CLASSIFICATION:
            return np.asarray(self.estimator.predict_proba(x)[:, 1], dtype="float64")
        return np.asarray(self.estimator.predict(x), dtype="float64")


class HistGradientBoosting(ModelKind):
    spec = HistGradientBoostingModel
    flavour = "sklearn"
    trusted_types = (
        f"{ESTIMATORS}.gradient_boosting.HistGradientBoostingClassifier",
        f"{ESTIMATORS}.gradient_boosting.HistGradientBoostingRegressor",
        f"{ESTIMATORS}.predictor.TreePredictor",
    )

    def train(self, spec: HistGradientBoostingModel, job: TrainJob) -> TrainedModel:
        import skops.io
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        frame = pd.concat([training_batch(p, job.pipeline) for p in job.paths], ignore_index=True)
        seed = job.pipeline.training.seed
        make = (
            HistGradientBoostingClassifier
            if job.pipeline.is_classification
            else HistGradientBoostingRegressor
        )
        estimator = make(max_iter=spec.max_iter, random_state=seed)
        estimator.fit(to_linear_matrix(frame, job.stats), labels(frame))
        history = {"rows": len(frame), "iterations": int(estimator.n_iter_)}
        payload = skops.io.dumps(estimator)
        return TrainedModel(spec.name, spec.kind, "model.skops", payload, history)

    def load(self, payload: bytes, stats: FeatureStats, task: str, origin: str) -> TreesScorer:
        import skops.io

        try:
            estimator = skops.io.loads(payload, trusted=list(self.trusted_types))
        except Exception as exc:
            raise UnsafeModel(f"{origin}: refused by skops: {exc}") from None
        return TreesScorer(estimator, stats, task)

    def log_model(self, scorer: TreesScorer, registered: str | None) -> Any:
        return log_skops(scorer.estimator, self.trusted_types, registered)

    def load_registered(self, local: Path, flavour: dict[str, Any], uri: str) -> Any:
        from nightshift.models.kinds import trusted_types

        return load_skops(local, flavour, uri, trusted_types())


SPEC, KIND = HistGradientBoostingModel, HistGradientBoosting()
