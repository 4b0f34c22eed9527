"""``GET /healthz``: 200 when the console and its database answer (for `tms up` and monitors)."""

from __future__ import annotations

import logging

from flask import Blueprint
from sqlalchemy.exc import SQLAlchemyError

from console import fleet
from console.db import request_session

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz() -> tuple[dict[str, str], int]:
    try:
        fleet.database_answers(request_session())
    except SQLAlchemyError as exc:
        log.warning("health check: database does not answer: %s", exc)
        return {"status": "error", "database": "unavailable"}, 503
    return {"status": "ok", "database": "ok"}, 200
