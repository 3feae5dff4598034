"""What each stage returns: a typed record, and its XCom form.

The stage functions return these records, dates as dates; the Airflow tasks hand them on as
XCom (``to_xcom``: plain JSON, dates as ISO strings) and read them back where they are used
(``from_xcom``), so no task parses another's dict by key. ``run_nightly`` returns the XCom
forms, as a DAG run's XComs hold them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Self

from nightshift.config.pipeline import Stage
from nightshift.config.profiling import profiled
from nightshift.config.records import plain


def _typed(value: Any, hint: Any) -> Any:
    """``value`` read back as ``hint`` says: ISO strings where a date is meant become dates."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if value is None:
        return None
    if hint is dt.date:
        return dt.date.fromisoformat(value)
    if origin is list:
        return [_typed(v, args[0]) for v in value]
    if origin is dict:
        return {_typed(k, args[0]): _typed(v, args[1]) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        [inner] = [a for a in args if a is not type(None)]
        return _typed(value, inner)
    return value


@dataclass(frozen=True, kw_only=True)
class StageResult:
    """What every stage reports: its wall and CPU seconds (the process's, not Dask's)."""

    seconds: float = 0.0
    cpu_seconds: float = 0.0
    # Optional keys the XCom leaves out when unset (as the stage always has).
    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset()

    def to_xcom(self) -> dict[str, Any]:
        """The result as its XCom holds it."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {
            name: plain(value)
            for name, value in values.items()
            if not (value is None and name in self.OMITTED_WHEN_NONE)
        }

    @classmethod
    def from_xcom(cls, data: dict[str, Any]) -> Self:
        """Read a result back from its XCom."""
        hints = typing.get_type_hints(cls)
        known = {f.name for f in fields(cls)}
        return cls(**{k: _typed(v, hints[k]) for k, v in data.items() if k in known})

    def with_time(self, seconds: float, cpu_seconds: float) -> Self:
        """The same result with the stage's seconds."""
        return dataclasses.replace(self, seconds=seconds, cpu_seconds=cpu_seconds)


@dataclass(frozen=True, kw_only=True)
class Ingested(StageResult):
    """The run date and the window days landed in the raw stage, and those left out."""

    partition_date: dt.date
    dates: list[dt.date]  # landed, oldest first (the run date last)
    raw: dict[dt.date, str] = field(default_factory=dict)  # the raw partition of each
    skipped: dict[dt.date, str] = field(default_factory=dict)  # window day -> why


@dataclass(frozen=True, kw_only=True)
class Validated(StageResult):
    """The dates that passed validation, their rows, and the window days left out."""

    dates: list[dt.date]
    rows: dict[dt.date, int] = field(default_factory=dict)
    skipped: dict[dt.date, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Preprocessed(StageResult):
    """Each date's processed partition, and the dataframe backend that wrote it."""

    backend: str
    processed: dict[dt.date, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class FeaturesFitted(StageResult):
    """The features partition fit_features wrote: the inputs the rest of the night reads."""

    features: str
    version: str
    window: list[dt.date]
    rows: int


@dataclass(frozen=True, kw_only=True)
class Trained(StageResult):
    """The model partitions a training stage wrote, per model name."""

    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"device", "kept_bytes"})

    models: dict[str, str] = field(default_factory=dict)
    device: str | None = None  # XGBoost's: "cuda" where every Dask worker has a GPU
    kept_bytes: int | None = None  # the batch matrices the linear models held at their end


@dataclass(frozen=True, kw_only=True)
class Evaluated(StageResult):
    """The evaluation partition, the best model and its headline metric."""

    evaluation: str
    best: str
    metric: str
    value: float | None

    def to_xcom(self) -> dict[str, Any]:
        """The XCom names the metric itself: ``{"roc_auc": 0.83, ...}``."""
        data = super().to_xcom()
        data[data.pop("metric")] = data.pop("value")
        return data

    @classmethod
    def from_xcom(cls, data: dict[str, Any]) -> Self:
        """Read one back: the one key that is no field is the metric."""
        known = {f.name for f in fields(cls)}
        [metric] = [key for key in data if key not in known]
        return super().from_xcom({**data, "metric": metric, "value": data[metric]})


@dataclass(frozen=True, kw_only=True)
class Published(StageResult):
    """Where the night's report and summary are, and what became of the champion."""

    report: str
    metrics: str
    champion: str | None
    promoted: bool
    decision: str
    aliases_moved: dict[str, bool]
    awaiting_approval: bool


@dataclass
class _Clock:
    """The seconds a stage took: wall, and CPU of the process that ran it."""

    seconds: float = 0.0
    cpu_seconds: float = 0.0


@contextmanager
def timed(stage: Stage) -> Iterator[_Clock]:
    """Time the block: wall seconds, and the CPU seconds of the process that ran it (all its
    threads; not the Dask workers'); profile it when profiling is on."""
    clock = _Clock()
    start, cpu_start = time.perf_counter(), time.process_time()
    with profiled(stage.value):
        yield clock
    clock.seconds = round(time.perf_counter() - start, 3)
    clock.cpu_seconds = round(time.process_time() - cpu_start, 3)
