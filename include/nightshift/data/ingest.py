"""Ingest: land one date of source data in the lake's raw stage, typed and in bounded batches."""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import pandas as pd

from nightshift.config.pipeline import (
    PANDAS_DTYPES,
    FileSource,
    GeneratorSource,
    Pipeline,
    Schema,
    hook_refusal,
)
from nightshift.config.settings import resolve
from nightshift.data.generator import generate_day
from nightshift.storage.lake import FIRST_DATA_ROW, RAW, SOURCE_ROW, Lake, Partition, write_parquet
from nightshift.storage.quarantine import Hold, holding, quarantine, release_command, sha256

log = logging.getLogger(__name__)


class SourceError(ValueError):
    """The source data for a date is missing or does not fit the schema; names file and column.

    ``location`` is the offending file when there is one to quarantine. ``final``: the same
    file will be refused again (it is held in quarantine), so retrying is pointless; a missing
    file is not final (it may still arrive).
    """

    def __init__(self, message: str, location: str | None = None, final: bool = False) -> None:
        super().__init__(message)
        self.location = location
        self.final = final


@dataclass(frozen=True)
class SourceFile:
    """The bytes of a date's source file as ingest read them, once: where from, and their
    SHA-256. Quarantine copies these bytes, never a second read of a file that may have
    changed since (an upload that finished)."""

    location: str
    payload: bytes
    checksum: str


def fetch_source(
    pipeline: Pipeline, partition_date: dt.date, lake: Lake | None = None
) -> SourceFile | None:
    """Return the date's source file (None for the generator).

    With ``lake``, a file held in quarantine for the date (the same bytes that were refused
    before) is refused again at once, naming the hold; a changed file is read as usual.
    """
    source = pipeline.source
    if isinstance(source, GeneratorSource):
        return None
    assert isinstance(source, FileSource)
    payload, location = _fetch(source, partition_date)
    checksum = sha256(payload)
    hold = holding(lake, partition_date, checksum) if lake is not None else None
    if hold is not None:
        raise SourceError(_held_message(pipeline, partition_date, location, hold), final=True)
    return SourceFile(location, payload, checksum)


def read_source(
    pipeline: Pipeline, partition_date: dt.date, fetched: SourceFile | None
) -> tuple[pd.DataFrame, str, str | None]:
    """Return the date's source rows, where they came from and the file's SHA-256."""
    source = pipeline.source
    if fetched is None:
        assert isinstance(source, GeneratorSource)
        frame = generate_day(partition_date, rows=source.rows_per_day, seed=source.seed)
        return frame, f"generator(seed={source.seed}, date={partition_date})", None
    assert isinstance(source, FileSource)
    if not fetched.payload:
        raise SourceError(f"{fetched.location}: the file is empty (0 bytes)", fetched.location)
    frame = _parse(fetched.payload, fetched.location, source.format)
    return frame, fetched.location, fetched.checksum


def source_location(source: FileSource, partition_date: dt.date) -> str:
    """Return where the date's source file is: a URL, or a path resolved in the project."""
    location = source.path_for(partition_date)
    return resolve(location)


def _fetch(source: FileSource, partition_date: dt.date) -> tuple[bytes, str]:
    """Return the bytes of the date's source file and its location."""
    location = source_location(source, partition_date)
    try:
        with fsspec.open(location, "rb", **source.storage_options) as handle:
            return handle.read(), location
    except FileNotFoundError:
        raise SourceError(f"{location}: no source file for {partition_date}") from None


def _parse(payload: bytes, location: str, fmt: str) -> pd.DataFrame:
    """Return the rows of a CSV or Parquet file; refuse a truncated or unreadable one."""
    if fmt == "csv":
        _check_csv_complete(payload, location)
    try:
        if fmt == "csv":
            return pd.read_csv(io.BytesIO(payload), dtype_backend="numpy_nullable")
        return pd.read_parquet(io.BytesIO(payload))
    except Exception as exc:
        raise SourceError(
            f"{location}: cannot be read as {fmt} ({type(exc).__name__}: {exc}); "
            "a truncated or corrupt file?",
            location,
        ) from exc


def _held_message(pipeline: Pipeline, partition_date: dt.date, location: str, hold: Hold) -> str:
    release = release_command(pipeline.name, partition_date)
    return (
        f"{location}: this file was refused before ({hold.stage}: {hold.why}) and is held in "
        f"quarantine at {hold.folder}. It is refused again until it changes (a new version of "
        f"the file is read as usual), or an operator runs `{release}`"
    )


def _check_csv_complete(payload: bytes, location: str) -> None:
    """Raise SourceError if the CSV's last line has no line end: possibly truncated.

    A file cut inside its last field still has every field, so the field count proves
    nothing; a missing final line end is the one sign a partial upload leaves.
    """
    if payload.endswith((b"\n", b"\r")):
        return
    lines = payload.splitlines()
    header = next(csv.reader([lines[0].decode("utf-8", "replace")]), []) if lines else []
    last = next(csv.reader([lines[-1].decode("utf-8", "replace")]), []) if lines else []
    raise SourceError(
        f"{location}: possibly truncated CSV: the last line (row {len(lines)}) has no line "
        f"end ({len(last)} of {len(header)} fields); a file still being written or cut off? "
        "If it is complete, end its last line with a line break",
        location,
    )


def extra_columns(frame: pd.DataFrame, schema: Schema) -> list[str]:
    """Return the columns of ``frame`` that the schema does not name."""
    names = {c.name for c in schema.columns}
    return [str(c) for c in frame.columns if c not in names]


