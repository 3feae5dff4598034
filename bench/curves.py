"""Cost curves: how a night's wall time and peak memory grow with rows per day and with the
training window, and how many nights an hour a backfill gets through under the scheduler
against the same nights run in process one after the other.

    .venv/bin/python bench/curves.py                      # what `make bench` runs (long)
    .venv/bin/python bench/curves.py --rows 200000 1000000 --windows 7 --nights 0

Every night runs under the real scheduler, on its own fresh Airflow and lake; the window's
days are processed first (setup, not timed). Memory is the proportional set size (PSS) of
every process this one started (Airflow's services and task processes, the Dask scheduler
and workers), so the pages forked task processes share are counted once; it is sampled
twice a second. Writes bench/out/curves.json and the figures bench/curves-*.svg.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from scale import (  # noqa: E402
    DAY,
    _bench_home,
    _nightly_under_airflow,
    _process_window,
    _since,
    critical_path,
    save,
)

GROWTH_LIMIT = 1.15  # a stage whose cost grows by a power above this is "faster than linear"


class PeakMemory:
    """Samples the summed PSS of this process's descendants until closed; keeps the peak and
    the level when ``mark`` was called (the services idle, before the night starts)."""

    def __init__(self, every: float = 0.5) -> None:
        import psutil

        self._root = psutil.Process()
        self.peak = 0
        self.idle = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def now(self) -> int:
        """Return the summed PSS (bytes) of the descendants alive now."""
        import psutil

        total = 0
        for proc in self._root.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += proc.memory_full_info().pss
        return total

    def mark(self) -> None:
        """Record the current level as the idle one."""
        self.idle = self.now()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            self.peak = max(self.peak, self.now())

    def close(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join()


def night_point(rows: int, window: int) -> dict[str, Any]:
    """Measure one night of ``rows`` rows per day on a ``window``-day window."""
    from nightshift.config.pipeline import parse_pipeline

    home, data = _bench_home(f"nightshift-curve-{rows}-{window}-", rows, window)
    os.environ["NIGHTSHIFT_HOME"] = str(home / "project")
    _process_window(parse_pipeline(data, "bench_conversion.yaml"), rows, window)
    memory = PeakMemory()
    try:
        [night] = _nightly_under_airflow(home, on_trigger=memory.mark)
    finally:
        memory.close()
    wall = _since(night.run, night.run["end_date"])
    point = {
        "rows_per_day": rows,
        "window_days": window,
        "wall_s": round(wall, 1),
        "stages_s": night.bodies,
        # The CPU seconds of each task's own process: for the cluster stages only the
        # driver's part; for train_incremental, which computes in its process, its cost.
        "cpu_s": {task: r.get("cpu_seconds", 0.0) for task, r in night.results.items()},
        "peak_gib": round(memory.peak / 2**30, 2),
        "idle_gib": round(memory.idle / 2**30, 2),
        # SGD's batch matrices kept across epochs: capped at an eighth of memory, so left
        # out of what the model takes to grow with the window's rows.
        "kept_gib": round(night.results["train_incremental"]["kept_bytes"] / 2**30, 2),
    }
    print("curve point:", point, flush=True)
    return point


def backfill_rates(nights: int, rows: int, window: int) -> dict[str, Any]:
    """Nights per hour: a backfill of ``nights`` dates under the scheduler (Airflow's own
    ``backfill create``, as the README says) against the same nights run in process one after
    the other with ``run_nightly``, each on its own empty lake."""
    from nightshift.config.pipeline import parse_pipeline
    from nightshift.night.stages import run_nightly
    from nightshift.ops.local_airflow import fresh

    dates = [DAY - dt.timedelta(days=nights - n) for n in range(nights)]
    home, data = _bench_home("nightshift-curve-backfill-", rows, window)

    os.environ["NIGHTSHIFT_HOME"] = str(home / "in-process")
    pipeline = parse_pipeline(data, "bench_conversion.yaml")
    start = time.perf_counter()
    for day in dates:
        run_nightly(pipeline, day, run_id=f"curve-{day}")
    in_process = time.perf_counter() - start

    airflow = fresh(
        home / "airflow",
        extra_env={
            "NIGHTSHIFT_PIPELINES_DIR": str(home / "pipelines"),
            "NIGHTSHIFT_HOME": str(home / "scheduler"),
        },
    )
    dag_id = "nightshift_bench_conversion"
    try:
        airflow.start(services=("api-server", "scheduler", "dag-processor"), dask=True)
        airflow.wait_for_dag(dag_id)
        airflow.unpause(dag_id)
        airflow.wait_for_executor()  # start-up, not the backfill (see scale.py)
        start = time.perf_counter()
        airflow.backfill(dag_id, dates[0].isoformat(), dates[-1].isoformat())
        airflow.wait_for_backfills(dag_id, timeout=4 * 3600)
        runs = airflow.wait_for_runs(dag_id, nights, timeout=600)
        scheduler = time.perf_counter() - start
    finally:
        airflow.stop()
    failed = [r["dag_run_id"] for r in runs if r["state"] != "success"]
    result = {
        "nights": nights,
        "rows_per_day": rows,
        "window_days": window,
        "in_process_s": round(in_process, 1),
        "scheduler_s": round(scheduler, 1),
        "in_process_nights_per_hour": round(nights * 3600 / in_process, 1),
        "scheduler_nights_per_hour": round(nights * 3600 / scheduler, 1),
        "failed_runs": failed,
    }
    print("backfill:", result, flush=True)
    return result


# -- what the points say ----------------------------------------------------------------------

# The rows each stage's cost grows with: the run date's rows, or the whole window's.
WINDOW_STAGES = ("fit_features", "train_distributed", "train_incremental")
# Stages whose work Dask spreads over the workers; the others run in one task process.
CLUSTER_STAGES = ("preprocess", "fit_features", "train_distributed")
# Stages whose cost is the CPU seconds of their own task process, not their wall seconds: on
# a machine shared with the workers train_incremental runs at the lowest priority on the
# cores XGBoost leaves idle, so its wall seconds are mostly waiting.
OWN_CPU_STAGES = ("train_incremental",)


def driver_rows(stage: str, rows: int, window: int) -> float:
    """Return the rows ``stage``'s cost grows with."""
    return float(rows * window if stage in WINDOW_STAGES else rows)


