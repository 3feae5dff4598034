"""Every kind of bad input has a defined outcome: blocked (quarantined, reason named) or warned.

Each case writes a user's dated source file for one day, ingests and validates it as the
nightly run does, and checks what the user sees: the error names the file, column and check;
the input is moved to quarantine with a reason file; nothing of that date reaches the lake's
validated stage; a good day beside it is untouched.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nightshift.config.pipeline import parse_pipeline
from nightshift.data.generator import generate_day
from nightshift.data.ingest import SourceError, ingest_date
from nightshift.data.validate import (
    VALIDATION,
    DataValidationError,
    ValidationSummary,
    read_summary,
)
from nightshift.night import inputs, stages
from nightshift.storage.lake import PartitionMissing, lake_for
from tests.conftest import small_pipeline_dict, write_pipeline

GOOD = dt.date(2026, 9, 14)
DAY = dt.date(2026, 9, 15)


def _pipeline(tmp_path: Path, fmt: str = "csv", **validation):
    data = small_pipeline_dict(rows=600)
    data["source"] = {
        "kind": "files",
        "path": str(tmp_path / "in" / f"{{date}}.{fmt}"),
        "format": fmt,
    }
    data["output"] = {
        "lake": str(tmp_path / "lake"),
        "reports": str(tmp_path / "reports"),
        "mlflow": str(tmp_path / "mlflow"),
    }
    if validation:
        data["validation"] = validation
    return parse_pipeline(data, "bad_inputs.yaml")


def _write(path: Path, frame: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def _day(date: dt.date = DAY) -> pd.DataFrame:
    return generate_day(date, rows=600, seed=7)


def _run(pipeline, date: dt.date = DAY) -> ValidationSummary:
    """Ingest and validate ``date`` as the night does; return its validation summary."""
    lake = lake_for(pipeline)
    ingest_date(pipeline, lake, date)
    stages.validate(pipeline, [date], date)
    return read_summary(lake, date)


def _quarantine(tmp_path: Path) -> dict:
    [reason] = list((tmp_path / "lake").glob(f"*/quarantine/date={DAY}/*/reason.json"))
    return json.loads(reason.read_text())


def _cut(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _mutations():
    def drop(column):
        return lambda f: f.drop(columns=[column])

    def nan_inf_label(f):
        f = f.astype({"converted": "float64"})
        f.loc[[3, 7], "converted"] = np.nan
        return f

    def inf_label(f):
        f = f.astype({"converted": "float64"})
        f.loc[5, "converted"] = np.inf
        return f

    def other_date(f):
        f = f.copy()
        f.loc[:9, "event_time"] = f.loc[:9, "event_time"] - pd.Timedelta(days=2)
        return f

    return {
        "zero_rows": (lambda f: f.iloc[:0], DataValidationError, ["has_rows", "the file"]),
        "missing_column": (drop("page_views"), SourceError, ["missing column(s) ['page_views']"]),
        "renamed_column": (
            lambda f: f.rename(columns={"page_views": "pageviews"}),
            SourceError,
            ["missing column(s) ['page_views']", "unexpected column(s) ['pageviews']: renamed?"],
        ),
        "type_change": (
            lambda f: f.assign(items=["many"] * len(f)),
            SourceError,
            ["column 'items' is not int", "'many'"],
        ),
        "all_null_column": (
            lambda f: f.assign(discount_pct=np.nan),
            DataValidationError,
            ["column 'discount_pct' failed check 'all_null'"],
        ),
        "nan_labels": (
            nan_inf_label,
            DataValidationError,
            [
                "column 'converted' failed check 'not_nullable' (label, block) in 2 row(s)",
                "at rows [5, 9]",
            ],
        ),
        "inf_label": (
            inf_label,
            SourceError,
            ["column 'converted' is not int", "infinite values at rows [7]"],
        ),
        "duplicated_rows": (
            lambda f: pd.concat([f, f.iloc[[10, 11]]], ignore_index=True),
            DataValidationError,
            ["column 'session_id' failed check", "duplicates, block"],
        ),
        "rows_of_another_date": (
            other_date,
            DataValidationError,
            [
                "column 'event_time' failed check 'date == 2026-09-15 (UTC or Europe/Amsterdam)'",
                "in 10 row(s)",
            ],
        ),
    }


def _landing(tmp_path: Path) -> dict[str, str]:
    """The landing folder's files and their SHA-256: the user's input, never nightshift's."""
    folder = tmp_path / "in"
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _holds(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "lake").glob(f"*/quarantine/date={DAY}/*"))


