"""Terminal lifecycle actions for admins: rotate, revoke, decommission, swap; and the
team's own marks for operators: maintenance and tags.

Each is one POST from the terminal page, done by ``registry.lifecycle`` (or
``registry.terminal_tags``) in one transaction together with its audit record; the
broker applies a lifecycle action to the live session within seconds. A new secret is
shown once, on a page that is not cached.
"""

from __future__ import annotations

from flask import (
    Blueprint,
    abort,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.wrappers import Response

from console import fleet
from console.access import acting_user, client_address, requires_role
from console.db import request_session
from console.terminals import render_detail
from registry import lifecycle, terminal_tags
from registry.errors import ProvisioningError
from shared.models import Role

bp = Blueprint("terminal_actions", __name__)


def _actor() -> lifecycle.Actor:
    user = acting_user()
    assert user is not None  # requires_role let the request through
    return lifecycle.Actor(user.username, client_address())


def _back(serial: str) -> Response:
    return redirect(url_for("terminals.detail", serial=serial))


def _secret_page(serial: str, secret: str, what: str) -> Response:
    response = make_response(
        render_template("terminal_secret.html", serial=serial, secret=secret, what=what)
    )
    # The secret is shown once: no copy may stay in a cache or the browser history.
    response.headers["Cache-Control"] = "no-store"
    return response


def _failed(serial: str, exc: ProvisioningError) -> Response:
    request_session().rollback()
    flash(str(exc), "error")
    return _back(serial)


@bp.post("/terminals/<serial>/rotate")
@requires_role(Role.ADMIN)
def rotate(serial: str) -> Response:
    db = request_session()
    try:
        secret = lifecycle.rotate_terminal(db, _actor(), serial)
    except ProvisioningError as exc:
        return _failed(serial, exc)
    db.commit()
    return _secret_page(serial, secret, "New secret; the old one no longer works.")


@bp.post("/terminals/<serial>/revoke")
@requires_role(Role.ADMIN)
def revoke(serial: str) -> Response:
    db = request_session()
    try:
        lifecycle.revoke_terminal(db, _actor(), serial)
    except ProvisioningError as exc:
        return _failed(serial, exc)
    db.commit()
    flash(f"Broker access of {serial} revoked; its session is closed.", "info")
    return _back(serial)


@bp.post("/terminals/<serial>/decommission")
@requires_role(Role.ADMIN)
def decommission(serial: str) -> Response:
    db = request_session()
    reason = request.form.get("reason", "").strip()[:200] or "decommissioned"
    try:
        lifecycle.decommission_terminal(db, _actor(), serial, reason)
    except ProvisioningError as exc:
        return _failed(serial, exc)
    db.commit()
    flash(f"Terminal {serial} decommissioned.", "info")
    return _back(serial)


@bp.post("/terminals/<serial>/swap")
@requires_role(Role.ADMIN)
def swap(serial: str) -> Response:
    db = request_session()
    new_serial = request.form.get("new_serial", "").strip()
    try:
        secret = lifecycle.swap_terminal(db, _actor(), serial, new_serial)
    except ProvisioningError as exc:
        return _failed(serial, exc)
    db.commit()
    return _secret_page(new_serial, secret, f"Replaces {serial}, which is decommissioned.")


@bp.post("/terminals/<serial>/maintenance")
@requires_role(Role.OPERATOR)
def maintenance(serial: str) -> Response:
    """Start or end maintenance: the team's own flag, shown and filtered on, audited."""
    on = request.form.get("on") == "yes"
    note = request.form.get("note", "")
    if len(note) > 200:
        flash("The maintenance note is at most 200 characters.", "error")
        return _back(serial)
    user = acting_user()
    assert user is not None
    if not fleet.set_maintenance(
        request_session(), serial, on, note, user.username, client_address()
    ):
        abort(404, description=f"There is no terminal with serial {serial}.")
    flash(f"{serial} is {'under' if on else 'out of'} maintenance.", "info")
    return _back(serial)


# What the tags box accepts: 20 tags of 64 characters and their separators, with room.
TAGS_INPUT_MAX = 2000


@bp.post("/terminals/<serial>/tags")
@requires_role(Role.OPERATOR)
def tags(serial: str) -> Response | tuple[str, int]:
    """Set the terminal's tags from a comma-separated list (empty: none), audited; a bad
    list is shown again beside the box with what is wrong."""
    typed = request.form.get("tags", "")
    db = request_session()
    try:
        if len(typed) > TAGS_INPUT_MAX:
            raise terminal_tags.TagError(f"the list is at most {TAGS_INPUT_MAX} characters")
        wanted = terminal_tags.parse_tags(typed)
        change = terminal_tags.change_tags(db, _actor(), serial, replace=wanted)
    except terminal_tags.TagError as exc:
        db.rollback()
        error = str(exc)
        return render_detail(serial, tags_typed=typed[:TAGS_INPUT_MAX], tags_error=error), 400
    except ProvisioningError as exc:  # no such terminal
        db.rollback()
        abort(404, description=str(exc))
    db.commit()
    if change.changed:
        flash(f"Tags of {serial}: {', '.join(change.after) or 'none'}.", "info")
    else:
        flash(f"Tags of {serial}: nothing changed.", "info")
    return _back(serial)
