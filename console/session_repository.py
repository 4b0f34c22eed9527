"""Console sign-in sessions on the server: started at sign-in, ended by logout, a
disabled account, a password change or an admin; the repository of ``console_session``.

The browser's signed cookie holds only a random token; this table says whether it
still means a session. Each function that changes rows commits its own unit of work.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from shared.models import ConsoleSession, UserAccount

# last_seen_at is written at most this often per session: not a write per request.
TOUCH_EVERY = timedelta(seconds=60)
USER_AGENT_MAX = 200


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def start(session: Session, user_id: int, remote_addr: str | None, user_agent: str | None) -> str:
    """A new session for ``user_id``; returns its token (only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    session.add(
        ConsoleSession(
            user_id=user_id,
            token_hash=_hash(token),
            remote_addr=remote_addr[:64] if remote_addr else None,
            user_agent=user_agent[:USER_AGENT_MAX] if user_agent else None,
        )
    )
    session.commit()
    return token


def account_for(session: Session, token: str, idle_limit: timedelta) -> UserAccount | None:
    """The active user of a live session, or None (ended, idle too long, or unknown).

    Notes the session as seen (at most once a minute).
    """
    now = datetime.now(UTC)
    row = session.exec(
        select(ConsoleSession, UserAccount)
        .join(UserAccount, col(UserAccount.id) == col(ConsoleSession.user_id))
        .where(
            ConsoleSession.token_hash == _hash(token),
            col(ConsoleSession.ended_at).is_(None),
            col(UserAccount.active).is_(True),
        )
    ).first()
    if row is None:
        return None
    console_session, account = row
    seen = console_session.last_seen_at
    if seen is None or seen < now - idle_limit:
        end_one(session, console_session, "expired")
        return None
    if seen < now - TOUCH_EVERY:
        console_session.last_seen_at = now
        session.add(console_session)
        session.commit()
    return account


def end_one(session: Session, console_session: ConsoleSession, reason: str) -> None:
    console_session.ended_at = datetime.now(UTC)
    console_session.end_reason = reason
    session.add(console_session)
    session.commit()


def end_all(session: Session, user_id: int, reason: str, *, commit: bool = True) -> int:
    """End every live session of ``user_id``; returns how many were live."""
    result = session.execute(
        update(ConsoleSession)
        .where(col(ConsoleSession.user_id) == user_id, col(ConsoleSession.ended_at).is_(None))
        .values(ended_at=func.now(), end_reason=reason)
    )
    if commit:
        session.commit()
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def live_counts(session: Session, idle_limit: timedelta) -> dict[int, int]:
    """Live sessions per user id (not ended, seen within ``idle_limit``)."""
    since = datetime.now(UTC) - idle_limit
    rows = session.exec(
        select(ConsoleSession.user_id, func.count())
        .where(col(ConsoleSession.ended_at).is_(None), col(ConsoleSession.last_seen_at) > since)
        .group_by(col(ConsoleSession.user_id))
    ).all()
    return {user_id: count for user_id, count in rows}


def live_sessions(session: Session, user_id: int, idle_limit: timedelta) -> list[ConsoleSession]:
    since = datetime.now(UTC) - idle_limit
    return list(
        session.exec(
            select(ConsoleSession)
            .where(
                ConsoleSession.user_id == user_id,
                col(ConsoleSession.ended_at).is_(None),
                col(ConsoleSession.last_seen_at) > since,
            )
            .order_by(col(ConsoleSession.last_seen_at).desc())
        ).all()
    )
