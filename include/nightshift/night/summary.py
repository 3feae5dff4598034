"""What a night says: the gate's decisions, the training window, the approval, the
summary (``NightSummary``) and the reports folder's files (``config.ReportFolder``)."""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

from nightshift import __version__
from nightshift.config.pipeline import Pipeline
from nightshift.config.records import (
    Approval,
    Challenger,
    ChampionOutcome,
    Decision,
    NightEvaluation,
    NightSummary,
    TrainingWindow,
    TrendPoint,
)
from nightshift.data.features import FeatureStats
from nightshift.data.validate import Finding
from nightshift.night.inputs import FEATURES, load_model, window_dates
from nightshift.night.scoring import evaluation_json, read_evaluation
from nightshift.storage.lake import (
    lake_for,
    read_bytes,
    write_bytes_atomic,
)

log = logging.getLogger(__name__)


def write_validation_report(
    pipeline: Pipeline, partition_date: dt.date, failures: list[Finding], where: str
) -> str:
    """Write ``validation.html`` and ``validation.json`` beside the date's reports."""
    from nightshift.publishing.report import render_validation
    from nightshift.storage.quarantine import release_command

    folder = pipeline.report_folder(partition_date)
    payload = {
        "pipeline": pipeline.name,
        "partition_date": partition_date.isoformat(),
        "blocked": any(f.severity == "block" for f in failures),
        "quarantine": where,
        "release": release_command(pipeline.name, partition_date),
        "failures": [asdict(f) for f in failures],
    }
    write_bytes_atomic(folder.validation_json, json.dumps(payload, indent=1, default=str).encode())
    write_bytes_atomic(folder.validation, render_validation(payload).encode())
    return folder.validation


def gate_decisions(
    pipeline: Pipeline, partition_date: dt.date, evaluation: NightEvaluation, promote: bool
) -> dict[str, Decision]:
    """Return the gate's decision for each learned model against its champion."""
    from nightshift.evaluation.champion import decide

    decisions = {}
    for name, champion in evaluation.champions.items():
        scored = evaluation.models[name]
        challenger = Challenger(name, partition_date, scored.metrics, scored.segments)
        decisions[name] = decide(
            name,
            challenger,
            champion,
            evaluation.headline_metric,
            pipeline.evaluation,
            promote=promote,
            comparison=evaluation.comparisons.get(name),
        )
    return decisions


def read_training_window(pipeline: Pipeline, partition_date: dt.date) -> TrainingWindow:
    """Return the days the night trained on, from its features partition."""
    features = lake_for(pipeline).read(FEATURES, partition_date)
    stats = FeatureStats.from_json(read_bytes(features.paths()[0]))
    # The partition's manifest holds the window's days as ISO strings (the lake's edge).
    window = [dt.date.fromisoformat(day) for day in features.meta["window"]]
    return TrainingWindow(
        window[0],
        window[-1],
        window,
        stats.rows,
        features.meta["batches"],
        stats.label_mean,
        *_left_out(pipeline, partition_date, window),
    )


def _left_out(
    pipeline: Pipeline, partition_date: dt.date, used: list[dt.date]
) -> tuple[dict[dt.date, str], list[dt.date]]:
    """Return the window's days the night did not train on, and why; and those of them
    whose input is held in quarantine."""
    from nightshift.storage.quarantine import HELD, holds

    lake = lake_for(pipeline)
    left_out: dict[dt.date, str] = {}
    quarantined: list[dt.date] = []
    for day in window_dates(pipeline, partition_date):
        if day in used:
            continue
        held = holds(lake, day)
        if held and held[0].released is None:
            left_out[day] = f"{HELD} ({held[0].stage}: {held[0].why})"
            quarantined.append(day)
        else:
            left_out[day] = "no data: no source file for the day, or not processed"
    return left_out, quarantined


@dataclass(frozen=True)
class Recorded:
    """What publish has done by the time it writes the report."""

    run_id: str
    promote: bool
    timings: dict[str, float]
    airflow_url: str | None
    decisions: dict[str, Decision]  # as recorded in the registry
    logged: dict[str, dict[str, Any]]  # per model: its MLflow run and registered version
    approval: Approval | None = None


