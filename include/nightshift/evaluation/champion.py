"""The champion gate: does tonight's challenger replace the champion? A pure function.

Each registered model (one per pipeline and model) has a champion: the model version behind
the MLflow registry alias ``champion``. Tonight's model of the same name is the challenger.
Both are scored on the same held-out day; the challenger is promoted only if it beats the
champion on the configured metric by more than the margin and passes the guardrails
(calibration error bound; no segment degrading beyond a bound). The first model is promoted.

Every check judges the stratified paired bootstrap's bounds (``evaluation.comparison``), not
the day's point estimates, with the pipeline's ``confidence``: the gain must exceed the margin
with that confidence to promote, and a segment or the calibration must be worse than its bound
with that confidence to keep the champion. Noise promotes nothing and refuses nothing; a
segment too small to judge at that confidence is shown, not judged. Without a bootstrap
(``bootstrap_samples: 0``) the checks fall back to the point estimates.
A champion trained for this date or a later one is never replaced by it: a backfilled night
must not undo a newer model, nor be compared with a model that has seen its held-out day.
"""

from __future__ import annotations

import datetime as dt
import math
from statistics import NormalDist

from nightshift.config.pipeline import HIGHER_IS_BETTER, Evaluation
from nightshift.config.records import (
    Challenger,
    ChampionScore,
    Check,
    Comparison,
    Decision,
    Estimate,
    SegmentState,
    SegmentVerdict,
)

POWER = 0.9  # the power line says what the gate catches 9 nights in 10


def trained_before(trained_for: dt.date | None, day: dt.date) -> bool:
    """The champion-date rule: whether a champion ``trained_for`` a date may be replaced by a
    model for ``day``. Only an earlier one may: a champion trained for this date or a later one
    is never replaced, so a backfilled night never moves the production pointer back. A
    champion whose date is unknown (None) counts as earlier."""
    return trained_for is None or trained_for < day


def _gain(metric: str, challenger: float, champion: float) -> float:
    higher = metric in HIGHER_IS_BETTER
    return (challenger - champion) if higher else (champion - challenger)


def _drop(metric: str, difference: float) -> float:
    """How much a challenger loses for ``difference`` = challenger minus champion."""
    return -_gain(metric, difference, 0.0)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _gain_bounds(metric: str, difference: Estimate) -> tuple[float, float, float]:
    """Return the gain (challenger better: positive) and its one-sided lower and upper
    bounds, from the bounded ``difference`` of challenger minus champion on ``metric``."""
    assert difference.value is not None and difference.low is not None
    assert difference.high is not None
    if metric in HIGHER_IS_BETTER:
        return difference.value, difference.low, difference.high
    return -difference.value, -difference.high, -difference.low


def _sure(comparison: Comparison) -> str:
    return f"at {comparison.confidence:.0%} confidence"


def _detectable(bound: float, se: float | None, confidence: float) -> float | None:
    """The true excess over ``bound`` a one-sided test at ``confidence`` catches with
    ``POWER``, for an estimate of standard error ``se`` (normal approximation)."""
    if se is None:
        return None
    z = NormalDist().inv_cdf(confidence) + NormalDist().inv_cdf(POWER)
    return round(bound + z * se, 4)


