"""Validate: a day's raw partition against the pipeline schema; bad data blocks training."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import numpy as np
import pandas as pd
import pandera.errors
import pandera.pandas as pa

from nightshift.config import Pipeline
from nightshift.lake import Lake, Partition, read_bytes

log = logging.getLogger(__name__)

VALIDATION = "validation"

_DTYPES = {
    "int": "Int64",
    "float": "float64",
    "string": "string",
    "bool": "boolean",
    "timestamp": "datetime64[us, UTC]",
}


class DataValidationError(ValueError):
    """A partition failed its checks; the message names file, column, check and examples."""


def build_schema(pipeline: Pipeline) -> pa.DataFrameSchema:
    """Return the pandera schema the pipeline's raw data must satisfy."""
    schema = pipeline.schema_
    columns: dict[str, pa.Column] = {}
    for column in schema.columns:
        checks: list[pa.Check] = []
        nullable = column.nullable
        if column.name == schema.label:
            nullable = False
            if column.type in ("int", "float"):
                checks.append(
                    pa.Check(
                        lambda s: np.isfinite(s.astype("float64")),
                        element_wise=False,
                        name="finite_label",
                    )
                )
            if schema.task == "binary_classification":
                checks.append(
                    pa.Check(lambda s: s.isin([0, 1]), element_wise=False, name="binary_label")
                )
        if column.name == schema.key:
            nullable = False
        columns[column.name] = pa.Column(_DTYPES[column.type], checks=checks, nullable=nullable)
    return pa.DataFrameSchema(
        columns,
        strict=True,
        ordered=False,
        unique=[schema.key] if schema.key else None,
        checks=[pa.Check(lambda df: len(df) > 0, name="has_rows")],
    )


def describe_failures(error: pandera.errors.SchemaErrors, origin: str, limit: int = 5) -> str:
    """Return one readable line per failed (column, check), with a few example values."""
    cases = error.failure_cases
    lines = []
    for (column, check), group in cases.groupby(["column", "check"], dropna=False, sort=True):
        examples = group["failure_case"].head(limit).tolist()
        rows = group["index"].dropna().head(limit).tolist()
        lines.append(
            f"{origin}: column '{column}' failed check '{check}' in {len(group)} row(s); "
            f"examples {examples} at rows {rows}"
        )
    return "\n".join(lines)


def summarize(frame: pd.DataFrame, pipeline: Pipeline) -> dict[str, Any]:
    """Return the data summary that the report shows: rows and missing rates per column."""
    label = frame[pipeline.schema_.label].astype("float64")
    return {
        "rows": len(frame),
        "missing_rate": {c: float(frame[c].isna().mean()) for c in frame.columns},
        "label_mean": float(label.mean()) if len(frame) else float("nan"),
    }


def validate_date(pipeline: Pipeline, lake: Lake, raw: Partition) -> dict[str, Any]:
    """Check every batch of ``raw``; write the summary partition or raise DataValidationError."""
    schema = build_schema(pipeline)
    problems = []
    frames = []
    for path in raw.paths():
        frame = pd.read_parquet(path)
        try:
            schema.validate(frame, lazy=True)
        except pandera.errors.SchemaErrors as exc:
            problems.append(describe_failures(exc, path))
        frames.append(frame)
    day = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    key = pipeline.schema_.key
    if not problems and key and day[key].duplicated().any():
        dupes = day.loc[day[key].duplicated(), key].head(5).tolist()
        problems.append(f"{raw.uri}: column '{key}' has duplicate keys across batches: {dupes}")
    if problems:
        message = f"{pipeline.name} {raw.partition_date}: data failed validation\n" + "\n".join(
            problems
        )
        raise DataValidationError(message)
    summary = summarize(day, pipeline)
    summary["batches"] = len(raw.files)
    summary["rows_per_batch"] = [len(frame) for frame in frames]
    with lake.writer(VALIDATION, raw.partition_date) as writer:
        writer.write_bytes("summary.json", json.dumps(summary, sort_keys=True).encode())
    log.info("%s %s: %d rows passed validation", pipeline.name, raw.partition_date, summary["rows"])
    return summary


def read_summary(lake: Lake, partition_date: dt.date) -> dict[str, Any]:
    """Return the validation summary written for ``partition_date``."""
    partition = lake.read(VALIDATION, partition_date)
    result: dict[str, Any] = json.loads(read_bytes(partition.paths()[0]))
    return result
