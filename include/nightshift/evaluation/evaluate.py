"""Evaluate: held-out metrics and the curves the report plots, as plain data."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn import metrics as skm

from nightshift.config.pipeline import CLASSIFICATION


def _clean(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass(frozen=True)
class BinaryCurve:
    """Positives and negatives scored at or above each distinct score, highest score first:
    the ROC curve, the precision-recall curve and both areas, from one sort of the scores.

    scikit-learn sorts the scores again for each of ``roc_auc_score``, ``roc_curve``,
    ``precision_recall_curve`` and ``average_precision_score``, and checks the labels with a
    sort each time: a third of ``evaluate`` on a million-row day. The same arithmetic (its
    ``_binary_clf_curve``, the trapezoid area, the step-wise average precision) on one sort
    gives the same numbers.
    """

    tps: np.ndarray
    fps: np.ndarray

    @classmethod
    def of(cls, y: np.ndarray, score: np.ndarray) -> BinaryCurve | None:
        """Return the curve, or None when ``y`` holds one class only (no curve exists)."""
        order = np.argsort(score, kind="mergesort")[::-1]
        ranked, hits = score[order], np.asarray(y, dtype="float64")[order]
        last = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
        tps = np.cumsum(hits)[last] if len(ranked) else np.array([])
        fps = (last + 1) - tps
        if not len(tps) or tps[-1] == 0 or fps[-1] == 0:
            return None
        return cls(tps, fps)

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        """Return false and true positive rates, from (0, 0) up, every threshold kept."""
        return np.r_[0.0, self.fps / self.fps[-1]], np.r_[0.0, self.tps / self.tps[-1]]

    def auc(self) -> float:
        """Return the area under the ROC curve (ties count a half)."""
        fpr, tpr = self.roc()
        return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # the trapezoid rule

    def precision_recall(self) -> tuple[np.ndarray, np.ndarray]:
        """Return precision and recall as ``precision_recall_curve`` does: recall falling to
        the point (recall 0, precision 1), from the first threshold with full recall."""
        full = int(self.tps.searchsorted(self.tps[-1]))
        precision = self.tps / (self.tps + self.fps)
        recall = self.tps / self.tps[-1]
        return np.r_[precision[full::-1], 1.0], np.r_[recall[full::-1], 0.0]

    def average_precision(self) -> float:
        """Return the step-wise area under the precision-recall curve."""
        precision, recall = self.precision_recall()
        return float(-np.sum(np.diff(recall) * precision[:-1]))


def classification_metrics(
    y: np.ndarray,
    score: np.ndarray,
    threshold: float,
    curve: BinaryCurve | None = None,
    counts: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Return ROC AUC, log loss and accuracy / F1 / precision / recall at ``threshold``.

    ``curve`` and ``counts``: the scores' :class:`BinaryCurve` and :func:`confusion`, when the
    caller already has them.
    """
    if not np.isfinite(score).all():
        raise ValueError("the model's scores contain NaN or infinity: no metric is defined")
    curve = curve or BinaryCurve.of(y, score)
    counts = counts or confusion(y, score, threshold)
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    return {
        "roc_auc": _clean(curve.auc()) if curve else None,
        "log_loss": _clean(log_loss(y, score)),
        "threshold": threshold,
        "accuracy": (tp + counts["tn"]) / len(y) if len(y) else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
        "precision": tp / (tp + fp) if tp else 0.0,
        "recall": tp / (tp + fn) if tp else 0.0,
        "positive_rate": float(np.mean(y)),
    }


def log_loss(y: np.ndarray, score: np.ndarray) -> float:
    """Return the mean log loss, probabilities clipped to [1e-7, 1 - 1e-7]."""
    p = np.clip(score, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def regression_metrics(y: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """Return RMSE, MAE and R² of ``predicted`` against ``y``."""
    return {
        "rmse": float(np.sqrt(skm.mean_squared_error(y, predicted))),
        "mae": float(skm.mean_absolute_error(y, predicted)),
        "r2": _clean(skm.r2_score(y, predicted)) if len(y) > 1 else None,
    }


def roc_points(
    y: np.ndarray, score: np.ndarray, limit: int = 200, curve: BinaryCurve | None = None
) -> dict[str, list[float]]:
    """Return at most ``limit`` points of the ROC curve."""
    curve = curve or BinaryCurve.of(y, score)
    if curve is None:
        return {"fpr": [], "tpr": []}
    fpr, tpr = curve.roc()
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(limit, len(fpr))).astype(int))
    return {"fpr": fpr[keep].round(5).tolist(), "tpr": tpr[keep].round(5).tolist()}


