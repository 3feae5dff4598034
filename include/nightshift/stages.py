"""The nightly stages, one function per Airflow task, testable without Airflow.

Each stage reads and writes partitions keyed by the run's date and returns a small JSON-able
dict (URIs, counts, seconds) for XCom. ``run_nightly`` runs them in order in one process, for
the command line and the benchmarks.

The training window of date D is the ``window_days`` days before D; D itself is held out for
evaluation, so the newest day is never trained on. A window day that has never been processed
is ingested, validated and processed by D's run, so a first run on an empty lake works.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd

from nightshift import __version__
from nightshift.champion import trained_before
from nightshift.config import LABEL, Pipeline, Stage
from nightshift.features import FeatureStats, labels, stats_from, stats_graph
from nightshift.ingest import ingest_date
from nightshift.lake import (
    PROCESSED,
    RAW,
    Lake,
    Partition,
    PartitionMissing,
    read_bytes,
    write_bytes_atomic,
    write_parquet,
)
from nightshift.profiling import dask_report, profiled
from nightshift.records import (
    Approval,
    Challenger,
    ChampionOutcome,
    ChampionRef,
    ChampionScore,
    Decision,
    ModelScore,
    NightEvaluation,
    NightSummary,
    TrainingWindow,
    TrendPoint,
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


def lake_for(pipeline: Pipeline) -> Lake:
    """Return the pipeline's lake."""
    return Lake(pipeline.lake_root(), pipeline.name)


def window_dates(pipeline: Pipeline, partition_date: dt.date) -> list[dt.date]:
    """Return the training window of ``partition_date``: the days before it, oldest first."""
    days = pipeline.training.window_days
    return [partition_date - dt.timedelta(days=offset) for offset in range(days, 0, -1)]


def dates_to_prepare(pipeline: Pipeline, partition_date: dt.date) -> list[dt.date]:
    """Return ``partition_date`` and the window days that have no processed partition yet."""
    lake = lake_for(pipeline)
    missing = [d for d in window_dates(pipeline, partition_date) if not lake.has(PROCESSED, d)]
    return [*missing, partition_date]


@contextmanager
def _timed(result: dict[str, Any], stage: Stage) -> Iterator[None]:
    """Time the block into ``result["seconds"]``, and the CPU seconds of the process that ran
    it (all its threads; not the Dask workers') into ``result["cpu_seconds"]``; profile it
    when profiling is on."""
    start, cpu_start = time.perf_counter(), time.process_time()
    with profiled(stage.value):
        yield
    result["seconds"] = round(time.perf_counter() - start, 3)
    result["cpu_seconds"] = round(time.process_time() - cpu_start, 3)


def ingest(pipeline: Pipeline, partition_date: dt.date) -> dict[str, Any]:
    """Land the run date (and any unprocessed window day) in the raw stage.

    The run date's input must be there and readable, or the run stops here. A window day
    whose input is missing or unreadable is left out of the window, with a warning.
    """
    from nightshift.ingest import SourceError

    result: dict[str, Any] = {"raw": {}, "skipped": {}}
    with _timed(result, Stage.INGEST):
        lake = lake_for(pipeline)
        dates = dates_to_prepare(pipeline, partition_date)
        for day in dates:
            try:
                result["raw"][day.isoformat()] = ingest_date(pipeline, lake, day).uri
            except SourceError as exc:
                if day == partition_date:
                    raise
                log.warning("%s: window day %s left out: %s", pipeline.name, day, exc)
                result["skipped"][day.isoformat()] = str(exc)
        result["dates"] = [d.isoformat() for d in dates if d.isoformat() in result["raw"]]
    return result


