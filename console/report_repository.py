"""The monthly reports' queries: uptime from the status history, alerts and incidents,
firmware, and the audit row of an export.

Uptime is worked out per terminal in PostgreSQL (shared.uptime_sql): a customer's
report streams its terminals' seconds and sums them per store in Python; the fleet's
gets its store and customer sums and its worst terminals from one statement, never
100,000 rows, and reads them from the snapshot ingest keeps (shared.uptime_snapshot).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, select

from console.customer_repository import zone_of
from console.report_model import (
    TOP_ALERTING,
    AlertCount,
    AlertingTerminal,
    FirmwareCount,
    GroupUptime,
    IncidentSummary,
    Report,
    ReportMonth,
    ResolveTimes,
    TerminalUptime,
    UptimeFigures,
    UptimeTally,
    store_order,
    worst_order,
)
from console.uptime import UptimeSeconds
from shared import audit_trail
from shared.models import Customer
from shared.uptime_snapshot import SQL_REFRESH, SQL_SNAPSHOT, UtcMonth, refresh_params, usable
from shared.uptime_sql import TERMINAL_UPTIME

BATCH = 5000
FIRMWARE_SHOWN = 50
# Terminals of one customer, or of all when :customer is NULL.
_ONE_OR_ALL = "(CAST(:customer AS integer) IS NULL OR {column} = :customer)"
# An alert belongs to its terminal's customer, or (a store PC's) to its own customer_id.
_ALERT_SCOPE = _ONE_OR_ALL.format(column="COALESCE(t.customer_id, a.customer_id)")
_ALERT_MONTH = "a.raised_at >= :start AND a.raised_at < :end"

# A terminal ``t``'s status changes from the last one before :start to :end, as two
# arrays in time order, ``ch.ats`` and ``ch.statuses`` (one row per change repeated the
# terminal's columns and took longer to send than to compute); and the terminals in
# service at some time in [:start, :end). The reports and the store page read uptime
# (console.uptime) from them.
STATUS_CHANGES_IN_PERIOD = """
CROSS JOIN LATERAL (
    SELECT array_agg(x.at ORDER BY x.at, x.id) AS ats,
           array_agg(x.new_status ORDER BY x.at, x.id) AS statuses
    FROM (
        (SELECT sc.at, sc.new_status, sc.id FROM status_change sc
         WHERE sc.terminal_id = t.id AND sc.at < :start
         ORDER BY sc.at DESC, sc.id DESC LIMIT 1)
        UNION ALL
        (SELECT sc.at, sc.new_status, sc.id FROM status_change sc
         WHERE sc.terminal_id = t.id AND sc.at >= :start AND sc.at < :end)
    ) x
) ch
"""
IN_SERVICE_IN_PERIOD = """COALESCE(t.installed_at, t.created_at) < :end
  AND (t.decommissioned_at IS NULL OR t.decommissioned_at > :start)"""

SQL_ALERT_COUNTS = f"""
SELECT a.kind, a.severity, count(*), COALESCE(sum(a.count), 0)
FROM alert a LEFT JOIN terminal t ON t.id = a.terminal_id
WHERE {_ALERT_MONTH} AND {_ALERT_SCOPE}
GROUP BY a.kind, a.severity
ORDER BY count(*) DESC, a.kind, a.severity
"""
# Resolved alerts only; a resolution stored before the raise or at infinity is no time.
SQL_RESOLVE_TIMES = f"""
SELECT count(*),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY d),
       percentile_cont(0.9) WITHIN GROUP (ORDER BY d)
