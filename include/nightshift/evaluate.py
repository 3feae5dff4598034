"""Evaluate: held-out metrics and the curves the report plots, as plain data."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn import metrics as skm

from nightshift.config import CLASSIFICATION


def _clean(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def classification_metrics(y: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, Any]:
    """Return ROC AUC, log loss and accuracy / F1 / precision / recall at ``threshold``."""
    predicted = (score >= threshold).astype(int)
    both_classes = len(np.unique(y)) == 2
    return {
        "roc_auc": _clean(skm.roc_auc_score(y, score)) if both_classes else None,
        "log_loss": _clean(skm.log_loss(y, np.clip(score, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "threshold": threshold,
        "accuracy": float(skm.accuracy_score(y, predicted)),
        "f1": float(skm.f1_score(y, predicted, zero_division=0)),
        "precision": float(skm.precision_score(y, predicted, zero_division=0)),
        "recall": float(skm.recall_score(y, predicted, zero_division=0)),
        "positive_rate": float(np.mean(y)),
    }


def regression_metrics(y: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """Return RMSE, MAE and R² of ``predicted`` against ``y``."""
    return {
        "rmse": float(np.sqrt(skm.mean_squared_error(y, predicted))),
        "mae": float(skm.mean_absolute_error(y, predicted)),
        "r2": _clean(skm.r2_score(y, predicted)) if len(y) > 1 else None,
    }


def roc_points(y: np.ndarray, score: np.ndarray, limit: int = 200) -> dict[str, list[float]]:
    """Return at most ``limit`` points of the ROC curve."""
    if len(np.unique(y)) < 2:
        return {"fpr": [], "tpr": []}
    fpr, tpr, _ = skm.roc_curve(y, score)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(limit, len(fpr))).astype(int))
    return {"fpr": fpr[keep].round(5).tolist(), "tpr": tpr[keep].round(5).tolist()}


def calibration_bins(y: np.ndarray, score: np.ndarray, bins: int = 10) -> dict[str, list[Any]]:
    """Return mean predicted vs observed rate in equal-width score bins (empty bins dropped)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(score, edges[1:-1]), 0, bins - 1)
    predicted, observed, counts = [], [], []
    for index in range(bins):
        mask = which == index
        if mask.any():
            predicted.append(round(float(score[mask].mean()), 5))
            observed.append(round(float(y[mask].mean()), 5))
            counts.append(int(mask.sum()))
    return {"predicted": predicted, "observed": observed, "count": counts}


def residual_sample(
    y: np.ndarray, predicted: np.ndarray, limit: int = 2000, seed: int = 0
) -> dict[str, list[float]]:
    """Return a fixed random sample of (predicted, residual) pairs for the residual plot."""
    rng = np.random.default_rng(seed)
    index = rng.choice(len(y), size=min(limit, len(y)), replace=False)
    index.sort()
    return {
        "actual": y[index].round(4).tolist(),
        "predicted": predicted[index].round(4).tolist(),
        "residual": (y[index] - predicted[index]).round(4).tolist(),
    }


def pr_points(y: np.ndarray, score: np.ndarray, limit: int = 200) -> dict[str, Any]:
    """Return at most ``limit`` points of the precision-recall curve and average precision."""
    if len(np.unique(y)) < 2:
        return {"precision": [], "recall": [], "average_precision": None}
    precision, recall, _ = skm.precision_recall_curve(y, score)
    keep = np.unique(np.linspace(0, len(recall) - 1, min(limit, len(recall))).astype(int))
    return {
        "precision": precision[keep].round(5).tolist(),
        "recall": recall[keep].round(5).tolist(),
        "average_precision": _clean(skm.average_precision_score(y, score)),
    }


def confusion(y: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, int]:
    """Return the confusion matrix counts at ``threshold``."""
    predicted = (score >= threshold).astype(int)
    actual = y.astype(int)
    return {
        "tn": int(np.sum((actual == 0) & (predicted == 0))),
        "fp": int(np.sum((actual == 0) & (predicted == 1))),
        "fn": int(np.sum((actual == 1) & (predicted == 0))),
        "tp": int(np.sum((actual == 1) & (predicted == 1))),
    }


def expected_calibration_error(calibration: dict[str, list[Any]]) -> float | None:
    """Return the count-weighted mean gap between predicted and observed rate per bin."""
    counts = np.asarray(calibration["count"], dtype="float64")
    if not counts.sum():
        return None
    gaps = np.abs(np.asarray(calibration["predicted"]) - np.asarray(calibration["observed"]))
    return round(float(np.sum(counts * gaps) / counts.sum()), 6)


