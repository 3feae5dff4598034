"""Pipeline configuration: one YAML file parsed once into a typed, validated object."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from nightshift.config.settings import (
    is_url,
    pipelines_home,
    resolve,
    setting,
    text_setting,
)

ColumnType = Literal["int", "float", "string", "bool", "timestamp"]
# The pandas dtype each schema column type is held in, from ingest on.
PANDAS_DTYPES: dict[str, Any] = {
    "int": "Int64",
    "float": "float64",
    "string": "string",
    "bool": "boolean",
    "timestamp": "datetime64[us, UTC]",
}
TaskType = Literal["binary_classification", "regression"]
MemoryMode = Literal["auto", "in_memory", "quantile", "external"]
CLASSIFICATION: TaskType = "binary_classification"
# A team role of Airflow's FAB auth manager (nightshift.access): letters, digits, " _.-".
RoleName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9 _.-]{0,63}$")]


class Stage(StrEnum):
    """A night's stages in order: the Airflow task ids, and the keys of a run's results."""

    INGEST = "ingest"
    VALIDATE = "validate"
    PREPROCESS = "preprocess"
    FIT_FEATURES = "fit_features"
    TRAIN_DISTRIBUTED = "train_distributed"
    TRAIN_INCREMENTAL = "train_incremental"
    EVALUATE = "evaluate"
    PUBLISH = "publish"


class ConfigError(ValueError):
    """A pipeline YAML is wrong; the message names the file, the key and what was expected."""

    def __init__(
        self, path: Path | str, key: str, problem: str, more: list[tuple[str, str]] | None = None
    ) -> None:
        self.path = str(path)
        self.key = key
        self.problem = problem
        # Every other problem found in the same file, so one `nightshift check` shows them all.
        self.more = list(more or [])
        lines = [f"{self.path}: key '{k}': {p}" for k, p in [(key, problem), *self.more]]
        super().__init__("\n".join(lines))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GeneratorSource(_Strict):
    """The built-in realistic generator: deterministic per date."""

    kind: Literal["generator"]
    rows_per_day: int = Field(200_000, gt=0)
    seed: int = 7


class Wait(_Strict):
    """How long a night waits for its file before failing (late data)."""

    timeout_minutes: float = Field(360, gt=0)
    poke_seconds: float = Field(60, gt=0)


class FileSource(_Strict):
    """The user's own dated files; ``path`` holds ``{date}`` (YYYY-MM-DD) or strftime codes."""

    kind: Literal["files"]
    path: str
    format: Literal["csv", "parquet"]
    storage_options: dict[str, Any] = Field(default_factory=dict)
    # Wait for the day's file (in Airflow's triggerer: no worker slot held) before ingesting.
    wait: Wait | None = None

    @field_validator("path")
    @classmethod
    def _path_names_the_date(cls, value: str) -> str:
        if "{date}" not in value and "%Y" not in value and "%d" not in value:
            raise ValueError("must contain the date, as {date} or strftime codes like %Y-%m-%d")
        return value

    def path_for(self, partition_date: dt.date) -> str:
        """Return the path of ``partition_date``'s file."""
        return partition_date.strftime(self.path.replace("{date}", "%Y-%m-%d"))


class Column(_Strict):
    """One column of a day's data: its name, type, and whether it may be empty."""

    name: str
    type: ColumnType
    nullable: bool = True


class Schema(_Strict):
    """The columns a day's data must have, which one is the label and which the row key."""

    columns: list[Column] = Field(min_length=1)
    label: str
    key: str | None = None
    timestamp: str | None = None
    task: TaskType

    @property
    def is_classification(self) -> bool:
        """Whether the label is binary (0/1) rather than a number to regress."""
        return self.task == CLASSIFICATION

    @model_validator(mode="after")
    def _names_are_unique(self) -> Schema:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(
                f"column names repeat: {sorted(n for n in names if names.count(n) > 1)}"
            )
        return self

    def role_problems(self) -> list[str]:
        """Each of label, key and timestamp that names no column (the pipeline's derived
        columns included)."""
        names = [c.name for c in self.columns]
        return [
            f"schema: {role} '{getattr(self, role)}' is not one of the columns {names}"
            for role in ("label", "key", "timestamp")
            if getattr(self, role) is not None and getattr(self, role) not in names
        ]

    def column(self, name: str) -> Column:
        """Return the column called ``name``."""
        return next(c for c in self.columns if c.name == name)


