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
    from nightshift.config.pipeline import parse_pipeline

    data = small_pipeline_dict()
    data["schedule"].update(cron=cron, timezone=timezone, start_date=start.isoformat(), **schedule)
    dag = build_dag(parse_pipeline(data, "test.yaml"))
    return DagSerialization.from_dict(DagSerialization.to_dict(dag))


def _runs(dag, count: int) -> list:
    from airflow.timetables.base import TimeRestriction

    restriction = TimeRestriction(earliest=dag.start_date, latest=None, catchup=True)
    runs, last = [], None
    for _ in range(count):
        info = dag.timetable.next_dagrun_info_v2(last_dagrun_info=last, restriction=restriction)
        runs.append(info)
        last = info
    return runs


def _local(value: dt.datetime, tz: str) -> str:
    return value.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M %Z")


def test_nightly_runs_at_the_cron_time_in_the_pipeline_timezone() -> None:
    dag = _serialized("30 2 * * *", "Europe/Amsterdam", dt.date(2026, 11, 1))
    runs = _runs(dag, 3)
    # A run starts after its date ends: the 02:30 run of the 2nd processes the 1st, its key.
    assert [_local(r.run_after, "Europe/Amsterdam") for r in runs] == [
        "2026-11-02 02:30 CET",
        "2026-11-03 02:30 CET",
        "2026-11-04 02:30 CET",
    ]
    assert [r.partition_key for r in runs] == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert [r.data_interval for r in runs] == [None] * 3
    assert runs[0].run_after.astimezone(dt.UTC).hour == 1  # 02:30 CET is 01:30 UTC


@pytest.mark.parametrize(
    ("start", "change"),
    [(dt.date(2026, 3, 26), dt.date(2026, 3, 29)), (dt.date(2026, 10, 22), dt.date(2026, 10, 25))],
    ids=["spring-forward", "fall-back"],
)
def test_every_local_day_is_processed_exactly_once_across_dst(
    start: dt.date, change: dt.date
) -> None:
    from nightshift.config.pipeline import parse_pipeline
    from nightshift.config.run_date import partition_date_for

    tz = "Europe/Amsterdam"
    dag = _serialized("30 2 * * *", tz, start)
    runs = _runs(dag, 7)
    data = small_pipeline_dict()
    data["schedule"].update(timezone=tz)
    pipeline = parse_pipeline(data, "test.yaml")

    class Run:
        run_type = "scheduled"

        def __init__(self, key: str) -> None:
            self.partition_key = key

    dates = [partition_date_for(pipeline, {"dag_run": Run(r.partition_key)}) for r in runs]
    assert dates == [start + dt.timedelta(days=i) for i in range(7)]
    # Runs stay in the small hours: around the change the wall clock moves at most one hour.
    hours = [r.run_after.astimezone(ZoneInfo(tz)).hour for r in runs]
    assert all(h in (1, 2, 3) for h in hours), hours
    utc_hours = sorted({r.run_after.astimezone(dt.UTC).hour for r in runs})
    assert utc_hours == [0, 1], utc_hours  # 02:30 CEST = 00:30 UTC, 02:30 CET = 01:30 UTC
    assert any(r.run_after.date() >= change for r in runs)


def test_catchup_is_off_so_missed_nights_are_not_run() -> None:
    from airflow.timetables.base import DagRunInfo, TimeRestriction

    dag = _serialized("0 4 * * *", "UTC", dt.date(2026, 1, 1))
    assert dag.catchup is False
    long_ago = DagRunInfo.exact(dt.datetime(2026, 1, 2, 4, tzinfo=dt.UTC))
    info = dag.timetable.next_dagrun_info_v2(
        last_dagrun_info=long_ago,
        # The scheduler's restriction, from the serialized DAG's own catchup setting.
        restriction=TimeRestriction(earliest=dag.start_date, latest=None, catchup=dag.catchup),
    )
    # Without catchup the next run is for the latest complete date, not 2026-01-02.
    now = dt.datetime.now(dt.UTC)
    assert info.run_after > now - dt.timedelta(days=2)
    assert info.partition_key >= (now - dt.timedelta(days=3)).date().isoformat()


def test_a_pipeline_whose_data_ends_has_no_run_after_its_end_date() -> None:
    from airflow.timetables.base import TimeRestriction

    tz = "Europe/Amsterdam"
    dag = _serialized("30 2 * * *", tz, dt.date(2024, 3, 1), end_date="2024-03-03")
    # The scheduler's restriction, from the serialized DAG's own dates, even with catch-up.
    restriction = TimeRestriction(earliest=dag.start_date, latest=dag.end_date, catchup=True)
    keys, last = [], None
    while info := dag.timetable.next_dagrun_info_v2(last_dagrun_info=last, restriction=restriction):
        keys.append(info.partition_key)
        last = info
        assert len(keys) < 10, keys
    # The start date is the first date processed, the end date the last; none for today.
    assert keys == ["2024-03-01", "2024-03-02", "2024-03-03"]


def test_a_cron_that_fires_more_than_once_a_day_is_refused() -> None:
    from nightshift.config.pipeline import ConfigError, parse_pipeline

    data = small_pipeline_dict()
    data["schedule"].update(cron="*/10 * * * *")
    with pytest.raises(ConfigError, match="fires more than once a day"):
        parse_pipeline(data, "test.yaml")


def test_a_backfill_by_dates_gets_exactly_those_dates_as_keys() -> None:
    # As `airflow backfill create` asks: the first date's midnight to the last one's end,
    # read as wall-clock times in the pipeline's timezone.
    dag = _serialized("30 2 * * *", "America/New_York", dt.date(2026, 1, 1))
    infos = dag.iter_dagrun_infos_between(
        dt.datetime(2026, 11, 5, 0, 0), dt.datetime(2026, 11, 7, 23, 59, 59)
    )
    assert [i.partition_key for i in infos] == ["2026-11-05", "2026-11-06", "2026-11-07"]


def test_an_end_date_before_the_start_date_is_refused() -> None:
    from nightshift.config.pipeline import ConfigError, parse_pipeline

    data = small_pipeline_dict()
    data["schedule"].update(start_date="2026-03-01", end_date="2026-02-01")
    with pytest.raises(ConfigError, match="end_date 2026-02-01 is before start_date 2026-03-01"):
        parse_pipeline(data, "test.yaml")
