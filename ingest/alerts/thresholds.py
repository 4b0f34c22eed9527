"""Metric thresholds with a duration and hysteresis, as a pure fold over samples.

"CPU above 90 % for 10 minutes" opens; "at or below 80 % for 5 minutes" resolves.
Opening needs the value above the line in every sample for ``for_s``; resolving
needs it at or below the lower line in every sample for ``clear_for_s``. A value
between the two lines never changes the verdict, so a reading that wanders around
one line cannot make the alert flap. Samples are timed by their own timestamps;
one no newer than the last seen (a replay) is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum

from ingest.alerts.config import MetricRule


class Verdict(Enum):
    NONE = "none"
    OPEN = "open"
    REPEAT = "repeat"  # still above the line while open: count and last time move on
    RESOLVE = "resolve"


@dataclass(frozen=True, slots=True)
class ThresholdState:
    firing: bool = False
    breach_since: datetime | None = None  # first sample of the current run above the line
    clear_since: datetime | None = None  # first sample of the current run below the lower line
    last_ts: datetime | None = None


FIRING = ThresholdState(firing=True)  # what an alert found open at start-up stands for


def evaluate(
    rule: MetricRule, state: ThresholdState, ts: datetime, value: float | None
) -> tuple[ThresholdState, Verdict]:
    """The state after one sample, and what it means for the alert."""
    if state.last_ts is not None and ts <= state.last_ts:
        return state, Verdict.NONE
    state = replace(state, last_ts=ts)
    if value is None:
        return state, Verdict.NONE
    if not state.firing:
        if value <= rule.above:
            return replace(state, breach_since=None), Verdict.NONE
        since = state.breach_since or ts
        if (ts - since).total_seconds() >= rule.for_s:
            return ThresholdState(firing=True, last_ts=ts), Verdict.OPEN
        return replace(state, breach_since=since), Verdict.NONE
    if value > rule.clear_below:
        verdict = Verdict.REPEAT if value > rule.above else Verdict.NONE
        return replace(state, clear_since=None), verdict
    since = state.clear_since or ts
    if (ts - since).total_seconds() >= rule.clear_for_s:
        return ThresholdState(firing=False, last_ts=ts), Verdict.RESOLVE
    return replace(state, clear_since=since), Verdict.NONE


def fold(
    rule: MetricRule, state: ThresholdState, samples: list[tuple[datetime, float | None]]
) -> tuple[ThresholdState, list[tuple[datetime, Verdict]]]:
    """Evaluate samples in time order; the verdicts that are not NONE, with their times."""
    verdicts: list[tuple[datetime, Verdict]] = []
    for ts, value in sorted(samples, key=lambda sample: sample[0]):
        state, verdict = evaluate(rule, state, ts, value)
        if verdict is not Verdict.NONE:
            verdicts.append((ts, verdict))
    return state, verdicts