def validate(
    pipeline: Pipeline, dates: list[dt.date], partition_date: dt.date | None = None
) -> dict[str, Any]:
    """Check each ingested date; the run date failing a blocking check stops the run.

    A window day that fails is quarantined and left out of the window, with a warning.
    Returns the dates that passed and their rows.
    """
    from nightshift.validate import DataValidationError, validate_date

    partition_date = partition_date or max(dates)
    result: dict[str, Any] = {"rows": {}, "skipped": {}}
    with _timed(result, Stage.VALIDATE):
        lake = lake_for(pipeline)
        for day in dates:
            try:
                summary = validate_date(pipeline, lake, lake.read(RAW, day))
            except DataValidationError as exc:
                write_validation_report(pipeline, day, exc.failures, exc.quarantine or "")
                if day == partition_date:
                    raise
                log.warning("%s: window day %s left out: %s", pipeline.name, day, exc)
                result["skipped"][day.isoformat()] = str(exc)
                continue
            result["rows"][day.isoformat()] = summary["rows"]
        result["dates"] = [d.isoformat() for d in dates if d.isoformat() in result["rows"]]
    return result


def write_validation_report(
    pipeline: Pipeline, partition_date: dt.date, failures: list[dict[str, Any]], where: str
) -> str:
    """Write ``validation.html`` and ``validation.json`` beside the date's reports."""
    from nightshift.quarantine import release_command
    from nightshift.report import render_validation

    directory = pipeline.reports_dir(partition_date)
    payload = {
        "pipeline": pipeline.name,
        "partition_date": partition_date.isoformat(),
        "blocked": any(f["severity"] == "block" for f in failures),
        "quarantine": where,
        "release": release_command(pipeline.name, partition_date),
        "failures": failures,
    }
    write_bytes_atomic(
        f"{directory}/validation.json", json.dumps(payload, indent=1, default=str).encode()
    )
    write_bytes_atomic(f"{directory}/validation.html", render_validation(payload).encode())
    return f"{directory}/validation.html"


def preprocess(pipeline: Pipeline, dates: list[dt.date]) -> dict[str, Any]:
    """Process each validated date's batches on the Dask cluster."""
    from nightshift.cluster import accelerators, dask_client
    from nightshift.preprocess import preprocess_date

    result: dict[str, Any] = {}
    with _timed(result, Stage.PREPROCESS):
        lake = lake_for(pipeline)
        with dask_client() as client:
            backend = accelerators(client).dataframe_backend
            result["backend"] = backend
            result["processed"] = {
                d.isoformat(): preprocess_date(
                    client, pipeline, lake, lake.read(RAW, d), backend
                ).uri
                for d in dates
            }
    return result


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


def training_paths(pipeline: Pipeline, partition_date: dt.date) -> tuple[list[str], list[str]]:
    """Return the processed batch paths of the training window and the dates they cover."""
    partitions = window_partitions(pipeline, partition_date)
    paths = [path for partition in partitions for path in partition.paths()]
    return paths, [partition.partition_date.isoformat() for partition in partitions]


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
    window: list[str]  # ISO dates
    window_paths: list[str]
    held_out_paths: list[str] | None  # None: not processed when the features were fitted
    window_sample: str | None = None  # None: fitted before fit_features drew it


def _record_inputs(
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
        window=sorted(window),
        window_paths=[path for day in sorted(window) for path in recorded(day, window[day])],
        held_out_paths=None if held_out is None else recorded(partition_date.isoformat(), held_out),
        window_sample=None
        if window_sample is None
        else lake.version_file(FEATURES, partition_date, version, window_sample),
    )


def _sample_graph(pipeline: Pipeline, frame: Any, window: list[Partition]) -> Any:
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


