"""The audit screen (admins only): recent sign-ins and changes, newest first."""

from __future__ import annotations

from flask import Blueprint, render_template

from console import users
from console.access import requires_role
from console.db import request_session
from shared.models import Role

bp = Blueprint("audit", __name__)


@bp.route("/audit")
@requires_role(Role.ADMIN)
def index() -> str:
    db = request_session()
    return render_template(
        "audit.html", events=users.recent_audit(db, limit=200), accounts=users.list_users(db)
    )
