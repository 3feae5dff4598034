"""The nightly stages, one function per Airflow task, testable without Airflow.

Each stage reads and writes partitions keyed by the run's date and returns a small JSON-able
dict (URIs, counts, seconds) for XCom. ``run_nightly`` runs them in order in one process, for
the command line and the benchmarks.

The training window of date D is the ``window_days`` days before D; D itself is held out for
evaluation, so the newest day is never trained on. A window day that has never been processed
is ingested, validated and processed by D's run, so a first run on an empty lake works.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd

from nightshift import __version__
from nightshift.config import Pipeline, SGDModel, XGBoostModel
from nightshift.features import FeatureStats, fit_stats, labels
from nightshift.ingest import ingest_date
from nightshift.lake import (
    PROCESSED,
    RAW,
    Lake,
    PartitionMissing,
    read_bytes,
    write_bytes_atomic,
)

log = logging.getLogger(__name__)

FEATURES = "features"
EVALUATION = "evaluation"


def model_stage(name: str) -> str:
    return f"models/{name}"


def lake_for(pipeline: Pipeline) -> Lake:
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
def _timed(result: dict[str, Any]) -> Iterator[None]:
    start = time.perf_counter()
    yield
    result["seconds"] = round(time.perf_counter() - start, 3)


def ingest(pipeline: Pipeline, partition_date: dt.date) -> dict[str, Any]:
    """Land the run date (and any unprocessed window day) in the raw stage.

    The run date's input must be there and readable, or the run stops here. A window day
    whose input is missing or unreadable is left out of the window, with a warning.
    """
    from nightshift.ingest import SourceError

    result: dict[str, Any] = {"raw": {}, "skipped": {}}
    with _timed(result):
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
    with _timed(result):
        lake = lake_for(pipeline)
        for day in dates:
            try:
                summary = validate_date(pipeline, lake, lake.read(RAW, day))
            except DataValidationError as exc:
                if day == partition_date:
                    raise
                log.warning("%s: window day %s left out: %s", pipeline.name, day, exc)
                result["skipped"][day.isoformat()] = str(exc)
                continue
            result["rows"][day.isoformat()] = summary["rows"]
        result["dates"] = [d.isoformat() for d in dates if d.isoformat() in result["rows"]]
    return result


def preprocess(pipeline: Pipeline, dates: list[dt.date]) -> dict[str, Any]:
    """Process each validated date's batches on the Dask cluster."""
    from nightshift.cluster import accelerators, dask_client
    from nightshift.preprocess import preprocess_date

    result: dict[str, Any] = {}
    with _timed(result):
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


def training_paths(pipeline: Pipeline, partition_date: dt.date) -> tuple[list[str], list[str]]:
    """Return the processed batch paths of the training window and the dates they cover."""
    lake = lake_for(pipeline)
    paths: list[str] = []
    dates: list[str] = []
    for day in window_dates(pipeline, partition_date):
        try:
            partition = lake.read(PROCESSED, day)
        except PartitionMissing:
            log.warning(
                "%s: no processed partition for %s; the window skips it", pipeline.name, day
            )
            continue
        paths.extend(partition.paths())
        dates.append(day.isoformat())
    if not paths:
        raise PartitionMissing(
            f"{pipeline.name}: no processed data in the training window of {partition_date} "
            f"({window_dates(pipeline, partition_date)[0]} to {partition_date - dt.timedelta(1)})"
        )
    return paths, dates


def fit_features(pipeline: Pipeline, partition_date: dt.date) -> dict[str, Any]:
    """Fit imputation, scaling and vocabularies on the training window; save them."""
    from nightshift.cluster import dask_client
    from nightshift.preprocess import processed_frame

    result: dict[str, Any] = {}
    with _timed(result):
        paths, dates = training_paths(pipeline, partition_date)
        with dask_client() as client:
            frame = processed_frame(paths, pipeline)
            stats = fit_stats(frame, pipeline)
            del client
        lake = lake_for(pipeline)
        with lake.writer(FEATURES, partition_date) as writer:
            writer.write_bytes("features.json", stats.to_json())
            writer.meta.update({"window": dates, "rows": stats.rows, "batches": len(paths)})
        result.update(
            {
                "features": lake.partition_uri(FEATURES, partition_date),
                "window": dates,
                "rows": stats.rows,
            }
        )
    return result


def _load_stats(pipeline: Pipeline, partition_date: dt.date) -> tuple[FeatureStats, bytes]:
    partition = lake_for(pipeline).read(FEATURES, partition_date)
    payload = read_bytes(partition.paths()[0])
    return FeatureStats.from_json(payload), payload


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


