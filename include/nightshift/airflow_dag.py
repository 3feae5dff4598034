"""Build one Airflow DAG per pipeline YAML: wiring only, the work lives in ``stages``.

Nothing heavy is imported here: pandas, Dask, XGBoost and scikit-learn load inside task
bodies, so parsing the DAG folder stays fast.
"""

from __future__ import annotations

import datetime as dt
import logging
import warnings
from typing import Any

from airflow.sdk import (
    DAG,
    Asset,
    CronDataIntervalTimetable,
    Param,
    dag,
    get_current_context,
    task,
)

from nightshift.access import access_control
from nightshift.config import Pipeline, load_pipelines

log = logging.getLogger(__name__)


class PipelineConfigWarning(UserWarning):
    """A pipeline YAML is wrong: its DAG is not built, the other pipelines still are."""


def processed_asset(pipeline: Pipeline) -> Asset:
    return Asset(name=f"{pipeline.name}.processed", uri=f"nightshift://{pipeline.name}/processed")


def report_asset(pipeline: Pipeline) -> Asset:
    return Asset(name=f"{pipeline.name}.report", uri=f"nightshift://{pipeline.name}/report")


def partition_date_for(pipeline: Pipeline, context: Any) -> dt.date:
    """Return the date a run processes.

    In order: the trigger form's ``run_date``; for scheduled and backfill runs, the day their
    data interval starts (in the pipeline's timezone); for a manual run with no logical date,
    the last complete day before the run was requested.
    """
    requested = (context.get("params") or {}).get("run_date")
    if requested:
        return dt.date.fromisoformat(str(requested))
    dag_run = context["dag_run"]
    start = context.get("data_interval_start")
    if start is not None and str(getattr(dag_run, "run_type", "")) != "manual":
        return start.astimezone(pipeline.tz).date()
    run_after = dag_run.run_after or dag_run.logical_date
    return run_after.astimezone(pipeline.tz).date() - dt.timedelta(days=1)


def airflow_base_url() -> str | None:
    """Return the UI's base URL ([api] base_url) for links from reports, if it is set."""
    import os

    url = os.environ.get("AIRFLOW__API__BASE_URL")
    if url:
        return url
    try:
        from airflow.configuration import conf

        return conf.get("api", "base_url", fallback=None) or None
    except Exception:  # no Airflow configuration to read: reports simply carry no link
        return None


def run_pipeline(pipeline: Pipeline, context: Any) -> Pipeline:
    """Return ``pipeline`` with this run's trigger-form choices (models, window, sample)."""
    params = context.get("params") or {}
    return pipeline.with_run_options(
        models=params.get("models"),
        window_days=params.get("window_days"),
        sample_fraction=params.get("sample_fraction"),
    )


def run_params(pipeline: Pipeline) -> dict[str, Param]:
    """Return the trigger form: JSON-schema Params, so the form refuses bad values itself."""
    names = [m.name for m in pipeline.models]
    return {
        "run_date": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Run date",
            description="Day to process (YYYY-MM-DD). Empty: the latest complete day for a "
            "manual run; the run's own date for scheduled and backfill runs.",
        ),
        "models": Param(
            names,
            type="array",
            title="Models to train",
            description="Which of the pipeline's models to train and evaluate in this run.",
            examples=names,
            items={"type": "string", "enum": names},
            minItems=1,
            uniqueItems=True,
        ),
        "window_days": Param(
            pipeline.training.window_days,
            type="integer",
            minimum=1,
            maximum=366,
            title="Training window (days)",
            description="Train on this many days before the run date (the date is held out).",
        ),
        "sample_fraction": Param(
            1.0,
            type="number",
            exclusiveMinimum=0,
            maximum=1,
            title="Sample fraction",
            description="Train on this fraction of every batch: below 1 for a quick trial run.",
        ),
        "promote": Param(
            True,
            type="boolean",
            title="Allow promotion",
            description="Let a model that beats the champion become the new champion.",
        ),
    }


def _dates(values: list[str]) -> list[dt.date]:
    return [dt.date.fromisoformat(v) for v in values]


