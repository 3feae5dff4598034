"""Train: XGBoost across the Dask cluster, linear models batch by batch, and the baseline.

Every model is saved in a format that loads without running code: XGBoost's UBJ, and JSON
holding the learned arrays of the scikit-learn models. Nothing here reads a pickle.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nightshift.config.pipeline import LABEL, Pipeline
from nightshift.config.progress import TOPIC, Progress, relay_events, round_callback
from nightshift.data.features import FeatureStats, to_tree_frame
from nightshift.models.sgd_workers import LinearBatches, batch_loss, kept_batch_budget

if TYPE_CHECKING:  # Dask loads only where a model trains: loading and scoring never need it
    import dask.dataframe as dd
    from distributed import Client

    from nightshift.models.kinds.baseline import BaselineModel
    from nightshift.models.kinds.sgd import SGDModel
    from nightshift.models.kinds.xgboost import XGBoostModel
    from nightshift.models.xgboost_batches import WorkerTask

log = logging.getLogger(__name__)


@dataclass
class TrainedModel:
    """A fitted model's file payload, its file name and what training recorded."""

    name: str
    kind: str
    filename: str
    payload: bytes
    history: dict[str, Any] = field(default_factory=dict)
    kept_bytes: int = 0  # the batch matrices training held in memory at its end (SGD's)


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


def rank_order(workers: dict[str, dict[str, Any]]) -> list[str]:
    """Return worker addresses in the order ``xgboost.dask`` gives them ranks.

    Its tracker sorts by task id, ``[xgboost.dask-<worker name>]:<address>``: by name first,
    and each night's cluster has new ports but the same names.
    """
    return sorted(workers, key=lambda a: f"[xgboost.dask-{workers[a].get('name')}]:{a}")


def rank_chunks(client: Client, count: int) -> list[tuple[str, np.ndarray]]:
    """Split ``count`` partitions into contiguous chunks, one per worker in rank order; a
    worker left without partitions is left out (XGBoost trains on the workers holding data)."""
    workers = rank_order(client.scheduler_info(n_workers=-1)["workers"])
    chunks = np.array_split(np.arange(count), min(len(workers), count))
    return list(zip(workers, chunks, strict=False))


def fix_layout(client: Client, dtrain: Any) -> None:
    """Give rank ``i`` the ``i``-th contiguous chunk of ``dtrain``'s partitions.

    ``DaskDMatrix`` hands each worker the partitions Dask happened to compute there, and Dask
    may move or steal work on a busy machine; a different split of the same rows gives a
    different model (seen: a re-run date's model differed by bytes). Setting the split here
    makes the model depend on the data alone; a partition on another worker is fetched.
    """
    order = dtrain.partition_order
    parts = sorted((f for fs in dtrain.worker_map.values() for f in fs), key=lambda f: order[f.key])
    dtrain.worker_map = {
        worker: [parts[i] for i in chunk] for worker, chunk in rank_chunks(client, len(parts))
    }


def pin_partitions(client: Client, frame: dd.DataFrame) -> dd.DataFrame:
    """Return ``frame`` computed onto the workers in a fixed layout.

    XGBoost's quantile sketches depend on which rows each rank holds, so the same data must be
    laid out the same way every night. Contiguous chunks of partitions go to the workers in
    rank order, where ``fix_layout`` will want them: no data moves there unless Dask moved it.
    """
    import dask.dataframe as dd

    parts = frame.to_delayed()
    layout = list(rank_chunks(client, len(parts)))
    futures = [
        client.compute(parts[i], workers=[worker], allow_other_workers=False)
        for worker, chunk in layout
        for i in chunk
    ]
    _wait_while_present(client, futures, [worker for worker, _ in layout])
    return dd.from_delayed(futures, meta=frame._meta, verify_meta=False)


