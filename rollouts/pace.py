"""The fleet-wide start rate (terminals per minute) as a pure token bucket.

A bucket refills at ``per_minute / 60`` tokens a second up to ``burst`` tokens, and
each task started takes one. The burst defaults to ten seconds' worth, so a rate of
600 a minute starts about 100 downloads at a time, not 600 at once: the rate exists to
spare the console's bandwidth, and a sliding "started in the last minute" count would
allow the whole minute's starts in one go. The bucket is a value: the driver keeps the
newest one (in memory is enough: after a restart a full bucket is one burst).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from rollouts.errors import PolicyError

_BURST_SECONDS = 10


@dataclass(frozen=True)
class RateLimit:
    per_minute: int
    burst: int | None = None  # None: ten seconds' worth, at least one

    def __post_init__(self) -> None:
        if self.per_minute < 1:
            raise PolicyError("the rate must be at least 1 terminal a minute")
        if self.burst is not None and self.burst < 1:
            raise PolicyError("the burst must be at least 1 terminal")

    @property
    def capacity(self) -> int:
        if self.burst is not None:
            return self.burst
        return max(1, self.per_minute * _BURST_SECONDS // 60)

    @property
    def per_second(self) -> float:
        return self.per_minute / 60


@dataclass(frozen=True)
class RateBucket:
    """Tokens available at ``at``; ``refilled(now)`` before reading them."""

    tokens: float
    at: datetime

    @classmethod
    def full(cls, limit: RateLimit, now: datetime) -> RateBucket:
        return cls(tokens=float(limit.capacity), at=now)

    def refilled(self, limit: RateLimit, now: datetime) -> RateBucket:
        # A clock that went back adds nothing (and takes nothing away).
        elapsed = max(0.0, (now - self.at).total_seconds())
        tokens = min(float(limit.capacity), self.tokens + elapsed * limit.per_second)
        return RateBucket(tokens=tokens, at=max(now, self.at))

    @property
    def available(self) -> int:
        # The epsilon keeps float refills (0.1 + 0.2 ...) from losing a whole token.
        return math.floor(self.tokens + 1e-9)

    def take(self, count: int) -> RateBucket:
        if not 0 <= count <= self.available:
            raise ValueError(f"cannot take {count} tokens of {self.available}")
        return RateBucket(tokens=max(0.0, self.tokens - count), at=self.at)

    def next_token_at(self, limit: RateLimit) -> datetime:
        """When the bucket holds a whole token (``at`` itself if it does now)."""
        missing = 1 - self.tokens
        if self.available >= 1:
            return self.at
        return self.at + timedelta(seconds=missing / limit.per_second)
