"""The capacity model again, with training in bounded memory: bench/out/p9.json + sgd.json.

    .venv/bin/python bench/capacity.py          # after bench/p9.py and bench/sgd.py

Memory per worker is no longer the window over the workers (0.35 GiB per million window rows,
measured by ``curves.py`` with the window in memory) but a fixed part and XGBoost's per-row
floor, both fitted from P9's two external-memory runs (a small and a big window on the same
features). Workers needed: the fewest whose plannable memory (``PLAN_FRACTION`` of a machine
like this one) holds that; the night on them: ``curves.py``'s fitted training costs (the last
``make bench``, quoted below), XGBoost's divided by the workers and multiplied by external
memory's time ratio from P9, SGD's by the workers at the efficiency ``sgd.py`` measured.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "out"
TEAM = {"rows_per_day": 50_000_000, "window_days": 30}
# From the last `make bench` (bench/RESULTS.md, "Capacity model"): the fitted costs.
BEFORE = {
    "window_gib_per_million_rows": 0.35,
    "workers_to_hold_window": 23,
    "night_h": 2.1,
    "xgboost_s_per_million_window_rows_this_machine": 17.8,
    "sgd_cpu_s_per_million_window_rows": 4.5,
    "day_stages_h": 11 / 60,
}


def fit_memory(p9: dict[str, Any]) -> tuple[float, float]:
    """Return (fixed GiB, GiB per million rows) of a worker in external memory: the line
    through P9's small and big external runs (rows per worker, peak RSS)."""
    small = next(r for r in p9["small"]["runs"] if r["memory"] == "external")
    workers = p9["workers"]
    points = [
        (p9["small"]["rows"] / workers, max(small["peak_rss_mib"]) / 1024),
        (p9["big"]["rows"] / workers, max(p9["big"]["run"]["peak_rss_mib"]) / 1024),
    ]
    (x0, y0), (x1, y1) = points
    slope = (y1 - y0) / ((x1 - x0) / 1e6)
    return y0 - slope * x0 / 1e6, slope


def capacity(p9: dict[str, Any], sgd: dict[str, Any]) -> dict[str, Any]:
    """TEAM's workers and night with the window streamed (external memory) and SGD mixed."""
    import psutil

    from nightshift.models.xgboost_batches import PLAN_FRACTION

    machine_gib = psutil.virtual_memory().total / 2**30  # each worker a machine like this one
    fixed, per_million = fit_memory(p9)
    window_m = TEAM["rows_per_day"] * TEAM["window_days"] / 1e6
    plannable = machine_gib * PLAN_FRACTION - fixed
    workers = max(math.ceil(window_m * per_million / plannable), 2)
    external = next(r for r in p9["small"]["runs"] if r["memory"] == "external")
    # curves.py's rule: the cost measured on this machine, divided by the machines.
    xgb_s = (
        window_m * BEFORE["xgboost_s_per_million_window_rows_this_machine"] / workers
    ) * external["time_over_in_memory"]
    two = next(r for r in sgd["runs"] if r["workers"] == 2)
    efficiency = two["rows_per_s"] / (
        2 * next(r for r in sgd["runs"] if r["workers"] == 1)["rows_per_s"]
    )
    sgd_s = window_m * BEFORE["sgd_cpu_s_per_million_window_rows"] / (workers * efficiency)
    night_h = (max(xgb_s, sgd_s) / 3600, (xgb_s + sgd_s) / 3600)
    return {
        **TEAM,
        "before": BEFORE,
        "worker_fixed_gib": round(fixed, 3),
        "worker_gib_per_million_window_rows": round(per_million, 4),
        "window_gib_per_million_rows_after": round(per_million, 4),
        "workers_to_hold_window": workers,
        "xgboost_h": round(xgb_s / 3600, 2),
        "sgd_h": round(sgd_s / 3600, 2),
        "sgd_efficiency_per_worker": round(efficiency, 2),
        "night_h_range": [round(h + BEFORE["day_stages_h"], 2) for h in night_h],
        "machine_gib": round(machine_gib, 1),
        "assumed": "each worker a machine like this one (machine_gib); XGBoost and SGD "
        "side by side on the workers (the night's low end) or one after the other (its high "
        "end); the day's stages as measured",
    }


def main() -> None:
    p9 = json.loads((OUT / "p9.json").read_text())
    sgd = json.loads((OUT / "sgd.json").read_text())
    result = capacity(p9, sgd)
    (OUT / "capacity.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
