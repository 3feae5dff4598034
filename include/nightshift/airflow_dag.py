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
    Param,
    dag,
    get_current_context,
    task,
)

from nightshift.access import access_control
from nightshift.config.pipeline import FileSource, Pipeline, Schedule, Stage, load_pipelines
from nightshift.config.records import Approval, NightSummary
from nightshift.config.run_date import airflow_base_url, day_after, partition_date_for
from nightshift.night.results import FeaturesFitted, Ingested, Published, Validated
from nightshift.ops.deadline import deadline_alerts
from nightshift.ops.timetable import NightlyTimetable

log = logging.getLogger(__name__)


class PipelineConfigWarning(UserWarning):
    """A pipeline YAML is wrong: its DAG is not built, the other pipelines still are."""


def processed_asset(pipeline: Pipeline) -> Asset:
    """The asset a pipeline's preprocess task updates (its processed partitions)."""
    return Asset(name=f"{pipeline.name}.processed", uri=f"nightshift://{pipeline.name}/processed")


def report_asset(pipeline: Pipeline) -> Asset:
    """The asset a pipeline's publish task updates (its report)."""
    return Asset(name=f"{pipeline.name}.report", uri=f"nightshift://{pipeline.name}/report")


def nightly_timetable(schedule: Schedule) -> NightlyTimetable:
    """The runs at the cron time, each keyed by the date it processes (YYYY-MM-DD in the
    pipeline's timezone): a backfill is asked for by those dates, and
    ``airflow dags clear <dag> --partition-key D`` re-runs one."""
    return NightlyTimetable(schedule.cron, timezone=schedule.timezone)


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
            description="Day to process (YYYY-MM-DD). Empty: the Partition Key's date if one "
            "is given (it shows on the run), else the latest complete day; scheduled and "
            "backfill runs process their partition key.",
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


