"""Evaluate: held-out metrics and the curves the report plots, as plain data."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn import metrics as skm


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
        "predicted": predicted[index].round(4).tolist(),
        "residual": (y[index] - predicted[index]).round(4).tolist(),
    }


def evaluate_scores(
    task: str, y: np.ndarray, score: np.ndarray, threshold: float
) -> dict[str, Any]:
    """Return one model's held-out metrics and the curves for its plots."""
    if task == "binary_classification":
        return {
            "metrics": classification_metrics(y, score, threshold),
            "roc": roc_points(y, score),
            "calibration": calibration_bins(y, score),
        }
    return {
        "metrics": regression_metrics(y, score),
        "residuals": residual_sample(y, score),
        "calibration": _value_calibration(y, score),
    }


def _value_calibration(y: np.ndarray, predicted: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Return mean actual vs mean predicted per predicted-value decile (regression)."""
    order = np.argsort(predicted, kind="stable")
    groups = [g for g in np.array_split(order, bins) if len(g)]
    return {
        "predicted": [round(float(predicted[g].mean()), 4) for g in groups],
        "observed": [round(float(y[g].mean()), 4) for g in groups],
        "count": [len(g) for g in groups],
    }


def headline_metric(task: str) -> tuple[str, bool]:
    """Return the metric that ranks models, and whether higher is better."""
    return ("roc_auc", True) if task == "binary_classification" else ("rmse", False)
