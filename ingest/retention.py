"""Bounded history: monthly telemetry partitions, hourly rollups, retention.

The partition arithmetic is pure (tested without a database); ``run_retention`` is
the one job that applies it: it creates the coming months' partitions ahead of time,
rolls finished hours up into ``telemetry_hourly``, drops raw partitions older than
the retention period and rollups older than theirs. ``status_change`` is never
touched: status history is kept for good. ``tms db retention`` and ingest's daily
apscheduler job both call it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

PARENT = "telemetry"
DEFAULT_PARTITION = "telemetry_default"
_PARTITION_RE = re.compile(r"^telemetry_y(?P<year>\d{4})m(?P<month>\d{2})$")
# Late rows (an agent's offline queue) still land in hours already rolled up: each run
# recomputes this much before the last rolled-up hour.
ROLLUP_LOOKBACK = timedelta(days=2)
# DROP TABLE on a partition locks the parent: never queue behind a long query for it.
LOCK_TIMEOUT = "5s"


def month_start(moment: datetime | date) -> date:
    return date(moment.year, moment.month, 1)


def add_months(month: date, count: int) -> date:
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


def partition_name(month: date) -> str:
    return f"telemetry_y{month.year:04d}m{month.month:02d}"


def partition_month(name: str) -> date | None:
    """The month a partition name stands for, None for anything else (e.g. the default)."""
    match = _PARTITION_RE.match(name)
    if match is None:
        return None
    return date(int(match["year"]), int(match["month"]), 1)


def bounds(month: date) -> tuple[datetime, datetime]:
    """[start, end) of a month in UTC, the range its partition holds."""
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    nxt = add_months(month, 1)
    return start, datetime(nxt.year, nxt.month, 1, tzinfo=UTC)


def months_to_create(now: datetime, ahead: int, existing: set[date]) -> list[date]:
    """This month and the next ``ahead`` months, minus the partitions that exist."""
    first = month_start(now)
    wanted = [add_months(first, offset) for offset in range(ahead + 1)]
    return [month for month in wanted if month not in existing]


def months_to_drop(now: datetime, retention_days: int, existing: set[date]) -> list[date]:
    """Partitions whose every row is older than the retention cut-off."""
    cutoff = now - timedelta(days=retention_days)
    return sorted(month for month in existing if bounds(month)[1] <= cutoff)


@dataclass
class RetentionReport:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    hours_rolled_up: int = 0
    rollups_deleted: int = 0
    default_rows_deleted: int = 0

    def summary(self) -> str:
        return (
            f"partitions created={self.created or '-'} dropped={self.dropped or '-'}"
            f" hourly rollups written={self.hours_rolled_up}"
            f" rollups deleted={self.rollups_deleted}"
            f" stray old rows deleted={self.default_rows_deleted}"
        )


SQL_PARTITIONS = """
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'telemetry'::regclass
"""

# Rows that arrived before their month's partition existed sit in the default
# partition; they move into the new partition (PostgreSQL refuses to create it otherwise).
SQL_CREATE_MOVING = "CREATE TEMP TABLE telemetry_moving (LIKE telemetry) ON COMMIT DROP"
SQL_MOVE_OUT_OF_DEFAULT = """
WITH moved AS (DELETE FROM telemetry_default WHERE ts >= %(lo)s AND ts < %(hi)s RETURNING *)
INSERT INTO telemetry_moving SELECT * FROM moved
"""

SQL_ROLLUP = """
INSERT INTO telemetry_hourly (
    terminal_id, hour, samples, error_samples, cpu_avg, cpu_max, memory_avg, memory_max,
    disk_avg, disk_max, host_cpu_avg, host_memory_avg, host_disk_avg)
SELECT terminal_id, date_trunc('hour', ts, 'UTC'), count(*),
       count(*) FILTER (WHERE device_status IN ('error', 'unplugged')),
       avg(cpu_pct), max(cpu_pct), avg(memory_pct), max(memory_pct),
       avg(disk_pct), max(disk_pct), avg(host_cpu_pct), avg(host_memory_pct), avg(host_disk_pct)
