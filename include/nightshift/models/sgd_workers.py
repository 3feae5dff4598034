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
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from nightshift.config.pipeline import Pipeline
from nightshift.data.features import FeatureStats, labels, to_linear_matrix

if TYPE_CHECKING:
    from distributed import Client

    from nightshift.models.kinds.sgd import SGDModel

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


def kept_batch_budget() -> int:
    """Bytes of batch matrices :class:`LinearBatches` keeps across epochs: an eighth of the
    memory this machine (or its container) has."""
    from distributed.system import MEMORY_LIMIT

    return int(MEMORY_LIMIT) // 8


class LinearBatches:
    """The window's batches as a linear model's inputs, built on first use.

    Reading a batch and building its matrix took 9.5 s of a 17 s, 3-epoch SGD training on a
    7-day window of 1M rows a day (143 batches), on 2 cores beside XGBoost. The matrices of
    the first epoch are kept for the next ones while they fit in ``budget`` bytes (2.2 GB for
    that window); the others are read and built again each epoch, as before.
    """

    def __init__(
        self, pipeline: Pipeline, paths: list[str], stats: FeatureStats, budget: int
    ) -> None:
        self.pipeline, self.paths, self.stats = pipeline, paths, stats
        self.budget = self.left = budget
        self.kept: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index in self.kept:
            return self.kept[index]
        from nightshift.data.preprocess import training_batch

        batch = training_batch(self.paths[index], self.pipeline)
        x, y = to_linear_matrix(batch, self.stats), labels(batch)
        if x.nbytes + y.nbytes <= self.left:
            self.kept[index] = x, y
            self.left -= x.nbytes + y.nbytes
        return x, y

    @property
    def kept_bytes(self) -> int:
        """The bytes of the matrices kept for the next epochs."""
        return self.budget - self.left

    def log_kept(self, name: str) -> None:
        """Log how many of the batches were built once, and the memory they took."""
        log.info(
            "%s: %d of %d batch matrices built once (%.2f GiB kept, of %.2f GiB allowed)",
            name,
            len(self.kept),
            len(self.paths),
            self.kept_bytes / 2**30,
            self.budget / 2**30,
        )


@dataclass(frozen=True)
class EpochShare:
    """What one worker learns from in one epoch."""

    paths: list[str]
    pipeline: Pipeline
    stats: FeatureStats
    seed: list[int]  # the pipeline's seed, the epoch (and the rank, on a worker)
    kept: str  # names the batch matrices the worker keeps between epochs (:data:`_KEPT`)


# Each worker's batch matrices of a training, kept between its epochs while they fit in an
# eighth of its memory limit (as one process keeps them: ``LinearBatches``); forgotten at the
# end of the training (:func:`forget_batches`).
_KEPT: dict[str, LinearBatches] = {}


def _worker_batches(share: EpochShare) -> LinearBatches:
    from distributed import get_worker

    if share.kept not in _KEPT:
        limit = get_worker().memory_manager.memory_limit
        budget = limit // 8 if limit else kept_batch_budget()
        _KEPT[share.kept] = LinearBatches(share.pipeline, share.paths, share.stats, budget)
    return _KEPT[share.kept]


def forget_batches(prefix: str) -> int:
    """Drop a training's kept matrices on this worker; return how many batches they were."""
    names = [name for name in _KEPT if name.startswith(prefix)]
    return sum(len(_KEPT.pop(name).kept) for name in names)


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
    model = copy.deepcopy(model)  # in-process workers share the client's objects
    classification = share.pipeline.is_classification
    batches = _worker_batches(share)
    fitted = hasattr(model, "coef_")
    rows, loss_sum, scored = 0, 0.0, 0
    for index in np.random.default_rng(share.seed).permutation(len(share.paths)):
        x, y = batches[int(index)]
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


def _epoch(
    client: Client, model: Any, placed: list[tuple[str, np.ndarray]], share: EpochShare
) -> list[EpochResult]:
    """One epoch: every worker learns its share from ``model``, at once."""
    epoch = share.seed[1]
    futures = [
        client.submit(
            learn_share,
            model,
            replace(
                share,
                paths=[share.paths[i] for i in chunk],
                seed=[*share.seed, rank],
                kept=f"{share.kept}-{rank}",
            ),
            workers=[worker],
            pure=False,
            key=f"sgd-epoch-{epoch}-rank-{rank}-{share.kept}",
        )
        for rank, (worker, chunk) in enumerate(placed)
    ]
    return client.gather(futures)


def train_sgd_on_workers(
    client: Client,
    model: Any,
    pipeline: Pipeline,
    spec: SGDModel,
    paths: list[str],
    stats: Any,
    placed: list[tuple[str, np.ndarray]],
) -> tuple[Any, dict[str, Any]]:
    """Train ``model`` (unfitted) by parameter mixing over ``spec.epochs``, worker ``i`` of
    ``placed`` learning ``paths[j]`` for each ``j`` in ``placed[i][1]``; return the model and
    its history (the progressive loss of each epoch, the workers)."""
    kept = f"{spec.name}-{uuid.uuid4().hex}"
    epochs: list[float] = []
    try:
        for epoch in range(spec.epochs):
            share = EpochShare(paths, pipeline, stats, [pipeline.training.seed, epoch], kept)
            results = _epoch(client, model, placed, share)
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
    finally:
        kept_batches = sum(client.run(forget_batches, kept).values())
    log.info("%s: %d batch matrices kept on the workers between epochs", spec.name, kept_batches)
    history = {"epoch_loss": epochs, "batches": len(paths), "epochs": spec.epochs}
    return model, {**history, "path": "workers", "workers": len(placed)}
