"""SGD on the Dask workers (parameter mixing) against SGD in one process, same batches.

    .venv/bin/python bench/sgd.py                   # 4M rows, 1, 2 and 4 workers (~4 min)

The window: P9's batches (``p9.write_batches``) with ``--features`` columns. The baseline is
``train.train_sgd`` in this process, batch by batch; then ``train.train_sgd_on_dask`` on local
clusters of 1, 2 and 4 single-threaded workers. Prints rows per second (window rows x epochs
/ seconds), each ÷ the one process, ROC AUC on the same held-out rows, and what the cost model
predicts with a core per worker: one worker's rate x workers x the per-worker efficiency two
workers kept (on this machine, workers beyond its cores only share them).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from p9 import wide_pipeline, write_batches
from scale import save


def _auc(model: Any, stats: Any, held_out: pd.DataFrame) -> float:
    from nightshift.data.features import labels
    from nightshift.evaluation.evaluate import classification_metrics
    from nightshift.models.kinds import load_scorer

    loaded = load_scorer("sgd", model.payload, stats, "binary_classification")
    return classification_metrics(labels(held_out), loaded.predict(held_out), 0.5)["roc_auc"]


def _on_workers(workers: int, pipeline: Any, paths: list[str], stats: Any) -> tuple[Any, float]:
    from nightshift.models.cluster import ClusterPlan, dask_client
    from nightshift.models.train import train_sgd_on_dask

    # Memory limits "auto": the machine shared out, so the workers together keep as many batch
    # matrices between epochs as the one process does (an eighth of the memory).
    plan = ClusterPlan("local", "SGD bench", workers=workers, memory_limit="auto")
    with dask_client(plan) as client:
        client.run(lambda: __import__("sklearn.linear_model"))  # imports are not learning
        started = time.perf_counter()
        model = train_sgd_on_dask(client, pipeline, pipeline.models[0], paths, stats)
        return model, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    from nightshift.data.features import fit_stats
    from nightshift.models.kinds.sgd import SGDModel
    from nightshift.models.train import train_sgd

    pipeline = wide_pipeline(args.features, 20_000, 1)
    spec = SGDModel(kind="sgd", name="sgd", epochs=args.epochs)
    pipeline = pipeline.model_copy(update={"models": [spec]})
    folder = Path(tempfile.mkdtemp(prefix="nightshift-bench-sgd-"))
    try:
        held_out = pd.concat(
            pd.read_parquet(p) for p in write_batches(folder / "held", pipeline, 200_000, 99)
        )
        paths = write_batches(folder / "window", pipeline, args.rows, 3)
        stats = fit_stats(held_out, pipeline)
        started = time.perf_counter()
        alone = train_sgd(pipeline, spec, paths, stats)  # as a night runs it: matrices kept
        base_s = time.perf_counter() - started
        base = {"seconds": round(base_s, 1), "roc_auc": _auc(alone, stats, held_out)}
        base["rows_per_s"] = round(args.rows * args.epochs / base_s)
        print(f"SGD one process: {base}", flush=True)
        runs = []
        for workers in args.workers:
            model, seconds = _on_workers(workers, pipeline, paths, stats)
            rate = args.rows * args.epochs / seconds
            run = {
                "workers": workers,
                "seconds": round(seconds, 1),
                "rows_per_s": round(rate),
                "over_one_process": round(rate / base["rows_per_s"], 2),
                "roc_auc": _auc(model, stats, held_out),
            }
            run["auc_minus_one_process"] = round(run["roc_auc"] - base["roc_auc"], 4)
            print(f"SGD {workers} workers: {run}", flush=True)
            runs.append(run)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    one = next((r for r in runs if r["workers"] == 1), runs[0])
    two = next((r for r in runs if r["workers"] == 2), one)
    cores = len(os.sched_getaffinity(0))
    # Per worker, what two workers kept of one's rate (the averaging, the shared machine).
    efficiency = two["rows_per_s"] / (two["workers"] * one["rows_per_s"])
    predicted = {w: round(one["rows_per_s"] * w * efficiency) for w in (1, 2, 4, 8, 16)}
    save(
        "sgd",
        {
            "target": "throughput with 1, 2, 4 workers; AUC within 0.005 of one process",
            **vars(args),
            "cores": cores,
            "one_process": base,
            "runs": runs,
            "efficiency_per_worker": round(efficiency, 2),
            # A core (or machine) per worker; here the workers beyond the cores only share them.
            "predicted_rows_per_s": predicted,
        },
    )


if __name__ == "__main__":
    main()
