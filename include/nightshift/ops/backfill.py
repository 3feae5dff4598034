"""Backfill by the dates to process: ``nightshift backfill --from D1 --to D2``.

Airflow's ``backfill create`` takes a range of logical dates, and a nightly run's logical
date is its cron time on the day it processes; this asks for exactly the nights of D1..D2
(the pipeline's timezone, both inclusive), then follows them: one line each time a night
starts or ends, not one per poll; and when the nights sit queued, says why.
"""

from __future__ import annotations

import datetime as dt
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nightshift.config.pipeline import Pipeline
from nightshift.ops.airflow_api import FINISHED
from nightshift.ops.local_airflow import LocalAirflow

REPROCESS = ("none", "failed", "completed")


@dataclass(frozen=True)
class Nights:
    """The state of each night of a backfill, by the date it processes."""

    states: dict[str, str]  # ISO date -> the run's state ("" until the run exists)

    def line(self) -> str:
        """One line: nights finished of all, and which run or failed."""
        done = [d for d, s in self.states.items() if s in FINISHED]
        running = [d for d, s in self.states.items() if s == "running"]
        failed = [d for d, s in self.states.items() if s == "failed"]
        text = f"  {len(done)}/{len(self.states)} nights done"
        if running:
            text += f"; running: {', '.join(running)}"
        if failed:
            text += f"; failed: {', '.join(failed)}"
        return text

    @property
    def finished(self) -> bool:
        """Whether every night has ended."""
        return all(state in FINISHED for state in self.states.values())

    @property
    def waiting(self) -> bool:
        """Whether nights are queued while none runs (the backfill is not moving)."""
        states = self.states.values()
        return "queued" in states and "running" not in states


# Queued this long with nothing running, a backfill is stuck, not slow: say why.
QUEUED_FOR_LONG = 60.0


def why_queued(airflow: LocalAirflow, dag_id: str) -> str:
    """Return why a DAG's queued runs do not start: paused, no scheduler, or no free slot."""
    if airflow.api("GET", f"dags/{dag_id}")["is_paused"]:
        return (
            f"{dag_id} is paused, and Airflow starts no run of a paused DAG: "
            f"`airflow dags unpause {dag_id}` (it then also runs nightly)"
        )
    if "scheduler" not in airflow.running():
        return f"no scheduler is running from {airflow.home}: `make up` starts one"
    health = airflow.api("GET", "monitor/health").get("scheduler", {})
    if health.get("status") != "healthy":
        return (
            f"the scheduler's last heartbeat is {health.get('latest_scheduler_heartbeat')}: "
            f"it is not working (see {airflow.home / 'run' / 'scheduler.log'})"
        )
    full = [p for p in airflow.api("GET", "pools")["pools"] if p["open_slots"] == 0]
    if full:
        names = ", ".join(f"{p['name']} ({p['slots']} slots)" for p in full)
        return f"no free slot in pool {names}: other tasks hold them"
    return "the scheduler has not started them yet (other runs of this DAG may be active)"


def night_dates(first: dt.date, last: dt.date) -> list[str]:
    """Every date from ``first`` to ``last``, both inclusive, as ISO strings."""
    return [(first + dt.timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def nights(airflow: LocalAirflow, pipeline: Pipeline, dates: list[str]) -> Nights:
    """The latest backfill run of each date (a run's date: its partition key)."""
    first, last = (dt.date.fromisoformat(d) for d in (dates[0], dates[-1]))
    # A backfilled night starts at its own date's cron time (run_after = the partition's tick).
    window = {
        "run_type": "backfill",
        "run_after_gte": dt.datetime.combine(first, dt.time(), pipeline.tz).isoformat(),
        "run_after_lte": dt.datetime.combine(last, dt.time.max, pipeline.tz).isoformat(),
        "order_by": "id",
        "limit": "1000",
    }
    query = urllib.parse.urlencode(window)
    states = dict.fromkeys(dates, "")
    for run in airflow.api("GET", f"dags/{pipeline.dag_id}/dagRuns?{query}")["dag_runs"]:
        if run["partition_key"] in states:
            states[run["partition_key"]] = run["state"]
    return Nights(states)


def backfill(
    airflow: LocalAirflow,
    pipeline: Pipeline,
    dates: list[str],
    options: list[str],
    report: Callable[[str], Any],
    timeout: float = 24 * 3600,
) -> Nights:
    """Create the backfill of ``dates``; follow it until every night has ended, calling
    ``report`` with a line each time it changes (a night started or ended)."""
    airflow.backfill(pipeline.dag_id, dates[0], dates[-1], *options)
    deadline = time.monotonic() + timeout
    said, moved, explained = "", time.monotonic(), ""
    while time.monotonic() < deadline:
        now = nights(airflow, pipeline, dates)
        if now.line() != said:
            said, moved = now.line(), time.monotonic()
            report(said)
        if now.waiting and time.monotonic() - moved > QUEUED_FOR_LONG:
            why = why_queued(airflow, pipeline.dag_id)
            if why != explained:
                explained = why
                report(f"  queued for {time.monotonic() - moved:.0f} s: {why}")
        backfills = airflow.api("GET", f"backfills?dag_id={pipeline.dag_id}")["backfills"]
        # A re-run's nights show their old state until the backfill queues them again.
        if now.finished and all(b["completed_at"] for b in backfills):
            return now
        time.sleep(3)
    raise TimeoutError(f"{pipeline.dag_id}: backfill not finished in {timeout}s: {said}")
