"""The status alert rules against PostgreSQL: which terminals they look at, and when next.

``plan_status_alerts`` decides from a snapshot of terminals (whole store PCs) and their
open alerts; this module reads that snapshot in one of two ways:

- ``check_customers``: every terminal of some customers that is offline or in error,
  has an open status alert, or shares a PC with one that is offline (the whole fleet,
  a group of customers at a time: the first sweep after a start, and the stateless
  sweep the tests run);
- ``check_flagged``: only the terminals whose ``alert_check_at`` has passed, with their
  PCs. A trigger sets it on every change of status (migration 0015), and the check
  sets it to the next age at which a rule could decide otherwise
  (``plan.next_decision_at``) or clears it. An idle fleet then costs one index probe.

``flag_resolved`` flags the terminals of status alerts resolved a moment ago by a
person: if the terminal is still down, the rules raise the alert again, as they did
when every sweep read the whole fleet. Each check runs under the sweep's advisory lock,
in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from ingest.alerts.config import KIND_ERROR, KIND_OFFLINE, KIND_PC_OFFLINE, AlertConfig
from ingest.alerts.plan import (
    NOTE_AUTO,
    NOTE_MERGED,
    OpenAlertRow,
    OpenAlerts,
    TerminalSnapshot,
    host_scope,
    next_decision_at,
    plan_status_alerts,
    terminal_scope,
)
from ingest.alerts.store import ApplyResult, apply_actions

SWEEP_LOCK = 0x746D7302
STATUS_KINDS = [KIND_OFFLINE, KIND_ERROR, KIND_PC_OFFLINE]

_COLUMNS = """t.id, t.serial, t.customer_id, t.host_name, t.status, t.status_reason,
       COALESCE(t.status_changed_at, t.created_at)"""

# Terminals that are offline or in error, those with an open status alert, and every
# terminal of a PC that has one offline (or an open PC alert): the PC rule needs them all.
SQL_CUSTOMERS_SNAPSHOT = f"""
WITH hosts AS (
    SELECT customer_id, host_name FROM terminal
    WHERE status = 'offline' AND host_name IS NOT NULL AND customer_id = ANY(%(customers)s)
    UNION
    SELECT customer_id, host_name FROM alert
    WHERE kind = %(pc)s AND status <> 'resolved' AND host_name IS NOT NULL
      AND customer_id = ANY(%(customers)s)
)
SELECT {_COLUMNS}
FROM terminal t
WHERE t.customer_id = ANY(%(customers)s) AND t.status <> 'decommissioned' AND (
    t.status IN ('offline', 'error')
    OR EXISTS (SELECT 1 FROM alert a WHERE a.terminal_id = t.id AND a.status <> 'resolved'
               AND a.kind = ANY(%(kinds)s))
    OR (t.customer_id, t.host_name) IN (SELECT customer_id, host_name FROM hosts))
"""

# Customers with their number of terminals, to cut the fleet into groups.
SQL_CUSTOMER_SIZES = """
SELECT customer_id, count(*) FROM terminal WHERE status <> 'decommissioned'
GROUP BY customer_id ORDER BY customer_id
"""

SQL_FLAGGED = """
SELECT id, alert_check_at FROM terminal WHERE alert_check_at <= %(now)s
ORDER BY alert_check_at LIMIT %(limit)s
"""
# The flagged terminals and every terminal on their PCs (ix_terminal_customer_host). A
# UNION, not an OR: with the OR the planner read the whole terminal table.
SQL_FLAGGED_SNAPSHOT = f"""
WITH hosts AS (
    SELECT DISTINCT customer_id, host_name FROM terminal
    WHERE id = ANY(%(ids)s) AND host_name IS NOT NULL
)
SELECT {_COLUMNS} FROM terminal t
WHERE t.id = ANY(%(ids)s) AND t.status <> 'decommissioned'
UNION
SELECT {_COLUMNS} FROM hosts h
JOIN terminal t ON t.customer_id = h.customer_id AND t.host_name = h.host_name
WHERE t.status <> 'decommissioned'
"""

SQL_OPEN_BY_SCOPE = """
SELECT scope, kind, last_seen_at FROM alert
WHERE status <> 'resolved' AND kind = ANY(%s::text[]) AND scope = ANY(%s::text[])
"""

# Each flagged terminal's next time, unless a change of status flagged it again since
# it was read (then the trigger's time stands).
SQL_SET_NEXT = """
UPDATE terminal AS t SET alert_check_at = v.next
FROM unnest(%s::int[], %s::timestamptz[], %s::timestamptz[]) AS v(id, seen, next)
WHERE t.id = v.id AND t.alert_check_at = v.seen
"""
# After a whole-fleet check: an earlier time where one is ahead; nothing else changes.
SQL_SET_EARLIER = """
UPDATE terminal AS t SET alert_check_at = v.next
FROM unnest(%s::int[], %s::timestamptz[]) AS v(id, next)
WHERE t.id = v.id AND (t.alert_check_at IS NULL OR t.alert_check_at > v.next)
"""

# Resolved by someone else than the rules (whose notes are NOTE_AUTO and NOTE_MERGED).
SQL_RESOLVED_SINCE = """
SELECT id, terminal_id, customer_id, host_name FROM alert
WHERE resolved_at > %s AND kind = ANY(%s::text[])
  AND (resolution_note IS NULL OR resolution_note <> ALL(%s::text[]))
