"""Pure transforms, and Dask results checked against a pandas reference on the same data."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nightshift.config.pipeline import find_pipeline
from nightshift.data.features import FeatureStats, fit_stats, to_linear_matrix, to_tree_frame
from nightshift.data.ingest import RAW, conform, ingest_date
from nightshift.data.preprocess import (
    PROCESSED,
    batch_rows,
    derive_features,
    preprocess_date,
    processed_frame,
)
from nightshift.data.validate import DataValidationError, validate_date
from nightshift.storage.lake import lake_for

DAY = dt.date(2026, 6, 3)


@pytest.fixture
def pipeline(project: Path):
    return find_pipeline("retail_conversion")


def test_derive_features_is_row_level(pipeline) -> None:
    from nightshift.data.generator import generate_day

    raw = conform(generate_day(DAY, rows=500), pipeline.schema_, "test")
    whole = derive_features(raw, pipeline)
    halves = pd.concat(
        [derive_features(raw.iloc[:200], pipeline), derive_features(raw.iloc[200:], pipeline)]
    )
    pd.testing.assert_frame_equal(whole, halves)
    assert np.allclose(whole["basket_value"], np.log1p(raw["basket_value"]))
    assert set(whole["hour"].unique()) <= set(range(24))
    assert list(whole.columns)[-1] == "label"


def test_dask_preprocess_matches_pandas(pipeline, dask_client) -> None:
    lake = lake_for(pipeline)
    raw = ingest_date(pipeline, lake, DAY)
    assert len(raw.files) == 3  # ~4000 rows in batches of 1500
    validate_date(pipeline, lake, raw)
    processed = preprocess_date(dask_client, pipeline, lake, raw)

    reference = derive_features(
        pd.concat([pd.read_parquet(p) for p in lake.read(RAW, DAY).paths()], ignore_index=True),
        pipeline,
    )
    from_dask = processed_frame(processed.paths(), pipeline).compute().reset_index(drop=True)
    pd.testing.assert_frame_equal(from_dask, reference)
    assert processed.meta["rows_per_batch"] == [1500, 1500, len(reference) - 3000]
    # Read from the manifest; a version replaced since from its files' footers.
    assert batch_rows(processed.paths()) == processed.meta["rows_per_batch"]
    replaced = preprocess_date(dask_client, pipeline, lake, raw)
    assert batch_rows(processed.paths() + replaced.paths()) == 2 * processed.meta["rows_per_batch"]

    stats_dask = fit_stats(processed_frame(processed.paths(), pipeline), pipeline)
    stats_pandas = fit_stats(reference, pipeline)
    assert stats_dask.vocabularies == stats_pandas.vocabularies
    assert stats_dask.rows == stats_pandas.rows
    for name in stats_pandas.numeric:
        assert stats_dask.means[name] == pytest.approx(stats_pandas.means[name], rel=1e-12)
        assert stats_dask.stds[name] == pytest.approx(stats_pandas.stds[name], rel=1e-9)
    assert lake.has(PROCESSED, DAY)


def test_stats_round_trip_and_unknown_categories(pipeline) -> None:
    frame = pd.DataFrame(
        {
            "page_views": [1.0, 2.0, np.nan],
            "session_seconds": [1.0, 2.0, 3.0],
            "basket_value": [1.0, 1.0, 1.0],
            "items": [1.0, 2.0, 3.0],
            "discount_pct": [np.nan, np.nan, np.nan],
            "prior_purchases": [0.0, 1.0, 2.0],
            "days_since_last_visit": [1.0, 2.0, 3.0],
            "channel": pd.array(["web", "web", "ios"], dtype="string"),
            "country": pd.array(["NL", "DE", "NL"], dtype="string"),
            "device": pd.array(["mobile", "mobile", "desktop"], dtype="string"),
            "hour": [1.0, 13.0, 23.0],
            "day_of_week": [0.0, 3.0, 6.0],
            "is_weekend": [0.0, 0.0, 1.0],
            "label": [0.0, 1.0, 1.0],
        }
    )
    stats = fit_stats(frame, pipeline)
    assert FeatureStats.from_json(stats.to_json()) == stats
    assert stats.vocabularies["channel"] == ["web", "ios"]  # by count, then by value
    assert stats.stds["basket_value"] == 1.0  # a constant column does not divide by zero
    assert stats.means["discount_pct"] == 0.0  # an all-missing column imputes to 0

    unseen = frame.assign(channel=pd.array(["fax", "web", None], dtype="string"))
    trees = to_tree_frame(unseen, stats)
    assert list(trees["channel"].astype(str)) == ["__other__", "web", "__other__"]
    matrix = to_linear_matrix(unseen, stats)
    assert matrix.shape == (3, len(stats.linear_feature_names()))
    assert np.isfinite(matrix).all()


def test_validation_blocks_bad_labels_with_file_column_and_rows(pipeline) -> None:
    lake = lake_for(pipeline)
    raw = ingest_date(pipeline, lake, DAY)
    path = Path(raw.paths()[1])
    frame = pd.read_parquet(path)
    frame.loc[[3, 7], "converted"] = 2
    frame.to_parquet(path, index=False)
    with pytest.raises(DataValidationError) as caught:
        validate_date(pipeline, lake, raw)
    message = str(caught.value)
    assert str(path) in message
    assert "column 'converted' failed check 'binary_label'" in message
    # Rows are the source's rows as a spreadsheet numbers them (header: row 1), kept per row
    # by ingest, whatever batch and order the lake holds them in.
    rows = frame.loc[[3, 7], "_source_row"].tolist()
    first = len(pd.read_parquet(raw.paths()[0]))
    assert rows == [first + 3 + 2, first + 7 + 2]  # the generator's rows are in time order
    assert f"at rows {rows}" in message


@pytest.mark.parametrize(
    "dtype", ["object", "string[pyarrow]", "string[python]", "str", "category"]
)
def test_category_codes_put_unknown_and_missing_values_in_other(dtype: str) -> None:
    from nightshift.data.features import category_codes

    values = pd.Series(["web", None, "app", "fax", "web", pd.NA], dtype=dtype)
    codes = category_codes(values, ["app", "web"])
    assert codes.tolist() == [1, 2, 0, 2, 1, 2]
