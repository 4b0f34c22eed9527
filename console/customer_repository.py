"""Customers and their stores as the console reads and changes them.

The lists are grouped queries (one per table, joined on the customer), never a query per
row: the customers screen stays fast at 100,000 terminals. Each create or update commits
its own unit of work with its audit row (``shared.audit_trail``) and ``updated_at``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from console.customer_forms import CustomerForm, StoreForm, same_name
from console.errors import UserError
from shared import audit_trail
from shared.models import Customer, Store, TerminalStatus

OPEN_ALERTS_SHOWN = 50
LIST_LIMIT = 1000
SEARCH_MAX = 200
# pg_advisory_xact_lock key: one customer or store name decision at a time, so that two
# people adding "ACME" and "Acme" at once cannot both pass the case-insensitive check.
NAME_LOCK = 0x746D7308

# Open alerts by customer: its terminals' and its store PCs' (no terminal, the customer's
# id on the alert). Two indexed halves, not one OR across the join, so that one
# customer's page reads only that customer's alerts.
_OPEN_ALERTS_BY_CUSTOMER = """
    SELECT a.id, t.customer_id
    FROM alert a JOIN terminal t ON t.id = a.terminal_id
    WHERE a.status <> 'resolved' {terminal_filter}
    UNION ALL
    SELECT a.id, a.customer_id
    FROM alert a
    WHERE a.status <> 'resolved' AND a.terminal_id IS NULL {alert_filter}
"""


def _summaries_sql(one: bool) -> str:
    """Every customer with its counts, grouped per table; or one customer's (``:id``)
    with each table read through its customer_id index."""

    def only(column: str) -> str:
        return f"AND {column} = :id" if one else ""

    alerts = _OPEN_ALERTS_BY_CUSTOMER.format(
        terminal_filter=only("t.customer_id"), alert_filter=only("a.customer_id")
    )
    where = (
        "c.id = :id"
        if one
        else "(CAST(:pattern AS text) IS NULL OR c.name ILIKE :pattern ESCAPE '\\')"
    )
    return f"""
WITH terminals AS (
    SELECT customer_id,
           count(*) FILTER (WHERE status <> 'decommissioned') AS in_service,
           count(*) FILTER (WHERE status = 'online') AS online,
           count(*) FILTER (WHERE status = 'error') AS error
    FROM terminal WHERE true {only("customer_id")}
    GROUP BY customer_id
), alerts AS (
    SELECT customer_id, count(*) AS open_alerts FROM ({alerts}) open_alert GROUP BY customer_id
), stores AS (
    SELECT customer_id, count(*) AS stores FROM store WHERE true {only("customer_id")}
    GROUP BY customer_id
)
SELECT c.id, c.name, c.contact_person, c.contract_type, c.timezone,
       COALESCE(terminals.in_service, 0), COALESCE(terminals.online, 0),
       COALESCE(terminals.error, 0), COALESCE(alerts.open_alerts, 0),
       COALESCE(stores.stores, 0)
FROM customer c
LEFT JOIN terminals ON terminals.customer_id = c.id
LEFT JOIN alerts ON alerts.customer_id = c.id
LEFT JOIN stores ON stores.customer_id = c.id
WHERE {where}
ORDER BY lower(c.name), c.id
LIMIT :limit
"""


SQL_SUMMARIES = _summaries_sql(one=False)
SQL_SUMMARY = _summaries_sql(one=True)
SQL_STORES = """
SELECT s.id, s.code, s.name, s.timezone,
       count(t.id) FILTER (WHERE t.status <> 'decommissioned') AS in_service,
       count(t.id) FILTER (WHERE t.status = 'online') AS online,
       count(t.id) FILTER (WHERE t.status = 'error') AS error
FROM store s
-- The customer's terminals (its index) rather than a scan of the whole fleet's.
LEFT JOIN terminal t ON t.store_id = s.id AND t.customer_id = :id
WHERE s.customer_id = :id
GROUP BY s.id
ORDER BY s.code, s.id
"""
SQL_STATUS_COUNTS = """
SELECT status, count(*), count(*) FILTER (WHERE maintenance)
FROM terminal WHERE customer_id = :id GROUP BY status
"""
SQL_OPEN_ALERTS = f"""
SELECT a.id, a.kind, a.severity, a.status, a.message, a.count, a.raised_at, a.last_seen_at,
       a.host_name, t.serial, s.code, s.name
FROM ({
    _OPEN_ALERTS_BY_CUSTOMER.format(
        terminal_filter="AND t.customer_id = :id", alert_filter="AND a.customer_id = :id"
    )
}) mine
JOIN alert a ON a.id = mine.id
LEFT JOIN terminal t ON t.id = a.terminal_id
LEFT JOIN store s ON s.id = t.store_id
ORDER BY a.raised_at DESC, a.id DESC
LIMIT :limit
"""
# Both periods in one pass: the month's samples, of which today's are the newest.
SQL_UPTIME = """
SELECT sum(online) FILTER (WHERE bucket >= :day), sum(in_service) FILTER (WHERE bucket >= :day),
       sum(online), sum(in_service)
