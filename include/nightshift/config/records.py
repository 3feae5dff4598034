"""The records the late stages hand each other: evaluation, champions, decisions, the summary.

Each is frozen and built once; a stage that changes something returns a new record
(``dataclasses.replace``) instead of editing one it was given. They become plain data only at
the edges — ``evaluation.json`` in the lake, ``metrics.json`` and the report, MLflow tags, XCom
— through ``to_dict``, whose keys are the published format (see ``docs`` in the README).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal


def iso_or_empty(day: dt.date | None) -> str:
    """A date as the published files hold it: ISO, or "" where it is unknown."""
    return "" if day is None else day.isoformat()


def date_or_none(value: str | None) -> dt.date | None:
    """A date read back from the published files: "" or none is unknown."""
    return dt.date.fromisoformat(value) if value else None


def plain(value: Any) -> Any:
    """``value`` as JSON holds it: dates as ISO strings, in lists and mapping keys too."""
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


@dataclass(frozen=True)
class ChampionRef:
    """A registered model's champion: the version behind its ``champion`` alias."""

    registered_model: str
    version: int
    run_id: str | None
    model: str | None  # the pipeline's model name the version was trained as
    trained_for: dt.date | None  # None when the version carries no date

    def to_dict(self) -> dict[str, Any]:
        """Return the champion as plain data (an unknown date as "")."""
        return {**asdict(self), "trained_for": iso_or_empty(self.trained_for)}


@dataclass(frozen=True)
class ChampionScore:
    """A champion and how it scored on tonight's held-out day, or why it was not scored.

    ``metrics`` is None when it was not scored: none is comparable (trained for this date or a
    later one), or its model could not be loaded (``unscored`` says why).
    """

    ref: ChampionRef
    metrics: dict[str, Any] | None = None
    segments: dict[str, Any] | None = None
    unscored: str | None = None

    @property
    def trained_for(self) -> dt.date | None:
        """The date the champion was trained for (None: unknown)."""
        return self.ref.trained_for

    @property
    def label(self) -> str:
        """The champion as a reason names it: "v3 (trained for 2026-06-01)"."""
        return f"v{self.ref.version} (trained for {iso_or_empty(self.ref.trained_for)})"

    def to_dict(self) -> dict[str, Any]:
        """Return the champion and its scores as plain data (only what was measured)."""
        data = self.ref.to_dict()
        if self.metrics is not None:
            data.update(metrics=self.metrics, segments=self.segments)
        if self.unscored is not None:
            data["unscored"] = self.unscored
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChampionScore:
        """Read one back from ``to_dict``'s form."""
        ref = ChampionRef(
            data["registered_model"],
            int(data["version"]),
            data.get("run_id"),
            data.get("model"),
            date_or_none(data.get("trained_for")),
        )
        return cls(ref, data.get("metrics"), data.get("segments"), data.get("unscored"))


@dataclass(frozen=True)
class Challenger:
    """Tonight's model as the gate sees it: its held-out metrics and per-segment metrics."""

    model: str
    trained_for: dt.date
    metrics: dict[str, Any]
    segments: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the challenger as plain data."""
        return {**asdict(self), "trained_for": self.trained_for.isoformat()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Challenger:
        """Read one back from ``to_dict``'s form."""
        return cls(
            data["model"],
            dt.date.fromisoformat(data["trained_for"]),
            data["metrics"],
            data.get("segments"),
        )


@dataclass(frozen=True)
class ModelScore:
    """One of tonight's models measured on the held-out day."""

    kind: str  # the model kind: "xgboost", "sgd", "baseline"
    metrics: dict[str, Any]
    curves: dict[str, Any]  # roc, pr, confusion, calibration (classification) or residuals
    history: dict[str, Any]  # what training recorded: losses, rounds, parameters
    segments: dict[str, Any] | None = None  # per value of the pipeline's segment column
    value: float | None = None  # the baseline's constant prediction
    importance: dict[str, Any] | None = None  # XGBoost's gain and contribution per feature

    def to_dict(self) -> dict[str, Any]:
        """Return the model's scores as plain data; absent parts are left out."""
        data: dict[str, Any] = {"kind": self.kind, "metrics": self.metrics}
        data["history"] = self.history
        data.update(self.curves)
        optional = {"segments": self.segments, "value": self.value, "importance": self.importance}
        data.update({key: value for key, value in optional.items() if value is not None})
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelScore:
        """Read one back from ``to_dict``'s form."""
        named = {"kind", "metrics", "history", "segments", "value", "importance"}
        curves = {key: value for key, value in data.items() if key not in named}
        return cls(
            data["kind"],
            data["metrics"],
            curves,
            data.get("history") or {},
            data.get("segments"),
            data.get("value"),
            data.get("importance"),
        )