def evaluate_scores(
    task: str, y: np.ndarray, score: np.ndarray, threshold: float
) -> dict[str, Any]:
    """Return one model's held-out metrics and the curves for its plots."""
    if task == CLASSIFICATION:
        calibration = calibration_bins(y, score)
        metrics = classification_metrics(y, score, threshold)
        metrics["calibration_error"] = expected_calibration_error(calibration)
        return {
            "metrics": metrics,
            "roc": roc_points(y, score),
            "pr": pr_points(y, score),
            "confusion": confusion(y, score, threshold),
            "calibration": calibration,
        }
    return {
        "metrics": regression_metrics(y, score),
        "residuals": residual_sample(y, score),
        "calibration": _value_calibration(y, score),
    }


# -- weighted metrics: one pass per bootstrap replicate, no resampled copies ------------------


def _weighted_auc(order: np.ndarray, inverse: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """Return ROC AUC with row weights ``w``; ties count a half, as in scikit-learn."""
    groups = int(inverse.max()) + 1
    positive = np.bincount(inverse, weights=w * y, minlength=groups)
    negative = np.bincount(inverse, weights=w * (1 - y), minlength=groups)
    total_pos, total_neg = positive.sum(), negative.sum()
    if total_pos <= 0 or total_neg <= 0:
        return float("nan")
    negatives_below = np.cumsum(negative) - negative
    wins = np.sum(positive * (negatives_below + 0.5 * negative))
    return float(wins / (total_pos * total_neg))


class WeightedMetric:
    """One metric of fixed labels and scores, evaluated quickly under many row weightings."""

    def __init__(self, metric: str, y: np.ndarray, score: np.ndarray, threshold: float) -> None:
        self.metric = metric
        self.y = np.asarray(y, dtype="float64")
        self.score = np.asarray(score, dtype="float64")
        self.threshold = threshold
        if metric == "roc_auc":
            unique, self.inverse = np.unique(self.score, return_inverse=True)
            self.order = unique
        self.predicted = (self.score >= threshold).astype("float64")

    def __call__(self, w: np.ndarray) -> float:
        """Return the metric on the rows weighted by ``w`` (a bootstrap resample)."""
        y, score, total = self.y, self.score, w.sum()
        if total <= 0:
            return float("nan")
        if self.metric == "roc_auc":
            return _weighted_auc(self.order, self.inverse, y, w)
        if self.metric == "log_loss":
            p = np.clip(score, 1e-7, 1 - 1e-7)
            return float(-np.sum(w * (y * np.log(p) + (1 - y) * np.log(1 - p))) / total)
        if self.metric == "accuracy":
            return float(np.sum(w * (self.predicted == y)) / total)
        if self.metric == "f1":
            tp = np.sum(w * self.predicted * y)
            fp = np.sum(w * self.predicted * (1 - y))
            fn = np.sum(w * (1 - self.predicted) * y)
            return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0
        if self.metric == "rmse":
            return float(np.sqrt(np.sum(w * (y - score) ** 2) / total))
        if self.metric == "mae":
            return float(np.sum(w * np.abs(y - score)) / total)
        if self.metric == "r2":
            mean = np.sum(w * y) / total
            denominator = np.sum(w * (y - mean) ** 2)
            return float(1 - np.sum(w * (y - score) ** 2) / denominator) if denominator else 0.0
        raise ValueError(f"no weighted form of metric {self.metric!r}")


def bootstrap_delta(
    metric: str,
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    threshold: float,
    samples: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Return challenger minus champion on ``metric`` with a paired bootstrap confidence interval.

    Both models are scored on the same resampled rows in every replicate (Poisson weights), so
    the interval reflects the difference between them, not the noise of the day's data.
    """
    ones = np.ones(len(y))
    new = WeightedMetric(metric, y, challenger, threshold)
    old = WeightedMetric(metric, y, champion, threshold)
    delta = new(ones) - old(ones)
    result: dict[str, Any] = {"metric": metric, "delta": _clean(delta), "samples": samples}
    if samples < 2 or len(y) < 2:
        return {**result, "low": None, "high": None}
    rng = np.random.default_rng(seed)
    replicates = np.empty(samples)
    for index in range(samples):
        w = rng.poisson(1.0, size=len(y)).astype("float64")
        replicates[index] = new(w) - old(w)
    replicates = replicates[np.isfinite(replicates)]
    if not len(replicates):
        return {**result, "low": None, "high": None}
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return {**result, "low": round(float(low), 6), "high": round(float(high), 6), "level": level}


def segment_metrics(
    task: str,
    y: np.ndarray,
    score: np.ndarray,
    segments: np.ndarray,
    threshold: float,
) -> dict[str, dict[str, Any]]:
    """Return rows and the headline metrics per value of a categorical column."""
    values = np.asarray(segments, dtype=object)
    values = np.where(values == None, "(missing)", values).astype(str)  # noqa: E711 - elementwise
    # One pass over the rows for every segment: np.unique sorts the names and numbers each row.
    names, which = np.unique(values, return_inverse=True)
    result: dict[str, dict[str, Any]] = {}
    for index, value in enumerate(names.tolist()):
        mask = which == index
        ys, scores = y[mask], score[mask]
        if task == CLASSIFICATION:
            metrics: dict[str, Any] = {
                "roc_auc": _clean(skm.roc_auc_score(ys, scores))
                if len(np.unique(ys)) == 2
                else None,
                "log_loss": _clean(
                    skm.log_loss(ys, np.clip(scores, 1e-7, 1 - 1e-7), labels=[0, 1])
                ),
                "accuracy": float(np.mean((scores >= threshold) == ys)),
                "f1": float(skm.f1_score(ys, scores >= threshold, zero_division=0)),
                "positive_rate": float(np.mean(ys)),
            }
        else:
            metrics = regression_metrics(ys, scores)
        result[value] = {"rows": len(ys), **metrics}
    return result


# -- drift ------------------------------------------------------------------------------------

_EPS = 1e-4


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    expected = np.clip(expected, _EPS, None)
    actual = np.clip(actual, _EPS, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def psi_numeric(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Return the population stability index of ``current`` against ``reference``.

    Bins are the reference's deciles; missing values are a bin of their own.
    """
    reference = np.asarray(reference, dtype="float64")
    current = np.asarray(current, dtype="float64")
    present = reference[np.isfinite(reference)]
    if not len(present):
        return {"psi": None, "kind": "numeric"}
    edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]))

    def shares(values: np.ndarray) -> np.ndarray:
        missing = ~np.isfinite(values)
        which = np.searchsorted(edges, values[~missing], side="right")
        counts = np.bincount(which, minlength=len(edges) + 1).astype("float64")
        counts = np.append(counts, missing.sum())
        return counts / max(len(values), 1)

    return {"psi": round(_psi(shares(reference), shares(current)), 6), "kind": "numeric"}