def night_summary(
    pipeline: Pipeline,
    partition_date: dt.date,
    evaluation: NightEvaluation,
    window: TrainingWindow,
    published: Recorded,
) -> NightSummary:
    """Return what the report and metrics.json say about the night."""
    from nightshift.data.validate import read_summary
    from nightshift.publishing import tracking

    champion = _champion_outcome(evaluation, published)
    tracking_uri, _ = tracking.store(pipeline)
    return NightSummary(
        pipeline=pipeline.name,
        dag_id=pipeline.dag_id,
        partition_date=partition_date,
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
        data={"held_out": read_summary(lake_for(pipeline), partition_date).to_dict()},
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


def _champion_outcome(evaluation: NightEvaluation, published: Recorded) -> ChampionOutcome:
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
    from nightshift.publishing.report_index import published_runs

    earlier = [run for run in published_runs(pipeline) if run.partition_date < partition_date][
        -(pipeline.evaluation.trend_nights - 1) :
    ]
    tonight = TrendPoint(
        partition_date,
        evaluation.headline(evaluation.best),
        promoted,
        evaluation.best,
    )
    return [TrendPoint(r.partition_date, r.value, r.promoted, r.best) for r in earlier] + [tonight]


def approval_for(
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


def write_report(
    pipeline: Pipeline, partition_date: dt.date, summary: NightSummary, airflow_url: str | None
) -> tuple[str, bytes]:
    """Write the night's report.html and metrics.json, then the index; return both."""
    from nightshift.publishing.report import render_report
    from nightshift.publishing.report_index import publish_index

    folder = pipeline.report_folder(partition_date)
    results = summary.to_dict()
    metrics_json = json.dumps(results, indent=1, sort_keys=True, default=str).encode()
    html = render_report(results)
    # metrics.json is what the index lists, so it goes after the report it points to.
    write_bytes_atomic(folder.report, html.encode())
    write_bytes_atomic(folder.metrics, metrics_json)
    # The pipeline's index, beside the reports: every published run, newest first.
    publish_index(pipeline, airflow_url or "")
    return html, metrics_json


@dataclass(frozen=True)
class PublishAsked:
    """What a publish is asked to do: for which run, whether it may promote, the stages'
    timings, where the Airflow UI is, and the approver's answer where one was given."""

    run_id: str
    promote: bool
    timings: dict[str, float]
    airflow_url: str | None = None
    answer: Approval | None = None


def publish_night(
    pipeline: Pipeline, partition_date: dt.date, asked: PublishAsked
) -> tuple[NightSummary, dict[str, bool]]:
    """Decide each champion; log to MLflow; move the aliases; write the report and index.
    Return the night's summary and, per model, whether its alias moved.

    In that order: a publish that dies before the aliases move leaves every champion as it
    was, and its retry reuses the MLflow runs it had finished. Where the pipeline requires
    approval, a promotion the gate earned waits for ``answer`` (none yet: "awaiting").
    """
    from nightshift.publishing import tracking

    evaluation = read_evaluation(pipeline, partition_date)
    gate = gate_decisions(pipeline, partition_date, evaluation, asked.promote)
    approval = approval_for(pipeline, gate, asked.answer)
    decisions = {n: approval.applied_to(d) if approval else d for n, d in gate.items()}
    for name, decision in decisions.items():
        log.info("%s %s %s: %s", pipeline.name, partition_date, name, decision.reason)
    window = read_training_window(pipeline, partition_date)
    tonight = {name: load_model(pipeline, name, partition_date) for name in evaluation.models}
    logged = tracking.log_nightly(
        pipeline,
        tracking.NightLog(partition_date, asked.run_id, evaluation, window),
        tonight,
        {"evaluation.json": evaluation_json(evaluation)},
    )
    # The champion aliases move once tonight's versions are complete, before the report is
    # written, so the report states what the registry now holds. A publish that dies before
    # this line leaves every champion where it was; one that dies after it is retried, and
    # the retry finds its versions already champion.
    refused = {n for n, d in gate.items() if d.promoted} if approval and approval.refused else set()
    recorded, moved = tracking.record_decisions(
        pipeline, partition_date, logged, decisions, refused
    )
    published = Recorded(
        asked.run_id, asked.promote, asked.timings, asked.airflow_url, recorded, logged, approval
    )
    summary = night_summary(pipeline, partition_date, evaluation, window, published)
    html, metrics_json = write_report(pipeline, partition_date, summary, asked.airflow_url)
    tracking.log_report(pipeline, logged, html, metrics_json)
    return summary, moved
