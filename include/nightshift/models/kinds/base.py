"""What a kind of model is to the night: where it trains, how, how it is read back and
scored, and how MLflow keeps it."""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from nightshift.config.pipeline import ModelSpec, Pipeline, Stage

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from distributed import Client

    from nightshift.data.features import FeatureStats
    from nightshift.models.train import TrainedModel


@dataclass(frozen=True)
class TrainJob:
    """What the night gives a kind to train on: the window's processed batches, the feature
    statistics fitted on it, and the Dask client where the stage opened one."""

    pipeline: Pipeline
    paths: list[str]
    stats: FeatureStats
    client: Client | None = None
    device: str = "cpu"  # "cuda" where every Dask worker has a GPU
    window_sample: str | None = None  # fit_features' sample of the window (a Parquet file)

    @functools.cached_property
    def sample(self) -> pd.DataFrame | None:
        """The window sample's processed rows, read once, or None where none was drawn."""
        from nightshift.storage.lake import read_frame

        return None if self.window_sample is None else read_frame(self.window_sample)


class Scorer(ABC):
    """A model read back from its file, ready to score processed rows."""

    kind: str
    value: float | None = None  # a constant model's one prediction, shown in the report

    def __init__(self, kind: str, stats: FeatureStats, task: str) -> None:
        self.kind = kind
        self.stats = stats
        self.task = task

    @abstractmethod
    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Return scores: the positive-class probability, or the predicted value."""

    def importance(
        self, frame: pd.DataFrame, sample: int = 2000, seed: int = 0
    ) -> dict[str, dict[str, float]] | None:
        """Return feature importance on a sample of ``frame``, where the kind measures it."""
        return None


class ModelKind(ABC):
    """One kind of model: the night asks it, never which kind it is."""

    spec: ClassVar[type[ModelSpec]]
    # The Airflow task that trains it: XGBoost's own task across the cluster, or the one for
    # the models that learn batch by batch (and the baseline).
    stage: ClassVar[Stage] = Stage.TRAIN_INCREMENTAL
    # Learned models compete for champion and are registered; the baseline keeps them honest.
    learned: ClassVar[bool] = True
    # scikit-learn types its MLflow model may hold (skops loads only these).
    trusted_types: ClassVar[tuple[str, ...]] = ()
    # The MLflow flavour it is logged in; None: not registered.
    flavour: ClassVar[str | None] = None

    def needs_cluster(self, pipeline: Pipeline, paths: list[str]) -> bool:
        """Whether it trains on the Dask workers tonight (its stage then opens a client)."""
        return False

    @abstractmethod
    def train(self, spec: Any, job: TrainJob) -> TrainedModel:
        """Train the model ``spec`` describes on ``job``'s window; return its file."""

    @abstractmethod
    def load(self, payload: bytes, stats: FeatureStats, task: str, origin: str) -> Scorer:
        """Read a model file this kind saved, without running code; refuse anything else
        (``UnsafeModel``), naming ``origin``."""

    @abstractmethod
    def log_model(self, scorer: Any, registered: str | None) -> Any:
        """Log the model to the active MLflow run in its flavour, registered as
        ``registered``; return MLflow's ModelInfo, or None when it is not registered."""

    def load_registered(self, local: Path, flavour: dict[str, Any], uri: str) -> Any:
        """Return a registered model of this kind's flavour from its MLflow model folder
        ``local``, loaded without running code; refuse anything else (``UnsafeModel``)."""
        raise NotImplementedError(f"{uri}: {type(self).__name__} registers no models")


def load_skops(local: Path, flavour: dict[str, Any], uri: str, trusted: list[str]) -> Any:
    """A scikit-learn flavour's model, only from skops and with the ``trusted`` types
    (nightshift's own list, ``kinds.trusted_types``; never the one stored beside the model)."""
    import skops.io

    from nightshift.models.safe_models import UnsafeModel, is_pickle

    path = local / flavour["pickled_model"]
    payload = path.read_bytes()
    if flavour.get("serialization_format") != "skops" or is_pickle(payload):
        raise UnsafeModel(
            f"{uri}: {path.name} is saved as {flavour.get('serialization_format')!r}"
            f"{' (a pickle)' if is_pickle(payload) else ''}; only skops models load"
        )
    try:
        return skops.io.load(path, trusted=trusted)
    except Exception as exc:
        raise UnsafeModel(f"{uri}: {path.name} refused by skops: {exc}") from None


def log_skops(estimator: Any, trusted_types: tuple[str, ...], registered: str | None) -> Any:
    """Log a scikit-learn ``estimator`` to the active MLflow run in scikit-learn's flavour,
    saved with skops (never a pickle), registered as ``registered``; return the ModelInfo."""
    import mlflow
    import sklearn
    import skops

    return mlflow.sklearn.log_model(
        estimator,
        name="model",
        serialization_format="skops",
        skops_trusted_types=list(trusted_types),
        registered_model_name=registered,
        pip_requirements=[f"scikit-learn=={sklearn.__version__}", f"skops=={skops.__version__}"],
    )
