"""The champion: the model tonight's models are measured against, and when it changes.

Each published date records, in the lake stage ``champion``, which model is champion after
that date's run and why. The champion a date is compared with is the one recorded for the
latest earlier date, so re-running a date never changes its own comparison, and a backfilled
date is only ever compared with models trained on data older than itself.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from nightshift.lake import Lake, PartitionMissing

CHAMPION = "champion"
HIGHER_IS_BETTER = {"roc_auc": True, "accuracy": True, "f1": True, "r2": True}


@dataclass(frozen=True)
class Decision:
    """Whether tonight's challenger became champion, why, and who is champion now."""

    promoted: bool
    reason: str
    model_id: str
    champion: dict[str, Any]
    challenger: dict[str, Any]
    previous: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def champion_before(lake: Lake, partition_date: dt.date) -> dict[str, Any] | None:
    """Return the champion recorded for the latest date before ``partition_date``, if any."""
    earlier = [d for d in lake.dates(CHAMPION) if d < partition_date]
    for day in sorted(earlier, reverse=True):
        try:
            champion = lake.read(CHAMPION, day).meta.get("champion")
        except PartitionMissing:
            continue
        return dict(champion) if champion else None
    return None


def model_id(name: str, trained_for: str) -> str:
    return f"{name}@{trained_for}"


def decide(
    challenger: dict[str, Any],
    previous: dict[str, Any] | None,
    previous_score: float | None,
    metric: str,
    promote: bool = True,
    margin: float = 0.0,
) -> Decision:
    """Return the promotion decision for ``challenger`` against the previous champion.

    ``challenger`` and ``previous`` carry ``name``, ``trained_for`` and ``score`` (the metric on
    the same held-out day; ``previous_score`` is the old champion's score there).
    """
    higher = HIGHER_IS_BETTER.get(metric, False)
    score = float(challenger["score"])
    new_id = model_id(challenger["name"], challenger["trained_for"])

    def keep(reason: str) -> Decision:
        assert previous is not None
        return Decision(False, reason, previous["model_id"], previous, challenger, previous)

    if previous is None:
        if not promote:
            return Decision(
                False,
                "no champion yet, and promotion was turned off for this run",
                "",
                {},
                challenger,
                None,
            )
        champion = {**challenger, "model_id": new_id}
        return Decision(True, "first model: no champion yet", new_id, champion, challenger, None)
    if previous_score is None:
        gain = float("inf")
        versus = f"{metric} {score:.4f}; champion {previous['model_id']} could not be scored"
    else:
        gain = (score - previous_score) if higher else (previous_score - score)
        versus = f"{metric} {score:.4f} vs champion {previous['model_id']} at {previous_score:.4f}"
    if gain <= margin:
        return keep(f"not better: {versus}")
    if not promote:
        return keep(f"better ({versus}) but promotion was turned off for this run")
    champion = {**challenger, "model_id": new_id}
    return Decision(True, f"better: {versus}", new_id, champion, challenger, previous)
