"""A terminal's uptime over a period from its status history (pure: no Flask, no database).

Uptime is the share of a terminal's in-service time during which its status was
'online'. The in-service window is the period cut to the terminal's own life (installed,
decommissioned) and to the present; the status at any instant is the new status of the
last change at or before it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter

ONLINE = "online"
# Before its first recorded change a terminal was provisioned and never heard from.
UNKNOWN = "unknown"


@dataclass(frozen=True)
class UptimeSeconds:
    """Seconds online and seconds in service; they add up across terminals and stores."""

    online: float = 0.0
    in_service: float = 0.0

    def __add__(self, other: UptimeSeconds) -> UptimeSeconds:
        return UptimeSeconds(self.online + other.online, self.in_service + other.in_service)

    @property
    def share(self) -> float | None:
        """online / in service; None when the terminal was not in service at all (shown
        as a dash, never as a made-up 0 % or 100 %)."""
        if self.in_service <= 0:
            return None
        return self.online / self.in_service


def in_service_window(
    period_start: datetime,
    period_end: datetime,
    *,
    in_service_from: datetime | None,
    decommissioned_at: datetime | None,
    now: datetime,
) -> tuple[datetime, datetime] | None:
    """The part of [period_start, period_end) the terminal was in service, up to ``now``;
    None when there is no such part (installed later, decommissioned earlier, a future
    period)."""
    start = period_start if in_service_from is None else max(period_start, in_service_from)
    end = min(period_end, now)
    if decommissioned_at is not None:
        end = min(end, decommissioned_at)
    return (start, end) if start < end else None


def uptime_seconds(
    window: tuple[datetime, datetime] | None,
    changes: Iterable[tuple[datetime, str]],
    status_before: str = UNKNOWN,
) -> UptimeSeconds:
    """Online and in-service seconds in ``window``.

    ``changes`` are (at, new_status) pairs: those at or before the window's start only
    settle the status it starts with (so the caller may pass the last change before the
    period, or everything before a mid-period installation), those at or after its end
    are ignored. ``status_before`` is the status before the first change given.
    """
    if window is None:
        return UptimeSeconds()
    start, end = window
    status = status_before
    online = 0.0
    since = start
    # Sorted by time alone (stable): changes at the same instant keep the caller's order,
    # so the last one recorded wins.
    for at, new_status in sorted(changes, key=itemgetter(0)):
        if at >= end:
            break
        if at > since:
            if status == ONLINE:
                online += (at - since).total_seconds()
            since = at
        status = new_status
    if status == ONLINE:
        online += (end - since).total_seconds()
    return UptimeSeconds(online, (end - start).total_seconds())
