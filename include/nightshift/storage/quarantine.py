"""Quarantine: a copy of a date's refused input, with the reason, and a hold on the date.

``<lake>/<pipeline>/quarantine/date=D/<stamp>/`` holds ``reason.json`` (which stage found what,
and the SHA-256 of the source file), a copy of the source file and of the raw batches. The
source itself is never moved, changed or deleted: it is the user's. While the newest hold of a
date stands, ingest refuses that same file again (same checksum) with the hold's reason; a
changed file (new checksum) is read as usual, and an operator can release the hold
(``nightshift quarantine release``), which ``released.json`` in the hold's folder records.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Protocol

import fsspec

from nightshift.config.pipeline import Pipeline
from nightshift.storage.lake import Lake, Partition, folder_date, read_bytes, write_bytes_atomic

log = logging.getLogger(__name__)

QUARANTINE = "quarantine"
REASON = "reason.json"
RELEASED = "released.json"


class NoHold(LookupError):
    """There is no quarantine hold to release for that date; the message says so."""


@dataclass(frozen=True)
class Hold:
    """One quarantined input of a date: where the copy is, why, and whether it was released."""

    folder: str
    partition_date: dt.date
    stage: str
    origin: str | None
    source_sha256: str | None
    failures: list[dict[str, Any]]
    released: dict[str, Any] | None

    @property
    def why(self) -> str:
        """The first blocking finding's message, or the first finding's."""
        blocking = [f for f in self.failures if f.get("severity") == "block"] or self.failures
        if not blocking:
            return "no finding recorded"
        first = blocking[0]
        if first.get("message"):
            return str(first["message"])
        where = f"column '{first['column']}'" if first.get("column") else "the file"
        return f"{where} failed check '{first.get('check')}' ({first.get('kind')})"

    def holds(self, checksum: str | None) -> bool:
        """Whether this hold refuses a source file with ``checksum``."""
        return self.released is None and checksum is not None and checksum == self.source_sha256


# How a night names a window day it left out because the day's input is held (the report,
# and nightshift.publishing.alerts, which reads it back from metrics.json).
HELD = "held in quarantine"


def release_command(pipeline: str, partition_date: dt.date) -> str:
    """The command that releases the date's quarantine hold."""
    return (
        f"nightshift quarantine release --pipeline {pipeline} --date {partition_date} "
        '--reason "..."'
    )


def sha256(payload: bytes) -> str:
    """Return the hex SHA-256 of ``payload``: how a hold recognises the same file."""
    return hashlib.sha256(payload).hexdigest()


def quarantine(
    pipeline: Pipeline,
    lake: Lake,
    partition_date: dt.date,
    raw: Partition | None,
    failures: list[dict[str, Any]],
    stage: str,
    source: str | None = None,
    read: SourceBytes | None = None,
) -> str:
    """Copy the refused input to ``<lake>/<pipeline>/quarantine/date=D/<stamp>/``; return it.

    ``read``: the bytes ingest read (the copy and checksum are of them, not of a second read
    of a file that may have changed since). Without them (a later stage), the source file is
    read again with the pipeline's storage options and copied only if it is still the file
    ingest read (its checksum). The source is copied, never moved; the raw batches, if any,
    are copied; ``reason.json`` says which stage found what, and the source's checksum.
    """
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")  # a record, never read back
    folder = f"{lake.partition_uri(QUARANTINE, partition_date)}/{stamp}"
    origin = source or (str(raw.meta.get("origin")) if raw is not None else None)
    ingested = raw.meta.get("source_sha256") if raw is not None else None
    copied, checksum = _copy_source(pipeline, origin, folder, read, ingested)
    if raw is not None:
        for name, path in zip(raw.files, raw.paths(), strict=True):
            write_bytes_atomic(f"{folder}/raw/{name.rsplit('/', 1)[-1]}", read_bytes(path))
    reason = {
        "pipeline": pipeline.name,
        "partition_date": partition_date.isoformat(),
        "stage": stage,
        "origin": origin,
        "source_sha256": checksum,
        "copied_source_to": copied,
        "failures": failures,
    }
    write_bytes_atomic(f"{folder}/{REASON}", json.dumps(reason, indent=1, default=str).encode())
    log.error("%s %s: input quarantined (copied) at %s", pipeline.name, partition_date, folder)
    return folder


