"""Validate: a day's raw partition against the pipeline schema; bad data blocks training."""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import pandera.errors
import pandera.pandas as pa

from nightshift.config.pipeline import PANDAS_DTYPES, Pipeline
from nightshift.storage.lake import (
    FIRST_DATA_ROW,
    SOURCE_ROW,
    Lake,
    Partition,
    PartitionMissing,
    read_bytes,
    read_frame,
)
from nightshift.storage.quarantine import quarantine, release_command

log = logging.getLogger(__name__)

VALIDATION = "validation"


class DataValidationError(ValueError):
    """A partition failed a blocking check; the message names file, column, check, examples.

    ``failures`` holds every finding (blocking and warnings), and ``quarantine`` where a copy
    of the offending input is held.
    """

    def __init__(
        self, message: str, failures: list[Finding], quarantine: str | None = None
    ) -> None:
        super().__init__(message)
        self.failures = failures
        self.quarantine = quarantine


@dataclass(frozen=True)
class Finding:
    """One failed check on one column of one file, with a few offending rows."""

    kind: str
    severity: str
    file: str
    column: str | None
    check: str
    rows: int
    examples: list[Any]
    row_numbers: list[int]

    def line(self) -> str:
        """Return the finding as one line naming the file, column, check and examples."""
        where = f"column '{self.column}'" if self.column else "the file"
        return (
            f"{self.file}: {where} failed check '{self.check}' ({self.kind}, {self.severity}) "
            f"in {self.rows} row(s); examples {self.examples} at rows {self.row_numbers}"
        )


@dataclass(frozen=True)
class ValidationSummary:
    """A date that passed validation: its rows, missing rates and label mean (what the
    report shows), its batches, the findings that only warn, and the rows filters dropped."""

    rows: int
    missing_rate: dict[str, float]
    label_mean: float
    batches: int
    rows_per_batch: list[int]
    warnings: list[Finding]
    filtered: dict[str, int]  # filter rule -> rows it dropped

    def to_dict(self) -> dict[str, Any]:
        """The summary as the validation partition and metrics.json hold it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationSummary:
        """Read one back from ``to_dict``'s form (a partition an older version wrote may
        lack the later keys: batches, rows per batch, warnings, filtered)."""
        return cls(
            rows=data["rows"],
            missing_rate=data.get("missing_rate", {}),
            label_mean=data.get("label_mean", float("nan")),
            batches=data.get("batches", 0),
            rows_per_batch=data.get("rows_per_batch", []),
            warnings=[Finding(**f) for f in data.get("warnings", [])],
            filtered=data.get("filtered", {}),
        )


def _finite(series: pd.Series) -> pd.Series:
    return pd.Series(np.isfinite(series.astype("float64").to_numpy()), index=series.index)


def build_schema(pipeline: Pipeline) -> pa.DataFrameSchema:
    """Return the pandera schema the pipeline's raw data must satisfy (every check kind): the
    columns after ingest's derive and drop (``Pipeline.data_schema``)."""
    schema = pipeline.data_schema
    rules = pipeline.validation
    columns: dict[str, pa.Column] = {}
    for column in schema.columns:
        checks: list[pa.Check] = []
        nullable = column.nullable
        if column.name == schema.label:
            nullable = False
            if column.type in ("int", "float"):
                checks.append(pa.Check(_finite, name="finite_label"))
            if schema.is_classification:
                checks.append(
                    pa.Check(lambda s: s.isin([0, 1]), element_wise=False, name="binary_label")
                )
        if column.name == schema.key:
            nullable = False
        if nullable:
            checks.append(pa.Check(lambda s: bool(s.notna().any()), name="all_null"))
        bounds = rules.ranges.get(column.name)
        if bounds is not None and bounds.min is not None:
            checks.append(pa.Check.ge(bounds.min))
        if bounds is not None and bounds.max is not None:
            checks.append(pa.Check.le(bounds.max))
        if column.name in rules.categories:
            checks.append(pa.Check.isin(rules.categories[column.name]))
        columns[column.name] = pa.Column(
            PANDAS_DTYPES[column.type], checks=checks, nullable=nullable
        )
    return pa.DataFrameSchema(
        columns,
        strict=True,
        ordered=False,
        unique=[schema.key] if schema.key else None,
        checks=[pa.Check(lambda df: len(df) > 0, name="has_rows")],
    )


