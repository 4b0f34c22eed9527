"""Keeping the fleet report's uptime snapshot fresh (shared.uptime_snapshot).

One statement per month: PostgreSQL works the month out next to the status history and
stores the store and customer sums and the worst terminals; nothing comes back here.
"""

from __future__ import annotations

import logging
from datetime import datetime

import psycopg
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from shared.uptime_snapshot import SQL_REFRESH, months_to_refresh, refresh_params

log = logging.getLogger(__name__)

# The statement is written once, with SQLAlchemy's :name parameters for the console;
# compiled here to psycopg's %(name)s.
_REFRESH = str(text(SQL_REFRESH).compile(dialect=PGDialect_psycopg()))


async def refresh_uptime_snapshots(conn: psycopg.AsyncConnection, now: datetime) -> list[str]:
    """Work out the months ingest keeps fresh; the keys of the months refreshed."""
    refreshed = []
    for month in months_to_refresh(now):
        async with conn.transaction():
            await conn.execute(_REFRESH, refresh_params(month, now))
        refreshed.append(month.key)
    return refreshed
