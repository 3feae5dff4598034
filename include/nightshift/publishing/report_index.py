"""The published reports: pipelines → runs by date, headline metrics, trend, safe file lookup.

Read by the Airflow plugin that shows "Model reports"; pure reads of the reports root, no
Airflow imports, so it is tested without a server.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nightshift.config.pipeline import HIGHER_IS_BETTER, Pipeline, ReportFolder
from nightshift.config.settings import is_url

log = logging.getLogger(__name__)


class UnsafePath(ValueError):
    """A requested path would leave the reports root (traversal, absolute path, NUL byte)."""


@dataclass(frozen=True)
class RunSummary:
    """One published run, as the index lists it."""

    pipeline: str
    partition_date: dt.date
    run_id: str
    best: str
    metric: str
    value: float
    higher_is_better: bool
    champion: str | None
    promoted: bool | None
    decision: str
    approval: str | None = None  # e.g. "awaiting approval", where the pipeline asks for one

    @property
    def report(self) -> str:
        """The report's path relative to the pipeline's reports folder."""
        return ReportFolder(self.partition_date.isoformat()).report


def pipeline_reports_root(pipeline: Pipeline) -> Path:
    """Return the folder that holds ``pipeline``'s reports, one sub-folder per date."""
    root = pipeline.reports_root()
    if is_url(root) and not root.startswith("file://"):
        raise UnsafePath(f"{pipeline.name}: reports at {root} are not on this machine's disk")
    return Path(root.removeprefix("file://")) / pipeline.name


def summarise(metrics: dict[str, Any]) -> RunSummary:
    """Return the index entry of one run's metrics JSON; raise ValueError, KeyError or
    TypeError for one that is not nightshift's (a date that is not YYYY-MM-DD, say)."""
    metric = metrics["headline_metric"]
    best = metrics["best"]
    champion = metrics.get("champion") or {}
    partition_date = dt.date.fromisoformat(metrics["partition_date"])
    return RunSummary(
        pipeline=metrics["pipeline"],
        partition_date=partition_date,
        run_id=metrics["run_id"],
        best=best,
        metric=metric,
        value=float(metrics["models"][best]["metrics"][metric]),
        higher_is_better=bool(metrics.get("higher_is_better", metric in HIGHER_IS_BETTER)),
        champion=champion.get("model_id"),
        promoted=champion.get("promoted"),
        decision=champion.get("reason", ""),
        approval=(metrics.get("approval") or {}).get("label"),
    )


def published_runs(pipeline: Pipeline) -> list[RunSummary]:
    """Return the published runs of ``pipeline`` (local or object store), oldest date first.

    Unreadable metrics files are logged and left out.
    """
    import fsspec

    root = pipeline.reports_dir()
    fs, path = fsspec.core.url_to_fs(root)
    fs.invalidate_cache()
    runs = []
    for found in sorted(fs.glob(f"{path}/*/{ReportFolder.METRICS}")):
        folder = found.rsplit("/", 2)[-2]
        try:
            dt.date.fromisoformat(folder)
        except ValueError:
            continue
        try:
            runs.append(summarise(json.loads(fs.cat_file(found))))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s: not a readable nightshift metrics file (%s)", found, exc)
    return runs


def publish_index(pipeline: Pipeline, airflow_base: str = "") -> str:
    """Write ``<reports>/<pipeline>/index.html``, listing every published run; return its URI.

    Runs publishing side by side each rewrite it. On local disk the listing and the write
    happen under a file lock, so the last writer has seen every run published before it;
    on an object store the Airflow plugin's index (always read live) is the one to trust.
    """
    from nightshift.publishing.report import render_index
    from nightshift.storage.lake import write_bytes_atomic

    root = pipeline.reports_dir()
    uri = f"{root}/index.html"
    lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if not is_url(root):
        Path(root).mkdir(parents=True, exist_ok=True)
        lock = _file_lock(Path(root, ".index.lock"))
    with lock:
        runs = published_runs(pipeline)
        html = render_index({pipeline.name: (pipeline, runs)}, airflow_base, report_prefix="")
        write_bytes_atomic(uri, html.encode())
    return uri


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def list_runs(pipeline: Pipeline) -> list[RunSummary]:
    """Return the published runs of ``pipeline`` whose reports are on this machine's disk;
    none (logged) for a pipeline that publishes elsewhere, which the page cannot serve."""
    try:
        root = pipeline_reports_root(pipeline)
    except UnsafePath as exc:
        log.warning("Model reports page: %s; its runs are not listed", exc)
        return []
    if not root.is_dir():
        return []
    return published_runs(pipeline)


def find_run(pipeline: Pipeline, run_id: str) -> RunSummary | None:
    """Return the published run of ``pipeline`` with Airflow run id ``run_id``, if any."""
    return next((run for run in list_runs(pipeline) if run.run_id == run_id), None)


def safe_path(root: Path, relative: str) -> Path:
    """Return the file at ``relative`` under ``root``.

    Raises UnsafePath for anything that could leave the root (NUL bytes, absolute paths, ``..``
    segments, symlinks resolving outside it) and FileNotFoundError for a file that is not there.
    """
    if "\x00" in relative:
        raise UnsafePath("NUL byte in path")
    if relative.startswith(("/", "\\")) or os.path.isabs(relative) or ":" in relative:
        raise UnsafePath("absolute paths are not served")
    parts = relative.replace("\\", "/").split("/")
    if any(part in ("..", ".") for part in parts):
        raise UnsafePath("'..' and '.' segments are not served")
    real_root = root.resolve()
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(real_root):
        raise UnsafePath("path resolves outside the reports root")
    if not candidate.is_file():
        raise FileNotFoundError(relative)
    return candidate
