"""The report's deadline as an Airflow ``DeadlineAlert`` (experimental in Airflow 3.3).

``schedule.deadline: "07:00"`` means: a scheduled night whose report is not published by the
first 07:00 (in the pipeline's timezone) after the run's scheduled start sends the
``deadline_missed`` alert. Airflow's built-in references add a fixed interval to the logical
date or the queue time; a wall-clock time in a timezone with daylight saving is not a fixed
interval from either, and a backfill of last month or a manual re-run is late by design, so
it must not alert. Hence a custom reference, which returns no deadline for those runs.
Airflow decodes custom references only when a plugin registers them: the nightshift plugin
(plugins/nightshift_reports.py) lists :class:`ReportDeadline`. Airflow drops a night's
deadline when the night succeeds; the callback runs in the triggerer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import (
    REFERENCE_TYPE_FIELD,
    BaseDeadlineReference,
    DeadlineAlert,
    deadline_reference,
)

from nightshift.config.pipeline import Pipeline

log = logging.getLogger(__name__)


def first_time_after(moment: dt.datetime, hhmm: str, timezone: str) -> dt.datetime:
    """The first ``hhmm`` wall-clock time in ``timezone`` strictly after ``moment`` (in UTC)."""
    zone = ZoneInfo(timezone)
    local = moment.astimezone(zone)
    hour, minute = (int(part) for part in hhmm.split(":"))
    at = dt.time(hour, minute)
    candidate = dt.datetime.combine(local.date(), at, tzinfo=zone)
    if candidate <= local:
        candidate = dt.datetime.combine(local.date() + dt.timedelta(days=1), at, tzinfo=zone)
    return candidate.astimezone(dt.UTC)


@deadline_reference
@dataclass(frozen=True)
class ReportDeadline(BaseDeadlineReference):
    """A scheduled run's deadline: the first ``time`` in ``timezone`` after its interval ends;
    none for backfilled and manual runs."""

    time: str = "07:00"
    timezone: str = "UTC"
    required_kwargs: ClassVar[set[str]] = {"dag_id", "run_id"}

    def serialize_reference(self) -> dict[str, Any]:
        """The reference's type and its two settings."""
        return {REFERENCE_TYPE_FIELD: self.reference_name, "time": self.time, "tz": self.timezone}

    @classmethod
    def deserialize_reference(cls, reference_data: dict[str, Any]) -> ReportDeadline:
        """The reference from :meth:`serialize_reference`'s dict."""
        return cls(time=reference_data["time"], timezone=reference_data["tz"])

    def _evaluate_with(self, *, session: Any, dag_id: str, run_id: str) -> dt.datetime | None:
        """Run by the scheduler as the run is created: its deadline, or None for none."""
        from airflow.models import DagRun
        from sqlalchemy import select

        found = session.execute(
            select(DagRun.run_type, DagRun.run_after).where(
                DagRun.dag_id == dag_id, DagRun.run_id == run_id
            )
        ).one_or_none()
        if found is None or str(found.run_type) != "scheduled":
            return None
        return first_time_after(found.run_after, self.time, self.timezone)


def deadline_alerts(pipeline: Pipeline) -> list[DeadlineAlert]:
    """The DAG's deadline: none unless the pipeline sets one and someone listens for it."""
    schedule, wanted = pipeline.schedule, pipeline.alerts
    if not schedule.deadline or not wanted.channels or "deadline_missed" not in wanted.on:
        return []
    return [
        DeadlineAlert(
            reference=ReportDeadline(schedule.deadline, schedule.timezone),
            interval=dt.timedelta(0),
            callback=AsyncCallback(
                report_deadline_missed,
                kwargs={"pipeline": pipeline.name, "deadline": schedule.deadline},
            ),
            name=f"{pipeline.name}: report by {schedule.deadline} {schedule.timezone}",
        )
    ]


async def report_deadline_missed(pipeline: str, deadline: str, context: dict[str, Any]) -> str:
    """Run by the triggerer when a night missed its deadline: deliver the alert."""
    # The notifiers are synchronous (SMTP, HTTP): off the triggerer's event loop.
    return await asyncio.to_thread(_send_missed, pipeline, deadline, context)


def _send_missed(name: str, deadline: str, context: dict[str, Any]) -> str:
    """Find the pipeline and the night's date; send the deadline alert on every channel."""
    from nightshift.config.pipeline import load_pipelines
    from nightshift.config.run_date import airflow_base_url
    from nightshift.publishing import alerts

    pipeline = next(p for p in load_pipelines()[0] if p.name == name)
    run = context["dag_run"]
    day = dt.date.fromisoformat(str(run["partition_key"]))  # a scheduled run always has one
    due = f"{deadline} {pipeline.schedule.timezone}"
    links = alerts.links_for(pipeline, day, airflow_base_url(), str(run["dag_run_id"]))
    alert = alerts.deadline_alert(pipeline, day, due, links)
    failed = alerts.deliver(pipeline, alert, {"dag_run": run})
    return f"{alert.title}: sent" + (f", failed on {', '.join(failed)}" if failed else "")
