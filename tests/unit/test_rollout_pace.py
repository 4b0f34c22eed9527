"""The fleet-wide start rate as a token bucket."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rollouts.errors import PolicyError
from rollouts.pace import RateBucket, RateLimit

T0 = datetime(2026, 1, 14, 12, 0, tzinfo=UTC)


def test_the_burst_is_ten_seconds_worth_at_least_one() -> None:
    assert RateLimit(600).capacity == 100
    assert RateLimit(60).capacity == 10
    assert RateLimit(3).capacity == 1
    assert RateLimit(600, burst=5).capacity == 5


def test_a_full_bucket_refills_at_the_rate_and_never_past_its_capacity() -> None:
    limit = RateLimit(60)  # one a second, ten at most
    bucket = RateBucket.full(limit, T0)
    assert bucket.available == 10
    bucket = bucket.take(10)
    assert bucket.available == 0
    assert bucket.refilled(limit, T0 + timedelta(seconds=3)).available == 3
    assert bucket.refilled(limit, T0 + timedelta(hours=1)).available == 10


def test_next_token_at() -> None:
    limit = RateLimit(30)  # one every two seconds
    empty = RateBucket.full(limit, T0).take(limit.capacity)
    assert empty.next_token_at(limit) == T0 + timedelta(seconds=2)
    assert RateBucket.full(limit, T0).next_token_at(limit) == T0


def test_a_clock_that_goes_back_adds_nothing() -> None:
    limit = RateLimit(60)
    empty = RateBucket(tokens=0.0, at=T0)
    back = empty.refilled(limit, T0 - timedelta(minutes=5))
    assert back.available == 0
    assert back.at == T0


def test_taking_more_than_is_there_is_refused() -> None:
    with pytest.raises(ValueError):
        RateBucket.full(RateLimit(60), T0).take(11)
    with pytest.raises(ValueError):
        RateBucket.full(RateLimit(60), T0).take(-1)


def test_a_rate_checks_itself() -> None:
    with pytest.raises(PolicyError):
        RateLimit(0)
    with pytest.raises(PolicyError):
        RateLimit(10, burst=0)


@given(st.integers(1, 10_000), st.lists(st.integers(0, 120_000), max_size=40))
def test_starts_never_exceed_the_burst_plus_the_rate(per_minute: int, steps_ms: list[int]) -> None:
    # Take everything available at each step: the total stays within the bound.
    limit = RateLimit(per_minute)
    bucket = RateBucket.full(limit, T0)
    now, started = T0, 0
    for step in steps_ms:
        now += timedelta(milliseconds=step)
        bucket = bucket.refilled(limit, now)
        started += bucket.available
        bucket = bucket.take(bucket.available)
    elapsed_min = (now - T0).total_seconds() / 60
    assert started <= limit.capacity + per_minute * elapsed_min + 1e-6
