"""Apply alert actions in PostgreSQL: one open alert per scope and kind, and its outbox rows.

Runs inside the caller's transaction (the batch's, or the sweep's), so an alert and
its notification rows commit together with what caused them or not at all. New
alerts are notified alone, unless ``ingest.alerts.incidents`` folds them into a storm
incident: then the routes that receive incidents count them in its notifications,
and only the routes that do not still get each alert alone.

Alerts other processes raise straight into the table (``RAISED_ELSEWHERE``) have no
outbox rows; the sweep queues theirs (``notify_raised_elsewhere``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from ingest.alerts.config import AlertConfig, Severity
from ingest.alerts.incidents import group_new_alerts
from ingest.alerts.outbox import OutboxRow, enqueue, outbox_rows
from ingest.alerts.plan import (
    AlertAction,
    OpenAlert,
    OpenAlertRow,
    OpenAlerts,
    ResolveAlert,
    merge_opens,
    routes_for,
)
from ingest.columns import as_columns

SQL_OPEN_ALERTS = """
SELECT scope, kind, last_seen_at FROM alert WHERE status <> 'resolved' AND kind = ANY(%s::text[])
"""

SQL_UPSERT = """
INSERT INTO alert (scope, kind, severity, status, message, count, first_seen_at, last_seen_at,
                   terminal_id, customer_id, host_name)
SELECT v.scope, v.kind, v.severity, 'open', v.message, v.count, v.at, v.at,
       v.terminal_id, v.customer_id, v.host_name
FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::int[], %s::timestamptz[],
            %s::int[], %s::int[], %s::text[])
    AS v(scope, kind, severity, message, count, at, terminal_id, customer_id, host_name)
ON CONFLICT (scope, kind) WHERE status <> 'resolved' DO UPDATE SET
    count = alert.count + EXCLUDED.count,
    last_seen_at = GREATEST(alert.last_seen_at, EXCLUDED.last_seen_at),
    message = EXCLUDED.message
RETURNING id, (xmax = 0) AS inserted, kind, severity, scope, message, customer_id, terminal_id,
          first_seen_at
"""

SQL_RESOLVE = """
UPDATE alert AS a SET status = 'resolved', resolved_at = v.at, resolution_note = v.note
FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::text[]) AS v(scope, kind, at, note)
WHERE a.scope = v.scope AND a.kind = v.kind AND a.status <> 'resolved'
"""

# Kinds that other processes raise by inserting the alert row themselves: the rollout
# driver's halt (rollouts/driver.py, which may import only shared/, so it cannot queue
# notifications). The sweep notifies them through the same routes.
RAISED_ELSEWHERE = ("rollout_halted",)
ELSEWHERE_LOCK = 0x746D7303  # pg_advisory_xact_lock key: one process queues them at a time
# Open ones not told yet: no outbox row at all. One that no route takes never gets a row
# and is read again each sweep: a few rows by the status index, and nothing written.
SQL_UNTOLD = """
SELECT a.id, a.kind, a.severity, a.scope, a.message, a.customer_id, a.terminal_id,
       a.first_seen_at, a.incident_id
FROM alert a
WHERE a.status = 'open' AND a.kind = ANY(%s::text[])
  AND NOT EXISTS (SELECT 1 FROM notification_outbox o WHERE o.alert_id = a.id)