@dataclass(frozen=True)
class Estimate:
    """One measure of the held-out day and what the gate's bootstrap says of it.

    ``value``: on the day's rows (a difference is challenger minus champion); ``low`` and
    ``high``: the one-sided bounds at the gate's confidence (together the central interval
    of level ``2 * confidence - 1``: 90% for 95%); ``se``: the replicates' standard deviation;
    ``undefined``: replicates in which the measure had no value (a resample without one of
    the classes), which make the estimate too unsure to judge.
    """

    value: float | None
    low: float | None = None
    high: float | None = None
    se: float | None = None
    rows: int = 0
    undefined: int = 0

    @property
    def bounded(self) -> bool:
        """Whether the bootstrap gave an interval a check can act on."""
        return self.low is not None and self.high is not None and not self.undefined

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Estimate:
        """Read one back from its plain form."""
        return cls(
            data.get("value"),
            data.get("low"),
            data.get("high"),
            data.get("se"),
            data.get("rows", 0),
            data.get("undefined", 0),
        )


@dataclass(frozen=True)
class Comparison:
    """Tonight's model against its champion on the same held-out rows, from one stratified
    paired bootstrap: every replicate resamples each segment to its own row count and
    scores both models on the same rows, for the headline, every segment and calibration.

    ``headline`` and ``segments`` are differences of ``metric``; ``calibration`` the
    difference of expected calibration error and ``challenger_calibration`` the
    challenger's own (classification only).
    """

    metric: str
    samples: int
    confidence: float
    headline: Estimate
    segments: dict[str, Estimate] = field(default_factory=dict)
    calibration: Estimate | None = None
    challenger_calibration: Estimate | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return it as plain data; ``delta``, ``low`` and ``high`` are the headline's, the
        keys metrics.json had before segments and calibration were bootstrapped too."""
        head = self.headline
        return {
            "metric": self.metric,
            "samples": self.samples,
            "confidence": self.confidence,
            "delta": head.value,
            "low": head.low,
            "high": head.high,
            "headline": asdict(head),
            "segments": {name: asdict(e) for name, e in self.segments.items()},
            "calibration": None if self.calibration is None else asdict(self.calibration),
            "challenger_calibration": (
                None if self.challenger_calibration is None else asdict(self.challenger_calibration)
            ),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Comparison:
        """Read one back from ``to_dict``'s form."""

        def estimate(value: dict[str, Any] | None) -> Estimate | None:
            return None if value is None else Estimate.from_dict(value)

        return cls(
            data["metric"],
            data["samples"],
            data["confidence"],
            Estimate.from_dict(data["headline"]),
            {name: Estimate.from_dict(e) for name, e in (data.get("segments") or {}).items()},
            estimate(data.get("calibration")),
            estimate(data.get("challenger_calibration")),
        )


