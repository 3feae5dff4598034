"""The champion gate: margin, guardrails, first model, backfill order and the off switch."""

from __future__ import annotations

import datetime as dt

import pytest

from nightshift.config.pipeline import Evaluation
from nightshift.config.records import (
    Challenger,
    ChampionRef,
    ChampionScore,
    Comparison,
    Estimate,
)
from nightshift.evaluation.champion import decide

RULES = Evaluation(margin=0.005, max_calibration_error=0.05, segment="channel")


def _model(auc: float, date: str, ece: float = 0.01, segments: dict | None = None) -> Challenger:
    return Challenger(
        "xgboost",
        dt.date.fromisoformat(date),
        {"roc_auc": auc, "calibration_error": ece, "rmse": auc},
        segments or {"web": {"rows": 5000, "roc_auc": auc}},
    )


def _champion(auc: float, date: str = "2026-06-01", **kwargs) -> ChampionScore:
    scored = _model(auc, date, **kwargs)
    ref = ChampionRef("p.xgboost", 3, "run", "xgboost", dt.date.fromisoformat(date))
    return ChampionScore(ref, scored.metrics, scored.segments)


def test_first_model_is_promoted() -> None:
    decision = decide("xgboost", _model(0.7, "2026-06-02"), None, "roc_auc", RULES)
    assert decision.promoted and decision.reason.startswith("first model")


def test_first_model_promotion_can_be_turned_off() -> None:
    decision = decide("xgboost", _model(0.7, "2026-06-02"), None, "roc_auc", RULES, promote=False)
    assert not decision.promoted and "turned off" in decision.reason


@pytest.mark.parametrize(
    ("metric", "new", "old", "promoted"),
    [
        ("roc_auc", 0.760, 0.750, True),
        ("roc_auc", 0.754, 0.750, False),  # better, but not by the margin
        ("roc_auc", 0.750, 0.750, False),
        ("roc_auc", 0.740, 0.750, False),
        ("rmse", 9.0, 10.0, True),  # lower is better
        ("rmse", 11.0, 10.0, False),
    ],
)
def test_challenger_must_beat_the_champion_by_the_margin(
    metric: str, new: float, old: float, promoted: bool
) -> None:
    rules = RULES.model_copy(update={"segment": None})
    decision = decide("m", _model(new, "2026-06-02"), _champion(old), metric, rules)
    assert decision.promoted is promoted
    margin = next(c for c in decision.checks if c.name == "margin")
    assert margin.passed is promoted and "margin 0.0050" in margin.detail
    assert ("beats champion v3" in decision.reason) is promoted


def test_calibration_guardrail_blocks_a_better_but_miscalibrated_model() -> None:
    decision = decide(
        "xgboost", _model(0.80, "2026-06-02", ece=0.09), _champion(0.75), "roc_auc", RULES
    )
    assert not decision.promoted
    assert "calibration error 0.0900 (bound 0.0500)" in decision.reason


def test_segment_guardrail_names_the_segment_that_degrades() -> None:
    segments = {
        "web": {"rows": 5000, "roc_auc": 0.85},
        "partner": {"rows": 900, "roc_auc": 0.60},
        "email": {"rows": 50, "roc_auc": 0.10},  # too few rows to judge
    }
    old_segments = {
        "web": {"rows": 5000, "roc_auc": 0.75},
        "partner": {"rows": 900, "roc_auc": 0.70},
        "email": {"rows": 50, "roc_auc": 0.90},
    }
    decision = decide(
        "xgboost",
        _model(0.80, "2026-06-02", segments=segments),
        _champion(0.75, segments=old_segments),
        "roc_auc",
        RULES,
    )
    assert not decision.promoted
    assert "worst channel segment 'partner': roc_auc drop +0.1000" in decision.reason


def test_a_backfilled_night_never_replaces_a_newer_champion() -> None:
    decision = decide(
        "xgboost", _model(0.99, "2026-06-02"), _champion(0.5, "2026-06-10"), "roc_auc", RULES
    )
    assert not decision.promoted and "a backfilled night never replaces it" in decision.reason


