"""P9: XGBoost on a training window ten times the Dask workers' memory budget.

    .venv/bin/python bench/p9.py                    # both parts (about 15 min on 2 cores)
    .venv/bin/python bench/p9.py --multiple 3       # a smaller big window

Two parts, in one run, on local Dask clusters that nightshift starts (``dask_client``) with
the memory limit P3 uses (``ClusterPlan.memory_limit``, as ``NIGHTSHIFT_DASK_MEMORY_LIMIT``):

1. *Where everything fits* (a window of ``--small-rows``, workers of ``--small-worker-mib``):
   ``train_xgboost`` with ``training.memory`` ``in_memory``, ``quantile`` and ``external`` on
   the same batches; ROC AUC on the same held-out batches, seconds, peak RSS per worker.
2. *The big window*: batches whose training frame (pandas, as ``in_memory`` holds it) is
   ``--multiple`` times the workers' total memory limit, ``training.memory: auto``: completes?
   which mode auto chose, peak RSS per worker ÷ its limit, worker restarts.

The data is wide (``--features`` numeric columns): XGBoost's external memory pages the features
only; labels, gradients and predictions stay in memory (about ``ROW_BYTES`` a row), so a window
many times the memory needs rows wider than that floor. The batches are the processed files
training reads; each is written once and read by the workers as a night's would be.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from scale import save  # noqa: E402  (bench/ is not a package)


def wide_pipeline(features: int, batch_rows: int, rounds: int) -> Any:
    """The retail pipeline's shape with ``features`` float columns and nothing else."""
    from nightshift.config.pipeline import parse_pipeline

    data: dict[str, Any] = yaml.safe_load(
        (REPO / "include/pipelines/retail_conversion.yaml").read_text()
    )
    names = [f"f{i:03d}" for i in range(features)]
    data["name"] = "bench_wide"
    data["schema"]["columns"] = [
        {"name": "session_id", "type": "int", "nullable": False},
        {"name": "event_time", "type": "timestamp", "nullable": False},
        *({"name": n, "type": "float"} for n in names),
        {"name": "converted", "type": "int", "nullable": False},
    ]
    data["schema"]["label"] = "converted"
    data["features"] = {"numeric": names, "categorical": [], "time": []}
    data["evaluation"].pop("segment", None)
    data["training"]["batch_size"] = batch_rows
    data["models"] = [{"kind": "xgboost", "num_boost_round": rounds, "params": {"max_depth": 6}}]
    return parse_pipeline(data, "bench_wide.yaml")


def write_batches(folder: Path, pipeline: Any, rows: int, seed: int) -> list[str]:
    """Write ``rows`` processed rows as batch files: features N(0, 1) (float32, as Parquet
    keeps them small), a label from a logistic model with an interaction; one batch in
    memory at a time."""
    names = list(pipeline.features.numeric)
    batch = pipeline.training.batch_size
    weights = np.random.default_rng(0).normal(scale=0.6, size=min(len(names), 12))
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index, start in enumerate(range(0, rows, batch)):
        n = min(batch, rows - start)
        x = rng.standard_normal((n, len(names)), dtype=np.float32)
        logit = x[:, : len(weights)] @ weights + 0.8 * x[:, 0] * x[:, 1] - 1.0
        label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float64)
        columns = {"session_id": np.arange(start, start + n, dtype=np.int64)}
        columns.update({name: x[:, i] for i, name in enumerate(names)})
        table = pa.table({**columns, "label": label})
        path = folder / f"batch-{index:05d}.parquet"
        pq.write_table(table, path)
        paths.append(str(path))
    return paths


class PeakRSS:
    """The peak RSS of each Dask worker process, sampled ten times a second."""

    def __init__(self, pids: dict[str, int]) -> None:
        import psutil

        self.procs = {address: psutil.Process(pid) for address, pid in pids.items()}
        self.peak = dict.fromkeys(pids, 0)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

        while not self.stop.is_set():
            for address, proc in self.procs.items():
                with contextlib.suppress(psutil.NoSuchProcess):
                    self.peak[address] = max(self.peak[address], proc.memory_info().rss)
            time.sleep(0.1)

    def __enter__(self) -> PeakRSS:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def train_once(
    pipeline: Any,
    memory: str,
    window: list[str],
    stats: Any,
    worker_mib: int,
    workers: int,
    held_out: pd.DataFrame,
    sample: pd.DataFrame,
) -> dict[str, Any]:
    """Train on a fresh local cluster of ``workers`` x ``worker_mib``: seconds, AUC, peaks."""
    from nightshift.data.features import labels
    from nightshift.evaluation.evaluate import classification_metrics
    from nightshift.models.cluster import ClusterPlan, dask_client
    from nightshift.models.kinds import load_scorer
    from nightshift.models.train import train_xgboost

    training = pipeline.training.model_copy(update={"memory": memory})
    chosen = pipeline.model_copy(update={"training": training})
    plan = ClusterPlan("local", "P9", workers=workers, memory_limit=f"{worker_mib}MiB")
    model, error = None, None
    with dask_client(plan) as client:
        pids = client.run(os.getpid)
        idle = client.run(lambda: __import__("psutil").Process().memory_info().rss)
        with PeakRSS(pids) as rss:
            started = time.perf_counter()
            try:  # reported, not hidden: P9 asks whether it completes
                model = train_xgboost(
                    client, chosen, chosen.models[0], window, stats, "cpu", sample
                )
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            seconds = time.perf_counter() - started
        after = client.run(os.getpid)
    auc = None
    if model is not None:
        loaded = load_scorer("xgboost", model.payload, stats, "binary_classification")
        scores = loaded.predict(held_out)
        auc = classification_metrics(labels(held_out), scores, 0.5)["roc_auc"]
    peaks = sorted(rss.peak.values())
    result = {
        "memory": memory,
        "chosen": None if model is None else model.history["memory"]["mode"],
        "estimates_mib": None
        if model is None
        else {m: round(b / 2**20) for m, b in model.history["memory"]["estimates"].items()},
        "seconds": round(seconds, 1),
        "roc_auc": auc,
        "idle_rss_mib": sorted(round(r / 2**20) for r in idle.values()),
        "peak_rss_mib": [round(p / 2**20) for p in peaks],
        "worker_limit_mib": worker_mib,
        "peak_over_limit": round(peaks[-1] / (worker_mib * 2**20), 3),
        "worker_restarts": len(set(after.values()) - set(pids.values())),
        "error": error,
    }
    print(f"P9 {memory}: {result}", flush=True)
    return result


