"""Bounded history: monthly partitions of telemetry and the terminal log, rollups, retention.

The partition arithmetic is pure (tested without a database); ``run_retention`` is
the one job that applies it: it creates the coming months' partitions of both
partitioned tables ahead of time, rolls finished hours up into ``telemetry_hourly``,
drops partitions older than the retention period and rollups older than theirs.
``terminal_log`` (device events, command results) is kept as long as raw telemetry,
``retention_days``: an incident is read with the heartbeats around it, and a log
that outlived them would show events without their context. ``status_change`` is
never touched: status history is kept for good. ``tms db retention`` and ingest's
daily apscheduler job both call it.
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


_MONTH_SUFFIX_RE = re.compile(r"y(?P<year>\d{4})m(?P<month>\d{2})")


@dataclass(frozen=True, slots=True)
class PartitionedTable:
    """A table partitioned by month on ``column``, with a default partition for the rest."""

    parent: str
    column: str

    @property
    def default(self) -> str:
        return f"{self.parent}_default"

    def partition_name(self, month: date) -> str:
        return f"{self.parent}_y{month.year:04d}m{month.month:02d}"

    def partition_month(self, name: str) -> date | None:
        """The month a partition name stands for, None for anything else (the default)."""
        prefix = f"{self.parent}_"
        if not name.startswith(prefix):
            return None
        match = _MONTH_SUFFIX_RE.fullmatch(name, len(prefix))
        if match is None:
            return None
        return date(int(match["year"]), int(match["month"]), 1)


TELEMETRY = PartitionedTable("telemetry", "ts")
TERMINAL_LOG = PartitionedTable("terminal_log", "at")  # migration 0005
PARTITIONED = (TELEMETRY, TERMINAL_LOG)


def partition_name(month: date, table: PartitionedTable = TELEMETRY) -> str:
    return table.partition_name(month)


def partition_month(name: str, table: PartitionedTable = TELEMETRY) -> date | None:
    return table.partition_month(name)


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
    commands_deleted: int = 0

    def summary(self) -> str:
        return (
            f"partitions created={self.created or '-'} dropped={self.dropped or '-'}"
            f" hourly rollups written={self.hours_rolled_up}"
            f" rollups deleted={self.rollups_deleted}"
            f" stray old rows deleted={self.default_rows_deleted}"
            f" old commands deleted={self.commands_deleted}"
        )


SQL_PARTITIONS = """
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = %s::text::regclass
"""

# Rows that arrived before their month's partition existed sit in the default
# partition; they move into the new partition (PostgreSQL refuses to create it otherwise).
SQL_CREATE_MOVING = sql.SQL("CREATE TEMP TABLE {moving} (LIKE {parent}) ON COMMIT DROP")
SQL_MOVE_OUT_OF_DEFAULT = sql.SQL("""
WITH moved AS (
    DELETE FROM {default} WHERE {column} >= %(lo)s AND {column} < %(hi)s RETURNING *
)
INSERT INTO {moving} SELECT * FROM moved
""")
SQL_CREATE_PARTITION = sql.SQL(
    "CREATE TABLE {partition} PARTITION OF {parent} FOR VALUES FROM ({lo}) TO ({hi})"
)
SQL_MOVE_BACK = sql.SQL("INSERT INTO {parent} SELECT * FROM {moving}")
SQL_DELETE_OLD_DEFAULT = sql.SQL("DELETE FROM {default} WHERE {column} < %s")

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


def create_partition(
    conn: psycopg.Connection[Any], month: date, table: PartitionedTable = TELEMETRY
) -> None:
    """Create one month's partition, taking over its rows from the default partition."""
    lo, hi = bounds(month)
    names = {
        "parent": sql.Identifier(table.parent),
        "default": sql.Identifier(table.default),
        "column": sql.Identifier(table.column),
        "moving": sql.Identifier(f"{table.parent}_moving"),
        "partition": sql.Identifier(table.partition_name(month)),
        "lo": sql.Literal(lo),
        "hi": sql.Literal(hi),
    }
    conn.execute(SQL_CREATE_MOVING.format(**names))
    conn.execute(SQL_MOVE_OUT_OF_DEFAULT.format(**names), {"lo": lo, "hi": hi})
    conn.execute(SQL_CREATE_PARTITION.format(**names))
    conn.execute(SQL_MOVE_BACK.format(**names))
    conn.execute(sql.SQL("DROP TABLE {moving}").format(**names))


def _existing_months(conn: psycopg.Connection[Any], table: PartitionedTable) -> set[date]:
    names = [row[0] for row in conn.execute(SQL_PARTITIONS, (table.parent,))]
    return {month for name in names if (month := table.partition_month(name)) is not None}


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


def _create_ahead(
    conn: psycopg.Connection[Any], table: PartitionedTable, now: datetime, months_ahead: int
) -> list[str]:
    created = []
    with conn.transaction():
        for month in months_to_create(now, months_ahead, _existing_months(conn, table)):
            create_partition(conn, month, table)
            created.append(table.partition_name(month))
    return created


def _drop_old(
    conn: psycopg.Connection[Any], table: PartitionedTable, now: datetime, retention_days: int
) -> list[str]:
    dropped = []
    for month in months_to_drop(now, retention_days, _existing_months(conn, table)):
        name = table.partition_name(month)
        with conn.transaction():
            conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
        dropped.append(name)
    return dropped


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
    for table in PARTITIONED:
        report.created.extend(_create_ahead(conn, table, now, months_ahead))
    with conn.transaction():
        # Roll up before dropping, so the hours of a dropped month are kept.
        report.hours_rolled_up = _roll_up(conn, now)
    for table in PARTITIONED:
        report.dropped.extend(_drop_old(conn, table, now, retention_days))
    cutoff = now - timedelta(days=retention_days)
    with conn.transaction():
        for table in PARTITIONED:
            statement = SQL_DELETE_OLD_DEFAULT.format(
                default=sql.Identifier(table.default), column=sql.Identifier(table.column)
            )
            cursor = conn.execute(statement, (cutoff,))
            report.default_rows_deleted += max(cursor.rowcount, 0)
        cursor = conn.execute(
            "DELETE FROM telemetry_hourly WHERE hour < %s",
            (now - timedelta(days=rollup_retention_days),),
        )
        report.rollups_deleted = max(cursor.rowcount, 0)
    with conn.transaction():
        # Finished commands (their results, diagnostics reports among them) go with the
        # terminal log of their time; live ones stay whatever their age. Bulks whose
        # commands are all gone go too.
        cursor = conn.execute(
            "DELETE FROM command WHERE finished_at < %s AND status NOT IN ('queued', 'sent')",
            (cutoff,),
        )
        report.commands_deleted = max(cursor.rowcount, 0)
        conn.execute(
            "DELETE FROM command_bulk b WHERE created_at < %s"
            " AND NOT EXISTS (SELECT 1 FROM command c WHERE c.bulk_id = b.id)",
            (cutoff,),
        )
    log.info("retention: %s", report.summary())
    return report
