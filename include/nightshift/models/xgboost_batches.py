"""XGBoost from the window's batches, in bounded memory on each Dask worker.

``xgboost.dask`` trains on a ``DaskDMatrix``: every partition of the window computed onto the
workers as floats, so the window must fit in their memory. Here each worker instead streams
its share of the processed batch files through an ``xgboost.DataIter``, one batch at a time,
into a ``QuantileDMatrix`` (the window quantised: a byte per value) or, where even that does
not fit, an ``ExtMemQuantileDMatrix`` (quantised pages cached on the worker's disk, fetched
on demand; on a GPU the host memory is the external memory). The workers train under
XGBoost's collective as ``xgboost.dask`` does: its tracker on the Dask scheduler, its
``CommunicatorContext`` naming each rank after its worker, its collective timeout.

From XGBoost's external-memory tutorial: only the features are paged; labels, gradients,
predictions and row indices stay in memory (:data:`ROW_BYTES`), so memory per row has a floor;
the hist tree method with depth-wise growth reads the pages once per tree level; and the
``QuantileDMatrix`` is an order of magnitude faster where the quantised window fits. From its
distributed external-memory example: one training task per worker inside the communicator,
each worker's iterator over its own files.

Measured here (200 float features, one thread): XGBoost's own sketch of an iterator's data
held 0.4-0.7 GB whatever the rows, and took a pass of its own over them. Where ``fit_features``
drew its window sample, the bins are cut from that sample instead (:func:`cut_rows`, the
``ref`` of the matrix, the same on every rank): one pass fewer over the window, and the
sketch's memory bounded by the sample's size.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nightshift.config.pipeline import LABEL, Pipeline
from nightshift.data.features import FeatureStats, to_tree_frame

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

# Bytes per row XGBoost keeps in memory whatever the matrix: labels, gradients, predictions,
# row partitions (measured: 47-53 bytes a row after 10 rounds, 1-2M rows, external memory).
ROW_BYTES = 56
# A worker's bytes before any row: XGBoost, pandas and pyarrow loaded (213 MB measured), its
# histogram buffers, the bins' cuts.
FIXED_BYTES = 384 * 2**20
# The bins are cut from at most this many values of the window sample (40 MB as float32).
CUT_SAMPLE_VALUES = 10_000_000
# Of a worker's memory limit, what training may plan to use, less what the worker already
# holds: under Dask's pause threshold (0.8), far under the nanny's kill at 0.95.
PLAN_FRACTION = 0.7
MODES = ("in_memory", "quantile", "external")


@dataclass(frozen=True)
class WindowSize:
    """The window as training will read it, measured from the files."""

    rows: int  # after ``training.sample_fraction``
    batches: int
    largest_batch_rows: int
    features: int
    frame_row_bytes: float  # one row of the pandas training frame (``to_tree_frame``)

    def per_worker(self, workers: int) -> dict[str, int]:
        """Each mode's planned peak bytes on one of ``workers`` workers."""
        rows = -(-self.rows // max(workers, 1))
        batch = int(self.largest_batch_rows * self.frame_row_bytes)
        need = {
            # The frame, XGBoost's float32 copy of it and its quantised index.
            "in_memory": rows * (self.frame_row_bytes + 5 * self.features + ROW_BYTES),
            # The quantised index, and a batch being read and handed over.
            "quantile": rows * (self.features + ROW_BYTES) + 2 * batch,
            # Only the per-row floor: the pages live on disk; a couple in memory.
            "external": rows * ROW_BYTES + 4 * batch,
        }
        return {mode: int(bytes_) + FIXED_BYTES for mode, bytes_ in need.items()}


@dataclass(frozen=True)
class MemoryPlan:
    """How XGBoost holds the window tonight, and why: the history and the log say it."""

    mode: str
    setting: str
    reason: str
    workers: int
    worker_budget: int  # the smallest worker's plannable bytes
    estimates: dict[str, int]
    window_rows: int

    def as_record(self) -> dict[str, Any]:
        """The plan as the model's ``history.json`` keeps it: what the window decides, not the
        workers' memory of the moment (in the log), so the same data gives the same bytes."""
        kept = ("mode", "setting", "workers", "estimates", "window_rows")
        return {name: value for name, value in asdict(self).items() if name in kept}


def measure_window(paths: list[str], pipeline: Pipeline, stats: FeatureStats) -> WindowSize:
    """Measure the window: rows as preprocess recorded them, bytes per row from its first
    batch."""
    from nightshift.data.preprocess import batch_rows, training_batch

    fraction = pipeline.training.sample_fraction
    counts = [int(np.ceil(rows * fraction)) for rows in batch_rows(paths)]
    first = to_tree_frame(training_batch(paths[0], pipeline), stats)
    per_row = float(first.memory_usage(deep=True).sum()) / max(len(first), 1) + 8  # + label
    return WindowSize(sum(counts), len(paths), max(counts), first.shape[1], per_row)


def worker_budget(client: Client) -> int:
    """The smallest worker's bytes training may plan on: :data:`PLAN_FRACTION` of its memory
    limit (this machine's memory where it has none), less what it holds now."""
    from distributed.system import MEMORY_LIMIT

    budgets = []
    for info in client.scheduler_info(n_workers=-1)["workers"].values():
        limit = info.get("memory_limit") or MEMORY_LIMIT
        held = info.get("metrics", {}).get("memory", 0)
        budgets.append(int(limit * PLAN_FRACTION) - int(held))
    return max(min(budgets), 0)


def choose_memory(setting: str, size: WindowSize, workers: int, budget: int) -> MemoryPlan:
    """Return the mode ``setting`` names, or for ``auto`` the first of :data:`MODES` whose
    planned peak per worker fits ``budget`` (the last where none does)."""
    estimates = size.per_worker(workers)
    if setting != "auto":
        mode, reason = setting, f"training.memory: {setting}"
    else:
        fits = [m for m in MODES if estimates[m] <= budget]
        mode = fits[0] if fits else MODES[-1]
        reason = (
            f"auto: {mode} is the first that fits {budget / 2**20:,.0f} MiB per worker "
            f"(planned {estimates[mode] / 2**20:,.0f} MiB)"
            if fits
            else f"auto: none fits {budget / 2**20:,.0f} MiB per worker; external needs the least"
        )
    return MemoryPlan(mode, setting, reason, workers, budget, estimates, size.rows)


def plan_memory(
    client: Client, pipeline: Pipeline, paths: list[str], stats: FeatureStats
) -> MemoryPlan:
    """Measure the window and the workers, choose, and log the choice."""
    size = measure_window(paths, pipeline, stats)
    workers = min(len(client.scheduler_info(n_workers=-1)["workers"]), len(paths))
    plan = choose_memory(pipeline.training.memory, size, workers, worker_budget(client))
    log.info(
        "%s: XGBoost holds the window %s (%s); %d rows on %d workers, %s MiB planned per worker",
        pipeline.name,
        plan.mode,
        plan.reason,
        size.rows,
        workers,
        {m: round(b / 2**20) for m, b in plan.estimates.items()},
    )
    return plan


class WindowBatches:
    """A worker's share of the window, one processed batch at a time, as XGBoost's
    ``DataIter`` (built by :func:`_data_iter`, so XGBoost loads only where training runs)."""

    def __init__(
        self, paths: list[str], pipeline: Pipeline, stats: FeatureStats, on_device: bool
    ) -> None:
        self.paths, self.pipeline, self.stats, self.on_device = paths, pipeline, stats, on_device
        self.index = 0

    def batch(self) -> tuple[Any, Any]:
        """Return the current batch's features and labels, as the device wants them."""
        from nightshift.data.preprocess import training_batch

        frame = training_batch(self.paths[self.index], self.pipeline)
        x, y = to_tree_frame(frame, self.stats), frame[LABEL].to_numpy()
        if self.on_device:
            cudf = device_frames()
            return cudf.from_pandas(x), cudf.Series(y)
        return x, y


def device_frames() -> Any:
    """cuDF, which GPU external memory needs: XGBoost takes its batches on the device there
    (its tutorial), and the window's categories need a frame, not an array."""
    try:
        import cudf
    except ImportError as exc:
        raise RuntimeError(
            "training.memory: external on GPU workers needs cuDF on the workers (XGBoost's GPU "
            "external memory reads its batches from the device); install cudf there, or set "
            "training.memory: quantile (host batches, quantised on the GPU)"
        ) from exc
    return cudf


def _data_iter(batches: WindowBatches, cache_prefix: str | None) -> Any:
    import xgboost as xgb

    class Iterator(xgb.DataIter):
        def __init__(self) -> None:
            # release_data: a batch is dropped once XGBoost has taken what it needs of it.
            super().__init__(cache_prefix=cache_prefix, release_data=True)

        def next(self, input_data: Callable[..., None]) -> bool:
            if batches.index == len(batches.paths):
                return False
            x, y = batches.batch()
            input_data(data=x, label=y)
            batches.index += 1
            return True

        def reset(self) -> None:
            batches.index = 0

    return Iterator()


@dataclass(frozen=True)
class WorkerTask:
    """What one worker's training task needs: its files, and everything the ranks share."""

    address: str
    paths: list[str]
    pipeline: Pipeline
    stats: FeatureStats
    params: dict[str, Any]
    rounds: int
    mode: str
    coll_args: dict[str, Any] = field(default_factory=dict)  # the tracker's, set per run
    callbacks: list[Any] = field(default_factory=list)
    cuts: pd.DataFrame | None = None  # rows the bins are cut from (:func:`cut_rows`); None: sketch


def cut_rows(sample: pd.DataFrame, stats: FeatureStats, seed: int) -> pd.DataFrame:
    """Return the features of at most :data:`CUT_SAMPLE_VALUES` values of ``sample`` (tree
    features), and a row for every category of each categorical feature (its other features
    missing): bins cut from these know every category a batch can hold."""
    features = sample.drop(columns=[LABEL], errors="ignore")
    rows = max(CUT_SAMPLE_VALUES // max(features.shape[1], 1), 1000)
    if len(features) > rows:
        features = features.sample(n=rows, random_state=seed).sort_index()
    categories = [features[name].cat.categories for name in stats.categorical]
    width = max((len(c) for c in categories), default=0)
    if not width:
        return features.reset_index(drop=True)
    every = pd.DataFrame(np.nan, index=range(width), columns=features.columns)
    for name, values in zip(stats.categorical, categories, strict=True):
        codes = np.minimum(np.arange(width), len(values) - 1)
        every[name] = pd.Categorical.from_codes(codes, categories=values)
    every = every.astype(features.dtypes.to_dict())
    return pd.concat([features, every], ignore_index=True)


def _reference(cuts: pd.DataFrame | None, on_device: bool, options: dict[str, Any]) -> Any:
    """The matrix whose bins the window's takes: the same rows, so the same cuts, on every
    rank (built outside the collective: nothing to agree on)."""
    import xgboost as xgb

    if cuts is None:
        return None
    if on_device:
        cuts = device_frames().from_pandas(cuts)
    return xgb.QuantileDMatrix(cuts, **options)


def _on_device(task: WorkerTask) -> bool:
    """Whether the batches go to XGBoost on the GPU: for external memory there (the in-memory
    ``QuantileDMatrix`` takes host batches and quantises them on the device)."""
    return task.params["device"] != "cpu" and task.mode == "external"


def _matrix(task: WorkerTask, cache_prefix: str | None, reference: Any, threads: int) -> Any:
    import xgboost as xgb

    batches = WindowBatches(task.paths, task.pipeline, task.stats, _on_device(task))
    options = {
        "max_bin": task.params.get("max_bin", 256),
        "enable_categorical": True,
        "nthread": threads,
        "ref": reference,
    }
    if task.mode == "external":
        return xgb.ExtMemQuantileDMatrix(_data_iter(batches, cache_prefix), **options)
    return xgb.QuantileDMatrix(_data_iter(batches, None), **options)


def train_on_worker(task: WorkerTask, cuts: pd.DataFrame | None = None) -> bytes:
    """Train this worker's rank under XGBoost's collective, its bins cut from ``cuts`` (sent
    once to every worker, not once a task); return the model (every rank holds the same
    one). Runs as a Dask task on ``task.address``."""
    import xgboost as xgb
    from distributed import get_worker
    from xgboost.dask import CommunicatorContext

    worker = get_worker()
    if worker.address != task.address:  # Dask moved the task: its worker was lost
        raise RuntimeError(
            f"the XGBoost rank of {task.address} reached {worker.address}: a worker was lost "
            "mid-training; the task fails and is retried on the workers there are"
        )
    threads = worker.state.nthreads
    cache = os.path.join(worker.local_directory, f"xgboost-extmem-{uuid.uuid4().hex}")
    dtrain = None
    options = {"max_bin": task.params.get("max_bin", 256), "enable_categorical": True}
    reference = _reference(cuts, _on_device(task), {**options, "nthread": threads})
    try:
        with CommunicatorContext(**task.coll_args), xgb.config_context(nthread=threads):
            external = cache if task.mode == "external" else None
            dtrain = _matrix(task, external, reference, threads)
            del reference  # its cuts are the matrix's now
            booster = xgb.train(
                {**task.params, "nthread": threads},
                dtrain,
                num_boost_round=task.rounds,
                callbacks=task.callbacks,
                verbose_eval=False,
            )
    finally:
        del dtrain  # XGBoost removes its cache files with the matrix; a failure may leave some
        for path in glob.glob(f"{cache}*"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
    return bytes(booster.save_raw("ubj"))


def train_streamed(client: Client, tasks: list[WorkerTask], timeout: int) -> bytes:
    """Run ``tasks`` (one per worker, ranks in order) under one XGBoost tracker; return the
    model. The first failure fails the whole (the others would wait on the lost rank until
    ``timeout``); a task whose worker was lost is not run again elsewhere."""
    from distributed import MultiLock, as_completed
    from xgboost.collective import Config
    from xgboost.dask import _get_rabit_args  # the tracker xgboost.dask.train starts

    coll_cfg = Config(timeout=timeout, tracker_timeout=timeout)
    coll_args = client.sync(_get_rabit_args, client, len(tasks), None, coll_cfg)
    workers = [t.address for t in tasks]
    cuts = tasks[0].cuts
    if cuts is not None:
        cuts = client.scatter(cuts, workers=workers, broadcast=True, hash=False)
    # One XGBoost training at a time per worker, as xgboost.dask.train takes it.
    with MultiLock(workers, client):
        futures = [
            client.submit(
                train_on_worker,
                replace(task, coll_args=coll_args, cuts=None),
                cuts,
                key=f"xgboost-train-rank-{i}-{uuid.uuid4().hex}",
                workers=[task.address],
                allow_other_workers=True,  # a lost worker's task errs at once, never hangs
                pure=False,
            )
            for i, task in enumerate(tasks)
        ]
        for future in as_completed(futures):
            if future.status == "error":
                error = future.exception()  # the rank's own error, before cancelling
                client.cancel([f for f in futures if f is not future])
                raise error.with_traceback(future.traceback())
        return futures[0].result()