def stage_cost(point: dict[str, Any], stage: str) -> float:
    """Return the seconds ``stage`` cost in the measured night ``point`` (see OWN_CPU_STAGES)."""
    if stage in OWN_CPU_STAGES and stage in point.get("cpu_s", {}):
        return float(point["cpu_s"][stage])
    return float(point["stages_s"][stage])


def series(points: list[dict[str, Any]], axis: str) -> list[dict[str, Any]]:
    """Return the points along ``axis`` (rows_per_day or window_days), in order: those that
    share the most common value of the other one."""
    other = "window_days" if axis == "rows_per_day" else "rows_per_day"
    base = max(points, key=lambda p: sum(q[other] == p[other] for q in points))[other]
    return sorted((p for p in points if p[other] == base), key=lambda p: p[axis])


def growth(points: list[dict[str, Any]], axis: str) -> dict[str, float]:
    """Return, per stage (its :func:`stage_cost`) and for the night, the power its time grows
    by between the two largest points along ``axis`` (1.0: linear); the smaller points carry
    start-up costs."""
    ordered = series(points, axis)[-2:]
    if len(ordered) < 2:
        return {}
    small, large = ordered
    scale = math.log(large[axis] / small[axis])
    costs = {
        stage: (stage_cost(small, stage), stage_cost(large, stage))
        for stage in large["stages_s"]
        if stage in small["stages_s"]
    }
    powers = {
        stage: round(math.log(after / before) / scale, 2)
        for stage, (before, after) in costs.items()
        if before > 0 and after > 0
    }
    powers["night"] = round(math.log(large["wall_s"] / small["wall_s"]) / scale, 2)
    return powers