TimeFeature = Literal["hour", "day_of_week", "is_weekend"]


class Features(_Strict):
    """Which columns become model features, and how."""

    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    log1p: list[str] = Field(default_factory=list)
    time: list[TimeFeature] = Field(default_factory=list)
    max_categories: int = Field(50, gt=1)


# A model's name is a folder in the lake and part of its MLflow registered model's name, and is
# shown on the reports pages: a plain identifier, so it can never be a path or markup.
ModelName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")]


class ModelSpec(_Strict):
    """A model of the pipeline's ``models:`` list. Each kind subclasses this in its own module
    of ``nightshift.models.kinds`` (its YAML keys), named in :data:`MODEL_KINDS`."""

    kind: str
    name: ModelName


# Every kind of model: its ``kind:`` in the YAML and the module of ``nightshift.models.kinds`` that
# holds its spec (``SPEC``) and its class (``KIND``). A new kind is a new module and a line
# here. Named, not imported: the kinds sit above configuration and import it.
MODEL_KINDS: dict[str, str] = {
    "xgboost": "nightshift.models.kinds.xgboost",
    "sgd": "nightshift.models.kinds.sgd",
    "baseline": "nightshift.models.kinds.baseline",
}


def kind_module(kind: str) -> Any:
    """Return the module of model kind ``kind`` (:data:`MODEL_KINDS`)."""
    import importlib

    return importlib.import_module(MODEL_KINDS[kind])


def _model_spec(value: Any) -> Any:
    """Validate one entry of ``models:`` as its kind's spec."""
    if isinstance(value, ModelSpec) or not isinstance(value, dict):
        return value
    kind = value.get("kind")
    if kind not in MODEL_KINDS:
        raise ValueError(
            f"kind {kind!r} is not a model kind; choose from {sorted(MODEL_KINDS)}"
            if kind is not None
            else f"kind is missing; choose from {sorted(MODEL_KINDS)}"
        )
    return kind_module(kind).SPEC.model_validate(value)


AnyModelSpec = Annotated[SerializeAsAny[ModelSpec], BeforeValidator(_model_spec)]