def conform(frame: pd.DataFrame, schema: Schema, origin: str) -> pd.DataFrame:
    """Return ``frame`` with exactly the schema's columns, in order, cast to their types."""
    missing = [c.name for c in schema.columns if c.name not in frame.columns]
    if missing:
        extra = extra_columns(frame, schema)
        hint = f"; unexpected column(s) {extra}: renamed?" if extra else ""
        raise SourceError(
            f"{origin}: missing column(s) {missing}{hint}; found {list(frame.columns)}",
            origin,
        )
    out: dict[str, Any] = {}
    for column in schema.columns:
        values = frame[column.name]
        try:
            if column.type == "timestamp":
                out[column.name] = pd.to_datetime(values, utc=True).astype(
                    PANDAS_DTYPES["timestamp"]
                )
            elif column.type == "int":
                numbers = pd.to_numeric(values)
                infinite = np.isinf(numbers.astype("float64").fillna(0).to_numpy())
                if infinite.any():
                    # Int64 would silently turn inf into -9223372036854775808.
                    rows = (np.flatnonzero(infinite)[:5] + FIRST_DATA_ROW).tolist()
                    raise ValueError(f"infinite values at rows {rows}")
                out[column.name] = numbers.astype(PANDAS_DTYPES["int"])
            else:
                out[column.name] = values.astype(PANDAS_DTYPES[column.type])
        except (TypeError, ValueError) as exc:
            example = values.head(3).tolist()
            raise SourceError(
                f"{origin}: column '{column.name}' is not {column.type} "
                f"(first values {example}): {exc}",
                origin,
            ) from None
    # The row of the user's file each row came from, as a spreadsheet numbers it (the header
    # is row 1): what every finding names, whatever order the lake keeps the rows in.
    out[SOURCE_ROW] = pd.RangeIndex(FIRST_DATA_ROW, FIRST_DATA_ROW + len(frame))
    conformed = pd.DataFrame(out)
    if schema.timestamp is not None:
        conformed = conformed.sort_values(schema.timestamp, kind="stable", ignore_index=True)
    return conformed


def transform(
    pipeline: Pipeline, frame: pd.DataFrame, origin: str
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Apply the pipeline's ``derive``, ``filter``, ``hook`` and ``drop``, in that order;
    return the day's frame and, per filter rule, the rows it left out."""
    from nightshift.config.expressions import parse

    timezone = pipeline.schedule.timezone
    types = pipeline.derived_types  # the types the configuration check gave them
    frame = frame.copy()
    for name, text in pipeline.derive.items():
        frame[name] = parse(text).evaluate(frame, timezone).astype(PANDAS_DTYPES[types[name]])
    filtered: dict[str, int] = {}
    for text in pipeline.filters:
        # A row where the rule is unknown (a null compared) is not kept.
        keep = parse(text).evaluate(frame, timezone).fillna(False).astype(bool)
        filtered[text] = int((~keep).sum())
        frame = frame[keep]
    if pipeline.hook:
        frame = _run_hook(pipeline.hook, frame, origin)
    return frame.drop(columns=pipeline.drop).reset_index(drop=True), filtered


def _run_hook(hook: str, frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Call the user's ``module:function`` on the day's frame; it returns the new frame."""
    import importlib

    refusal = hook_refusal(hook)
    if refusal:  # checked when the YAML was read, and again where the code would run
        raise SourceError(f"hook {refusal}")
    module_name, _, function_name = hook.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise SourceError(f"hook '{hook}' cannot be loaded: {type(exc).__name__}: {exc}") from None
    result = function(frame)
    if not isinstance(result, pd.DataFrame):
        raise SourceError(
            f"{origin}: hook '{hook}' returned {type(result).__name__}, not a pandas DataFrame"
        )
    return result


def batches(frame: pd.DataFrame, batch_size: int) -> list[pd.DataFrame]:
    """Split ``frame`` into consecutive batches of at most ``batch_size`` rows."""
    return [
        frame.iloc[start : start + batch_size].reset_index(drop=True)
        for start in range(0, max(len(frame), 1), batch_size)
    ]


def ingest_date(pipeline: Pipeline, lake: Lake, partition_date: dt.date) -> Partition:
    """Land ``partition_date``'s source data as the raw partition, replacing any earlier one.

    A file that cannot be read or does not fit the schema is copied to quarantine (the file
    itself is never touched) and refused, and stays refused until it changes.
    """
    fetched = fetch_source(pipeline, partition_date, lake)
    try:
        frame, origin, checksum = read_source(pipeline, partition_date, fetched)
        extra = extra_columns(frame, pipeline.schema_)
        frame = conform(frame, pipeline.schema_, origin)
        frame, filtered = transform(pipeline, frame, origin)
    except SourceError as exc:
        if exc.location is None or fetched is None:
            raise
        failure = {"kind": "schema", "severity": "block", "check": "readable", "message": str(exc)}
        where = quarantine(
            pipeline, lake, partition_date, None, [failure], "ingest", exc.location, fetched
        )
        release = release_command(pipeline.name, partition_date)
        raise SourceError(
            f"{exc}\nA copy is held in quarantine at {where} (the file itself is untouched); "
            f"this file stays refused until it changes, or `{release}`",
            None,
            final=True,
        ) from None
    parts = batches(frame, pipeline.training.batch_size)
    with lake.writer(RAW, partition_date) as writer:
        for index, batch in enumerate(parts):
            writer.write_bytes(f"batch-{index:05d}.parquet", write_parquet(batch))
        writer.meta.update(
            {
                "rows": len(frame),
                "batches": len(parts),
                "origin": origin,
                "source_sha256": checksum,
                "filtered": filtered,
                "extra_columns": extra,
            }
        )
    log.info(
        "ingested %d rows for %s from %s in %d batches",
        len(frame),
        partition_date,
        origin,
        len(parts),
    )
    return lake.read(RAW, partition_date)
