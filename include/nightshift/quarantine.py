"""Quarantine: where a date's offending input is kept, with the reason, for a person to look at.

``<lake>/<pipeline>/quarantine/date=D/<stamp>/`` holds ``reason.json`` (which stage found what),
the source file and the raw batches. Ingest quarantines a file it cannot read; validation one
whose data fails a blocking check.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import fsspec

from nightshift.config import Pipeline
from nightshift.lake import Lake, Partition, read_bytes, write_bytes_atomic

log = logging.getLogger(__name__)

QUARANTINE = "quarantine"


def quarantine(
    pipeline: Pipeline,
    lake: Lake,
    partition_date: dt.date,
    raw: Partition | None,
    failures: list[dict[str, Any]],
    stage: str,
    source: str | None = None,
) -> str:
    """Move the offending input to ``<lake>/<pipeline>/quarantine/date=D/<stamp>/``.

    The source file (for file sources) is moved there, so the next attempt does not read it
    again; the raw batches, if any, are copied; ``reason.json`` says which stage found what.
    Returns the quarantine folder.
    """
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")  # a record, never read back
    folder = f"{lake.partition_uri(QUARANTINE, partition_date)}/{stamp}"
    origin = source or (str(raw.meta.get("origin")) if raw is not None else None)
    moved = None
    if origin and not origin.startswith("generator("):
        fs, path = fsspec.core.url_to_fs(origin)
        if fs.exists(path):
            target = f"{folder}/source/{origin.rstrip('/').rsplit('/', 1)[-1]}"
            write_bytes_atomic(target, fs.cat_file(path))
            fs.rm(path)
            moved = target
    if raw is not None:
        for name, path in zip(raw.files, raw.paths(), strict=True):
            write_bytes_atomic(f"{folder}/raw/{name.rsplit('/', 1)[-1]}", read_bytes(path))
    reason = {
        "pipeline": pipeline.name,
        "partition_date": partition_date.isoformat(),
        "stage": stage,
        "origin": origin,
        "moved_source_to": moved,
        "failures": failures,
    }
    write_bytes_atomic(f"{folder}/reason.json", json.dumps(reason, indent=1, default=str).encode())
    log.error("%s %s: input quarantined at %s", pipeline.name, partition_date, folder)
    return folder


def newest(lake: Lake, partition_date: dt.date) -> str | None:
    """Return the newest quarantine folder of ``partition_date``, if any."""
    fs, path = fsspec.core.url_to_fs(lake.partition_uri(QUARANTINE, partition_date))
    if not fs.exists(path):
        return None
    folders = sorted(fs.ls(path, detail=False))
    return folders[-1] if folders else None
