"""P5: XGBoost on one GPU against the same training on all CPU cores, through nightshift's code.

The generator's days are ingested and preprocessed by nightshift's own stages on a local Dask
cluster; then ``nightshift.models.train.train_xgboost`` fits the same processed batches twice:
on the cluster nightshift picks for a GPU machine (dask-cuda's ``LocalCUDACluster``,
``device="cuda"``) and on its CPU cluster (one single-threaded worker per core, ``device="cpu"``,
``hist``). Both models score a held-out day. One JSON holds rows, seconds, ROC AUC per device
and the GPU's name; P5 = CPU seconds / GPU seconds.

    python bench/gpu/p5.py --rows 10000000 --out p5.json      # on a GPU machine (bench/gpu/run.sh)
    python bench/gpu/p5.py --cpu-only --rows 20000 --out x.json  # anywhere (tests/e2e)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger("p5")

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "include" / "pipelines" / "retail_conversion.yaml"
FIRST_DAY = dt.date(2026, 9, 1)


@dataclass(frozen=True)
class Fit:
    """One device's training: the cluster it ran on, how long it took, how well it scores."""

    device: str
    cluster: str
    workers: int
    seconds: float
    roc_auc: float
    rounds: int


def pipeline_for(rows: int, days: int, rounds: int, lake: Path, memory: str = "auto") -> Any:
    """Return the shipped example pipeline with only XGBoost, ``rows`` over ``days`` days,
    holding the window as ``memory`` says (``training.memory``)."""
    from nightshift.config.pipeline import parse_pipeline

    data = yaml.safe_load(EXAMPLE.read_text())
    data["source"]["rows_per_day"] = max(1, rows // days)
    data["training"].update({"window_days": days, "batch_size": 500_000, "memory": memory})
    data["models"] = [m for m in data["models"] if m["kind"] == "xgboost"]
    data["models"][0]["num_boost_round"] = rounds
    data["output"] = {"lake": str(lake), "reports": str(lake / "reports"), "mlflow": str(lake)}
    return parse_pipeline(data, EXAMPLE.name)


def prepare(pipeline: Any, days: int) -> tuple[list[str], list[str], float]:
    """Ingest and preprocess the window and the held-out day with nightshift's stages.

    Return the window's processed batch paths, the held-out day's, and the seconds it took.
    """
    from nightshift.data.ingest import ingest_date
    from nightshift.data.preprocess import preprocess_date
    from nightshift.models.cluster import ClusterPlan, dask_client
    from nightshift.storage.lake import lake_for

    started = time.perf_counter()
    lake = lake_for(pipeline)
    plan = ClusterPlan("local", "prepare", workers=os.cpu_count() or 1)
    processed = []
    with dask_client(plan) as client:
        for offset in range(days + 1):
            raw = ingest_date(pipeline, lake, FIRST_DAY + dt.timedelta(days=offset))
            processed.append(preprocess_date(client, pipeline, lake, raw).paths())
    window = [path for day in processed[:-1] for path in day]
    return window, processed[-1], time.perf_counter() - started


def fit(pipeline: Any, plan: Any, window: list[str], held_out: list[str]) -> Fit:
    """Train on ``window`` on the cluster of ``plan``, with the device its workers have."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from nightshift.config.pipeline import LABEL
    from nightshift.data.features import fit_stats
    from nightshift.data.preprocess import processed_frame
    from nightshift.models.cluster import accelerators, dask_client
    from nightshift.models.kinds import load_scorer
    from nightshift.models.train import train_xgboost

    with dask_client(plan) as client:
        device = accelerators(client).xgboost_device
        log.info("%s: %d worker(s), XGBoost on %s", plan.mode, len(client.nthreads()), device)
        stats = fit_stats(processed_frame(window, pipeline), pipeline)
        started = time.perf_counter()
        model = train_xgboost(client, pipeline, pipeline.models[0], window, stats, device)
        seconds = time.perf_counter() - started
    test = pd.concat([pd.read_parquet(path) for path in held_out], ignore_index=True)
    loaded = load_scorer("xgboost", model.payload, stats, pipeline.schema_.task, "model.ubj")
    auc = float(roc_auc_score(test[LABEL], loaded.predict(test)))
    rounds = len(model.history["train"])
    return Fit(device, plan.mode, plan.workers, round(seconds, 3), round(auc, 5), rounds)


def gpu_name() -> str | None:
    """Return the first GPU's name as nvidia-smi reports it, or None without a driver."""
    try:
        listed = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return listed.stdout.strip().splitlines()[0] if listed.stdout.strip() else None


def run(rows: int, days: int, rounds: int, cpu_only: bool, memory: str = "auto") -> dict[str, Any]:
    """Prepare the data once, train on each device, and return the result record."""
    from nightshift.models.cluster import ClusterPlan, current_plan
    from nightshift.storage.lake import PROCESSED, lake_for

    with tempfile.TemporaryDirectory(prefix="nightshift-p5-") as folder:
        pipeline = pipeline_for(rows, days, rounds, Path(folder), memory)
        window, held_out, prepare_seconds = prepare(pipeline, days)
        lake = lake_for(pipeline)
        trained_rows = sum(
            sum(lake.read(PROCESSED, FIRST_DAY + dt.timedelta(days=d)).meta["rows_per_batch"])
            for d in range(days)
        )
        fits: list[Fit] = []
        if not cpu_only:
            plan = current_plan()  # what a nightly task picks on this machine
            if plan.mode != "local-cuda":
                raise SystemExit(f"no GPU cluster on this machine: {plan.reason}")
            fits.append(fit(pipeline, plan, window, held_out))
        cores = os.cpu_count() or 1
        # nightshift's CPU cluster, its workers seeing the machine's GPU as a nightly task's
        # would: they share it, so none has one of its own and XGBoost must train on the CPU.
        cpu = ClusterPlan("local", f"{cores} cores", workers=cores)
        fits.append(fit(pipeline, cpu, window, held_out))
        if fits[-1].device != "cpu":
            raise SystemExit(f"CPU workers sharing a GPU were given {fits[-1].device}")
    by_device = {f.device: f for f in fits}
    ratio = None
    if "cuda" in by_device:
        ratio = round(by_device["cpu"].seconds / by_device["cuda"].seconds, 2)
    return {
        "rows": trained_rows,
        "window_days": days,
        "rounds": rounds,
        "memory": memory,
        "prepare_seconds": round(prepare_seconds, 1),
        "fits": [asdict(f) for f in fits],
        "p5_cpu_over_gpu": ratio,
        "gpu": gpu_name(),
        "cpu_cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": _versions(),
    }


def _versions() -> dict[str, str]:
    """The versions that ran: XGBoost's module, whichever distribution brought it (xgboost,
    the CPU-only xgboost-cpu, or xgboost-cu13), and Dask's and pandas' distributions."""
    from importlib.metadata import PackageNotFoundError, version

    import xgboost

    found = {"xgboost": str(xgboost.__version__)}
    for name in ("xgboost", "xgboost-cpu", "xgboost-cu13"):
        try:
            found["xgboost_distribution"] = f"{name}=={version(name)}"
            break
        except PackageNotFoundError:
            continue
    for name in ("dask", "distributed", "dask-cuda", "pandas"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="training rows (about)")
    parser.add_argument("--days", type=int, default=5, help="days in the training window")
    parser.add_argument("--rounds", type=int, default=150, help="boosting rounds")
    parser.add_argument("--cpu-only", action="store_true", help="no GPU: train on CPU only")
    parser.add_argument(
        "--memory",
        choices=["auto", "in_memory", "quantile", "external"],
        default="auto",
        help="training.memory: how each worker holds the window (external: on a GPU, the host "
        "memory is the external memory; needs cuDF on the workers)",
    )
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write")
    args = parser.parse_args(argv)
    # nightshift's own lines: the cluster mode and workers chosen, the compute path.
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    for noisy in ("distributed", "dask_cuda", "xgboost"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    result = run(args.rows, args.days, args.rounds, args.cpu_only, args.memory)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
