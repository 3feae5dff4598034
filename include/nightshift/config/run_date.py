"""Which date a run processes, and the dates and links around it: one home for both the
Airflow DAG and the ``nightshift`` command, so they cannot disagree.

A date is a day in the pipeline's timezone (``schedule.timezone``), never the machine's.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from nightshift.config.pipeline import Pipeline
from nightshift.config.settings import setting


def last_complete_day(pipeline: Pipeline, now: dt.datetime | None = None) -> dt.date:
    """Return the day before ``now`` (default: this moment) in the pipeline's timezone: the
    last day whose data can be complete."""
    moment = now or dt.datetime.now(dt.UTC)
    return moment.astimezone(pipeline.tz).date() - dt.timedelta(days=1)


def partition_date_for(pipeline: Pipeline, context: Any) -> dt.date:
    """Return the date an Airflow run processes.

    In order: the trigger form's ``run_date``; the run's partition key (every scheduled and
    backfilled run has one, as may a triggered run); for a run with neither, the last complete
    day before the run was requested. A run date and a partition key that disagree are refused.
    """
    dag_run = context["dag_run"]
    key = getattr(dag_run, "partition_key", None)
    requested = (context.get("params") or {}).get("run_date")
    if requested and key and str(requested) != key:
        raise ValueError(
            f"run_date {requested} and partition key {key} name different dates; "
            "give one of them, or the same date in both"
        )
    if requested or key:
        return dt.date.fromisoformat(str(requested or key))
    return last_complete_day(pipeline, dag_run.run_after or dag_run.logical_date)


def day_after(day: dt.date, at: dt.time, pipeline: Pipeline) -> dt.datetime:
    """``at`` on the day after ``day``, in the pipeline's timezone: when ``day``'s data is
    complete, and so when its night may run."""
    return dt.datetime.combine(day + dt.timedelta(days=1), at, tzinfo=pipeline.tz)


def airflow_base_url() -> str | None:
    """Return the Airflow UI's base URL (``[api] base_url``) for links from reports and
    alerts, if it is set."""
    url = setting("AIRFLOW__API__BASE_URL")
    if url:
        return url
    try:
        from airflow.configuration import conf

        return conf.get("api", "base_url", fallback=None) or None
    except Exception:  # no Airflow configuration to read: reports simply carry no link
        return None
