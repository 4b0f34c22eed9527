"""The monthly report as values (pure: no Flask, no database): the month asked for, the
report's parts, uptime summed per store and customer, bar-chart geometry, file names.

console.report_repository fills these from the database; the page, the CSV file and
the PDF (console.report_pdf) all read the same ``Report``.
"""

from __future__ import annotations

import heapq
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from console.formatting import percent_of_one
from console.uptime import UptimeSeconds
from shared.uptime_snapshot import WORST_KEPT

# The earliest month a report covers: TMS keeps no history from before.
FIRST_YEAR = 2000
# A customer's zone can be up to 14 h ahead of UTC: its month begins that much earlier.
AHEAD_MAX = timedelta(hours=14)
WORST_SHOWN = WORST_KEPT  # what the fleet's snapshot keeps
TOP_ALERTING = 10
_MONTH = re.compile(r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})")


class BadMonth(ValueError):
    """A month the reports cannot cover; the message says why, for the person who asked."""


@dataclass(frozen=True, order=True)
class ReportMonth:
    year: int
    month: int

    @classmethod
    def parse(cls, text: str, now: datetime) -> ReportMonth:
        """``YYYY-MM`` between January 2000 and the current month, else BadMonth."""
        match = _MONTH.fullmatch(text)
        if match is None:
            raise BadMonth(f"{text[:20]!r} is not a month: write it as YYYY-MM, e.g. 2026-03.")
        month = int(match["month"])
        if not 1 <= month <= 12:
            raise BadMonth(f"{text} is not a month: the month is 01 to 12.")
        value = cls(int(match["year"]), month)
        if value.year < FIRST_YEAR:
            raise BadMonth(f"{text} is before {FIRST_YEAR}: TMS has no history that old.")
        if value > cls.of(now + AHEAD_MAX):
            raise BadMonth(f"{text} has not begun yet: there is nothing to report.")
        return value

    @classmethod
    def of(cls, moment: datetime) -> ReportMonth:
        return cls(moment.year, moment.month)

    @classmethod
    def last_full(cls, now: datetime) -> ReportMonth:
        """The month before ``now``'s (in UTC): the default report."""
        current = now.astimezone(UTC)
        return (
            cls(current.year - 1, 12)
            if current.month == 1
            else cls(current.year, current.month - 1)
        )

    def next(self) -> ReportMonth:
        return (
            ReportMonth(self.year + 1, 1)
            if self.month == 12
            else ReportMonth(self.year, self.month + 1)
        )

    def previous(self) -> ReportMonth:
        return (
            ReportMonth(self.year - 1, 12)
            if self.month == 1
            else ReportMonth(self.year, self.month - 1)
        )

    def bounds(self, zone: ZoneInfo) -> tuple[datetime, datetime]:
        """The month's first instant and the next month's, in ``zone``, as UTC instants."""
        following = self.next()
        start = datetime(self.year, self.month, 1, tzinfo=zone)
        end = datetime(following.year, following.month, 1, tzinfo=zone)
        return start.astimezone(UTC), end.astimezone(UTC)

    @property
    def key(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def title(self) -> str:
        return datetime(self.year, self.month, 1).strftime("%B %Y")


@dataclass(frozen=True)
class TerminalUptime:
    serial: str
    customer: str
    store_code: str | None
    store_name: str | None
    status: str  # current
    firmware: str | None
    seconds: UptimeSeconds


@dataclass(frozen=True)
class GroupUptime:
    """Uptime summed over a store's or a customer's terminals."""

    customer: str
    store_code: str | None  # None: the customer's whole fleet, or terminals without a store
    store_name: str | None
    terminals: int
    seconds: UptimeSeconds


@dataclass(frozen=True)
class AlertCount:
    kind: str
    severity: str
    alerts: int
    occurrences: int  # the sum of the alerts' counts: repeats of an open alert


@dataclass(frozen=True)
class ResolveTimes:
    resolved: int
    median_s: float | None
    p90_s: float | None


@dataclass(frozen=True)
class IncidentSummary:
    incidents: int
    alerts_grouped: int


@dataclass(frozen=True)
class FirmwareCount:
    version: str | None
    terminals: int


@dataclass(frozen=True)
class AlertingTerminal:
    serial: str
    customer: str
    store_code: str | None
    alerts: int
    occurrences: int


@dataclass(frozen=True)
class Report:
    month: ReportMonth
    customer: str | None  # None: the whole fleet
    timezone: str
    start: datetime
    end: datetime
    generated_at: datetime
    total: UptimeSeconds
    terminals_counted: int
    stores: list[GroupUptime]  # a customer's stores; the fleet's stores of every customer
    customers: list[GroupUptime]  # the fleet report's; empty for a customer's
    terminals: list[TerminalUptime]  # a customer's every terminal; the fleet's worst
    alerts: list[AlertCount]
    resolve: ResolveTimes
    incidents: IncidentSummary
    firmware: list[FirmwareCount]
    top_alerting: list[AlertingTerminal]
    in_progress: bool = False
    # The fleet's uptime comes from a snapshot a few minutes old: counted up to here.
    uptime_through: datetime | None = None

    @property
    def alert_total(self) -> int:
        return sum(a.alerts for a in self.alerts)


def store_order(groups: Sequence[GroupUptime]) -> list[GroupUptime]:
    return sorted(groups, key=lambda g: (g.customer, g.store_code is None, g.store_code or ""))


def worst_order(terminals: Sequence[TerminalUptime]) -> list[TerminalUptime]:
    return sorted(terminals, key=lambda t: (t.seconds.share or 0.0, t.customer, t.serial))


@dataclass(frozen=True)
class UptimeFigures:
    """A report's uptime part: the total, per store and customer, and its terminals."""

    total: UptimeSeconds
    counted: int
    stores: list[GroupUptime]
    customers: list[GroupUptime]
    terminals: list[TerminalUptime]


@dataclass
class UptimeTally:
    """Terminals' uptimes summed per store and per customer as they stream by, keeping
    every terminal (a customer's report) or only the worst (the fleet's)."""

    keep_all: bool
    worst_kept: int = WORST_SHOWN
    total: UptimeSeconds = field(default_factory=UptimeSeconds)
    counted: int = 0
    _stores: dict[tuple[str, str | None], tuple[str | None, int, UptimeSeconds]] = field(
        default_factory=dict
    )
    _customers: dict[str, tuple[int, UptimeSeconds]] = field(default_factory=dict)
    _terminals: list[TerminalUptime] = field(default_factory=list)
    _worst: list[tuple[float, int, TerminalUptime]] = field(default_factory=list)

    def add(self, terminal: TerminalUptime) -> None:
        seconds = terminal.seconds
        if seconds.in_service <= 0:
            return  # not in service this month: in no figure
        self.counted += 1
        self.total += seconds
        key = (terminal.customer, terminal.store_code)
        _, count, summed = self._stores.get(key, (None, 0, UptimeSeconds()))
        self._stores[key] = (terminal.store_name, count + 1, summed + seconds)
        count, summed = self._customers.get(terminal.customer, (0, UptimeSeconds()))
        self._customers[terminal.customer] = (count + 1, summed + seconds)
        if self.keep_all:
            self._terminals.append(terminal)
            return
        # A max-heap of the worst shares by their negation; the counter breaks ties.
        entry = (-(seconds.share or 0.0), self.counted, terminal)
        if len(self._worst) < self.worst_kept:
            heapq.heappush(self._worst, entry)
        elif entry[0] > self._worst[0][0]:
            heapq.heapreplace(self._worst, entry)

    def stores(self) -> list[GroupUptime]:
        groups = [
            GroupUptime(customer, code, name, count, seconds)
            for (customer, code), (name, count, seconds) in self._stores.items()
        ]
        return store_order(groups)

    def customers(self) -> list[GroupUptime]:
        groups = [
            GroupUptime(name, None, None, count, seconds)
            for name, (count, seconds) in self._customers.items()
        ]
        return sorted(groups, key=lambda g: g.customer)

    def terminals(self) -> list[TerminalUptime]:
        if self.keep_all:
            return sorted(self._terminals, key=lambda t: (t.store_code or "", t.serial))
        return worst_order([terminal for _, _, terminal in self._worst])

    def figures(self, with_customers: bool = True) -> UptimeFigures:
        customers = self.customers() if with_customers else []
        return UptimeFigures(self.total, self.counted, self.stores(), customers, self.terminals())


def share_text(value: float | None) -> str:
    """A report's uptime: two decimals, never rounded up to 100 % (formatting's rule)."""
    return percent_of_one(value, decimals=2)


def hours_text(seconds: float | None) -> str:
    """A time to resolve: '45 min', '3.5 h', '2.1 d', or '—'."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    if seconds < 3600:
        return f"{max(seconds, 0) / 60:.0f} min"
    if seconds < 2 * 86_400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"


def slug(name: str | None) -> str:
    """A file-name part for a customer: ASCII letters and digits joined by dashes."""
    if name is None:
        return "fleet"
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    text = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:60].strip("-")
    return text or "customer"


@dataclass(frozen=True)
class Bar:
    label: str
    value_text: str
    y: float
    width: float


@dataclass(frozen=True)
class BarChart:
    """Horizontal bars as SVG geometry: a label column, then a bar per value."""

    bars: list[Bar]
    width: int
    height: int
    label_width: int
    bar_height: int


def bar_chart(
    items: Sequence[tuple[str, float, str]],
    *,
    top: float | None = None,
    width: int = 600,
    label_width: int = 180,
    bar_height: int = 14,
    gap: int = 6,
) -> BarChart:
    """Bars for (label, value, value text) items; a bar's length is value / ``top`` (the
    largest value when not given) of the space right of the labels."""
    finite = [max(v, 0.0) if math.isfinite(v) else 0.0 for _, v, _ in items]
    scale = top if top is not None and top > 0 else max(finite, default=0.0) or 1.0
    room = width - label_width - 70  # the value's text after the longest bar
    bars = [
        Bar(label[:40], text, gap + n * (bar_height + gap), round(min(v / scale, 1.0) * room, 1))
        for n, ((label, _, text), v) in enumerate(zip(items, finite, strict=True))
    ]
    height = gap + len(bars) * (bar_height + gap)
    # An empty chart keeps room for its one line ("Nothing this month.").
    return BarChart(bars, width, height if bars else 28, label_width, bar_height)
