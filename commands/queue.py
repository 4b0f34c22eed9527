"""The command queue as the console, the REST API and the MQTT relay see it.

A repository module: it alone writes ``command`` and ``command_bulk`` rows for callers
(the sender and ingest move them on). Every request is checked by the catalog's rules
before anything is written, written with who asked and from where, and audited in
the same transaction. Times come from PostgreSQL's clock, the one every sender shares.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from shared import audit_trail
from shared.command_catalog import (
    CommandRefused,
    check_expiry,
    check_request,
    may_cancel,
    spec_of,
)
from shared.command_states import FINAL, CommandState
from shared.errors import TMSError
from shared.models import TerminalStatus

# Bulk pacing, terminals per second per customer: a whole customer's tills rebooted
# in one second is the outage the rate exists to prevent.
MIN_RATE_PER_S = 0.1
MAX_RATE_PER_S = 100.0
DEFAULT_RATE_PER_S = 5.0
MAX_BULK_TERMINALS = 200_000


class CommandNotFound(TMSError, LookupError):
    pass


class CommandConflict(TMSError):
    """The command is past the point where the request makes sense (e.g. cancel a sent one)."""


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asks: a console user, an API token's owner, or a support script's account."""

    name: str
    role: str
    kind: str  # user | token | mqtt | system
    user_id: int | None = None
    token_name: str | None = None
    origin: str | None = None  # the remote address, or "mqtt"


@dataclass(frozen=True, slots=True)
class CommandView:
    id: str
    serial: str
    name: str
    args: dict[str, Any]
    state: str
    requested_by: str
    requester_kind: str
    token_name: str | None
    origin: str | None
    attempts: int
    max_attempts: int
    created_at: datetime
    due_at: datetime
    sent_at: datetime | None
    last_sent_at: datetime | None
    expires_at: datetime | None
    finished_at: datetime | None
    cancelled_by: str | None
    bulk_id: int | None
    result: dict[str, Any] | None
    error: str | None
    request_id: str | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL  # a status outside the states (a bad row) is not final

    @property
    def round_trip_ms(self) -> float | None:
        """From the last send to the result: what ping measures."""
        if self.last_sent_at is None or self.finished_at is None:
            return None
        if self.state not in (CommandState.SUCCEEDED, CommandState.FAILED, CommandState.REJECTED):
            return None
        return max(0.0, (self.finished_at - self.last_sent_at).total_seconds() * 1000)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "serial": self.serial,
            "name": self.name,
            "args": self.args,
            "state": self.state,
            "requested_by": self.requested_by,
            "requester_kind": self.requester_kind,
            "token_name": self.token_name,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "created_at": _iso(self.created_at),
            "sent_at": _iso(self.sent_at),
            "last_sent_at": _iso(self.last_sent_at),
            "expires_at": _iso(self.expires_at),
            "finished_at": _iso(self.finished_at),
            "cancelled_by": self.cancelled_by,
            "bulk_id": self.bulk_id,
            "round_trip_ms": self.round_trip_ms,
            "result": self.result,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class BulkView:
    id: int
    name: str
    args: dict[str, Any]
    summary: str
    rate_per_s: float
    total: int
    requested_by: str
    created_at: datetime
    cancelled_at: datetime | None
    counts: Mapping[str, int]

    @property
    def done(self) -> int:
        return sum(n for state, n in self.counts.items() if state in FINAL)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "args": self.args,
            "summary": self.summary,
            "rate_per_s": self.rate_per_s,
            "total": self.total,
            "requested_by": self.requested_by,
            "created_at": _iso(self.created_at),
            "cancelled_at": _iso(self.cancelled_at),
            "counts": dict(self.counts),
            "done": self.done,
        }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def new_command_id() -> str:
    return uuid.uuid4().hex


_COLUMNS = """
    c.id, t.serial, c.name, c.args, c.status, c.requested_by, c.requester_kind,
    c.token_name, c.origin, c.attempts, c.max_attempts, c.created_at, c.due_at,
    c.sent_at, c.last_sent_at, c.expires_at, c.finished_at, c.cancelled_by, c.bulk_id,
    c.result, c.error, c.request_id
"""


def _view(row: Any) -> CommandView:
    values = list(row)
    values[3] = values[3] or {}
    return CommandView(*values)


def _audit(
    session: Session, requester: Requester, action: str, target: str, detail: dict[str, Any]
) -> None:
    via = {"via": requester.kind}
    if requester.token_name:
        via["token"] = requester.token_name
    audit_trail.record(session, requester.name, action, target, via | detail, requester.origin)