def fit_features(pipeline: Pipeline, partition_date: dt.date) -> dict[str, Any]:
    """Fit imputation, scaling and vocabularies on the training window; save them, with a
    sample of the window for drift and the training curve."""
    import dask

    from nightshift.cluster import dask_client
    from nightshift.preprocess import processed_frame

    result: dict[str, Any] = {}
    with _timed(result, Stage.FIT_FEATURES):
        lake = lake_for(pipeline)
        window = window_partitions(pipeline, partition_date)
        held_out = (
            lake.read(PROCESSED, partition_date) if lake.has(PROCESSED, partition_date) else None
        )
        paths = [path for partition in window for path in partition.paths()]
        dates = [partition.partition_date.isoformat() for partition in window]
        with dask_client() as client:
            frame = processed_frame(paths, pipeline)
            # One read of the window for both; the sample spares evaluate and the training
            # curve reading it again.
            lazy, sample = stats_graph(frame, pipeline), _sample_graph(pipeline, frame, window)
            computed, sample_rows = dask.compute(lazy, sample)
            stats = stats_from(computed, pipeline)
            del client
        with lake.writer(FEATURES, partition_date) as writer:
            writer.write_bytes("features.json", stats.to_json())
            if sample_rows is not None:
                writer.write_bytes(WINDOW_SAMPLE, write_parquet(sample_rows))
            window_sample = None if sample_rows is None else WINDOW_SAMPLE
            writer.write_bytes(INPUTS_FILE, _record_inputs(window, held_out, window_sample))
            writer.meta.update({"window": dates, "rows": stats.rows, "batches": len(paths)})
        result.update(
            {
                "features": lake.partition_uri(FEATURES, partition_date),
                "version": writer.version,
                "window": dates,
                "rows": stats.rows,
            }
        )
    return result


def _save_model(
    pipeline: Pipeline, partition_date: dt.date, trained: Any, stats_json: bytes
) -> str:
    lake = lake_for(pipeline)
    with lake.writer(model_stage(trained.name), partition_date) as writer:
        writer.write_bytes(trained.filename, trained.payload)
        # The statistics travel with the model, so scoring uses exactly what training saw.
        writer.write_bytes("features.json", stats_json)
        writer.write_bytes("history.json", json.dumps(trained.history, sort_keys=True).encode())
        writer.meta.update({"kind": trained.kind, "model_file": trained.filename})
    return lake.partition_uri(model_stage(trained.name), partition_date)


def train_distributed(
    pipeline: Pipeline, partition_date: dt.date, features_version: str | None = None
) -> dict[str, Any]:
    """Train the kinds that train across the Dask cluster in their own task (XGBoost, with
    ``xgboost.dask``), on the inputs ``fit_features`` recorded (its ``version``; default:
    the current features partition)."""
    from nightshift.cluster import accelerators, dask_client
    from nightshift.kinds.base import TrainJob

    result: dict[str, Any] = {"models": {}}
    with _timed(result, Stage.TRAIN_DISTRIBUTED):
        specs = _specs_trained_in(pipeline, Stage.TRAIN_DISTRIBUTED)
        if specs:
            inputs = night_inputs(pipeline, partition_date, features_version)
            with dask_client() as client, dask_report(Stage.TRAIN_DISTRIBUTED.value):
                device = accelerators(client).xgboost_device
                result["device"] = device
                job = TrainJob(
                    pipeline,
                    inputs.window_paths,
                    inputs.stats,
                    client,
                    device,
                    inputs.window_sample,
                )
                _train_each(partition_date, specs, job, inputs, result)
    return result


def _specs_trained_in(pipeline: Pipeline, stage: Stage) -> list[Any]:
    """The pipeline's models whose kind trains in ``stage``."""
    from nightshift.kinds import kind_of

    return [spec for spec in pipeline.models if kind_of(spec.kind).stage is stage]


def _train_each(
    partition_date: dt.date, specs: list[Any], job: Any, inputs: NightInputs, result: dict
) -> None:
    """Train each of ``specs`` by its kind on ``job``; save it in the lake; add to ``result``."""
    from nightshift.kinds import kind_of

    for spec in specs:
        trained = kind_of(spec.kind).train(spec, job)
        if "kept_bytes" in result:
            result["kept_bytes"] += trained.kept_bytes
        result["models"][spec.name] = _save_model(
            job.pipeline, partition_date, trained, inputs.stats_json
        )


