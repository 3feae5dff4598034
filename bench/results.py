"""Write bench/RESULTS.md from the latest bench/out/*.json (run by bench/scale.py)."""

from __future__ import annotations

import json
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def write_results() -> str:
    found = {p.stem: json.loads(p.read_text()) for p in sorted((BENCH / "out").glob("p[0-9].json"))}
    for extra in ("sgd",):
        if (BENCH / "out" / f"{extra}.json").exists():
            found[extra] = json.loads((BENCH / "out" / f"{extra}.json").read_text())
    template = (BENCH / "RESULTS.template.md").read_text()
    rows = []
    for name in ("p1", "p2", "p3", "p4", "p9", "sgd"):
        result = found.get(name)
        if result is None:
            rows.append(f"| {name.upper()} | not run | | | |")
            continue
        rows.append(
            f"| {name.upper()} | {_measured(name, result)} | {result['target']} | "
            f"{_verdict(name, result)} | {result['when'][:16]} |"
        )
    any_result = next(iter(found.values()), None)
    machine = any_result["machine"] if any_result else {}
    text = template.format(
        table="\n".join(rows),
        profile=_profile(BENCH / "out" / "profile.json"),
        curves=_curves(BENCH / "out" / "curves.json"),
        capacity=_capacity(BENCH / "out" / "capacity.json"),
        gate=_gate(BENCH / "out" / "gate.json"),
        machine=", ".join(f"{k} {v}" for k, v in machine.items()),
        details="\n".join(
            f"<details><summary>{n.upper()} raw</summary>\n\n```json\n"
            f"{json.dumps(r, indent=1)}\n```\n</details>\n"
            for n, r in found.items()
        ),
    )
    (BENCH / "RESULTS.md").write_text(text)
    return "\n".join(rows)


def _measured(name: str, r: dict) -> str:
    if name == "p1":
        each = (
            f", the fastest of nightly {_seconds(r['nightly_walls_s'])} and script "
            f"{_seconds(r['script_walls_s'])}"
            if "nightly_walls_s" in r
            else ""
        )
        return (
            f"{r['ratio']:.2f}x ({r['nightly_wall_s']:.0f} s nightly vs {r['script_wall_s']:.0f} s "
            f"script{each}; {r['rows_per_day']:,} rows/day, {r['window_days']}-day window); "
            "AUC xgboost "
            f"{r['nightly_auc']['xgboost']:.4f} vs {r['script_auc']['xgboost']:.4f}, sgd "
            f"{r['nightly_auc']['sgd_logistic']:.4f} vs {r['script_auc']['sgd_logistic']:.4f}"
        )
    if name == "p2":
        return (
            f"{r['fraction']:.2f} ({r['preprocess_rows_per_s']:,.0f} rows/s vs bare pyarrow "
            f"{r['bare_rows_per_s']:,.0f} rows/s; {r['rows']:,} rows, {r['batches']} batches)"
        )
    if name == "p3":
        return (
            f"completed={r['completed']}, day {r['day_in_memory_gib']:.2f} GiB = "
            f"{r['day_over_budget']:.1f}x budget {r['budget_gib']:.2f} GiB; peak worker RSS "
            f"{r['peak_worker_rss_gib']:.2f} GiB = {r['peak_over_budget']:.2f}x budget; "
            f"{r['worker_restarts']} restarts; {r['seconds']:.0f} s"
        )
    if name in ("p9", "sgd"):
        return _measured_training(name, r)
    measured = (
        f"{r['overhead_fraction'] * 100:.1f}% (DAG wall {r['dag_wall_s']:.0f} s, critical path "
        f"of task bodies {r['critical_path_bodies_s']:.0f} s"
    )
    if "task_spans_s" not in r:
        return measured + ")"
    waiting = _waiting(r["task_spans_s"])
    return measured + f"; {waiting:.0f} s of it with no task running)"


