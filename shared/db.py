"""Database URLs and engines: one place that knows how TMS reaches PostgreSQL."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlmodel import create_engine

from shared.errors import TMSError


def sqlalchemy_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and pin SQLAlchemy to the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise TMSError(f"not a PostgreSQL URL: {url.split('@')[-1]!r} (TMS supports PostgreSQL only)")


def libpq_url(url: str) -> str:
    """The same URL in the form psycopg.connect() takes."""
    return "postgresql://" + sqlalchemy_url(url)[len("postgresql+psycopg://") :]


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    return create_engine(
        sqlalchemy_url(url), pool_size=pool_size, pool_pre_ping=True, pool_recycle=1800
    )


def database_error_message(exc: BaseException, url: str | None) -> str:
    """One line that says what went wrong reaching PostgreSQL, and what to check.

    Library messages span several lines and name neither the setting nor the fix;
    this is what a ``tms`` command prints instead of a traceback.
    """
    detail = str(getattr(exc, "orig", None) or exc)
    where, user, name = "PostgreSQL", "?", "?"
    if url:
        try:
            parsed = make_url(sqlalchemy_url(url))
            where = f"PostgreSQL at {parsed.host or 'localhost'}:{parsed.port or 5432}"
            user, name = parsed.username or "?", parsed.database or "?"
        except (ArgumentError, ValueError, TMSError):
            pass  # a malformed URL still gets a message, without its place
    check = "check TMS_DATABASE_URL ([database] url), or --data-dir / TMS_DATA_DIR"
    lowered = detail.lower()
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return f"{where} refused the password of user {user!r}: {check}"
    if "does not exist" in lowered and "database" in lowered:
        return f"{where} has no database {name!r}: create it or {check}"
    if "role" in lowered and "does not exist" in lowered:
        return f"{where} has no user {user!r}: {check}"
    if "relation" in lowered and "does not exist" in lowered:
        return f"the database {name!r} at {where} has no TMS tables yet: run `tms db upgrade`"
    if "connection refused" in lowered or "could not connect" in lowered or "timeout" in lowered:
        return f"cannot reach {where} (is it running?): {check}, or start the platform (`tms up`)"
    first = " ".join(detail.split())
    return f"{where}: {first[:300]}; {check}"