def train_incremental(
    pipeline: Pipeline, partition_date: dt.date, features_version: str | None = None
) -> dict[str, Any]:
    """Train the kinds that learn batch by batch, and the baseline, on the inputs
    ``fit_features`` recorded (as :func:`train_distributed`); a Dask client is opened only
    where a kind trains on the workers tonight (SGD on a large window,
    ``train.sgd_on_workers``)."""
    from nightshift.cluster import dask_client
    from nightshift.kinds import kind_of
    from nightshift.kinds.base import TrainJob

    result: dict[str, Any] = {"models": {}, "kept_bytes": 0}
    with _timed(result, Stage.TRAIN_INCREMENTAL):
        inputs = night_inputs(pipeline, partition_date, features_version)
        specs = _specs_trained_in(pipeline, Stage.TRAIN_INCREMENTAL)
        paths = inputs.window_paths
        on_workers = any(kind_of(s.kind).needs_cluster(pipeline, paths) for s in specs)
        with dask_client() if on_workers else contextlib.nullcontext() as client:
            job = TrainJob(pipeline, paths, inputs.stats, client, "cpu", inputs.window_sample)
            _train_each(partition_date, specs, job, inputs, result)
    return result


def load_model(pipeline: Pipeline, name: str, trained_for: dt.date) -> tuple[Any, dict[str, str]]:
    """Return the model ``name`` trained for ``trained_for`` and its partition's files."""
    from nightshift.kinds import load_scorer

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


def _window_sample(pipeline: Pipeline, inputs: NightInputs, columns: list[str]) -> pd.DataFrame:
    """Return ``columns`` of the sample of the training window ``fit_features`` drew; where it
    drew none, up to :data:`WINDOW_SAMPLE_ROWS` rows of the window's batches (fixed seed)."""
    if inputs.window_sample is not None:
        return pd.read_parquet(inputs.window_sample, columns=columns)
    paths = inputs.window_paths
    frame = pd.concat([pd.read_parquet(p, columns=columns) for p in paths], ignore_index=True)
    if len(frame) > WINDOW_SAMPLE_ROWS:
        frame = frame.sample(n=WINDOW_SAMPLE_ROWS, random_state=pipeline.training.seed)
    return frame


@dataclass(frozen=True)
class HeldOut:
    """The run date's processed rows, on which every model and champion is scored."""

    frame: pd.DataFrame
    y: Any  # the labels, as floats
    segments: Any  # the segment column's values, or None when the pipeline has no segment


def _measure(pipeline: Pipeline, held_out: HeldOut, score: Any) -> dict[str, Any]:
    """Return one model's held-out metrics and curves (and per segment, if any)."""
    from nightshift.evaluate import evaluate_scores, segment_metrics

    task, threshold = pipeline.schema_.task, pipeline.training.threshold
    scored = evaluate_scores(task, held_out.y, score, threshold)
    if held_out.segments is not None:
        scored["segments"] = segment_metrics(task, held_out.y, score, held_out.segments, threshold)
    return scored


def _score_models(
    pipeline: Pipeline, partition_date: dt.date, held_out: HeldOut
) -> tuple[dict[str, ModelScore], dict[str, Any]]:
    """Return each of tonight's models' measurements, and its scores on the held-out rows."""
    models: dict[str, ModelScore] = {}
    scores: dict[str, Any] = {}
    for spec in pipeline.models:
        model, files = load_model(pipeline, spec.name, partition_date)
        scores[spec.name] = model.predict(held_out.frame)
        measured = _measure(pipeline, held_out, scores[spec.name])
        segments = measured.pop("segments", None)
        metrics = measured.pop("metrics")
        models[spec.name] = ModelScore(
            model.kind,
            metrics,
            measured,
            json.loads(read_bytes(files["history.json"])),
            segments,
            model.value,
            model.importance(held_out.frame, seed=pipeline.training.seed),
        )
    return models, scores


def _ranking(pipeline: Pipeline, models: dict[str, ModelScore]) -> list[str]:
    """Return the model names, best first on the pipeline's metric (undefined: last)."""
    metric, higher_is_better = pipeline.metric

    def rank_key(name: str) -> float:
        value = models[name].metrics[metric]
        if value is None:
            return float("inf")
        return -value if higher_is_better else value

    return sorted(models, key=rank_key)


