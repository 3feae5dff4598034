"""Ingest: land one date of source data in the lake's raw stage, typed and in bounded batches."""

from __future__ import annotations

import datetime as dt
import io
import logging
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nightshift.config import FileSource, GeneratorSource, Pipeline, Schema
from nightshift.generator import generate_day
from nightshift.lake import Lake, Partition

log = logging.getLogger(__name__)

RAW = "raw"

_PANDAS_TYPES: dict[str, Any] = {
    "int": "Int64",
    "float": "float64",
    "string": "string",
    "bool": "boolean",
}


class SourceError(ValueError):
    """The source data for a date is missing or does not fit the schema; names file and column."""


def read_source(pipeline: Pipeline, partition_date: dt.date) -> tuple[pd.DataFrame, str]:
    """Return the date's source rows and where they came from."""
    source = pipeline.source
    if isinstance(source, GeneratorSource):
        frame = generate_day(partition_date, rows=source.rows_per_day, seed=source.seed)
        return frame, f"generator(seed={source.seed}, date={partition_date})"
    assert isinstance(source, FileSource)
    location = source.path_for(partition_date)
    if "://" not in location and not location.startswith("/"):
        from nightshift.config import _resolve

        location = _resolve(location)
    try:
        with fsspec.open(location, "rb", **source.storage_options) as handle:
            payload = handle.read()
    except FileNotFoundError:
        raise SourceError(f"{location}: no source file for {partition_date}") from None
    try:
        if source.format == "csv":
            frame = pd.read_csv(io.BytesIO(payload), dtype_backend="numpy_nullable")
        else:
            frame = pd.read_parquet(io.BytesIO(payload))
    except Exception as exc:
        raise SourceError(f"{location}: cannot be read as {source.format}: {exc}") from exc
    return frame, location


def conform(frame: pd.DataFrame, schema: Schema, origin: str) -> pd.DataFrame:
    """Return ``frame`` with exactly the schema's columns, in order, cast to their types."""
    missing = [c.name for c in schema.columns if c.name not in frame.columns]
    if missing:
        raise SourceError(f"{origin}: missing column(s) {missing}; found {list(frame.columns)}")
    out: dict[str, Any] = {}
    for column in schema.columns:
        values = frame[column.name]
        try:
            if column.type == "timestamp":
                out[column.name] = pd.to_datetime(values, utc=True).astype("datetime64[us, UTC]")
            elif column.type == "int":
                out[column.name] = pd.to_numeric(values).astype("Int64")
            else:
                out[column.name] = values.astype(_PANDAS_TYPES[column.type])
        except (TypeError, ValueError) as exc:
            example = values.head(3).tolist()
            raise SourceError(
                f"{origin}: column '{column.name}' is not {column.type} "
                f"(first values {example}): {exc}"
            ) from None
    conformed = pd.DataFrame(out)
    if schema.timestamp is not None:
        conformed = conformed.sort_values(schema.timestamp, kind="stable", ignore_index=True)
    return conformed


def batches(frame: pd.DataFrame, batch_size: int) -> list[pd.DataFrame]:
    """Split ``frame`` into consecutive batches of at most ``batch_size`` rows."""
    return [
        frame.iloc[start : start + batch_size].reset_index(drop=True)
        for start in range(0, max(len(frame), 1), batch_size)
    ]


def write_parquet(frame: pd.DataFrame) -> bytes:
    """Return ``frame`` as Parquet bytes; the same frame always gives the same bytes."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return bytes(sink.getvalue().to_pybytes())


def ingest_date(pipeline: Pipeline, lake: Lake, partition_date: dt.date) -> Partition:
    """Land ``partition_date``'s source data as the raw partition, replacing any earlier one."""
    frame, origin = read_source(pipeline, partition_date)
    frame = conform(frame, pipeline.schema_, origin)
    parts = batches(frame, pipeline.training.batch_size)
    with lake.writer(RAW, partition_date) as writer:
        for index, batch in enumerate(parts):
            writer.write_bytes(f"batch-{index:05d}.parquet", write_parquet(batch))
        writer.meta.update({"rows": len(frame), "batches": len(parts), "origin": origin})
    log.info(
        "ingested %d rows for %s from %s in %d batches",
        len(frame),
        partition_date,
        origin,
        len(parts),
    )
    return lake.read(RAW, partition_date)
