"""The champion gate on segments of real size: three airports of ~250 held-out rows and ~80
delayed flights in all, as a team's flight-delay data has them (issue 34).

The scores are built from a known truth: the champion misses it by noise of one size, the
challenger by less (their errors correlated 0.65, as two nights' XGBoost models' are on the
generator's data, ``bench/gate.py``). Each night goes through the night's own measurement
(``evaluate_scores``, ``segment_metrics``, ``compare``) and the gate.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from nightshift.config.pipeline import CLASSIFICATION, Evaluation
from nightshift.config.records import Challenger, ChampionRef, ChampionScore, Decision
from nightshift.evaluation.champion import decide
from nightshift.evaluation.comparison import compare
from nightshift.evaluation.evaluate import evaluate_scores, segment_metrics

RULES = Evaluation(segment="origin")  # the defaults: margin 0, bound 0.02, 95% confidence
AIRPORTS = {"ORD": 287, "ATL": 262, "DEN": 251}
REF = ChampionRef("flights.xgboost", 1, "run-1", "xgboost", dt.date(2026, 3, 1))


def _night(seed: int, broken: str | None = None) -> tuple[np.ndarray, ...]:
    """Return labels, airports, the challenger's and the champion's scores of one night;
    ``broken``: the airport where the challenger is truly far worse (by construction)."""
    rng = np.random.default_rng(seed)
    origin = np.concatenate([[name] * rows for name, rows in AIRPORTS.items()]).astype(object)
    truth = rng.normal(-2.7, 1.3, len(origin))
    y = (rng.random(len(origin)) < 1 / (1 + np.exp(-truth))).astype(float)
    own, shared = rng.normal(size=len(origin)), rng.normal(size=len(origin))
    champion = truth + 1.0 * own
    challenger = truth + 0.6 * (0.65 * own + np.sqrt(1 - 0.65**2) * shared)
    if broken:
        there = origin == broken
        challenger = np.where(there, truth + 2.0 * shared, truth + 0.25 * shared)
    return y, origin, 1 / (1 + np.exp(-challenger)), 1 / (1 + np.exp(-champion))


def _gate(
    y: np.ndarray, origin: np.ndarray, new: np.ndarray, old: np.ndarray, bootstrap: bool = True
) -> Decision:
    def measured(score: np.ndarray) -> tuple[dict, dict]:
        metrics = evaluate_scores(CLASSIFICATION, y, score, 0.5)["metrics"]
        return metrics, segment_metrics(CLASSIFICATION, y, score, origin, 0.5)

    challenger = Challenger("xgboost", dt.date(2026, 3, 2), *measured(new))
    champion = ChampionScore(REF, *measured(old))
    comparison = (
        compare(CLASSIFICATION, "roc_auc", y, (new, old), 0.5, origin, 200, 0.95)
        if bootstrap
        else None
    )
    return decide("xgboost", challenger, champion, "roc_auc", RULES, True, comparison)


def _drops(decision: Decision) -> dict[str, float]:
    return {v.segment: round(v.champion - v.challenger, 4) for v in decision.segments}


def test_a_better_challenger_is_promoted_though_one_airport_scores_lower_by_noise() -> None:
    y, origin, new, old = _night(2)
    decision = _gate(y, origin, new, old)
    # The night as the issue tells it: better overall, one airport lower than the bound.
    assert int(y.sum()) == 82
    assert decision.challenger.metrics["roc_auc"] - decision.champion.metrics["roc_auc"] > 0.025
    assert _drops(decision) == {"ORD": -0.0282, "ATL": -0.0711, "DEN": 0.0246}
    # Judged on its point estimates, as before, the gate refused it on DEN's 0.0246.
    before = _gate(y, origin, new, old, bootstrap=False)
    assert not before.promoted and "worst origin segment 'DEN'" in before.reason
    # On the bootstrap's bounds it is promoted: DEN's drop is noise at 251 rows.
    assert decision.promoted, decision.reason
    assert "gain +0.0260, at least +0.0014 at 95% confidence" in decision.reason
    den = next(v for v in decision.segments if v.segment == "DEN")
    assert den.state == "within bound" and den.why.startswith("drop +0.0246, at least -0.0")
    assert decision.power is not None and "origin segment (251 to 287 rows)" in decision.power


def test_an_airport_truly_worse_keeps_the_champion() -> None:
    y, origin, new, old = _night(9, broken="DEN")
    decision = _gate(y, origin, new, old)
    assert not decision.promoted and "segments" in decision.decided_by
    states = {v.segment: v.state for v in decision.segments}
    assert states == {"ORD": "within bound", "ATL": "within bound", "DEN": "worse"}
    assert "worst origin segment 'DEN': roc_auc drop +0.2139, at least +0.1" in decision.reason


def test_the_night_compares_each_model_on_the_bootstrap_unless_it_is_turned_off() -> None:
    from nightshift.config.pipeline import parse_pipeline
    from nightshift.night.scoring import HeldOut, compare_all
    from tests.conftest import small_pipeline_dict

    y, origin, new, old = _night(2)
    data = small_pipeline_dict()
    data["evaluation"] = {"segment": "channel", "bootstrap_samples": 50}  # values: airports
    pipeline = parse_pipeline(data, "flights.yaml")
    held_out = HeldOut(None, y, origin)
    pairs = {"xgboost": (new, old), "sgd": (old, new)}
    both = compare_all(pipeline, held_out, pairs)
    assert set(both) == {"xgboost", "sgd"} and both["xgboost"].samples == 50
    assert both["xgboost"].headline.value == -both["sgd"].headline.value
    assert set(both["sgd"].segments) == set(AIRPORTS)
    data["evaluation"]["bootstrap_samples"] = 0  # the gate then judges the point estimates
    assert compare_all(parse_pipeline(data, "flights.yaml"), held_out, pairs) == {}