def _wait_while_present(client: Client, futures: list[Any], workers: list[str]) -> None:
    """Wait for ``futures``, pinned to ``workers``; fail at once when one of those leaves.

    A partition pinned to a worker that is gone waits for it forever (Dask holds it as
    "no-worker"): seen in the compose tier, a worker host killed while the window loaded left
    the night's train_distributed waiting 24 minutes. The task fails instead, and its retry
    lays the window out on the workers there are.
    """
    from distributed import wait

    while True:
        try:
            wait(futures, timeout=5)
            return
        except TimeoutError:
            gone = set(workers) - set(client.scheduler_info(n_workers=-1)["workers"])
            if gone:
                client.cancel(futures)
                raise RuntimeError(
                    f"Dask worker(s) {', '.join(sorted(gone))} left while the training window "
                    "was loaded onto them; the task fails and its retry uses the workers there are"
                ) from None


def _tree_training_frame(frame: pd.DataFrame, stats: FeatureStats) -> pd.DataFrame:
    return to_tree_frame(frame, stats).assign(**{LABEL: frame[LABEL].to_numpy()})


# The training curve is measured after training on a sample of the window: asking
# xgboost.dask for it during training (``evals=[(dtrain, "train")]``) scored all 7M rows of a
# 7-day window every round, 0.34 s of a 1.32 s round on 2 cores. fit_features draws that
# sample (200,000 rows); where it drew none, this many rows are drawn from the workers (2.2 s
# of a 114 s training on 2 cores).
CURVE_ROWS = 200_000


def train_xgboost(
    client: Client,
    pipeline: Pipeline,
    spec: XGBoostModel,
    paths: list[str],
    stats: FeatureStats,
    device: str = "cpu",
    curve_rows: pd.DataFrame | None = None,
) -> TrainedModel:
    """Train XGBoost across the Dask workers on the processed batches at ``paths``, holding
    the window as ``training.memory`` says (``auto``: the first way that fits the workers'
    memory, :mod:`nightshift.models.xgboost_batches`); measure its training curve on ``curve_rows``
    (processed rows of the window, with the label), or on a sample of the training data."""
    import xgboost as xgb

    from nightshift.models.xgboost_batches import WorkerTask, cut_rows, plan_memory

    plan = plan_memory(client, pipeline, paths, stats)
    params = xgboost_params(pipeline, spec, device)
    rounds = round_callback(f"{pipeline.name} {spec.name}", spec.num_boost_round)
    sample = None if curve_rows is None else _tree_training_frame(curve_rows, stats)
    client.subscribe_topic(TOPIC, relay_events)
    try:
        if plan.mode == "in_memory":
            booster, training = _train_in_memory(
                client, pipeline, spec, paths, stats, params, rounds
            )
            payload = bytes(booster.save_raw("ubj"))
        else:
            cuts = None if sample is None else cut_rows(sample, stats, pipeline.training.seed)
            job = WorkerTask(
                "",
                paths,
                pipeline,
                stats,
                params,
                spec.num_boost_round,
                plan.mode,
                callbacks=[rounds],
                cuts=cuts,
            )
            payload = _train_from_batches(client, job)
            booster, training = xgb.Booster(model_file=bytearray(payload)), None
    finally:
        client.unsubscribe_topic(TOPIC)
    if sample is None:
        frame = training if training is not None else _lazy_training_frame(pipeline, paths, stats)
        sample = curve_sample(frame, CURVE_ROWS, pipeline.training.seed)
    metric = params["eval_metric"]
    features = [c for c in sample.columns if c != LABEL]
    curve = _logged_curve(spec.name, booster, sample[features], sample[LABEL], metric)
    history = {"metric": metric, "train": curve, "train_rows": len(sample), "params": params}
    return TrainedModel(
        name=spec.name,
        kind="xgboost",
        filename="model.ubj",
        payload=payload,
        history={**history, "memory": plan.as_record()},
    )


