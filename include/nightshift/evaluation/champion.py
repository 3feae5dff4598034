"""The champion gate: does tonight's challenger replace the champion? A pure function.

Each registered model (one per pipeline and model) has a champion: the model version behind
the MLflow registry alias ``champion``. Tonight's model of the same name is the challenger.
Both are scored on the same held-out day; the challenger is promoted only if it beats the
champion on the configured metric by more than the margin and passes the guardrails
(calibration error bound; no segment degrading beyond a bound). The first model is promoted.
A champion trained for this date or a later one is never replaced by it: a backfilled night
must not undo a newer model, nor be compared with a model that has seen its held-out day.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from nightshift.config.pipeline import HIGHER_IS_BETTER, Evaluation
from nightshift.config.records import Challenger, ChampionScore, Check, Decision


def trained_before(trained_for: dt.date | None, day: dt.date) -> bool:
    """The champion-date rule: whether a champion ``trained_for`` a date may be replaced by a
    model for ``day``. Only an earlier one may: a champion trained for this date or a later one
    is never replaced, so a backfilled night never moves the production pointer back. A
    champion whose date is unknown (None) counts as earlier."""
    return trained_for is None or trained_for < day


def _gain(metric: str, challenger: float, champion: float) -> float:
    higher = metric in HIGHER_IS_BETTER
    return (challenger - champion) if higher else (champion - challenger)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def segment_drops(
    metric: str,
    challenger: dict[str, dict[str, Any]],
    champion: dict[str, dict[str, Any]],
    min_rows: int,
) -> dict[str, float]:
    """Return, per segment with enough rows, how much the challenger loses (negative: gains)."""
    drops: dict[str, float] = {}
    for value, new in challenger.items():
        old = champion.get(value)
        if old is None or new["rows"] < min_rows:
            continue
        if new.get(metric) is None or old.get(metric) is None:
            continue
        drops[value] = -_gain(metric, float(new[metric]), float(old[metric]))
    return drops


def decide(
    model: str,
    challenger: Challenger,
    champion: ChampionScore | None,
    metric: str,
    rules: Evaluation,
    promote: bool = True,
    delta: dict[str, Any] | None = None,
) -> Decision:
    """Return the gate's decision for ``challenger`` against ``champion``.

    ``champion`` carries the same measurements as ``challenger`` (on the same held-out day), or
    ``unscored`` with the reason it could not be scored, or is None when there is no champion
    yet. ``delta`` is the bootstrap interval of challenger minus champion on ``metric``.
    """
    # Guardrails apply with or without a champion; they are reported either way.
    checks = _calibration(challenger, rules)

    def decision(promoted: bool, reason: str) -> Decision:
        return Decision(model, promoted, reason, challenger, champion, checks)

    if champion is None:
        if not promote:
            return decision(False, "no champion yet, and promotion was turned off for this run")
        warnings = [c.detail for c in checks if not c.passed]
        note = f" (guardrail warnings: {'; '.join(warnings)})" if warnings else ""
        return decision(True, f"first model: no champion yet{note}")
    version = champion.label
    refusal = _not_comparable(challenger, champion, version)
    if refusal is not None:
        checks.append(refusal[0])
        return decision(False, refusal[1])
    checks.append(_margin(challenger, champion, metric, rules, delta))
    checks.extend(_calibration_against(challenger, champion, rules))
    if rules.segment:
        checks.append(_segments(challenger, champion, metric, rules))
    failed = [c for c in checks if not c.passed]
    if failed:
        return decision(False, "kept the champion: " + "; ".join(c.detail for c in failed))
    margin = next(c.detail for c in checks if c.name == "margin")
    if not promote:
        return decision(False, f"earned promotion ({margin}) but promotion was turned off")
    return decision(True, f"beats champion {version}: {margin}; guardrails passed")


def _calibration_against(
    challenger: Challenger, champion: ChampionScore, rules: Evaluation
) -> list[Check]:
    """The calibration guardrail against the champion on the same day: the challenger's
    calibration error may exceed the champion's by at most ``calibration_margin``. Relative,
    so a day whose base rate moved (both models miscalibrated) does not freeze the champion."""
    new = challenger.metrics.get("calibration_error")
    old = (champion.metrics or {}).get("calibration_error")
    if new is None or old is None:
        return []
    allowed = rules.calibration_margin
    detail = (
        f"calibration error {new:.4f} vs champion {old:.4f} (may be worse by at most {allowed:.4f})"
    )
    return [Check("calibration vs champion", new <= old + allowed, detail)]


def _calibration(challenger: Challenger, rules: Evaluation) -> list[Check]:
    """The absolute calibration guardrail, when the pipeline sets one and the task has one."""
    ece = challenger.metrics.get("calibration_error")
    if rules.max_calibration_error is None or ece is None:
        return []
    bound = rules.max_calibration_error
    detail = f"calibration error {ece:.4f} (bound {bound:.4f})"
    return [Check("calibration", ece <= bound, detail)]


def _not_comparable(
    challenger: Challenger, champion: ChampionScore, version: str
) -> tuple[Check, str] | None:
    """Why the champion cannot be compared with tonight's model (the failed check and the
    reason), or None when it can."""
    if not trained_before(champion.trained_for, challenger.trained_for):
        return Check("newer champion", False, f"champion {version}"), (
            f"champion {version} was trained for this date or a later one; "
            "a backfilled night never replaces it"
        )
    if champion.unscored or champion.metrics is None:
        why = champion.unscored or "not scored"
        return Check("champion scored", False, why), (
            f"champion {version} could not be scored on this day ({why}); "
            "kept — promote by hand with `nightshift promote` if it is gone for good"
        )
    return None


def _margin(
    challenger: Challenger,
    champion: ChampionScore,
    metric: str,
    rules: Evaluation,
    delta: dict[str, Any] | None,
) -> Check:
    """Whether the challenger beats the champion on ``metric`` by more than the margin."""
    new_score = challenger.metrics.get(metric)
    old_score = (champion.metrics or {}).get(metric)
    if new_score is None or old_score is None:
        return Check("metric", False, f"{metric} undefined on this day")
    gain = _gain(metric, float(new_score), float(old_score))
    interval = ""
    if delta and delta.get("low") is not None:
        interval = f", 95% CI of the difference [{delta['low']:+.4f}, {delta['high']:+.4f}]"
    return Check(
        "margin",
        gain > rules.margin,
        f"{metric} {_fmt(new_score)} vs champion {_fmt(old_score)}: "
        f"gain {gain:+.4f}, margin {rules.margin:.4f}{interval}",
    )


def _segments(
    challenger: Challenger, champion: ChampionScore, metric: str, rules: Evaluation
) -> Check:
    """Whether no large enough segment loses more than the bound."""
    drops = segment_drops(
        metric,
        challenger.segments or {},
        champion.segments or {},
        rules.min_segment_rows,
    )
    if not drops:
        return Check("segments", True, f"no {rules.segment} segment large enough")
    worst = max(drops, key=lambda value: drops[value])
    return Check(
        "segments",
        drops[worst] <= rules.max_segment_drop,
        f"worst {rules.segment} segment '{worst}': {metric} drop "
        f"{drops[worst]:+.4f} (bound {rules.max_segment_drop:.4f})",
    )