def _measured_training(name: str, r: dict) -> str:
    if name == "sgd":
        runs = ", ".join(
            f"{x['workers']} workers {x['over_one_process']:.2f}x "
            f"(AUC {x['auc_minus_one_process']:+.4f})"
            for x in r["runs"]
        )
        return (
            f"rows/s against one process ({r['one_process']['rows_per_s']:,}/s, {r['rows']:,} rows "
            f"x {r['epochs']} epochs, {r['cores']} cores): {runs}"
        )
    big, small = r["big"], r["small"]["runs"]
    ratios = ", ".join(
        f"{x['memory']} {x['time_over_in_memory']:.2f}x time, AUC {x['auc_minus_in_memory']:+.4f}"
        for x in small[1:]
    )
    run = big["run"]
    return (
        f"window {big['window_gib']:.1f} GiB = {big['window_over_limit']:.1f}x the workers' "
        f"{big['limit_gib']:.1f} GiB ({big['rows']:,} rows x {r['features']} features): "
        f"completed={run['error'] is None}, `auto` chose {run['chosen']}, peak RSS per worker "
        f"{run['peak_over_limit']:.2f}x its limit, {run['worker_restarts']} restarts, "
        f"{run['seconds']:.0f} s ({r['big_rounds']} rounds); where both fit "
        f"({r['small']['rows']:,} rows): {ratios}"
    )


def _gate(path: Path) -> str:
    if not path.exists():
        return "Not run yet: `make bench-gate` writes it."
    g = json.loads(path.read_text())
    models = g["models"]
    met = ", ".join(
        f"{case}: {ok if isinstance(ok, str) else ('met' if ok else 'NOT met')}"
        for case, ok in g["met"].items()
    )
    return (
        f"Promotion rate, the gate before (`{g['before'][:7]}`, point estimates) → now (the "
        f"stratified paired bootstrap's bounds at 95%), same nights, {g['cells'][0]['nights']} a "
        f"cell, pipeline defaults with `segment: device`; the models' errors correlated "
        f"{models['correlation']} (measured: two nights' XGBoost models), the champion's AUC "
        f"{', '.join(f'{a:.3f}' for a in g['champion_auc'])} by segment ({g['when'][:16]}, "
        f"{g['seconds']:.0f} s):\n\n{g['table']}\n\nGoals: {met}." + _gate_cost(g.get("cost"))
    )


def _gate_cost(cost: dict | None) -> str:
    if not cost:
        return ""
    return (
        f" A night's bootstraps at {cost['rows']:,} held-out rows (two learned models, five "
        f"segments, 200 resamples): {cost['before_s']} s before (the headline only) -> "
        f"{cost['now_s']} s now (headline, segments and calibration), {cost['ratio']}x."
    )


def _capacity(path: Path) -> str:
    if not path.exists():
        return (
            "Not run yet: `bench/capacity.py` (after `bench/p9.py` and `bench/sgd.py`) writes it."
        )
    c = json.loads(path.read_text())
    before = c["before"]
    low, high = c["night_h_range"]
    return (
        f"At {c['rows_per_day']:,} rows/day and a {c['window_days']}-day window, each worker a "
        f"machine like this one: memory per million window rows "
        f"{before['window_gib_per_million_rows']} GiB (the window in memory) -> "
        f"{c['worker_gib_per_million_window_rows']} GiB (external memory, P9's fit, plus "
        f"{c['worker_fixed_gib']} GiB fixed per worker); workers needed "
        f"{before['workers_to_hold_window']} -> **{c['workers_to_hold_window']}**; the night "
        f"{before['night_h']} h -> **{low}-{high} h** (XGBoost {c['xgboost_h']} h, SGD on the "
        f"workers {c['sgd_h']} h at {c['sgd_efficiency_per_worker']} per-worker efficiency; "
        f"{c['assumed']})."
    )


def _seconds(values: list[float]) -> str:
    return " / ".join(f"{v:.0f}" for v in values) + " s"


def _waiting(spans: dict[str, list[float]]) -> float:
    """Seconds of a run during which no task was running: before the first one started,
    and between one task's end and the next one's start."""
    waited, ended = 0.0, 0.0
    for start, end in sorted(spans.values()):
        waited += max(0.0, start - ended)
        ended = max(ended, end)
    return waited


def _verdict(name: str, r: dict) -> str:
    ok = {
        "p1": r.get("ratio", 99) <= 1.2,
        "p2": r.get("fraction", 0) >= 0.6,
        "p3": r.get("completed")
        and r.get("peak_over_budget", 99) <= 1.2
        and r.get("worker_restarts", 1) == 0,
        "p4": r.get("overhead_fraction", 1) <= 0.05 and r.get("dag_wall_s", 0) >= 120,
    }.get(name)
    if name == "p9":
        ok = _p9_met(r)
    if name == "sgd":
        ok = all(abs(x["auc_minus_one_process"]) <= 0.005 for x in r["runs"])
    return "met" if ok else "**missed**"


