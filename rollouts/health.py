"""Health gating: whether terminals already updated behave worse than the rest of the
fleet, which halts a rollout even after their installs succeeded.

Over a watch period the driver counts, among the updated terminals and among a
comparison group (the rest of the fleet, or the targeted terminals not yet updated:
its choice), how many were in error and how many offline at some point. The verdict
compares *rates*, so a wave of 10 is judged like a wave of 10,000, and halts when the
updated terminals' error rate or offline rate exceeds the comparison group's by more
than ``margin_points`` percentage points (absolute: 5 points means 2% -> more than 7%).
Exactly at the margin passes.

Small samples are judged as they are, not discounted: one updated terminal in error out
of one is 100%, which halts. On payment terminals a canary that fails is the signal the
first wave exists for, and a halt costs a person's look and a resume, not an outage.
No updated terminal means nothing to judge (healthy); an empty comparison group counts
as a perfect one (0%), so the margin alone decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from rollouts.errors import PolicyError


@dataclass(frozen=True)
class HealthCounts:
    """Terminals in a group, and how many were in error / offline during the watch period.

    A terminal may count in both (offline, then in error)."""

    terminals: int
    in_error: int
    offline: int

    def __post_init__(self) -> None:
        if self.terminals < 0 or not (
            0 <= self.in_error <= self.terminals and 0 <= self.offline <= self.terminals
        ):
            raise ValueError("health counts need 0 <= in_error, offline <= terminals")

    def error_pct(self) -> Fraction:
        return Fraction(100 * self.in_error, self.terminals) if self.terminals else Fraction(0)

    def offline_pct(self) -> Fraction:
        return Fraction(100 * self.offline, self.terminals) if self.terminals else Fraction(0)


@dataclass(frozen=True)
class HealthSample:
    """The counts a rollout's health gate compares, taken over the same watch period."""

    updated: HealthCounts
    rest: HealthCounts


@dataclass(frozen=True)
class HealthVerdict:
    healthy: bool
    reason: str  # why it halts, or what was compared


def health_verdict(
    updated: HealthCounts, rest: HealthCounts, margin_points: float
) -> HealthVerdict:
    """Whether the updated terminals are within ``margin_points`` of the rest, per measure."""
    if not 0 <= margin_points <= 100:
        raise PolicyError("the health margin is between 0 and 100 percentage points")
    # Exact rates and the margin as typed (5.1, not the float nearest it): a rate
    # exactly at the margin must pass whatever the binary rounding would say.
    margin = Fraction(repr(float(margin_points)))
    if updated.terminals == 0:
        return HealthVerdict(True, "no updated terminal to watch yet")
    for measure, bad, mine, theirs in (
        ("in error", updated.in_error, updated.error_pct(), rest.error_pct()),
        ("offline", updated.offline, updated.offline_pct(), rest.offline_pct()),
    ):
        if mine - theirs > margin:
            return HealthVerdict(
                False,
                f"updated terminals: {bad} of {updated.terminals} {measure} ({_pct(mine)}) "
                f"against {_pct(theirs)} of the other {rest.terminals} "
                f"(more than {margin_points:g} points worse)",
            )
    return HealthVerdict(
        True,
        f"updated terminals: {_pct(updated.error_pct())} in error, "
        f"{_pct(updated.offline_pct())} offline; the other {rest.terminals}: "
        f"{_pct(rest.error_pct())}, {_pct(rest.offline_pct())}",
    )


def _pct(value: Fraction) -> str:
    return f"{float(value):.1f}%"