def _score_champions(
    pipeline: Pipeline,
    partition_date: dt.date,
    held_out: HeldOut,
    scores: dict[str, Any],
    learned: list[str],
    mlflow_client: Any,
) -> tuple[dict[str, ChampionScore | None], dict[str, Any]]:
    """Return each learned model's champion (registry alias) scored on the same rows, and the
    bootstrap interval of tonight's model minus it."""
    from nightshift import tracking
    from nightshift.evaluate import bootstrap_delta

    metric, _ = pipeline.metric
    champions: dict[str, ChampionScore | None] = {}
    deltas: dict[str, Any] = {}
    for name in learned:
        current = tracking.champion(mlflow_client, tracking.registered_name(pipeline.name, name))
        if current is None or not trained_before(current.trained_for, partition_date):
            # none yet, or trained on this day or later: not a fair comparison
            champions[name] = None if current is None else ChampionScore(current)
            continue
        champion_score, unscored = _champion_score(pipeline, held_out, current, name)
        if champion_score is None:
            champions[name] = ChampionScore(current, unscored=unscored)
            continue
        measured = _measure(pipeline, held_out, champion_score)
        champions[name] = ChampionScore(current, measured["metrics"], measured.get("segments"))
        deltas[name] = bootstrap_delta(
            metric,
            held_out.y,
            scores[name],
            champion_score,
            pipeline.training.threshold,
            samples=pipeline.evaluation.bootstrap_samples,
            seed=pipeline.training.seed,
        )
    return champions, deltas


def _champion_score(
    pipeline: Pipeline, held_out: HeldOut, current: ChampionRef, name: str
) -> tuple[Any, str | None]:
    """Return the champion's scores on the held-out rows, or None and why, when its model
    cannot be loaded from the lake."""
    try:
        model, _ = load_model(
            pipeline, current.model or name, dt.date.fromisoformat(current.trained_for)
        )
        return model.predict(held_out.frame), None
    except (PartitionMissing, KeyError, ValueError) as exc:
        log.warning("%s: champion %s not scored: %s", pipeline.name, current, exc)
        return None, f"{type(exc).__name__}: {exc}"


def _held_out(pipeline: Pipeline, paths: list[str]) -> HeldOut:
    """Return the run date's processed rows, labels and segment values."""
    frame = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    segment = pipeline.evaluation.segment
    return HeldOut(frame, labels(frame), frame[segment].to_numpy(dtype=object) if segment else None)


def _start_reads(
    io: ThreadPoolExecutor, pipeline: Pipeline, inputs: NightInputs, columns: list[str]
) -> tuple[Future[pd.DataFrame], Future[Any] | None]:
    """Start reading the window sample of ``columns`` for drift and opening the registry on
    ``io``: they wait on files and imports while the models score (XGBoost releases the GIL)."""
    from nightshift import tracking
    from nightshift.kinds import is_learned

    window = io.submit(_window_sample, pipeline, inputs, columns)
    learns = any(is_learned(spec.kind) for spec in pipeline.models)
    return window, io.submit(tracking.client, pipeline) if learns else None


def evaluate(
    pipeline: Pipeline, partition_date: dt.date, features_version: str | None = None
) -> dict[str, Any]:
    """Score every model, and each model's champion, on the held-out run date; save it all.
    The held-out rows and the window sample for drift are the ones ``fit_features`` recorded.

    Measurements only: the promotion decision is publish's, from what is saved here.
    """
    from nightshift.evaluate import drift
    from nightshift.kinds import is_learned

    result: dict[str, Any] = {}
    with _timed(result, Stage.EVALUATE), ThreadPoolExecutor(1, "evaluate-io") as io:
        lake = lake_for(pipeline)
        inputs = night_inputs(pipeline, partition_date, features_version)
        numeric, categorical = _drift_columns(pipeline)
        window, registry = _start_reads(io, pipeline, inputs, [*numeric, *categorical])
        held_out = _held_out(
            pipeline, inputs.held_out_paths or lake.read(PROCESSED, partition_date).paths()
        )
        models, scores = _score_models(pipeline, partition_date, held_out)
        ranking = _ranking(pipeline, models)
        # The challenger is the best learned model; the baseline is there to keep it honest.
        learned = [name for name in ranking if is_learned(models[name].kind)]
        champions, deltas = _score_champions(
            pipeline, partition_date, held_out, scores, learned, registry and registry.result()
        )
        metric, higher_is_better = pipeline.metric
        evaluation = NightEvaluation(
            models,
            ranking,
            (learned or ranking)[0],
            metric,
            higher_is_better,
            champions,
            deltas,
            drift(
                window.result(),
                held_out.frame,
                numeric,
                categorical,
                pipeline.evaluation.drift_threshold,
            ),
        )
        with lake.writer(EVALUATION, partition_date) as writer:
            writer.write_bytes("evaluation.json", _evaluation_json(evaluation))
        result.update(
            evaluation=lake.partition_uri(EVALUATION, partition_date),
            best=evaluation.best,
            **{metric: evaluation.headline(evaluation.best)},
        )
    return result


