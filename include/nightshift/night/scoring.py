"""Scoring a night: the held-out rows, each model's and each champion's measurements on
them, the ranking, and the columns drift is measured on."""

from __future__ import annotations

import datetime as dt
import json
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pandas as pd

from nightshift.config.pipeline import LABEL, Pipeline
from nightshift.config.records import (
    ChampionRef,
    ChampionScore,
    Comparison,
    ModelScore,
    NightEvaluation,
)
from nightshift.data.features import labels
from nightshift.evaluation.champion import trained_before
from nightshift.night.inputs import (
    EVALUATION,
    NightInputs,
    load_model,
    night_inputs,
    read_window_sample,
)
from nightshift.storage.lake import (
    PROCESSED,
    PartitionMissing,
    lake_for,
    read_bytes,
    read_frame,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeldOut:
    """The run date's processed rows, on which every model and champion is scored."""

    frame: pd.DataFrame
    y: Any  # the labels, as floats
    segments: Any  # the segment column's values, or None when the pipeline has no segment


def _measure(pipeline: Pipeline, held_out: HeldOut, score: Any) -> dict[str, Any]:
    """Return one model's held-out metrics and curves (and per segment, if any)."""
    from nightshift.evaluation.evaluate import evaluate_scores, segment_metrics

    task, threshold = pipeline.schema_.task, pipeline.training.threshold
    scored = evaluate_scores(task, held_out.y, score, threshold)
    if held_out.segments is not None:
        scored["segments"] = segment_metrics(task, held_out.y, score, held_out.segments, threshold)
    return scored


def score_models(
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


def rank_models(pipeline: Pipeline, models: dict[str, ModelScore]) -> list[str]:
    """Return the model names, best first on the pipeline's metric (undefined: last)."""
    metric, higher_is_better = pipeline.metric

    def rank_key(name: str) -> float:
        value = models[name].metrics[metric]
        if value is None:
            return float("inf")
        return -value if higher_is_better else value

    return sorted(models, key=rank_key)


def score_champions(
    pipeline: Pipeline,
    partition_date: dt.date,
    held_out: HeldOut,
    scores: dict[str, Any],
    learned: list[str],
    mlflow_client: Any,
) -> tuple[dict[str, ChampionScore | None], dict[str, Comparison]]:
    """Return each learned model's champion (registry alias) scored on the same rows, and the
    bootstrap comparison of tonight's model with it."""
    from nightshift.publishing import tracking

    champions: dict[str, ChampionScore | None] = {}
    compared: dict[str, tuple[Any, Any]] = {}
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
        compared[name] = (scores[name], champion_score)
    return champions, compare_all(pipeline, held_out, compared)


def compare_all(
    pipeline: Pipeline, held_out: HeldOut, pairs: dict[str, tuple[Any, Any]]
) -> dict[str, Comparison]:
    """Return the bootstrap comparison of each (tonight's, champion's) scores, the models in
    parallel threads: the replicates are numpy passes over the day's rows that release the
    GIL (two models on a million-row day: 1.6x faster on two cores than one after another)."""
    from nightshift.evaluation.comparison import compare
    from nightshift.models.cluster import usable_cores

    metric, _ = pipeline.metric
    rules = pipeline.evaluation

    def one(name: str) -> Comparison:
        return compare(
            pipeline.schema_.task,
            metric,
            held_out.y,
            pairs[name],
            pipeline.training.threshold,
            held_out.segments,
            rules.bootstrap_samples,
            rules.confidence,
            seed=pipeline.training.seed,
        )

    if not pairs or not rules.bootstrap_samples:  # 0: the gate judges point estimates
        return {}
    with ThreadPoolExecutor(min(len(pairs), usable_cores()), "bootstrap") as pool:
        return dict(zip(pairs, pool.map(one, pairs), strict=True))


def _champion_score(
    pipeline: Pipeline, held_out: HeldOut, current: ChampionRef, name: str
) -> tuple[Any, str | None]:
    """Return the champion's scores on the held-out rows, or None and why, when its model
    cannot be loaded from the lake."""
    if current.trained_for is None:
        return None, "the champion version names no nightshift.trained_for date"
    try:
        model, _ = load_model(pipeline, current.model or name, current.trained_for)
        return model.predict(held_out.frame), None
    except (PartitionMissing, KeyError, ValueError) as exc:
        log.warning("%s: champion %s not scored: %s", pipeline.name, current, exc)
        return None, f"{type(exc).__name__}: {exc}"


def read_held_out(pipeline: Pipeline, paths: list[str]) -> HeldOut:
    """Return the run date's processed rows, labels and segment values."""
    frame = pd.concat([read_frame(p) for p in paths], ignore_index=True)
    segment = pipeline.evaluation.segment
    return HeldOut(frame, labels(frame), frame[segment].to_numpy(dtype=object) if segment else None)


def start_reads(
    io: ThreadPoolExecutor, pipeline: Pipeline, inputs: NightInputs, columns: list[str]
) -> tuple[Future[pd.DataFrame], Future[Any] | None]:
    """Start reading the window sample of ``columns`` for drift and opening the registry on
    ``io``: they wait on files and imports while the models score (XGBoost releases the GIL)."""
    from nightshift.models.kinds import is_learned
    from nightshift.publishing import tracking

    window = io.submit(read_window_sample, pipeline, inputs, columns)
    learns = any(is_learned(spec.kind) for spec in pipeline.models)
    return window, io.submit(tracking.client, pipeline) if learns else None


# Time features that are one value for a whole day: the held-out day always "drifts" from a
# window of several days on them, so they are left out of drift.
_DAY_LEVEL_TIME_FEATURES = frozenset({"day_of_week", "is_weekend"})


def drift_columns(pipeline: Pipeline) -> tuple[list[str], list[str]]:
    """Return the numeric and categorical columns whose drift the night measures: the
    features, the time features that vary within a day, and the label (its rate, for a
    classifier)."""
    features = pipeline.features
    time = [name for name in features.time if name not in _DAY_LEVEL_TIME_FEATURES]
    if pipeline.is_classification:
        return [*features.numeric, *time], [*features.categorical, LABEL]
    return [*features.numeric, *time, LABEL], list(features.categorical)


def score_night(
    pipeline: Pipeline, partition_date: dt.date, features_version: str | None = None
) -> NightEvaluation:
    """Return the night's measurements: every model and each learned model's champion scored
    on the held-out rows ``fit_features`` recorded, the ranking, the bootstrap comparisons, and the
    drift of the held-out day from the window sample."""
    from nightshift.evaluation.evaluate import drift
    from nightshift.models.kinds import is_learned

    with ThreadPoolExecutor(1, "evaluate-io") as io:
        lake = lake_for(pipeline)
        inputs = night_inputs(pipeline, partition_date, features_version)
        numeric, categorical = drift_columns(pipeline)
        window, registry = start_reads(io, pipeline, inputs, [*numeric, *categorical])
        held_out = read_held_out(
            pipeline, inputs.held_out_paths or lake.read(PROCESSED, partition_date).paths()
        )
        models, scores = score_models(pipeline, partition_date, held_out)
        ranking = rank_models(pipeline, models)
        # The challenger is the best learned model; the baseline is there to keep it honest.
        learned = [name for name in ranking if is_learned(models[name].kind)]
        champions, comparisons = score_champions(
            pipeline, partition_date, held_out, scores, learned, registry and registry.result()
        )
        metric, higher_is_better = pipeline.metric
        threshold = pipeline.evaluation.drift_threshold
        drifted = drift(window.result(), held_out.frame, numeric, categorical, threshold)
    best = (learned or ranking)[0]
    return NightEvaluation(
        models, ranking, best, metric, higher_is_better, champions, comparisons, drifted
    )


def evaluation_json(evaluation: NightEvaluation) -> bytes:
    """The evaluation partition's file: what ``evaluate`` measured, for ``publish``."""
    return json.dumps(evaluation.to_dict(), sort_keys=True).encode()


def read_evaluation(pipeline: Pipeline, partition_date: dt.date) -> NightEvaluation:
    """Return what ``evaluate`` saved for ``partition_date``."""
    partition = lake_for(pipeline).read(EVALUATION, partition_date)
    return NightEvaluation.from_dict(json.loads(read_bytes(partition.paths()[0])))
