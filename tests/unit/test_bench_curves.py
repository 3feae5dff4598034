"""bench/curves.py's arithmetic on made-up nights whose costs are known: the growth powers,
the fitted costs, the model's check against the points, the capacity prediction, the figures
and the memory sampler. The measuring itself runs in `make bench` (it takes an hour)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO


@pytest.fixture()
def curves(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    sys.modules.pop("curves", None)
    import curves

    return curves


def night(rows: int, window: int) -> dict[str, Any]:
    """A night whose stages cost 1 s + 2 s per million day rows, training 3 s per million
    window rows (SGD half that, in CPU seconds), and evaluate grows with the square of the
    day's rows."""
    day, span = rows / 1e6, rows * window / 1e6
    stages = {
        "ingest": 1 + 2 * day,
        "validate": 1 + 2 * day,
        "preprocess": 1 + 2 * day,
        "fit_features": 1 + 2 * span,
        "train_distributed": 1 + 3 * span,
        "train_incremental": 1 + 1.5 * span,
        "evaluate": 1 + 2 * day**2,
        "publish": 1 + 2 * day,
    }
    wall = 5 + sum(v for k, v in stages.items() if k != "train_incremental")
    # SGD waits for XGBoost's idle cores: it ends with it, having computed for its CPU seconds.
    cpu = {"train_incremental": stages["train_incremental"]}
    stages["train_incremental"] = stages["train_distributed"]
    kept = min(0.2 * span, 0.5)  # SGD's kept matrices: capped, not growing with the window
    return {
        "rows_per_day": rows,
        "window_days": window,
        "wall_s": wall,
        "stages_s": stages,
        "cpu_s": cpu,
        "peak_gib": 1.0 + 0.5 * span + kept,
        "idle_gib": 1.0,
        "kept_gib": kept,
    }


POINTS = [night(r, 7) for r in (200_000, 1_000_000, 3_000_000)] + [
    night(1_000_000, w) for w in (3, 14)
]


def test_growth_names_the_stage_that_grows_faster_than_linearly(curves) -> None:
    powers = curves.growth(POINTS, "rows_per_day")
    assert powers["evaluate"] > curves.GROWTH_LIMIT
    assert 0.85 < powers["train_distributed"] <= 1.0
    assert curves.growth(POINTS, "window_days")["ingest"] == 0.0


def test_fitted_costs_reproduce_linear_stages_and_check_every_point(curves) -> None:
    costs = curves.fit_costs(POINTS)
    assert costs["train_distributed"] == {"fixed_s": 1.0, "per_million_rows_s": 3.0}
    # SGD's cost is its CPU seconds, not the wall seconds it spent waiting beside XGBoost.
    assert costs["train_incremental"] == {"fixed_s": 1.0, "per_million_rows_s": 1.5}
    assert costs["orchestration"]["fixed_s"] == pytest.approx(5.0)
    checked = curves.check_model(costs, POINTS)
    assert [c["within_tolerance"] for c in checked] == [True] * len(POINTS)
    # A stage that measured faster on more rows (noise at small sizes) costs nothing per row,
    # never a negative amount that a large prediction would subtract.
    noisy = [
        {**p, "stages_s": {**p["stages_s"], "publish": 9 - p["rows_per_day"] / 1e6}} for p in POINTS
    ]
    assert curves.fit_costs(noisy)["publish"]["per_million_rows_s"] == 0.0
    off = [*POINTS[:-1], {**POINTS[-1], "wall_s": POINTS[-1]["wall_s"] * 2}]
    assert not curves.check_model(costs, off)[-1]["within_tolerance"]


def test_capacity_scales_the_cluster_stages_with_the_workers(curves) -> None:
    costs = curves.fit_costs(POINTS)
    team = curves.capacity(costs, POINTS, machine_gib=1000.0)
    window_millions = 50 * 30
    assert team["stages_s"]["train_distributed"] == pytest.approx(1 + 3 * window_millions / 4, 0.01)
    assert team["stages_s"]["train_incremental"] == pytest.approx(1 + 1.5 * window_millions, 0.01)
    # SGD learns in one task process over the whole window; the cluster stages share 4 workers.
    assert team["bottleneck"] == "train_incremental"
    assert team["memory_gib_per_worker"] == pytest.approx(0.5 * window_millions / 4, 0.01)
    assert team["backfill_hours"] == pytest.approx(90 * team["night_s"] / 3600, 0.01)
    assert team["workers_to_hold_window"] == 4
    # On machines of 24 GiB the window's 750 GiB takes 32 of them, and the night shortens.
    small = curves.capacity(costs, POINTS, machine_gib=24.0)
    assert small["workers_to_hold_window"] == 32
    assert small["night_s_on_those_workers"] < small["night_s"]


def test_figures_are_written_for_each_axis_and_the_backfill(curves, tmp_path: Path) -> None:
    backfill = {"nights": 30, "scheduler_nights_per_hour": 40.0, "in_process_nights_per_hour": 50.0}
    paths = curves.draw(POINTS, backfill, tmp_path)
    assert [p.name for p in paths] == [
        "curves-rows.svg",
        "curves-window.svg",
        "curves-backfill.svg",
    ]
    assert all(p.read_text().startswith("<?xml") for p in paths)
    (tmp_path / "again").mkdir()
    again = curves.draw(POINTS, backfill, tmp_path / "again")
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]  # diffable


def test_peak_memory_sees_a_child_process_grow(curves) -> None:
    code = "import time; block = bytearray(300 * 2**20); time.sleep(3)"
    memory = curves.PeakMemory(every=0.1)
    try:
        memory.mark()
        child = subprocess.Popen([sys.executable, "-c", code])
        child.wait(timeout=60)
        time.sleep(0.3)
    finally:
        memory.close()
    assert memory.peak - memory.idle > 250 * 2**20


def test_results_show_the_curves_the_check_and_the_prediction(curves, tmp_path: Path) -> None:
    import json

    sys.modules.pop("results", None)
    import results

    costs = curves.fit_costs(POINTS)
    found = {
        "when": "2026-11-27T07:00:00",
        "points": POINTS,
        "model_check": curves.check_model(costs, POINTS),
        "growth": {"rows_per_day": curves.growth(POINTS, "rows_per_day")},
        "faster_than_linear": ["evaluate (power 1.68 along rows_per_day)"],
        "capacity": curves.capacity(costs, POINTS, machine_gib=24.0),
        "backfill": None,
        "figures": ["bench/curves-rows.svg"],
    }
    path = tmp_path / "curves.json"
    path.write_text(json.dumps(found))
    text = results._curves(path)
    assert "| 3,000,000 | 7 |" in text
    assert "[curves-rows.svg](curves-rows.svg)" in text
    assert "Faster than linear: evaluate (power 1.68 along rows_per_day)." in text
    assert "bottleneck `train_incremental`" in text
    assert "Holding the window takes 32 workers of 24.0 GiB" in text
    path.write_text(json.dumps({**found, "capacity": None}))
    assert "not predicted, a measured night is off by more than 25%" in results._curves(path)


def test_p4_counts_the_seconds_when_no_task_ran(curves) -> None:
    sys.modules.pop("results", None)
    import results

    # Before the first task, between a and the parallel pair, and before d: 1 + 1 + 2 s.
    spans = {"a": [1.0, 3.0], "b": [4.0, 10.0], "c": [4.5, 6.0], "d": [12.0, 13.0]}
    assert results._waiting(spans) == 4.0