@pytest.mark.parametrize("case", list(_mutations()))
def test_a_bad_day_is_blocked_named_and_quarantined(tmp_path: Path, case: str) -> None:
    mutate, error, expected = _mutations()[case]
    pipeline = _pipeline(tmp_path)
    _write(tmp_path / "in" / f"{GOOD}.csv", _day(GOOD))
    good = _run(pipeline, GOOD)
    source = _write(tmp_path / "in" / f"{DAY}.csv", mutate(_day()))
    landing = _landing(tmp_path)

    with pytest.raises(error) as caught:
        _run(pipeline)
    message = str(caught.value)
    assert str(source) in message, message  # names the file
    for text in expected:
        assert text in message, (text, message)
    # A copy of the input is held in quarantine, with the reason and the file's checksum; the
    # user's landing folder is byte for byte as it was; the date has no validated partition.
    assert _landing(tmp_path) == landing
    reason = _quarantine(tmp_path)
    assert reason["partition_date"] == DAY.isoformat() and reason["failures"]
    assert reason["source_sha256"] == landing[source.name]
    copied = Path(reason["copied_source_to"])
    assert copied.read_bytes() == source.read_bytes() and copied.name == source.name
    lake = lake_for(pipeline)
    assert not lake.has(VALIDATION, DAY)
    # The good day beside it is untouched.
    assert read_summary(lake, GOOD).rows == good.rows
    if error is DataValidationError:
        page = tmp_path / "reports" / pipeline.name / DAY.isoformat() / "validation.html"
        assert "Blocked" in page.read_text() and caught.value.quarantine in page.read_text()
        assert "nightshift quarantine release" in page.read_text()
    # A retry with the same file is refused at once, naming the hold and how to end it; it
    # neither quarantines again nor touches the file.
    with pytest.raises(SourceError, match="refused before") as again:
        _run(pipeline)
    assert str(_holds(tmp_path)[0]) in str(again.value)
    assert again.value.final  # the DAG's ingest task fails at once instead of retrying
    assert "nightshift quarantine release --pipeline" in str(again.value)
    assert len(_holds(tmp_path)) == 1 and _landing(tmp_path) == landing
    # A corrected file (new bytes) is read as usual.
    _write(source, _day())
    assert _run(pipeline).rows > 0 and lake.has(VALIDATION, DAY)


def test_an_operator_releases_a_hold_and_lists_what_is_held(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from nightshift.cli import main

    pipeline = _pipeline(tmp_path, severity={"extra_columns": "block"})
    monkeypatch.setenv("NIGHTSHIFT_PIPELINES_DIR", str(tmp_path / "pipelines"))
    (tmp_path / "pipelines").mkdir()
    write_pipeline(tmp_path / "pipelines", pipeline.model_dump(by_alias=True, mode="json"))
    _write(tmp_path / "in" / f"{DAY}.csv", _day().assign(coupon_code="X1"))
    landing = _landing(tmp_path)
    with pytest.raises(DataValidationError):
        _run(pipeline)
    with pytest.raises(SourceError, match="refused before"):
        _run(pipeline)
    assert main(["quarantine", "list", "--pipeline", pipeline.name]) == 0
    [row] = capsys.readouterr().out.splitlines()[1:]
    assert row.split("\t")[:4] == [pipeline.name, DAY.isoformat(), "holding", "validation"]
    assert "coupon_code" in row
    args = ["--pipeline", pipeline.name, "--date", DAY.isoformat()]
    assert main(["quarantine", "release", *args, "--reason", "checked by hand"]) == 0
    assert "released" in capsys.readouterr().out
    released = json.loads((_holds(tmp_path)[0] / "released.json").read_text())
    assert released["reason"] == "checked by hand"
    # Released: the same file is read and validated again (and, still bad, held again).
    with pytest.raises(DataValidationError):
        _run(pipeline)
    assert len(_holds(tmp_path)) == 2 and _landing(tmp_path) == landing
    # Nothing left to release names why.
    assert main(["quarantine", "release", *args, "--reason", "again"]) == 0
    assert main(["quarantine", "release", *args, "--reason", "twice"]) == 2
    assert "already released" in capsys.readouterr().err


def test_no_file_for_the_date(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path)
    with pytest.raises(SourceError, match=rf"{DAY}.csv: no source file for {DAY}") as caught:
        _run(pipeline)
    assert not caught.value.final  # it may still arrive: the task's retries wait for it


def _cut_inside_last_field(path: Path) -> None:
    """Cut the file one byte into its last field: every field there, no final line end."""
    path.write_bytes(path.read_bytes().rstrip(b"\n")[:-1])


@pytest.mark.parametrize(
    ("fmt", "cut", "expected"),
    [
        ("parquet", lambda path: _cut(path, 0.6), "cannot be read as parquet"),
        ("csv", lambda path: _cut(path, 0.6), "possibly truncated CSV: the last line (row "),
        ("csv", _cut_inside_last_field, "possibly truncated CSV: the last line (row "),
    ],
    ids=["parquet", "csv-mid-row", "csv-inside-last-field"],
)
def test_a_truncated_file_is_refused_and_quarantined(tmp_path: Path, fmt, cut, expected) -> None:
    pipeline = _pipeline(tmp_path, fmt)
    source = _write(tmp_path / "in" / f"{DAY}.{fmt}", _day())
    cut(source)
    landing = _landing(tmp_path)
    with pytest.raises(SourceError) as caught:
        _run(pipeline)
    assert expected in str(caught.value) and str(source) in str(caught.value)
    assert "held in quarantine" in str(caught.value) and "file itself is untouched" in str(
        caught.value
    )
    assert _quarantine(tmp_path)["stage"] == "ingest"
    assert _landing(tmp_path) == landing


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path)
    source = tmp_path / "in" / f"{DAY}.csv"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"")
    with pytest.raises(SourceError, match=r"the file is empty \(0 bytes\)"):
        _run(pipeline)
    assert source.exists() and source.read_bytes() == b""


