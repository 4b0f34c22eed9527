"""The audit trail's one writer: who did what to what, from where.

Every change a person or script makes (console, REST API, ``tms`` commands, support
scripts' requests) is recorded through ``record``, in the caller's transaction: the
caller commits, so a change and its audit row land together or not at all. A daemon
that works on a psycopg connection, not a Session (the rollout driver), records through
``record_on_connection``: the same row, cut the same way.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from sqlmodel import Session

from shared.models import AuditEvent

# The columns' widths (shared/models.py AuditEvent): a long name is cut, never refused,
# so an audit row can never be the reason a change fails.
ACTOR_MAX = 64
ACTION_MAX = 64
TARGET_MAX = 200
REMOTE_ADDR_MAX = 64


def record(
    session: Session,
    actor: str,
    action: str,
    target: str,
    detail: dict[str, Any] | None = None,
    remote_addr: str | None = None,
) -> None:
    """Add one audit row to the session's transaction; the caller commits."""
    actor, action, target, remote_addr = _cut(actor, action, target, remote_addr)
    session.add(
        AuditEvent(
            actor=actor, action=action, target=target, detail=detail, remote_addr=remote_addr
        )
    )


def record_on_connection(
    conn: psycopg.Connection[Any],
    actor: str,
    action: str,
    target: str,
    detail: dict[str, Any] | None = None,
    remote_addr: str | None = None,
) -> None:
    """``record`` on a psycopg connection: one audit row in its open transaction."""
    actor, action, target, remote_addr = _cut(actor, action, target, remote_addr)
    conn.execute(
        "INSERT INTO audit_event (actor, action, target, detail, remote_addr)"
        " VALUES (%s, %s, %s, %s, %s)",
        (actor, action, target, Jsonb(detail) if detail is not None else None, remote_addr),
    )


def _cut(
    actor: str, action: str, target: str, remote_addr: str | None
) -> tuple[str, str, str, str | None]:
    """The text fields cut to their columns' widths."""
    return (
        actor[:ACTOR_MAX],
        action[:ACTION_MAX],
        target[:TARGET_MAX],
        remote_addr[:REMOTE_ADDR_MAX] if remote_addr else None,
    )
