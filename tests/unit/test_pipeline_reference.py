"""include/pipelines/README.md: one unbroken table, every key of a pipeline YAML, in its order."""

from __future__ import annotations

import typing
from pathlib import Path

from pydantic import BaseModel

from nightshift.config.pipeline import FileSource, GeneratorSource, Pipeline

REFERENCE = Path(__file__).resolve().parents[2] / "include" / "pipelines" / "README.md"
# Keys documented as one row for the whole mapping or list, not per field.
WHOLE = {
    "models",
    "schema.columns",
    "alerts.email",
    "alerts.webhook",
    "source.wait",
    "validation.ranges",
    "validation.row_count",
}


def _rows() -> tuple[list[str], list[str]]:
    """Return the keys of the reference table's rows, and every line that looks like a row."""
    lines = REFERENCE.read_text().splitlines()
    start = lines.index("| key | type (default) | meaning |") + 2
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    keys = [line.split("`")[1] for line in lines[start:end]]
    return keys, [line for line in lines if line.startswith("| `")]


def _model_of(annotation: object) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every leaf key a YAML of ``model`` can hold, in the model's field order."""
    keys: list[str] = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        key = prefix + (field.alias or name)
        if key == "source":
            sources = [*_keys(GeneratorSource, "source."), *_keys(FileSource, "source.")]
            keys += list(dict.fromkeys(sources))
            continue
        inner = _model_of(field.annotation)
        keys += _keys(inner, key + ".") if inner and key not in WHOLE else [key]
    return keys


def test_the_table_is_not_broken_by_a_paragraph() -> None:
    keys, row_lines = _rows()
    assert len(keys) == len(row_lines), "a paragraph splits the table: rows after it are text"


def test_every_key_is_documented_in_yaml_order() -> None:
    documented, _ = _rows()
    expected = _keys(Pipeline)
    missing = [key for key in expected if not any(d.startswith(key) for d in documented)]
    assert missing == []
    # The sections come in the order of a pipeline YAML (the Pipeline model's fields).
    sections = list(dict.fromkeys(key.split(".")[0].split("[")[0] for key in documented))
    assert sections == list(dict.fromkeys(key.split(".")[0] for key in expected))