FROM fleet_sample
WHERE customer_id = :id AND bucket >= :month
"""


@dataclass(frozen=True)
class CustomerSummary:
    """One customer with its counts: a row of the customers list."""

    id: int
    name: str
    contact_person: str
    contract_type: str
    timezone: str
    in_service: int
    online: int
    error: int
    open_alerts: int
    stores: int


@dataclass(frozen=True)
class StoreSummary:
    id: int
    code: str
    name: str
    timezone: str
    in_service: int
    online: int
    error: int


@dataclass(frozen=True)
class StatusCount:
    status: str
    count: int
    maintenance: int


@dataclass(frozen=True)
class OpenAlert:
    id: int
    kind: str
    severity: str
    status: str
    message: str
    count: int
    raised_at: datetime
    last_seen_at: datetime
    host_name: str | None
    serial: str | None
    store_code: str | None
    store_name: str | None


def _ratio(online: Any, in_service: Any) -> float | None:
    if online is None or not in_service:
        return None
    return float(online) / float(in_service)


@dataclass(frozen=True)
class Uptime:
    """Share of in-service terminals online, over the samples of each period (None: no
    samples, shown as a dash rather than a made-up 0 % or 100 %)."""

    today: float | None
    month: float | None
    timezone: str

    @staticmethod
    def text(value: float | None) -> str:
        return "—" if value is None else f"{value * 100:.2f}%"


class NameTaken(UserError):
    """The name (or store code) is already used, up to letter case."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _pattern(search: str | None) -> str | None:
    """An ILIKE pattern for "name contains", with the user's % and _ taken literally."""
    if not search:
        return None
    escaped = search[:SEARCH_MAX].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def list_customers(
    session: Session, search: str | None = None, limit: int = LIST_LIMIT
) -> list[CustomerSummary]:
    """Customers whose name contains ``search`` (any case), by name, with their counts."""
    rows = session.execute(text(SQL_SUMMARIES), {"pattern": _pattern(search), "limit": limit})
    return [CustomerSummary(*row) for row in rows]


def summary(session: Session, customer_id: int) -> CustomerSummary | None:
    rows = session.execute(text(SQL_SUMMARY), {"id": customer_id, "limit": 1})
    row = rows.first()
    return CustomerSummary(*row) if row is not None else None


def get_customer(session: Session, customer_id: int) -> Customer | None:
    return session.get(Customer, customer_id)


def get_store(session: Session, customer_id: int, store_id: int) -> Store | None:
    """The store, only when it is this customer's."""
    store = session.get(Store, store_id)
    return store if store is not None and store.customer_id == customer_id else None


def stores_of(session: Session, customer_id: int) -> list[StoreSummary]:
    return [StoreSummary(*row) for row in session.execute(text(SQL_STORES), {"id": customer_id})]


def status_counts(session: Session, customer_id: int) -> list[StatusCount]:
    """Terminals per status, every status listed (zero when none), in the usual order."""
    found = {
        status: StatusCount(status, int(count), int(maintenance))
        for status, count, maintenance in session.execute(
            text(SQL_STATUS_COUNTS), {"id": customer_id}
        )
    }
    order = [status.value for status in TerminalStatus]
    # A status outside the vocabulary still shows, after the known ones.
    names = order + sorted(set(found) - set(order))
    return [found.get(name, StatusCount(name, 0, 0)) for name in names]


def open_alerts(
    session: Session, customer_id: int, limit: int = OPEN_ALERTS_SHOWN
) -> list[OpenAlert]:
    """The customer's unresolved alerts, newest first."""
    rows = session.execute(text(SQL_OPEN_ALERTS), {"id": customer_id, "limit": limit})
    return [OpenAlert(*row) for row in rows]


def zone_of(name: str) -> ZoneInfo:
    """The customer's zone; UTC for a name this system's zone database lacks."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def period_starts(now: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The start of today and of this month in ``zone``, as UTC instants."""
    local = now.astimezone(zone)
    day = datetime(local.year, local.month, local.day, tzinfo=zone)
    month = datetime(local.year, local.month, 1, tzinfo=zone)
    return day.astimezone(UTC), month.astimezone(UTC)


def uptime(session: Session, customer: Customer, now: datetime | None = None) -> Uptime:
    """Uptime today and this month, the days and months being the customer's own."""
    zone = zone_of(customer.timezone)
    day, month = period_starts(now or datetime.now(UTC), zone)
    row = session.execute(text(SQL_UPTIME), {"id": customer.id, "day": day, "month": month}).one()
    return Uptime(_ratio(row[0], row[1]), _ratio(row[2], row[3]), zone.key)


