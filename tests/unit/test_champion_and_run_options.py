"""Trigger-form run options and safe report lookups."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from nightshift.config.pipeline import ConfigError, parse_pipeline
from nightshift.data.preprocess import sample_rows
from nightshift.publishing.report_index import UnsafePath, safe_path
from tests.conftest import small_pipeline_dict


def _pipeline():
    return parse_pipeline(small_pipeline_dict(), "include/pipelines/demo.yaml")


def test_run_options_override_models_window_and_sample() -> None:
    pipeline = _pipeline()
    quick = pipeline.with_run_options(models=["xgboost"], window_days=5, sample_fraction=0.1)
    assert [m.name for m in quick.models] == ["xgboost"]
    assert quick.training.window_days == 5 and quick.training.sample_fraction == 0.1
    assert pipeline.with_run_options() == pipeline
    assert pipeline.training.window_days == 2  # the YAML's pipeline is untouched


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"models": ["lightgbm"]}, "models"),
        ({"models": []}, "models"),
        ({"window_days": 0}, "training.window_days"),
        ({"sample_fraction": 1.5}, "training.sample_fraction"),
    ],
)
def test_bad_run_options_name_the_key(options: dict, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        _pipeline().with_run_options(**options)
    assert error.value.key == key
    assert "include/pipelines/demo.yaml" in str(error.value)


def test_sampling_is_deterministic_and_a_no_op_at_one() -> None:
    frame = pd.DataFrame({"x": range(1000)})
    assert sample_rows(frame, 1.0, 1) is frame
    once, again = sample_rows(frame, 0.2, 7), sample_rows(frame, 0.2, 7)
    assert len(once) == 200 and once.equals(again)
    assert once.index.is_monotonic_increasing


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    root = tmp_path / "reports" / "demo"
    (root / "2026-06-02").mkdir(parents=True)
    (root / "2026-06-02" / "report.html").write_text("<html></html>")
    (tmp_path / "secret.txt").write_text("not for you")
    os.symlink(tmp_path / "secret.txt", root / "2026-06-02" / "leak.html")
    return root


def test_safe_path_serves_files_under_the_root(reports: Path) -> None:
    assert safe_path(reports, "2026-06-02/report.html").read_text() == "<html></html>"


@pytest.mark.parametrize(
    "path",
    [
        "../secret.txt",
        "2026-06-02/../../secret.txt",
        "/etc/passwd",
        "2026-06-02/leak.html",
        "report.html\x00.png",
        "C:/windows",
        "./2026-06-02/report.html",
    ],
)
def test_safe_path_refuses_anything_leaving_the_root(reports: Path, path: str) -> None:
    with pytest.raises(UnsafePath):
        safe_path(reports, path)


def test_safe_path_missing_file_is_not_found(reports: Path) -> None:
    with pytest.raises(FileNotFoundError):
        safe_path(reports, "2026-06-09/report.html")


def test_params_are_the_trigger_form_schema() -> None:
    from nightshift.airflow_dag import run_params

    params = run_params(_pipeline())
    assert set(params) == {"run_date", "models", "window_days", "sample_fraction", "promote"}
    assert params["models"].resolve(["xgboost"]) == ["xgboost"]
    assert params["run_date"].resolve("2026-06-02") == "2026-06-02"
    assert params["run_date"].resolve(None) is None
    bad = [
        ("models", ["nope"]),
        ("models", []),
        ("window_days", 0),
        ("window_days", "seven"),
        ("sample_fraction", 0),
        ("sample_fraction", 1.2),
        ("run_date", "2026-13-45"),
        ("promote", "yes"),
    ]
    from airflow.sdk.exceptions import ParamValidationError

    for name, value in bad:
        with pytest.raises(ParamValidationError, match=r"Failed validating|Invalid input"):
            params[name].resolve(value)
    assert params["run_date"].resolve("2026-02-28") == "2026-02-28"
