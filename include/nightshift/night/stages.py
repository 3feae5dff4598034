"""The nightly stages, one function per Airflow task, testable without Airflow.

Each stage reads and writes partitions keyed by the run's date and returns a small typed
record (``night.results``: URIs, counts, seconds), handed on as XCom. ``run_nightly`` runs
them in order in one process, for the command line and the benchmarks.

The training window of date D is the ``window_days`` days before D; D itself is held out for
evaluation, so the newest day is never trained on. A window day that has never been processed
is ingested, validated and processed by D's run, so a first run on an empty lake works.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from nightshift.config.pipeline import Pipeline, Stage
from nightshift.config.profiling import dask_report
from nightshift.config.records import (
    Approval,
)
from nightshift.data.ingest import ingest_date
from nightshift.night.inputs import (
    EVALUATION,
    NightInputs,
    dates_to_prepare,
    fit_inputs,
    night_inputs,
    save_model,
)
from nightshift.night.results import (
    Evaluated,
    FeaturesFitted,
    Ingested,
    Preprocessed,
    Published,
    Trained,
    Validated,
    timed,
)
from nightshift.night.scoring import evaluation_json, score_night
from nightshift.night.summary import (
    PublishAsked,
    publish_night,
    write_validation_report,
)
from nightshift.storage.lake import (
    RAW,
    lake_for,
)

log = logging.getLogger(__name__)


def ingest(pipeline: Pipeline, partition_date: dt.date) -> Ingested:
    """Land the run date (and any unprocessed window day) in the raw stage.

    The run date's input must be there and readable, or the run stops here. A window day
    whose input is missing or unreadable is left out of the window, with a warning.
    """
    from nightshift.data.ingest import SourceError

    raw: dict[dt.date, str] = {}
    skipped: dict[dt.date, str] = {}
    with timed(Stage.INGEST) as clock:
        lake = lake_for(pipeline)
        dates = dates_to_prepare(pipeline, partition_date)
        for day in dates:
            try:
                raw[day] = ingest_date(pipeline, lake, day).uri
            except SourceError as exc:
                if day == partition_date:
                    raise
                log.warning("%s: window day %s left out: %s", pipeline.name, day, exc)
                skipped[day] = str(exc)
    landed = [day for day in dates if day in raw]
    return Ingested(
        partition_date=partition_date, dates=landed, raw=raw, skipped=skipped, **vars(clock)
    )


def validate(
    pipeline: Pipeline, dates: list[dt.date], partition_date: dt.date | None = None
) -> Validated:
    """Check each ingested date; the run date failing a blocking check stops the run.

    A window day that fails is quarantined and left out of the window, with a warning.
    Returns the dates that passed and their rows.
    """
    from nightshift.data.validate import DataValidationError, validate_date

    partition_date = partition_date or max(dates)
    rows: dict[dt.date, int] = {}
    skipped: dict[dt.date, str] = {}
    with timed(Stage.VALIDATE) as clock:
        lake = lake_for(pipeline)
        for day in dates:
            try:
                summary = validate_date(pipeline, lake, lake.read(RAW, day))
            except DataValidationError as exc:
                write_validation_report(pipeline, day, exc.failures, exc.quarantine or "")
                if day == partition_date:
                    raise
                log.warning("%s: window day %s left out: %s", pipeline.name, day, exc)
                skipped[day] = str(exc)
                continue
            rows[day] = summary.rows
    passed = [day for day in dates if day in rows]
    return Validated(dates=passed, rows=rows, skipped=skipped, **vars(clock))


def preprocess(pipeline: Pipeline, dates: list[dt.date]) -> Preprocessed:
    """Process each validated date's batches on the Dask cluster."""
    from nightshift.data.preprocess import preprocess_date
    from nightshift.models.cluster import accelerators, dask_client

    with timed(Stage.PREPROCESS) as clock:
        lake = lake_for(pipeline)
        with dask_client() as client:
            backend = accelerators(client).dataframe_backend
            processed = {
                day: preprocess_date(client, pipeline, lake, lake.read(RAW, day), backend).uri
                for day in dates
            }
    return Preprocessed(backend=backend, processed=processed, **vars(clock))


def fit_features(pipeline: Pipeline, partition_date: dt.date) -> FeaturesFitted:
    """Fit imputation, scaling and vocabularies on the training window; save them, with a
    sample of the window for drift and the training curve, and the night's inputs."""
    with timed(Stage.FIT_FEATURES) as clock:
        fitted = fit_inputs(pipeline, partition_date)
    return fitted.with_time(**vars(clock))


def train_distributed(
    pipeline: Pipeline, partition_date: dt.date, features_version: str | None = None
) -> Trained:
    """Train the kinds that train across the Dask cluster in their own task (XGBoost, with
    ``xgboost.dask``), on the inputs ``fit_features`` recorded (its ``version``; default:
    the current features partition)."""
    from nightshift.models.cluster import accelerators, dask_client
    from nightshift.models.kinds.base import TrainJob

    trained = Trained()
    with timed(Stage.TRAIN_DISTRIBUTED) as clock:
        specs = _specs_trained_in(pipeline, Stage.TRAIN_DISTRIBUTED)
        if specs:
            inputs = night_inputs(pipeline, partition_date, features_version)
            with dask_client() as client, dask_report(Stage.TRAIN_DISTRIBUTED.value):
                device = accelerators(client).xgboost_device
                paths, sample = inputs.window_paths, inputs.window_sample
                job = TrainJob(pipeline, paths, inputs.stats, client, device, sample)
                models, _ = _train_each(partition_date, specs, job, inputs)
                trained = Trained(models=models, device=device)
    return trained.with_time(**vars(clock))


