"""Maintenance windows: when a store lets a terminal install firmware, in its own time zone.

A window is ``[DAYS ]HH:MM-HH:MM``: ``02:00-05:00``, ``Mon-Fri 02:00-05:00``,
``Sat,Sun 22:00-04:00``. It may cross midnight; its days are the days it *opens*, so
``Fri 22:00-04:00`` includes Saturday 00:00-04:00. ``24:00`` may end a window
(``00:00-24:00`` is the whole day). No window (a blank field, None here) means installs
may run at any time. Downloads are never gated: only the install waits for the window.

Each day's window is one span of real time, from the first moment the store's clock
shows the start to the first moment it shows the end. Across daylight saving:

- spring forward (Berlin, 02:00 -> 03:00): a time the clock skips counts as reached when
  the clock jumps past it, so ``02:00-05:00`` opens at 03:00 and is two hours long that
  night, and a window wholly inside the skipped hour does not open that night;
- fall back (Berlin, 03:00 -> 02:00): a repeated time is reached the first time it is
  shown, so ``02:00-05:00`` lasts four hours, and ``02:00-02:30`` opens once, not twice.

An unknown or malformed zone name is treated as UTC (``store_zone``): a window in the
wrong zone is a few hours off, which is better than a store whose terminals never
update; the console can warn with ``is_known_zone``. ``now`` is always passed in, and
must be timezone-aware.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rollouts.errors import WindowError

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
ALL_DAYS = frozenset(range(7))
_WINDOW = re.compile(
    r"(?:(?P<days>[A-Za-z][A-Za-z,\s-]*?)\s+)?"
    r"(?P<start>[0-9]{1,2}:[0-9]{2})\s*-\s*(?P<end>[0-9]{1,2}:[0-9]{2})"
)
_EXAMPLE = "e.g. 02:00-05:00, 22:00-04:00 or Mon-Fri 02:00-05:00"


@dataclass(frozen=True)
class MaintenanceWindow:
    """A daily window in minutes after local midnight, on the weekdays it opens (Monday 0)."""

    start_minute: int  # 0..1439
    end_minute: int  # 1..1440; not more than start_minute: it ends the next day
    days: frozenset[int] = ALL_DAYS

    def __post_init__(self) -> None:
        if not 0 <= self.start_minute < 1440 or not 0 < self.end_minute <= 1440:
            raise WindowError(f"a window runs from 00:00 to 24:00 at most; {_EXAMPLE}")
        if self.start_minute == self.end_minute:
            raise WindowError(
                "a window that ends when it starts is empty; for any time, leave it blank"
            )
        if not self.days or not self.days <= ALL_DAYS:
            raise WindowError("a window needs at least one day (Mon to Sun)")

    @property
    def crosses_midnight(self) -> bool:
        return self.end_minute < self.start_minute

    def __str__(self) -> str:
        times = f"{_clock(self.start_minute)}-{_clock(self.end_minute)}"
        if self.days == ALL_DAYS:
            return times
        return f"{_day_list(self.days)} {times}"


def parse_window(text: str) -> MaintenanceWindow | None:
    """The window in ``text``; None for a blank one (any time); ``WindowError`` otherwise."""
    text = text.strip()
    if not text:
        return None
    match = _WINDOW.fullmatch(text)
    if match is None:
        raise WindowError(f"{text!r} is not a window; {_EXAMPLE}")
    start = _minutes(match["start"], allow_24=False)
    end = _minutes(match["end"], allow_24=True)
    days = _days(match["days"]) if match["days"] else ALL_DAYS
    return MaintenanceWindow(start_minute=start, end_minute=end, days=days)


def store_zone(name: str) -> tzinfo:
    """The zone called ``name``, or UTC when there is no such zone (see the docstring)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        # ValueError: not a zone key at all ("", "../etc/passwd").
        return UTC


def is_known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def in_window(now: datetime, tz_name: str, window: MaintenanceWindow | None) -> bool:
    """Whether a terminal in zone ``tz_name`` may install at ``now``."""
    _require_aware(now)
    return window is None or window_closes_at(now, tz_name, window) is not None


