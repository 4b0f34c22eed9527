"""When a sign-in is refused unchecked: the sliding window of console.login_throttle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from console.login_throttle import Lockout, ThrottlePolicy, lock_remaining, lockout

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=15)


def ago(*minutes: float) -> list[datetime]:
    return [NOW - timedelta(minutes=m) for m in minutes]


def test_fewer_failures_than_the_limit_never_lock() -> None:
    assert lock_remaining(ago(1, 2, 3, 4), 5, WINDOW, NOW) is None
    assert lock_remaining([], 1, WINDOW, NOW) is None


def test_the_limit_within_the_window_locks_until_the_limit_th_newest_ages_out() -> None:
    # Five failures, the fifth-newest 10 minutes ago: locked for 5 more minutes.
    assert lock_remaining(ago(1, 2, 3, 4, 10), 5, WINDOW, NOW) == timedelta(minutes=5)
    # More failures than the limit: the limit-th newest decides, not the oldest.
    assert lock_remaining(ago(1, 2, 3, 4, 5, 14, 14.5), 5, WINDOW, NOW) == timedelta(minutes=10)


def test_failures_older_than_the_window_do_not_count() -> None:
    assert lock_remaining(ago(1, 2, 3, 4, 15), 5, WINDOW, NOW) is None
    assert lock_remaining(ago(16, 17, 18, 19, 20), 5, WINDOW, NOW) is None


def test_order_of_the_times_does_not_matter() -> None:
    times = ago(10, 1, 4, 2, 3)
    assert lock_remaining(times, 5, WINDOW, NOW) == lock_remaining(sorted(times), 5, WINDOW, NOW)


def test_the_longer_of_the_user_and_address_locks_is_reported() -> None:
    policy = ThrottlePolicy(per_user=2, per_address=3, window=WINDOW)
    user_lock = lockout(ago(1, 2), ago(1, 2), policy, NOW)
    assert user_lock == Lockout("user", timedelta(minutes=13))
    # The address is locked for 12 minutes, the user for 13: the user's lock is told.
    assert lockout(ago(1, 2), ago(1, 2, 3), policy, NOW) == user_lock
    assert lockout(ago(1), ago(1, 2, 3), policy, NOW) == Lockout("address", timedelta(minutes=12))
    assert lockout(ago(1), ago(1, 2), policy, NOW) is None


def test_the_message_says_who_is_locked_and_for_how_long() -> None:
    assert Lockout("user", timedelta(minutes=13)).message() == (
        "Too many failed sign-ins for this username. Try again in 13 minutes."
    )
    short = Lockout("address", timedelta(seconds=5))
    assert short.message() == "Too many failed sign-ins from your address. Try again in 1 minute."
    assert short.retry_after_s == 5
    assert Lockout("user", timedelta(seconds=0.2)).retry_after_s == 1
