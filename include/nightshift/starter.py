"""``nightshift init --from FILE``: a starter pipeline YAML from one sample of the user's data.

It reads the sample (CSV or Parquet), infers each column's type and whether it had empty values,
picks the timestamp column, and writes a YAML whose TODOs say what only the user can decide:
the label (a column, or one to ``derive``), the features, and the schedule's timezone.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

SAMPLE_ROWS = 50_000


# A column whose every value differs from row to row, over at least this many rows, is an ID.
ID_MIN_ROWS = 20
# Control characters in a column name would end its line of YAML and start another key.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Inferred:
    """One column of the sample: its name, nightshift type, how often it was empty, and
    whether it is an ID (a different value on every row: no use as a feature)."""

    name: str
    type: str
    empty_share: float
    unique_per_row: bool = False


def read_sample(path: Path) -> pd.DataFrame:
    """Return up to SAMPLE_ROWS rows of a CSV or Parquet file."""
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path).head(SAMPLE_ROWS)
    if path.suffix.lower() in (".csv", ".txt"):
        return pd.read_csv(path, nrows=SAMPLE_ROWS, dtype_backend="numpy_nullable")
    raise ValueError("expected a .csv or .parquet file")


def infer(frame: pd.DataFrame) -> list[Inferred]:
    """Return each column's nightshift type, share of empty values and whether it is an ID;
    raise ValueError for a column name no YAML line can hold (control characters)."""
    bad = [str(name) for name in frame.columns if CONTROL.search(str(name))]
    if bad:
        raise ValueError(f"column names with control characters (newline, tab, ...): {bad!r}")
    return [_inferred(str(name), frame[name]) for name in frame.columns]


def _inferred(name: str, values: pd.Series) -> Inferred:
    kind = _type_of(values)
    is_id = kind in ("int", "string") and len(values) >= ID_MIN_ROWS and values.is_unique
    return Inferred(name, kind, float(values.isna().mean()), bool(is_id))


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
    """Return the starter pipeline YAML for a sample at ``source``; every value from the
    sample (names, the path) is written as a quoted YAML string."""
    timestamp = next((c.name for c in columns if c.type == "timestamp"), None)
    features = [c for c in columns if not c.unique_per_row and c.name != timestamp]
    numeric = [c.name for c in features if c.type in ("int", "float")]
    text = [c.name for c in features if c.type == "string"]
    ids = [c.name for c in columns if c.unique_per_row]
    fmt = "parquet" if source.suffix.lower() in (".parquet", ".pq") else "csv"
    dated = _dated_path(source)
    todo = "" if "{date}" in dated else "   # TODO: put {date} where the date goes"
    first = _sample_date(source)
    lines = [
        f"# Starter pipeline from {_one_line(source.name)} ({len(columns)} columns); edit the",
        "# TODOs, then `nightshift check`. Keys: include/pipelines/README.md.",
        f"name: {_quoted(name)}",
        "source:",
        "  kind: files",
        f"  path: {_quoted(dated)}{todo}",
        f"  format: {fmt}",
        "schema:",
        "  task: binary_classification   # TODO: or regression",
        "  label: TODO                   # TODO: a column below, or one you derive",
        f"  timestamp: {_quoted(timestamp) if timestamp else 'TODO'}",
        "  columns:",
        *[_column_line(c, c.name == timestamp) for c in columns],
        "# derive:                        # TODO if the label is not a column as it is, e.g.",
        '#   delayed: "arr_delay > 15"',
        "# filter:",
        '#   - "arr_delay is not None"',
        "# drop: [arr_delay]              # the label's source is never a feature",
        "features:                        # TODO: keep what the model may use (never the label)",
        *([f"  # left out, a different value on every row (an ID): {_flow(ids)}"] if ids else []),
        f"  numeric: {_flow(numeric)}",
        f"  categorical: {_flow(text)}",
        *([f"  time: {_flow(_time_features(columns))}"] if timestamp else []),
        "models:",
        "  - {kind: xgboost}",
        "  - {kind: sgd}",
        "  - {kind: baseline}",
        "schedule:",
        "  timezone: UTC                  # TODO: the zone your dates are in",
        *(
            [f"  start_date: {first}             # the sample's date: the first night"]
            if first
            else []
        ),
        "",
    ]
    return "\n".join(lines)


def _quoted(value: str) -> str:
    """``value`` as a double-quoted YAML scalar (JSON's string syntax is YAML's)."""
    return json.dumps(value, ensure_ascii=False)


def _flow(names: list[str]) -> str:
    """``names`` as a YAML flow sequence of quoted strings."""
    return "[" + ", ".join(_quoted(n) for n in names) + "]"


def _one_line(text: str) -> str:
    """``text`` safe inside a YAML comment: no line breaks."""
    return CONTROL.sub("?", text)


def _sample_date(source: Path) -> dt.date | None:
    """The last date (YYYY-MM-DD) in the sample's path, if it has one."""
    found = re.findall(r"\d{4}-\d{2}-\d{2}", str(source))
    try:
        return dt.date.fromisoformat(found[-1]) if found else None
    except ValueError:
        return None


def _time_features(columns: list[Inferred]) -> list[str]:
    """The derived time features, less any the data already has a column of that name for."""
    names = {c.name for c in columns}
    return [name for name in ("hour", "day_of_week") if name not in names]


def _column_line(column: Inferred, is_timestamp: bool) -> str:
    nullable = "false" if is_timestamp else "true"
    empty = f"{column.empty_share:.1%} empty in the sample"
    name = _quoted(column.name)
    return f"    - {{name: {name}, type: {column.type}, nullable: {nullable}}}   # {empty}"


def _dated_path(source: Path) -> str:
    """The sample's path with its date replaced by ``{date}``, when it has one."""
    path = str(source.resolve())
    return re.sub(r"\d{4}-\d{2}-\d{2}(?!.*\d{4}-\d{2}-\d{2})", "{date}", path)


def pipeline_name(source: Path) -> str:
    """A valid pipeline name from the sample's folder or file name."""
    stem = re.sub(r"\d{4}-\d{2}-\d{2}", "", source.stem) or source.parent.name
    name = re.sub(r"[^a-z0-9_]+", "_", stem.lower()).strip("_")
    return name if re.match(r"^[a-z]", name) else f"pipeline_{name}".rstrip("_")