@dataclass(frozen=True)
class NightEvaluation:
    """What ``evaluate`` measured: every model, each champion, the intervals and drift."""

    models: dict[str, ModelScore]
    ranking: list[str]  # model names, best first on the headline metric
    challenger: str  # the best learned model (the baseline only if there is none)
    headline_metric: str
    higher_is_better: bool
    champions: dict[str, ChampionScore | None]  # per learned model; None: no champion yet
    comparisons: dict[str, Comparison]  # each learned model against its scored champion
    drift: dict[str, Any]

    @property
    def best(self) -> str:
        """The best model on the headline metric."""
        return self.ranking[0]

    def headline(self, name: str) -> float | None:
        """Model ``name``'s value of the headline metric."""
        value: float | None = self.models[name].metrics[self.headline_metric]
        return value

    def to_dict(self) -> dict[str, Any]:
        """Return the evaluation as plain data (``evaluation.json``; part of metrics.json)."""
        return {
            "models": {name: score.to_dict() for name, score in self.models.items()},
            "ranking": self.ranking,
            "best": self.best,
            "challenger": self.challenger,
            "headline_metric": self.headline_metric,
            "higher_is_better": self.higher_is_better,
            "champions": {
                name: None if champion is None else champion.to_dict()
                for name, champion in self.champions.items()
            },
            "deltas": {name: c.to_dict() for name, c in self.comparisons.items()},
            "drift": self.drift,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NightEvaluation:
        """Read one back from ``to_dict``'s form."""
        return cls(
            {name: ModelScore.from_dict(score) for name, score in data["models"].items()},
            data["ranking"],
            data["challenger"],
            data["headline_metric"],
            data["higher_is_better"],
            {
                name: None if champion is None else ChampionScore.from_dict(champion)
                for name, champion in data["champions"].items()
            },
            {name: Comparison.from_dict(c) for name, c in data["deltas"].items()},
            data["drift"],
        )


@dataclass(frozen=True)
class Check:
    """One condition of the gate, whether it passed, and the numbers behind it."""

    name: str
    passed: bool
    detail: str


SegmentState = Literal["worse", "within bound", "not judged"]


@dataclass(frozen=True)
class SegmentVerdict:
    """One segment of the held-out day as the gate saw it: both models' metric on its rows,
    the difference with its interval, whether it was judged and what it showed.

    ``detectable``: the drop the segment check would catch 9 nights in 10 at this size.
    """

    segment: str
    rows: int
    challenger: float | None
    champion: float | None
    difference: Estimate
    state: SegmentState
    why: str
    detectable: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return it as plain data."""
        return {**asdict(self), "difference": asdict(self.difference)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentVerdict:
        """Read one back from ``to_dict``'s form."""
        return cls(**{**data, "difference": Estimate.from_dict(data["difference"])})


@dataclass(frozen=True)
class Decision:
    """Whether the challenger became champion, why, and every check that was made."""

    model: str
    promoted: bool
    reason: str
    challenger: Challenger
    champion: ChampionScore | None
    checks: list[Check] = field(default_factory=list)
    segments: list[SegmentVerdict] = field(default_factory=list)
    power: str | None = None  # what the gate could detect at tonight's sizes, in a sentence

    @property
    def decided_by(self) -> list[str]:
        """The checks that decided: those that failed, or, when none did, all of them."""
        failed = [check.name for check in self.checks if not check.passed]
        return failed or [check.name for check in self.checks]

    def lost_race(self, newer: ChampionRef | None) -> Decision:
        """The same decision, kept: a newer night's champion took the alias first."""
        holder = (
            f"v{newer.version} trained for {iso_or_empty(newer.trained_for)}"
            if newer
            else "another"
        )
        return replace(
            self,
            promoted=False,
            reason=(
                f"earned promotion ({self.reason}), but champion {holder} was "
                "promoted meanwhile by a newer night"
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the decision as plain data (metrics.json)."""
        return {
            "model": self.model,
            "promoted": self.promoted,
            "reason": self.reason,
            "challenger": self.challenger.to_dict(),
            "champion": None if self.champion is None else self.champion.to_dict(),
            "checks": [asdict(check) for check in self.checks],
            "decided_by": self.decided_by,
            "segments": [verdict.to_dict() for verdict in self.segments],
            "power": self.power,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        """Read one back from ``to_dict``'s form."""
        champion = data.get("champion")
        return cls(
            data["model"],
            data["promoted"],
            data["reason"],
            Challenger.from_dict(data["challenger"]),
            None if champion is None else ChampionScore.from_dict(champion),
            [Check(**check) for check in data.get("checks", [])],
            [SegmentVerdict.from_dict(v) for v in data.get("segments") or []],
            data.get("power"),
        )


ApprovalState = Literal["awaiting", "approved", "rejected", "timed_out"]


@dataclass(frozen=True)
class Approval:
    """A person's answer to a night's promotion, where the pipeline requires one.

    ``awaiting``: asked, not yet answered (``due`` is when no answer keeps the champion);
    ``approved`` / ``rejected`` by ``by`` at ``at``; ``timed_out``: no answer by ``at``.
    """

    state: ApprovalState
    by: str | None = None
    at: str | None = None
    due: str | None = None

    def applied_to(self, decision: Decision) -> Decision:
        """The gate's ``decision`` as this answer leaves it: only an approval promotes."""
        if not decision.promoted:
            return decision
        if self.state == "approved":
            return replace(decision, reason=f"{decision.reason}; approved by {self.by}")
        held = {
            "awaiting": f"awaiting approval (no answer by {self.due} keeps the champion)",
            "rejected": f"rejected by {self.by}",
            "timed_out": f"not approved by {self.at}, so the champion is kept",
        }[self.state]
        return replace(
            decision, promoted=False, reason=f"earned promotion ({decision.reason}), {held}"
        )

    @property
    def refused(self) -> bool:
        """Whether the answer keeps the champion (rejected, or no answer in time)."""
        return self.state in ("rejected", "timed_out")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Approval:
        """Read one back from metrics.json's form (its ``label`` is derived, not read)."""
        return cls(data["state"], data.get("by"), data.get("at"), data.get("due"))

    @property
    def label(self) -> str:
        """A few words for the index and the report's headline."""
        return {
            "awaiting": "awaiting approval",
            "approved": f"approved by {self.by}",
            "rejected": f"rejected by {self.by}",
            "timed_out": "not approved in time",
        }[self.state]


@dataclass(frozen=True)
class TrainingWindow:
    """The days tonight's models were trained on, and how much data they held."""

    start: dt.date
    end: dt.date
    dates: list[dt.date]
    rows: int
    batches: int
    label_mean: float | None
    left_out: dict[dt.date, str] = field(default_factory=dict)  # window day -> why not used
    # The days of left_out whose input is held in quarantine (the rest had no data).
    quarantined: list[dt.date] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the window as plain data (metrics.json)."""
        return {name: plain(value) for name, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingWindow:
        """Read one back from metrics.json's form (older nights have no ``quarantined``)."""
        day = dt.date.fromisoformat
        return cls(
            day(data["start"]),
            day(data["end"]),
            [day(d) for d in data["dates"]],
            data["rows"],
            data["batches"],
            data.get("label_mean"),
            {day(d): why for d, why in data.get("left_out", {}).items()},
            [day(d) for d in data.get("quarantined", [])],
        )


@dataclass(frozen=True)
class ChampionOutcome:
    """The night's headline: the challenger's decision as the registry now holds it."""

    model: str
    model_id: str | None  # "<registered model> v<version>" of the champion after tonight
    promoted: bool
    reason: str
    previous: ChampionScore | None
    promotion_allowed: bool

    def to_dict(self) -> dict[str, Any]:
        """Return the outcome as plain data."""
        data = asdict(self)
        data["previous"] = None if self.previous is None else self.previous.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChampionOutcome:
        """Read one back from ``to_dict``'s form."""
        previous = data.get("previous")
        return cls(
            data["model"],
            data.get("model_id"),
            data["promoted"],
            data["reason"],
            None if previous is None else ChampionScore.from_dict(previous),
            data.get("promotion_allowed", True),
        )


@dataclass(frozen=True)
class TrendPoint:
    """One published night's headline metric."""

    date: dt.date
    value: float | None
    promoted: bool | None  # None: a report from before promotion was recorded
    best: str

    def to_dict(self) -> dict[str, Any]:
        """Return the point as plain data."""
        return {**asdict(self), "date": self.date.isoformat()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrendPoint:
        """Read one back from metrics.json's form (older nights name no ``best``)."""
        day = dt.date.fromisoformat(data["date"])
        return cls(day, data.get("value"), data.get("promoted"), data.get("best", ""))


@dataclass(frozen=True)
class NightSummary:
    """What a published night says: the report's and ``metrics.json``'s content."""

    pipeline: str
    dag_id: str
    partition_date: dt.date
    task: str
    run_id: str
    threshold: float
    run_options: dict[str, Any]
    gate: dict[str, Any]
    training_window: TrainingWindow
    data: dict[str, Any]
    evaluation: NightEvaluation
    decisions: dict[str, Decision]
    champion: ChampionOutcome
    timings: dict[str, float]
    links: dict[str, str | None]
    mlflow: dict[str, Any]
    trend: list[TrendPoint]
    nightshift_version: str
    approval: Approval | None = None  # None: the pipeline promotes without asking

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as plain data: the evaluation's keys at the top level."""
        records = {"evaluation", "training_window", "decisions", "champion", "trend", "approval"}
        plain = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in records}
        return {
            **plain,
            **self.evaluation.to_dict(),
            "partition_date": self.partition_date.isoformat(),
            "training_window": self.training_window.to_dict(),
            "decisions": {name: d.to_dict() for name, d in self.decisions.items()},
            "champion": self.champion.to_dict(),
            "trend": [point.to_dict() for point in self.trend],
            "approval": None
            if self.approval is None
            else {**asdict(self.approval), "label": self.approval.label},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NightSummary:
        """Read a night back from ``metrics.json`` (``to_dict``'s form)."""
        approval = data.get("approval")
        return cls(
            **{name: data[name] for name in _PLAIN_SUMMARY_FIELDS},
            partition_date=dt.date.fromisoformat(data["partition_date"]),
            training_window=TrainingWindow.from_dict(data["training_window"]),
            evaluation=NightEvaluation.from_dict(data),
            decisions={name: Decision.from_dict(d) for name, d in data["decisions"].items()},
            champion=ChampionOutcome.from_dict(data["champion"]),
            trend=[TrendPoint.from_dict(point) for point in data.get("trend", [])],
            approval=None if approval is None else Approval.from_dict(approval),
        )


# NightSummary's fields that metrics.json holds as they are (the rest are records).
_PLAIN_SUMMARY_FIELDS = (
    "pipeline",
    "dag_id",
    "task",
    "run_id",
    "threshold",
    "run_options",
    "gate",
    "data",
    "timings",
    "links",
    "mlflow",
    "nightshift_version",
)
