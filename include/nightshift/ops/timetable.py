"""The nightly timetable: a run at the cron time, keyed by the date it processes.

Airflow 3.3's ``CronPartitionTimetable`` gives each run a partition key, shown in the UI,
which ``airflow backfill create`` and ``airflow dags clear --partition-key`` work by. Its
``run_offset=-1`` would make the key the previous cron tick's date, but around a
spring-forward change that tick is computed wrongly: in Europe/Amsterdam the 02:30 run of
2026-03-29 (02:30 does not exist that day) got the key 2026-03-29, and so did the run of the
30th; the 28th was never processed (seen with 3.3.2). So the date is worked out on the wall
clock instead: the last day the cron fires before the run's own day.

Airflow builds a timetable it did not ship only if a plugin registers it
(``plugins/nightshift_reports.py``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow._shared.timezones.timezone import (
    coerce_datetime,
    convert_to_utc,
    make_aware,
    parse_timezone,
)
from airflow.timetables.trigger import CronPartitionTimetable
from croniter import croniter

# A run's partition key: the date it processes, in the pipeline's timezone.
KEY_FORMAT = "%Y-%m-%d"


class NightlyTimetable(CronPartitionTimetable):
    """Runs at ``cron`` in ``timezone``; each run's key is the date it processes."""

    def __init__(
        self, cron: str, *, timezone: Any, run_immediately: bool | dt.timedelta = False
    ) -> None:
        super().__init__(
            cron,
            timezone=timezone,
            run_offset=-1,
            key_format=KEY_FORMAT,
            run_immediately=run_immediately,
        )

    def _get_partition_date(self, *, run_date: Any) -> Any:
        """The last cron time before the run's own day (local wall clock), as UTC."""
        day = coerce_datetime(run_date).in_timezone(self._timezone).date()
        midnight = dt.datetime.combine(day, dt.time())
        before = croniter(self._expression, start_time=midnight).get_prev(dt.datetime)
        return convert_to_utc(make_aware(before, self._timezone))

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> NightlyTimetable:
        """The timetable from the scheduler's serialized form (its cron and timezone)."""
        from airflow.serialization.decoders import decode_run_immediately

        return cls(
            data["expression"],
            timezone=parse_timezone(data["timezone"]),
            run_immediately=decode_run_immediately(data.get("run_immediately", False)),
        )