def fit_costs(points: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Return each stage's fixed seconds and seconds per million driver rows (least squares
    with neither below zero, over the measured nights' :func:`stage_cost`), and the night's
    mean seconds outside the task bodies."""
    import numpy as np
    from scipy.optimize import nnls

    costs: dict[str, dict[str, float]] = {}
    for stage in points[0]["stages_s"]:
        x = np.array([driver_rows(stage, p["rows_per_day"], p["window_days"]) for p in points])
        y = np.array([stage_cost(p, stage) for p in points])
        (fixed, per_million), _ = nnls(np.column_stack([np.ones_like(x), x / 1e6]), y)
        costs[stage] = {"fixed_s": round(float(fixed), 2)}
        costs[stage]["per_million_rows_s"] = round(float(per_million), 3)
    overhead = [p["wall_s"] - critical_path(p["stages_s"]) for p in points]
    costs["orchestration"] = {"fixed_s": round(float(np.mean(overhead)), 2)}
    costs["orchestration"]["per_million_rows_s"] = 0.0
    return costs


def predict(
    costs: dict[str, dict[str, float]], rows: int, window: int, speedup: float = 1.0
) -> dict[str, float]:
    """Return predicted seconds per stage (and the night) for ``rows`` x ``window``; the
    cluster stages' per-row cost divided by ``speedup`` (more workers than measured)."""
    stages = {}
    for stage, cost in costs.items():
        if stage == "orchestration":
            continue
        per_row = cost["per_million_rows_s"] / (speedup if stage in CLUSTER_STAGES else 1.0)
        stages[stage] = cost["fixed_s"] + per_row * driver_rows(stage, rows, window) / 1e6
    night = critical_path(stages) + costs["orchestration"]["fixed_s"]
    return {**{k: round(v, 1) for k, v in stages.items()}, "night": round(night, 1)}


MODEL_TOLERANCE = 0.25  # the model must reproduce every measured night this closely


def check_model(costs: dict[str, dict[str, float]], points: list[dict[str, Any]]) -> list[dict]:
    """Return, for every measured night, the model's prediction, its error, and whether it
    is within MODEL_TOLERANCE."""
    checked = []
    for p in points:
        predicted = predict(costs, p["rows_per_day"], p["window_days"])["night"]
        error = (predicted - p["wall_s"]) / p["wall_s"]
        checked.append(
            {
                "rows_per_day": p["rows_per_day"],
                "window_days": p["window_days"],
                "measured_s": p["wall_s"],
                "predicted_s": predicted,
                "error": round(error, 3),
                "within_tolerance": abs(error) <= MODEL_TOLERANCE,
            }
        )
    return checked


# A team that has outgrown one machine (issue 15's example): per worker, a machine like this.
TEAM = {"rows_per_day": 50_000_000, "window_days": 30, "workers": 4, "backfill_nights": 90}


def memory_per_million(points: list[dict]) -> float:
    """Return the GiB of memory above the idle services per million window rows (the
    training data), fitted over the points. SGD's kept batch matrices are left out: capped
    at an eighth of its task's machine, they stop growing with the window, and they live in
    that task's process, not on the workers."""
    import numpy as np

    x = np.array([p["rows_per_day"] * p["window_days"] / 1e6 for p in points])
    y = np.array([p["peak_gib"] - p["idle_gib"] - p.get("kept_gib", 0.0) for p in points])
    return float(np.polyfit(x, y, 1)[0]) if len(points) > 1 else float(y[0] / x[0])


def capacity(
    costs: dict[str, dict[str, float]], points: list[dict], machine_gib: float | None = None
) -> dict:
    """Predict TEAM's night, its bottleneck, its memory per worker and its backfill's hours,
    from the fitted costs; each of TEAM's workers is taken to be a machine like this one (of
    ``machine_gib``, default this one's memory). Where the window does not fit TEAM's workers'
    memory, also the workers it takes and the night on that many."""
    import psutil

    machine_gib = machine_gib or psutil.virtual_memory().total / 2**30
    rows, window, workers = TEAM["rows_per_day"], TEAM["window_days"], TEAM["workers"]
    stages = predict(costs, rows, window, speedup=workers)
    night = stages.pop("night")
    per_million = memory_per_million(points)
    window_gib = per_million * rows * window / 1e6
    needed = max(workers, math.ceil(window_gib / machine_gib))
    return {
        **TEAM,
        "assumed": "each worker a machine like this one, the cluster stages spread over the "
        "workers; train_incremental on a core of its own, at the CPU seconds it measured",
        "stages_s": stages,
        "night_s": night,
        "bottleneck": max(stages, key=stages.get),  # type: ignore[arg-type]
        "memory_gib_per_million_window_rows": round(per_million, 4),
        "memory_gib_per_worker": round(window_gib / workers, 1),
        "machine_gib": round(machine_gib, 1),
        "workers_to_hold_window": needed,
        "night_s_on_those_workers": predict(costs, rows, window, speedup=needed)["night"],
        "backfill_hours": round(TEAM["backfill_nights"] * night / 3600, 1),
    }


def draw(points: list[dict], backfill: dict | None, folder: Path) -> list[Path]:
    """Write the figures: wall time per stage and peak memory against rows per day and
    against window days, and the backfill's nights per hour. Return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update({"svg.hashsalt": "nightshift", "svg.fonttype": "none"})
    import matplotlib.pyplot as plt

    written = []
    for axis, label in (("rows_per_day", "rows per day"), ("window_days", "window days")):
        other = "window_days" if axis == "rows_per_day" else "rows_per_day"
        along = series(points, axis)
        if len(along) < 2:
            continue
        fig, (time_ax, memory_ax) = plt.subplots(1, 2, figsize=(10, 4))
        xs = [p[axis] for p in along]
        time_ax.plot(xs, [p["wall_s"] for p in along], "o-", color="black", label="night")
        for stage in along[0]["stages_s"]:
            time_ax.plot(xs, [p["stages_s"][stage] for p in along], ".--", label=stage)
        for stage in (s for s in OWN_CPU_STAGES if s in along[0].get("cpu_s", {})):
            cpu = [p["cpu_s"][stage] for p in along]
            time_ax.plot(xs, cpu, "x:", color="grey", label=f"{stage} (CPU s)")
        time_ax.set(
            xlabel=label, ylabel="seconds", title=f"wall time ({other} = {along[0][other]:,})"
        )
        time_ax.legend(fontsize=7)
        memory_ax.plot(xs, [p["peak_gib"] for p in along], "o-", label="peak")
        memory_ax.plot(xs, [p["idle_gib"] for p in along], ".--", label="services idle")
        memory_ax.set(xlabel=label, ylabel="GiB (PSS)", title="peak memory")
        memory_ax.legend(fontsize=7)
        written.append(_save(fig, folder / f"curves-{axis.split('_')[0]}.svg"))
    if backfill:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.bar(
            ["scheduler (backfill)", "in process"],
            [backfill["scheduler_nights_per_hour"], backfill["in_process_nights_per_hour"]],
        )
        ax.set(ylabel="nights per hour", title=f"{backfill['nights']}-night backfill")
        written.append(_save(fig, folder / "curves-backfill.svg"))
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, metadata={"Date": None})
    plt.close(fig)
    return path


def main() -> None:
    """Measure the points, fit and check the model, draw, save bench/out/curves.json."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[200_000, 1_000_000, 3_000_000])
    parser.add_argument("--windows", type=int, nargs="+", default=[3, 7, 14])
    parser.add_argument("--base-rows", type=int, default=1_000_000, help="rows for the windows")
    parser.add_argument("--base-window", type=int, default=7, help="window for the rows")
    parser.add_argument("--nights", type=int, default=30, help="backfill nights (0: none)")
    parser.add_argument("--backfill-rows", type=int, default=100_000)
    args = parser.parse_args()
    wanted = [(r, args.base_window) for r in args.rows]
    wanted += [(args.base_rows, w) for w in args.windows if (args.base_rows, w) not in wanted]
    points = [night_point(rows, window) for rows, window in wanted]
    backfill = (
        backfill_rates(args.nights, args.backfill_rows, args.base_window) if args.nights else None
    )
    costs = fit_costs(points)
    checked = check_model(costs, points)  # no prediction from a model that misses a point
    result = {
        "points": points,
        "growth": {"rows_per_day": growth(points, "rows_per_day")},
        "model": costs,
        "model_check": checked,
        "capacity": capacity(costs, points)
        if all(c["within_tolerance"] for c in checked)
        else None,
        "backfill": backfill,
        "figures": [str(p.relative_to(BENCH.parent)) for p in draw(points, backfill, BENCH)],
    }
    result["growth"]["window_days"] = growth(points, "window_days")
    result["faster_than_linear"] = sorted(
        {
            f"{stage} (power {power} along {axis})"
            for axis, powers in result["growth"].items()
            for stage, power in powers.items()
            if power > GROWTH_LIMIT
        }
    )
    save("curves", result)


if __name__ == "__main__":
    main()