# Time features that are one value for a whole day: the held-out day always "drifts" from a
# window of several days on them, so they are left out of drift.
_DAY_LEVEL_TIME_FEATURES = frozenset({"day_of_week", "is_weekend"})


def _drift_columns(pipeline: Pipeline) -> tuple[list[str], list[str]]:
    """Return the numeric and categorical columns whose drift the night measures: the
    features, the time features that vary within a day, and the label (its rate, for a
    classifier)."""
    features = pipeline.features
    time = [name for name in features.time if name not in _DAY_LEVEL_TIME_FEATURES]
    if pipeline.is_classification:
        return [*features.numeric, *time], [*features.categorical, LABEL]
    return [*features.numeric, *time, LABEL], list(features.categorical)


def _evaluation_json(evaluation: NightEvaluation) -> bytes:
    return json.dumps(evaluation.to_dict(), sort_keys=True).encode()


def read_evaluation(pipeline: Pipeline, partition_date: dt.date) -> NightEvaluation:
    """Return what ``evaluate`` saved for ``partition_date``."""
    partition = lake_for(pipeline).read(EVALUATION, partition_date)
    return NightEvaluation.from_dict(json.loads(read_bytes(partition.paths()[0])))


def _decisions(
    pipeline: Pipeline, partition_date: dt.date, evaluation: NightEvaluation, promote: bool
) -> dict[str, Decision]:
    """Return the gate's decision for each learned model against its champion."""
    from nightshift.champion import decide

    decisions = {}
    for name, champion in evaluation.champions.items():
        scored = evaluation.models[name]
        challenger = Challenger(name, partition_date.isoformat(), scored.metrics, scored.segments)
        decisions[name] = decide(
            name,
            challenger,
            champion,
            evaluation.headline_metric,
            pipeline.evaluation,
            promote=promote,
            delta=evaluation.deltas.get(name),
        )
    return decisions


def _training_window(pipeline: Pipeline, partition_date: dt.date) -> TrainingWindow:
    """Return the days the night trained on, from its features partition."""
    features = lake_for(pipeline).read(FEATURES, partition_date)
    stats = FeatureStats.from_json(read_bytes(features.paths()[0]))
    window = features.meta["window"]
    return TrainingWindow(
        window[0],
        window[-1],
        window,
        stats.rows,
        features.meta["batches"],
        stats.label_mean,
        _left_out(pipeline, partition_date, window),
    )


def _left_out(pipeline: Pipeline, partition_date: dt.date, used: list[str]) -> dict[str, str]:
    """Return the window's days the night did not train on, and why."""
    from nightshift.quarantine import HELD, holds

    lake = lake_for(pipeline)
    left_out = {}
    for day in window_dates(pipeline, partition_date):
        if day.isoformat() in used:
            continue
        held = holds(lake, day)
        if held and held[0].released is None:
            left_out[day.isoformat()] = f"{HELD} ({held[0].stage}: {held[0].why})"
        else:
            left_out[day.isoformat()] = "no data: no source file for the day, or not processed"
    return left_out


@dataclass(frozen=True)
class _Published:
    """What publish has done by the time it writes the report."""

    run_id: str
    promote: bool
    timings: dict[str, float]
    airflow_url: str | None
    decisions: dict[str, Decision]  # as recorded in the registry
    logged: dict[str, dict[str, Any]]  # per model: its MLflow run and registered version
    approval: Approval | None = None


