"""A night trains on the partition versions its feature statistics were fitted on.

Between ``fit_features`` and training, a backfill may re-process a window day and commit a new
version of its partition. The night must not mix the two: statistics from one version and
training data from another.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from nightshift.config.pipeline import LABEL, find_pipeline
from nightshift.night import inputs, scoring, stages
from nightshift.storage.lake import PROCESSED, lake_for, read_bytes, write_parquet

pytestmark = pytest.mark.e2e

DAY = dt.date(2026, 9, 16)


def _trained(pipeline) -> list[bytes]:
    """The files of the night's SGD model partition (model, statistics, history)."""
    lake = lake_for(pipeline)
    return [read_bytes(p) for p in lake.read(inputs.model_stage("sgd_logistic"), DAY).paths()]


def _processed(pipeline) -> None:
    """Ingest, validate and process DAY and its window."""
    dates = stages.ingest(pipeline, DAY).dates
    valid = stages.validate(pipeline, dates, DAY).dates
    stages.preprocess(pipeline, valid)


def test_a_window_day_replaced_after_fit_features_does_not_reach_training(
    project: Path,
) -> None:
    pipeline = find_pipeline("retail_conversion")
    _processed(pipeline)
    fitted = stages.fit_features(pipeline, DAY)
    lake = lake_for(pipeline)
    stages.train_incremental(pipeline, DAY, fitted.version)
    trained = _trained(pipeline)

    # A backfill re-processes the first window day meanwhile: half its rows, a new version.
    replaced = fitted.window[0]
    old = lake.read(PROCESSED, replaced)
    frame = pd.concat([pd.read_parquet(p) for p in old.paths()], ignore_index=True)
    with lake.writer(PROCESSED, replaced) as writer:
        writer.write_bytes("batch-00000.parquet", write_parquet(frame.iloc[: len(frame) // 2]))
    now, _ = inputs.training_paths(pipeline, DAY)
    recorded = inputs.night_inputs(pipeline, DAY, fitted.version)
    assert now != recorded.window_paths  # the lake's listing moved on...

    # ...the night's training (a retry, here) still reads what the statistics came from.
    stages.train_incremental(pipeline, DAY, fitted.version)
    assert _trained(pipeline) == trained
    assert recorded.window == fitted.window
    assert set(old.paths()) <= set(recorded.window_paths)
    assert not set(lake.read(PROCESSED, replaced).paths()) & set(recorded.window_paths)


def test_fit_features_draws_the_window_sample_once(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = find_pipeline("retail_conversion")
    _processed(pipeline)
    monkeypatch.setattr(inputs, "WINDOW_SAMPLE_ROWS", 2000)  # of the window's 8,000 rows
    recorded = inputs.night_inputs(pipeline, DAY, stages.fit_features(pipeline, DAY).version)
    numeric, categorical = scoring.drift_columns(pipeline)
    assert recorded.window_sample is not None
    sample = pd.read_parquet(recorded.window_sample)
    # Every feature and the label: drift's columns, and the training curve's.
    assert {*numeric, *categorical} < set(sample.columns)
    assert {*pipeline.features.time, LABEL} <= set(sample.columns)
    assert 1700 <= len(sample) <= 2300, len(sample)
    # Drawn with the pipeline's seed: fitted again, the same rows.
    again = inputs.night_inputs(pipeline, DAY, stages.fit_features(pipeline, DAY).version)
    assert again.version != recorded.version
    pd.testing.assert_frame_equal(pd.read_parquet(again.window_sample), sample)
    assert inputs.read_window_sample(pipeline, recorded, numeric).equals(sample[numeric])

    # Features fitted before the sample was drawn: evaluate reads the window itself.
    older = dataclasses.replace(recorded, window_sample=None)
    assert len(inputs.read_window_sample(pipeline, older, numeric)) == 2000