def window_sample(paths: list[str], rows: int = 200_000) -> pd.DataFrame:
    """About ``rows`` rows from 20 batches spread over the window, as ``fit_features`` draws
    its window sample (the rows the training curve is measured on and the bins cut from)."""
    chosen = paths[:: max(len(paths) // 20, 1)][:20]
    each = -(-rows // len(chosen))
    return pd.concat(
        pd.read_parquet(p).sample(frac=1.0, random_state=i).head(each) for i, p in enumerate(chosen)
    )


def window_gib(paths: list[str], pipeline: Any, stats: Any) -> tuple[int, float]:
    """The window's rows, and its training frame's size in memory (as ``in_memory`` holds it)."""
    from nightshift.models.xgboost_batches import measure_window

    size = measure_window(paths, pipeline, stats)
    return size.rows, size.rows * size.frame_row_bytes / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--features", type=int, default=200)
    parser.add_argument("--batch-rows", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--small-rows", type=int, default=600_000)
    parser.add_argument("--small-worker-mib", type=int, default=6144)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--worker-mib", type=int, default=1024, help="the big window's workers")
    parser.add_argument("--multiple", type=float, default=10.0, help="big window / total limit")
    parser.add_argument("--big-rounds", type=int, default=10)
    args = parser.parse_args()
    from nightshift.data.features import fit_stats

    folder = Path(tempfile.mkdtemp(prefix="nightshift-bench-p9-"))
    try:
        pipeline = wide_pipeline(args.features, args.batch_rows, args.rounds)
        held_out = pd.concat(
            pd.read_parquet(p) for p in write_batches(folder / "held_out", pipeline, 200_000, 99)
        )
        small = write_batches(folder / "small", pipeline, args.small_rows, 1)
        stats = fit_stats(held_out, pipeline)  # numerics pass to XGBoost as they are
        sample = window_sample(small)
        runs = [
            train_once(pipeline, m, small, stats, args.small_worker_mib, args.workers, *tests)
            for m in ("in_memory", "quantile", "external")
            for tests in [(held_out, sample)]
        ]
        result = {"small": _compare(runs, *window_gib(small, pipeline, stats))}
        shutil.rmtree(folder / "small")
        result["big"] = _big(args, folder, stats, held_out)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    save("p9", {"target": TARGET, **vars(args), **result})


TARGET = (
    "window 10x the workers' memory limit completes, peak RSS per worker <= 1.2x its limit, "
    "0 restarts; AUC within 0.002 of in-memory where both fit; time / in-memory (goal <= 1.5)"
)


def _compare(runs: list[dict[str, Any]], rows: int, gib: float) -> dict[str, Any]:
    base = runs[0]
    for run in runs[1:]:
        run["time_over_in_memory"] = round(run["seconds"] / base["seconds"], 2)
        run["auc_minus_in_memory"] = round(run["roc_auc"] - base["roc_auc"], 4)
    return {"rows": rows, "window_gib": round(gib, 2), "runs": runs}


def _big(args: argparse.Namespace, folder: Path, stats: Any, held_out: pd.DataFrame) -> dict:
    pipeline = wide_pipeline(args.features, args.batch_rows, args.big_rounds)
    limit = args.workers * args.worker_mib * 2**20
    per_row = (args.features + 1) * 8  # the training frame: float64 features and label
    rows = int(args.multiple * limit / per_row)
    started = time.perf_counter()
    big = write_batches(folder / "big", pipeline, rows, 2)
    print(f"P9 big window: {rows:,} rows written in {time.perf_counter() - started:.0f} s")
    rows, gib = window_gib(big, pipeline, stats)
    sample = window_sample(big)
    run = train_once(pipeline, "auto", big, stats, args.worker_mib, args.workers, held_out, sample)
    return {
        "rows": rows,
        "window_gib": round(gib, 2),
        "limit_gib": round(limit / 2**30, 2),
        "window_over_limit": round(gib * 2**30 / limit, 2),
        "run": run,
    }


if __name__ == "__main__":
    main()
