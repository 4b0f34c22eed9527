"""Retry delays: exponential backoff with jitter, and a long wait for refused logins.

Full jitter (a uniform delay between zero and the exponential bound, the agents'
default) keeps a fleet that lost its broker at the same moment from reconnecting in
lockstep when it comes back. A daemon that must not retry much sooner than its bound
(ingest reaching the broker or PostgreSQL again) draws from the upper part of it
(``min_fraction``).
"""

from __future__ import annotations

import random


class Backoff:
    """The delay before the next connection attempt; ``reset()`` after a good connection."""

    def __init__(
        self,
        base_s: float = 0.5,
        cap_s: float = 60.0,
        rng: random.Random | None = None,
        *,
        min_fraction: float = 0.0,
    ) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError("backoff needs 0 < base_s <= cap_s")
        if not 0 <= min_fraction <= 1:
            raise ValueError("backoff needs 0 <= min_fraction <= 1")
        self.base_s = base_s
        self.cap_s = cap_s
        self.min_fraction = min_fraction
        self._rng = rng or random.Random()
        self._attempt = 0

    @property
    def attempt(self) -> int:
        return self._attempt

    def reset(self) -> None:
        self._attempt = 0

    def bound_s(self) -> float:
        """The upper bound of the next delay, before jitter."""
        # min() on the exponent first keeps 2**attempt from growing without limit.
        return min(self.cap_s, self.base_s * 2 ** min(self._attempt, 62))

    def next_delay(self) -> float:
        """A delay after a failed attempt (broker down, network error)."""
        bound = self.bound_s()
        delay = self._rng.uniform(bound * self.min_fraction, bound)
        self._attempt += 1
        return delay

    def refused_delay(self) -> float:
        """A delay after the broker refused the login.

        Retrying bad credentials quickly cannot help and floods the broker's log, so
        this waits between half the cap and the cap; a fixed secret is still picked up
        within one cap.
        """
        self._attempt += 1
        return self._rng.uniform(self.cap_s / 2, self.cap_s)