def decide(
    model: str,
    challenger: Challenger,
    champion: ChampionScore | None,
    metric: str,
    rules: Evaluation,
    promote: bool = True,
    comparison: Comparison | None = None,
) -> Decision:
    """Return the gate's decision for ``challenger`` against ``champion``.

    ``champion`` carries the same measurements as ``challenger`` (on the same held-out day), or
    ``unscored`` with the reason it could not be scored, or is None when there is no champion
    yet. ``comparison`` is the bootstrap of challenger minus champion (None: judge the point
    estimates).
    """
    # Guardrails apply with or without a champion; they are reported either way.
    checks = _calibration(challenger, rules, comparison)
    verdicts: list[SegmentVerdict] = []

    def decision(promoted: bool, reason: str) -> Decision:
        power = _power(rules, comparison, verdicts)
        return Decision(model, promoted, reason, challenger, champion, checks, verdicts, power)

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
    checks.append(_margin(challenger, champion, metric, rules, comparison))
    checks.extend(_calibration_against(challenger, champion, rules, comparison))
    if rules.segment:
        verdicts = segment_verdicts(metric, challenger, champion, rules, comparison)
        checks.append(_segments(verdicts, metric, rules))
    failed = [c for c in checks if not c.passed]
    if failed:
        return decision(False, "kept the champion: " + "; ".join(c.detail for c in failed))
    margin = next(c.detail for c in checks if c.name == "margin")
    if not promote:
        return decision(False, f"earned promotion ({margin}) but promotion was turned off")
    return decision(True, f"beats champion {version}: {margin}; guardrails passed")


def _calibration_against(
    challenger: Challenger,
    champion: ChampionScore,
    rules: Evaluation,
    comparison: Comparison | None,
) -> list[Check]:
    """The calibration guardrail against the champion on the same day: the challenger's
    calibration error may exceed the champion's by at most ``calibration_margin``. Relative,
    so a day whose base rate moved (both models miscalibrated) does not freeze the champion."""
    new = challenger.metrics.get("calibration_error")
    old = (champion.metrics or {}).get("calibration_error")
    if new is None or old is None:
        return []
    allowed = rules.calibration_margin
    said = f"calibration error {new:.4f} vs champion {old:.4f}"
    bound = f"may be worse by at most {allowed:.4f}"
    excess = comparison.calibration if comparison else None
    if comparison is None or excess is None or not excess.bounded:
        return [Check("calibration vs champion", new <= old + allowed, f"{said} ({bound})")]
    assert excess.low is not None
    detail = (
        f"{said}: {excess.value:+.4f}, at least {excess.low:+.4f} {_sure(comparison)} ({bound})"
    )
    return [Check("calibration vs champion", excess.low <= allowed, detail)]


def _calibration(
    challenger: Challenger, rules: Evaluation, comparison: Comparison | None
) -> list[Check]:
    """The absolute calibration guardrail, when the pipeline sets one and the task has one."""
    ece = challenger.metrics.get("calibration_error")
    if rules.max_calibration_error is None or ece is None:
        return []
    bound = rules.max_calibration_error
    own = comparison.challenger_calibration if comparison else None
    if comparison is None or own is None or not own.bounded:
        return [
            Check("calibration", ece <= bound, f"calibration error {ece:.4f} (bound {bound:.4f})")
        ]
    assert own.low is not None
    least = f"at least {own.low:.4f} {_sure(comparison)}"
    detail = f"calibration error {ece:.4f}, {least} (bound {bound:.4f})"
    return [Check("calibration", own.low <= bound, detail)]


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
    comparison: Comparison | None,
) -> Check:
    """Whether the challenger beats the champion on ``metric`` by more than the margin: with
    the bootstrap, its gain's lower bound at the gate's confidence must exceed it."""
    new_score = challenger.metrics.get(metric)
    old_score = (champion.metrics or {}).get(metric)
    if new_score is None or old_score is None:
        return Check("metric", False, f"{metric} undefined on this day")
    gain = _gain(metric, float(new_score), float(old_score))
    said = f"{metric} {_fmt(new_score)} vs champion {_fmt(old_score)}: gain {gain:+.4f}"
    margin = f"margin {rules.margin:.4f}"
    if comparison is None or not comparison.headline.bounded:
        why = "no bootstrap" if comparison is None else "the bootstrap gave no interval"
        return Check("margin", gain > rules.margin, f"{said}, {margin} (point estimate: {why})")
    _, low, _ = _gain_bounds(metric, comparison.headline)
    detail = f"{said}, at least {low:+.4f} {_sure(comparison)}, {margin}"
    return Check("margin", low > rules.margin, detail)