def _specs_trained_in(pipeline: Pipeline, stage: Stage) -> list[Any]:
    """The pipeline's models whose kind trains in ``stage``."""
    from nightshift.models.kinds import kind_of

    return [spec for spec in pipeline.models if kind_of(spec.kind).stage is stage]


def _train_each(
    partition_date: dt.date, specs: list[Any], job: Any, inputs: NightInputs
) -> tuple[dict[str, str], int]:
    """Train each of ``specs`` by its kind on ``job`` and save it in the lake; return each
    model's partition and the bytes the models held at their end."""
    from nightshift.models.kinds import kind_of

    models, kept = {}, 0
    for spec in specs:
        trained = kind_of(spec.kind).train(spec, job)
        kept += trained.kept_bytes
        models[spec.name] = save_model(job.pipeline, partition_date, trained, inputs.stats_json)
    return models, kept


def train_incremental(
    pipeline: Pipeline, partition_date: dt.date, features_version: str | None = None
) -> Trained:
    """Train the kinds that learn batch by batch, and the baseline, on the inputs
    ``fit_features`` recorded (as :func:`train_distributed`); a Dask client is opened only
    where a kind trains on the workers tonight (SGD on a large window,
    ``train.sgd_on_workers``)."""
    from nightshift.models.cluster import dask_client
    from nightshift.models.kinds import kind_of
    from nightshift.models.kinds.base import TrainJob

    with timed(Stage.TRAIN_INCREMENTAL) as clock:
        inputs = night_inputs(pipeline, partition_date, features_version)
        specs = _specs_trained_in(pipeline, Stage.TRAIN_INCREMENTAL)
        paths = inputs.window_paths
        on_workers = any(kind_of(s.kind).needs_cluster(pipeline, paths) for s in specs)
        with dask_client() if on_workers else contextlib.nullcontext() as client:
            job = TrainJob(pipeline, paths, inputs.stats, client, "cpu", inputs.window_sample)
            models, kept = _train_each(partition_date, specs, job, inputs)
    return Trained(models=models, kept_bytes=kept, **vars(clock))


def evaluate(
    pipeline: Pipeline, partition_date: dt.date, features_version: str | None = None
) -> Evaluated:
    """Score every model, and each model's champion, on the held-out run date; save it all.
    The held-out rows and the window sample for drift are the ones ``fit_features`` recorded.

    Measurements only: the promotion decision is publish's, from what is saved here.
    """
    with timed(Stage.EVALUATE) as clock:
        lake = lake_for(pipeline)
        evaluation = score_night(pipeline, partition_date, features_version)
        with lake.writer(EVALUATION, partition_date) as writer:
            writer.write_bytes("evaluation.json", evaluation_json(evaluation))
    return Evaluated(
        evaluation=lake.partition_uri(EVALUATION, partition_date),
        best=evaluation.best,
        metric=evaluation.headline_metric,
        value=evaluation.headline(evaluation.best),
        **vars(clock),
    )


def publish(
    pipeline: Pipeline,
    partition_date: dt.date,
    timings: dict[str, float],
    run_id: str,
    promote: bool = True,
    airflow_url: str | None = None,
    answer: Approval | None = None,
) -> Published:
    """Decide each champion; log to MLflow; move the aliases; write the report and index.

    In that order: a publish that dies before the aliases move leaves every champion as it
    was, and its retry reuses the MLflow runs it had finished. Where the pipeline requires
    approval, a promotion the gate earned waits for ``answer`` (none yet: "awaiting").
    """
    with timed(Stage.PUBLISH) as clock:
        asked = PublishAsked(run_id, promote, timings, airflow_url, answer)
        summary, moved = publish_night(pipeline, partition_date, asked)
    folder = pipeline.report_folder(partition_date)
    approval = summary.approval
    return Published(
        report=folder.report,
        metrics=folder.metrics,
        champion=summary.champion.model_id,
        promoted=summary.champion.promoted,
        decision=summary.champion.reason,
        aliases_moved=moved,
        awaiting_approval=approval is not None and approval.state == "awaiting",
        **vars(clock),
    )


def run_nightly(
    pipeline: Pipeline,
    partition_date: dt.date,
    run_id: str = "local",
    on_stage: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every stage for ``partition_date`` in this process; return each stage's result as
    a DAG run's XComs would hold it."""
    results: dict[str, dict[str, Any]] = {}

    def record(stage: Stage, outcome: Any) -> Any:
        results[stage] = outcome.to_xcom()
        if on_stage is not None:
            on_stage(stage, results[stage])
        return outcome

    ingested = record(Stage.INGEST, ingest(pipeline, partition_date))
    validated = record(Stage.VALIDATE, validate(pipeline, ingested.dates, partition_date))
    record(Stage.PREPROCESS, preprocess(pipeline, validated.dates))
    version = record(Stage.FIT_FEATURES, fit_features(pipeline, partition_date)).version
    record(Stage.TRAIN_DISTRIBUTED, train_distributed(pipeline, partition_date, version))
    record(Stage.TRAIN_INCREMENTAL, train_incremental(pipeline, partition_date, version))
    record(Stage.EVALUATE, evaluate(pipeline, partition_date, version))
    timings = {str(stage): outcome["seconds"] for stage, outcome in results.items()}
    record(Stage.PUBLISH, publish(pipeline, partition_date, timings, run_id))
    return results