def classify(check: str, column: str | None, pipeline: Pipeline) -> str:
    """Return the kind of a pandera check, as ``validation.severity`` names them."""
    if check in ("finite_label", "binary_label") or (
        check == "not_nullable" and column == pipeline.schema_.label
    ):
        return "label"
    if check == "not_nullable":
        return "nulls"
    if check == "all_null":
        return "all_null"
    if check == "has_rows":
        return "empty"
    if check.startswith(("greater_than_or_equal_to", "less_than_or_equal_to", "in_range")):
        return "ranges"
    if check.startswith(("isin", "notin")):
        return "categories"
    if "uniqueness" in check:
        return "duplicates"
    return "schema"  # dtype, missing or unexpected columns: the data cannot be used


def findings(
    error: pandera.errors.SchemaErrors, origin: str, pipeline: Pipeline, limit: int = 5
) -> list[Finding]:
    """Return one finding per failed (column, check), with a few example values and rows."""
    cases = error.failure_cases
    found = []
    for (column, check), group in cases.groupby(["column", "check"], dropna=False, sort=True):
        column_name = None if pd.isna(column) else str(column)
        kind = classify(str(check), column_name, pipeline)
        severity = "block" if kind == "schema" else pipeline.validation.severity_of(kind)
        found.append(
            Finding(
                kind=kind,
                severity=severity,
                file=origin,
                column=column_name,
                check=str(check),
                rows=len(group),
                examples=[_plain(v) for v in group["failure_case"].head(limit).tolist()],
                row_numbers=[int(i) for i in group["index"].dropna().head(limit).tolist()],
            )
        )
    return found


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return None if value is None else str(value)
    if pd.isna(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value if isinstance(value, int | float | str | bool) else str(value)


def _other_date(
    pipeline: Pipeline, frame: pd.DataFrame, partition_date: dt.date, origin: str
) -> Finding | None:
    """Return a finding when rows' timestamps fall on another day than the partition's."""
    column = pipeline.schema_.timestamp
    if column is None or column not in frame or not len(frame):
        return None
    # Files are cut at midnight UTC or at local midnight, depending on who writes them: a row
    # belongs to the date if its timestamp falls on it in either.
    stamps = frame[column]
    local = stamps.dt.tz_convert(pipeline.schedule.timezone).dt.date
    utc = stamps.dt.tz_convert("UTC").dt.date
    wrong = (local != partition_date) & (utc != partition_date)
    if not wrong.any():
        return None
    return Finding(
        kind="other_date",
        severity=pipeline.validation.severity_of("other_date"),
        file=origin,
        column=column,
        check=f"date == {partition_date.isoformat()} (UTC or {pipeline.schedule.timezone})",
        rows=int(wrong.sum()),
        examples=[str(v) for v in frame.loc[wrong, column].head(5)],
        row_numbers=[int(i) for i in frame.index[wrong][:5]],
    )


# One zone per UTC offset, to name in a hint (standard time; the user picks their own).
_ZONES = {
    -10: "Pacific/Honolulu",
    -8: "America/Los_Angeles",
    -7: "America/Denver",
    -6: "America/Chicago",
    -5: "America/New_York",
    -4: "America/Halifax",
    -3: "America/Sao_Paulo",
    0: "Europe/London",
    1: "Europe/Amsterdam",
    2: "Europe/Athens",
    3: "Europe/Moscow",
    5: "Asia/Karachi",
    8: "Asia/Singapore",
    9: "Asia/Tokyo",
    10: "Australia/Brisbane",
}


def _with_zone_hint(
    pipeline: Pipeline, day: pd.DataFrame, partition_date: dt.date, found: list[Finding]
) -> list[Finding]:
    """Add to the day's other-date findings which UTC offsets every row would fit (a file cut
    at local midnight, its timestamps written in UTC with a Z), naming zones to try."""
    column = pipeline.schema_.timestamp
    if column is None or not any(f.kind == "other_date" for f in found):
        return found
    utc = day[column].dt.tz_convert("UTC")
    fits = [
        hours
        for hours in range(-12, 15)
        if hours and bool(((utc + pd.Timedelta(hours=hours)).dt.date == partition_date).all())
    ]
    if not fits:
        return found
    zones = [f"{_ZONES[h]} (UTC{h:+d})" for h in sorted(fits, key=abs) if h in _ZONES][:3]
    span = f"UTC{fits[0]:+d}" if len(fits) == 1 else f"UTC{min(fits):+d} to UTC{max(fits):+d}"
    hint = (
        f"; every row of the day falls on {partition_date} at {span}: is the file cut at local "
        f"midnight? Set schedule.timezone, e.g. {' or '.join(zones) or 'your zone'}"
    )
    return [replace(f, check=f.check + hint) if f.kind == "other_date" else f for f in found]


def _row_count(
    pipeline: Pipeline, lake: Lake, partition_date: dt.date, rows: int, origin: str
) -> Finding | None:
    """Return a finding when the day's rows are far from the recent days' mean."""
    rule = pipeline.validation.row_count
    history = []
    for offset in range(1, rule.history_days + 1):
        day = partition_date - dt.timedelta(days=offset)
        try:
            history.append(read_summary(lake, day).rows)
        except (PartitionMissing, KeyError, ValueError):
            continue
    if not history or not rows:
        return None
    mean = float(np.mean(history))
    ratio = rows / mean
    if rule.min_ratio <= ratio <= rule.max_ratio:
        return None
    # A short day (a partial upload, a lost shard) blocks by default; a long one only warns.
    # A severity set in the YAML applies to both.
    severity = pipeline.validation.severity_of("row_count")
    if "row_count" not in pipeline.validation.severity and ratio > rule.max_ratio:
        severity = "warn"
    return Finding(
        kind="row_count",
        severity=severity,
        file=origin,
        column=None,
        check=f"rows within {rule.min_ratio}x-{rule.max_ratio}x of the last {len(history)} days",
        rows=rows,
        examples=[f"{rows} rows vs mean {mean:.0f} ({ratio:.2f}x)"],
        row_numbers=[],
    )


def check_frame(
    pipeline: Pipeline, frame: pd.DataFrame, origin: str, partition_date: dt.date
) -> list[Finding]:
    """Return every finding on one frame: the pandera schema and the partition-date check."""
    found: list[Finding] = []
    try:
        build_schema(pipeline).validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        found.extend(findings(exc, origin, pipeline))
    other = _other_date(pipeline, frame, partition_date, origin)
    if other is not None:
        found.append(other)
    return [f for f in found if f.severity != "off"]


def summarize(frame: pd.DataFrame, pipeline: Pipeline) -> dict[str, Any]:
    """Return the data summary that the report shows: rows and missing rates per column."""
    label = frame[pipeline.schema_.label].astype("float64")
    return {
        "rows": len(frame),
        "missing_rate": {c: float(frame[c].isna().mean()) for c in frame.columns},
        "label_mean": float(label.mean()) if len(frame) else float("nan"),
    }


def validate_date(pipeline: Pipeline, lake: Lake, raw: Partition) -> ValidationSummary:
    """Check every batch of ``raw``; write the summary partition or raise DataValidationError.

    Warnings are kept in the summary (the report shows them). A blocking finding moves the
    offending input to quarantine with a reason file and raises naming file, column, check and
    example rows (``stages.validate`` writes the date's validation page from it).
    """
    origin = str(raw.meta.get("origin", raw.uri))
    frames, found = _check_batches(pipeline, raw, origin)
    day = pd.concat(frames) if frames else pd.DataFrame()
    found += _day_findings(pipeline, raw, day, len(frames), origin)
    counted = _row_count(pipeline, lake, raw.partition_date, len(day), origin)
    if counted is not None:
        found.append(counted)
    found = _with_zone_hint(pipeline, day, raw.partition_date, found)
    found = [f for f in found if f.severity != "off"]
    blocking = [f for f in found if f.severity == "block"]
    for finding in found:
        (log.error if finding.severity == "block" else log.warning)("%s", finding.line())
    if blocking:
        where = quarantine(
            pipeline, lake, raw.partition_date, raw, [asdict(f) for f in found], "validation"
        )
        message = (
            f"{pipeline.name} {raw.partition_date}: data failed validation; training is blocked "
            f"for this date. A copy of the input is held in quarantine at {where} (the file "
            "itself is untouched); the date stays blocked until the file changes, or "
            f"`{release_command(pipeline.name, raw.partition_date)}`\n"
            + "\n".join(f.line() for f in blocking)
        )
        raise DataValidationError(message, found, where)
    summary = ValidationSummary(
        **summarize(day, pipeline),
        batches=len(raw.files),
        rows_per_batch=[len(frame) for frame in frames],
        warnings=found,
        filtered=dict(raw.meta.get("filtered") or {}),
    )
    with lake.writer(VALIDATION, raw.partition_date) as writer:
        writer.write_bytes("summary.json", json.dumps(summary.to_dict(), sort_keys=True).encode())
    log.info("%s %s: %d rows passed validation", pipeline.name, raw.partition_date, summary.rows)
    return summary


def _check_batches(
    pipeline: Pipeline, raw: Partition, origin: str
) -> tuple[list[pd.DataFrame], list[Finding]]:
    """Check each batch of ``raw`` against the schema; return the batches and findings."""
    found: list[Finding] = []
    frames = []
    offset = 0
    for path in raw.paths():
        frame = read_frame(path)
        # Findings name rows of the user's file, as a spreadsheet shows them (ingest kept each
        # row's number); a raw partition written without them counts from the top of the day.
        if SOURCE_ROW in frame.columns:
            frame = frame.set_index(SOURCE_ROW)
            frame.index.name = None
        else:
            frame.index = pd.RangeIndex(
                offset + FIRST_DATA_ROW, offset + FIRST_DATA_ROW + len(frame)
            )
        offset += len(frame)
        # Name the user's file and the lake batch that holds the rows.
        where = f"{origin} (lake batch {path})"
        found.extend(check_frame(pipeline, frame, where, raw.partition_date))
        frames.append(frame)
    return frames, found


def _day_findings(
    pipeline: Pipeline, raw: Partition, day: pd.DataFrame, batches: int, origin: str
) -> list[Finding]:
    """Return what only the whole day shows: keys repeated across batches, extra columns."""
    found: list[Finding] = []
    key = pipeline.schema_.key
    if key and len(day) and day[key].duplicated().any() and batches > 1:
        duplicated = day[key].duplicated(keep=False)
        found.append(
            Finding(
                "duplicates",
                pipeline.validation.severity_of("duplicates"),
                origin,
                key,
                "unique across the day",
                int(day[key].duplicated().sum()),
                [_plain(v) for v in day.loc[duplicated, key].head(5)],
                [int(i) for i in day.index[duplicated][:5]],
            )
        )
    for extra in raw.meta.get("extra_columns") or []:
        severity = pipeline.validation.severity_of("extra_columns")
        rows = raw.meta.get("rows", 0)
        found.append(
            Finding("extra_columns", severity, origin, extra, "column in schema", rows, [], [])
        )
    return found


def read_summary(lake: Lake, partition_date: dt.date) -> ValidationSummary:
    """Return the validation summary written for ``partition_date``."""
    partition = lake.read(VALIDATION, partition_date)
    return ValidationSummary.from_dict(json.loads(read_bytes(partition.paths()[0])))
