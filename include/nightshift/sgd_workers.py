"""The linear model on the Dask workers: parameter mixing, epoch by epoch.

One process learning batch after batch (``train.train_sgd``) is exact but bounded by one core:
4.5 CPU s per million window rows and epoch here, so a few hundred million rows set the night.
Parameter mixing (Zinkevich, Weimer, Smola and Li, *Parallelized Stochastic Gradient Descent*,
NIPS 2010; as "iterative parameter mixing" in McDonald, Hall and Mann, 2010): each epoch every
worker runs ``partial_fit`` over its own share of the batches, starting from the same model,
and the models are averaged, weighted by the rows each learned from. Each worker holds one
batch at a time; the shares are fixed (contiguous, in the workers' name order) and each
worker's shuffle is seeded by the pipeline's seed, the epoch and its rank, so the same window
gives the same model.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nightshift.config import Pipeline, SGDModel
from nightshift.features import FeatureStats, labels, to_linear_matrix

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

# Where ``training.sgd`` is ``auto``: windows of at least this many rows train on the workers
# (about 4 minutes an epoch in one process here), smaller ones in one process.
WORKER_ROWS = 50_000_000


_LOGIT_BOUND = float(np.log((1 - np.finfo("float64").eps) / np.finfo("float64").eps))


def batch_loss(model: Any, x: np.ndarray, y: np.ndarray, classification: bool) -> float:
    """Return the model's mean loss on a batch it has not learned from yet.

    Log loss from the decision function, ``log(1 + e^z) - y z``, is the log loss of the
    predicted probability without scikit-learn's input checks, which took most of the time
    of scoring every batch (7.0 s of a 48 s SGD training on a 7-day window).
    """
    if classification:
        # scikit-learn clips probabilities to [eps, 1 - eps]: the same bound on the logit.
        z = np.clip(model.decision_function(x), -_LOGIT_BOUND, _LOGIT_BOUND)
        return float(np.mean(np.logaddexp(0.0, z) - y * z))
    return float(np.mean((y - model.predict(x)) ** 2))


@dataclass(frozen=True)
class EpochShare:
    """What one worker learns from in one epoch."""

    paths: list[str]
    pipeline: Pipeline
    stats: FeatureStats
    seed: list[int]  # the pipeline's seed, the epoch, the rank


@dataclass(frozen=True)
class EpochResult:
    """A worker's model after its share, and its progressive loss (before each batch)."""

    model: Any
    rows: int
    loss_sum: float
    scored_rows: int


def learn_share(model: Any, share: EpochShare) -> EpochResult:
    """Run ``partial_fit`` over ``share``'s batches in a seeded order, from a copy of ``model``
    (unfitted in the first epoch); score each batch before learning from it."""
    from nightshift.preprocess import sample_rows

    model = copy.deepcopy(model)  # in-process workers share the client's objects
    training = share.pipeline.training
    classification = share.pipeline.is_classification
    fitted = hasattr(model, "coef_")
    rows, loss_sum, scored = 0, 0.0, 0
    for index in np.random.default_rng(share.seed).permutation(len(share.paths)):
        batch = sample_rows(
            pd.read_parquet(share.paths[int(index)]), training.sample_fraction, training.seed
        )
        x, y = to_linear_matrix(batch, share.stats), labels(batch)
        if fitted:
            loss_sum += batch_loss(model, x, y, classification) * len(y)
            scored += len(y)
        if classification:
            model.partial_fit(x, y, classes=np.array([0.0, 1.0]))
        else:
            model.partial_fit(x, y)
        fitted, rows = True, rows + len(y)
    return EpochResult(model, rows, loss_sum, scored)


def mix(results: list[EpochResult]) -> Any:
    """Return the row-weighted average of the workers' models (a copy of the first's, with
    the averaged coefficients, intercept and step count)."""
    learned = [r for r in results if r.rows]
    weights = np.array([r.rows for r in learned], dtype=float)
    mixed = copy.deepcopy(learned[0].model)
    mixed.coef_ = np.average([r.model.coef_ for r in learned], axis=0, weights=weights)
    mixed.intercept_ = np.average([r.model.intercept_ for r in learned], axis=0, weights=weights)
    mixed.t_ = float(np.average([r.model.t_ for r in learned], weights=weights))
    return mixed


def shares(client: Client, count: int) -> list[tuple[str, np.ndarray]]:
    """Contiguous shares of ``count`` batches, one per worker in name order (a worker left
    without batches is left out)."""
    info = client.scheduler_info(n_workers=-1)["workers"]
    workers = sorted(info, key=lambda a: (str(info[a].get("name")), a))
    chunks = np.array_split(np.arange(count), min(len(workers), count))
    return list(zip(workers, chunks, strict=False))


def train_sgd_on_workers(
    client: Client, model: Any, pipeline: Pipeline, spec: SGDModel, paths: list[str], stats: Any
) -> tuple[Any, dict[str, Any]]:
    """Train ``model`` (unfitted) by parameter mixing over ``spec.epochs``; return it and
    its history (the progressive loss of each epoch, the workers)."""
    placed = shares(client, len(paths))
    epochs: list[float] = []
    for epoch in range(spec.epochs):
        futures = [
            client.submit(
                learn_share,
                model,
                EpochShare(
                    [paths[i] for i in chunk],
                    pipeline,
                    stats,
                    [pipeline.training.seed, epoch, rank],
                ),
                workers=[worker],
                pure=False,
                key=f"sgd-epoch-{spec.name}-{epoch}-rank-{rank}",
            )
            for rank, (worker, chunk) in enumerate(placed)
        ]
        results: list[EpochResult] = client.gather(futures)
        model = mix(results)
        scored = sum(r.scored_rows for r in results)
        if scored:
            epochs.append(sum(r.loss_sum for r in results) / scored)
        log.info(
            "%s epoch %d/%d on %d workers: progressive loss %s",
            spec.name,
            epoch + 1,
            spec.epochs,
            len(placed),
            f"{epochs[-1]:.4f}" if scored else "n/a (first batches)",
        )
    history = {"epoch_loss": epochs, "batches": len(paths), "epochs": spec.epochs}
    return model, {**history, "path": "workers", "workers": len(placed)}
