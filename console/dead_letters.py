"""The dead-letter screen (admins only): messages ingest could not use, counted by reason."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from console import dead_letter_repository
from console.access import requires_role
from console.db import request_session
from shared.models import Role

bp = Blueprint("dead_letters", __name__)


@bp.route("/dead-letters")
@requires_role(Role.ADMIN)
def index() -> str:
    reason = request.args.get("reason", "")[:64]
    db = request_session()
    return render_template(
        "dead_letters.html",
        reasons=dead_letter_repository.reason_counts(db),
        letters=dead_letter_repository.recent(db, reason),
        reason=reason,
    )
