"""Train: XGBoost across the Dask cluster, linear models batch by batch, and the baseline.

Every model is saved in a format that loads without running code: XGBoost's UBJ, and JSON
holding the learned arrays of the scikit-learn models. Nothing here reads a pickle.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nightshift.config import CLASSIFICATION, LABEL, BaselineModel, Pipeline, SGDModel, XGBoostModel
from nightshift.features import FeatureStats, labels, to_linear_matrix, to_tree_frame

if TYPE_CHECKING:  # Dask loads only where a model trains: loading and scoring never need it
    import dask.dataframe as dd
    from distributed import Client

log = logging.getLogger(__name__)


@dataclass
class TrainedModel:
    """A fitted model's file payload, its file name and what training recorded."""

    name: str
    kind: str
    filename: str
    payload: bytes
    history: dict[str, Any] = field(default_factory=dict)


def xgboost_params(pipeline: Pipeline, spec: XGBoostModel, device: str = "cpu") -> dict[str, Any]:
    """Return the booster parameters: sensible defaults for the task, then the YAML's.

    ``device`` is ``"cuda"`` when every Dask worker has a GPU; the YAML may still pin one.
    """
    classification = pipeline.is_classification
    params: dict[str, Any] = {
        "objective": "binary:logistic" if classification else "reg:squarederror",
        "eval_metric": "logloss" if classification else "rmse",
        "tree_method": "hist",
        "device": device,
        "max_depth": 6,
        "learning_rate": 0.1,
        "seed": pipeline.training.seed,
    }
    params.update(spec.params)
    return params


def pin_partitions(client: Client, frame: dd.DataFrame) -> dd.DataFrame:
    """Return ``frame`` computed onto the workers in a fixed layout.

    XGBoost ranks workers by address and its histograms depend on which rows each rank holds,
    so the same data laid out the same way gives a byte-identical model. Contiguous chunks of
    partitions go to the workers in sorted-address order.
    """
    import dask.dataframe as dd
    from distributed import wait

    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    parts = frame.to_delayed()
    chunks = np.array_split(np.arange(len(parts)), len(workers))
    futures = [
        client.compute(parts[i], workers=[worker], allow_other_workers=False)
        for worker, indices in zip(workers, chunks, strict=True)
        for i in indices
    ]
    wait(futures)
    return dd.from_delayed(futures, meta=frame._meta, verify_meta=False)


def _tree_training_frame(frame: pd.DataFrame, stats: FeatureStats) -> pd.DataFrame:
    return to_tree_frame(frame, stats).assign(**{LABEL: frame[LABEL].to_numpy()})


def train_xgboost(
    client: Client,
    pipeline: Pipeline,
    spec: XGBoostModel,
    paths: list[str],
    stats: FeatureStats,
    device: str = "cpu",
) -> TrainedModel:
    """Train XGBoost with ``xgboost.dask`` on the processed batches at ``paths``."""
    import xgboost as xgb
    import xgboost.dask as dxgb

    from nightshift.preprocess import processed_frame

    frame = processed_frame(paths, pipeline)
    meta = _tree_training_frame(frame._meta, stats)
    training = pin_partitions(client, frame.map_partitions(_tree_training_frame, stats, meta=meta))
    features = [c for c in meta.columns if c != LABEL]
    dtrain = dxgb.DaskDMatrix(client, training[features], training[LABEL], enable_categorical=True)
    params = xgboost_params(pipeline, spec, device)
    from xgboost.collective import Config

    result = dxgb.train(
        client,
        params,
        dtrain,
        num_boost_round=spec.num_boost_round,
        evals=[(dtrain, "train")],
        # Without a timeout, losing a worker mid-training hangs the others forever.
        coll_cfg=Config(timeout=pipeline.training.collective_timeout_seconds),
    )
    booster: xgb.Booster = result["booster"]
    metric = params["eval_metric"]
    curve = [float(v) for v in result["history"]["train"][metric]]
    log.info(
        "%s: %d rounds, train %s %.4f -> %.4f", spec.name, len(curve), metric, curve[0], curve[-1]
    )
    return TrainedModel(
        name=spec.name,
        kind="xgboost",
        filename="model.ubj",
        payload=bytes(booster.save_raw("ubj")),
        history={"metric": metric, "train": curve, "params": params},
    )


