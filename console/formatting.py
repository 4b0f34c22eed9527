"""How values read on screen: relative times, percentages, UTC timestamps (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime


def ago(moment: datetime | None, now: datetime) -> str:
    """'just now', '42 s ago', '5 min ago', '3 h ago', '2 d ago', or 'never'."""
    if moment is None:
        return "never"
    seconds = int((now - moment).total_seconds())
    if seconds < 5:
        return "just now"
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86_400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86_400} d ago"


def utc_text(moment: datetime | None) -> str:
    """An exact UTC timestamp for tooltips and detail pages."""
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}%"


def load_level(value: float | None) -> str:
    """A CSS class for a resource gauge: calm below 70 %, warn below 90 %, hot above."""
    if value is None:
        return "gauge-none"
    if value >= 90:
        return "gauge-hot"
    if value >= 70:
        return "gauge-warn"
    return "gauge-ok"