class NightTasks:
    """The task bodies of one pipeline's DAG: each runs its stage (``nightshift.stages``) for
    the run's date, with the run's options, and returns the stage's result (one XCom)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.processed = processed_asset(pipeline)
        self.report = report_asset(pipeline)

    def current(self) -> Pipeline:
        """The pipeline with this run's options (the trigger form) applied."""
        return run_pipeline(self.pipeline, get_current_context())

    def ingest(self) -> dict[str, Any]:
        """Land the run date (and any unprocessed window day) in the raw stage."""
        from airflow.sdk.exceptions import AirflowFailException

        from nightshift.data.ingest import SourceError
        from nightshift.night import stages

        context = get_current_context()
        day = partition_date_for(self.pipeline, context)
        log.info("%s: run date %s", self.pipeline.name, day)
        try:
            landed = stages.ingest(run_pipeline(self.pipeline, context), day)
        except SourceError as exc:
            if not exc.final:
                raise  # a file not there yet: the task's retries wait for it
            # A refused file is refused again on a retry: fail now, saying why and what to do.
            raise AirflowFailException(str(exc)) from None
        return landed.to_xcom()

    def validate(self, ingested: dict[str, Any]) -> dict[str, Any]:
        """Validate the landed dates; bad data fails the task at once, with the reason."""
        from airflow.sdk.exceptions import AirflowFailException

        from nightshift.data.validate import DataValidationError
        from nightshift.night import stages

        landed = Ingested.from_xcom(ingested)
        try:
            return stages.validate(self.current(), landed.dates, landed.partition_date).to_xcom()
        except DataValidationError as exc:
            # Bad data stays bad on a retry: fail now, with the reason, and block training.
            raise AirflowFailException(str(exc)) from None

    def preprocess(self, ingested: dict[str, Any], validated: dict[str, Any]) -> dict[str, Any]:
        """Preprocess the valid dates with Dask; update the processed asset."""
        from nightshift.night import stages

        passed = Validated.from_xcom(validated)
        result = stages.preprocess(self.current(), passed.dates)
        get_current_context()["outlet_events"][self.processed].extra = {
            "partition_date": ingested["partition_date"],
            "dates": validated["dates"],
        }
        return result.to_xcom()

    def fit_features(self, ingested: dict[str, Any], processed: dict[str, Any]) -> dict[str, Any]:
        """Fit the feature statistics on the window; record the inputs the night uses."""
        from nightshift.night import stages

        day = Ingested.from_xcom(ingested).partition_date
        return stages.fit_features(self.current(), day).to_xcom()

    def train_distributed(
        self, ingested: dict[str, Any], features: dict[str, Any]
    ) -> dict[str, Any]:
        """Train the XGBoost models on the inputs fit_features recorded (NightInputs)."""
        from nightshift.night import stages

        day = Ingested.from_xcom(ingested).partition_date
        version = FeaturesFitted.from_xcom(features).version
        return stages.train_distributed(self.current(), day, version).to_xcom()

    def train_incremental(
        self, ingested: dict[str, Any], features: dict[str, Any]
    ) -> dict[str, Any]:
        """Train the batch-wise models and the baseline on the recorded inputs; beside
        train_distributed, on the cores its workers leave idle where they share this machine."""
        from nightshift.models.cluster import current_plan, on_idle_cores, shares_this_machine
        from nightshift.night import stages

        day = Ingested.from_xcom(ingested).partition_date
        args = (self.current(), day, FeaturesFitted.from_xcom(features).version)
        if shares_this_machine(current_plan()):
            return on_idle_cores(stages.train_incremental, *args).to_xcom()
        return stages.train_incremental(*args).to_xcom()

    def evaluate(
        self,
        ingested: dict[str, Any],
        features: dict[str, Any],
        trees: dict[str, Any],
        linear: dict[str, Any],
    ) -> dict[str, Any]:
        """Score the models and their champions on the held-out date."""
        from nightshift.night import stages

        day = Ingested.from_xcom(ingested).partition_date
        version = FeaturesFitted.from_xcom(features).version
        return stages.evaluate(self.current(), day, version).to_xcom()

    def publish(
        self, ingested: dict[str, Any], stage_results: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        """Decide, log, move the champion aliases, write the report; update the report asset."""
        from nightshift.night import stages

        context = get_current_context()
        day = Ingested.from_xcom(ingested).partition_date
        promote = bool((context.get("params") or {}).get("promote", True))
        timings = _timings(ingested, stage_results)
        result = stages.publish(
            self.current(), day, timings, context["run_id"], promote, airflow_base_url()
        )
        self._report_updated(context, day, result)
        _alert_published(self.pipeline, day, result.metrics, context)
        return result.to_xcom()

    def settle(
        self,
        ingested: dict[str, Any],
        stage_results: dict[str, dict[str, Any]],
        answer: dict[str, Any],
    ) -> dict[str, Any]:
        """Publish the night again with the approver's answer: move the aliases if approved."""
        from nightshift.night import stages

        context = get_current_context()
        day = Ingested.from_xcom(ingested).partition_date
        approval = approval_from(answer)
        log.info("%s %s: promotion %s", self.pipeline.name, day, approval.label)
        timings = _timings(ingested, stage_results)
        result = stages.publish(
            self.current(), day, timings, context["run_id"], True, airflow_base_url(), approval
        )
        self._report_updated(context, day, result)
        return result.to_xcom()

    def _report_updated(self, context: Any, day: dt.date, result: Published) -> None:
        """Say on the report asset's event which date's report was (re)written, and where."""
        extra = {"partition_date": day.isoformat(), "report": result.report}
        context["outlet_events"][self.report].extra = extra
        log.info("%s %s: report at %s", self.pipeline.name, day, result.report)


def _timings(
    ingested: dict[str, Any], stage_results: dict[str, dict[str, Any]]
) -> dict[str, float]:
    """Seconds per stage of the night, from the stages' results."""
    timings = {str(Stage.INGEST): Ingested.from_xcom(ingested).seconds}
    timings.update({name: result["seconds"] for name, result in stage_results.items()})
    return timings


def approval_from(answer: dict[str, Any]) -> Approval:
    """The approval task's answer as a record: no responder means the time ran out."""
    user = answer.get("responded_by_user") or {}
    at = str(answer.get("responded_at") or "")[:16]
    if not user:
        return Approval("timed_out", at=at)
    by = str(user.get("name") or user.get("id"))
    chosen = list(answer.get("chosen_options") or [])
    return Approval("approved" if chosen == [APPROVE] else "rejected", by=by, at=at)


def _alert_published(pipeline: Pipeline, day: dt.date, metrics: str, context: Any) -> None:
    """Send the night's alert, if its summary has something to say (the last thing it does)."""
    import json

    from nightshift.publishing import alerts
    from nightshift.storage.lake import read_bytes

    if not pipeline.alerts.channels:
        return
    try:
        links = alerts.links_for(pipeline, day, airflow_base_url(), str(context["run_id"]))
        summary = NightSummary.from_dict(json.loads(read_bytes(metrics)))
        alert = alerts.night_alert(pipeline, summary, links)
        if alert is not None:
            alerts.deliver(pipeline, alert, context)
    except Exception:  # the night has published: a broken alert must not fail (and re-run) it
        log.exception("%s %s: the night's alert could not be built or sent", pipeline.name, day)


class NightFailed:
    """The DAG's failure callback (run by the dag-processor once the night has failed for
    good): one alert per channel, saying the input was quarantined when a hold says so."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def __call__(self, context: Any) -> None:
        """Work out the night's date and what stopped it; deliver the alert."""
        from nightshift.publishing import alerts
        from nightshift.storage.lake import lake_for
        from nightshift.storage.quarantine import holds

        day = partition_date_for(self.pipeline, context)
        ti = context.get("ti")
        task_id = getattr(ti, "task_id", None)
        held = [h for h in holds(lake_for(self.pipeline), day) if h.released is None]
        hold = held[-1] if held and task_id in (Stage.INGEST, Stage.VALIDATE) else None
        event = "quarantined" if hold is not None else "failed"
        if event not in self.pipeline.alerts.on:
            return
        page = "validation" if hold is not None else None
        run_id = str(context["run_id"])
        links = alerts.links_for(self.pipeline, day, airflow_base_url(), run_id, page)
        alert = alerts.failure_alert(self.pipeline, day, task_id, hold, links)
        alerts.deliver(self.pipeline, alert, context)


def _dag_settings(pipeline: Pipeline, doc: str) -> dict[str, Any]:
    """The DAG's arguments but its schedule: start, retries, the trigger form, team access."""
    schedule = pipeline.schedule
    return {
        "dag_id": pipeline.dag_id,
        "description": pipeline.description or f"nightshift pipeline {pipeline.name}",
        "doc_md": f"{doc}\n\n**Pipeline file:** `{pipeline.source_file}`",
        # The scheduler bounds a run's start (the day after the date it processes): the first
        # run processes start_date, the last end_date.
        "start_date": day_after(schedule.start_date, dt.time(), pipeline),
        "end_date": (
            day_after(schedule.end_date, dt.time(23, 59, 59), pipeline)
            if schedule.end_date
            else None
        ),
        "catchup": False,
        "max_active_runs": schedule.max_active_runs,
        "tags": ["nightshift", pipeline.schema_.task, pipeline.name],
        "params": run_params(pipeline),
        "default_args": {
            "owner": "nightshift",
            "retries": schedule.retries,
            "retry_delay": dt.timedelta(minutes=schedule.retry_delay_minutes),
            "execution_timeout": dt.timedelta(hours=3),
        },
        "render_template_as_native_obj": False,
        "access_control": access_control(pipeline),
        "on_failure_callback": [NightFailed(pipeline)] if pipeline.alerts.channels else [],
        "deadline": deadline_alerts(pipeline),
    }


def _wait_for_source(pipeline: Pipeline) -> list[Any]:
    """The deferrable wait for the date's file, when the pipeline asks for one (else none)."""
    source = pipeline.source
    if not isinstance(source, FileSource) or source.wait is None:
        return []
    from nightshift.ops.source_wait import TASK_ID, WaitForSource

    # A file that never came stays missing on a retry; the wait itself is the patience.
    return [WaitForSource(task_id=TASK_ID, nightshift_pipeline=pipeline, retries=0)]


def build_dag(pipeline: Pipeline, doc: str = "") -> DAG:
    """Return the nightly DAG of ``pipeline``: its stages as tasks, wired by their results."""
    night = NightTasks(pipeline)

    def step(stage: Stage, **options: Any) -> Any:
        body = getattr(night, stage.value)
        return task(task_id=stage.value, multiple_outputs=False, **options)(body)

    @dag(schedule=nightly_timetable(pipeline.schedule), **_dag_settings(pipeline, doc))
    def nightly() -> None:
        ingested = step(Stage.INGEST)()
        _wait_for_source(pipeline) >> ingested
        validated = step(Stage.VALIDATE)(ingested)
        prepared = step(Stage.PREPROCESS, outlets=[night.processed])(ingested, validated)
        features = step(Stage.FIT_FEATURES)(ingested, prepared)
        trees = step(Stage.TRAIN_DISTRIBUTED)(ingested, features)
        linear = step(Stage.TRAIN_INCREMENTAL)(ingested, features)
        scored = step(Stage.EVALUATE)(ingested, features, trees, linear)
        results = {
            Stage.VALIDATE: validated,
            Stage.PREPROCESS: prepared,
            Stage.FIT_FEATURES: features,
            Stage.TRAIN_DISTRIBUTED: trees,
            Stage.TRAIN_INCREMENTAL: linear,
            Stage.EVALUATE: scored,
        }
        # One publish of this DAG at a time: moving the champion alias reads it, then sets it
        # (MLflow has no compare-and-set), and two nights of a parallel backfill doing both at
        # once once left the alias on the older one (CI: 2026-11-13 over 2026-11-14).
        published = step(Stage.PUBLISH, outlets=[night.report], max_active_tis_per_dag=1)(
            ingested, results
        )
        if pipeline.evaluation.approval == "required":
            _approval_steps(night, ingested, results, published)

    return nightly()


APPROVE, REJECT = "Approve", "Reject"


def _approval_steps(night: NightTasks, ingested: Any, results: Any, published: Any) -> None:
    """After publish: ask a person (only if the gate promoted), then publish with the answer.

    Airflow's human-in-the-loop operator waits in the UI's *Required Actions* (or for a REST
    answer) without holding a worker; no answer within ``approval_hours`` answers "Reject".
    """
    from airflow.providers.standard.operators.hitl import HITLOperator

    gate = night.pipeline.evaluation

    def needs_approval(result: dict[str, Any]) -> bool:
        return bool(result.get("awaiting_approval"))

    asked = task.short_circuit(task_id="needs_approval")(needs_approval)(published)
    approve = HITLOperator(
        task_id="approve",
        subject=f"Promote tonight's {night.pipeline.name} model?",
        body=(
            "{{ ti.xcom_pull(task_ids='publish')['decision'] }}.\n\n"
            "The report: the run's *Report* tab. Approve moves the champion alias; Reject keeps "
            f"the champion, as does no answer within {gate.approval_hours:g} hours."
        ),
        options=[APPROVE, REJECT],
        defaults=[REJECT],
        response_timeout=dt.timedelta(hours=gate.approval_hours),
        retries=0,
    )
    settle: Any = task(
        task_id="settle", multiple_outputs=False, outlets=[night.report], max_active_tis_per_dag=1
    )
    asked >> approve
    settle(night.settle)(ingested, results, approve.output)


def build_dags(doc: str = "") -> dict[str, DAG]:
    """Return a DAG per valid pipeline YAML; warn, naming file and key, for each broken one."""
    pipelines, errors = load_pipelines()
    for error in errors:
        log.error("pipeline not loaded: %s", error)
        warnings.warn(str(error), PipelineConfigWarning, stacklevel=2)
    return {pipeline.dag_id: build_dag(pipeline, doc) for pipeline in pipelines}
