"""Fleet samples: terminals per status and customer, every few minutes, for uptime.

The dashboard's uptime (today, this month) and its online charts read ``fleet_sample``
instead of the terminals' status history: a month of five-minute samples for 500
customers is 4 million small rows read by primary key range, where the history would
be every status change of 100,000 terminals. A sample is one GROUP BY over the terminal
table (tens of milliseconds at 100,000 terminals). Buckets are aligned to the interval
and written ``ON CONFLICT DO NOTHING``, so several ingest workers, or a restart within
a bucket, write each bucket once.
"""

from __future__ import annotations

from datetime import UTC, datetime

from psycopg import AsyncConnection

SQL_SAMPLE = """
INSERT INTO fleet_sample (bucket, customer_id, in_service, online, offline, error, unknown,
                          maintenance)
SELECT %(bucket)s, customer_id,
       count(*) FILTER (WHERE status <> 'decommissioned'),
       count(*) FILTER (WHERE status = 'online'),
       count(*) FILTER (WHERE status = 'offline'),
       count(*) FILTER (WHERE status = 'error'),
       count(*) FILTER (WHERE status = 'unknown'),
       count(*) FILTER (WHERE maintenance AND status <> 'decommissioned')
FROM terminal GROUP BY customer_id
ON CONFLICT (bucket, customer_id) DO NOTHING
"""


def bucket_of(moment: datetime, interval_s: int) -> datetime:
    """The start of the ``interval_s`` bucket holding ``moment`` (aligned to the epoch)."""
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % interval_s, UTC)


async def sample_fleet(conn: AsyncConnection, now: datetime, interval_s: int) -> int:
    """Write this bucket's sample (once); returns the rows written (0 if already there)."""
    cursor = await conn.execute(SQL_SAMPLE, {"bucket": bucket_of(now, interval_s)})
    return max(cursor.rowcount, 0)
