"""When a sign-in is refused before its password is even checked (pure: no Flask, no DB).

A username gets ``per_user`` failed sign-ins, and an address ``per_address``, within a
sliding window; beyond that, sign-ins are refused until the oldest counted failure
ages out of the window. Refused attempts are not failures: hammering a locked account
does not lengthen its lock, but never gets a password checked either. The counts come
from the audit trail, so every console process and a restarted one agree on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class ThrottlePolicy:
    per_user: int = 5
    per_address: int = 20
    window: timedelta = timedelta(minutes=15)


@dataclass(frozen=True)
class Lockout:
    """Why a sign-in is refused, and for how long."""

    scope: str  # "user" or "address"
    retry_after: timedelta

    @property
    def retry_after_s(self) -> int:
        return max(1, int(self.retry_after.total_seconds() + 0.999))

    def message(self) -> str:
        minutes = max(1, round(self.retry_after.total_seconds() / 60))
        who = "for this username" if self.scope == "user" else "from your address"
        unit = "minute" if minutes == 1 else "minutes"
        return f"Too many failed sign-ins {who}. Try again in {minutes} {unit}."


def lock_remaining(
    failures: Sequence[datetime], limit: int, window: timedelta, now: datetime
) -> timedelta | None:
    """How long a key with these failure times stays locked, or None if it is not.

    Locked while ``limit`` failures fall within the window: until the ``limit``-th
    newest of them is older than the window.
    """
    recent = sorted((at for at in failures if at > now - window), reverse=True)
    if len(recent) < limit:
        return None
    remaining = recent[limit - 1] + window - now
    return remaining if remaining > timedelta(0) else None


def lockout(
    user_failures: Sequence[datetime],
    address_failures: Sequence[datetime],
    policy: ThrottlePolicy,
    now: datetime,
) -> Lockout | None:
    """The lock on this sign-in (the longer one if both the user and address are locked)."""
    found = [
        Lockout(scope, remaining)
        for scope, failures, limit in (
            ("user", user_failures, policy.per_user),
            ("address", address_failures, policy.per_address),
        )
        if (remaining := lock_remaining(failures, limit, policy.window, now)) is not None
    ]
    return max(found, key=lambda lock: lock.retry_after) if found else None