def _night_summary(
    pipeline: Pipeline,
    partition_date: dt.date,
    evaluation: NightEvaluation,
    window: TrainingWindow,
    published: _Published,
) -> NightSummary:
    """Return what the report and metrics.json say about the night."""
    from nightshift import tracking
    from nightshift.validate import read_summary

    champion = _champion_outcome(evaluation, published)
    tracking_uri, _ = tracking.store(pipeline)
    return NightSummary(
        pipeline=pipeline.name,
        dag_id=pipeline.dag_id,
        partition_date=partition_date.isoformat(),
        task=pipeline.schema_.task,
        run_id=published.run_id,
        threshold=pipeline.training.threshold,
        run_options={
            "models": [m.name for m in pipeline.models],
            "window_days": pipeline.training.window_days,
            "sample_fraction": pipeline.training.sample_fraction,
            "promote": published.promote,
        },
        gate=pipeline.evaluation.model_dump(),
        training_window=window,
        data={"held_out": read_summary(lake_for(pipeline), partition_date)},
        evaluation=evaluation,
        decisions=published.decisions,
        champion=champion,
        timings=dict(published.timings),
        links={"airflow": pipeline.airflow_run_url(published.airflow_url, published.run_id)},
        mlflow={"tracking_uri": tracking_uri, "runs": published.logged},
        trend=_trend(pipeline, partition_date, evaluation, champion.promoted),
        nightshift_version=__version__,
        approval=published.approval,
    )


def _champion_outcome(evaluation: NightEvaluation, published: _Published) -> ChampionOutcome:
    """Return the challenger's decision as the registry holds it after the aliases moved."""
    name = evaluation.challenger
    previous = evaluation.champions.get(name)
    decision = published.decisions.get(name)
    if decision is None:
        reason = "no learned model tonight"
        return ChampionOutcome(name, None, False, reason, previous, published.promote)
    entry = published.logged.get(name) or {}
    if decision.promoted:
        model_id: str | None = f"{entry.get('registered_model')} v{entry.get('version')}"
    elif previous is not None:
        model_id = f"{previous.ref.registered_model} v{previous.ref.version}"
    else:
        model_id = None
    return ChampionOutcome(
        name, model_id, decision.promoted, decision.reason, previous, published.promote
    )


def _trend(
    pipeline: Pipeline, partition_date: dt.date, evaluation: NightEvaluation, promoted: bool
) -> list[TrendPoint]:
    """Return the headline metric of the nights published before this one, and this one's."""
    from nightshift.report_index import published_runs

    earlier = [
        run for run in published_runs(pipeline) if run.partition_date < partition_date.isoformat()
    ][-(pipeline.evaluation.trend_nights - 1) :]
    tonight = TrendPoint(
        partition_date.isoformat(),
        evaluation.headline(evaluation.best),
        promoted,
        evaluation.best,
    )
    return [TrendPoint(r.partition_date, r.value, r.promoted, r.best) for r in earlier] + [tonight]


def publish(
    pipeline: Pipeline,
    partition_date: dt.date,
    timings: dict[str, float],
    run_id: str,
    promote: bool = True,
    airflow_url: str | None = None,
    answer: Approval | None = None,
) -> dict[str, Any]:
    """Decide each champion; log to MLflow; move the aliases; write the report and index.

    In that order: a publish that dies before the aliases move leaves every champion as it
    was, and its retry reuses the MLflow runs it had finished. Where the pipeline requires
    approval, a promotion the gate earned waits for ``answer`` (none yet: "awaiting").
    """
    from nightshift import tracking

    result: dict[str, Any] = {}
    with _timed(result, Stage.PUBLISH):
        evaluation = read_evaluation(pipeline, partition_date)
        gate = _decisions(pipeline, partition_date, evaluation, promote)
        approval = _approval(pipeline, gate, answer)
        decisions = {n: approval.applied_to(d) if approval else d for n, d in gate.items()}
        for name, decision in decisions.items():
            log.info("%s %s %s: %s", pipeline.name, partition_date, name, decision.reason)
        window = _training_window(pipeline, partition_date)
        tonight = {name: load_model(pipeline, name, partition_date) for name in evaluation.models}
        logged = tracking.log_nightly(
            pipeline,
            tracking.NightLog(partition_date, run_id, evaluation, window),
            tonight,
            {"evaluation.json": _evaluation_json(evaluation)},
        )
        # The champion aliases move once tonight's versions are complete, before the report
        # is written, so the report states what the registry now holds. A publish that dies
        # before this line leaves every champion where it was; one that dies after it is
        # retried, and the retry finds its versions already champion.
        refused = (
            {n for n, d in gate.items() if d.promoted} if approval and approval.refused else set()
        )
        recorded, moved = tracking.record_decisions(
            pipeline, partition_date, logged, decisions, refused
        )
        published = _Published(run_id, promote, timings, airflow_url, recorded, logged, approval)
        summary = _night_summary(pipeline, partition_date, evaluation, window, published)
        html, metrics_json = _write_report(pipeline, partition_date, summary, airflow_url)
        tracking.log_report(pipeline, logged, html, metrics_json)
        directory = pipeline.reports_dir(partition_date)
        result.update(
            report=f"{directory}/report.html",
            metrics=f"{directory}/metrics.json",
            champion=summary.champion.model_id,
            promoted=summary.champion.promoted,
            decision=summary.champion.reason,
            aliases_moved=moved,
            awaiting_approval=approval is not None and approval.state == "awaiting",
        )
    return result