def _terminal_for_command(session: Session, serial: str) -> int:
    row = session.execute(
        text("SELECT id, status FROM terminal WHERE serial = :serial"), {"serial": serial}
    ).first()
    if row is None:
        raise CommandRefused(f"there is no terminal with serial {serial!r}")
    if row.status == TerminalStatus.DECOMMISSIONED.value:
        raise CommandRefused(f"terminal {serial} is decommissioned; it takes no commands")
    return int(row.id)


def get_command(session: Session, command_id: str) -> CommandView | None:
    row = session.execute(
        text(
            f"SELECT {_COLUMNS} FROM command c JOIN terminal t ON t.id = c.terminal_id"
            " WHERE c.id = :id"
        ),
        {"id": command_id},
    ).first()
    return _view(row) if row is not None else None


def list_commands(
    session: Session, serial: str, limit: int = 50, name: str | None = None
) -> list[CommandView]:
    """A terminal's commands, newest first."""
    rows = session.execute(
        text(
            f"SELECT {_COLUMNS} FROM command c JOIN terminal t ON t.id = c.terminal_id"
            " WHERE t.serial = :serial AND (CAST(:name AS text) IS NULL OR c.name = :name)"
            " ORDER BY c.created_at DESC, c.id LIMIT :limit"
        ),
        {"serial": serial, "limit": limit, "name": name},
    ).all()
    return [_view(row) for row in rows]


def queue_command(
    session: Session,
    requester: Requester,
    serial: str,
    name: str,
    args: Mapping[str, Any] | None = None,
    expires_in_s: float | None = None,
    *,
    request_id: str | None = None,
) -> CommandView:
    """Check and queue one command; CommandRefused says why not.

    With a ``request_id`` (a support script's own id for its request) a repeated
    request returns the command the first one queued instead of a second command.
    """
    checked = check_request(requester.role, name, args)
    expiry = check_expiry(name, expires_in_s)
    terminal_id = _terminal_for_command(session, serial)
    if request_id is not None:
        existing = _by_request(session, requester.name, request_id)
        if existing is not None:
            return existing
    spec = spec_of(name)
    command_id = new_command_id()
    try:
        session.execute(
            text(
                "INSERT INTO command (id, terminal_id, name, args, status, created_by,"
                " requested_by, requester_kind, token_name, origin, request_id, max_attempts,"
                " timeout_s, due_at, expires_at) VALUES (:id, :terminal_id, :name, :args,"
                " 'queued', :user_id, :requested_by, :kind, :token_name, :origin, :request_id,"
                " :max_attempts, :timeout_s, now(), now() + make_interval(secs => :expiry))"
            ).bindparams(_json_param("args")),
            {
                "id": command_id,
                "terminal_id": terminal_id,
                "name": name,
                "args": checked,
                "user_id": requester.user_id,
                "requested_by": requester.name[:64],
                "kind": requester.kind,
                "token_name": requester.token_name,
                "origin": requester.origin[:64] if requester.origin else None,
                "request_id": request_id,
                "max_attempts": spec.max_attempts,
                "timeout_s": spec.timeout_s,
                "expiry": expiry,
            },
        )
        _audit(
            session,
            requester,
            "command.queued",
            serial,
            {"command": command_id, "name": name, "args": checked},
        )
        session.commit()
    except IntegrityError:
        # Two deliveries of one request raced: the other one's command stands.
        session.rollback()
        if request_id is not None and (found := _by_request(session, requester.name, request_id)):
            return found
        raise
    view = get_command(session, command_id)
    assert view is not None
    return view


def _json_param(name: str) -> Any:
    return bindparam(name, type_=JSONB)


def _by_request(session: Session, account: str, request_id: str) -> CommandView | None:
    row = session.execute(
        text(
            f"SELECT {_COLUMNS} FROM command c JOIN terminal t ON t.id = c.terminal_id"
            " WHERE c.requested_by = :account AND c.request_id = :request_id"
        ),
        {"account": account, "request_id": request_id},
    ).first()
    return _view(row) if row is not None else None


def _check_may_cancel(session: Session, requester: Requester, requested_by: str) -> None:
    if not may_cancel(requester.role, own=requested_by == requester.name):
        session.rollback()
        raise CommandRefused(
            f"the {requester.role} role may cancel only its own commands; "
            f"this one was sent by {requested_by}"
        )