def test_an_extra_column_warns_and_the_day_goes_on(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path)
    _write(tmp_path / "in" / f"{DAY}.csv", _day().assign(coupon_code="X1"))
    summary = _run(pipeline)
    [warning] = summary.warnings
    assert (warning.kind, warning.column, warning.severity) == (
        "extra_columns",
        "coupon_code",
        "warn",
    )


def test_severity_is_configurable(tmp_path: Path) -> None:
    # Extra columns block when the YAML says so; duplicates only warn.
    pipeline = _pipeline(tmp_path, severity={"extra_columns": "block", "duplicates": "warn"})
    _write(tmp_path / "in" / f"{DAY}.csv", _day().assign(coupon_code="X1"))
    with pytest.raises(DataValidationError, match="column 'coupon_code' failed check"):
        _run(pipeline)
    frame = _day()
    _write(tmp_path / "in" / f"{DAY}.csv", pd.concat([frame, frame.iloc[[1]]], ignore_index=True))
    summary = _run(pipeline)
    assert [w.kind for w in summary.warnings] == ["duplicates"]


def test_ranges_categories_and_row_count(tmp_path: Path) -> None:
    pipeline = _pipeline(
        tmp_path,
        ranges={"discount_pct": {"min": 0, "max": 50}},
        categories={"channel": ["web", "ios", "android", "partner", "email"]},
        severity={"categories": "block"},
    )
    for offset in range(3, 0, -1):
        date = DAY - dt.timedelta(days=offset)
        _write(tmp_path / "in" / f"{date}.csv", _day(date))
        _run(pipeline, date)
    frame = _day()
    frame.loc[4, "discount_pct"] = 80.0
    frame.loc[6, "channel"] = "fax"
    _write(tmp_path / "in" / f"{DAY}.csv", frame)
    with pytest.raises(DataValidationError) as caught:
        _run(pipeline)
    message = str(caught.value)
    assert "column 'discount_pct' failed check 'less_than_or_equal_to(50.0)'" in message
    assert "examples [80.0] at rows [6]" in message
    assert (
        "column 'channel' failed check 'isin([" in message
        and "examples ['fax'] at rows [8]" in message
    )