"""
SQL_FLAG = """
UPDATE terminal SET alert_check_at = %(now)s
WHERE id IN (
        SELECT id FROM terminal WHERE id = ANY(%(ids)s)
        UNION
        SELECT t.id FROM unnest(%(customers)s::int[], %(hosts)s::text[]) AS h(customer_id, name)
        JOIN terminal t ON t.customer_id = h.customer_id AND t.host_name = h.name)
  AND status <> 'decommissioned'
  AND (alert_check_at IS NULL OR alert_check_at > %(now)s)
"""


@dataclass
class CheckResult:
    looked_at: int = 0  # terminals in the snapshot (with their PCs)
    applied: ApplyResult | None = None


async def try_sweep_lock(conn: psycopg.AsyncConnection[Any]) -> bool:
    """The sweep's transaction lock; False when another process is checking now."""
    row = await (
        await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (SWEEP_LOCK,))
    ).fetchone()
    return bool(row and row[0])


async def customer_groups(
    conn: psycopg.AsyncConnection[Any], max_terminals: int
) -> list[list[int]]:
    """The fleet's customers in groups of about ``max_terminals`` terminals (a bigger
    customer is a group alone): a store PC never spans two groups."""
    groups: list[list[int]] = []
    size = 0
    async for customer_id, count in await conn.execute(SQL_CUSTOMER_SIZES):
        if not groups or size + count > max_terminals:
            groups.append([])
            size = 0
        groups[-1].append(customer_id)
        size += count
    return groups


async def _open_alerts(
    conn: psycopg.AsyncConnection[Any], snapshot: Iterable[TerminalSnapshot]
) -> OpenAlerts:
    """The open status alerts of the snapshot's terminals and PCs: all the plan looks up."""
    scopes: set[str] = set()
    for t in snapshot:
        scopes.add(terminal_scope(t.terminal_id))
        if t.host_name:
            scopes.add(host_scope(t.customer_id, t.host_name))
    if not scopes:
        return {}
    cursor = await conn.execute(SQL_OPEN_BY_SCOPE, (STATUS_KINDS, sorted(scopes)))
    return {(scope, kind): OpenAlertRow(scope, kind, last) async for scope, kind, last in cursor}


async def _plan_and_apply(
    conn: psycopg.AsyncConnection[Any],
    snapshot: list[TerminalSnapshot],
    config: AlertConfig,
    now: datetime,
) -> ApplyResult:
    current = await _open_alerts(conn, snapshot)
    actions = plan_status_alerts(snapshot, current, config, now)
    return await apply_actions(conn, actions, config, now)


async def check_customers(
    conn: psycopg.AsyncConnection[Any],
    config: AlertConfig,
    now: datetime,
    customers: list[int],
) -> CheckResult | None:
    """Plan and apply the status alerts of these customers' terminals, and flag those
    with a decision still ahead; None when another process holds the lock."""
    if not await try_sweep_lock(conn):
        return None
    params = {"customers": customers, "pc": KIND_PC_OFFLINE, "kinds": STATUS_KINDS}
    cursor = await conn.execute(SQL_CUSTOMERS_SNAPSHOT, params)
    snapshot = [TerminalSnapshot(*row) async for row in cursor]
    ahead = [(t.terminal_id, next_decision_at(t.changed_at, now, config)) for t in snapshot]
    pending = [(terminal_id, at) for terminal_id, at in ahead if at is not None]
    if pending:
        ids, times = zip(*pending, strict=True)
        await conn.execute(SQL_SET_EARLIER, (list(ids), list(times)))
    applied = await _plan_and_apply(conn, snapshot, config, now)
    return CheckResult(len(snapshot), applied)


async def check_flagged(
    conn: psycopg.AsyncConnection[Any], config: AlertConfig, now: datetime, limit: int
) -> CheckResult | None:
    """Plan and apply the status alerts of at most ``limit`` flagged terminals whose
    time has come, and their PCs; None when another process holds the lock."""
    if not await try_sweep_lock(conn):
        return None
    flagged = await (await conn.execute(SQL_FLAGGED, {"now": now, "limit": limit})).fetchall()
    if not flagged:
        return CheckResult()
    ids = [row[0] for row in flagged]
    cursor = await conn.execute(SQL_FLAGGED_SNAPSHOT, {"ids": ids})
    snapshot = [TerminalSnapshot(*row) async for row in cursor]
    changed = {t.terminal_id: t.changed_at for t in snapshot}
    # Their next times first: these row locks are taken before apply_actions takes the
    # storm lock, the order the batch writer takes them in too.
    nexts = [next_decision_at(changed[i], now, config) if i in changed else None for i in ids]
    await conn.execute(SQL_SET_NEXT, (ids, [row[1] for row in flagged], nexts))
    applied = await _plan_and_apply(conn, snapshot, config, now)
    return CheckResult(len(snapshot), applied)


async def flag_resolved(
    conn: psycopg.AsyncConnection[Any], since: datetime, now: datetime, seen: set[int]
) -> list[int]:
    """Flag the terminals of status alerts resolved after ``since`` that are not in
    ``seen``; the ids of those alerts."""
    notes = [NOTE_AUTO, NOTE_MERGED]
    rows = await (await conn.execute(SQL_RESOLVED_SINCE, (since, STATUS_KINDS, notes))).fetchall()
    new = [row for row in rows if row[0] not in seen]
    ids = [row[1] for row in new if row[1] is not None]
    hosts = [(row[2], row[3]) for row in new if row[1] is None and row[3] is not None]
    if ids or hosts:
        params = {
            "now": now,
            "ids": ids,
            "customers": [c for c, _ in hosts],
            "hosts": [h for _, h in hosts],
        }
        await conn.execute(SQL_FLAG, params)
    return [row[0] for row in new]
