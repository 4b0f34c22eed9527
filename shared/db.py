"""Database URLs and engines: one place that knows how TMS reaches PostgreSQL."""

from __future__ import annotations

from sqlalchemy import Engine
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
