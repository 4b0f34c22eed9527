"""``GET /healthz``: 200 when the console and its database answer (for `tms up` and monitors).

Under `tms up` it also shows the platform's parts under "platform": each part's state,
pid, restarts and last exit, as the supervisor last wrote them. The HTTP status stays
the console's own: a part being restarted is shown, not turned into a 503 of the
console, whose health `tms up` itself waits for at start.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from flask import Blueprint
from sqlalchemy.exc import SQLAlchemyError

from console import fleet
from console.db import request_session
from shared.platform_status import STATUS_FILE_ENV, read_status_file

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


def _platform() -> dict[str, Any] | None:
    """The supervisor's status file, when `tms up` runs this console (it sets the path)."""
    path = os.environ.get(STATUS_FILE_ENV)
    return read_status_file(Path(path)) if path else None


@bp.get("/healthz")
def healthz() -> tuple[dict[str, Any], int]:
    body: dict[str, Any]
    try:
        fleet.database_answers(request_session())
    except (SQLAlchemyError, OSError) as exc:
        log.warning("health check: database does not answer: %s", exc)
        body, code = {"status": "error", "database": "unavailable"}, 503
    except Exception:  # a probe reads JSON: whatever went wrong, it gets JSON
        log.exception("health check failed")
        body, code = {"status": "error", "database": "unknown"}, 503
    else:
        body, code = {"status": "ok", "database": "ok"}, 200
    try:
        platform = _platform()
    except (OSError, ValueError) as exc:
        log.warning("health check: cannot read the platform status: %s", exc)
        platform = None
    if platform is not None:
        body["platform"] = platform
    return body, code
