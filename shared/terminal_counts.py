"""Reading and folding ``terminal_count`` (migration 0016): terminals per customer,
status and maintenance, kept by triggers on ``terminal`` as rows of signed changes.

The console reads counts from here instead of scanning the fleet; ingest folds the
rows back to one per key every few minutes, so a read sums a few thousand rows at most.
"""

from __future__ import annotations

# Per customer, the columns of the dashboard's table and totals. Written as the counts
# the GROUP BY over ``terminal`` gave, so both can be compared (tests do).
SQL_PER_CUSTOMER = """
SELECT customer_id,
       coalesce(sum(n) FILTER (WHERE status <> 'decommissioned'), 0)::bigint AS in_service,
       coalesce(sum(n) FILTER (WHERE status = 'online'), 0)::bigint AS online,
       coalesce(sum(n) FILTER (WHERE status = 'error'), 0)::bigint AS error,
       coalesce(sum(n) FILTER (WHERE status = 'offline'), 0)::bigint AS offline,
       coalesce(sum(n) FILTER (WHERE status = 'unknown'), 0)::bigint AS unknown,
       coalesce(sum(n) FILTER (WHERE maintenance AND status <> 'decommissioned'), 0)::bigint
           AS maintenance
FROM terminal_count GROUP BY customer_id
"""

# The same counts taken from the terminals themselves: what SQL_PER_CUSTOMER must equal.
SQL_PER_CUSTOMER_SCANNED = """
SELECT customer_id,
       count(*) FILTER (WHERE status <> 'decommissioned') AS in_service,
       count(*) FILTER (WHERE status = 'online') AS online,
       count(*) FILTER (WHERE status = 'error') AS error,
       count(*) FILTER (WHERE status = 'offline') AS offline,
       count(*) FILTER (WHERE status = 'unknown') AS unknown,
       count(*) FILTER (WHERE maintenance AND status <> 'decommissioned') AS maintenance
FROM terminal GROUP BY customer_id
"""

# One row per key again, keys that sum to nothing dropped. Under READ COMMITTED the
# DELETE takes only the rows its snapshot sees: rows that triggers add meanwhile stay,
# and a second folder at the same moment skips the rows the first one deleted, so no
# change is lost or counted twice. The advisory lock only spares the work twice.
COMPACT_LOCK = 0x746D73_636E74  # "tms" "cnt"
SQL_COMPACT = """
WITH folded AS (
    DELETE FROM terminal_count RETURNING customer_id, status, maintenance, n
), kept AS (
    INSERT INTO terminal_count (customer_id, status, maintenance, n)
    SELECT customer_id, status, maintenance, sum(n) FROM folded
    GROUP BY customer_id, status, maintenance HAVING sum(n) <> 0
    RETURNING 1
)
SELECT (SELECT count(*) FROM folded), (SELECT count(*) FROM kept)
"""
SQL_ROWS = "SELECT count(*) FROM terminal_count"
