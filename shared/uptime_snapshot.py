"""The fleet's monthly uptime, kept as a snapshot so that the fleet report does not
work it out for every terminal at each view.

Working it out is one LATERAL per terminal over its status changes: 1.1 s at 100,000
terminals (bench/console.py), the whole of the fleet report's time. Ingest's primary
worker refreshes the month in progress every few minutes (and the last month while late
messages can still change it); the console reads the snapshot and works the month out
itself, storing the result, only when there is no fresh one. A month's snapshot is
final once its month has settled: the agent's outbox replays what a terminal kept while
offline, so status changes keep arriving for a few days after a month ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.uptime_sql import FLEET_UPTIME

# How long after a month's end its status history may still change (late replays).
SETTLE = timedelta(days=3)
# A snapshot of a month still changing is used this long after it was computed; ingest
# refreshes it more often than that (uptime_snapshot_interval_s), so nobody waits.
MAX_AGE = timedelta(minutes=15)
# The fleet report's worst terminals by uptime share: the snapshot keeps this many.
WORST_KEPT = 20


@dataclass(frozen=True, slots=True)
class UtcMonth:
    key: str  # YYYY-MM
    start: datetime
    end: datetime

    @classmethod
    def of(cls, moment: datetime) -> UtcMonth:
        moment = moment.astimezone(UTC)
        start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
        following = (
            datetime(moment.year + 1, 1, 1, tzinfo=UTC)
            if moment.month == 12
            else datetime(moment.year, moment.month + 1, 1, tzinfo=UTC)
        )
        return cls(f"{moment.year:04d}-{moment.month:02d}", start, following)

    def previous(self) -> UtcMonth:
        return UtcMonth.of(self.start - timedelta(days=1))


def usable(month_end: datetime, through: datetime, computed_at: datetime, now: datetime) -> bool:
    """Whether a snapshot computed at ``computed_at`` covering its month up to
    ``through`` can stand for the month's uptime at ``now``."""
    if computed_at >= month_end + SETTLE and through >= month_end:
        return True  # settled: nothing can change it any more
    return now - computed_at < MAX_AGE


def refresh_params(month: UtcMonth, now: datetime) -> dict[str, object]:
    """SQL_REFRESH's parameters: the month up to the present, for the whole fleet."""
    return {
        "month": month.key,
        "start": month.start,
        "end": min(month.end, now),
        "customer": None,
        "worst": WORST_KEPT,
    }


def months_to_refresh(now: datetime) -> list[UtcMonth]:
    """What ingest keeps fresh: the month in progress, and the last one until it settles."""
    current = UtcMonth.of(now)
    last = current.previous()
    return [current, last] if now < last.end + SETTLE else [current]


# Works the month out and keeps it: :month, :start, :end (already cut to the present),
# :worst; :customer is NULL (the whole fleet). Returns what it stored. The stores (one
# row each, 10,000 at 100,000 terminals) are kept apart: only the CSV reads them.
_ROW = """jsonb_build_array(f.part, f.customer, f.store_code, f.store_name, f.serial, f.status,
                        f.firmware, f.terminals, f.online_s, f.in_service_s)"""
SQL_REFRESH = f"""
INSERT INTO fleet_uptime_snapshot (month, computed_at, through, rows, stores)
SELECT :month, statement_timestamp(), :end,
       COALESCE(jsonb_agg({_ROW}) FILTER (WHERE f.part <> 'store'), CAST('[]' AS jsonb)),
       COALESCE(jsonb_agg({_ROW}) FILTER (WHERE f.part = 'store'), CAST('[]' AS jsonb))
FROM ({FLEET_UPTIME}) f
ON CONFLICT (month) DO UPDATE
SET computed_at = EXCLUDED.computed_at, through = EXCLUDED.through, rows = EXCLUDED.rows,
    stores = EXCLUDED.stores
RETURNING computed_at, through, rows, stores
"""

SQL_SNAPSHOT = """SELECT computed_at, through, rows,
       CASE WHEN :with_stores THEN stores ELSE CAST('[]' AS jsonb) END AS stores
FROM fleet_uptime_snapshot WHERE month = :month"""
