"""The records between evaluate and publish: read back as written, changed only by copy."""

from __future__ import annotations

import datetime as dt
import json

from nightshift.config.records import (
    Challenger,
    ChampionRef,
    ChampionScore,
    Comparison,
    Decision,
    Estimate,
    ModelScore,
    NightEvaluation,
)

REF = ChampionRef("p.xgboost", 3, "run-3", "xgboost", dt.date(2026, 6, 1))


def _evaluation() -> NightEvaluation:
    xgboost = ModelScore(
        "xgboost",
        {"roc_auc": 0.75},
        {"roc": {"fpr": [0, 1], "tpr": [0, 1]}},
        {"metric": "logloss", "train": [0.6]},
        segments={"web": {"rows": 10, "roc_auc": 0.7}},
        importance={"gain": {"a": 1.0}, "contribution": {"a": 0.1}},
    )
    baseline = ModelScore("baseline", {"roc_auc": 0.5}, {}, {}, value=0.0)
    return NightEvaluation(
        {"xgboost": xgboost, "base_rate": baseline},
        ["xgboost", "base_rate"],
        "xgboost",
        "roc_auc",
        True,
        {"xgboost": ChampionScore(REF, {"roc_auc": 0.74}, None)},
        {
            "xgboost": Comparison(
                "roc_auc",
                200,
                0.95,
                Estimate(0.01, 0.0, 0.02, 0.006, 800),
                {"web": Estimate(0.02, -0.01, 0.05, 0.018, 400, 1)},
                Estimate(0.001, -0.002, 0.004, 0.002, 800),
                Estimate(0.03, 0.02, 0.04, 0.006, 800),
            )
        },
        {"features": {}},
    )


def test_an_evaluation_reads_back_as_it_was_written() -> None:
    evaluation = _evaluation()
    data = json.loads(json.dumps(evaluation.to_dict(), sort_keys=True))
    assert NightEvaluation.from_dict(data) == evaluation
    # The published format: curves beside the metrics; absent parts left out; a zero kept.
    assert data["models"]["xgboost"]["roc"] == {"fpr": [0, 1], "tpr": [0, 1]}
    assert "importance" not in data["models"]["base_rate"]
    assert data["models"]["base_rate"]["value"] == 0.0
    assert data["best"] == "xgboost" and evaluation.headline("base_rate") == 0.5


def test_a_champion_is_written_with_only_what_was_measured() -> None:
    assert ChampionScore(REF).to_dict() == REF.to_dict()
    unscored = ChampionScore(REF, unscored="PartitionMissing: gone").to_dict()
    assert unscored["unscored"] == "PartitionMissing: gone" and "metrics" not in unscored
    assert ChampionScore.from_dict(unscored) == ChampionScore(
        REF, unscored="PartitionMissing: gone"
    )


def test_a_lost_race_is_a_new_decision_and_the_old_one_is_unchanged() -> None:
    challenger = Challenger("xgboost", dt.date(2026, 6, 2), {"roc_auc": 0.8})
    promoted = Decision("xgboost", True, "beats champion v3", challenger, ChampionScore(REF))
    newer = ChampionRef("p.xgboost", 5, "run-5", "xgboost", dt.date(2026, 6, 4))
    kept = promoted.lost_race(newer)
    assert promoted.promoted and promoted.reason == "beats champion v3"
    assert not kept.promoted
    assert kept.reason == (
        "earned promotion (beats champion v3), but champion v5 trained for 2026-06-04 was "
        "promoted meanwhile by a newer night"
    )
    assert kept.to_dict()["challenger"] == {
        "model": "xgboost",
        "trained_for": "2026-06-02",
        "metrics": {"roc_auc": 0.8},
        "segments": None,
    }


def test_only_an_approval_promotes_and_every_answer_says_who() -> None:
    from nightshift.airflow_dag import approval_from
    from nightshift.config.records import Approval

    challenger = Challenger("xgboost", dt.date(2026, 6, 2), {"roc_auc": 0.8})
    earned = Decision("xgboost", True, "beats champion v3", challenger, ChampionScore(REF))
    kept = Decision("xgboost", False, "does not beat champion v3", challenger, ChampionScore(REF))
    waiting = Approval("awaiting", due="2026-06-03T07:00+00:00").applied_to(earned)
    assert not waiting.promoted
    assert waiting.reason == (
        "earned promotion (beats champion v3), awaiting approval "
        "(no answer by 2026-06-03T07:00+00:00 keeps the champion)"
    )
    at = "2026-06-03T06:12:40+00:00"
    user = {"id": "admin", "name": "admin"}
    answers = {
        "Approve": {"chosen_options": ["Approve"], "responded_by_user": user, "responded_at": at},
        "Reject": {"chosen_options": ["Reject"], "responded_by_user": user, "responded_at": at},
        # What the scheduler writes when the time ran out: the default, and nobody.
        "none": {"chosen_options": ["Reject"], "responded_by_user": None, "responded_at": at},
    }
    approved, rejected, timed_out = (approval_from(answers[k]) for k in answers)
    assert (approved.state, rejected.state, timed_out.state) == (
        "approved",
        "rejected",
        "timed_out",
    )
    assert approved.applied_to(earned).promoted
    assert approved.applied_to(earned).reason == "beats champion v3; approved by admin"
    assert rejected.applied_to(earned).reason.endswith("), rejected by admin")
    assert timed_out.applied_to(earned).reason.endswith(
        "not approved by 2026-06-03T06:12, so the champion is kept"
    )
    assert not rejected.applied_to(earned).promoted and not timed_out.applied_to(earned).promoted
    # A decision the gate did not promote has nothing to approve.
    assert all(a.applied_to(kept) == kept for a in (approved, rejected, timed_out))
    assert earned.promoted and earned.reason == "beats champion v3"  # unchanged