FROM telemetry WHERE ts >= %(lo)s AND ts < %(hi)s
GROUP BY 1, 2
ON CONFLICT (terminal_id, hour) DO UPDATE SET
    samples = EXCLUDED.samples, error_samples = EXCLUDED.error_samples,
    cpu_avg = EXCLUDED.cpu_avg, cpu_max = EXCLUDED.cpu_max,
    memory_avg = EXCLUDED.memory_avg, memory_max = EXCLUDED.memory_max,
    disk_avg = EXCLUDED.disk_avg, disk_max = EXCLUDED.disk_max,
    host_cpu_avg = EXCLUDED.host_cpu_avg, host_memory_avg = EXCLUDED.host_memory_avg,
    host_disk_avg = EXCLUDED.host_disk_avg
"""


def create_partition(conn: psycopg.Connection[Any], month: date) -> None:
    """Create one month's partition, taking over its rows from the default partition."""
    lo, hi = bounds(month)
    conn.execute(SQL_CREATE_MOVING)
    conn.execute(SQL_MOVE_OUT_OF_DEFAULT, {"lo": lo, "hi": hi})
    conn.execute(
        sql.SQL("CREATE TABLE {} PARTITION OF telemetry FOR VALUES FROM ({}) TO ({})").format(
            sql.Identifier(partition_name(month)), sql.Literal(lo), sql.Literal(hi)
        )
    )
    conn.execute("INSERT INTO telemetry SELECT * FROM telemetry_moving")
    conn.execute("DROP TABLE telemetry_moving")


def _existing_months(conn: psycopg.Connection[Any]) -> set[date]:
    names = [row[0] for row in conn.execute(SQL_PARTITIONS)]
    return {month for name in names if (month := partition_month(name)) is not None}


def _roll_up(conn: psycopg.Connection[Any], now: datetime) -> int:
    row = conn.execute("SELECT max(hour) FROM telemetry_hourly").fetchone()
    last = row[0] if row else None
    if last is None:
        first = conn.execute("SELECT min(ts) FROM telemetry").fetchone()
        if first is None or first[0] is None:
            return 0
        lo = first[0]
    else:
        lo = last - ROLLUP_LOOKBACK
    hi = now.replace(minute=0, second=0, microsecond=0)  # only finished hours
    if lo >= hi:
        return 0
    cursor = conn.execute(SQL_ROLLUP, {"lo": lo, "hi": hi})
    return max(cursor.rowcount, 0)


def run_retention(
    conn: psycopg.Connection[Any],
    now: datetime,
    *,
    retention_days: int,
    rollup_retention_days: int,
    months_ahead: int,
) -> RetentionReport:
    """Apply the retention policy; each step commits on its own so a failure keeps the rest."""
    report = RetentionReport()
    with conn.transaction():
        existing = _existing_months(conn)
        for month in months_to_create(now, months_ahead, existing):
            create_partition(conn, month)
            report.created.append(partition_name(month))
    with conn.transaction():
        # Roll up before dropping, so the hours of a dropped month are kept.
        report.hours_rolled_up = _roll_up(conn, now)
    cutoff = now - timedelta(days=retention_days)
    for month in months_to_drop(now, retention_days, _existing_months(conn)):
        with conn.transaction():
            conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(partition_name(month))))
        report.dropped.append(partition_name(month))
    with conn.transaction():
        cursor = conn.execute("DELETE FROM telemetry_default WHERE ts < %s", (cutoff,))
        report.default_rows_deleted = max(cursor.rowcount, 0)
        cursor = conn.execute(
            "DELETE FROM telemetry_hourly WHERE hour < %s",
            (now - timedelta(days=rollup_retention_days),),
        )
        report.rollups_deleted = max(cursor.rowcount, 0)
    log.info("retention: %s", report.summary())
    return report
