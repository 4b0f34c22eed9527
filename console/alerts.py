"""The alerts screen: everyone signed in sees alerts; operators and above act on them.

Acknowledge, resolve with a note, and assign each write the audit trail. The queries
live in ``console.alert_repository``: the ingest daemon owns how alerts are raised,
the console only reads them and applies people's decisions.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from console import alert_repository, users
from console.access import acting_user, client_address, requires_role
from console.db import request_session
from shared.models import Role

bp = Blueprint("alerts", __name__)


@bp.route("/alerts")
@requires_role(Role.VIEWER)
def index() -> str:
    status = request.args.get("status", "active")
    if status not in alert_repository.STATUS_FILTERS:
        status = "active"
    db = request_session()
    return render_template(
        "alerts.html",
        alerts=alert_repository.list_alerts(db, status),
        incidents=alert_repository.recent_incidents(db),
        status=status,
        filters=alert_repository.STATUS_FILTERS,
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
    if not alert_repository.acknowledge(request_session(), alert_id, user.id):
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
    if not alert_repository.resolve(request_session(), alert_id, note):
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
    if not alert_repository.assign(db, alert_id, assignee):
        flash("That alert is resolved; it cannot be assigned.", "error")
        return _back()
    _audit("alert.assign", alert_id, {"assignee": username or None})
    flash(f"Alert {alert_id} assigned to {username or 'nobody'}.", "info")
    return _back()
