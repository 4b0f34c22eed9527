"""The periodic sweep: missed heartbeats, status alerts, storm incidents, open-alert count.

Every ``sweep_interval_s`` (1 s by default) one transaction marks terminals whose
last heartbeat is older than N intervals offline ("heartbeat missed", with a
status_change row), and a second one reads the terminals that are offline or in
error with their whole store-PC groups, plans the alerts (``ingest.alerts.plan``)
and applies them. Another queues the notifications of alerts other processes raise
(a halted rollout: ``ingest.alerts.store.notify_raised_elsewhere``). A last one
notifies, summarises and closes storm incidents when they are due
(``ingest.alerts.incidents``): their schedule is the sweep's. Working
from the database, not from memory, keeps this right across restarts and with
several ingest processes; advisory locks let one process at a time decide.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from ingest.alerts.config import KIND_ERROR, KIND_OFFLINE, KIND_PC_OFFLINE, AlertConfig
from ingest.alerts.incidents import TickResult, incident_tick
from ingest.alerts.plan import TerminalSnapshot, plan_status_alerts
from ingest.alerts.store import ApplyResult, apply_actions, notify_raised_elsewhere, open_alerts
from ingest.status import REASON_HEARTBEAT_MISSED

log = logging.getLogger(__name__)

SWEEP_LOCK = 0x746D7302

# Per-terminal policy first, then the customer's, then the default from alerts.toml.
# last_seen_at is the server's receive time, so a skewed agent clock does not matter;
# status_changed_at covers a terminal that connected but never sent a heartbeat.
SQL_HEARTBEAT_MISSED = """
WITH due AS (
    SELECT t.id, t.status AS old_status FROM terminal t
    LEFT JOIN heartbeat_policy tp ON tp.terminal_id = t.id
    LEFT JOIN heartbeat_policy cp ON cp.customer_id = t.customer_id
    WHERE t.status IN ('online', 'error')
      AND GREATEST(t.last_seen_at, t.status_changed_at) < now() - make_interval(
          secs => COALESCE(tp.interval_s, cp.interval_s, %(interval_s)s)
                 * COALESCE(tp.missed, cp.missed, %(missed)s))
    FOR UPDATE OF t SKIP LOCKED
)
UPDATE terminal AS t SET status = 'offline', status_reason = %(reason)s, status_changed_at = now()
FROM due WHERE t.id = due.id
RETURNING t.id, due.old_status
"""

SQL_STATUS_CHANGES = """
INSERT INTO status_change (terminal_id, old_status, new_status, reason, at)
SELECT v.id, v.old, 'offline', %s, now() FROM unnest(%s::int[], %s::text[]) AS v(id, old)
"""

# Terminals that are offline or in error, those with an open status alert, and every
# terminal of a PC that has one offline (or an open PC alert): the PC rule needs them all.
SQL_SNAPSHOT = """
WITH hosts AS (
    SELECT customer_id, host_name FROM terminal
    WHERE status = 'offline' AND host_name IS NOT NULL
    UNION
    SELECT customer_id, host_name FROM alert
    WHERE kind = %(pc)s AND status <> 'resolved' AND host_name IS NOT NULL
)
SELECT t.id, t.serial, t.customer_id, t.host_name, t.status, t.status_reason,
       COALESCE(t.status_changed_at, t.created_at)
FROM terminal t
WHERE t.status <> 'decommissioned' AND (
    t.status IN ('offline', 'error')
    OR t.id IN (SELECT terminal_id FROM alert
                WHERE status <> 'resolved' AND kind = ANY(%(kinds)s) AND terminal_id IS NOT NULL)
    OR (t.customer_id, t.host_name) IN (SELECT customer_id, host_name FROM hosts))
"""

SQL_OPEN_COUNT = "SELECT count(*) FROM alert WHERE status <> 'resolved'"


@dataclass
class SweepResult:
    heartbeats_missed: int = 0
    alerts: ApplyResult | None = None
    raised_elsewhere_notifications: int = 0
    incidents: TickResult | None = None
    open_alerts: int = 0


async def mark_missed_heartbeats(conn: psycopg.AsyncConnection[Any], config: AlertConfig) -> int:
    params = {
        "interval_s": config.heartbeat.interval_s,
        "missed": config.heartbeat.missed,
        "reason": REASON_HEARTBEAT_MISSED,
    }
    rows = await (await conn.execute(SQL_HEARTBEAT_MISSED, params)).fetchall()
    if rows:
        ids, old = [r[0] for r in rows], [r[1] for r in rows]
        await conn.execute(SQL_STATUS_CHANGES, (REASON_HEARTBEAT_MISSED, ids, old))
        log.info("%d terminals marked offline: heartbeat missed", len(rows))
    return len(rows)


async def status_alerts(
    conn: psycopg.AsyncConnection[Any], config: AlertConfig, now: datetime
) -> ApplyResult | None:
    """Plan and apply offline/error/PC alerts; None when another process holds the lock."""
    locked = await (
        await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (SWEEP_LOCK,))
    ).fetchone()
    if not locked or not locked[0]:
        return None
    kinds = [KIND_OFFLINE, KIND_ERROR, KIND_PC_OFFLINE]
    cursor = await conn.execute(SQL_SNAPSHOT, {"pc": KIND_PC_OFFLINE, "kinds": kinds})
    snapshot = [TerminalSnapshot(*row) async for row in cursor]
    current = await open_alerts(conn, kinds)
    actions = plan_status_alerts(snapshot, current, config, now)
    return await apply_actions(conn, actions, config, now)


async def sweep_once(
    conn: psycopg.AsyncConnection[Any], config: AlertConfig, now: datetime
) -> SweepResult:
    """One sweep; each step its own transaction (``conn`` is not in autocommit mode)."""
    result = SweepResult()
    async with conn.transaction():
        result.heartbeats_missed = await mark_missed_heartbeats(conn, config)
    async with conn.transaction():
        result.alerts = await status_alerts(conn, config, now)
    async with conn.transaction():
        result.raised_elsewhere_notifications = await notify_raised_elsewhere(conn, config, now)
    async with conn.transaction():
        result.incidents = await incident_tick(conn, config, now)
        row = await (await conn.execute(SQL_OPEN_COUNT)).fetchone()
        result.open_alerts = row[0] if row else 0
    return result