def _lazy_training_frame(pipeline: Pipeline, paths: list[str], stats: FeatureStats) -> dd.DataFrame:
    from nightshift.data.preprocess import processed_frame

    frame = processed_frame(paths, pipeline)
    meta = _tree_training_frame(frame._meta, stats)
    return frame.map_partitions(_tree_training_frame, stats, meta=meta)


def _train_in_memory(
    client: Client,
    pipeline: Pipeline,
    spec: XGBoostModel,
    paths: list[str],
    stats: FeatureStats,
    params: dict[str, Any],
    rounds: Any,
) -> tuple[Any, dd.DataFrame]:
    """``xgboost.dask`` on a ``DaskDMatrix`` of the window, computed onto the workers in a
    fixed layout; return the booster and the pinned frame."""
    import xgboost.dask as dxgb
    from xgboost.collective import Config

    timeout = pipeline.training.collective_timeout_seconds
    training = pin_partitions(client, _lazy_training_frame(pipeline, paths, stats))
    features = [c for c in training.columns if c != LABEL]
    dtrain = dxgb.DaskDMatrix(client, training[features], training[LABEL], enable_categorical=True)
    fix_layout(client, dtrain)
    result = dxgb.train(
        client,
        params,
        dtrain,
        num_boost_round=spec.num_boost_round,
        # Rounds are reported each tenth (nightshift.config.progress), not one log line per round.
        callbacks=[rounds],
        verbose_eval=False,
        # Without a timeout, losing a worker mid-training hangs the others forever; the
        # tracker's bounds the wait for a rank whose worker was lost before they all joined.
        coll_cfg=Config(timeout=timeout, tracker_timeout=timeout),
    )
    return result["booster"], training


def _train_from_batches(client: Client, job: WorkerTask) -> bytes:
    """Each worker streams a contiguous share of ``job``'s batches, in rank order (the same
    files on the same rank every night: the model depends on the data alone), into its
    matrix; return the model."""
    from nightshift.models.xgboost_batches import train_streamed

    tasks = [
        replace(job, address=worker, paths=[job.paths[i] for i in chunk])
        for worker, chunk in rank_chunks(client, len(job.paths))
    ]
    return train_streamed(client, tasks, job.pipeline.training.collective_timeout_seconds)


def _logged_curve(
    name: str, booster: Any, x: pd.DataFrame, y: pd.Series, metric: str
) -> list[float]:
    curve = training_curve(booster, x, y, metric)
    log.info(
        "%s: %d rounds, train %s %.4f -> %.4f (%d rows)",
        name,
        len(curve),
        metric,
        curve[0],
        curve[-1],
        len(x),
    )
    return curve


