"""A realistic, deterministic day of e-commerce sessions: the built-in example dataset.

Each date's rows depend only on (seed, date), so the same date always gives the same bytes.
The label (``converted``) is learnable but noisy; its drivers drift slowly over months, so a
model trained in spring loses accuracy by autumn and nightly retraining earns its keep.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

CHANNELS = np.array(["web", "ios", "android", "partner", "email"])
COUNTRIES = np.array(["NL", "DE", "FR", "GB", "US", "ES", "IT", "PL", "SE", "BE"])
COUNTRY_WEIGHTS = np.array([0.18, 0.2, 0.12, 0.14, 0.12, 0.07, 0.06, 0.05, 0.03, 0.03])
DEVICES = np.array(["desktop", "mobile", "tablet"])

# Sessions per hour of day (UTC): quiet nights, a lunchtime bump and an evening peak.
# fmt: off
_HOURLY_TRAFFIC = np.array(
    [1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 3.5, 4, 4.5,
     5, 4.6, 4.2, 4.2, 4.5, 5.2, 6.4, 7.2, 7, 6, 4, 2.2]
)
# fmt: on
_HOURLY_TRAFFIC = _HOURLY_TRAFFIC / _HOURLY_TRAFFIC.sum()
# Conversion lift by hour: evening shoppers buy, night-time browsers don't.
_HOURLY_LIFT = 0.5 * np.sin((np.arange(24) - 13) / 24 * 2 * np.pi)
_WEEKDAY_VOLUME = np.array([0.95, 0.93, 0.94, 0.97, 1.02, 1.12, 1.07])  # Monday first
_WEEKDAY_LIFT = np.array([-0.05, -0.08, -0.06, -0.02, 0.05, 0.18, 0.12])

_EPOCH = dt.date(2024, 1, 1)


def _drift(partition_date: dt.date) -> dict[str, float]:
    """Return the slowly moving coefficients for ``partition_date`` (periods of months)."""
    t = (partition_date - _EPOCH).days
    return {
        "base": -3.2 + 0.3 * np.sin(2 * np.pi * t / 365.25),
        "discount": 0.05 + 0.06 * np.sin(2 * np.pi * t / 150),
        "mobile": -0.3 + 1.0 * np.sin(2 * np.pi * t / 210 + 1.0),
        "partner": 1.2 * np.cos(2 * np.pi * t / 120),
        "partner_share": 0.08 + 0.06 * (1 + np.sin(2 * np.pi * t / 300)),
        "recency": 1.5 + 1.0 * np.cos(2 * np.pi * t / 90),
    }


def generate_day(partition_date: dt.date, rows: int = 200_000, seed: int = 7) -> pd.DataFrame:
    """Return ``partition_date``'s sessions, sorted by event time; same inputs, same frame.

    The steps draw from one random generator in a fixed order: times, sessions, outcomes,
    then the missing values; reordering them changes every date's data.
    """
    return generate_day_with_truth(partition_date, rows, seed)[0]


def generate_day_with_truth(
    partition_date: dt.date, rows: int = 200_000, seed: int = 7
) -> tuple[pd.DataFrame, np.ndarray]:
    """Return ``generate_day``'s frame and, per row, the log-odds of conversion that a perfect
    model would know: the generator's own, without the noise no feature explains. What a
    model's scores miss of it is that model's error (``bench/gate.py`` simulates with it)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, partition_date.toordinal()]))
    drift = _drift(partition_date)
    weekday = partition_date.weekday()
    n = max(1, round(rows * _WEEKDAY_VOLUME[weekday]))
    seconds = _seconds_of_day(rng, n)
    columns = _sessions(rng, n, drift)
    truth = _known_logit(columns, drift, seconds // 3600, weekday)
    columns.update(_outcomes(rng, columns, truth))
    # Sensors and trackers drop values: session length and discount are sometimes missing.
    columns["session_seconds"][rng.random(n) < 0.03] = np.nan
    columns["discount_pct"][rng.random(n) < 0.08] = np.nan
    midnight = pd.Timestamp(partition_date, tz="UTC")
    frame = pd.DataFrame(
        {
            "session_id": partition_date.toordinal() * 10_000_000 + np.arange(n, dtype=np.int64),
            "event_time": midnight + pd.to_timedelta(seconds, unit="s"),
            "channel": columns["channel"],
            "country": columns["country"],
            "device": columns["device"],
            "page_views": columns["page_views"].astype(np.int64),
            "session_seconds": np.round(columns["session_seconds"], 1),
            "basket_value": columns["basket_value"],
            "items": columns["items"].astype(np.int64),
            "discount_pct": columns["discount_pct"],
            "prior_purchases": columns["prior_purchases"].astype(np.int64),
            "days_since_last_visit": np.round(columns["days_since_last_visit"], 2),
            "converted": columns["converted"],
            "spend_next_30d": columns["spend_next_30d"],
        }
    )
    for column in ("channel", "country", "device"):
        frame[column] = frame[column].astype("string")
    return frame, truth


def _seconds_of_day(rng: np.random.Generator, n: int) -> np.ndarray:
    """Return ``n`` sessions' start times (seconds after midnight, sorted), drawn by hour."""
    hours = rng.choice(24, size=n, p=_HOURLY_TRAFFIC)
    seconds = hours * 3600 + rng.integers(0, 3600, size=n)
    seconds.sort()
    return seconds


def _sessions(rng: np.random.Generator, n: int, drift: dict[str, float]) -> dict[str, Any]:
    """Return the sessions' attributes: where from, on what, and what they did."""
    channel_p = np.array([0.42, 0.2, 0.2, drift["partner_share"], 0.1])
    channel = rng.choice(CHANNELS, size=n, p=channel_p / channel_p.sum())
    country = rng.choice(COUNTRIES, size=n, p=COUNTRY_WEIGHTS)
    app = (channel == "ios") | (channel == "android")
    device = np.where(app, "mobile", rng.choice(DEVICES, size=n, p=[0.55, 0.35, 0.10]))
    page_views = 1 + rng.negative_binomial(2, 0.25, size=n)
    session_seconds = rng.gamma(2.0, 60.0, size=n) * np.sqrt(page_views)
    prior_purchases = rng.poisson(np.where(channel == "email", 3.0, 0.8))
    days_since_last_visit = rng.exponential(14.0, size=n)
    first_visit = (prior_purchases == 0) & (rng.random(n) < 0.6)
    days_since_last_visit[first_visit] = np.nan
    discount_pct = np.clip(rng.normal(10, 7, size=n), 0, 60).round(1)
    basket_value = np.round(rng.lognormal(3.6, 0.8, size=n) * (1 + 0.15 * np.log1p(page_views)), 2)
    items = 1 + rng.poisson(basket_value / 40)
    return {
        "channel": channel,
        "country": country,
        "device": device,
        "page_views": page_views,
        "session_seconds": session_seconds,
        "prior_purchases": prior_purchases,
        "days_since_last_visit": days_since_last_visit,
        "discount_pct": discount_pct,
        "basket_value": basket_value,
        "items": items,
    }


def _known_logit(
    c: dict[str, Any], drift: dict[str, float], hours: np.ndarray, weekday: int
) -> np.ndarray:
    """Return the log-odds of conversion that the sessions' attributes explain."""
    recency = np.where(np.isnan(c["days_since_last_visit"]), 30.0, c["days_since_last_visit"])
    return (
        drift["base"]
        + 0.9 * np.log1p(c["page_views"])
        + drift["discount"] * c["discount_pct"]
        + 0.7 * np.log1p(c["prior_purchases"])
        - drift["recency"] * np.log1p(recency) / 3
        + np.where(c["device"] == "mobile", drift["mobile"], 0.0)
        + np.where(c["channel"] == "partner", drift["partner"], 0.0)
        + np.where(c["channel"] == "email", 0.4, 0.0)
        + np.where(np.isin(c["country"], ["DE", "NL", "SE"]), 0.2, 0.0)
        - np.where(c["country"] == "US", 0.25, 0.0)
        + 0.6 * np.tanh((c["session_seconds"] - 300) / 400)
        - 0.004 * np.maximum(c["basket_value"] - 150, 0) ** 0.8
        + _HOURLY_LIFT[hours]
        + _WEEKDAY_LIFT[weekday]
    )


def _outcomes(rng: np.random.Generator, c: dict[str, Any], known: np.ndarray) -> dict[str, Any]:
    """Return the labels: whether the session converted, and the spend of the next 30 days."""
    n = len(c["channel"])
    logit = known + rng.normal(0, 0.3, size=n)  # what no feature explains
    converted = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    spend = (
        converted * c["basket_value"] * 0.6
        + 9.0 * c["prior_purchases"]
        + 14.0 * np.log1p(c["page_views"])
        + rng.normal(0, 20, size=n)
    )
    return {"converted": converted, "spend_next_30d": np.round(np.maximum(0.0, spend), 2)}
