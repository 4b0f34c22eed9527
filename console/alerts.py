"""The alerts screen: everyone signed in sees alerts; operators and above act on them.

The list's filters and page live in the URL (``console.alert_query``); the table and
its counts are also a partial the page's script swaps in every few seconds. Operators
tick alerts and acknowledge, assign or resolve them (with a note) in one go; each alert
changed is audited, in the same transaction as the change. The single-alert routes
remain for links and scripts. The queries live in ``console.alert_repository``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from console import alert_repository, fleet, users
from console.access import acting_user, client_address, requires_role
from console.alert_query import (
    ASSIGNEE_ME,
    ASSIGNEE_NONE,
    BULK_MAX,
    SEVERITIES,
    STATUSES,
    AlertQuery,
    parse_ids,
)
from console.alert_repository import BulkOutcome
from console.db import request_session
from shared.models import Role

bp = Blueprint("alerts", __name__)

# The assign select's value for "nobody": no username starts with "-".
NOBODY = "-"
# How many unusable ids a message names before it says "and n more".
NAMED_MAX = 10
_DONE = {"acknowledge": "acknowledged", "assign": "assigned", "resolve": "resolved"}
_ALREADY = {
    "acknowledge": "already acknowledged or resolved",
    "assign": "already so assigned, or resolved",
    "resolve": "already resolved",
}


def _me() -> str:
    user = acting_user()
    assert user is not None  # requires_role ran first
    return user.username


def _list_context(query: AlertQuery) -> dict[str, Any]:
    db = request_session()
    me = _me()
    return {
        "query": query,
        "page": alert_repository.list_page(db, query, me),
        "counts": alert_repository.counts(db, query, me),
        "statuses": STATUSES,
        "severities": SEVERITIES,
        "selected": frozenset(),
    }


def _render_page(query: AlertQuery, **extra: Any) -> str:
    db = request_session()
    context = _list_context(query)
    context.update(extra)
    return render_template(
        "alerts.html",
        customers=fleet.customer_names(db),
        kinds=alert_repository.active_kinds(db),
        accounts=[u for u in users.list_users(db) if u.active],
        refresh_s=current_app.config["TMS_REFRESH_S"],
        nobody=NOBODY,
        assignee_me=ASSIGNEE_ME,
        assignee_none=ASSIGNEE_NONE,
        **context,
    )


@bp.route("/alerts")
@requires_role(Role.VIEWER)
def index() -> str:
    return _render_page(AlertQuery.parse(request.args))


@bp.route("/alerts/live")
@requires_role(Role.VIEWER)
def live() -> str:
    """The counts and the table alone: what the page's script swaps in every refresh."""
    return render_template("_alerts.html", **_list_context(AlertQuery.parse(request.args)))


def _named(values: tuple[Any, ...]) -> str:
    shown = ", ".join(str(v) if isinstance(v, int) else repr(v) for v in values[:NAMED_MAX])
    more = len(values) - NAMED_MAX
    return f"{shown} and {more} more" if more > 0 else shown


def _report(action: str, outcome: BulkOutcome, bad: tuple[str, ...]) -> None:
    """Flash how many changed, how many were already so, and the ids not usable."""
    changed, unchanged = len(outcome.changed), len(outcome.unchanged)
    parts = [f"{changed} alert{'s' if changed != 1 else ''} {_DONE[action]}."]
    if unchanged:
        parts.append(f"{unchanged} {'was' if unchanged == 1 else 'were'} {_ALREADY[action]}.")
    if outcome.missing:
        parts.append(f"No such alert: {_named(outcome.missing)}.")
    if bad:
        parts.append(f"Not an alert id: {_named(bad)}.")
    flash(" ".join(parts), "info" if changed and not (outcome.missing or bad) else "error")