def _approval(
    pipeline: Pipeline, decisions: dict[str, Decision], answer: Approval | None
) -> Approval | None:
    """The approval that applies to tonight's promotions: none where the pipeline promotes
    without asking or the gate promoted nothing; else ``answer``, or "awaiting" one."""
    if pipeline.evaluation.approval != "required":
        return None
    if not any(decision.promoted for decision in decisions.values()):
        return None
    if answer is not None:
        return answer
    due = dt.datetime.now(dt.UTC) + dt.timedelta(hours=pipeline.evaluation.approval_hours)
    return Approval("awaiting", due=due.isoformat(timespec="minutes"))


def _write_report(
    pipeline: Pipeline, partition_date: dt.date, summary: NightSummary, airflow_url: str | None
) -> tuple[str, bytes]:
    """Write the night's report.html and metrics.json, then the index; return both."""
    from nightshift.report import render_report
    from nightshift.report_index import publish_index

    directory = pipeline.reports_dir(partition_date)
    results = summary.to_dict()
    metrics_json = json.dumps(results, indent=1, sort_keys=True, default=str).encode()
    html = render_report(results)
    # metrics.json is what the index lists, so it goes after the report it points to.
    write_bytes_atomic(f"{directory}/report.html", html.encode())
    write_bytes_atomic(f"{directory}/metrics.json", metrics_json)
    # The pipeline's index, beside the reports: every published run, newest first.
    publish_index(pipeline, airflow_url or "")
    return html, metrics_json


def run_nightly(
    pipeline: Pipeline,
    partition_date: dt.date,
    run_id: str = "local",
    on_stage: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every stage for ``partition_date`` in this process; return each stage's result."""
    results: dict[str, dict[str, Any]] = {}

    def record(stage: str, outcome: dict[str, Any]) -> dict[str, Any]:
        results[stage] = outcome
        if on_stage is not None:
            on_stage(stage, outcome)
        return outcome

    ingested = record(Stage.INGEST, ingest(pipeline, partition_date))
    dates = [dt.date.fromisoformat(d) for d in ingested["dates"]]
    validated = record(Stage.VALIDATE, validate(pipeline, dates, partition_date))
    valid = [dt.date.fromisoformat(d) for d in validated["dates"]]
    record(Stage.PREPROCESS, preprocess(pipeline, valid))
    version = record(Stage.FIT_FEATURES, fit_features(pipeline, partition_date))["version"]
    record(Stage.TRAIN_DISTRIBUTED, train_distributed(pipeline, partition_date, version))
    record(Stage.TRAIN_INCREMENTAL, train_incremental(pipeline, partition_date, version))
    record(Stage.EVALUATE, evaluate(pipeline, partition_date, version))
    timings = {str(stage): outcome["seconds"] for stage, outcome in results.items()}
    record(Stage.PUBLISH, publish(pipeline, partition_date, timings, run_id))
    return results