def test_an_unscorable_champion_is_kept_loudly() -> None:
    ref = ChampionRef("p.xgboost", 3, "run", "xgboost", dt.date(2026, 6, 1))
    champion = ChampionScore(ref, unscored="PartitionMissing: gone")
    decision = decide("xgboost", _model(0.9, "2026-06-02"), champion, "roc_auc", RULES)
    assert not decision.promoted and "could not be scored" in decision.reason
    assert "nightshift promote" in decision.reason


def _comparison(low: float, high: float, **segments: Estimate) -> Comparison:
    head = Estimate(round((low + high) / 2, 6), low, high, (high - low) / 3.3, 5000)
    return Comparison("roc_auc", 200, 0.95, head, segments)


def test_earned_promotion_respects_the_off_switch_and_quotes_the_bound() -> None:
    sure = _comparison(0.01, 0.03)
    on = decide("x", _model(0.77, "2026-06-02"), _champion(0.75), "roc_auc", RULES, True, sure)
    assert on.promoted and "gain +0.0200, at least +0.0100 at 95% confidence" in on.reason
    assert on.decided_by == [check.name for check in on.checks]
    off = decide("x", _model(0.77, "2026-06-02"), _champion(0.75), "roc_auc", RULES, False, sure)
    assert not off.promoted and "turned off" in off.reason


def test_a_gain_the_bootstrap_cannot_tell_from_noise_keeps_the_champion() -> None:
    noisy = _comparison(-0.004, 0.044)  # +0.02 on the day, but 0 is well inside
    rules = RULES.model_copy(update={"segment": None})
    kept = decide("x", _model(0.77, "2026-06-02"), _champion(0.75), "roc_auc", rules, True, noisy)
    assert not kept.promoted and kept.decided_by == ["margin"]
    assert "gain +0.0200, at least -0.0040 at 95% confidence, margin 0.0050" in kept.reason
    assert kept.power is not None and kept.power.startswith(
        "At tonight's sizes the gate would prove a gain of 0.048 (5,000 rows)"
    )


@pytest.mark.parametrize(
    ("low", "high", "state"),
    [(-0.08, 0.04, "within bound"), (-0.09, -0.03, "worse"), (-0.02, -0.01, "within bound")],
)
def test_a_segment_is_worse_only_when_its_drop_is_surely_beyond_the_bound(
    low: float, high: float, state: str
) -> None:
    partner = Estimate(round((low + high) / 2, 6), low, high, 0.02, 900)
    segments = {"web": {"rows": 5000, "roc_auc": 0.8}, "partner": {"rows": 900, "roc_auc": 0.7}}
    old = {"web": {"rows": 5000, "roc_auc": 0.77}, "partner": {"rows": 900, "roc_auc": 0.72}}
    sure = _comparison(0.01, 0.03, partner=partner, web=Estimate(0.03, 0.02, 0.04, 0.006, 5000))
    challenger, champion = (
        _model(0.8, "2026-06-02", segments=segments),
        _champion(0.77, segments=old),
    )
    decision = decide("x", challenger, champion, "roc_auc", RULES, True, sure)
    [verdict] = [v for v in decision.segments if v.segment == "partner"]
    assert verdict.state == state and verdict.rows == 900 and verdict.difference == partner
    assert f"at least {-high:+.4f} at 95% confidence" in verdict.why
    assert verdict.detectable == pytest.approx(0.02 + (1.6449 + 1.2816) * 0.02, abs=1e-3)
    assert decision.promoted is (state != "worse")
    if state == "worse":
        assert decision.decided_by == ["segments"]
        assert "worst channel segment 'partner': roc_auc drop" in decision.reason


def test_a_segment_too_small_to_judge_is_shown_not_judged() -> None:
    rare = Estimate(-0.3, None, None, None, 400, undefined=7)
    segments = {"email": {"rows": 400, "roc_auc": 0.5}, "web": {"rows": 150, "roc_auc": 0.1}}
    old = {"email": {"rows": 400, "roc_auc": 0.8}, "web": {"rows": 150, "roc_auc": 0.9}}
    sure = _comparison(0.01, 0.03, email=rare)
    challenger, champion = (
        _model(0.8, "2026-06-02", segments=segments),
        _champion(0.77, segments=old),
    )
    decision = decide("x", challenger, champion, "roc_auc", RULES, True, sure)
    assert decision.promoted, decision.reason
    email, web = decision.segments
    assert email.state == web.state == "not judged"
    assert "undefined in 7 of 200 resamples" in email.why
    assert web.why == "fewer than 200 rows (min_segment_rows)"
    [check] = [c for c in decision.checks if c.name == "segments"]
    assert check.detail == "no channel segment large enough to judge; 2 not judged"


