"""The honest floor: the window's base rate (classification) or mean (regression)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from nightshift.config.pipeline import ModelName, ModelSpec
from nightshift.models.kinds.base import ModelKind, Scorer, TrainJob
from nightshift.models.safe_models import json_model

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from nightshift.data.features import FeatureStats
    from nightshift.models.train import TrainedModel


class BaselineModel(ModelSpec):
    """The honest floor: the training base rate (classification) or mean (regression)."""

    kind: Literal["baseline"]
    name: ModelName = "baseline"


class ConstantScorer(Scorer):
    """One prediction for every row."""

    def __init__(self, content: dict[str, Any], stats: FeatureStats, task: str) -> None:
        super().__init__("baseline", stats, task)
        self.content = content
        self.value = float(content["value"])

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """The constant, once per row."""
        import numpy as np

        return np.full(len(frame), self.value)


class Baseline(ModelKind):
    """Learns nothing: it is there so a learned model that does no better is seen."""

    spec = BaselineModel
    learned: ClassVar[bool] = False

    def train(self, spec: BaselineModel, job: TrainJob) -> TrainedModel:
        """The window's base rate or mean, from the fitted feature statistics."""
        from nightshift.models.train import train_baseline

        return train_baseline(job.pipeline, spec, job.stats)

    def load(self, payload: bytes, stats: FeatureStats, task: str, origin: str) -> ConstantScorer:
        """nightshift's JSON of the constant."""
        return ConstantScorer(json_model(payload, "baseline", origin), stats, task)

    def log_model(self, scorer: ConstantScorer, registered: str | None) -> None:
        """Kept with the run as a file, not registered: it is no champion."""
        import mlflow

        mlflow.log_text(json.dumps(scorer.content), "model/model.json")


SPEC, KIND = BaselineModel, Baseline()