class SourceBytes(Protocol):
    """The bytes of a source file as ingest read them (``ingest.SourceFile``)."""

    @property
    def payload(self) -> bytes:
        """The file's bytes."""

    @property
    def checksum(self) -> str:
        """Their SHA-256."""


def _copy_source(
    pipeline: Pipeline,
    origin: str | None,
    folder: str,
    read: SourceBytes | None,
    ingested: str | None,
) -> tuple[str | None, str | None]:
    """Copy the source file into the hold's folder; return the copy and its checksum."""
    if not origin or origin.startswith("generator("):
        return None, None
    target = f"{folder}/source/{origin.rstrip('/').rsplit('/', 1)[-1]}"
    if read is not None:
        write_bytes_atomic(target, read.payload, _mode_of(origin))
        return target, read.checksum
    options = getattr(pipeline.source, "storage_options", {})
    try:
        fs, path = fsspec.core.url_to_fs(origin, **options)
        payload = fs.cat_file(path)
    except (FileNotFoundError, OSError) as exc:
        log.warning("%s: not copied to quarantine (%s); its raw batches are", origin, exc)
        return None, ingested
    if ingested is not None and sha256(payload) != ingested:
        log.warning("%s changed since ingest read it: not copied; its raw batches are", origin)
        return None, ingested
    write_bytes_atomic(target, payload, _mode_of(origin))
    return target, sha256(payload)


def _mode_of(origin: str) -> int:
    """The mode for a copy of ``origin``: no more open than the source file, if it is local,
    nor than the lake's files."""
    from nightshift.storage.lake import PRIVATE

    try:
        return os.stat(origin.removeprefix("file://")).st_mode & PRIVATE
    except OSError:
        return PRIVATE


def holds(lake: Lake, partition_date: dt.date) -> list[Hold]:
    """Return the quarantine holds of ``partition_date``, newest first."""
    uri = lake.partition_uri(QUARANTINE, partition_date)
    fs, path = fsspec.core.url_to_fs(uri)
    fs.invalidate_cache()
    if not fs.exists(path):
        return []
    found = []
    for entry in sorted(fs.ls(path, detail=False), reverse=True):
        folder = f"{uri}/{entry.rstrip('/').rsplit('/', 1)[-1]}"
        local = entry.rstrip("/")
        if not fs.exists(f"{local}/{REASON}"):
            continue
        reason = json.loads(fs.cat_file(f"{local}/{REASON}"))
        released_file = f"{local}/{RELEASED}"
        released = json.loads(fs.cat_file(released_file)) if fs.exists(released_file) else None
        found.append(
            Hold(
                folder=folder,
                partition_date=partition_date,
                stage=str(reason.get("stage")),
                origin=reason.get("origin"),
                source_sha256=reason.get("source_sha256"),
                failures=list(reason.get("failures") or []),
                released=released,
            )
        )
    return found


def holding(lake: Lake, partition_date: dt.date, checksum: str | None) -> Hold | None:
    """Return the hold that refuses a source file with ``checksum`` for the date, if any.

    Only the newest hold counts: an operator's release, or a later hold of another file,
    ends it.
    """
    found = holds(lake, partition_date)
    return found[0] if found and found[0].holds(checksum) else None


def held_dates(lake: Lake) -> list[dt.date]:
    """Return every date with a quarantine folder."""
    fs, path = fsspec.core.url_to_fs(lake.stage_uri(QUARANTINE))
    fs.invalidate_cache()
    if not fs.exists(path):
        return []
    names = [entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(path, detail=False)]
    return sorted(day for n in names if (day := folder_date(n)) is not None)


def release(lake: Lake, partition_date: dt.date, reason: str, by: str) -> Hold:
    """Release the date's newest hold: the same file is read again on the next run."""
    found = holds(lake, partition_date)
    if not found:
        raise NoHold(f"{lake.pipeline} {partition_date}: nothing is held in quarantine")
    if found[0].released is not None:
        raise NoHold(
            f"{lake.pipeline} {partition_date}: the newest hold ({found[0].folder}) was already "
            f"released: {found[0].released}"
        )
    record = {"released_at": dt.datetime.now(dt.UTC).isoformat(), "by": by, "reason": reason}
    write_bytes_atomic(f"{found[0].folder}/{RELEASED}", json.dumps(record, indent=1).encode())
    log.warning("%s %s: quarantine hold %s released", lake.pipeline, partition_date, found[0])
    return holds(lake, partition_date)[0]