CALIBRATION_BINS = 10


def score_bins(score: np.ndarray, bins: int = CALIBRATION_BINS) -> np.ndarray:
    """Return each score's equal-width bin over [0, 1], the calibration's bins."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.clip(np.digitize(score, edges[1:-1]), 0, bins - 1)


def calibration_bins(
    y: np.ndarray, score: np.ndarray, bins: int = CALIBRATION_BINS
) -> dict[str, list[Any]]:
    """Return mean predicted vs observed rate in equal-width score bins (empty bins dropped)."""
    which = score_bins(score, bins)
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


def pr_points(
    y: np.ndarray, score: np.ndarray, limit: int = 200, curve: BinaryCurve | None = None
) -> dict[str, Any]:
    """Return at most ``limit`` points of the precision-recall curve and average precision."""
    curve = curve or BinaryCurve.of(y, score)
    if curve is None:
        return {"precision": [], "recall": [], "average_precision": None}
    precision, recall = curve.precision_recall()
    keep = np.unique(np.linspace(0, len(recall) - 1, min(limit, len(recall))).astype(int))
    return {
        "precision": precision[keep].round(5).tolist(),
        "recall": recall[keep].round(5).tolist(),
        "average_precision": _clean(curve.average_precision()),
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
        curve, counts = BinaryCurve.of(y, score), confusion(y, score, threshold)
        metrics = classification_metrics(y, score, threshold, curve, counts)
        metrics["calibration_error"] = expected_calibration_error(calibration)
        return {
            "metrics": metrics,
            "roc": roc_points(y, score, curve=curve),
            "pr": pr_points(y, score, curve=curve),
            "confusion": counts,
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
        if metric == "calibration_error":  # the bins of ``calibration_bins``
            self.inverse = score_bins(self.score)
        self.predicted = (self.score >= threshold).astype("float64")

    def __call__(self, w: np.ndarray) -> float:
        """Return the metric on the rows weighted by ``w`` (a bootstrap resample)."""
        y, score, total = self.y, self.score, w.sum()
        if total <= 0:
            return float("nan")
        if self.metric == "roc_auc":
            return _weighted_auc(self.order, self.inverse, y, w)
        if self.metric == "calibration_error":  # the count-weighted gap of each score bin
            predicted = np.bincount(self.inverse, weights=w * score, minlength=CALIBRATION_BINS)
            observed = np.bincount(self.inverse, weights=w * y, minlength=CALIBRATION_BINS)
            return float(np.sum(np.abs(predicted - observed)) / total)
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


def segment_codes(segments: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Return a segment column's names (sorted; missing is "(missing)") and each row's
    index into them, in one pass over the rows."""
    values = np.asarray(segments, dtype=object)
    values = np.where(values == None, "(missing)", values).astype(str)  # noqa: E711 - elementwise
    names, which = np.unique(values, return_inverse=True)
    return names.tolist(), which


def segment_metrics(
    task: str,
    y: np.ndarray,
    score: np.ndarray,
    segments: np.ndarray,
    threshold: float,
) -> dict[str, dict[str, Any]]:
    """Return rows and the headline metrics per value of a categorical column."""
    names, which = segment_codes(segments)
    result: dict[str, dict[str, Any]] = {}
    for index, value in enumerate(names):
        mask = which == index
        ys, scores = y[mask], score[mask]
        if task == CLASSIFICATION:
            every = classification_metrics(ys, scores, threshold)
            metrics: dict[str, Any] = {
                k: every[k] for k in ("roc_auc", "log_loss", "accuracy", "f1", "positive_rate")
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
