from __future__ import annotations

import datetime as dt

import numpy as np

from nightshift.data.generator import _drift, generate_day
from nightshift.storage.lake import write_parquet

DAY = dt.date(2026, 3, 14)


def test_same_date_same_bytes() -> None:
    first = write_parquet(generate_day(DAY, rows=3000))
    again = write_parquet(generate_day(DAY, rows=3000))
    assert first == again


def test_dates_differ_and_volume_follows_the_weekday() -> None:
    saturday = generate_day(dt.date(2026, 3, 14), rows=10_000)
    tuesday = generate_day(dt.date(2026, 3, 10), rows=10_000)
    next_tuesday = generate_day(dt.date(2026, 3, 17), rows=10_000)
    assert len(saturday) > len(tuesday)
    # Two Tuesdays: as many rows, but other rows, not the same ones under another date.
    assert len(next_tuesday) == len(tuesday)
    for column in ("session_seconds", "basket_value"):
        differs = tuesday[column].to_numpy() != next_tuesday[column].to_numpy()
        assert differs.mean() > 0.9, column
    assert (
        not tuesday["converted"]
        .reset_index(drop=True)
        .equals(next_tuesday["converted"].reset_index(drop=True))
    )


def test_realistic_shape() -> None:
    frame = generate_day(DAY, rows=20_000)
    assert frame["session_id"].is_unique
    assert frame["event_time"].is_monotonic_increasing
    assert frame["event_time"].dt.date.eq(DAY).all()
    assert 0.05 < frame["converted"].mean() < 0.6
    assert 0.02 < frame["session_seconds"].isna().mean() < 0.05
    assert 0.05 < frame["discount_pct"].isna().mean() < 0.12
    assert set(frame["channel"].unique()) <= {"web", "ios", "android", "partner", "email"}
    # Daily seasonality: evenings are busier than nights.
    hours = frame["event_time"].dt.hour
    assert (hours == 19).sum() > 3 * (hours == 3).sum()


def test_drift_moves_over_months_not_days() -> None:
    a, b, c = _drift(DAY), _drift(DAY + dt.timedelta(days=1)), _drift(DAY + dt.timedelta(days=90))
    assert abs(a["partner"] - b["partner"]) < 0.1
    assert abs(a["partner"] - c["partner"]) > 0.3
    assert np.isfinite(list(a.values())).all()