class Schedule(_Strict):
    """When the nightly run starts, in which timezone, and how it retries."""

    cron: str = "30 2 * * *"
    timezone: str = "UTC"
    start_date: dt.date = dt.date(2026, 1, 1)
    # The last date to process, for data that has an end (a historical dataset): no scheduled
    # run after it; unpausing such a pipeline starts none for today. Backfills still may.
    end_date: dt.date | None = None
    max_active_runs: int = Field(1, gt=0)
    retries: int = Field(2, ge=0)
    retry_delay_minutes: float = Field(5, ge=0)
    # "HH:MM" in ``timezone``: a scheduled night whose report is not published by the first
    # such time after the run's scheduled start sends the ``deadline_missed`` alert.
    deadline: str | None = Field(None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")

    @model_validator(mode="after")
    def _end_after_start(self) -> Schedule:
        if self.end_date is not None and self.end_date < self.start_date:
            raise ValueError(f"end_date {self.end_date} is before start_date {self.start_date}")
        return self

    @field_validator("cron")
    @classmethod
    def _cron_parses(cls, value: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(f"'{value}' is not a valid cron expression (e.g. '30 2 * * *')")
        # A run processes one date (its partition key): the cron fires once on a day it runs.
        minutes, hours = croniter(value).expanded[:2]
        if len(minutes) != 1 or len(hours) != 1:
            raise ValueError(
                f"'{value}' fires more than once a day; a nightly run processes one date, so "
                "give one minute and one hour (e.g. '30 2 * * *', or '30 2 * * 1-5' on weekdays)"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone_exists(cls, value: str) -> str:
        try:
            # A folder of the tz database ('Europe') or an over-long name raises OSError.
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(
                f"'{value}' is not an IANA timezone (e.g. 'Europe/Amsterdam')"
            ) from None
        return value


class Output(_Strict):
    """Where partitions, models and reports go; relative paths are under the project root.

    Unset in the YAML, they come from ``NIGHTSHIFT_LAKE`` / ``NIGHTSHIFT_REPORTS`` (how
    docker-compose points every pipeline at MinIO), else ``data/lake`` and ``data/reports``.
    """

    lake: str = Field(default_factory=lambda: text_setting("NIGHTSHIFT_LAKE"))
    reports: str = Field(default_factory=lambda: text_setting("NIGHTSHIFT_REPORTS"))
    # MLflow: a folder (an embedded SQLite store and its artifacts, no server) or a tracking
    # URI such as http://mlflow:5000. Unset, ``MLFLOW_TRACKING_URI``, else ``data/mlflow``.
    mlflow: str = Field(default_factory=lambda: text_setting("MLFLOW_TRACKING_URI"))


class Training(_Strict):
    """The training window, batch size and what every model shares."""

    window_days: int = Field(7, gt=0)
    batch_size: int = Field(50_000, gt=0)
    threshold: float = Field(0.5, gt=0, lt=1)
    seed: int = 42
    # Below 1, training reads this fraction of every batch: a quick run, not a nightly one.
    sample_fraction: float = Field(1.0, gt=0, le=1)
    # xgboost.dask: how long a worker waits on the others before the training fails. A lost
    # worker would otherwise hang the task; the task then fails and Airflow retries it.
    collective_timeout_seconds: int = Field(600, gt=0)
    # How XGBoost holds the window on each worker: ``in_memory`` (the processed frame, fastest
    # where it fits), ``quantile`` (streamed from the batches into a QuantileDMatrix, a byte
    # per value), ``external`` (an ExtMemQuantileDMatrix paged from the worker's disk), or
    # ``auto``: the first that fits the workers' memory, from the window's measured size.
    memory: MemoryMode = "auto"
    # Where the linear models learn: in one process, batch by batch (``process``), or on the
    # Dask workers by parameter mixing (``workers``); ``auto``: on the workers from 50M rows.
    sgd: Literal["auto", "process", "workers"] = "auto"


CheckKind = Literal[
    "empty",
    "nulls",
    "all_null",
    "ranges",
    "categories",
    "label",
    "duplicates",
    "other_date",
    "row_count",
    "extra_columns",
]
Severity = Literal["block", "warn", "off"]
DEFAULT_SEVERITY: dict[str, str] = {
    "empty": "block",
    "nulls": "block",
    "all_null": "block",
    "ranges": "block",
    "categories": "warn",
    "label": "block",
    "duplicates": "block",
    "other_date": "block",
    "row_count": "block",  # a day under min_ratio; one over max_ratio warns unless set
    "extra_columns": "warn",
}


class Range(_Strict):
    """Bounds a numeric column's values must lie within."""

    min: float | None = None
    max: float | None = None


class RowCount(_Strict):
    """A day's rows against the mean of the last ``history_days`` validated days."""

    min_ratio: float = Field(0.5, ge=0)
    max_ratio: float = Field(2.0, gt=0)
    history_days: int = Field(7, gt=0)


class Validation(_Strict):
    """Checks on each day's data beyond the schema, and which of them block training.

    Missing columns and values that cannot be read as their type always block; the rest
    block, warn (the run goes on; the report and log say what was found) or are off.
    """

    ranges: dict[str, Range] = Field(default_factory=dict)
    categories: dict[str, list[str]] = Field(default_factory=dict)
    row_count: RowCount = RowCount()
    severity: dict[CheckKind, Severity] = Field(default_factory=dict)

    def severity_of(self, kind: str) -> str:
        """Return whether a failed check of ``kind`` blocks training or warns."""
        return self.severity.get(kind, DEFAULT_SEVERITY[kind])  # type: ignore[call-overload]


class Evaluation(_Strict):
    """How tonight's models are judged, and what a challenger must do to become champion.

    A challenger is promoted only if, on the same held-out day, it beats its champion on
    ``metric`` by more than ``margin`` and passes the guardrails: its expected calibration
    error is at most the champion's plus ``calibration_margin`` (classification; and at most
    ``max_calibration_error`` when that absolute bound is set), and no ``segment`` value with
    at least ``min_segment_rows`` rows loses more than ``max_segment_drop`` of the metric.

    Each of these is judged with ``confidence`` on ``bootstrap_samples`` stratified paired
    resamples of the held-out day: the gain must be above the margin with that confidence,
    and a guardrail fails only when its excess is above its bound with that confidence
    (``evaluation.champion``). ``bootstrap_samples: 0`` judges the point estimates instead.
    """

    metric: str | None = None  # unset: roc_auc (classification) or rmse (regression)
    margin: float = Field(0.0, ge=0)
    calibration_margin: float = Field(0.01, ge=0)
    max_calibration_error: float | None = Field(None, gt=0)
    segment: str | None = None
    max_segment_drop: float = Field(0.02, ge=0)
    min_segment_rows: int = Field(200, gt=0)
    bootstrap_samples: int = Field(200, ge=0)
    confidence: float = Field(0.95, ge=0.5, lt=1)  # one-sided, for every check of the gate
    trend_nights: int = Field(30, gt=1)
    drift_threshold: float = Field(0.2, gt=0)  # PSI above this flags a feature as drifted
    # "required": a challenger that earned promotion waits for a person to approve it in the
    # Airflow UI; no answer within approval_hours keeps the champion. "auto": promote at once.
    approval: Literal["auto", "required"] = "auto"
    approval_hours: float = Field(24, gt=0)


AlertEvent = Literal[
    "failed", "quarantined", "regressed", "drifted", "validation_warning", "deadline_missed"
]
ALERT_EVENTS: tuple[AlertEvent, ...] = AlertEvent.__args__  # type: ignore[attr-defined]


class EmailChannel(_Strict):
    """E-mail through an Airflow SMTP connection, which holds the host, login and password."""

    conn_id: str = "smtp_default"
    to: list[str] = Field(min_length=1)
    from_email: str | None = None  # unset: the connection's own ``from_email`` extra


class WebhookChannel(_Strict):
    """A JSON POST (Slack-compatible: a ``text`` field) to the URL an Airflow connection holds.

    The URL is the connection's host when that is a whole URL (a Slack webhook pasted as it
    is), else ``<schema or https>://<host>[:<port>]<extra "endpoint">``.
    """

    conn_id: str = "nightshift_webhook"


class Alerts(_Strict):
    """Who hears about a night, and of what (``nightshift.publishing.alerts``).

    One message per channel per night that has something to say; none for a healthy night.
    Secrets live in the Airflow connections the channels name, never in the YAML.
    """

    email: EmailChannel | None = None
    webhook: WebhookChannel | None = None
    on: list[AlertEvent] = Field(default_factory=lambda: list(ALERT_EVENTS))
    # Tonight's best model scoring this far below its kept champion on the headline metric
    # is a regression (0: any night that scores lower and keeps the champion).
    regression: float = Field(0.0, ge=0)

    @property
    def channels(self) -> list[EmailChannel | WebhookChannel]:
        """The channels declared, e-mail first."""
        return [c for c in (self.email, self.webhook) if c is not None]


# The processed frame's name for the pipeline's label column, whatever the source calls it.
LABEL = "label"

CLASSIFICATION_METRICS = ("roc_auc", "log_loss", "accuracy", "f1")
# The metrics where a larger value is better; every other one is an error or a loss.
HIGHER_IS_BETTER = frozenset({"roc_auc", "accuracy", "f1", "r2"})
# Airflow's (FAB's) built-in roles: they reach every DAG already, so a pipeline's ``access``
# cannot name them (nightshift.access grants team roles only).
BUILTIN_ROLES = frozenset({"Admin", "Op", "User", "Viewer", "Public"})
REGRESSION_METRICS = ("rmse", "mae", "r2")


@dataclass(frozen=True)
class ReportFolder:
    """A night's reports folder and its files: the one place their names are spelled."""

    REPORT: ClassVar[str] = "report.html"
    METRICS: ClassVar[str] = "metrics.json"  # the night's NightSummary, what the index lists
    VALIDATION: ClassVar[str] = "validation.html"  # a date validation blocked or warned on
    VALIDATION_JSON: ClassVar[str] = "validation.json"

    path: str

    @property
    def report(self) -> str:
        """The night's HTML report."""
        return f"{self.path}/{self.REPORT}"

    @property
    def metrics(self) -> str:
        """The night's summary as JSON."""
        return f"{self.path}/{self.METRICS}"

    @property
    def validation(self) -> str:
        """The validation page of a date with findings."""
        return f"{self.path}/{self.VALIDATION}"

    @property
    def validation_json(self) -> str:
        """The validation findings as JSON."""
        return f"{self.path}/{self.VALIDATION_JSON}"


class Pipeline(_Strict):
    """One nightly pipeline, as its YAML file describes it."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    description: str = ""
    source: Annotated[GeneratorSource | FileSource, Field(discriminator="kind")]
    schema_: Schema = Field(alias="schema")
    # Columns computed from the source's at ingest, in order (name -> expression), rows to
    # keep, a Python hook ("package.module:function", a frame in, a frame out) for what an
    # expression cannot say, and columns never to train on. See nightshift.config.expressions.
    derive: dict[str, str] = Field(default_factory=dict)
    filters: list[str] = Field(default_factory=list, alias="filter")
    hook: str | None = Field(None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

    @field_validator("hook")
    @classmethod
    def _hook_allowed(cls, value: str | None) -> str | None:
        refusal = hook_refusal(value) if value is not None else None
        if refusal:
            raise ValueError(refusal)
        return value

    drop: list[str] = Field(default_factory=list)
    features: Features
    training: Training = Training()
    models: list[AnyModelSpec] = Field(min_length=1)
    schedule: Schedule = Schedule()
    validation: Validation = Validation()
    evaluation: Evaluation = Evaluation()
    alerts: Alerts = Alerts()
    output: Output = Field(default_factory=Output)
    # Team roles and what each may do with this pipeline's DAG and reports (nightshift.access).
    access: dict[RoleName, Literal["read", "operate"]] = Field(default_factory=dict)
    source_file: str = Field("<memory>", exclude=True)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("access")
    @classmethod
    def _team_roles_only(cls, access: dict[str, str]) -> dict[str, str]:
        for role in access:
            if role in BUILTIN_ROLES:
                raise ValueError(
                    f"'{role}' is one of Airflow's built-in roles, which reach every DAG "
                    "already; name a team role (it is created by `nightshift roles`)"
                )
        return access

    @model_validator(mode="after")
    def _fits_together(self) -> Pipeline:
        """Check what one section says about another; every problem is reported."""
        derived, problems = _derived_columns(self)
        kept = [c for c in derived if c.name not in self.drop]
        schema = self.schema_.model_copy(update={"columns": kept})
        problems += [
            *schema.role_problems(),
            *_feature_problems(self.features, schema, dropped=set(self.drop)),
            *_evaluation_problems(self.evaluation, schema, self.features),
        ]
        names = {c.name for c in self.schema_.columns}
        for group in ("ranges", "categories"):
            for column in getattr(self.validation, group):
                if column not in names:
                    problems.append(f"validation.{group}: '{column}' is not a schema column")
        model_names = [m.name for m in self.models]
        if len(set(model_names)) != len(model_names):
            problems.append(f"models: names must be unique, got {model_names}")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def data_schema(self) -> Schema:
        """The columns a day has after ingest: the source's (``schema.columns``) less
        ``drop``, plus ``derive``'s, typed; what validation checks and training reads."""
        columns, _ = _derived_columns(self)
        kept = [c for c in columns if c.name not in self.drop]
        return self.schema_.model_copy(update={"columns": kept})

    @property
    def derived_types(self) -> dict[str, str]:
        """Each ``derive`` column's type, as its expression gives it (dropped ones too)."""
        columns, _ = _derived_columns(self)
        return {c.name: c.type for c in columns if c.name in self.derive}

    @property
    def tz(self) -> ZoneInfo:
        """The pipeline's timezone."""
        return ZoneInfo(self.schedule.timezone)

    @property
    def dag_id(self) -> str:
        """The pipeline's Airflow DAG id."""
        return f"nightshift_{self.name}"

    def airflow_run_url(self, airflow_url: str | None, run_id: str) -> str | None:
        """The Airflow UI's page of one of this pipeline's runs, when the UI's address is known."""
        import urllib.parse

        if not airflow_url:
            return None
        quoted = urllib.parse.quote(run_id, safe="")
        return f"{airflow_url.rstrip('/')}/dags/{self.dag_id}/runs/{quoted}"

    @property
    def is_classification(self) -> bool:
        """Whether the pipeline's label is binary (0/1)."""
        return self.schema_.is_classification

    def with_run_options(
        self,
        models: list[str] | None = None,
        window_days: int | None = None,
        sample_fraction: float | None = None,
    ) -> Pipeline:
        """Return this pipeline with one run's overrides (from the trigger form) applied."""
        known = [m.name for m in self.models]
        chosen = self.models
        if models is not None:
            unknown = sorted(set(models) - set(known))
            if unknown or not models:
                raise ConfigError(
                    self.source_file, "models", f"run option models={models}: choose from {known}"
                )
            chosen = [m for m in self.models if m.name in models]
        training = self.training.model_copy(
            update={
                k: v
                for k, v in {"window_days": window_days, "sample_fraction": sample_fraction}.items()
                if v is not None
            }
        )
        # Re-validate, so an override gets the same checks as the YAML value would.
        data = self.model_dump(by_alias=True)
        data.update(training=training.model_dump(), models=[m.model_dump() for m in chosen])
        return parse_pipeline(data, self.source_file)

    @property
    def metric(self) -> tuple[str, bool]:
        """Return the metric that ranks models and gates promotion, and if higher is better."""
        if self.evaluation.metric is not None:
            name = self.evaluation.metric
        else:
            name = "roc_auc" if self.is_classification else "rmse"
        return name, name in HIGHER_IS_BETTER

    def lake_root(self) -> str:
        """Return the lake's root (a path or an fsspec URL), resolved."""
        return resolve(self.output.lake)

    def reports_root(self) -> str:
        """Return the reports' root (a path or an fsspec URL), resolved."""
        return resolve(self.output.reports)

    def reports_dir(self, partition_date: dt.date | None = None) -> str:
        """Return this pipeline's reports folder, or one night's: ``<root>/<name>[/<date>]``."""
        folder = f"{self.reports_root().rstrip('/')}/{self.name}"
        return folder if partition_date is None else f"{folder}/{partition_date.isoformat()}"

    def report_folder(self, partition_date: dt.date) -> ReportFolder:
        """Return one night's reports folder, with the paths of its files."""
        return ReportFolder(self.reports_dir(partition_date))

    def mlflow_location(self) -> str:
        """Return the MLflow tracking URI, or the absolute folder of the embedded store."""
        location = self.output.mlflow
        if is_url(location) or location.startswith("sqlite:"):
            return location
        return resolve(location)


def _feature_problems(
    features: Features, schema: Schema, dropped: set[str] | None = None
) -> list[str]:
    """Return each way a feature does not fit the schema, naming the key."""
    names = {c.name for c in schema.columns}
    problems = []
    for group in ("numeric", "categorical", "log1p"):
        for feature in getattr(features, group):
            if feature in (dropped or set()):
                problems.append(f"features.{group}: '{feature}' is dropped by `drop`")
            elif feature not in names:
                problems.append(f"features.{group}: '{feature}' is not a schema column")
            elif feature == schema.label:
                problems.append(f"features.{group}: '{feature}' is the label")
    for feature in features.log1p:
        if feature not in features.numeric:
            problems.append(f"features.log1p: '{feature}' must also be a numeric feature")
    problems += _time_feature_problems(features, schema, names)
    if not (features.numeric or features.categorical or features.time):
        problems.append("features: at least one feature is needed")
    return problems


def _derived_columns(pipeline: Pipeline) -> tuple[list[Column], list[str]]:
    """Return the source's columns and the derived ones (typed from their expressions), and
    each problem found: an expression that does not parse or type, a filter that is not
    true/false, a bad drop."""
    from nightshift.config.expressions import ExpressionError, parse

    columns = list(pipeline.schema_.columns)
    types: dict[str, str] = {c.name: c.type for c in columns}
    problems = []
    for name, text in pipeline.derive.items():
        try:
            kind = parse(text).type_in(types)
        except ExpressionError as exc:
            problems.append(f"derive.{name}: {exc}")
            continue
        if name in types:
            problems.append(f"derive.{name}: '{name}' is already a column; choose a new name")
        elif kind == "null":
            problems.append(f"derive.{name}: '{text}' is always empty")
        else:
            types[name] = kind
            columns.append(Column.model_validate({"name": name, "type": kind}))
    problems += _filter_and_drop_problems(pipeline, types)
    return columns, problems


def _filter_and_drop_problems(pipeline: Pipeline, types: dict[str, str]) -> list[str]:
    from nightshift.config.expressions import ExpressionError, parse

    problems = []
    for index, text in enumerate(pipeline.filters):
        try:
            kind = parse(text).type_in(types)
        except ExpressionError as exc:
            problems.append(f"filter[{index}]: {exc}")
            continue
        if kind != "bool":
            problems.append(f"filter[{index}]: '{text}' must be true or false per row, not {kind}")
    schema = pipeline.schema_
    for name in pipeline.drop:
        if name not in types:
            problems.append(f"drop: '{name}' is not a column (known: {sorted(types)})")
        elif name in (schema.label, schema.key, schema.timestamp):
            problems.append(f"drop: '{name}' is the schema's label, key or timestamp")
    return problems


def _time_feature_problems(features: Features, schema: Schema, names: set[str]) -> list[str]:
    """Return each way the time features do not fit: no timestamp, or a name clash."""
    problems = []
    if features.time and schema.timestamp is None:
        problems.append("features.time: needs schema.timestamp to name a timestamp column")
    for feature in features.time:
        if feature in names:
            problems.append(
                f"features.time: '{feature}' is also a column of the data (schema.columns); "
                f"the derived time feature would clash with it: rename the column, or leave "
                f"'{feature}' out of features.time (and list the column as a feature instead)"
            )
    return problems


def _evaluation_problems(evaluation: Evaluation, schema: Schema, features: Features) -> list[str]:
    """Return each way the evaluation's metric or segment does not fit the task."""
    allowed = CLASSIFICATION_METRICS if schema.is_classification else REGRESSION_METRICS
    problems = []
    if evaluation.metric is not None and evaluation.metric not in allowed:
        problems.append(
            f"evaluation.metric: '{evaluation.metric}' is not a {schema.task} "
            f"metric; choose from {list(allowed)}"
        )
    if evaluation.segment is not None and evaluation.segment not in features.categorical:
        problems.append(
            f"evaluation.segment: '{evaluation.segment}' must be one of the categorical "
            f"features {features.categorical}"
        )
    return problems


def _error_key(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + ("schema" if item == "schema_" else str(item)))
    return "".join(parts) or "<top level>"


def parse_pipeline(data: Any, source_file: Path | str = "<memory>") -> Pipeline:
    """Return the validated pipeline for ``data``; raise ConfigError naming file and key."""
    if not isinstance(data, dict):
        raise ConfigError(source_file, "<top level>", "expected a mapping of keys to values")
    try:
        return Pipeline.model_validate({**data, "source_file": str(source_file)})
    except ValidationError as exc:
        problems = [problem for error in exc.errors() for problem in _problems(error)]
        raise ConfigError(source_file, *problems[0], more=problems[1:]) from None


def _problems(error: Any) -> list[tuple[str, str]]:
    """Return (key, problem) for one of pydantic's errors; a whole-object check can hold
    several, one per line, each naming its own key ("features.numeric: ...")."""
    loc = tuple(x for x in error["loc"] if not (isinstance(x, str) and x in _UNION_TAGS))
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key (check its spelling; see include/pipelines/README.md)"
    elif error["type"] == "missing":
        message = "required key is missing"
    found = []
    for problem in message.split("\n"):
        key = loc
        if ": " in problem and not loc:
            name, _, problem = problem.partition(": ")
            key = (name,)
        found.append((_error_key(key), problem))
    return found


_UNION_TAGS = {"generator", "files"}


# A hook imports and runs code: where this names packages (comma-separated), a hook must be
# in one of them; set and empty, no hook may run (compose's default). Unset: any.
HOOK_PACKAGES = "NIGHTSHIFT_HOOK_PACKAGES"


def hook_refusal(hook: str) -> str | None:
    """Return why ``hook`` may not run here (NIGHTSHIFT_HOOK_PACKAGES), or None."""
    allowed = setting(HOOK_PACKAGES)
    if allowed is None:
        return None
    packages = sorted({name.strip() for name in allowed.split(",") if name.strip()})
    package = hook.partition(":")[0].split(".")[0]
    if package in packages:
        return None
    named = f"only {', '.join(packages)}" if packages else "none"
    return f"'{hook}': package '{package}' is not allowed to run here ({HOOK_PACKAGES}: {named})"


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's booleans (only true and false: YAML 1.1 also
    reads on/off/yes/no/y/n as booleans, which makes the key ``alerts.on`` the boolean True;
    the config still reads "no" as false where it wants a boolean), refusing a key given twice
    in one mapping (PyYAML keeps the last silently: a pasted second ``schedule:`` would drop
    the first one's keys)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """Return the mapping; raise a YAML error naming the line of a repeated key."""
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rule) for tag, rule in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


# A pipeline is a page of YAML. Aliases (*name) share one value between places, so ten
# nested ones make 10**10 values for whatever walks the document (pydantic does).
MAX_YAML_VALUES = 100_000


def _refuse_huge(data: Any) -> None:
    """Raise a YAML error if ``data`` holds more than MAX_YAML_VALUES values, aliases expanded
    (counted without recursion, stopping at the bound)."""
    count, stack = 0, [data]
    while stack:
        value = stack.pop()
        count += 1
        if count > MAX_YAML_VALUES:
            raise yaml.YAMLError(
                f"the document expands to more than {MAX_YAML_VALUES:,} values "
                "(aliases repeating aliases?)"
            )
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def load_pipeline(path: Path | str) -> Pipeline:
    """Read and validate one pipeline YAML."""
    path = Path(path)
    try:
        data = yaml.load(path.read_text(), Loader=YamlLoader)  # a SafeLoader
        _refuse_huge(data)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "<document>"
        raise ConfigError(path, where, f"not valid YAML: {exc}") from None
    except OSError as exc:
        raise ConfigError(path, "<file>", f"cannot be read: {exc.strerror}") from None
    pipeline = parse_pipeline(data, path)
    if pipeline.name != path.stem:
        raise ConfigError(path, "name", f"must match the file name '{path.stem}'")
    return pipeline


def pipelines_dir() -> Path:
    """Return the folder the pipeline YAMLs are read from."""
    return pipelines_home()


def pipeline_files(directory: Path | None = None) -> list[Path]:
    """Return the pipeline YAMLs in ``directory``, sorted by name."""
    directory = directory or pipelines_dir()
    return sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])


def load_pipelines(directory: Path | None = None) -> tuple[list[Pipeline], list[ConfigError]]:
    """Return every valid pipeline in ``directory`` and the errors of the others."""
    pipelines: list[Pipeline] = []
    errors: list[ConfigError] = []
    for path in pipeline_files(directory):
        try:
            pipelines.append(load_pipeline(path))
        except ConfigError as exc:
            errors.append(exc)
        except Exception as exc:  # any other failure is still this file's alone
            errors.append(ConfigError(path, "<file>", f"{type(exc).__name__}: {exc}"))
    return pipelines, errors


def find_pipeline(name: str, directory: Path | None = None) -> Pipeline:
    """Return the pipeline called ``name``; raise ConfigError if its YAML is missing or wrong."""
    for path in pipeline_files(directory):
        if path.stem == name:
            return load_pipeline(path)
    directory = directory or pipelines_dir()
    have = ", ".join(path.stem for path in pipeline_files(directory)) or "none"
    raise ConfigError(directory, "pipeline", f"no pipeline '{name}' (have: {have})")
