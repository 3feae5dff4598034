"""The run-date rules: which date a scheduled, backfilled or triggered run processes, in the
pipeline's timezone (the unit tier: a wrong timezone rule fails here, in seconds)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import pytest

from nightshift.config.pipeline import find_pipeline
from nightshift.config.run_date import partition_date_for


def _context(
    run_type: str, key: str | None, run_after: dt.datetime, run_date: str | None = None
) -> dict:
    run = SimpleNamespace(run_type=run_type, run_after=run_after, logical_date=None)
    run.partition_key = key
    return {"params": {"run_date": run_date}, "dag_run": run}


def test_run_date_rules(project: Path) -> None:
    from airflow.timetables.base import TimeRestriction

    from nightshift.airflow_dag import nightly_timetable

    pipeline = find_pipeline("retail_conversion")  # Europe/Amsterdam, 02:30 nightly
    utc = dt.UTC
    # A scheduled run processes its partition key: the date before its 02:30, local time.
    earliest = dt.datetime(2026, 11, 21, 23, 0, tzinfo=utc)  # the 22nd's midnight, local
    restriction = TimeRestriction(earliest=earliest, latest=None, catchup=True)
    info = nightly_timetable(pipeline.schedule).next_dagrun_info_v2(
        last_dagrun_info=None, restriction=restriction
    )
    assert (info.run_after, info.partition_key) == (
        dt.datetime(2026, 11, 22, 1, 30, tzinfo=utc),
        "2026-11-21",
    )
    scheduled = _context("scheduled", info.partition_key, info.run_after)
    assert partition_date_for(pipeline, scheduled) == dt.date(2026, 11, 21)
    # A manual run with no date processes the last complete day before it was asked.
    asked = dt.datetime(2026, 11, 23, 23, 30, tzinfo=utc)  # already the 24th in Amsterdam
    assert partition_date_for(pipeline, _context("manual", None, asked)) == dt.date(2026, 11, 23)
    # The trigger form's date, or the partition key given with the trigger, says which.
    assert partition_date_for(pipeline, _context("manual", None, asked, "2026-10-01")) == dt.date(
        2026, 10, 1
    )
    assert partition_date_for(pipeline, _context("manual", "2026-10-02", asked)) == dt.date(
        2026, 10, 2
    )
    both = _context("manual", "2026-10-02", asked, "2026-10-01")
    with pytest.raises(ValueError, match="run_date 2026-10-01 and partition key 2026-10-02"):
        partition_date_for(pipeline, both)


def test_the_command_lines_default_date_is_the_dags(project: Path) -> None:
    """``nightshift run`` with no ``--date`` runs the day a manual Airflow run asked at the
    same moment would: yesterday in the pipeline's timezone, not the machine's."""
    from nightshift.cli import _parser as parser
    from nightshift.config.run_date import last_complete_day

    assert parser().parse_args(["run", "--pipeline", "retail_conversion"]).date is None
    pipeline = find_pipeline("retail_conversion")  # Europe/Amsterdam
    moment = dt.datetime(2026, 11, 23, 23, 30, tzinfo=dt.UTC)  # already the 24th there
    dag = partition_date_for(pipeline, _context("manual", None, moment))
    assert last_complete_day(pipeline, moment) == dag == dt.date(2026, 11, 23)
