"""Queue notifications: one ``notification_outbox`` row per route and channel.

Written inside the caller's transaction, so a notification is queued together with
the alert or incident change that caused it, or not at all; ``ingest.alerts.notify``
delivers the rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import psycopg

from ingest.alerts.config import Route

SQL_ENQUEUE = """
INSERT INTO notification_outbox (alert_id, incident_id, route, channel, target, payload,
                                 status, attempts, next_attempt_at)
SELECT * FROM unnest(%s::int[], %s::int[], %s::text[], %s::text[], %s::text[], %s::jsonb[],
                     %s::text[], %s::int[], %s::timestamptz[])
"""

OutboxRow = tuple[int | None, int | None, str, str, str, str, str, int, datetime]


def outbox_rows(
    routes: Iterable[Route],
    alert_id: int | None,
    incident_id: int | None,
    payload: dict[str, Any],
    due: datetime,
) -> list[OutboxRow]:
    """Rows for one notification: e-mail and webhook of every route given."""
    body = json.dumps(payload)
    rows: list[OutboxRow] = []
    for route in routes:
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


async def enqueue(conn: psycopg.AsyncConnection[Any], rows: list[OutboxRow]) -> int:
    """Insert the rows (one statement); returns how many."""
    if rows:
        columns = [list(column) for column in zip(*rows, strict=True)]
        await conn.execute(SQL_ENQUEUE, columns)
    return len(rows)
