"""``nightshift init --from FILE``: a starter pipeline YAML from one sample of the user's data.

It reads the sample (CSV or Parquet), infers each column's type and whether it had empty values,
picks the timestamp column, and writes a YAML whose TODOs say what only the user can decide:
the label (a column, or one to ``derive``), the features, and the schedule's timezone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

SAMPLE_ROWS = 50_000


@dataclass(frozen=True)
class Inferred:
    """One column of the sample: its name, nightshift type and how often it was empty."""

    name: str
    type: str
    empty_share: float


def read_sample(path: Path) -> pd.DataFrame:
    """Return up to SAMPLE_ROWS rows of a CSV or Parquet file."""
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path).head(SAMPLE_ROWS)
    if path.suffix.lower() in (".csv", ".txt"):
        return pd.read_csv(path, nrows=SAMPLE_ROWS, dtype_backend="numpy_nullable")
    raise ValueError(f"{path}: expected a .csv or .parquet file")


def infer(frame: pd.DataFrame) -> list[Inferred]:
    """Return each column's nightshift type and share of empty values."""
    return [
        Inferred(str(name), _type_of(frame[name]), float(frame[name].isna().mean()))
        for name in frame.columns
    ]


def _type_of(values: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(values):
        return "bool"
    if pd.api.types.is_datetime64_any_dtype(values):
        return "timestamp"
    if pd.api.types.is_integer_dtype(values):
        return "int"
    if pd.api.types.is_float_dtype(values):  # CSV integers with gaps read as Int64 already
        return "float"
    present = values.dropna().astype(str)
    if len(present) and present.str.match(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}.*)?$").all():
        return "timestamp"
    return "string"


def starter_yaml(name: str, source: Path, columns: list[Inferred]) -> str:
    """Return the starter pipeline YAML for a sample at ``source``."""
    timestamp = next((c.name for c in columns if c.type == "timestamp"), None)
    numeric = [c.name for c in columns if c.type in ("int", "float")]
    text = [c.name for c in columns if c.type == "string"]
    fmt = "parquet" if source.suffix.lower() in (".parquet", ".pq") else "csv"
    dated = _dated_path(source)
    todo = "" if "{date}" in dated else "   # TODO: put {date} where the date goes"
    lines = [
        f"# Starter pipeline from {source.name} ({len(columns)} columns); edit the TODOs, then",
        "# `nightshift check`. Keys: include/pipelines/README.md.",
        f"name: {name}",
        "source:",
        "  kind: files",
        f'  path: "{dated}"{todo}',
        f"  format: {fmt}",
        "schema:",
        "  task: binary_classification   # TODO: or regression",
        "  label: TODO                   # TODO: a column below, or one you derive",
        f"  timestamp: {timestamp or 'TODO'}",
        "  columns:",
        *[_column_line(c, c.name == timestamp) for c in columns],
        "# derive:                        # TODO if the label is not a column as it is, e.g.",
        '#   delayed: "arr_delay > 15"',
        "# filter:",
        '#   - "arr_delay is not None"',
        "# drop: [arr_delay]              # the label's source is never a feature",
        "features:                        # TODO: keep what the model may use (never the label)",
        f"  numeric: [{', '.join(numeric)}]",
        f"  categorical: [{', '.join(text)}]",
        *([f"  time: [{', '.join(_time_features(columns))}]"] if timestamp else []),
        "models:",
        "  - {kind: xgboost}",
        "  - {kind: sgd}",
        "  - {kind: baseline}",
        "schedule:",
        "  timezone: UTC                  # TODO: the zone your dates are in",
        "",
    ]
    return "\n".join(lines)


def _time_features(columns: list[Inferred]) -> list[str]:
    """The derived time features, less any the data already has a column of that name for."""
    names = {c.name for c in columns}
    return [name for name in ("hour", "day_of_week") if name not in names]


def _column_line(column: Inferred, is_timestamp: bool) -> str:
    nullable = "false" if is_timestamp else "true"
    empty = f"{column.empty_share:.1%} empty in the sample"
    return f"    - {{name: {column.name}, type: {column.type}, nullable: {nullable}}}   # {empty}"


def _dated_path(source: Path) -> str:
    """The sample's path with its date replaced by ``{date}``, when it has one."""
    path = str(source.resolve())
    return re.sub(r"\d{4}-\d{2}-\d{2}(?!.*\d{4}-\d{2}-\d{2})", "{date}", path)


def pipeline_name(source: Path) -> str:
    """A valid pipeline name from the sample's folder or file name."""
    stem = re.sub(r"\d{4}-\d{2}-\d{2}", "", source.stem) or source.parent.name
    name = re.sub(r"[^a-z0-9_]+", "_", stem.lower()).strip("_")
    return name if re.match(r"^[a-z]", name) else f"pipeline_{name}".rstrip("_")