def psi_categorical(reference: np.ndarray, current: np.ndarray) -> dict[str, Any]:
    """Return the population stability index of category shares (missing is a category)."""
    ref = pd_categories(reference)
    cur = pd_categories(current)
    categories = sorted(set(ref) | set(cur))
    expected = np.array([ref.get(c, 0.0) for c in categories])
    actual = np.array([cur.get(c, 0.0) for c in categories])
    return {"psi": round(_psi(expected, actual), 6), "kind": "categorical"}


def pd_categories(values: np.ndarray) -> dict[str, float]:
    """Return each category's share of ``values``; missing counts as '(missing)'."""
    import pandas as pd

    series = pd.Series(values, dtype="object").fillna("(missing)").astype(str)
    return {str(k): float(v) for k, v in series.value_counts(normalize=True).items()}


def drift(
    reference: Any, current: Any, numeric: list[str], categorical: list[str], threshold: float
) -> dict[str, dict[str, Any]]:
    """Return PSI per feature of ``current`` (today) against ``reference`` (the window)."""
    result: dict[str, dict[str, Any]] = {}
    for name in numeric:
        result[name] = psi_numeric(reference[name].to_numpy(), current[name].to_numpy())
    for name in categorical:
        result[name] = psi_categorical(
            reference[name].to_numpy(dtype=object), current[name].to_numpy(dtype=object)
        )
    for entry in result.values():
        entry["drifted"] = entry["psi"] is not None and entry["psi"] > threshold
    return result


def _value_calibration(y: np.ndarray, predicted: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Return mean actual vs mean predicted per predicted-value decile (regression)."""
    order = np.argsort(predicted, kind="stable")
    groups = [g for g in np.array_split(order, bins) if len(g)]
    return {
        "predicted": [round(float(predicted[g].mean()), 4) for g in groups],
        "observed": [round(float(y[g].mean()), 4) for g in groups],
        "count": [len(g) for g in groups],
    }