def window_closes_at(
    now: datetime, tz_name: str, window: MaintenanceWindow | None
) -> datetime | None:
    """When the window open at ``now`` closes (UTC); None when none is open or there is none.

    An install that would run past it can wait for the next night instead."""
    _require_aware(now)
    if window is None:
        return None
    zone = store_zone(tz_name)
    today = now.astimezone(zone).date()
    # Yesterday's window may still be open after midnight; tomorrow's only matters in a
    # zone whose clock goes back across midnight.
    for offset in (-1, 0, 1):
        span = _span(today + timedelta(days=offset), zone, window)
        if span is not None and span[0] <= now < span[1]:
            return span[1]
    return None


def next_window_start(now: datetime, tz_name: str, window: MaintenanceWindow | None) -> datetime:
    """``now`` if installs may run now, else when the next window opens (UTC)."""
    _require_aware(now)
    if in_window(now, tz_name, window):
        return now
    assert window is not None  # in_window is always true without one
    zone = store_zone(tz_name)
    today = now.astimezone(zone).date()
    # Within two weeks a window opens on one of its days, DST transitions included.
    opens = [
        span[0]
        for offset in range(-1, 15)
        if (span := _span(today + timedelta(days=offset), zone, window)) is not None
        and span[0] >= now
    ]
    return min(opens)


def _span(day: date, zone: tzinfo, window: MaintenanceWindow) -> tuple[datetime, datetime] | None:
    """The window that opens on ``day`` as a UTC span; None if it does not open that day."""
    if day.weekday() not in window.days:
        return None
    midnight = datetime(day.year, day.month, day.day)
    end_day = midnight + timedelta(days=1) if window.crosses_midnight else midnight
    opens = _first_instant(midnight + timedelta(minutes=window.start_minute), zone)
    closes = _first_instant(end_day + timedelta(minutes=window.end_minute), zone)
    return (opens, closes) if opens < closes else None


def _first_instant(wall: datetime, zone: tzinfo) -> datetime:
    """The first moment (UTC) a clock in ``zone`` shows ``wall`` or, in a gap, jumps past it."""
    earlier = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if earlier.astimezone(zone).replace(tzinfo=None) == wall:
        return earlier  # fold=0 is the first of a repeated time
    # ``wall`` falls in a gap: fold=0 maps it with the offset before the jump (a moment
    # after it) and fold=1 with the one after (a moment before it). The jump lies
    # between; find it to the second (tz transitions fall on whole seconds).
    before = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    after = earlier
    while after - before > timedelta(seconds=1):
        middle = before + (after - before) / 2
        middle = middle.replace(microsecond=0)
        if middle.astimezone(zone).replace(tzinfo=None) >= wall:
            after = middle
        else:
            before = middle
    return after


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware (UTC)")


def _minutes(text: str, *, allow_24: bool) -> int:
    hours, minutes = (int(part) for part in text.split(":"))
    if minutes > 59 or hours > 24 or (hours == 24 and (minutes or not allow_24)):
        allowed = "00:00 to 24:00" if allow_24 else "00:00 to 23:59"
        raise WindowError(f"{text} is not a time of day ({allowed}); {_EXAMPLE}")
    return hours * 60 + minutes


def _days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for item in (part.strip() for part in text.split(",")):
        first, sep, last = (part.strip() for part in item.partition("-"))
        a = _day(first)
        b = _day(last) if sep else a
        # A range may wrap: Fri-Mon is Friday to Monday.
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days)


def _day(text: str) -> int:
    """Monday is 0; a day is named by at least its first three letters ("Mon", "monday")."""
    lowered = text.lower()
    for index, name in enumerate(_FULL_DAY_NAMES):
        if len(lowered) >= 3 and name.startswith(lowered):
            return index
    raise WindowError(f"{text!r} is not a day: use Mon, Tue, Wed, Thu, Fri, Sat, Sun")


def _day_list(days: frozenset[int]) -> str:
    """``Mon-Fri``, ``Mon,Wed``, ``Mon,Fri-Sun``: runs of three or more as ranges."""
    runs: list[list[int]] = []
    for day in sorted(days):
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    parts: list[str] = []
    for run in runs:
        names = [DAY_NAMES[d].title() for d in run]
        parts.extend([f"{names[0]}-{names[-1]}"] if len(run) >= 3 else names)
    return ",".join(parts)


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"
