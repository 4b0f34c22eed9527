"""Storm incidents in PostgreSQL: group new alerts, then notify, summarise and close.

Both halves run under one transaction-scoped advisory lock: a batch or sweep that
raises alerts (``group_new_alerts``) and the sweep's ``incident_tick``. So an alert
joins an incident and a notification counts the incident's alerts in one serial
order, and no alert can join between an incident's final count and its close. The
decisions are ``ingest.alerts.storm``'s; an incident's notification state is the payload
of its latest outbox row (no column of its own).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from ingest.alerts.config import AlertConfig, Severity
from ingest.alerts.outbox import enqueue, outbox_rows
from ingest.alerts.plan import StormPlan, incident_routes, storm_plan
from ingest.alerts.storm import (
    IncidentStep,
    LastNotice,
    OpenIncident,
    breakdown,
    incident_payload,
    incident_step,
    last_notice,
)

STORM_LOCK = 0x746D7301  # pg_advisory_xact_lock key: one storm decision at a time

SQL_RECENT = "SELECT count(*) FROM alert WHERE raised_at > now() - make_interval(secs => %s)"
SQL_CURRENT_INCIDENT = """
SELECT id, severity FROM incident WHERE status = 'open' ORDER BY id DESC LIMIT 1 FOR NO KEY UPDATE
"""
SQL_NEW_INCIDENT = """
INSERT INTO incident (status, severity, summary, alert_count, opened_at, last_alert_at)
VALUES ('open', %s, %s, 0, %s, %s) RETURNING id
"""
SQL_GATHER = """
UPDATE alert SET incident_id = %s
WHERE incident_id IS NULL AND status <> 'resolved'
  AND (raised_at > now() - make_interval(secs => %s) OR id = ANY(%s::int[]))
RETURNING id, severity
"""
SQL_JOIN = "UPDATE alert SET incident_id = %s WHERE id = ANY(%s::int[]) AND incident_id IS NULL"
SQL_COUNT_INCIDENT = """
UPDATE incident SET alert_count = alert_count + %s, severity = %s,
                    last_alert_at = GREATEST(last_alert_at, %s)
WHERE id = %s
"""
# Alerts queued a moment ago but not sent yet are told as part of the incident instead,
# on the routes that receive incidents (the others still get them alone).
SQL_MERGE_OUTBOX = """
UPDATE notification_outbox SET status = 'merged'
WHERE status = 'pending' AND alert_id = ANY(%s::int[]) AND route = ANY(%s::text[])
"""
SQL_ANY_OPEN = "SELECT EXISTS (SELECT 1 FROM incident WHERE status = 'open')"
SQL_OPEN_INCIDENTS = """
SELECT id, severity, summary, alert_count, opened_at, last_alert_at
FROM incident WHERE status = 'open' ORDER BY id FOR NO KEY UPDATE
"""
SQL_LAST_NOTICES = """
SELECT DISTINCT ON (incident_id) incident_id, payload, created_at
FROM notification_outbox WHERE incident_id = ANY(%s::int[])
ORDER BY incident_id, id DESC
"""
SQL_BREAKDOWN = """
SELECT a.kind, a.severity, c.name, count(*)::int
FROM alert a LEFT JOIN customer c ON c.id = a.customer_id
WHERE a.incident_id = %s GROUP BY 1, 2, 3
"""
SQL_CLOSE = "UPDATE incident SET status = 'closed', closed_at = %s WHERE id = %s"


def worst(severities: Iterable[Severity]) -> Severity:
    return max(severities, key=lambda s: s.rank)


async def group_new_alerts(
    conn: psycopg.AsyncConnection[Any],
    config: AlertConfig,
    new: list[tuple[int, Severity]],
    now: datetime,
) -> int | None:
    """Fold just-raised alerts (id, severity) into the open incident, or open one when
    they make a storm; the incident's id, or None when they are to be notified alone."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (STORM_LOCK,))
    storm = config.storm
    recent_row = await (await conn.execute(SQL_RECENT, (storm.window_s,))).fetchone()
    current = await (await conn.execute(SQL_CURRENT_INCIDENT)).fetchone()
    recent = recent_row[0] if recent_row else 0
    plan = storm_plan(recent, storm.max_alerts_per_minute, current is not None)
    ids = [alert_id for alert_id, _ in new]
    if plan is StormPlan.NOTIFY_EACH:
        return None
    if plan is StormPlan.JOIN_INCIDENT:
        assert current is not None
        incident_id = current[0]
        severity = worst([Severity(current[1]), *(s for _, s in new)])
        joined = await conn.execute(SQL_JOIN, (incident_id, ids))
        await conn.execute(
            SQL_COUNT_INCIDENT, (max(joined.rowcount, 0), severity.value, now, incident_id)
        )
        return int(incident_id)
    summary = (
        f"alert storm: more than {storm.max_alerts_per_minute} alerts within {storm.window_s:g} s"
    )
    first = worst(s for _, s in new)
    row = await (await conn.execute(SQL_NEW_INCIDENT, (first.value, summary, now, now))).fetchone()
    assert row is not None
    incident_id = row[0]
    gathered = await (await conn.execute(SQL_GATHER, (incident_id, storm.window_s, ids))).fetchall()
    severity = worst(Severity(r[1]) for r in gathered)
    await conn.execute(SQL_COUNT_INCIDENT, (len(gathered), severity.value, now, incident_id))
    taking = [route.name for route in incident_routes(config.routes, severity)]
    await conn.execute(SQL_MERGE_OUTBOX, ([r[0] for r in gathered], taking))
    return int(incident_id)


