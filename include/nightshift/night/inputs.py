"""What a night reads and where: the lake's stages, the training window's dates and
partitions, the inputs ``fit_features`` recorded (``NightInputs``), and the model partitions.

The training window of date D is the ``window_days`` days before D; D itself is held out for
evaluation, so the newest day is never trained on.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from nightshift.config.pipeline import LABEL, Pipeline
from nightshift.data.features import FeatureStats
from nightshift.night.results import FeaturesFitted
from nightshift.storage.lake import (
    PROCESSED,
    Partition,
    PartitionMissing,
    lake_for,
    read_bytes,
    read_frame,
    write_parquet,
)

log = logging.getLogger(__name__)


FEATURES = "features"


EVALUATION = "evaluation"


INPUTS_FILE = "inputs.json"  # in the features partition: what the night trains and scores on


# In the features partition too: a sample of the window, for drift and the training curve.
WINDOW_SAMPLE = "window-sample.parquet"


WINDOW_SAMPLE_ROWS = 200_000


def model_stage(name: str) -> str:
    """Return the lake stage that holds model ``name``."""
    return f"models/{name}"


def window_dates(pipeline: Pipeline, partition_date: dt.date) -> list[dt.date]:
    """Return the training window of ``partition_date``: the days before it, oldest first."""
    days = pipeline.training.window_days
    return [partition_date - dt.timedelta(days=offset) for offset in range(days, 0, -1)]


def dates_to_prepare(pipeline: Pipeline, partition_date: dt.date) -> list[dt.date]:
    """Return ``partition_date`` and the window days that have no processed partition yet."""
    lake = lake_for(pipeline)
    missing = [d for d in window_dates(pipeline, partition_date) if not lake.has(PROCESSED, d)]
    return [*missing, partition_date]


def window_partitions(pipeline: Pipeline, partition_date: dt.date) -> list[Partition]:
    """Return the committed processed partitions of the training window, as they are now."""
    lake = lake_for(pipeline)
    partitions: list[Partition] = []
    for day in window_dates(pipeline, partition_date):
        try:
            partitions.append(lake.read(PROCESSED, day))
        except PartitionMissing:
            log.warning(
                "%s: no processed partition for %s; the window skips it", pipeline.name, day
            )
    if not any(p.files for p in partitions):
        raise PartitionMissing(
            f"{pipeline.name}: no processed data in the training window of {partition_date} "
            f"({window_dates(pipeline, partition_date)[0]} to {partition_date - dt.timedelta(1)})"
        )
    return partitions


def training_paths(pipeline: Pipeline, partition_date: dt.date) -> tuple[list[str], list[dt.date]]:
    """Return the processed batch paths of the training window and the dates they cover."""
    partitions = window_partitions(pipeline, partition_date)
    paths = [path for partition in partitions for path in partition.paths()]
    return paths, [partition.partition_date for partition in partitions]


@dataclass(frozen=True)
class NightInputs:
    """What ``fit_features`` saw: the statistics it fitted, and the exact processed batches
    (their partition versions) of the training window and of the held-out date.

    Training and evaluation read these, never the lake's listing of the moment, so a window
    partition replaced meanwhile (a backfill re-processing that day) cannot give a night
    statistics from one version and training data from another. Replaced versions stay
    readable for the lake's grace period (``lake.STALE_AFTER``).
    """

    version: str  # the features partition version that recorded them
    stats: FeatureStats
    stats_json: bytes
    window: list[dt.date]
    window_paths: list[str]
    held_out_paths: list[str] | None  # None: not processed when the features were fitted
    window_sample: str | None = None  # None: fitted before fit_features drew it


def record_inputs(
    window: list[Partition], held_out: Partition | None, window_sample: str | None
) -> bytes:
    """Serialise the inputs of a night: each partition's files, relative to the partition,
    and the features partition's file of the window sample, if it has one."""
    record = {
        "window": {p.partition_date.isoformat(): p.files for p in window},
        "held_out": None if held_out is None else held_out.files,
        "window_sample": window_sample,
    }
    return json.dumps(record, sort_keys=True).encode()


def night_inputs(
    pipeline: Pipeline, partition_date: dt.date, version: str | None = None
) -> NightInputs:
    """Return the inputs ``fit_features`` recorded for ``partition_date``: those of features
    partition ``version`` (the one its task returned), or of the current one."""
    lake = lake_for(pipeline)
    version = version or lake.read(FEATURES, partition_date).version
    stats_json = read_bytes(lake.version_file(FEATURES, partition_date, version, "features.json"))
    stats = FeatureStats.from_json(stats_json)
    try:
        record = json.loads(
            read_bytes(lake.version_file(FEATURES, partition_date, version, INPUTS_FILE))
        )
    except FileNotFoundError:  # fitted before nightshift recorded a night's inputs
        log.warning("%s %s: no recorded inputs; the window as listed now", pipeline.name, version)
        paths, dates = training_paths(pipeline, partition_date)
        return NightInputs(version, stats, stats_json, dates, paths, None)

    def recorded(day: str, files: list[str]) -> list[str]:
        """The paths of a processed partition's files as fit_features read them."""
        date = dt.date.fromisoformat(day)
        return Partition(lake.partition_uri(PROCESSED, date), date, files).paths()

    window: dict[str, list[str]] = record["window"]
    held_out = record["held_out"]
    window_sample = record.get("window_sample")
    return NightInputs(
        version=version,
        stats=stats,
        stats_json=stats_json,
        window=[dt.date.fromisoformat(day) for day in sorted(window)],
        window_paths=[path for day in sorted(window) for path in recorded(day, window[day])],
        held_out_paths=None if held_out is None else recorded(partition_date.isoformat(), held_out),
        window_sample=None
        if window_sample is None
        else lake.version_file(FEATURES, partition_date, version, window_sample),
    )