def cancel_command(session: Session, requester: Requester, command_id: str) -> CommandView:
    """Cancel a queued command: the requester's own, or anyone's for an admin."""
    row = session.execute(
        text("SELECT status, requested_by FROM command WHERE id = :id FOR NO KEY UPDATE"),
        {"id": command_id},
    ).first()
    if row is None:
        session.rollback()
        raise CommandNotFound(f"there is no command {command_id!r}")
    _check_may_cancel(session, requester, row.requested_by)
    if row.status != CommandState.QUEUED:
        session.rollback()
        if row.status == CommandState.SENT:
            raise CommandConflict(
                f"command {command_id} was already sent to the terminal and cannot be called "
                "back; it ends with its result or its timeout"
            )
        raise CommandConflict(f"command {command_id} is already {row.status}")
    session.execute(
        text(
            "UPDATE command SET status = 'cancelled', finished_at = now(), cancelled_by = :by,"
            " error = :why WHERE id = :id RETURNING pg_notify('tms_command_done', id)"
        ),
        {"id": command_id, "by": requester.name[:64], "why": f"cancelled by {requester.name}"},
    )
    view = get_command(session, command_id)
    assert view is not None
    _audit(session, requester, "command.cancelled", view.serial, {"command": command_id})
    session.commit()
    return view


# -- bulk --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    terminal_id: int
    customer_id: int


def check_rate(rate_per_s: float | None) -> float:
    if rate_per_s is None:
        return DEFAULT_RATE_PER_S
    if not MIN_RATE_PER_S <= rate_per_s <= MAX_RATE_PER_S:
        raise CommandRefused(
            f"rate must be between {MIN_RATE_PER_S:g} and {MAX_RATE_PER_S:g} terminals per "
            f"second per customer, not {rate_per_s:g}"
        )
    return float(rate_per_s)


def pace(targets: Iterable[Target], rate_per_s: float) -> list[tuple[int, float]]:
    """(terminal id, seconds from now it may go out): each customer's terminals one
    1/rate apart, customers side by side, so no customer loses its tills at once."""
    position: dict[int, int] = {}
    paced = []
    for target in targets:
        index = position.get(target.customer_id, 0)
        position[target.customer_id] = index + 1
        paced.append((target.terminal_id, index / rate_per_s))
    return paced


def bulk_targets(session: Session, terminal_ids: Sequence[int]) -> list[Target]:
    """The live terminals among ``terminal_ids``, in serial order."""
    rows = session.execute(
        text(
            "SELECT id, customer_id FROM terminal WHERE id = ANY(:ids) AND status <> :gone"
            " ORDER BY serial"
        ),
        {"ids": list(terminal_ids), "gone": TerminalStatus.DECOMMISSIONED.value},
    ).all()
    return [Target(int(r.id), int(r.customer_id)) for r in rows]


