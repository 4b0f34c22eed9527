"""Read side of the dashboard: fleet totals, critical alerts, customers at a glance,
and uptime and online terminals over time from ingest's fleet samples
(ingest.fleet_samples): the per-day sums for uptime, the fleet's per-bucket totals for
the charts, so that no view reads a month of per-customer samples.

The charts change only when a new sample lands (every few minutes) and are kept per
process for ``CACHE_S`` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import text
from sqlmodel import Session

from console.alert_scope import rollout_of
from shared.terminal_counts import SQL_PER_CUSTOMER

CACHE_S = 60.0
CRITICAL_ALERTS = 10

T = TypeVar("T")
_cache: dict[tuple[str, str], tuple[float, Any]] = {}
_cache_lock = threading.Lock()


def _cached(key: tuple[str, str], compute: Callable[[], T]) -> T:
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None and now - hit[0] < CACHE_S:
        return hit[1]  # type: ignore[no-any-return]
    value = compute()
    with _cache_lock:
        if len(_cache) > 256:
            _cache.clear()
        _cache[key] = (now, value)
    return value


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def _key(session: Session, name: str) -> tuple[str, str]:
    # Per database: the tests run many consoles against many databases in one process.
    bind = session.get_bind()
    return (str(getattr(bind, "url", id(bind))), name)


@dataclass(frozen=True)
class Totals:
    terminals: int  # in service: not decommissioned
    online: int
    offline: int
    error: int
    unknown: int
    maintenance: int
    open_alerts: int
    critical_alerts: int


@dataclass(frozen=True)
class CriticalAlert:
    id: int
    kind: str
    message: str
    serial: str | None
    customer: str | None
    store: str | None
    raised_at: datetime | None
    count: int
    host_name: str | None = None
    scope: str = ""

    @property
    def rollout_id(self) -> int | None:
        """The rollout a halt alert is about (it has no terminal)."""
        return rollout_of(self.scope)


@dataclass(frozen=True)
class CustomerRow:
    id: int
    name: str
    terminals: int
    online: int
    errors: int
    offline: int
    uptime_month: float | None  # 0..1


@dataclass(frozen=True)
class Uptime:
    today: float | None
    month: float | None


def overview(session: Session, now: datetime | None = None) -> tuple[Totals, list[CustomerRow]]:
    """Fleet totals and the per-customer table from the trigger-kept counts (a few
    thousand rows, not the fleet: shared.terminal_counts), with each customer's uptime
    this month from the daily sums."""
    now = now or datetime.now(UTC)
    rows = session.execute(
        text(
            f"WITH counted AS ({SQL_PER_CUSTOMER}),"
            " uptime AS (SELECT customer_id, sum(online)::float8 / nullif(sum(in_service), 0)"
            "  AS ratio FROM fleet_sample_daily WHERE day >= :month GROUP BY customer_id)"
            " SELECT c.id, c.name, coalesce(k.in_service, 0), coalesce(k.online, 0),"
            " coalesce(k.error, 0), coalesce(k.offline, 0), coalesce(k.unknown, 0),"
            " coalesce(k.maintenance, 0), u.ratio"
            " FROM customer c LEFT JOIN counted k ON k.customer_id = c.id"
            " LEFT JOIN uptime u ON u.customer_id = c.id ORDER BY c.name"
        ),
        {"month": _month_start(now)},
    ).all()
    customers = [
        CustomerRow(cid, name, int(total), int(online), int(errors), int(offline),
                    _ratio(uptime, 1) if uptime is not None else None)
        for cid, name, total, online, errors, offline, _unknown, _maint, uptime in rows
    ]  # fmt: skip
    alerts = session.execute(
        text(
            "SELECT count(*), count(*) FILTER (WHERE severity = 'critical')"
            " FROM alert WHERE status <> 'resolved'"
        )
    ).one()
    totals = Totals(
        terminals=sum(row[2] for row in rows),
        online=sum(row[3] for row in rows),
        offline=sum(row[5] for row in rows),
        error=sum(row[4] for row in rows),
        unknown=sum(row[6] for row in rows),
        maintenance=sum(row[7] for row in rows),
        open_alerts=int(alerts[0]),
        critical_alerts=int(alerts[1]),
    )
    return totals, customers


def critical_alerts(session: Session, limit: int = CRITICAL_ALERTS) -> list[CriticalAlert]:
    rows = session.execute(
        text(
            "SELECT a.id, a.kind, a.message, t.serial, c.name, s.code, a.raised_at, a.count,"
            " a.host_name, a.scope FROM alert a"
            " LEFT JOIN terminal t ON t.id = a.terminal_id"
            " LEFT JOIN customer c ON c.id = coalesce(a.customer_id, t.customer_id)"
            " LEFT JOIN store s ON s.id = t.store_id"
            " WHERE a.status <> 'resolved' AND a.severity = 'critical'"
            " ORDER BY a.raised_at DESC, a.id DESC LIMIT :limit"
        ),
        {"limit": limit},
    ).all()
    return [CriticalAlert(*row) for row in rows]


def _month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _day_start(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def _ratio(online: Any, in_service: Any) -> float | None:
    if not in_service or online is None:
        return None
    return max(0.0, min(1.0, float(online) / float(in_service)))


def fleet_uptime(session: Session, now: datetime | None = None) -> Uptime:
    """Online share of terminal-time in service, today and this month (UTC days)."""
    now = now or datetime.now(UTC)
    row = session.execute(
        text(
            "SELECT sum(online) FILTER (WHERE day >= :day), sum(in_service) FILTER"
            " (WHERE day >= :day), sum(online), sum(in_service)"
            " FROM fleet_sample_daily WHERE day >= :month"
        ),
        {"day": _day_start(now), "month": _month_start(now)},
    ).one()
    return Uptime(_ratio(row[0], row[1]), _ratio(row[2], row[3]))


def online_series(
    session: Session, hours: int, step_s: int, now: datetime | None = None
) -> list[tuple[datetime, float]]:
    """Online terminals of the whole fleet over the last ``hours``, one point per
    ``step_s`` (the average of the fleet's samples in each step)."""
    now = now or datetime.now(UTC)

    def compute() -> list[tuple[datetime, float]]:
        rows = session.execute(
            text(
                "SELECT to_timestamp(floor(extract(epoch FROM bucket) / :step) * :step),"
                " avg(online)::float8 FROM fleet_sample_total WHERE bucket >= :since"
                " GROUP BY 1 ORDER BY 1"
            ),
            {"step": step_s, "since": now - timedelta(hours=hours)},
        ).all()
        return [(at, float(value)) for at, value in rows if at is not None]

    # A new sample lands every few minutes: a refresh every few seconds reads it once.
    return _cached(_key(session, f"online-{hours}-{step_s}"), compute)