def train_distributed(pipeline: Pipeline, partition_date: dt.date) -> dict[str, Any]:
    """Train every XGBoost model of the pipeline with ``xgboost.dask``."""
    from nightshift.cluster import accelerators, dask_client
    from nightshift.train import train_xgboost

    result: dict[str, Any] = {"models": {}}
    with _timed(result):
        specs = [m for m in pipeline.models if isinstance(m, XGBoostModel)]
        if specs:
            paths, _ = training_paths(pipeline, partition_date)
            stats, stats_json = _load_stats(pipeline, partition_date)
            with dask_client() as client:
                device = accelerators(client).xgboost_device
                result["device"] = device
                for spec in specs:
                    trained = train_xgboost(client, pipeline, spec, paths, stats, device)
                    result["models"][spec.name] = _save_model(
                        pipeline, partition_date, trained, stats_json
                    )
    return result


def train_incremental(pipeline: Pipeline, partition_date: dt.date) -> dict[str, Any]:
    """Train the batch-wise scikit-learn models and the baseline."""
    from nightshift.train import train_baseline, train_sgd

    result: dict[str, Any] = {"models": {}}
    with _timed(result):
        paths, _ = training_paths(pipeline, partition_date)
        stats, stats_json = _load_stats(pipeline, partition_date)
        for spec in pipeline.models:
            if isinstance(spec, XGBoostModel):
                continue
            if isinstance(spec, SGDModel):
                trained = train_sgd(pipeline, spec, paths, stats)
            else:
                trained = train_baseline(pipeline, spec, stats)
            result["models"][spec.name] = _save_model(pipeline, partition_date, trained, stats_json)
    return result


def load_model(pipeline: Pipeline, name: str, trained_for: dt.date) -> tuple[Any, dict[str, str]]:
    """Return the model ``name`` trained for ``trained_for`` and its partition's files."""
    from nightshift.train import LoadedModel

    partition = lake_for(pipeline).read(model_stage(name), trained_for)
    files = dict(
        zip([f.rsplit("/", 1)[-1] for f in partition.files], partition.paths(), strict=True)
    )
    stats = FeatureStats.from_json(read_bytes(files["features.json"]))
    model_file = files[partition.meta["model_file"]]
    model = LoadedModel(
        partition.meta["kind"], read_bytes(model_file), stats, pipeline.schema_.task, model_file
    )
    files["_partition"] = partition.uri
    return model, files


def _window_sample(pipeline: Pipeline, paths: list[str], columns: list[str]) -> pd.DataFrame:
    """Return up to 200,000 rows of the training window's processed batches (fixed seed)."""
    frame = pd.concat([pd.read_parquet(p, columns=columns) for p in paths], ignore_index=True)
    if len(frame) > 200_000:
        frame = frame.sample(n=200_000, random_state=pipeline.training.seed)
    return frame