ORDER BY a.id
LIMIT 100
"""

SQL_CUSTOMERS = "SELECT id, name FROM customer WHERE id = ANY(%s::int[])"
SQL_SERIALS = "SELECT id, serial FROM terminal WHERE id = ANY(%s::int[])"


@dataclass
class ApplyResult:
    opened: int = 0
    repeated: int = 0
    resolved: int = 0
    notifications: int = 0
    incident_id: int | None = None


@dataclass(frozen=True, slots=True)
class _NewAlert:
    id: int
    kind: str
    severity: Severity
    scope: str
    message: str
    customer_id: int | None
    terminal_id: int | None
    first_seen_at: datetime


async def open_alerts(conn: psycopg.AsyncConnection[Any], kinds: list[str]) -> OpenAlerts:
    cursor = await conn.execute(SQL_OPEN_ALERTS, (kinds,))
    return {(scope, kind): OpenAlertRow(scope, kind, last) async for scope, kind, last in cursor}


async def _names(conn: psycopg.AsyncConnection[Any], sql: str, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    cursor = await conn.execute(sql, ([i for i in ids if i is not None],))
    return {row[0]: row[1] async for row in cursor}


async def _notify_each(
    conn: psycopg.AsyncConnection[Any],
    config: AlertConfig,
    new: list[_NewAlert],
    now: datetime,
    grouped: bool,
) -> int:
    """Queue each alert to its routes; once grouped, only to routes that take no incidents."""
    if not any(not grouped or not route.incidents for route in config.routes):
        return 0
    customers = await _names(conn, SQL_CUSTOMERS, {a.customer_id for a in new if a.customer_id})
    serials = await _names(conn, SQL_SERIALS, {a.terminal_id for a in new if a.terminal_id})
    rows: list[OutboxRow] = []
    for alert in new:
        customer = customers.get(alert.customer_id) if alert.customer_id else None
        payload = {
            "type": "alert",
            "id": alert.id,
            "kind": alert.kind,
            "severity": alert.severity.value,
            "scope": alert.scope,
            "message": alert.message,
            "customer": customer,
            "serial": serials.get(alert.terminal_id) if alert.terminal_id else None,
            "first_seen_at": alert.first_seen_at.isoformat(),
        }
        routes = routes_for(config.routes, alert.severity, customer)
        if grouped:
            routes = [route for route in routes if not route.incidents]
        rows.extend(outbox_rows(routes, alert.id, None, payload, now))
    return await enqueue(conn, rows)


async def apply_actions(
    conn: psycopg.AsyncConnection[Any],
    actions: Iterable[AlertAction],
    config: AlertConfig,
    now: datetime,
) -> ApplyResult:
    """Open, bump and resolve alerts, then notify the new ones (or group them)."""
    result = ApplyResult()
    merged = merge_opens(actions)
    resolves = [a for a in merged if isinstance(a, ResolveAlert)]
    opens = [a for a in merged if isinstance(a, OpenAlert)]
    if resolves:
        rows = ((a.scope, a.kind, a.at, a.note) for a in resolves)
        cursor = await conn.execute(SQL_RESOLVE, as_columns(rows, 4))
        result.resolved = max(cursor.rowcount, 0)
    if not opens:
        return result
    rows2 = (
        (
            a.scope,
            a.kind,
            a.severity.value,
            a.message[:2000],
            a.occurrences,
            a.at,
            a.terminal_id,
            a.customer_id,
            a.host_name,
        )
        for a in opens
    )
    cursor = await conn.execute(SQL_UPSERT, as_columns(rows2, 9))
    new: list[_NewAlert] = []
    async for (
        id_,
        inserted,
        kind,
        severity,
        scope,
        message,
        customer_id,
        terminal_id,
        first,
    ) in cursor:
        if inserted:
            new.append(
                _NewAlert(
                    id_, kind, Severity(severity), scope, message, customer_id, terminal_id, first
                )
            )
        else:
            result.repeated += 1
    result.opened = len(new)
    if new:
        grouping = [(alert.id, alert.severity) for alert in new]
        result.incident_id = await group_new_alerts(conn, config, grouping, now)
        grouped = result.incident_id is not None
        result.notifications = await _notify_each(conn, config, new, now, grouped)
    return result


async def notify_raised_elsewhere(
    conn: psycopg.AsyncConnection[Any], config: AlertConfig, now: datetime
) -> int:
    """Queue the notifications of open ``RAISED_ELSEWHERE`` alerts that have none yet,
    as ``apply_actions`` does for the alerts ingest raises; the number of rows queued.

    A halt is told alone rather than folded into a storm: it is one event a person must
    act on. One that a storm incident has gathered already is told by the incident on
    the routes that take incidents, and alone on the others. Run in a transaction: the
    lock keeps two ingest processes from queueing the same alert twice."""
    if not config.routes:
        return 0
    locked = await (
        await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (ELSEWHERE_LOCK,))
    ).fetchone()
    if not locked or not locked[0]:
        return 0
    rows = await (await conn.execute(SQL_UNTOLD, (list(RAISED_ELSEWHERE),))).fetchall()
    alone: list[_NewAlert] = []
    in_incident: list[_NewAlert] = []
    for id_, kind, severity, scope, message, customer_id, terminal_id, first, incident in rows:
        try:
            level = Severity(severity)
        except ValueError:  # written by another process: an unknown word is told as critical
            level = Severity.CRITICAL
        alert = _NewAlert(id_, kind, level, scope, message, customer_id, terminal_id, first)
        (alone if incident is None else in_incident).append(alert)
    queued = await _notify_each(conn, config, alone, now, grouped=False) if alone else 0
    if in_incident:
        queued += await _notify_each(conn, config, in_incident, now, grouped=True)
    return queued
