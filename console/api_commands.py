"""The REST API for remote commands (v1, JSON, bearer tokens): one terminal, or a bulk.

Bodies are parsed here, at the edge, into frozen values (``SendBody``, ``BulkBody``);
the queue (``commands.queue``) checks names, arguments, roles and expiry with the
catalogue's rules and audits every send and cancel. Refusals become JSON errors:
400 for a bad request, 403 when the caller's role may not, 404, 409 for a command past
the point where a cancel makes sense.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from flask import Blueprint, abort, request
from werkzeug.datastructures import MultiDict

from commands import queue
from commands.queue import CommandConflict, CommandNotFound
from console import fleet
from console.access import acting_user, authenticate_bearer, requires_role
from console.api import ApiInputError
from console.command_forms import bulk_summary
from console.commands import acting_requester, selected_targets
from console.db import request_session
from shared.command_catalog import (
    CATALOG,
    CommandRefused,
    check_expiry,
    check_request,
    may_send,
)
from shared.models import Role, TerminalStatus
from shared.topics import is_valid_serial

bp = Blueprint("api_commands", __name__, url_prefix="/api/v1")
bp.before_request(authenticate_bearer)

DEFAULT_HISTORY = 50
MAX_HISTORY = 500
MAX_ID = 2**31 - 1
_STATUSES = tuple(status.value for status in TerminalStatus)
_SEND_KEYS = frozenset({"name", "args", "expires_in_s"})
_BULK_KEYS = _SEND_KEYS | {"rate_per_s", "selection", "dry_run"}
_SELECTION_KEYS = ("customer", "status", "search", "store", "firmware")


# -- parsing the body ----------------------------------------------------------------


def _has_nul(value: Any) -> bool:
    """PostgreSQL keeps no NUL character in text or JSONB: refuse it here, not as a 500."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse_json_object(raw: bytes, allowed: frozenset[str]) -> dict[str, Any]:
    """The request body as a JSON object with only ``allowed`` keys, or ApiInputError."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiInputError("the body must be a JSON object (it is not valid JSON)") from None
    if not isinstance(body, dict):
        raise ApiInputError(f"the body must be a JSON object, not {type(body).__name__}")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiInputError(
            f"unknown field {unknown[0]!r}: the fields are {', '.join(sorted(allowed))}"
        )
    if _has_nul(body):
        raise ApiInputError("text in the body may not contain NUL characters")
    return body


def _number(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiInputError(f"{key} must be a number of seconds, not {json.dumps(value)[:40]}")
    try:
        number = float(value)
    except OverflowError:
        raise ApiInputError(f"{key} is far too large") from None
    if not math.isfinite(number):
        raise ApiInputError(f"{key} must be a finite number")
    return number


@dataclass(frozen=True)
class SendBody:
    """``{"name": ..., "args": {...}, "expires_in_s": ...}``, shaped; the queue checks it."""

    name: str
    args: dict[str, Any]
    expires_in_s: float | None

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> SendBody:
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise ApiInputError(f"name must name a command: one of {', '.join(CATALOG)}")
        args = body.get("args")
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise ApiInputError("args must be a JSON object (or left out)")
        return cls(name, args, _number(body, "expires_in_s"))


@dataclass(frozen=True)
class BulkBody:
    command: SendBody
    rate_per_s: float | None
    selection: fleet.TerminalFilter
    dry_run: bool

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> BulkBody:
        selection = body.get("selection")
        if not isinstance(selection, dict):
            raise ApiInputError(
                "selection must be a JSON object with any of "
                f"{', '.join(_SELECTION_KEYS)} ({{}} selects every terminal)"
            )
        unknown = sorted(set(selection) - set(_SELECTION_KEYS))
        if unknown:
            raise ApiInputError(
                f"unknown selection field {unknown[0]!r}: use {', '.join(_SELECTION_KEYS)}"
            )
        for key, value in selection.items():
            if value is not None and (not isinstance(value, str) or len(value) > 200):
                raise ApiInputError(f"selection.{key} must be a string of at most 200 characters")
        status = selection.get("status") or None
        if status is not None and status not in _STATUSES:
            raise ApiInputError(f"selection.status must be one of {', '.join(_STATUSES)}")
        dry_run = body.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise ApiInputError("dry_run must be true or false")
        return cls(
            command=SendBody.parse(body),
            rate_per_s=_number(body, "rate_per_s"),
            selection=fleet.TerminalFilter(
                status=status,
                customer=selection.get("customer") or None,
                search=selection.get("search") or None,
                store=selection.get("store") or None,
                firmware=selection.get("firmware") or None,
            ),
            dry_run=dry_run,
        )


def _body(allowed: frozenset[str]) -> dict[str, Any]:
    try:
        return parse_json_object(request.get_data(cache=False), allowed)
    except ApiInputError as exc:
        abort(400, description=str(exc))


def _history_limit(args: MultiDict[str, str]) -> int:
    raw = args.get("limit") or str(DEFAULT_HISTORY)
    try:
        limit = int(raw)
    except ValueError:
        raise ApiInputError(f"limit must be a whole number, not {raw!r}") from None
    if not 1 <= limit <= MAX_HISTORY:
        raise ApiInputError(f"limit must be between 1 and {MAX_HISTORY}, not {limit}")
    return limit


# -- errors --------------------------------------------------------------------------


def _refused(exc: CommandRefused, name: str | None = None) -> NoReturn:
    """400, or 403 when the refusal is the caller's role (the catalogue's may_send)."""
    request_session().rollback()
    user = acting_user()
    role_refusal = (
        user is not None and name is not None and name in CATALOG and not may_send(user.role, name)
    )
    abort(403 if role_refusal else 400, description=str(exc))


def _terminal_or_404(serial: str) -> None:
    # A serial that cannot be a terminal's (a NUL, 200 characters) is not looked up.
    if not is_valid_serial(serial) or fleet.get_terminal(request_session(), serial) is None:
        abort(404, description=f"no terminal with serial {serial!r}")


def _command_or_404(command_id: str) -> queue.CommandView:
    view = None
    if 0 < len(command_id) <= 64 and "\x00" not in command_id:
        view = queue.get_command(request_session(), command_id)
    if view is None:
        abort(404, description=f"no command {command_id!r}")
    return view


# -- one terminal ----------------------------------------------------------------------


@bp.post("/terminals/<serial>/commands")
@requires_role(Role.VIEWER)  # signed in; what each role may send is the catalogue's rule
def send(serial: str) -> tuple[dict[str, Any], int]:
    body = _body(_SEND_KEYS)
    try:
        command = SendBody.parse(body)
    except ApiInputError as exc:
        abort(400, description=str(exc))
    _terminal_or_404(serial)
    try:
        view = queue.queue_command(
            request_session(),
            acting_requester(),
            serial,
            command.name,
            command.args,
            command.expires_in_s,
        )
    except CommandRefused as exc:
        _refused(exc, command.name)
    return view.to_json(), 201


@bp.get("/terminals/<serial>/commands")
@requires_role(Role.VIEWER)
def history(serial: str) -> dict[str, Any]:
    try:
        limit = _history_limit(request.args)
    except ApiInputError as exc:
        abort(400, description=str(exc))
    name = request.args.get("name") or None
    if name is not None and name not in CATALOG:
        abort(400, description=f"name must be one of {', '.join(CATALOG)}")
    _terminal_or_404(serial)
    views = queue.list_commands(request_session(), serial, limit=limit, name=name)
    return {"commands": [view.to_json() for view in views], "count": len(views), "limit": limit}


@bp.get("/commands/<command_id>")
@requires_role(Role.VIEWER)
def get(command_id: str) -> dict[str, Any]:
    return _command_or_404(command_id).to_json()


@bp.post("/commands/<command_id>/cancel")
@requires_role(Role.VIEWER)
def cancel(command_id: str) -> dict[str, Any]:
    _command_or_404(command_id)
    try:
        view = queue.cancel_command(request_session(), acting_requester(), command_id)
    except CommandRefused as exc:
        abort(403, description=str(exc))
    except CommandNotFound as exc:
        abort(404, description=str(exc))
    except CommandConflict as exc:
        abort(409, description=str(exc))
    return view.to_json()


# -- bulk ------------------------------------------------------------------------------


@bp.post("/commands/bulk")
@requires_role(Role.VIEWER)
def send_bulk() -> tuple[dict[str, Any], int]:
    body = _body(_BULK_KEYS)
    try:
        bulk = BulkBody.parse(body)
    except ApiInputError as exc:
        abort(400, description=str(exc))
    db = request_session()
    requester = acting_requester()
    command = bulk.command
    targets = selected_targets(db, bulk.selection)
    summary = bulk_summary(bulk.selection, len(targets))
    try:
        if bulk.dry_run:
            # The same checks as a real send, so a script learns of a refusal first.
            args = check_request(requester.role, command.name, command.args)
            check_expiry(command.name, command.expires_in_s)
            rate = queue.check_rate(bulk.rate_per_s)
            return {
                "dry_run": True,
                "name": command.name,
                "args": args,
                "rate_per_s": rate,
                "count": len(targets),
                "selection": bulk.selection.to_json(),
                "summary": summary,
            }, 200
        view = queue.queue_bulk(
            db,
            requester,
            command.name,
            command.args,
            targets,
            rate_per_s=bulk.rate_per_s,
            expires_in_s=command.expires_in_s,
            selection=bulk.selection.to_json(),
            summary=summary,
        )
    except CommandRefused as exc:
        _refused(exc, command.name)
    return view.to_json(), 201


@bp.get(f"/commands/bulk/<int(max={MAX_ID}):bulk_id>")
@requires_role(Role.VIEWER)
def get_bulk(bulk_id: int) -> dict[str, Any]:
    view = queue.get_bulk(request_session(), bulk_id)
    if view is None:
        abort(404, description=f"no bulk command {bulk_id}")
    return view.to_json()


@bp.post(f"/commands/bulk/<int(max={MAX_ID}):bulk_id>/cancel")
@requires_role(Role.VIEWER)
def cancel_bulk(bulk_id: int) -> dict[str, Any]:
    try:
        view = queue.cancel_bulk(request_session(), acting_requester(), bulk_id)
    except CommandRefused as exc:
        abort(403, description=str(exc))
    except CommandNotFound as exc:
        abort(404, description=str(exc))
    return view.to_json()
