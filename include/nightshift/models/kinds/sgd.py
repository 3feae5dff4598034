"""A linear model (scikit-learn's SGD) learned batch by batch over epochs: in the task's own
process, or on the Dask workers by parameter mixing for a large window."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from nightshift.config.pipeline import CLASSIFICATION, ModelName, ModelSpec, Pipeline
from nightshift.models.kinds.base import ModelKind, Scorer, TrainJob, load_skops, log_skops
from nightshift.models.safe_models import json_model

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from nightshift.data.features import FeatureStats
    from nightshift.models.train import TrainedModel


class SGDModel(ModelSpec):
    """A linear model trained with ``partial_fit`` batch by batch, over epochs."""

    kind: Literal["sgd"]
    name: ModelName = "sgd"
    params: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(3, gt=0)


class LinearScorer(Scorer):
    """A linear model rebuilt from the learned arrays in nightshift's JSON."""

    def __init__(self, content: dict[str, Any], stats: FeatureStats, task: str) -> None:
        super().__init__("sgd", stats, task)
        self.content = content
        self.linear = linear_from_json(content)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """The positive-class probability, or the predicted value."""
        import numpy as np

        from nightshift.data.features import to_linear_matrix

        x = to_linear_matrix(frame, self.stats)
        if self.task == CLASSIFICATION:
            return np.asarray(self.linear.predict_proba(x)[:, 1], dtype="float64")
        return np.asarray(self.linear.predict(x), dtype="float64")


def linear_from_json(payload: dict[str, Any]) -> Any:
    """Return the scikit-learn estimator whose learned arrays ``payload`` holds."""
    import numpy as np
    from sklearn.linear_model import SGDClassifier, SGDRegressor

    estimators = {"SGDClassifier": SGDClassifier, "SGDRegressor": SGDRegressor}
    if payload["estimator"] not in estimators:
        raise ValueError(f"unsupported linear model {payload['estimator']!r}")
    model = estimators[payload["estimator"]](**payload["params"])
    model.coef_ = np.asarray(payload["coef"], dtype="float64")
    model.intercept_ = np.asarray(payload["intercept"], dtype="float64")
    if payload["classes"]:
        model.classes_ = np.asarray(payload["classes"], dtype="float64")
    model.n_features_in_ = model.coef_.shape[-1]
    model.t_ = payload["t"]
    return model


class SGD(ModelKind):
    """Stochastic gradient descent over the window's batches, a few epochs."""

    spec = SGDModel
    flavour: ClassVar[str | None] = "sklearn"
    trusted_types = (
        "sklearn.linear_model._stochastic_gradient.SGDClassifier",
        "sklearn.linear_model._stochastic_gradient.SGDRegressor",
    )

    def needs_cluster(self, pipeline: Pipeline, paths: list[str]) -> bool:
        """On the workers for a large window (``training.sgd``, ``train.sgd_on_workers``)."""
        from nightshift.models.train import sgd_on_workers

        return sgd_on_workers(pipeline, paths)

    def train(self, spec: SGDModel, job: TrainJob) -> TrainedModel:
        """``partial_fit`` over the batches: on the workers where the stage opened a client."""
        from nightshift.models.train import train_sgd, train_sgd_on_dask

        if job.client is not None:
            return train_sgd_on_dask(job.client, job.pipeline, spec, job.paths, job.stats)
        return train_sgd(job.pipeline, spec, job.paths, job.stats)

    def load(self, payload: bytes, stats: FeatureStats, task: str, origin: str) -> LinearScorer:
        """The learned arrays in nightshift's JSON (``train.linear_to_json``)."""
        return LinearScorer(json_model(payload, "sgd", origin), stats, task)

    def log_model(self, scorer: LinearScorer, registered: str | None) -> Any:
        """scikit-learn's flavour, saved with skops (never a pickle)."""
        return log_skops(scorer.linear, self.trusted_types, registered)

    def load_registered(self, local: Path, flavour: dict[str, Any], uri: str) -> Any:
        """scikit-learn's flavour, only from skops, trusting what every kind trusts."""
        from nightshift.models.kinds import trusted_types

        return load_skops(local, flavour, uri, trusted_types())


SPEC, KIND = SGDModel, SGD()