def sample_graph(pipeline: Pipeline, frame: Any, window: list[Partition]) -> Any:
    """Return about :data:`WINDOW_SAMPLE_ROWS` rows of ``frame``'s features and label (lazily,
    a fixed seed), or None where a window partition has no row counts to size it from."""
    if not window or any("rows_per_batch" not in p.meta for p in window):
        return None
    rows = sum(sum(p.meta["rows_per_batch"]) for p in window) * pipeline.training.sample_fraction
    features = pipeline.features
    columns = frame[[*features.numeric, *features.time, *features.categorical, LABEL]]
    if rows <= WINDOW_SAMPLE_ROWS:
        return columns
    return columns.sample(frac=WINDOW_SAMPLE_ROWS / rows, random_state=pipeline.training.seed)


def save_model(pipeline: Pipeline, partition_date: dt.date, trained: Any, stats_json: bytes) -> str:
    """Write a trained model's file, the statistics it was trained with and its history as
    the run date's partition of its model stage; return the partition's URI."""
    lake = lake_for(pipeline)
    with lake.writer(model_stage(trained.name), partition_date) as writer:
        writer.write_bytes(trained.filename, trained.payload)
        # The statistics travel with the model, so scoring uses exactly what training saw.
        writer.write_bytes("features.json", stats_json)
        writer.write_bytes("history.json", json.dumps(trained.history, sort_keys=True).encode())
        writer.meta.update({"kind": trained.kind, "model_file": trained.filename})
    return lake.partition_uri(model_stage(trained.name), partition_date)


def load_model(pipeline: Pipeline, name: str, trained_for: dt.date) -> tuple[Any, dict[str, str]]:
    """Return the model ``name`` trained for ``trained_for`` and its partition's files."""
    from nightshift.models.kinds import load_scorer

    partition = lake_for(pipeline).read(model_stage(name), trained_for)
    files = dict(
        zip([f.rsplit("/", 1)[-1] for f in partition.files], partition.paths(), strict=True)
    )
    stats = FeatureStats.from_json(read_bytes(files["features.json"]))
    model_file = files[partition.meta["model_file"]]
    model = load_scorer(
        partition.meta["kind"], read_bytes(model_file), stats, pipeline.schema_.task, model_file
    )
    files["_partition"] = partition.uri
    return model, files


def fit_inputs(pipeline: Pipeline, partition_date: dt.date) -> FeaturesFitted:
    """Fit the feature statistics on the training window, in one read of it with a sample
    of the window; write them, the sample and the night's inputs (``INPUTS_FILE``) as a new
    version of the features partition; return its URI, version, window and rows."""
    import dask

    from nightshift.data.features import stats_from, stats_graph
    from nightshift.data.preprocess import processed_frame
    from nightshift.models.cluster import dask_client

    lake = lake_for(pipeline)
    window = window_partitions(pipeline, partition_date)
    held_out = lake.read(PROCESSED, partition_date) if lake.has(PROCESSED, partition_date) else None
    paths = [path for partition in window for path in partition.paths()]
    dates = [partition.partition_date.isoformat() for partition in window]
    with dask_client() as client:
        frame = processed_frame(paths, pipeline)
        # One read of the window for both; the sample spares evaluate and the training
        # curve reading it again.
        lazy, sample = stats_graph(frame, pipeline), sample_graph(pipeline, frame, window)
        computed, sample_rows = dask.compute(lazy, sample)
        stats = stats_from(computed, pipeline)
        del client
    with lake.writer(FEATURES, partition_date) as writer:
        writer.write_bytes("features.json", stats.to_json())
        if sample_rows is not None:
            writer.write_bytes(WINDOW_SAMPLE, write_parquet(sample_rows))
        window_sample = None if sample_rows is None else WINDOW_SAMPLE
        writer.write_bytes(INPUTS_FILE, record_inputs(window, held_out, window_sample))
        writer.meta.update({"window": dates, "rows": stats.rows, "batches": len(paths)})
    return FeaturesFitted(
        features=lake.partition_uri(FEATURES, partition_date),
        version=writer.version,
        window=[partition.partition_date for partition in window],
        rows=stats.rows,
    )


def read_window_sample(pipeline: Pipeline, inputs: NightInputs, columns: list[str]) -> pd.DataFrame:
    """Return ``columns`` of the sample of the training window ``fit_features`` drew; where it
    drew none, up to :data:`WINDOW_SAMPLE_ROWS` rows of the window's batches (fixed seed)."""
    if inputs.window_sample is not None:
        return read_frame(inputs.window_sample, columns)
    paths = inputs.window_paths
    frame = pd.concat([read_frame(p, columns) for p in paths], ignore_index=True)
    if len(frame) > WINDOW_SAMPLE_ROWS:
        frame = frame.sample(n=WINDOW_SAMPLE_ROWS, random_state=pipeline.training.seed)
    return frame
