"""The alerts screen: everyone signed in sees alerts; operators and above act on them.

Acknowledge, resolve with a note, and assign each write the audit trail. The queries
live at the top of this module (the alert repository): the ingest daemon owns how
alerts are raised, the console only reads them and applies people's decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import text
from sqlmodel import Session
from werkzeug.wrappers import Response

from console import users
from console.access import acting_user, client_address, requires_role
from console.db import request_session
from shared.models import Role

bp = Blueprint("alerts", __name__)

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
    return _change(session, SQL_ACKNOWLEDGE, {"id": alert_id, "user": user_id})


def resolve(session: Session, alert_id: int, note: str) -> bool:
    return _change(session, SQL_RESOLVE, {"id": alert_id, "note": note[:NOTE_MAX]})


def assign(session: Session, alert_id: int, user_id: int | None) -> bool:
    return _change(session, SQL_ASSIGN, {"id": alert_id, "user": user_id})


# --- views ---


@bp.route("/alerts")
@requires_role(Role.VIEWER)
def index() -> str:
    status = request.args.get("status", "active")
    if status not in STATUS_FILTERS:
        status = "active"
    db = request_session()
    return render_template(
        "alerts.html",
        alerts=list_alerts(db, status),
        incidents=recent_incidents(db),
        status=status,
        filters=STATUS_FILTERS,
        accounts=[u for u in users.list_users(db) if u.active],
    )


def _audit(action: str, alert_id: int, detail: dict[str, Any]) -> None:
    user = acting_user()
    assert user is not None  # requires_role ran first
    users.record_audit(
        request_session(), user.username, action, f"alert:{alert_id}", detail, client_address()
    )


def _back() -> Response:
    return redirect(url_for("alerts.index", status=request.form.get("back", "active")))


@bp.post("/alerts/<int:alert_id>/acknowledge")
@requires_role(Role.OPERATOR)
def acknowledge_view(alert_id: int) -> Response:
    user = acting_user()
    assert user is not None
    if not acknowledge(request_session(), alert_id, user.id):
        flash("That alert is not open (already acknowledged or resolved).", "error")
        return _back()
    _audit("alert.acknowledge", alert_id, {})
    flash(f"Alert {alert_id} acknowledged.", "info")
    return _back()


@bp.post("/alerts/<int:alert_id>/resolve")
@requires_role(Role.OPERATOR)
def resolve_view(alert_id: int) -> Response:
    note = request.form.get("note", "").strip()
    if not note:
        flash("Say how it was resolved: a note is required.", "error")
        return _back()
    if not resolve(request_session(), alert_id, note):
        flash("That alert is already resolved.", "error")
        return _back()
    _audit("alert.resolve", alert_id, {"note": note[:200]})
    flash(f"Alert {alert_id} resolved.", "info")
    return _back()


@bp.post("/alerts/<int:alert_id>/assign")
@requires_role(Role.OPERATOR)
def assign_view(alert_id: int) -> Response:
    db = request_session()
    username = request.form.get("assignee", "").strip()
    assignee = None
    if username:
        account = next((u for u in users.list_users(db) if u.username == username), None)
        if account is None or not account.active:
            abort(400, description=f"no active user {username!r}")
        assignee = account.id
    if not assign(db, alert_id, assignee):
        flash("That alert is resolved; it cannot be assigned.", "error")
        return _back()
    _audit("alert.assign", alert_id, {"assignee": username or None})
    flash(f"Alert {alert_id} assigned to {username or 'nobody'}.", "info")
    return _back()