def _sgd_estimator(pipeline: Pipeline, spec: SGDModel) -> Any:
    from sklearn.linear_model import SGDClassifier, SGDRegressor

    params: dict[str, Any] = {"alpha": 1e-4, "random_state": pipeline.training.seed}
    if pipeline.is_classification:
        params.update({"loss": "log_loss", **spec.params})
        return SGDClassifier(**params)
    params.update({"loss": "squared_error", "learning_rate": "invscaling", **spec.params})
    return SGDRegressor(**params)


def _batch_loss(model: Any, x: np.ndarray, y: np.ndarray, classification: bool) -> float:
    from sklearn.metrics import log_loss, mean_squared_error

    if classification:
        return float(log_loss(y, model.predict_proba(x)[:, 1], labels=[0, 1]))
    return float(mean_squared_error(y, model.predict(x)))


def train_sgd(
    pipeline: Pipeline, spec: SGDModel, paths: list[str], stats: FeatureStats
) -> TrainedModel:
    """Train a linear model with ``partial_fit``, batch by batch, over shuffled epochs.

    Each batch is scored before the model learns from it (progressive validation), which
    gives an honest per-epoch loss without a separate pass over the data.
    """
    from nightshift.preprocess import sample_rows

    model = _sgd_estimator(pipeline, spec)
    classification = pipeline.is_classification
    rng = np.random.default_rng(pipeline.training.seed)
    epochs: list[float] = []
    fitted = False
    for epoch in range(spec.epochs):
        losses, weights = [], []
        for index in rng.permutation(len(paths)):
            batch = sample_rows(
                pd.read_parquet(paths[index]),
                pipeline.training.sample_fraction,
                pipeline.training.seed,
            )
            x, y = to_linear_matrix(batch, stats), labels(batch)
            if fitted:
                losses.append(_batch_loss(model, x, y, classification))
                weights.append(len(y))
            if classification:
                model.partial_fit(x, y, classes=np.array([0.0, 1.0]))
            else:
                model.partial_fit(x, y)
            fitted = True
        if losses:
            epochs.append(float(np.average(losses, weights=weights)))
        log.info(
            "%s epoch %d/%d: progressive loss %s",
            spec.name,
            epoch + 1,
            spec.epochs,
            f"{epochs[-1]:.4f}" if losses else "n/a (first batch)",
        )
    return TrainedModel(
        name=spec.name,
        kind="sgd",
        filename="model.json",
        payload=linear_to_json(model),
        history={"epoch_loss": epochs, "batches": len(paths), "epochs": spec.epochs},
    )


def train_baseline(pipeline: Pipeline, spec: BaselineModel, stats: FeatureStats) -> TrainedModel:
    """Return the constant model: the window's base rate (classification) or mean (regression)."""
    payload = {"kind": "baseline", "value": stats.label_mean, "task": pipeline.schema_.task}
    return TrainedModel(
        name=spec.name,
        kind="baseline",
        filename="model.json",
        payload=json.dumps(payload, sort_keys=True).encode(),
    )


def linear_to_json(model: Any) -> bytes:
    """Return a fitted SGD model's learned arrays and parameters as JSON."""
    payload = {
        "kind": "sgd",
        "estimator": type(model).__name__,
        "params": {k: v for k, v in model.get_params().items() if _is_plain(v)},
        "coef": np.asarray(model.coef_).tolist(),
        "intercept": np.asarray(model.intercept_).tolist(),
        "classes": np.asarray(getattr(model, "classes_", [])).tolist(),
        "t": float(model.t_),
    }
    return json.dumps(payload, sort_keys=True).encode()


def _is_plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _linear_from_json(payload: dict[str, Any]) -> Any:
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