def segment_verdicts(
    metric: str,
    challenger: Challenger,
    champion: ChampionScore,
    rules: Evaluation,
    comparison: Comparison | None,
) -> list[SegmentVerdict]:
    """Return every segment of the day as the segment check sees it, largest first."""
    verdicts = []
    for name, new in (challenger.segments or {}).items():
        old = (champion.segments or {}).get(name) or {}
        new_value, old_value = new.get(metric), old.get(metric)
        difference = comparison.segments.get(name) if comparison else None
        if difference is None:
            point = None if new_value is None or old_value is None else new_value - old_value
            difference = Estimate(point, rows=new["rows"])
        state, why, detectable = _judge(metric, difference, rules, comparison)
        verdicts.append(
            SegmentVerdict(
                name, new["rows"], new_value, old_value, difference, state, why, detectable
            )
        )
    return sorted(verdicts, key=lambda verdict: (-verdict.rows, verdict.segment))


def _judge(
    metric: str, difference: Estimate, rules: Evaluation, comparison: Comparison | None
) -> tuple[SegmentState, str, float | None]:
    """Return one segment's state, why, and the drop it would catch 9 nights in 10."""
    bound = rules.max_segment_drop
    if difference.rows < rules.min_segment_rows:
        return "not judged", f"fewer than {rules.min_segment_rows} rows (min_segment_rows)", None
    if difference.value is None:
        return "not judged", f"{metric} undefined on its rows (one class only)", None
    if comparison is None:
        drop = _drop(metric, difference.value)
        point: SegmentState = "worse" if drop > bound else "within bound"
        return point, f"drop {drop:+.4f} (point estimate: no bootstrap)", None
    if not difference.bounded:
        return (
            "not judged",
            (
                f"{metric} undefined in {difference.undefined} of {comparison.samples} resamples: "
                f"too few rows of one class to judge {_sure(comparison)}"
            ),
            None,
        )
    gain, _, high = _gain_bounds(metric, difference)
    drop, least = -gain, -high
    state: SegmentState = "worse" if least > bound else "within bound"
    why = f"drop {drop:+.4f}, at least {least:+.4f} {_sure(comparison)}"
    return state, why, _detectable(bound, difference.se, comparison.confidence)


def _segments(verdicts: list[SegmentVerdict], metric: str, rules: Evaluation) -> Check:
    """Whether no judged segment is worse than the bound (with the gate's confidence)."""
    judged = [v for v in verdicts if v.state != "not judged"]
    skipped = len(verdicts) - len(judged)
    aside = f"; {skipped} not judged" if skipped else ""
    if not judged:
        return Check("segments", True, f"no {rules.segment} segment large enough to judge{aside}")

    worse = [v for v in judged if v.state == "worse"]
    worst = max(worse or judged, key=lambda v: _drop(metric, v.difference.value or 0.0))
    bound = f"(bound {rules.max_segment_drop:.4f})"
    said = f"{rules.segment} segment '{worst.segment}': {metric} {worst.why} {bound}"
    return Check("segments", not worse, f"worst {said}{aside}")


def _power(
    rules: Evaluation, comparison: Comparison | None, verdicts: list[SegmentVerdict]
) -> str | None:
    """One sentence: what the gate would catch 9 nights in 10 at tonight's sizes."""
    if comparison is None or comparison.headline.se is None:
        return None
    head = comparison.headline
    gain = _detectable(rules.margin, head.se, comparison.confidence)
    line = f"At tonight's sizes the gate would prove a gain of {gain:.3f} ({head.rows:,} rows)"
    drops = sorted(v.detectable for v in verdicts if v.detectable is not None)
    if drops:
        rows = sorted(v.rows for v in verdicts if v.detectable is not None)
        sizes = f"{rows[0]:,}" if rows[0] == rows[-1] else f"{rows[0]:,} to {rows[-1]:,}"
        span = f"{drops[0]:.3f}" if drops[0] == drops[-1] else f"{drops[0]:.3f} to {drops[-1]:.3f}"
        line += f" and catch a drop of {span} in one {rules.segment} segment ({sizes} rows)"
    return line + " 9 nights in 10."
