"""The REST API for support scripts (v1, JSON, bearer tokens): terminals, one or many."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Blueprint, abort
from flask import request as flask_request
from werkzeug.datastructures import MultiDict

from console import fleet, update_history
from console.access import authenticate_bearer, requires_role
from console.db import request_session
from registry import terminal_tags
from shared.models import Role, TerminalStatus

bp = Blueprint("api", __name__, url_prefix="/api/v1")
bp.before_request(authenticate_bearer)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_STATUSES = tuple(status.value for status in TerminalStatus)


class ApiInputError(ValueError):
    """A query parameter the API cannot use; the message goes back to the caller."""


def _int_param(args: MultiDict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiInputError(f"{name} must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise ApiInputError(f"{name} must be between {low} and {high}, not {value}")
    return value


@dataclass(frozen=True)
class TerminalQuery:
    """Filters and page of ``GET /api/v1/terminals``, checked (pure: testable without HTTP)."""

    filter: fleet.TerminalFilter
    limit: int
    offset: int

    @classmethod
    def parse(cls, args: MultiDict[str, str]) -> TerminalQuery:
        status = args.get("status") or None
        if status is not None and status not in _STATUSES:
            raise ApiInputError(f"status must be one of {', '.join(_STATUSES)}, not {status!r}")
        tags = [tag.strip() for value in args.getlist("tag") for tag in value.split(",")]
        try:
            wanted = terminal_tags.check_tags(tag for tag in tags if tag)
        except terminal_tags.TagError as exc:
            raise ApiInputError(f"tag: {exc}") from None
        return cls(
            filter=fleet.TerminalFilter(
                status=status, customer=args.get("customer") or None, tags=wanted
            ),
            limit=_int_param(args, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
            offset=_int_param(args, "offset", 0, 0, 2**31 - 1),
        )


@bp.get("/terminals")
@requires_role(Role.VIEWER)
def list_terminals() -> dict[str, Any]:
    try:
        query = TerminalQuery.parse(flask_request.args)
    except ApiInputError as exc:
        abort(400, description=str(exc))
    db = request_session()
    terminals = fleet.list_terminals(db, query.filter, limit=query.limit, offset=query.offset)
    return {
        "terminals": [terminal.to_json() for terminal in terminals],
        "count": len(terminals),
        "total": fleet.count_terminals(db, query.filter),
        "limit": query.limit,
        "offset": query.offset,
    }


@bp.get("/terminals/<serial>")
@requires_role(Role.VIEWER)
def get_terminal(serial: str) -> dict[str, Any]:
    db = request_session()
    terminal = fleet.get_terminal(db, serial)
    if terminal is None:
        abort(404, description=f"no terminal with serial {serial!r}")
    updates = update_history.terminal_updates(db, serial)
    return terminal.to_detail_json() | {"updates": [update.to_json() for update in updates]}
