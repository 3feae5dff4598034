"""Tonight's model against its champion: the difference on the held-out day overall, per
segment and in calibration, from one stratified paired bootstrap (a ``Comparison``).

Every replicate resamples each segment's rows with replacement to the segment's own count
(stratified: a segment never vanishes from a replicate, nor doubles) and scores both models
on the same resampled rows (paired: the interval is of the difference between the models,
not of the day's noise they share). The headline, the segments and calibration all come
from the same replicates, so every check of the gate stands on the same evidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from nightshift.config.pipeline import CLASSIFICATION
from nightshift.config.records import Comparison, Estimate
from nightshift.evaluation.evaluate import WeightedMetric, segment_codes

CALIBRATION = "calibration_error"


@dataclass(frozen=True)
class Strata:
    """The held-out rows by segment (one stratum when the pipeline has no segment)."""

    names: list[str]
    rows: list[np.ndarray]
    size: int

    @classmethod
    def of(cls, segments: np.ndarray | None, size: int) -> Strata:
        """Return the strata of ``size`` rows whose segment values are ``segments``."""
        if segments is None:
            return cls([], [np.arange(size)], size)
        names, which = segment_codes(segments)
        order = np.argsort(which, kind="stable")
        bounds = np.searchsorted(which[order], np.arange(len(names) + 1))
        rows = [order[bounds[i] : bounds[i + 1]] for i in range(len(names))]
        return cls(names, rows, size)

    def resample(self, rng: np.random.Generator) -> np.ndarray:
        """Return one replicate's row weights: each stratum drawn to its own row count."""
        weights = np.empty(self.size)
        for rows in self.rows:
            count = len(rows)
            weights[rows] = np.bincount(rng.integers(0, count, count), minlength=count)
        return weights


@dataclass(frozen=True)
class _Scope:
    """One measure on some of the rows (None: all), for the challenger and the champion."""

    rows: np.ndarray | None
    new: WeightedMetric
    old: WeightedMetric

    @classmethod
    def of(
        cls,
        measure: str,
        rows: np.ndarray | None,
        y: np.ndarray,
        scores: tuple[np.ndarray, np.ndarray],
        threshold: float,
    ) -> _Scope:
        """Return ``measure`` of both ``scores`` (challenger, champion) on ``rows``."""
        pick = slice(None) if rows is None else rows
        new, old = (WeightedMetric(measure, y[pick], s[pick], threshold) for s in scores)
        return cls(rows, new, old)

    def values(self, weights: np.ndarray) -> tuple[float, float]:
        """Return the challenger's and the champion's value on the rows weighted so."""
        part = weights if self.rows is None else weights[self.rows]
        return self.new(part), self.old(part)


def compare(
    task: str,
    metric: str,
    y: np.ndarray,
    scores: tuple[np.ndarray, np.ndarray],
    threshold: float,
    segments: np.ndarray | None,
    samples: int,
    confidence: float,
    seed: int = 0,
) -> Comparison:
    """Return challenger (``scores[0]``) minus champion (``scores[1]``) on ``metric``
    overall and per segment, and in calibration error (classification), with one-sided
    bounds at ``confidence`` from ``samples`` stratified paired bootstrap replicates."""
    y = np.asarray(y, dtype="float64")
    scores = (np.asarray(scores[0], dtype="float64"), np.asarray(scores[1], dtype="float64"))
    strata = Strata.of(segments, len(y))
    scopes = {"headline": _Scope.of(metric, None, y, scores, threshold)}
    for name, rows in zip(strata.names, strata.rows, strict=False):  # none without segments
        scopes[f"segment:{name}"] = _Scope.of(metric, rows, y, scores, threshold)
    if task == CLASSIFICATION:
        scopes["calibration"] = _Scope.of(CALIBRATION, None, y, scores, threshold)
    day = {key: scope.values(np.ones(len(y))) for key, scope in scopes.items()}
    replicates = {key: np.empty((max(samples, 0), 2)) for key in scopes}
    rng = np.random.default_rng(seed)
    for index in range(max(samples, 0)):
        weights = strata.resample(rng)
        for key, scope in scopes.items():
            replicates[key][index] = scope.values(weights)

    def estimate(key: str, own: bool = False) -> Estimate:
        scope = scopes[key]
        rows = len(y) if scope.rows is None else len(scope.rows)
        new, old = day[key]
        value = new if own else new - old
        spread = replicates[key][:, 0] if own else replicates[key][:, 0] - replicates[key][:, 1]
        return bootstrap_estimate(value, spread, confidence, rows)

    return Comparison(
        metric,
        samples,
        confidence,
        estimate("headline"),
        {name: estimate(f"segment:{name}") for name in strata.names},
        estimate("calibration") if "calibration" in scopes else None,
        estimate("calibration", own=True) if "calibration" in scopes else None,
    )


def bootstrap_estimate(
    value: float, replicates: np.ndarray, confidence: float, rows: int
) -> Estimate:
    """Return ``value`` with its one-sided bounds at ``confidence``: the value less and plus
    the normal quantile times the replicates' standard deviation (the bootstrap's standard
    error), and how many replicates were undefined.

    The standard error, not the replicates' percentiles: from 200 replicates a 5% tail is
    its 10th value, and that noise alone made the gate promote 6-7.5% of truly equal nights
    at a nominal 5% (``bench/gate.py``); the standard error is steady, and the difference of
    two AUCs is close to normal at the sizes the gate judges.
    """
    day = float(value) if math.isfinite(value) else None
    finite = replicates[np.isfinite(replicates)]
    undefined = len(replicates) - len(finite)
    if day is None or len(finite) < 2:
        return Estimate(day, rows=rows, undefined=undefined)
    se = float(np.std(finite, ddof=1))
    reach = NormalDist().inv_cdf(confidence) * se
    return Estimate(
        round(day, 6), round(day - reach, 6), round(day + reach, 6), round(se, 6), rows, undefined
    )
