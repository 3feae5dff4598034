"""Held-out measurements against scikit-learn and hand-worked references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from nightshift.config.pipeline import CLASSIFICATION
from nightshift.evaluation.comparison import Strata, compare
from nightshift.evaluation.evaluate import (
    WeightedMetric,
    calibration_bins,
    confusion,
    drift,
    evaluate_scores,
    expected_calibration_error,
    psi_categorical,
    psi_numeric,
    segment_metrics,
)

RNG = np.random.default_rng(3)
Y = (RNG.random(3000) < 0.3).astype(float)
GOOD = np.clip(0.3 + 0.4 * (Y - 0.3) + RNG.normal(0, 0.2, 3000), 0.001, 0.999)
WORSE = np.clip(0.3 + 0.1 * (Y - 0.3) + RNG.normal(0, 0.2, 3000), 0.001, 0.999)


@pytest.mark.parametrize(
    ("metric", "reference"),
    [
        ("roc_auc", lambda y, s, w: skm.roc_auc_score(y, s, sample_weight=w)),
        # nightshift's log loss clips scores at 1e-7 (the headline metric does too), scikit-
        # learn's at float64 eps: the same clip first, so only the weighting is compared.
        (
            "log_loss",
            lambda y, s, w: skm.log_loss(y, np.clip(s, 1e-7, 1 - 1e-7), sample_weight=w),
        ),
        ("accuracy", lambda y, s, w: skm.accuracy_score(y, s >= 0.5, sample_weight=w)),
        ("f1", lambda y, s, w: skm.f1_score(y, s >= 0.5, sample_weight=w)),
        ("rmse", lambda y, s, w: np.sqrt(skm.mean_squared_error(y, s, sample_weight=w))),
        ("mae", lambda y, s, w: skm.mean_absolute_error(y, s, sample_weight=w)),
        ("r2", lambda y, s, w: skm.r2_score(y, s, sample_weight=w)),
    ],
)
def test_weighted_metrics_match_scikit_learn(metric, reference) -> None:
    # Rounded scores make ties, which the fast AUC must count as halves like scikit-learn.
    # (Rounding also makes scores of exactly 0 and 1, where the log loss clip matters.) The
    # weights come from the test's own generator, so they do not depend on test order.
    score = np.round(GOOD, 2)
    weights = np.random.default_rng(8).poisson(1.0, len(Y)).astype(float)
    value = WeightedMetric(metric, Y, score, 0.5)(weights)
    assert value == pytest.approx(reference(Y, score, weights), rel=1e-7, abs=1e-12)


def test_bootstrap_interval_brackets_a_real_difference_and_is_reproducible() -> None:
    first = compare(CLASSIFICATION, "roc_auc", Y, (GOOD, WORSE), 0.5, None, 200, 0.95, seed=1)
    again = compare(CLASSIFICATION, "roc_auc", Y, (GOOD, WORSE), 0.5, None, 200, 0.95, seed=1)
    assert first == again
    exact = skm.roc_auc_score(Y, GOOD) - skm.roc_auc_score(Y, WORSE)
    head = first.headline
    assert head.value == pytest.approx(exact, abs=1e-6)
    assert head.low is not None and head.high is not None and head.se is not None
    assert 0 < head.low < exact < head.high and head.rows == 3000 and not head.undefined
    same = compare(CLASSIFICATION, "roc_auc", Y, (GOOD, GOOD), 0.5, None, 50, 0.95, seed=1)
    assert same.headline.value == 0 and same.headline.low == same.headline.high == 0


def test_the_bootstrap_keeps_every_segments_rows_in_every_resample() -> None:
    segments = np.array(["a"] * 2000 + ["b"] * 900 + [None] * 100, dtype=object)
    strata = Strata.of(segments, len(segments))
    assert strata.names == ["(missing)", "a", "b"]
    rng = np.random.default_rng(0)
    for _ in range(20):
        weights = strata.resample(rng)
        assert [weights[rows].sum() for rows in strata.rows] == [100, 2000, 900]
    both = compare(CLASSIFICATION, "roc_auc", Y, (GOOD, WORSE), 0.5, segments, 100, 0.9)
    assert set(both.segments) == {"(missing)", "a", "b"}
    assert both.segments["b"].rows == 900 and both.calibration is not None
    exact = skm.roc_auc_score(Y[2000:2900], GOOD[2000:2900])
    assert both.segments["b"].value == pytest.approx(
        exact - skm.roc_auc_score(Y[2000:2900], WORSE[2000:2900]), abs=1e-6
    )


def test_the_weighted_calibration_error_is_the_reports() -> None:
    # Unweighted, it is the report's expected calibration error (its bins rounded to 5 places).
    reported = expected_calibration_error(calibration_bins(Y, GOOD))
    weighted = WeightedMetric("calibration_error", Y, GOOD, 0.5)(np.ones(len(Y)))
    assert weighted == pytest.approx(reported, abs=1e-5)


def test_confusion_and_calibration_error_on_known_inputs() -> None:
    y = np.array([0, 0, 1, 1, 1.0])
    score = np.array([0.1, 0.6, 0.4, 0.7, 0.9])
    assert confusion(y, score, 0.5) == {"tn": 1, "fp": 1, "fn": 1, "tp": 2}
    calibration = {"predicted": [0.1, 0.9], "observed": [0.0, 0.5], "count": [3, 1]}
    assert expected_calibration_error(calibration) == pytest.approx((3 * 0.1 + 0.4) / 4)
    scored = evaluate_scores("binary_classification", Y, GOOD, 0.5)
    assert set(scored) >= {"metrics", "roc", "pr", "confusion", "calibration"}
    assert scored["pr"]["average_precision"] == pytest.approx(skm.average_precision_score(Y, GOOD))
    assert 0 <= scored["metrics"]["calibration_error"] < 0.2


def test_segment_metrics_per_value() -> None:
    segments = np.array(["web", "ios"] * 1500, dtype=object)
    segments[:10] = None
    result = segment_metrics("binary_classification", Y, GOOD, segments, 0.5)
    assert set(result) == {"web", "ios", "(missing)"}
    web = segments == "web"
    assert result["web"]["rows"] == int(web.sum())
    assert result["web"]["roc_auc"] == pytest.approx(skm.roc_auc_score(Y[web], GOOD[web]))


def test_psi_is_zero_for_the_same_distribution_and_flags_a_shift() -> None:
    base = RNG.normal(0, 1, 20000)
    assert psi_numeric(base, base)["psi"] == pytest.approx(0, abs=1e-9)
    assert psi_numeric(base, RNG.normal(0, 1, 20000))["psi"] < 0.01
    assert psi_numeric(base, RNG.normal(1, 1, 20000))["psi"] > 0.25
    with_missing = base.copy()
    with_missing[:5000] = np.nan
    assert psi_numeric(base, with_missing)["psi"] > 0.1  # missing values are their own bin
    same = np.array(["a", "b"] * 100, dtype=object)
    assert psi_categorical(same, same)["psi"] == pytest.approx(0, abs=1e-9)
    shifted = np.array(["a"] * 190 + ["c"] * 10, dtype=object)
    assert psi_categorical(same, shifted)["psi"] > 0.25

    window = pd.DataFrame({"x": base, "c": np.array(["a", "b"] * 10000, dtype=object)})
    today = pd.DataFrame({"x": base + 2, "c": np.array(["a", "b"] * 10000, dtype=object)})
    result = drift(window, today, ["x"], ["c"], threshold=0.2)
    assert result["x"]["drifted"] and not result["c"]["drifted"]


@pytest.mark.parametrize("ties", [False, True])
def test_the_one_sort_curve_gives_scikit_learn_s_numbers(ties: bool) -> None:
    from nightshift.evaluation.evaluate import BinaryCurve, classification_metrics, log_loss

    rng = np.random.default_rng(3)
    y = (rng.random(20_000) < 0.3).astype("float64")
    score = np.clip(0.3 + 0.25 * (y - 0.3) + rng.normal(scale=0.2, size=y.size), 0, 1)
    if ties:
        score = score.round(2)  # many rows share a score
    curve = BinaryCurve.of(y, score)
    assert curve is not None
    assert curve.auc() == pytest.approx(skm.roc_auc_score(y, score), abs=1e-12)
    assert curve.average_precision() == pytest.approx(
        skm.average_precision_score(y, score), abs=1e-12
    )
    precision, recall, _ = skm.precision_recall_curve(y, score)
    np.testing.assert_allclose(curve.precision_recall(), (precision, recall))
    fpr, tpr, _ = skm.roc_curve(y, score, drop_intermediate=False)
    np.testing.assert_allclose(curve.roc(), (fpr, tpr))
    assert log_loss(y, score) == pytest.approx(
        skm.log_loss(y, np.clip(score, 1e-7, 1 - 1e-7)), abs=1e-12
    )
    got = classification_metrics(y, score, 0.4)
    predicted = score >= 0.4
    assert got["f1"] == pytest.approx(skm.f1_score(y, predicted))
    assert got["precision"] == pytest.approx(skm.precision_score(y, predicted))
    assert got["recall"] == pytest.approx(skm.recall_score(y, predicted))
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted))


def test_one_class_has_no_curve_and_nan_scores_are_refused() -> None:
    from nightshift.evaluation.evaluate import BinaryCurve, classification_metrics

    assert BinaryCurve.of(np.ones(5), np.linspace(0, 1, 5)) is None
    assert classification_metrics(np.zeros(3), np.array([0.1, 0.2, 0.3]), 0.5)["roc_auc"] is None
    with pytest.raises(ValueError, match="NaN"):
        classification_metrics(np.array([0.0, 1.0]), np.array([0.1, np.nan]), 0.5)