@dataclass
class TickResult:
    notifications: int = 0  # outbox rows queued
    notices: int = 0  # incident notifications (opened, summary, closed)
    closed: int = 0


async def _notices(conn: psycopg.AsyncConnection[Any], ids: list[int]) -> dict[int, LastNotice]:
    cursor = await conn.execute(SQL_LAST_NOTICES, (ids,))
    return {
        incident_id: last_notice(payload or {}, created_at)
        async for incident_id, payload, created_at in cursor
    }


async def _tell(
    conn: psycopg.AsyncConnection[Any],
    config: AlertConfig,
    incident: OpenIncident,
    step: IncidentStep,
    last: LastNotice | None,
    now: datetime,
) -> int:
    """Queue the incident's notification for this step; outbox rows written."""
    routes = incident_routes(config.routes, Severity(incident.severity))
    if not routes:
        return 0
    cursor = await conn.execute(SQL_BREAKDOWN, (incident.id,))
    totals = breakdown(await cursor.fetchall())
    payload = incident_payload(incident, step, totals, last, now)
    return await enqueue(conn, outbox_rows(routes, None, incident.id, payload, now))


async def incident_tick(
    conn: psycopg.AsyncConnection[Any], config: AlertConfig, now: datetime
) -> TickResult:
    """Notify, summarise or close every open incident that is due (in the caller's
    transaction); costs one query while no incident is open."""
    result = TickResult()
    row = await (await conn.execute(SQL_ANY_OPEN)).fetchone()
    if not row or not row[0]:
        return result
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (STORM_LOCK,))
    cursor = await conn.execute(SQL_OPEN_INCIDENTS)
    incidents = [OpenIncident(*r) async for r in cursor]
    notices = await _notices(conn, [i.id for i in incidents])
    for incident in incidents:
        last = notices.get(incident.id)
        step = incident_step(incident, last, config.storm, now)
        if step is IncidentStep.WAIT:
            continue
        written = await _tell(conn, config, incident, step, last, now)
        result.notifications += written
        result.notices += 1 if written else 0
        if step.closes:
            await conn.execute(SQL_CLOSE, (now, incident.id))
            result.closed += 1
    return result