class UnsafeModel(ValueError):
    """A model file is not in a format that loads without running code (a pickle, say)."""


def is_pickle(payload: bytes) -> bool:
    """Return whether ``payload`` starts like a pickle (protocol 2 and later)."""
    return len(payload) > 1 and payload[0] == 0x80 and 2 <= payload[1] <= 5


class LoadedModel:
    """A model read back from its safe file, with one scoring method for every kind.

    XGBoost models load from UBJ or JSON, the others from nightshift's JSON; anything else,
    a pickle above all, is refused with the file named (``origin``).
    """

    def __init__(
        self, kind: str, payload: bytes, stats: FeatureStats, task: str, origin: str = "<bytes>"
    ) -> None:
        self.kind = kind
        self.stats = stats
        self.task = task
        if is_pickle(payload):
            raise UnsafeModel(
                f"{origin}: refusing to load a pickle where a {kind} model is expected; "
                "models load only from XGBoost UBJ/JSON or nightshift's JSON"
            )
        if kind == "xgboost":
            import xgboost as xgb

            self.booster = xgb.Booster()
            try:
                self.booster.load_model(bytearray(payload))
            except xgb.core.XGBoostError as exc:
                raise UnsafeModel(f"{origin}: not an XGBoost UBJ/JSON model: {exc}") from None
            # Scoring runs in the task process, which may have no GPU even if training did.
            self.booster.set_param({"device": "cpu"})
        elif kind in ("sgd", "baseline"):
            try:
                content = json.loads(payload)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise UnsafeModel(f"{origin}: not a nightshift JSON model: {exc}") from None
            if not isinstance(content, dict) or content.get("kind") != kind:
                found = content.get("kind") if isinstance(content, dict) else type(content)
                raise UnsafeModel(f"{origin}: model file holds {found!r}, expected {kind!r}")
            self.content = content
            self.linear = _linear_from_json(content) if kind == "sgd" else None
        else:
            raise ValueError(f"unknown model kind {kind!r}")

    def importance(
        self, frame: pd.DataFrame, sample: int = 5000, seed: int = 0
    ) -> dict[str, dict[str, float]]:
        """Return an XGBoost model's feature importance: share of total gain, and the mean
        absolute per-row contribution (``pred_contribs``, SHAP values) on a sample of ``frame``.
        """
        import xgboost as xgb

        if self.kind != "xgboost":
            raise ValueError(f"feature importance is for XGBoost models, not {self.kind!r}")
        gain: dict[str, float] = {
            k: float(v)  # type: ignore[arg-type]
            for k, v in self.booster.get_score(importance_type="total_gain").items()
        }
        total = sum(gain.values()) or 1.0
        rows = frame.sample(n=min(sample, len(frame)), random_state=seed) if len(frame) else frame
        tree_frame = to_tree_frame(rows, self.stats)
        matrix = xgb.DMatrix(tree_frame, enable_categorical=True)
        contributions = np.asarray(self.booster.predict(matrix, pred_contribs=True))
        # The last column is the bias term, not a feature.
        mean_abs = np.abs(contributions[:, :-1]).mean(axis=0) if len(rows) else np.array([])
        return {
            "gain": {k: round(v / total, 6) for k, v in sorted(gain.items())},
            "contribution": {
                name: round(float(value), 6)
                for name, value in zip(tree_frame.columns, mean_abs, strict=False)
            },
        }

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Return scores: the positive-class probability, or the predicted value."""
        if self.kind == "xgboost":
            import xgboost as xgb

            matrix = xgb.DMatrix(to_tree_frame(frame, self.stats), enable_categorical=True)
            return np.asarray(self.booster.predict(matrix), dtype="float64")
        if self.kind == "baseline":
            return np.full(len(frame), float(self.content["value"]))
        x = to_linear_matrix(frame, self.stats)
        assert self.linear is not None
        if self.task == CLASSIFICATION:
            return np.asarray(self.linear.predict_proba(x)[:, 1], dtype="float64")
        return np.asarray(self.linear.predict(x), dtype="float64")