def _assignee(username: str) -> tuple[int, str] | None | str:
    """The assign form's choice: (id, name), None for nobody, or what is wrong."""
    if username == NOBODY:
        return None
    if not username:
        return "Choose whom to assign them to."
    account = users.get_user_by_name(request_session(), username)
    if account is None or not account.active or account.id is None:
        return f"There is no active user {username!r}."
    return (account.id, account.username)


@bp.post("/alerts/bulk")
@requires_role(Role.OPERATOR)
def bulk() -> Response | tuple[str, int]:
    """Acknowledge, assign or resolve the ticked alerts; the list's filters are the
    URL's query string, kept for the way back."""
    query = AlertQuery.parse(request.args)
    action = request.form.get("action", "")
    ids, bad = parse_ids(request.form.getlist("alert"))
    note = request.form.get("note", "").strip()
    assignee_name = request.form.get("assignee", "").strip()
    errors: dict[str, str] = {}
    if action not in alert_repository.ACTIONS:
        errors["action"] = "Choose Acknowledge, Assign or Resolve."
    if len(ids) + len(bad) > BULK_MAX:
        errors["alert"] = f"Select at most {BULK_MAX} alerts at once."
    elif not ids:
        errors["alert"] = (
            f"None of these is an alert: {_named(bad)}." if bad else "Select alerts first."
        )
    if action == "resolve" and not note:
        errors["note"] = "Say how they were resolved: a note is required."
    assignee = _assignee(assignee_name) if action == "assign" else None
    if isinstance(assignee, str):
        errors["assignee"] = assignee
    if errors:
        page = _render_page(
            query, errors=errors, selected=frozenset(ids), note=note, chosen=assignee_name
        )
        return page, 400
    user = acting_user()
    assert user is not None
    outcome = alert_repository.apply(
        request_session(),
        action,
        ids,
        actor=user.username,
        actor_id=user.id,
        remote_addr=client_address(),
        note=note,
        assignee=None if isinstance(assignee, str) else assignee,
        bulk=True,
    )
    _report(action, outcome, bad)
    return redirect(url_for("alerts.index", **query.args()))


def _back() -> Response:
    return redirect(url_for("alerts.index", status=request.form.get("back", "active")))


def _one(alert_id: int, action: str, **change: Any) -> BulkOutcome:
    user = acting_user()
    assert user is not None
    return alert_repository.apply(
        request_session(),
        action,
        [alert_id],
        actor=user.username,
        actor_id=user.id,
        remote_addr=client_address(),
        **change,
    )


@bp.post("/alerts/<int:alert_id>/acknowledge")
@requires_role(Role.OPERATOR)
def acknowledge_view(alert_id: int) -> Response:
    if not _one(alert_id, "acknowledge").changed:
        flash("That alert is not open (already acknowledged or resolved).", "error")
        return _back()
    flash(f"Alert {alert_id} acknowledged.", "info")
    return _back()


@bp.post("/alerts/<int:alert_id>/resolve")
@requires_role(Role.OPERATOR)
def resolve_view(alert_id: int) -> Response:
    note = request.form.get("note", "").strip()
    if not note:
        flash("Say how it was resolved: a note is required.", "error")
        return _back()
    if not _one(alert_id, "resolve", note=note).changed:
        flash("That alert is already resolved.", "error")
        return _back()
    flash(f"Alert {alert_id} resolved.", "info")
    return _back()


@bp.post("/alerts/<int:alert_id>/assign")
@requires_role(Role.OPERATOR)
def assign_view(alert_id: int) -> Response:
    username = request.form.get("assignee", "").strip()
    assignee = _assignee(username or NOBODY)
    if isinstance(assignee, str):
        abort(400, description=assignee)
    outcome = _one(alert_id, "assign", assignee=assignee)
    if not outcome.changed:
        flash("That alert is resolved or already assigned so; nothing changed.", "error")
        return _back()
    flash(f"Alert {alert_id} assigned to {username or 'nobody'}.", "info")
    return _back()