@pytest.mark.parametrize(
    ("severity", "rows", "outcome"),
    [
        ({}, 50, "block"),  # a short day blocks by default: a partial upload, a lost shard
        ({}, 2400, "warn"),  # a long day only warns by default
        ({"row_count": "warn"}, 50, "warn"),  # as the YAML says
    ],
    ids=["short-blocks", "long-warns", "short-warns-when-set"],
)
def test_a_day_far_from_the_recent_row_count(tmp_path: Path, severity, rows, outcome) -> None:
    pipeline = _pipeline(tmp_path, severity=severity) if severity else _pipeline(tmp_path)
    for offset in range(3, 0, -1):
        date = DAY - dt.timedelta(days=offset)
        _write(tmp_path / "in" / f"{date}.csv", _day(date))
        _run(pipeline, date)
    frame = _day()
    day = frame.iloc[:rows] if rows < len(frame) else _many(frame, rows)
    _write(tmp_path / "in" / f"{DAY}.csv", day)
    if outcome == "block":
        with pytest.raises(DataValidationError, match=r"failed check .rows within 0\.5x-2\.0x"):
            _run(pipeline)
        return
    [warning] = _run(pipeline).warnings
    assert warning.kind == "row_count" and warning.severity == "warn"


def _many(frame: pd.DataFrame, rows: int) -> pd.DataFrame:
    """``rows`` rows of the day, with fresh session ids (no duplicate keys)."""
    many = pd.concat([frame] * (rows // len(frame) + 1), ignore_index=True).iloc[:rows].copy()
    many["session_id"] = range(1, len(many) + 1)
    return many


def test_a_bad_window_day_is_left_out_but_a_bad_run_date_stops_the_run(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path)
    window = inputs.window_dates(pipeline, DAY)
    _write(tmp_path / "in" / f"{window[0]}.csv", _day(window[0]).assign(discount_pct=np.nan))
    _write(tmp_path / "in" / f"{window[1]}.csv", _day(window[1]))
    _write(tmp_path / "in" / f"{DAY}.csv", _day())
    ingested = stages.ingest(pipeline, DAY)
    validated = stages.validate(pipeline, ingested.dates, DAY)
    assert validated.dates == [window[1], DAY]
    assert "all_null" in validated.skipped[window[0]]
    # Now the run date itself is bad: the stage raises and nothing downstream runs.
    _write(tmp_path / "in" / f"{DAY}.csv", _day().assign(discount_pct=np.nan))
    stages.ingest(pipeline, DAY)
    with pytest.raises(DataValidationError):
        stages.validate(pipeline, [DAY], DAY)
    with pytest.raises(PartitionMissing):
        lake_for(pipeline).read("processed", DAY)


@pytest.mark.e2e
def test_the_report_names_the_window_days_left_out_and_why(tmp_path: Path) -> None:
    found = _pipeline(tmp_path)
    pipeline = found.model_copy(
        update={"training": found.training.model_copy(update={"window_days": 3})}
    )
    window = inputs.window_dates(pipeline, DAY)
    _write(tmp_path / "in" / f"{window[0]}.csv", _day(window[0]).assign(discount_pct=np.nan))
    _write(tmp_path / "in" / f"{window[2]}.csv", _day(window[2]))  # no file for window[1]
    _write(tmp_path / "in" / f"{DAY}.csv", _day())
    landing = _landing(tmp_path)
    results = stages.run_nightly(pipeline, DAY, run_id="manual__left_out")
    metrics = json.loads(Path(results["publish"]["metrics"]).read_text())
    left_out = metrics["training_window"]["left_out"]
    assert sorted(left_out) == [window[0].isoformat(), window[1].isoformat()]
    assert (
        "held in quarantine (validation: column 'discount_pct' failed check 'all_null'"
        in (left_out[window[0].isoformat()])
    )
    assert left_out[window[1].isoformat()].startswith("no data: no source file")
    # Which of them is held is said as data, for the alerts, not only in the prose.
    assert metrics["training_window"]["quarantined"] == [window[0].isoformat()]
    html = Path(results["publish"]["report"]).read_text()
    assert "Left out of the window:" in html and window[0].isoformat() in html
    assert _landing(tmp_path) == landing


def test_findings_name_rows_of_the_file_not_of_the_sorted_day(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path, ranges={"discount_pct": {"min": 0, "max": 50}})
    # Rows out of time order, as exports often are: ingest sorts them by the timestamp.
    frame = _day().iloc[::-1].reset_index(drop=True)
    frame.loc[10, "discount_pct"] = 99.0
    source = _write(tmp_path / "in" / f"{DAY}.csv", frame)
    with pytest.raises(DataValidationError) as caught:
        _run(pipeline)
    # Row 12 of the file as a spreadsheet shows it: the header is row 1, data row 10 is row 12.
    assert source.read_text().splitlines()[11].split(",")[
        frame.columns.get_loc("discount_pct")
    ] == ("99.0")
    assert "examples [99.0] at rows [12]" in str(caught.value), str(caught.value)


def test_nightshift_run_names_each_finding_without_a_traceback(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from nightshift.cli import main

    caplog.set_level(logging.INFO, logger="nightshift.progress")

    pipeline = _pipeline(tmp_path)
    monkeypatch.setenv("NIGHTSHIFT_PIPELINES_DIR", str(tmp_path / "pipelines"))
    (tmp_path / "pipelines").mkdir()
    write_pipeline(tmp_path / "pipelines", pipeline.model_dump(by_alias=True, mode="json"))
    frame = _day().assign(discount_pct=np.nan)
    frame.loc[[3, 7], "converted"] = None
    _write(tmp_path / "in" / f"{DAY}.csv", frame)
    args = ["run", "--pipeline", pipeline.name, "--date", DAY.isoformat()]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "failed check" in line]
    assert len(lines) == 2, err  # one line per finding: the all-null column, the null labels
    assert any("column 'converted'" in line and "at rows [5, 9]" in line for line in lines)
    # -v shows where it came from as well.
    with pytest.raises(SourceError, match="refused before"):
        main(["-v", *args])
    # Fixed, the same command runs the night, one line per stage as it finishes.
    for offset in (0, 1, 2):
        day = DAY - dt.timedelta(days=offset)
        _write(tmp_path / "in" / f"{day}.csv", _day(day))
    assert main(args) == 0
    progress = [line for line in capsys.readouterr().err.splitlines() if line.startswith("  [")]
    assert [line.split("]")[0] for line in progress] == [f"  [{n}/8" for n in range(1, 9)]
    assert progress[0].startswith("  [1/8] ingest: ") and progress[-1].endswith(" s")
    # Inside the long stages, a line each tenth of the way: batches preprocessed, XGBoost's
    # rounds (reported by the workers), the batch-trained model's batches.
    said = [r.getMessage() for r in caplog.records if r.name == "nightshift.progress"]
    rounds = [line for line in said if ": round " in line]
    assert rounds[-1] == f"{pipeline.name} xgboost: round 30/30 (100%)" and len(rounds) <= 10
    assert any(f"{DAY} preprocess: batch " in line for line in said), said
    assert any(line.endswith("(100%)") and "sgd" in line for line in said), said


def test_quarantine_holds_the_bytes_ingest_read_not_a_second_read(
    tmp_path: Path, monkeypatch
) -> None:
    """A file still being uploaded is read half, refused and held; the upload then finishes.
    The hold must record the half file ingest read (not the complete file a second read
    finds), so the retry reads the complete file as usual instead of refusing it."""
    from nightshift.storage import quarantine as quarantine_module

    pipeline = _pipeline(tmp_path)
    source = _write(tmp_path / "in" / f"{DAY}.csv", _day())
    complete = source.read_bytes()
    _cut(source, 0.6)  # ingest reads the file mid-upload
    real_quarantine = quarantine_module.quarantine

    def upload_finishes_then_quarantine(*args, **kwargs):
        source.write_bytes(complete)
        return real_quarantine(*args, **kwargs)

    monkeypatch.setattr("nightshift.data.ingest.quarantine", upload_finishes_then_quarantine)
    with pytest.raises(SourceError, match="possibly truncated CSV"):
        _run(pipeline)
    reason = _quarantine(tmp_path)
    half = complete[: int(len(complete) * 0.6)]
    assert reason["source_sha256"] == hashlib.sha256(half).hexdigest()
    assert Path(reason["copied_source_to"]).read_bytes() == half
    monkeypatch.undo()
    assert _run(pipeline).rows > 0  # the retry ingests the complete file
    raw = lake_for(pipeline).read("raw", DAY)
    assert raw.meta["source_sha256"] == hashlib.sha256(complete).hexdigest()


def test_a_quarantine_copy_is_no_more_readable_than_the_source(tmp_path: Path) -> None:
    import os
    import stat

    pipeline = _pipeline(tmp_path)
    source = _write(tmp_path / "in" / f"{DAY}.csv", _day())
    _cut(source, 0.6)
    source.chmod(0o600)
    old = os.umask(0o022)
    try:
        with pytest.raises(SourceError):
            _run(pipeline)
    finally:
        os.umask(old)
    copied = Path(_quarantine(tmp_path)["copied_source_to"])
    assert stat.S_IMODE(copied.stat().st_mode) == 0o600