def queue_bulk(
    session: Session,
    requester: Requester,
    name: str,
    args: Mapping[str, Any] | None,
    targets: Sequence[Target],
    *,
    rate_per_s: float | None = None,
    expires_in_s: float | None = None,
    selection: Mapping[str, Any] | None = None,
    summary: str = "",
) -> BulkView:
    """One command for every target, paced at ``rate_per_s`` per customer; each row
    expires ``expires_in_s`` after the time it may go out."""
    checked = check_request(requester.role, name, args)
    expiry = check_expiry(name, expires_in_s)
    rate = check_rate(rate_per_s)
    if not targets:
        raise CommandRefused("the selection has no terminals that take commands")
    if len(targets) > MAX_BULK_TERMINALS:
        raise CommandRefused(f"a bulk command is limited to {MAX_BULK_TERMINALS} terminals")
    spec = spec_of(name)
    bulk_id = session.execute(
        text(
            "INSERT INTO command_bulk (name, args, selection, summary, rate_per_s, total,"
            " requested_by) VALUES (:name, :args, :selection, :summary, :rate, :total, :by)"
            " RETURNING id"
        ).bindparams(_json_param("args"), _json_param("selection")),
        {
            "name": name,
            "args": checked,
            "selection": dict(selection or {}),
            "summary": summary[:500],
            "rate": rate,
            "total": len(targets),
            "by": requester.name[:64],
        },
    ).scalar_one()
    paced = pace(targets, rate)
    session.execute(
        text(
            "INSERT INTO command (id, terminal_id, name, args, status, created_by, requested_by,"
            " requester_kind, token_name, origin, max_attempts, timeout_s, due_at, expires_at,"
            " bulk_id)"
            " SELECT v.id, v.terminal_id, :name, :args, 'queued', :user_id, :requested_by,"
            " :kind, :token_name, :origin, :max_attempts, :timeout_s,"
            " now() + make_interval(secs => v.delay),"
            " now() + make_interval(secs => v.delay + :expiry), :bulk_id"
            " FROM unnest(CAST(:ids AS text[]), CAST(:terminals AS int[]),"
            " CAST(:delays AS float8[])) AS v(id, terminal_id, delay)"
        ).bindparams(_json_param("args")),
        {
            "ids": [new_command_id() for _ in paced],
            "terminals": [terminal_id for terminal_id, _ in paced],
            "delays": [delay for _, delay in paced],
            "name": name,
            "args": checked,
            "user_id": requester.user_id,
            "requested_by": requester.name[:64],
            "kind": requester.kind,
            "token_name": requester.token_name,
            "origin": requester.origin[:64] if requester.origin else None,
            "max_attempts": spec.max_attempts,
            "timeout_s": spec.timeout_s,
            "expiry": expiry,
            "bulk_id": bulk_id,
        },
    )
    _audit(
        session,
        requester,
        "command.bulk",
        summary or f"{len(targets)} terminals",
        {"bulk": bulk_id, "name": name, "args": checked, "terminals": len(targets), "rate": rate},
    )
    session.commit()
    view = get_bulk(session, bulk_id)
    assert view is not None
    return view


def get_bulk(session: Session, bulk_id: int) -> BulkView | None:
    row = session.execute(
        text(
            "SELECT id, name, args, summary, rate_per_s, total, requested_by, created_at,"
            " cancelled_at FROM command_bulk WHERE id = :id"
        ),
        {"id": bulk_id},
    ).first()
    if row is None:
        return None
    counts = {
        str(state): int(n)
        for state, n in session.execute(
            text("SELECT status, count(*) FROM command WHERE bulk_id = :id GROUP BY status"),
            {"id": bulk_id},
        ).all()
    }
    return BulkView(
        id=row.id,
        name=row.name,
        args=row.args or {},
        summary=row.summary,
        rate_per_s=row.rate_per_s,
        total=row.total,
        requested_by=row.requested_by,
        created_at=row.created_at,
        cancelled_at=row.cancelled_at,
        counts=counts,
    )


def list_bulks(session: Session, limit: int = 20) -> list[BulkView]:
    ids = session.execute(
        text("SELECT id FROM command_bulk ORDER BY created_at DESC, id DESC LIMIT :limit"),
        {"limit": limit},
    ).scalars()
    return [view for bulk_id in list(ids) if (view := get_bulk(session, bulk_id)) is not None]


def cancel_bulk(session: Session, requester: Requester, bulk_id: int) -> BulkView:
    """Stop a bulk command: its rows still queued are cancelled; sent ones finish."""
    row = session.execute(
        text("SELECT requested_by FROM command_bulk WHERE id = :id FOR NO KEY UPDATE"),
        {"id": bulk_id},
    ).first()
    if row is None:
        session.rollback()
        raise CommandNotFound(f"there is no bulk command {bulk_id}")
    _check_may_cancel(session, requester, row.requested_by)
    cancelled = session.execute(
        text(
            "UPDATE command SET status = 'cancelled', finished_at = now(), cancelled_by = :by,"
            " error = :why WHERE status = 'queued' AND id IN (SELECT id FROM command"
            " WHERE bulk_id = :id AND status = 'queued' ORDER BY id FOR NO KEY UPDATE)"
            " RETURNING id, pg_notify('tms_command_done', id)"
        ),
        {"id": bulk_id, "by": requester.name[:64], "why": f"bulk cancelled by {requester.name}"},
    ).all()
    session.execute(
        text(
            "UPDATE command_bulk SET cancelled_at = coalesce(cancelled_at, now()),"
            " cancelled_by = coalesce(cancelled_by, :by) WHERE id = :id"
        ),
        {"id": bulk_id, "by": requester.name[:64]},
    )
    _audit(
        session,
        requester,
        "command.bulk_cancelled",
        f"bulk {bulk_id}",
        {"cancelled": len(cancelled)},
    )
    session.commit()
    view = get_bulk(session, bulk_id)
    assert view is not None
    return view
