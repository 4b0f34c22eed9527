"""The audit trail's one writer: who did what to what, from where.

Every change a person or script makes (console, REST API, ``tms`` commands, support
scripts' requests) is recorded through ``record``, in the caller's transaction: the
caller commits, so a change and its audit row land together or not at all.
"""

from __future__ import annotations

from typing import Any

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
    session.add(
        AuditEvent(
            actor=actor[:ACTOR_MAX],
            action=action[:ACTION_MAX],
            target=target[:TARGET_MAX],
            detail=detail,
            remote_addr=remote_addr[:REMOTE_ADDR_MAX] if remote_addr else None,
        )
    )
