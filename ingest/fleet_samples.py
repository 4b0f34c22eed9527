"""Fleet samples: terminals per status and customer, every few minutes, for uptime.

The dashboard's uptime (today, this month) and its online charts come from these
samples instead of the terminals' status history. A sample is one GROUP BY over the
terminal table (tens of milliseconds at 100,000 terminals), written three ways in one
statement: per customer and bucket (``fleet_sample``, the customer pages), the fleet
per bucket (``fleet_sample_total``, the charts: 8,640 rows for 30 days) and per
customer and day (``fleet_sample_daily``, uptime: 15,500 rows for a month of 500
customers, where the samples are 4 million). Buckets are aligned to the interval and
written ``ON CONFLICT DO NOTHING``, and the daily sums grow only by what was inserted,
so several ingest workers, or a restart within a bucket, count a bucket once.

The same job folds the dashboard's terminal counts (``terminal_count``), which grow by
two rows for every change of a terminal's status.
"""

from __future__ import annotations

from datetime import UTC, datetime

from psycopg import AsyncConnection

from shared.terminal_counts import COMPACT_LOCK, SQL_COMPACT

SQL_SAMPLE = """
WITH counted AS (
    SELECT customer_id,
           count(*) FILTER (WHERE status <> 'decommissioned') AS in_service,
           count(*) FILTER (WHERE status = 'online') AS online,
           count(*) FILTER (WHERE status = 'offline') AS offline,
           count(*) FILTER (WHERE status = 'error') AS error,
           count(*) FILTER (WHERE status = 'unknown') AS unknown,
           count(*) FILTER (WHERE maintenance AND status <> 'decommissioned') AS maintenance
    FROM terminal GROUP BY customer_id
), inserted AS (
    INSERT INTO fleet_sample (bucket, customer_id, in_service, online, offline, error,
                              unknown, maintenance)
    SELECT %(bucket)s, customer_id, in_service, online, offline, error, unknown, maintenance
    FROM counted
    ON CONFLICT (bucket, customer_id) DO NOTHING
    RETURNING customer_id, in_service, online
), total AS (
    INSERT INTO fleet_sample_total (bucket, in_service, online)
    SELECT %(bucket)s, sum(in_service), sum(online) FROM inserted HAVING count(*) > 0
    ON CONFLICT (bucket) DO NOTHING
)
INSERT INTO fleet_sample_daily (day, customer_id, samples, in_service, online)
SELECT %(day)s, customer_id, 1, in_service, online FROM inserted
ON CONFLICT (day, customer_id) DO UPDATE SET
    samples = fleet_sample_daily.samples + 1,
    in_service = fleet_sample_daily.in_service + EXCLUDED.in_service,
    online = fleet_sample_daily.online + EXCLUDED.online
"""


def bucket_of(moment: datetime, interval_s: int) -> datetime:
    """The start of the ``interval_s`` bucket holding ``moment`` (aligned to the epoch)."""
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % interval_s, UTC)


async def sample_fleet(conn: AsyncConnection, now: datetime, interval_s: int) -> int:
    """Write this bucket's sample (once), and add it to the fleet's total per bucket and
    each customer's sums per day; returns the customers sampled (0 if already there)."""
    bucket = bucket_of(now, interval_s)
    day = bucket.replace(hour=0, minute=0, second=0, microsecond=0)
    cursor = await conn.execute(SQL_SAMPLE, {"bucket": bucket, "day": day})
    return max(cursor.rowcount, 0)


async def fold_terminal_counts(conn: AsyncConnection) -> int:
    """Fold ``terminal_count`` back to one row per key (shared.terminal_counts), unless
    another worker is at it; returns the rows folded."""
    async with conn.transaction():
        cursor = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (COMPACT_LOCK,))
        locked = await cursor.fetchone()
        if not locked or not locked[0]:
            return 0
        cursor = await conn.execute(SQL_COMPACT)
        row = await cursor.fetchone()
    return int(row[0]) if row else 0
