"""The login throttle: slowed after a few failures, locked out after more, then forgiven."""

from __future__ import annotations

from broker.login_throttle import LoginThrottle, ThrottlePolicy, login_keys


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


POLICY = ThrottlePolicy(delay_after=2, lockout_after=4, window_s=60, lockout_s=300)
KEYS = login_keys("TC-1", "10.0.0.9")


def test_slowed_then_locked_then_released() -> None:
    clock = Clock()
    throttle = LoginThrottle(POLICY, clock)
    assert throttle.before_attempt(KEYS).delay_s == 0
    throttle.record_failure(KEYS)
    throttle.record_failure(KEYS)
    first = throttle.before_attempt(KEYS)
    assert not first.refused and first.delay_s > 0
    throttle.record_failure(KEYS)
    assert throttle.before_attempt(KEYS).delay_s > first.delay_s
    assert throttle.record_failure(KEYS) == ["client:TC-1", "address:10.0.0.9"]
    verdict = throttle.before_attempt(KEYS)
    assert verdict.refused and verdict.locked_key == "client:TC-1"
    clock.now += 301
    assert throttle.before_attempt(KEYS) == throttle.before_attempt(KEYS)
    assert not throttle.before_attempt(KEYS).refused
    assert throttle.stats.lockouts == 2 and throttle.stats.refused_locked == 1


def test_old_failures_are_forgotten_and_success_clears() -> None:
    clock = Clock()
    throttle = LoginThrottle(POLICY, clock)
    for _ in range(3):
        throttle.record_failure(KEYS)
    clock.now += 61
    assert throttle.before_attempt(KEYS).delay_s == 0
    throttle.record_failure(KEYS)
    throttle.record_failure(KEYS)
    throttle.record_success(KEYS)
    assert throttle.before_attempt(KEYS).delay_s == 0


def test_another_address_is_not_slowed_by_a_strangers_failures() -> None:
    throttle = LoginThrottle(POLICY, Clock())
    for _ in range(3):
        throttle.record_failure(login_keys("x", "10.0.0.9"))
    assert throttle.before_attempt(login_keys("TC-1", "10.0.0.7")).delay_s == 0


def test_memory_is_bounded() -> None:
    throttle = LoginThrottle(ThrottlePolicy(max_keys=10), Clock())
    for n in range(100):
        throttle.record_failure(login_keys(f"id-{n}", None))
    assert len(throttle._keys) <= 10