def build_dag(pipeline: Pipeline, doc: str = "") -> DAG:
    """Return the nightly DAG of ``pipeline``."""
    schedule = pipeline.schedule
    processed = processed_asset(pipeline)
    report = report_asset(pipeline)

    @dag(
        dag_id=pipeline.dag_id,
        description=pipeline.description or f"nightshift pipeline {pipeline.name}",
        doc_md=f"{doc}\n\n**Pipeline file:** `{pipeline.source_file}`",
        schedule=CronDataIntervalTimetable(schedule.cron, timezone=schedule.timezone),
        start_date=dt.datetime.combine(schedule.start_date, dt.time(), tzinfo=pipeline.tz),
        catchup=False,
        max_active_runs=schedule.max_active_runs,
        tags=["nightshift", pipeline.schema_.task, pipeline.name],
        params=run_params(pipeline),
        default_args={
            "owner": "nightshift",
            "retries": schedule.retries,
            "retry_delay": dt.timedelta(minutes=schedule.retry_delay_minutes),
            "execution_timeout": dt.timedelta(hours=3),
        },
        render_template_as_native_obj=False,
        access_control=access_control(pipeline),
    )
    def nightly() -> None:
        def current() -> Pipeline:
            return run_pipeline(pipeline, get_current_context())

        @task
        def ingest() -> dict[str, Any]:
            from nightshift import stages

            context = get_current_context()
            day = partition_date_for(pipeline, context)
            log.info("%s: run date %s", pipeline.name, day)
            return {
                **stages.ingest(run_pipeline(pipeline, context), day),
                "partition_date": day.isoformat(),
            }

        @task
        def validate(ingested: dict[str, Any]) -> dict[str, Any]:
            from airflow.sdk.exceptions import AirflowFailException

            from nightshift import stages
            from nightshift.validate import DataValidationError

            day = dt.date.fromisoformat(ingested["partition_date"])
            try:
                return stages.validate(current(), _dates(ingested["dates"]), day)
            except DataValidationError as exc:
                # Bad data stays bad on a retry: fail now, with the reason, and block training.
                raise AirflowFailException(str(exc)) from exc

        @task(outlets=[processed])
        def preprocess(ingested: dict[str, Any], validated: dict[str, Any]) -> dict[str, Any]:
            from nightshift import stages

            result = stages.preprocess(current(), _dates(validated["dates"]))
            events = get_current_context()["outlet_events"]
            events[processed].extra = {
                "partition_date": ingested["partition_date"],
                "dates": validated["dates"],
            }
            return result

        @task
        def fit_features(ingested: dict[str, Any], processed: dict[str, Any]) -> dict[str, Any]:
            from nightshift import stages

            return stages.fit_features(current(), dt.date.fromisoformat(ingested["partition_date"]))

        @task
        def train_distributed(ingested: dict[str, Any], features: dict[str, Any]) -> dict[str, Any]:
            from nightshift import stages

            day = dt.date.fromisoformat(ingested["partition_date"])
            return stages.train_distributed(current(), day)

        @task
        def train_incremental(ingested: dict[str, Any], features: dict[str, Any]) -> dict[str, Any]:
            from nightshift import stages

            day = dt.date.fromisoformat(ingested["partition_date"])
            return stages.train_incremental(current(), day)

        @task
        def evaluate(
            ingested: dict[str, Any], trees: dict[str, Any], linear: dict[str, Any]
        ) -> dict[str, Any]:
            from nightshift import stages

            return stages.evaluate(current(), dt.date.fromisoformat(ingested["partition_date"]))

        @task(outlets=[report])
        def publish(
            ingested: dict[str, Any], stage_results: dict[str, dict[str, Any]]
        ) -> dict[str, Any]:
            from nightshift import stages

            context = get_current_context()
            day = dt.date.fromisoformat(ingested["partition_date"])
            timings = {"ingest": ingested["seconds"]}
            timings.update({name: result["seconds"] for name, result in stage_results.items()})
            promote = bool((context.get("params") or {}).get("promote", True))
            result = stages.publish(
                current(),
                day,
                timings,
                context["run_id"],
                promote=promote,
                airflow_url=airflow_base_url(),
            )
            context["outlet_events"][report].extra = {
                "partition_date": day.isoformat(),
                "report": result["report"],
            }
            log.info("%s %s: report at %s", pipeline.name, day, result["report"])
            return result

        ingested = ingest()
        validated = validate(ingested)
        prepared = preprocess(ingested, validated)
        features = fit_features(ingested, prepared)
        trees = train_distributed(ingested, features)
        linear = train_incremental(ingested, features)
        scored = evaluate(ingested, trees, linear)
        publish(
            ingested,
            {
                "validate": validated,
                "preprocess": prepared,
                "fit_features": features,
                "train_distributed": trees,
                "train_incremental": linear,
                "evaluate": scored,
            },
        )

    return nightly()


def build_dags(doc: str = "") -> dict[str, DAG]:
    """Return a DAG per valid pipeline YAML; warn, naming file and key, for each broken one."""
    pipelines, errors = load_pipelines()
    for error in errors:
        log.error("pipeline not loaded: %s", error)
        warnings.warn(str(error), PipelineConfigWarning, stacklevel=2)
    return {pipeline.dag_id: build_dag(pipeline, doc) for pipeline in pipelines}
