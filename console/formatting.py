"""How values read on screen: times, percentages, durations, command results (pure functions)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.diagnostics import Check, DiagnosticsReport, Outcome, report_of


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
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:
        # A time near year 1 or 9999 with an offset (a report's "+23:59") that UTC
        # would move out of the years Python holds.
        offset = moment.utcoffset()
        early = offset is not None and offset.total_seconds() > 0
        return "before 0001-01-01 UTC" if early else "after 9999-12-31 UTC"
    # The year by hand: glibc's %Y writes year 1 as "1", not "0001".
    return f"{utc.year:04d}-{utc:%m-%d %H:%M:%S} UTC"


def percent(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.0f}%"


def percent_of_one(value: float | None, decimals: int = 1) -> str:
    """A 0..1 share (an uptime) as a percentage: '99.9%', never '100.0%' below 1."""
    if value is None or not math.isfinite(value):
        return "—"
    shown = f"{value * 100:.{decimals}f}"
    # Never round an outage away: below 100 % is shown as the highest figure under it.
    if value < 1 and float(shown) >= 100:
        shown = f"{100 - 10**-decimals:.{decimals}f}"
    return f"{shown}%"


def load_level(value: float | None) -> str:
    """A CSS class for a resource gauge: calm below 70 %, warn below 90 %, hot above."""
    if value is None or not math.isfinite(value):
        return "gauge-none"
    if value >= 90:
        return "gauge-hot"
    if value >= 70:
        return "gauge-warn"
    return "gauge-ok"


def duration(seconds: float | None) -> str:
    """An uptime or a wait in words: '45 s', '12 min', '5 h 3 min', '3 d 4 h', or '—'."""
    if seconds is None:
        return "—"
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min"
    if whole < 86_400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86_400} d {whole % 86_400 // 3600} h"


def milliseconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def data_value(value: Any) -> str:
    """One value of a check's data as text: scalars as they are, the rest as compact JSON."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str | int):
        return str(value)
    if isinstance(value, list) and all(isinstance(item, str | int | float) for item in value):
        return ", ".join(str(item) for item in value) if value else "none"
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


# An audit event's detail as one line of the log page; the row keeps all of it.
JSON_PREVIEW_CHARS = 500


def json_preview(value: Any, limit: int = JSON_PREVIEW_CHARS) -> str:
    """Compact JSON cut at ``limit`` characters (a 5 MB detail made a 12 MB page)."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + "…"


def pretty_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True)


def log_text(output: Any) -> str | None:
    """The log lines in a ``fetch_logs`` result, one per line, or None if it holds none
    (a result is whatever JSON the agent sent, not always an object)."""
    if not output or not isinstance(output, Mapping):
        return None
    for key in ("lines", "log_tail", "log"):
        lines = output.get(key)
        if isinstance(lines, list) and all(isinstance(line, str) for line in lines):
            return "\n".join(lines)
        if isinstance(lines, str):
            return lines
    return None


def diagnostics_report(output: Any) -> DiagnosticsReport | None:
    """The report in a diagnostics result, or None: the result column holds any JSON
    (an array, a number), and only an object can be a report."""
    return report_of(output) if isinstance(output, dict) else None


def diagnostics_summary(report: DiagnosticsReport) -> str:
    """One line an operator reads first: how many checks failed and which one first."""
    counts = report.counts()
    total = len(report.checks)
    warnings = counts[Outcome.WARNING]
    tail = f"; {warnings} warning{'s' if warnings != 1 else ''}" if warnings else ""
    first = report.first_failure
    if first is None:
        return f"All {total} checks passed{tail}" if total else "The report holds no checks"
    found = f"{first.title} — {first.summary}" if first.summary else first.title
    return f"{counts[Outcome.FAILED]} of {total} checks failed; first: {found}{tail}"


# Failed checks first, then what an operator should look at, then the rest; each group
# keeps the order the checks ran in.
_OUTCOME_ORDER = {Outcome.FAILED: 0, Outcome.WARNING: 1, Outcome.SKIPPED: 2, Outcome.PASSED: 3}


def checks_by_attention(report: DiagnosticsReport) -> list[Check]:
    return sorted(report.checks, key=lambda check: _OUTCOME_ORDER[check.outcome])


def local_time(moment: datetime | None, zone: str | None) -> str:
    """A time in a store's time zone ("2026-12-02 10:31 CET"); UTC when the zone is
    unknown (it is free text in the database) or the time cannot be moved."""
    if moment is None:
        return "—"
    try:
        local = moment.astimezone(ZoneInfo(zone or "UTC"))
    except (ZoneInfoNotFoundError, ValueError, OverflowError):
        return utc_text(moment)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname() or zone}"
