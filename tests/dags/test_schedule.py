"""Nightly schedule: the run times and dates that follow from a YAML's cron and timezone."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import small_pipeline_dict


def _serialized(cron: str, timezone: str, start: dt.date, **schedule: str):
    """Return the scheduler's view (the serialized DAG) of a pipeline with this schedule."""
    from airflow.serialization.serialized_objects import DagSerialization

    from nightshift.airflow_dag import build_dag
    from nightshift.config import parse_pipeline

    data = small_pipeline_dict()
    data["schedule"].update(cron=cron, timezone=timezone, start_date=start.isoformat(), **schedule)
    dag = build_dag(parse_pipeline(data, "test.yaml"))
    return DagSerialization.from_dict(DagSerialization.to_dict(dag))


def _runs(dag, count: int) -> list:
    from airflow.timetables.base import TimeRestriction

    restriction = TimeRestriction(earliest=dag.start_date, latest=None, catchup=True)
    runs, last = [], None
    for _ in range(count):
        info = dag.timetable.next_dagrun_info(
            last_automated_data_interval=last, restriction=restriction
        )
        runs.append(info)
        last = info.data_interval
    return runs


def _local(value: dt.datetime, tz: str) -> str:
    return value.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M %Z")


def test_nightly_runs_at_the_cron_time_in_the_pipeline_timezone() -> None:
    dag = _serialized("30 2 * * *", "Europe/Amsterdam", dt.date(2026, 11, 1))
    runs = _runs(dag, 3)
    # A run starts after its interval ends: the 02:30 run of the 2nd processes the 1st.
    assert [_local(r.run_after, "Europe/Amsterdam") for r in runs] == [
        "2026-11-02 02:30 CET",
        "2026-11-03 02:30 CET",
        "2026-11-04 02:30 CET",
    ]
    assert [
        r.data_interval.start.astimezone(ZoneInfo("Europe/Amsterdam")).date() for r in runs
    ] == [
        dt.date(2026, 11, 1),
        dt.date(2026, 11, 2),
        dt.date(2026, 11, 3),
    ]
    assert runs[0].run_after.astimezone(dt.UTC).hour == 1  # 02:30 CET is 01:30 UTC


@pytest.mark.parametrize(
    ("start", "change"),
    [(dt.date(2026, 3, 26), dt.date(2026, 3, 29)), (dt.date(2026, 10, 22), dt.date(2026, 10, 25))],
    ids=["spring-forward", "fall-back"],
)
def test_every_local_day_is_processed_exactly_once_across_dst(
    start: dt.date, change: dt.date
) -> None:
    from nightshift.airflow_dag import partition_date_for
    from nightshift.config import parse_pipeline

    tz = "Europe/Amsterdam"
    dag = _serialized("30 2 * * *", tz, start)
    runs = _runs(dag, 7)
    data = small_pipeline_dict()
    data["schedule"].update(timezone=tz)
    pipeline = parse_pipeline(data, "test.yaml")

    class Run:
        run_type = "scheduled"

    dates = [
        partition_date_for(
            pipeline, {"dag_run": Run(), "data_interval_start": r.data_interval.start}
        )
        for r in runs
    ]
    assert dates == [start + dt.timedelta(days=i) for i in range(7)]
    # Runs stay in the small hours: around the change the wall clock moves at most one hour.
    hours = [r.run_after.astimezone(ZoneInfo(tz)).hour for r in runs]
    assert all(h in (1, 2, 3) for h in hours), hours
    utc_hours = sorted({r.run_after.astimezone(dt.UTC).hour for r in runs})
    assert utc_hours == [0, 1], utc_hours  # 02:30 CEST = 00:30 UTC, 02:30 CET = 01:30 UTC
    assert any(r.run_after.date() >= change for r in runs)


def test_catchup_is_off_so_missed_nights_are_not_run() -> None:
    from airflow.timetables.base import DataInterval, TimeRestriction

    dag = _serialized("0 4 * * *", "UTC", dt.date(2026, 1, 1))
    assert dag.catchup is False
    long_ago = DataInterval(
        start=dt.datetime(2026, 1, 1, 4, tzinfo=dt.UTC),
        end=dt.datetime(2026, 1, 2, 4, tzinfo=dt.UTC),
    )
    info = dag.timetable.next_dagrun_info(
        last_automated_data_interval=long_ago,
        # The scheduler's restriction, from the serialized DAG's own catchup setting.
        restriction=TimeRestriction(earliest=dag.start_date, latest=None, catchup=dag.catchup),
    )
    # Without catchup the next run is the latest complete interval, not 2026-01-02.
    now = dt.datetime.now(dt.UTC)
    assert info.data_interval.end > now - dt.timedelta(days=2)


def test_a_pipeline_whose_data_ends_has_no_run_after_its_end_date() -> None:
    from airflow.timetables.base import TimeRestriction

    tz = "Europe/Amsterdam"
    dag = _serialized("30 2 * * *", tz, dt.date(2024, 3, 1), end_date="2024-03-03")
    # The scheduler's restriction, from the serialized DAG's own dates, even with catch-up.
    restriction = TimeRestriction(earliest=dag.start_date, latest=dag.end_date, catchup=True)
    dates, last = [], None
    while info := dag.timetable.next_dagrun_info(
        last_automated_data_interval=last, restriction=restriction
    ):
        dates.append(info.data_interval.start.astimezone(ZoneInfo(tz)).date())
        last = info.data_interval
        assert len(dates) < 10, dates
    # The end date itself is the last date processed; none after it, none for today.
    assert dates == [dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3)]


def test_an_end_date_before_the_start_date_is_refused() -> None:
    from nightshift.config import ConfigError, parse_pipeline

    data = small_pipeline_dict()
    data["schedule"].update(start_date="2026-03-01", end_date="2026-02-01")
    with pytest.raises(ConfigError, match="end_date 2026-02-01 is before start_date 2026-03-01"):
        parse_pipeline(data, "test.yaml")
