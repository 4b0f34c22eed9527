"""Health gating: updated terminals against the rest of the fleet, by rate and margin."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rollouts.errors import PolicyError
from rollouts.health import HealthCounts, health_verdict

CALM = HealthCounts(terminals=1000, in_error=20, offline=30)  # 2% in error, 3% offline


def test_updated_terminals_like_the_rest_are_healthy() -> None:
    verdict = health_verdict(HealthCounts(100, 2, 3), CALM, margin_points=5)
    assert verdict.healthy
    assert "2.0% in error" in verdict.reason


def test_an_error_rate_more_than_the_margin_worse_halts() -> None:
    verdict = health_verdict(HealthCounts(100, 8, 3), CALM, margin_points=5)
    assert not verdict.healthy
    assert verdict.reason == (
        "updated terminals: 8 of 100 in error (8.0%) against 2.0% of the other 1000 "
        "(more than 5 points worse)"
    )


def test_an_offline_rate_more_than_the_margin_worse_halts() -> None:
    verdict = health_verdict(HealthCounts(100, 0, 9), CALM, margin_points=5)
    assert not verdict.healthy
    assert "9 of 100 offline (9.0%)" in verdict.reason


def test_exactly_at_the_margin_passes() -> None:
    assert health_verdict(HealthCounts(100, 7, 8), CALM, margin_points=5).healthy
    # 0.4% against 0.1% with a margin of 0.3 points: in floats 0.4 - 0.1 is a hair
    # more than 0.3, and this would halt.
    rest = HealthCounts(1000, 1, 0)
    assert 100 * 4 / 1000 - 100 * 1 / 1000 > 0.3
    assert health_verdict(HealthCounts(1000, 4, 0), rest, margin_points=0.3).healthy
    assert not health_verdict(HealthCounts(1000, 5, 0), rest, margin_points=0.3).healthy


def test_rates_not_counts_decide() -> None:
    # 30 terminals in error is many, but 1% of 3000 is better than the rest's 2%.
    assert health_verdict(HealthCounts(3000, 30, 0), CALM, margin_points=0).healthy
    # One in error is few, but it is 10% of a wave of 10.
    assert not health_verdict(HealthCounts(10, 1, 0), CALM, margin_points=5).healthy


def test_a_single_updated_terminal_in_error_halts() -> None:
    assert not health_verdict(HealthCounts(1, 1, 0), CALM, margin_points=50).healthy
    assert health_verdict(HealthCounts(1, 0, 0), CALM, margin_points=0).healthy


def test_no_updated_terminal_is_nothing_to_judge() -> None:
    verdict = health_verdict(HealthCounts(0, 0, 0), CALM, margin_points=0)
    assert verdict.healthy
    assert "no updated terminal" in verdict.reason


def test_an_empty_comparison_group_counts_as_perfect() -> None:
    nobody = HealthCounts(0, 0, 0)
    assert health_verdict(HealthCounts(100, 5, 0), nobody, margin_points=5).healthy
    assert not health_verdict(HealthCounts(100, 6, 0), nobody, margin_points=5).healthy


def test_counts_and_margins_check_themselves() -> None:
    with pytest.raises(ValueError):
        HealthCounts(10, 11, 0)
    with pytest.raises(ValueError):
        HealthCounts(10, 0, -1)
    with pytest.raises(PolicyError):
        health_verdict(CALM, CALM, margin_points=-1)


COUNTS = st.integers(0, 500).flatmap(
    lambda n: st.builds(HealthCounts, st.just(n), st.integers(0, n), st.integers(0, n))
)


@given(COUNTS, COUNTS, st.integers(0, 100))
def test_no_worse_than_the_rest_is_always_healthy(
    rest: HealthCounts, updated: HealthCounts, margin: int
) -> None:
    verdict = health_verdict(updated, rest, margin)
    if updated.error_pct() <= rest.error_pct() and updated.offline_pct() <= rest.offline_pct():
        assert verdict.healthy
    if updated.error_pct() - rest.error_pct() > margin:
        assert not verdict.healthy