def _p9_met(r: dict) -> bool:
    run = r["big"]["run"]
    return (
        run["error"] is None
        and r["big"]["window_over_limit"] >= 10
        and run["peak_over_limit"] <= 1.2
        and run["worker_restarts"] == 0
        and all(abs(x["auc_minus_in_memory"]) <= 0.002 for x in r["small"]["runs"][1:])
    )


def _profile(path: Path, stages: int = 3) -> str:
    """The top lines of the slowest stages' profiles, from bench/scale.py's profiled night."""
    if not path.exists():
        return "Not run: `bench/scale.py p1` writes it."
    found = json.loads(path.read_text())
    seconds = found["stage_seconds"]
    slowest = sorted(seconds, key=seconds.get, reverse=True)[:stages]
    parts = [
        "Stage seconds in the profiled run: "
        + ", ".join(f"{stage} {s:.1f}" for stage, s in seconds.items())
        + f" ({found['when'][:16]}). Dask's performance report of train_distributed, with the"
        + f" workers' own profile: `{found['dask_report']}` (written by the run, not committed)."
    ]
    for stage in slowest:
        # The first line names the run's own temporary folder: left out.
        lines = [line for line in found["top"][stage].splitlines()[1:] if line.strip()]
        parts.append(f"`{stage}`:\n\n```\n" + "\n".join(lines[:22]) + "\n```")
    return "\n\n".join(parts)


def _curves(path: Path) -> str:
    """The cost curves, the fitted model's check and its capacity prediction (bench/curves.py)."""
    if not path.exists():
        return "Not run yet: `bench/curves.py` (part of `make bench`) writes it."
    found = json.loads(path.read_text())
    rows = [
        "| rows/day | window days | night s | SGD CPU s | peak GiB | services idle GiB "
        "| SGD kept GiB | model s | error |"
    ]
    rows.append("|---|---|---|---|---|---|---|---|---|")
    for point, check in zip(found["points"], found["model_check"], strict=True):
        rows.append(
            f"| {point['rows_per_day']:,} | {point['window_days']} | {point['wall_s']:.0f} | "
            f"{point.get('cpu_s', {}).get('train_incremental', float('nan')):.0f} | "
            f"{point['peak_gib']:.2f} | {point['idle_gib']:.2f} | "
            f"{point.get('kept_gib', float('nan')):.2f} | {check['predicted_s']:.0f} | "
            f"{check['error']:+.0%} |"
        )
    figures = " · ".join(f"[{Path(f).name}]({Path(f).name})" for f in found["figures"])
    parts = [
        f"Measured {found['when'][:16]}. Figures: {figures}.",
        "\n".join(rows),
        "Growth power of each stage between the two largest points (1.0 is linear): "
        + "; ".join(
            f"along {axis}: " + ", ".join(f"{k} {v}" for k, v in powers.items())
            for axis, powers in found["growth"].items()
        )
        + ". Faster than linear: "
        + (", ".join(found["faster_than_linear"]) or "none")
        + ".",
    ]
    if found.get("backfill"):
        b = found["backfill"]
        parts.append(
            f"Backfill of {b['nights']} nights ({b['rows_per_day']:,} rows/day): "
            f"{b['scheduler_nights_per_hour']} nights/hour under the scheduler against "
            f"{b['in_process_nights_per_hour']} in process one after the other."
        )
    team = found.get("capacity")
    parts.append(
        "Capacity model: not predicted, a measured night is off by more than 25%."
        if team is None
        else f"Capacity model ({team['assumed']}): {team['rows_per_day']:,} rows/day, "
        f"{team['window_days']}-day window, {team['workers']} workers: a night of "
        f"{team['night_s'] / 3600:.1f} h, bottleneck `{team['bottleneck']}`, "
        f"{team['memory_gib_per_worker']} GiB per worker, a {team['backfill_nights']}-night "
        f"backfill {team['backfill_hours']} h. Holding the window takes "
        f"{team['workers_to_hold_window']} workers of {team['machine_gib']} GiB, on which a "
        f"night is {team['night_s_on_those_workers'] / 3600:.1f} h."
    )
    return "\n\n".join(parts)


if __name__ == "__main__":
    print(write_results())
