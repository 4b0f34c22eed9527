"""Apply alert actions in PostgreSQL: one open alert per scope and kind, storms, outbox.

Runs inside the caller's transaction (the batch's, or the sweep's), so an alert and
its notification rows commit together with what caused them or not at all. New
alerts are counted per minute under an advisory lock; beyond the storm limit they
join one incident, which gets one notification instead of one per alert.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from ingest.alert_config import AlertConfig, Route, Severity
from ingest.alert_plan import (
    AlertAction,
    OpenAlert,
    OpenAlertRow,
    OpenAlerts,
    ResolveAlert,
    StormPlan,
    incident_routes,
    merge_opens,
    routes_for,
    storm_plan,
)

STORM_LOCK = 0x746D7301  # pg_advisory_xact_lock key: one storm decision at a time

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

SQL_RECENT = "SELECT count(*) FROM alert WHERE raised_at > now() - make_interval(secs => %s)"
SQL_OPEN_INCIDENT = (
    "SELECT id FROM incident WHERE status = 'open' ORDER BY id DESC LIMIT 1 FOR UPDATE"
)
SQL_NEW_INCIDENT = """
INSERT INTO incident (status, severity, summary, alert_count, opened_at, last_alert_at)
VALUES ('open', %s, %s, 0, now(), now()) RETURNING id
"""
SQL_GATHER = """
UPDATE alert SET incident_id = %s
WHERE incident_id IS NULL AND status <> 'resolved'
  AND (raised_at > now() - make_interval(secs => %s) OR id = ANY(%s::int[]))
RETURNING id
"""
SQL_COUNT_INCIDENT = """
UPDATE incident SET alert_count = alert_count + %s, last_alert_at = now() WHERE id = %s
"""
SQL_MERGE_OUTBOX = """
UPDATE notification_outbox SET status = 'merged'
WHERE status = 'pending' AND alert_id = ANY(%s::int[])
"""
SQL_ENQUEUE = """
INSERT INTO notification_outbox (alert_id, incident_id, route, channel, target, payload,
                                 status, attempts, next_attempt_at)
SELECT * FROM unnest(%s::int[], %s::int[], %s::text[], %s::text[], %s::text[], %s::jsonb[],
                     %s::text[], %s::int[], %s::timestamptz[])
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


def _columns(rows: Iterable[tuple[Any, ...]], width: int) -> list[list[Any]]:
    columns: list[list[Any]] = [[] for _ in range(width)]
    for row in rows:
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


async def open_alerts(conn: psycopg.AsyncConnection[Any], kinds: list[str]) -> OpenAlerts:
    cursor = await conn.execute(SQL_OPEN_ALERTS, (kinds,))
    return {(scope, kind): OpenAlertRow(scope, kind, last) async for scope, kind, last in cursor}


def _outbox_rows(
    routes: list[Route],
    alert_id: int | None,
    incident_id: int | None,
    payload: dict[str, Any],
    due: datetime,
) -> list[tuple[Any, ...]]:
    rows = []
    for route in routes:
        body = json.dumps(payload)
        if route.email:
            target = ",".join(route.email)
            rows.append(
                (alert_id, incident_id, route.name, "email", target, body, "pending", 0, due)
            )
        if route.webhook:
            rows.append(
                (
                    alert_id,
                    incident_id,
                    route.name,
                    "webhook",
                    route.webhook,
                    body,
                    "pending",
                    0,
                    due,
                )
            )
    return rows


async def _enqueue(conn: psycopg.AsyncConnection[Any], rows: list[tuple[Any, ...]]) -> int:
    if rows:
        await conn.execute(SQL_ENQUEUE, _columns(rows, 9))
    return len(rows)


async def _names(conn: psycopg.AsyncConnection[Any], sql: str, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    cursor = await conn.execute(sql, ([i for i in ids if i is not None],))
    return {row[0]: row[1] async for row in cursor}


async def _notify_each(
    conn: psycopg.AsyncConnection[Any], config: AlertConfig, new: list[_NewAlert], now: datetime
) -> int:
    customers = await _names(conn, SQL_CUSTOMERS, {a.customer_id for a in new if a.customer_id})
    serials = await _names(conn, SQL_SERIALS, {a.terminal_id for a in new if a.terminal_id})
    rows: list[tuple[Any, ...]] = []
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
        rows.extend(_outbox_rows(routes, alert.id, None, payload, now))
    return await _enqueue(conn, rows)


async def _storm_control(
    conn: psycopg.AsyncConnection[Any], config: AlertConfig, new: list[_NewAlert], now: datetime
) -> tuple[int, int | None]:
    """Notify the new alerts, or fold them into the open incident; (notifications, incident)."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (STORM_LOCK,))
    storm = config.storm
    recent_row = await (await conn.execute(SQL_RECENT, (storm.window_s,))).fetchone()
    incident_row = await (await conn.execute(SQL_OPEN_INCIDENT)).fetchone()
    recent = recent_row[0] if recent_row else 0
    plan = storm_plan(recent, storm.max_alerts_per_minute, incident_row is not None)
    ids = [alert.id for alert in new]
    if plan is StormPlan.NOTIFY_EACH:
        return await _notify_each(conn, config, new, now), None
    if plan is StormPlan.JOIN_INCIDENT:
        assert incident_row is not None
        incident_id = incident_row[0]
        await conn.execute(
            "UPDATE alert SET incident_id = %s WHERE id = ANY(%s)", (incident_id, ids)
        )
        await conn.execute(SQL_COUNT_INCIDENT, (len(ids), incident_id))
        return 0, incident_id
    severity = max((alert.severity for alert in new), key=lambda s: s.rank)
    summary = (
        f"alert storm: more than {storm.max_alerts_per_minute} alerts within {storm.window_s:g} s"
    )
    row = await (await conn.execute(SQL_NEW_INCIDENT, (severity.value, summary))).fetchone()
    assert row is not None
    incident_id = row[0]
    gathered = [
        r[0]
        for r in await (
            await conn.execute(SQL_GATHER, (incident_id, storm.window_s, ids))
        ).fetchall()
    ]
    await conn.execute(SQL_COUNT_INCIDENT, (len(gathered), incident_id))
    # Alerts notified a moment ago but not yet sent are told as part of the incident.
    await conn.execute(SQL_MERGE_OUTBOX, (gathered,))
    payload = {
        "type": "incident",
        "id": incident_id,
        "severity": severity.value,
        "summary": summary,
    }
    due = now + timedelta(seconds=storm.settle_s)
    rows = _outbox_rows(incident_routes(config.routes, severity), None, incident_id, payload, due)
    return await _enqueue(conn, rows), incident_id


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
        cursor = await conn.execute(SQL_RESOLVE, _columns(rows, 4))
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
    cursor = await conn.execute(SQL_UPSERT, _columns(rows2, 9))
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
        result.notifications, result.incident_id = await _storm_control(conn, config, new, now)
    return result