def evaluate(pipeline: Pipeline, partition_date: dt.date) -> dict[str, Any]:
    """Score every model, and each model's champion, on the held-out run date; save it all.

    Measurements only: the promotion decision is publish's, from what is saved here.
    """
    from nightshift import tracking
    from nightshift.evaluate import bootstrap_delta, drift, evaluate_scores, segment_metrics

    result: dict[str, Any] = {}
    with _timed(result):
        lake = lake_for(pipeline)
        held_out = lake.read(PROCESSED, partition_date)
        frame = pd.concat([pd.read_parquet(p) for p in held_out.paths()], ignore_index=True)
        y = labels(frame)
        task = pipeline.schema_.task
        threshold = pipeline.training.threshold
        rules = pipeline.evaluation
        metric, higher_is_better = pipeline.metric
        segments = frame[rules.segment].to_numpy(dtype=object) if rules.segment else None

        def measure(model: Any, score: Any) -> dict[str, Any]:
            scored = evaluate_scores(task, y, score, threshold)
            if segments is not None:
                scored["segments"] = segment_metrics(task, y, score, segments, threshold)
            return scored

        models: dict[str, Any] = {}
        scores: dict[str, Any] = {}
        for spec in pipeline.models:
            model, files = load_model(pipeline, spec.name, partition_date)
            scores[spec.name] = model.predict(frame)
            scored = measure(model, scores[spec.name])
            scored["kind"] = model.kind
            scored["history"] = json.loads(read_bytes(files["history.json"]))
            if model.kind == "baseline":
                scored["value"] = float(model.content["value"])
            if model.kind == "xgboost":
                scored["importance"] = model.importance(frame, seed=pipeline.training.seed)
            models[spec.name] = scored

        def rank_key(name: str) -> float:
            value = models[name]["metrics"][metric]
            if value is None:
                return float("inf")
            return -value if higher_is_better else value

        ranking = sorted(models, key=rank_key)
        # The challenger is the best learned model; the baseline is there to keep it honest.
        learned = [name for name in ranking if models[name]["kind"] != "baseline"]

        # Each learned model's champion (registry alias), scored on the same rows.
        mlflow_client = tracking.client(pipeline) if learned else None
        champions: dict[str, Any] = {}
        deltas: dict[str, Any] = {}
        for name in learned:
            current = tracking.champion(
                mlflow_client, tracking.registered_name(pipeline.name, name)
            )
            champions[name] = current
            if current is None or not current["trained_for"] < partition_date.isoformat():
                continue  # none yet, or trained on this day or later: not a fair comparison
            try:
                model, _ = load_model(
                    pipeline,
                    current["model"] or name,
                    dt.date.fromisoformat(current["trained_for"]),
                )
                champion_score = model.predict(frame)
            except (PartitionMissing, KeyError, ValueError) as exc:
                log.warning("%s: champion %s not scored: %s", pipeline.name, current, exc)
                current["unscored"] = f"{type(exc).__name__}: {exc}"
                continue
            measured = measure(model, champion_score)
            current["metrics"] = measured["metrics"]
            current["segments"] = measured.get("segments")
            deltas[name] = bootstrap_delta(
                metric,
                y,
                scores[name],
                champion_score,
                threshold,
                samples=rules.bootstrap_samples,
                seed=pipeline.training.seed,
            )

        feature_columns = [*pipeline.features.numeric, *pipeline.features.categorical]
        paths, _ = training_paths(pipeline, partition_date)
        window = _window_sample(pipeline, paths, feature_columns)
        evaluation = {
            "models": models,
            "ranking": ranking,
            "best": ranking[0],
            "challenger": (learned or ranking)[0],
            "headline_metric": metric,
            "higher_is_better": higher_is_better,
            "champions": champions,
            "deltas": deltas,
            "drift": drift(
                window,
                frame,
                pipeline.features.numeric,
                pipeline.features.categorical,
                rules.drift_threshold,
            ),
        }
        with lake.writer(EVALUATION, partition_date) as writer:
            writer.write_bytes("evaluation.json", json.dumps(evaluation, sort_keys=True).encode())
        result.update(
            {
                "evaluation": lake.partition_uri(EVALUATION, partition_date),
                "best": ranking[0],
                metric: models[ranking[0]]["metrics"][metric],
            }
        )
    return result


def report_dir(pipeline: Pipeline, partition_date: dt.date) -> str:
    return f"{pipeline.reports_root().rstrip('/')}/{pipeline.name}/{partition_date.isoformat()}"


def _decisions(
    pipeline: Pipeline, partition_date: dt.date, evaluation: dict[str, Any], promote: bool
) -> dict[str, Any]:
    from nightshift.champion import decide

    metric = evaluation["headline_metric"]
    decisions = {}
    for name, champion in evaluation["champions"].items():
        scored = evaluation["models"][name]
        challenger = {
            "model": name,
            "trained_for": partition_date.isoformat(),
            "metrics": scored["metrics"],
            "segments": scored.get("segments"),
        }
        decisions[name] = decide(
            name,
            challenger,
            champion,
            metric,
            pipeline.evaluation,
            promote=promote,
            delta=evaluation["deltas"].get(name),
        ).to_dict()
    return decisions