FROM (
    SELECT CAST(extract(epoch FROM a.resolved_at - a.raised_at) AS double precision) AS d
    FROM alert a LEFT JOIN terminal t ON t.id = a.terminal_id
    WHERE {_ALERT_MONTH} AND {_ALERT_SCOPE}
      AND isfinite(a.resolved_at) AND a.resolved_at >= a.raised_at
) resolved
"""
SQL_INCIDENTS = f"""
SELECT count(DISTINCT a.incident_id), count(a.incident_id)
FROM alert a LEFT JOIN terminal t ON t.id = a.terminal_id
WHERE {_ALERT_MONTH} AND {_ALERT_SCOPE}
"""
# Alerts are counted per terminal before anything is joined: joining the month's alerts
# to the terminals first hashed all 100,000 of them (35 ms). The rows tied with the
# :limit-th are kept until the serial breaks the tie.
SQL_TOP_ALERTING = f"""
WITH per AS (
    SELECT a.terminal_id, count(*) AS alerts, COALESCE(sum(a.count), 0) AS occurrences
    FROM alert a
    WHERE {_ALERT_MONTH} AND a.terminal_id IS NOT NULL
      AND (CAST(:customer AS integer) IS NULL
           OR a.terminal_id IN (SELECT id FROM terminal WHERE customer_id = :customer))
    GROUP BY a.terminal_id
), cut AS (
    SELECT alerts, occurrences FROM per
    ORDER BY alerts DESC, occurrences DESC LIMIT 1 OFFSET :limit - 1
)
SELECT t.serial, c.name, s.code, top.alerts, top.occurrences
FROM (
    SELECT * FROM per
    WHERE NOT EXISTS (SELECT 1 FROM cut)
       OR (per.alerts, per.occurrences) >= (SELECT alerts, occurrences FROM cut)
) top
-- LIMIT 1 keeps the planner from hashing every terminal for a few dozen rows.
CROSS JOIN LATERAL (
    SELECT serial, customer_id, store_id FROM terminal WHERE id = top.terminal_id LIMIT 1
) t
JOIN customer c ON c.id = t.customer_id
LEFT JOIN store s ON s.id = t.store_id
ORDER BY top.alerts DESC, top.occurrences DESC, t.serial
LIMIT :limit
"""
# Current, as the brief of the report says: what the terminals in service run now.
SQL_FIRMWARE = f"""
SELECT t.firmware_version, count(*)
FROM terminal t
WHERE t.status <> 'decommissioned' AND t.decommissioned_at IS NULL
  AND {_ONE_OR_ALL.format(column="t.customer_id")}
