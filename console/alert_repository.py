"""The alerts and incidents as the console reads and changes them: the alert repository.

The ingest daemon owns how alerts are raised; the console only reads them and applies
people's decisions (acknowledge, resolve with a note, assign), each committed here as
its own unit of work. Rows come back as frozen ``AlertRow`` values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlmodel import Session

NOTE_MAX = 2000
STATUS_FILTERS = ("active", "open", "acknowledged", "resolved", "all")

SQL_LIST = """
SELECT a.id, a.kind, a.severity, a.status, a.message, a.count, a.first_seen_at, a.last_seen_at,
       a.host_name, a.incident_id, a.resolution_note, a.resolved_at, a.acknowledged_at,
       t.serial, c.name AS customer, assignee.username AS assignee, ack.username AS acknowledged_by
FROM alert a
LEFT JOIN terminal t ON t.id = a.terminal_id
LEFT JOIN customer c ON c.id = a.customer_id
LEFT JOIN user_account assignee ON assignee.id = a.assignee_id
LEFT JOIN user_account ack ON ack.id = a.acknowledged_by
WHERE (:status = 'all' OR (:status = 'active' AND a.status <> 'resolved') OR a.status = :status)
ORDER BY (a.status = 'resolved'),
         CASE a.severity WHEN 'critical' THEN 0 WHEN 'major' THEN 1
                         WHEN 'warning' THEN 2 ELSE 3 END,
         a.last_seen_at DESC
LIMIT :limit
"""
SQL_INCIDENTS = """
SELECT id, status, severity, summary, alert_count, opened_at, last_alert_at, closed_at
FROM incident ORDER BY id DESC LIMIT 10
"""
SQL_ACKNOWLEDGE = """
UPDATE alert SET status = 'acknowledged', acknowledged_by = :user, acknowledged_at = now()
WHERE id = :id AND status = 'open'
"""
SQL_RESOLVE = """
UPDATE alert SET status = 'resolved', resolved_at = now(), resolution_note = :note
WHERE id = :id AND status <> 'resolved'
"""
SQL_ASSIGN = "UPDATE alert SET assignee_id = :user WHERE id = :id AND status <> 'resolved'"


@dataclass(frozen=True)
class AlertRow:
    id: int
    kind: str
    severity: str
    status: str
    message: str
    count: int
    first_seen_at: datetime
    last_seen_at: datetime
    host_name: str | None
    incident_id: int | None
    resolution_note: str | None
    resolved_at: datetime | None
    acknowledged_at: datetime | None
    serial: str | None
    customer: str | None
    assignee: str | None
    acknowledged_by: str | None

    @property
    def subject(self) -> str:
        return self.serial or (f"store PC {self.host_name}" if self.host_name else "—")


def list_alerts(session: Session, status: str, limit: int = 300) -> list[AlertRow]:
    rows = session.execute(text(SQL_LIST), {"status": status, "limit": limit})
    return [AlertRow(*row) for row in rows]


def recent_incidents(session: Session) -> list[Any]:
    return list(session.execute(text(SQL_INCIDENTS)))


def _change(session: Session, sql: str, params: dict[str, Any]) -> bool:
    changed = session.execute(text(sql), params).rowcount > 0  # type: ignore[attr-defined]
    session.commit()
    return bool(changed)


def acknowledge(session: Session, alert_id: int, user_id: int) -> bool:
    """True when the alert was open and is now acknowledged by ``user_id``."""
    return _change(session, SQL_ACKNOWLEDGE, {"id": alert_id, "user": user_id})


def resolve(session: Session, alert_id: int, note: str) -> bool:
    """True when the alert was not yet resolved and now is, with the note."""
    return _change(session, SQL_RESOLVE, {"id": alert_id, "note": note[:NOTE_MAX]})


def assign(session: Session, alert_id: int, user_id: int | None) -> bool:
    """True when the unresolved alert now has this assignee (None: nobody)."""
    return _change(session, SQL_ASSIGN, {"id": alert_id, "user": user_id})