def publish(
    pipeline: Pipeline,
    partition_date: dt.date,
    timings: dict[str, float],
    run_id: str,
    promote: bool = True,
    airflow_url: str | None = None,
) -> dict[str, Any]:
    """Decide each champion; log to MLflow; move the aliases; write the report and index.

    In that order: a publish that dies before the aliases move leaves every champion as it
    was, and its retry reuses the MLflow runs it had finished.
    """
    from nightshift import tracking
    from nightshift.report import render_report
    from nightshift.report_index import publish_index, published_runs
    from nightshift.validate import read_summary

    result: dict[str, Any] = {}
    with _timed(result):
        lake = lake_for(pipeline)
        evaluation = json.loads(read_bytes(lake.read(EVALUATION, partition_date).paths()[0]))
        features = lake.read(FEATURES, partition_date)
        stats = FeatureStats.from_json(read_bytes(features.paths()[0]))
        window = features.meta["window"]
        held_out = read_summary(lake, partition_date)
        challenger = evaluation["challenger"]
        decisions = _decisions(pipeline, partition_date, evaluation, promote)
        headline = decisions.get(challenger)
        previous = evaluation["champions"].get(challenger)
        for name, decision in decisions.items():
            log.info("%s %s %s: %s", pipeline.name, partition_date, name, decision["reason"])
        results = {
            "pipeline": pipeline.name,
            "dag_id": pipeline.dag_id,
            "partition_date": partition_date.isoformat(),
            "task": pipeline.schema_.task,
            "run_id": run_id,
            "threshold": pipeline.training.threshold,
            "run_options": {
                "models": [m.name for m in pipeline.models],
                "window_days": pipeline.training.window_days,
                "sample_fraction": pipeline.training.sample_fraction,
                "promote": promote,
            },
            "gate": pipeline.evaluation.model_dump(),
            "training_window": {
                "start": window[0],
                "end": window[-1],
                "dates": window,
                "rows": stats.rows,
                "batches": features.meta["batches"],
                "label_mean": stats.label_mean,
            },
            "data": {"held_out": held_out},
            **evaluation,
            "decisions": decisions,
            "champion": {
                "model": challenger,
                "model_id": None,
                "promoted": bool(headline and headline["promoted"]),
                "reason": headline["reason"] if headline else "no learned model tonight",
                "previous": previous,
                "promotion_allowed": promote,
            },
            "timings": dict(timings),
            "links": {
                "airflow": (
                    f"{airflow_url.rstrip('/')}/dags/{pipeline.dag_id}/runs/"
                    f"{urllib.parse.quote(run_id, safe='')}"
                    if airflow_url
                    else None
                ),
            },
            "nightshift_version": __version__,
        }
        tonight = {
            name: load_model(pipeline, name, partition_date) for name in evaluation["models"]
        }
        logged = tracking.log_nightly(
            pipeline,
            partition_date,
            run_id,
            results,
            tonight,
            {"evaluation.json": json.dumps(evaluation, sort_keys=True).encode()},
        )
        tracking_uri, _ = tracking.store(pipeline)
        results["mlflow"] = {"tracking_uri": tracking_uri, "runs": logged}
        # The champion aliases move once tonight's versions are complete, before the report
        # is written, so the report states what the registry now holds. A publish that dies
        # before this line leaves every champion where it was; one that dies after it is
        # retried, and the retry finds its versions already champion.
        moved = tracking.record_decisions(pipeline, partition_date, logged, decisions)
        if headline:
            entry = logged.get(challenger) or {}
            new_id = f"{entry.get('registered_model')} v{entry.get('version')}"
            kept = f"{previous['registered_model']} v{previous['version']}" if previous else None
            results["champion"].update(
                promoted=headline["promoted"],
                reason=headline["reason"],
                model_id=new_id if headline["promoted"] else kept,
            )
        directory = report_dir(pipeline, partition_date)
        earlier = [
            run
            for run in published_runs(pipeline)
            if run.partition_date < partition_date.isoformat()
        ][-(pipeline.evaluation.trend_nights - 1) :]
        best_metrics = evaluation["models"][evaluation["best"]]["metrics"]
        results["trend"] = [
            {"date": r.partition_date, "value": r.value, "promoted": r.promoted, "best": r.best}
            for r in earlier
        ] + [
            {
                "date": partition_date.isoformat(),
                "value": best_metrics[evaluation["headline_metric"]],
                "promoted": results["champion"]["promoted"],
                "best": evaluation["best"],
            }
        ]
        metrics_json = json.dumps(results, indent=1, sort_keys=True, default=str).encode()
        html = render_report(results)
        # metrics.json is what the index lists, so it goes after the report it points to.
        write_bytes_atomic(f"{directory}/report.html", html.encode())
        write_bytes_atomic(f"{directory}/metrics.json", metrics_json)
        # The pipeline's index, beside the reports: every published run, newest first.
        publish_index(pipeline, airflow_url or "")
        tracking.log_report(pipeline, logged, html, metrics_json)
        result.update(
            {
                "report": f"{directory}/report.html",
                "metrics": f"{directory}/metrics.json",
                "champion": results["champion"]["model_id"],
                "promoted": results["champion"]["promoted"],
                "aliases_moved": moved,
            }
        )
    return result


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

    dates = [
        dt.date.fromisoformat(d)
        for d in record("ingest", ingest(pipeline, partition_date))["dates"]
    ]
    validated = record("validate", validate(pipeline, dates, partition_date))
    record(
        "preprocess", preprocess(pipeline, [dt.date.fromisoformat(d) for d in validated["dates"]])
    )
    record("fit_features", fit_features(pipeline, partition_date))
    record("train_distributed", train_distributed(pipeline, partition_date))
    record("train_incremental", train_incremental(pipeline, partition_date))
    record("evaluate", evaluate(pipeline, partition_date))
    timings = {stage: outcome["seconds"] for stage, outcome in results.items()}
    record("publish", publish(pipeline, partition_date, timings, run_id))
    return results
