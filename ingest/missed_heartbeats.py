"""Missed heartbeats: online (or error) terminals whose last message is too old go offline.

A terminal's deadline is its last message (or status change) plus its heartbeat
policy's ``interval_s x missed``: its own ``heartbeat_policy`` row, its customer's, or
``[heartbeat]`` in alerts.toml. ``mark_missed_heartbeats`` compares every online
terminal with its deadline (the stateless sweep: tests, ``tms`` commands).
``mark_due_heartbeats`` looks only at the terminals whose ``offline_due_at`` has passed
(an index, migration 0015): those past their deadline go offline, the others get their
deadline as their new due time. Heartbeats never write ``offline_due_at``, and the last
message only ever moves later, so a stored due time is never later than the real
deadline; only a shorter policy makes it so, and ``lower_due_times`` then brings the
stored times down (at start-up and whenever ``policy_fingerprint`` changes).

Rows are claimed with ``FOR UPDATE SKIP LOCKED``: a terminal whose batch is being
written is looked at on the next sweep, and several ingest processes share the work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg

from ingest.alerts.config import AlertConfig
from ingest.status import REASON_HEARTBEAT_MISSED

log = logging.getLogger(__name__)

# last_seen_at is the server's receive time, so a skewed agent clock does not matter;
# status_changed_at covers a terminal that connected but never sent a heartbeat.
DEADLINE = """GREATEST(t.last_seen_at, t.status_changed_at) + make_interval(
    secs => COALESCE(tp.interval_s, cp.interval_s, %(interval_s)s)
            * COALESCE(tp.missed, cp.missed, %(missed)s))"""
POLICIES = """
    LEFT JOIN heartbeat_policy tp ON tp.terminal_id = t.id
    LEFT JOIN heartbeat_policy cp ON cp.customer_id = t.customer_id"""

# Per-terminal policy first, then the customer's, then the default from alerts.toml.
SQL_HEARTBEAT_MISSED = f"""
WITH due AS (
    SELECT t.id, t.status AS old_status FROM terminal t {POLICIES}
    WHERE t.status IN ('online', 'error') AND {DEADLINE} < now()
    FOR NO KEY UPDATE OF t SKIP LOCKED
)
UPDATE terminal AS t SET status = 'offline', status_reason = %(reason)s, status_changed_at = now()
FROM due WHERE t.id = due.id
RETURNING t.id, due.old_status
"""

# The expression and predicate of ix_terminal_offline_due (shared.models.OFFLINE_DUE_SQL):
# only the terminals whose due time has passed, those never worked out first. A
# terminal with no time at all to count from is looked at again after the default.
SQL_DUE_HEARTBEATS = f"""
WITH due AS (
    SELECT t.id, t.status AS old_status, {DEADLINE} AS deadline FROM terminal t {POLICIES}
    WHERE t.status IN ('online', 'error')
      AND COALESCE(t.offline_due_at, '-infinity'::timestamptz) <= now()
    ORDER BY COALESCE(t.offline_due_at, '-infinity'::timestamptz)
    LIMIT %(limit)s
    FOR NO KEY UPDATE OF t SKIP LOCKED
), missed AS (
    UPDATE terminal AS t
    SET status = 'offline', status_reason = %(reason)s, status_changed_at = now()
    FROM due WHERE t.id = due.id AND due.deadline < now()
    RETURNING t.id, due.old_status
), later AS (
    UPDATE terminal AS t
    SET offline_due_at = COALESCE(due.deadline, now() + make_interval(
        secs => %(interval_s)s * %(missed)s))
    FROM due WHERE t.id = due.id AND (due.deadline >= now() OR due.deadline IS NULL)
    RETURNING t.id
)
SELECT (SELECT count(*) FROM later), missed.id, missed.old_status
FROM (SELECT 1) AS one LEFT JOIN missed ON true
"""

SQL_STATUS_CHANGES = """
INSERT INTO status_change (terminal_id, old_status, new_status, reason, at)
SELECT v.id, v.old, 'offline', %s, now() FROM unnest(%s::int[], %s::text[]) AS v(id, old)
"""

# Stored due times later than the deadline (a policy got shorter), brought down; one
# range of ids at a time, so that no statement holds many terminal rows.
SQL_LOWER_DUE = f"""
WITH exact AS (
    SELECT t.id, {DEADLINE} AS deadline FROM terminal t {POLICIES}
    WHERE t.status IN ('online', 'error') AND t.id >= %(first)s AND t.id < %(end)s
      AND t.offline_due_at IS NOT NULL
)
UPDATE terminal AS t SET offline_due_at = exact.deadline
FROM exact
WHERE t.id = exact.id AND t.offline_due_at > exact.deadline
"""
SQL_LAST_ID = "SELECT COALESCE(max(id), 0) FROM terminal"

# Changes whenever a policy row is added, changed or removed.
SQL_POLICY_FINGERPRINT = """
SELECT count(*), COALESCE(sum(hashtextextended(
    concat_ws(',', id, customer_id, terminal_id, interval_s, missed), 0)), 0)
FROM heartbeat_policy
"""


@dataclass(frozen=True, slots=True)
class DueResult:
    missed: int  # marked offline
    later: int  # not yet: due again at their deadline


def _params(config: AlertConfig) -> dict[str, Any]:
    return {
        "interval_s": config.heartbeat.interval_s,
        "missed": config.heartbeat.missed,
        "reason": REASON_HEARTBEAT_MISSED,
    }


async def _record(conn: psycopg.AsyncConnection[Any], rows: list[tuple[int, str]]) -> None:
    if rows:
        ids, old = [r[0] for r in rows], [r[1] for r in rows]
        await conn.execute(SQL_STATUS_CHANGES, (REASON_HEARTBEAT_MISSED, ids, old))
        log.info("%d terminals marked offline: heartbeat missed", len(rows))


async def mark_missed_heartbeats(conn: psycopg.AsyncConnection[Any], config: AlertConfig) -> int:
    """Every online terminal against its deadline; the number marked offline."""
    rows = await (await conn.execute(SQL_HEARTBEAT_MISSED, _params(config))).fetchall()
    await _record(conn, [(r[0], r[1]) for r in rows])
    return len(rows)


async def mark_due_heartbeats(
    conn: psycopg.AsyncConnection[Any], config: AlertConfig, limit: int
) -> DueResult:
    """At most ``limit`` terminals whose due time has passed: offline, or due later."""
    params = {**_params(config), "limit": limit}
    rows = await (await conn.execute(SQL_DUE_HEARTBEATS, params)).fetchall()
    missed = [(r[1], r[2]) for r in rows if r[1] is not None]
    await _record(conn, missed)
    return DueResult(len(missed), int(rows[0][0]) if rows else 0)


async def lower_due_times(
    conn: psycopg.AsyncConnection[Any], config: AlertConfig, first: int, end: int
) -> int:
    """Bring the due times of terminals ``first`` <= id < ``end`` down to their deadline
    where a shorter policy put it earlier; the number changed."""
    params = {**_params(config), "first": first, "end": end}
    cursor = await conn.execute(SQL_LOWER_DUE, params)
    return max(cursor.rowcount, 0)


async def last_terminal_id(conn: psycopg.AsyncConnection[Any]) -> int:
    row = await (await conn.execute(SQL_LAST_ID)).fetchone()
    return int(row[0]) if row else 0


async def policy_fingerprint(conn: psycopg.AsyncConnection[Any]) -> tuple[int, int]:
    """A value that changes with any change to ``heartbeat_policy``."""
    row = await (await conn.execute(SQL_POLICY_FINGERPRINT)).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)