def curve_sample(training: dd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """Return about ``rows`` rows of ``training`` (all when it has no more), drawn with ``seed``
    from each partition: the same rows for the same data and layout."""
    total = len(training)
    if total <= rows:
        return training.compute()
    return training.sample(frac=rows / total, random_state=seed).compute()


def training_curve(booster: Any, x: pd.DataFrame, y: pd.Series, metric: str) -> list[float]:
    """Return ``metric`` on ``x``/``y`` after each round, as ``evals`` during training would.

    Round ``k``'s tree alone scores the rows with the margins of the rounds before it as their
    base margin: one tree's prediction a round, and XGBoost's own metric for any objective.
    """
    import xgboost as xgb

    matrix = xgb.DMatrix(x, y, enable_categorical=True)
    curve: list[float] = []
    for k in range(booster.num_boosted_rounds()):
        tree = booster[k : k + 1]
        tree.set_param({"device": "cpu", "eval_metric": metric})
        curve.append(float(tree.eval(matrix).rsplit(":", 1)[1]))
        matrix.set_base_margin(tree.predict(matrix, output_margin=True))
    return curve


def _sgd_estimator(pipeline: Pipeline, spec: SGDModel) -> Any:
    from sklearn.linear_model import SGDClassifier, SGDRegressor

    params: dict[str, Any] = {"alpha": 1e-4, "random_state": pipeline.training.seed}
    if pipeline.is_classification:
        params.update({"loss": "log_loss", **spec.params})
        return SGDClassifier(**params)
    params.update({"loss": "squared_error", "learning_rate": "invscaling", **spec.params})
    return SGDRegressor(**params)


def train_sgd(
    pipeline: Pipeline,
    spec: SGDModel,
    paths: list[str],
    stats: FeatureStats,
    budget: int | None = None,
) -> TrainedModel:
    """Train a linear model with ``partial_fit``, batch by batch, over shuffled epochs;
    the batch matrices fitting in ``budget`` bytes (default :func:`kept_batch_budget`) are
    built once, not once an epoch.

    Each batch is scored before the model learns from it (progressive validation), which
    gives an honest per-epoch loss without a separate pass over the data.
    """
    model = _sgd_estimator(pipeline, spec)
    classification = pipeline.is_classification
    rng = np.random.default_rng(pipeline.training.seed)
    epochs: list[float] = []
    fitted = False
    progress = Progress(f"{pipeline.name} {spec.name}", spec.epochs * len(paths), "batch")
    keep = 0 if spec.epochs == 1 else kept_batch_budget() if budget is None else budget
    batches = LinearBatches(pipeline, paths, stats, keep)
    for epoch in range(spec.epochs):
        losses, weights = [], []
        for index in rng.permutation(len(paths)):
            x, y = batches[int(index)]
            if fitted:
                losses.append(batch_loss(model, x, y, classification))
                weights.append(len(y))
            if classification:
                model.partial_fit(x, y, classes=np.array([0.0, 1.0]))
            else:
                model.partial_fit(x, y)
            fitted = True
            progress.advance()
        if losses:
            epochs.append(float(np.average(losses, weights=weights)))
        log.info(
            "%s epoch %d/%d: progressive loss %s",
            spec.name,
            epoch + 1,
            spec.epochs,
            f"{epochs[-1]:.4f}" if losses else "n/a (first batch)",
        )
    batches.log_kept(spec.name)
    return TrainedModel(
        name=spec.name,
        kind="sgd",
        filename="model.json",
        payload=linear_to_json(model),
        history={
            "epoch_loss": epochs,
            "batches": len(paths),
            "epochs": spec.epochs,
            "path": "process",
            "workers": 1,
        },
        kept_bytes=batches.kept_bytes,
    )


def sgd_on_workers(pipeline: Pipeline, paths: list[str]) -> bool:
    """Whether the linear models learn on the Dask workers: ``training.sgd``, or for ``auto``
    a window of at least :data:`~nightshift.models.sgd_workers.WORKER_ROWS` rows (its batches at
    most ``batch_size`` rows each: counted without reading them)."""
    from nightshift.models.sgd_workers import WORKER_ROWS

    training = pipeline.training
    if training.sgd != "auto":
        return training.sgd == "workers"
    return len(paths) * training.batch_size * training.sample_fraction >= WORKER_ROWS


def train_sgd_on_dask(
    client: Client, pipeline: Pipeline, spec: SGDModel, paths: list[str], stats: FeatureStats
) -> TrainedModel:
    """Train a linear model on the Dask workers by parameter mixing
    (:mod:`nightshift.models.sgd_workers`): the same estimator and file as :func:`train_sgd`."""
    from nightshift.models.sgd_workers import train_sgd_on_workers

    estimator = _sgd_estimator(pipeline, spec)
    # The same fixed shares as XGBoost's ranks: contiguous, in the workers' name order.
    placed = rank_chunks(client, len(paths))
    model, history = train_sgd_on_workers(client, estimator, pipeline, spec, paths, stats, placed)
    return TrainedModel(
        name=spec.name,
        kind="sgd",
        filename="model.json",
        payload=linear_to_json(model),
        history=history,
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