def test_calibration_is_judged_on_the_bootstrap_too() -> None:
    rules = Evaluation(margin=0.005, max_calibration_error=0.05)
    head = Estimate(0.02, 0.01, 0.03, 0.006, 5000)

    def comparison(excess: Estimate, own: Estimate) -> Comparison:
        return Comparison("roc_auc", 200, 0.95, head, {}, excess, own)

    challenger, champion = _model(0.77, "2026-06-02", ece=0.06), _champion(0.75, ece=0.035)
    noise = comparison(Estimate(0.025, -0.01, 0.05), Estimate(0.06, 0.03, 0.09))
    assert decide("x", challenger, champion, "roc_auc", rules, True, noise).promoted
    real = comparison(Estimate(0.025, 0.015, 0.035), Estimate(0.06, 0.055, 0.065))
    kept = decide("x", challenger, champion, "roc_auc", rules, True, real)
    assert not kept.promoted and set(kept.decided_by) == {"calibration", "calibration vs champion"}
    assert "at least +0.0150 at 95% confidence (may be worse by at most 0.0100)" in kept.reason


def test_on_drifting_data_a_better_calibrated_challenger_is_promoted() -> None:
    # The day's base rate moved: both models are far off, the challenger less so, and better
    # on the metric. An absolute bound alone would keep the first champion for ever.
    rules = Evaluation(margin=0.005)
    challenger = _model(0.80, "2026-06-02", ece=0.415)
    decision = decide("xgboost", challenger, _champion(0.778, ece=0.420), "roc_auc", rules)
    assert decision.promoted, decision.reason
    [check] = [c for c in decision.checks if c.name == "calibration vs champion"]
    assert check.passed and check.detail == (
        "calibration error 0.4150 vs champion 0.4200 (may be worse by at most 0.0100)"
    )


def test_a_challenger_calibrated_worse_than_the_champion_is_kept() -> None:
    rules = Evaluation(margin=0.005)
    challenger = _model(0.80, "2026-06-02", ece=0.06)
    decision = decide("xgboost", challenger, _champion(0.75, ece=0.02), "roc_auc", rules)
    assert not decision.promoted
    assert "calibration error 0.0600 vs champion 0.0200" in decision.reason


def test_the_absolute_calibration_bound_is_optional_and_also_applies() -> None:
    challenger = _model(0.80, "2026-06-02", ece=0.415)
    champion = _champion(0.778, ece=0.420)
    bounded = Evaluation(margin=0.005, max_calibration_error=0.1)
    assert not decide("xgboost", challenger, champion, "roc_auc", bounded).promoted
    assert Evaluation().max_calibration_error is None


def test_a_champion_trained_for_the_same_date_is_never_replaced() -> None:
    """Re-running a night must not replace the champion it promoted (`<`, not `<=`)."""
    from nightshift.evaluation.champion import trained_before

    june = dt.date(2026, 6, 1), dt.date(2026, 6, 2)
    assert trained_before(june[0], june[1]) and not trained_before(june[1], june[1])
    assert trained_before(None, june[0])  # a version that names no date counts as earlier
    decision = decide(
        "xgboost", _model(0.99, "2026-06-02"), _champion(0.5, "2026-06-02"), "roc_auc", RULES
    )
    assert not decision.promoted and "a backfilled night never replaces it" in decision.reason


@pytest.mark.parametrize(("new", "promoted"), [(0.75, False), (0.875, True)])
def test_a_gain_exactly_the_margin_is_not_enough(new: float, promoted: bool) -> None:
    """Numbers exact in binary (0.75 - 0.5 == 0.25): a gain equal to the margin keeps."""
    rules = Evaluation(margin=0.25, segment=None)
    decision = decide("m", _model(new, "2026-06-02"), _champion(0.5), "roc_auc", rules)
    assert decision.promoted is promoted