def _lock_names(session: Session) -> None:
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": NAME_LOCK})


def _check_customer_name(session: Session, name: str, own_id: int | None) -> None:
    # Compared in Python: the database's C locale lowers ASCII only, and "ÄRZTE GMBH"
    # and "ärzte gmbh" are one company. A few hundred names, read on a save only.
    for other_id, other in session.execute(text("SELECT id, name FROM customer")):
        if other_id != own_id and same_name(other, name):
            raise NameTaken("name", f"There is already a customer called {other!r}.")


def _check_store_code(session: Session, customer_id: int, code: str, own_id: int | None) -> None:
    rows = session.execute(
        text("SELECT id, code FROM store WHERE customer_id = :id"), {"id": customer_id}
    )
    for other_id, other in rows:
        if other_id != own_id and same_name(other, code):
            raise NameTaken("code", f"This customer already has a store {other!r}.")


def _commit(session: Session, field: str, message: str) -> None:
    try:
        session.commit()
    except IntegrityError as exc:  # added by someone outside the console meanwhile
        session.rollback()
        raise NameTaken(field, message) from exc


def _changes(
    before: Mapping[str, str | None], after: Mapping[str, str | None]
) -> dict[str, dict[str, str | None]]:
    return {
        name: {"from": before[name], "to": value}
        for name, value in after.items()
        if before[name] != value
    }


def create_customer(
    session: Session, actor: str, form: CustomerForm, remote_addr: str | None
) -> Customer:
    """Add the customer with its audit row; NameTaken when the name is used (any case)."""
    _lock_names(session)
    _check_customer_name(session, form.name, None)
    customer = Customer(
        name=form.name,
        contact_person=form.contact_person,
        email=form.email,
        phone=form.phone,
        contract_type=form.contract_type,
        timezone=form.timezone,
        updated_at=datetime.now(UTC),
    )
    session.add(customer)
    session.flush()
    audit_trail.record(
        session, actor, "customer.created", customer.name,
        {"id": customer.id, **form.values()}, remote_addr,
    )  # fmt: skip
    _commit(session, "name", f"There is already a customer called {form.name!r}.")
    return customer


def update_customer(
    session: Session, actor: str, customer: Customer, form: CustomerForm, remote_addr: str | None
) -> dict[str, dict[str, str | None]]:
    """Save the changed fields with an audit row naming them; returns the changes (none:
    nothing written)."""
    _lock_names(session)
    # The row as it is now, locked: not as it was when the edit form was opened.
    session.refresh(customer, with_for_update=True)
    changes = _changes(CustomerForm.of(customer).values(), form.values())
    if not changes:
        session.rollback()
        return changes
    if "name" in changes:
        _check_customer_name(session, form.name, customer.id)
    for name, change in changes.items():
        setattr(customer, name, change["to"])
    customer.updated_at = datetime.now(UTC)
    session.add(customer)
    audit_trail.record(
        session, actor, "customer.updated", customer.name,
        {"id": customer.id, "changes": changes}, remote_addr,
    )  # fmt: skip
    _commit(session, "name", f"There is already a customer called {form.name!r}.")
    return changes


def _store_target(customer: Customer, code: str) -> str:
    return f"{customer.name}/{code}"


def create_store(
    session: Session, actor: str, customer: Customer, form: StoreForm, remote_addr: str | None
) -> Store:
    assert customer.id is not None
    _lock_names(session)
    _check_store_code(session, customer.id, form.code, None)
    store = Store(
        customer_id=customer.id,
        code=form.code,
        name=form.name,
        timezone=form.timezone,
        maintenance_window=form.maintenance_window,
    )
    session.add(store)
    session.flush()
    audit_trail.record(
        session, actor, "store.created", _store_target(customer, store.code),
        {"id": store.id, "customer_id": customer.id, **form.values()}, remote_addr,
    )  # fmt: skip
    _commit(session, "code", f"This customer already has a store {form.code!r}.")
    return store


def update_store(
    session: Session,
    actor: str,
    customer: Customer,
    store: Store,
    form: StoreForm,
    remote_addr: str | None,
) -> dict[str, dict[str, str | None]]:
    assert customer.id is not None
    _lock_names(session)
    session.refresh(store, with_for_update=True)
    changes = _changes(StoreForm.of(store).values(), form.values())
    if not changes:
        session.rollback()
        return changes
    if "code" in changes:
        _check_store_code(session, customer.id, form.code, store.id)
    for name, change in changes.items():
        setattr(store, name, change["to"])
    session.add(store)
    audit_trail.record(
        session, actor, "store.updated", _store_target(customer, store.code),
        {"id": store.id, "customer_id": customer.id, "changes": changes}, remote_addr,
    )  # fmt: skip
    _commit(session, "code", f"This customer already has a store {form.code!r}.")
    return changes
