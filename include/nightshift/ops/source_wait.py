"""Waiting for a late file: a deferrable task that holds no worker slot while it waits.

A pipeline with ``source.wait`` gets a ``wait_for_source`` task before ``ingest``. If the
date's file is there it returns at once; otherwise it defers to ``SourceFileTrigger``, which
Airflow's triggerer runs (an asyncio loop shared by many waits, no worker process held) and
which checks for the file through fsspec (local paths and object stores alike) every
``poke_seconds``. When the file appears the task ends and ingest runs; when
``timeout_minutes`` pass first, the task fails with "no file after N minutes".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException
from airflow.triggers.base import BaseTrigger, TriggerEvent

from nightshift.config.pipeline import FileSource, Pipeline

TASK_ID = "wait_for_source"


def file_exists(path: str, storage_options: dict[str, Any]) -> bool:
    """Whether ``path`` (a local path or an fsspec URL) names an existing file."""
    import fsspec

    fs, plain = fsspec.core.url_to_fs(path, **storage_options)
    fs.invalidate_cache()
    return bool(fs.exists(plain))


class SourceFileTrigger(BaseTrigger):
    """Fires once: when ``path`` exists, or at ``deadline`` (epoch seconds) if it never does."""

    def __init__(
        self, path: str, storage_options: dict[str, Any], poke_seconds: float, deadline: float
    ) -> None:
        super().__init__()
        self.path = path
        self.storage_options = storage_options
        self.poke_seconds = poke_seconds
        self.deadline = deadline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the trigger's class path and arguments, for the triggerer."""
        return (
            f"{__name__}.SourceFileTrigger",
            {
                "path": self.path,
                "storage_options": self.storage_options,
                "poke_seconds": self.poke_seconds,
                "deadline": self.deadline,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Check for the file every ``poke_seconds`` until it is there or time is up."""
        while True:
            if await asyncio.to_thread(file_exists, self.path, self.storage_options):
                yield TriggerEvent({"status": "found", "path": self.path})
                return
            left = self.deadline - time.time()
            if left <= 0:
                yield TriggerEvent({"status": "timeout", "path": self.path})
                return
            await asyncio.sleep(min(self.poke_seconds, left))


class WaitForSource(BaseOperator):
    """The date's source file, waited for in the triggerer (see the module's doc)."""

    def __init__(self, *, nightshift_pipeline: Pipeline, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.nightshift_pipeline = nightshift_pipeline

    def execute(self, context: Any) -> str:
        """Return the file's path if it is there; otherwise defer until it is, or time is up."""
        from nightshift.config.run_date import partition_date_for
        from nightshift.data.ingest import source_location

        pipeline = self.nightshift_pipeline
        source = pipeline.source
        assert isinstance(source, FileSource) and source.wait is not None
        path = source_location(source, partition_date_for(pipeline, context))
        if file_exists(path, source.storage_options):
            return path
        deadline = time.time() + source.wait.timeout_minutes * 60
        self.log.info("waiting up to %s minutes for %s", source.wait.timeout_minutes, path)
        self.defer(
            trigger=SourceFileTrigger(
                path, source.storage_options, source.wait.poke_seconds, deadline
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> str:
        """Resume after the trigger fired: the file is there, or fail saying it never came."""
        source = self.nightshift_pipeline.source
        assert isinstance(source, FileSource) and source.wait is not None
        if event["status"] != "found":
            raise AirflowFailException(
                f"{event['path']}: no file after {source.wait.timeout_minutes:g} minutes "
                "(source.wait.timeout_minutes); put the file there and clear this task"
            )
        return str(event["path"])
