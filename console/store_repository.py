"""Read side of a store's page: its terminals, their open alerts, and the store's uptime
today and this month, worked out from its terminals' status history in the store's own
time zone (console.uptime, the rule the monthly reports use); and a customer's stores'
firmware install windows, for the customer's list of stores.

A store holds a handful of terminals, so its history is read whole for the month; a
store with more than ``TERMINALS_SHOWN`` lists the first of them and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlmodel import Session

from console.customer_repository import OpenAlert, period_starts, zone_of
from console.report_repository import IN_SERVICE_IN_PERIOD, STATUS_CHANGES_IN_PERIOD
from console.uptime import UptimeSeconds, in_service_window, uptime_seconds
from shared.models import Store

TERMINALS_SHOWN = 500
OPEN_ALERTS_SHOWN = 50

SQL_TERMINALS = """
SELECT t.serial, t.status, t.status_reason, t.maintenance, t.model, t.firmware_version,
       t.host_name, t.last_heartbeat_at
FROM terminal t
WHERE t.store_id = :id
ORDER BY t.status = 'decommissioned', t.serial
LIMIT :limit
"""
SQL_COUNTS = """
SELECT count(*) FILTER (WHERE status <> 'decommissioned'),
       count(*) FILTER (WHERE status = 'online'),
       count(*) FILTER (WHERE status = 'offline'),
       count(*) FILTER (WHERE status = 'error'),
       count(*) FILTER (WHERE maintenance AND status <> 'decommissioned'),
       count(*)
FROM terminal WHERE store_id = :id
"""
SQL_OPEN_ALERTS = """
SELECT a.id, a.kind, a.severity, a.status, a.message, a.count, a.raised_at, a.last_seen_at,
       a.host_name, t.serial, s.code, s.name
FROM terminal t
JOIN alert a ON a.terminal_id = t.id AND a.status <> 'resolved'
JOIN store s ON s.id = t.store_id
WHERE t.store_id = :id
ORDER BY a.raised_at DESC, a.id DESC
LIMIT :limit
"""
# Each terminal of the store in service during the month, with its status changes
# (the reports' rows: console.report_repository).
SQL_INSTALL_WINDOWS = """
SELECT id, maintenance_window FROM store
WHERE customer_id = :id AND coalesce(btrim(maintenance_window), '') <> ''
"""
SQL_HISTORY = f"""
SELECT COALESCE(t.installed_at, t.created_at), t.decommissioned_at, ch.ats, ch.statuses
FROM terminal t
{STATUS_CHANGES_IN_PERIOD}
WHERE t.store_id = :id AND {IN_SERVICE_IN_PERIOD}
"""


@dataclass(frozen=True)
class StoreTerminal:
    serial: str
    status: str
    status_reason: str | None
    maintenance: bool
    model: str
    firmware_version: str | None
    host_name: str | None
    last_heartbeat_at: datetime | None


@dataclass(frozen=True)
class StoreCounts:
    in_service: int
    online: int
    offline: int
    error: int
    maintenance: int
    total: int  # decommissioned included


@dataclass(frozen=True)
class StoreUptime:
    """Online share of the store's in-service terminal-time, from status history."""

    today: UptimeSeconds
    month: UptimeSeconds
    timezone: str

    @staticmethod
    def text(seconds: UptimeSeconds) -> str:
        share = seconds.share
        return "—" if share is None else f"{share * 100:.2f}%"


def terminals(session: Session, store_id: int, limit: int = TERMINALS_SHOWN) -> list[StoreTerminal]:
    rows = session.execute(text(SQL_TERMINALS), {"id": store_id, "limit": limit})
    return [StoreTerminal(*row) for row in rows]


def counts(session: Session, store_id: int) -> StoreCounts:
    row = session.execute(text(SQL_COUNTS), {"id": store_id}).one()
    return StoreCounts(*(int(value or 0) for value in row))


def open_alerts(session: Session, store_id: int, limit: int = OPEN_ALERTS_SHOWN) -> list[OpenAlert]:
    """Unresolved alerts of the store's terminals, newest first."""
    rows = session.execute(text(SQL_OPEN_ALERTS), {"id": store_id, "limit": limit})
    return [OpenAlert(*row) for row in rows]


def install_windows(session: Session, customer_id: int) -> dict[int, str]:
    """The customer's stores' firmware install windows as saved, by store id; a store
    without one (installs at any time) is left out."""
    rows = session.execute(text(SQL_INSTALL_WINDOWS), {"id": customer_id})
    return {int(store_id): str(window) for store_id, window in rows}


def _tally(rows: Any, start: datetime, end: datetime, now: datetime) -> UptimeSeconds:
    total = UptimeSeconds()
    for since, gone, ats, statuses in rows:
        window = in_service_window(
            start, end, in_service_from=since, decommissioned_at=gone, now=now
        )
        total += uptime_seconds(window, zip(ats or (), statuses or (), strict=True))
    return total


def uptime(session: Session, store: Store, now: datetime | None = None) -> StoreUptime:
    """Uptime today and this month, the day and month being the store's own."""
    now = now or datetime.now(UTC)
    zone = zone_of(store.timezone)
    day, month = period_starts(now, zone)
    rows = session.execute(text(SQL_HISTORY), {"id": store.id, "start": month, "end": now}).all()
    # Today is part of the month: one read, two windows (the status at the start of
    # today is settled by the month's changes before it).
    return StoreUptime(_tally(rows, day, now, now), _tally(rows, month, now, now), zone.key)