GROUP BY t.firmware_version
ORDER BY count(*) DESC, t.firmware_version NULLS LAST
LIMIT :limit
"""


def customer_named(session: Session, name: str) -> Customer | None:
    return session.exec(select(Customer).where(Customer.name == name)).first()


def customer_names(session: Session) -> list[str]:
    rows = session.execute(text("SELECT name FROM customer ORDER BY lower(name), id"))
    return [row[0] for row in rows]


def _customer_uptime(session: Session, params: dict[str, Any]) -> UptimeFigures:
    tally = UptimeTally(keep_all=True)
    rows = session.execute(
        text(TERMINAL_UPTIME).execution_options(stream_results=True, yield_per=BATCH), params
    )
    for _, serial, customer, code, name, status, firmware, online, in_service in rows:
        seconds = UptimeSeconds(online, in_service)
        tally.add(TerminalUptime(serial, customer, code, name, status, firmware, seconds))
    return tally.figures(with_customers=False)


def _fleet_uptime(
    session: Session, month: UtcMonth, now: datetime, with_stores: bool
) -> tuple[UptimeFigures, datetime]:
    """The fleet's figures and the instant they count up to: from ingest's snapshot
    when it is fresh, else worked out now and kept for the next view. Without
    ``with_stores`` the stores are left out (the page shows customers)."""
    found = session.execute(
        text(SQL_SNAPSHOT), {"month": month.key, "with_stores": with_stores}
    ).first()
    if found is None or not usable(month.end, found.through, found.computed_at, now):
        found = session.execute(text(SQL_REFRESH), refresh_params(month, now)).one()
        session.commit()
    stores, customers, worst = [], [], []
    rows = [*found.rows, *found.stores] if with_stores else found.rows
    for part, customer, code, name, serial, status, firmware, n, online, in_service in rows:
        seconds = UptimeSeconds(float(online or 0), float(in_service or 0))
        if part == "store":
            stores.append(GroupUptime(customer, code, name, int(n), seconds))
        elif part == "customer":
            customers.append(GroupUptime(customer, None, None, int(n), seconds))
        else:
            worst.append(TerminalUptime(serial, customer, code, name, status, firmware, seconds))
    total = sum((group.seconds for group in customers), UptimeSeconds())
    customers.sort(key=lambda g: g.customer)
    figures = UptimeFigures(
        total, sum(g.terminals for g in customers), store_order(stores), customers,
        worst_order(worst),
    )  # fmt: skip
    return figures, found.through


def _alerts(session: Session, params: dict[str, Any]) -> list[AlertCount]:
    rows = session.execute(text(SQL_ALERT_COUNTS), params)
    return [AlertCount(kind, severity, int(n), int(total)) for kind, severity, n, total in rows]


def _resolve_times(session: Session, params: dict[str, Any]) -> ResolveTimes:
    count, median, p90 = session.execute(text(SQL_RESOLVE_TIMES), params).one()
    return ResolveTimes(int(count), median, p90)


def _incidents(session: Session, params: dict[str, Any]) -> IncidentSummary:
    incidents, grouped = session.execute(text(SQL_INCIDENTS), params).one()
    return IncidentSummary(int(incidents), int(grouped))


def _top_alerting(session: Session, params: dict[str, Any]) -> list[AlertingTerminal]:
    rows = session.execute(text(SQL_TOP_ALERTING), {**params, "limit": TOP_ALERTING})
    return [
        AlertingTerminal(serial, customer, store, int(n), int(total))
        for serial, customer, store, n, total in rows
    ]


def _firmware(session: Session, customer_id: int | None) -> list[FirmwareCount]:
    rows = session.execute(text(SQL_FIRMWARE), {"customer": customer_id, "limit": FIRMWARE_SHOWN})
    return [FirmwareCount(version, int(n)) for version, n in rows]


def build_report(
    session: Session,
    month: ReportMonth,
    customer: Customer | None,
    now: datetime,
    with_stores: bool = True,
) -> Report:
    """The month's report for ``customer`` (its time zone's month) or the fleet (UTC).

    The fleet's page leaves its stores out (``with_stores``): it shows customers, and
    10,000 stores cost more to read than the rest of the report."""
    zone = zone_of(customer.timezone if customer is not None else "UTC")
    start, end = month.bounds(zone)
    customer_id = customer.id if customer is not None else None
    # Nothing after now is read: the month in progress ends at the present.
    through = min(end, now)
    params = {"customer": customer_id, "start": start, "end": through}
    if now <= start:
        uptime = UptimeTally(keep_all=True).figures(with_customers=False)
    elif customer is not None:
        uptime = _customer_uptime(session, params)
    else:
        uptime, through = _fleet_uptime(session, UtcMonth.of(start), now, with_stores)
    return Report(
        month=month,
        customer=customer.name if customer is not None else None,
        timezone=zone.key,
        start=start,
        end=end,
        generated_at=now,
        total=uptime.total,
        terminals_counted=uptime.counted,
        stores=uptime.stores,
        customers=uptime.customers,
        terminals=uptime.terminals,
        alerts=_alerts(session, params),
        resolve=_resolve_times(session, params),
        incidents=_incidents(session, params),
        firmware=_firmware(session, customer_id),
        top_alerting=_top_alerting(session, params),
        in_progress=now < end,
        uptime_through=through if through < min(end, now) else None,
    )


def record_export(
    session: Session,
    actor: str,
    report_format: str,
    month: ReportMonth,
    customer: str | None,
    remote_addr: str | None,
) -> None:
    """Audit a download: the report leaves the building."""
    audit_trail.record(
        session,
        actor,
        "report.exported",
        customer if customer is not None else "fleet",
        {"format": report_format, "month": month.key, "customer": customer},
        remote_addr,
    )
    session.commit()
