"""Read side of the fleet for the console: terminal rows, counts by status, history.

A repository module, like ``console.users``, ``console.alert_repository`` and
``console.dead_letter_repository``: blueprints hand it the request's ``Session`` and
never query it themselves. It returns frozen ``TerminalView`` values, never table
objects, so templates and the JSON API cannot lazy-load or change anything by accident.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from sqlalchemy import false, func, literal_column, text
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import Select, SelectOfScalar

from registry.terminal_tags import TAGS_MAX, is_tag
from shared import audit_trail
from shared.models import (
    ATTENTION_RANK_SQL,
    Customer,
    StatusChange,
    Store,
    Terminal,
    TerminalLog,
    TerminalStatus,
)

Order = Literal["serial", "attention"]
# A row query or a count query: both take the same filters.
_RowQuery = Select[Terminal, Any, Any, Any]  # terminal, customer, store label, time zone
_Query = TypeVar("_Query", _RowQuery, SelectOfScalar[Any])


@dataclass(frozen=True)
class TerminalFilter:
    """What the user or API caller asked to see; all parts optional."""

    status: str | None = None
    customer: str | None = None
    search: str | None = None  # substring of serial, host or store, case-insensitive
    store: str | None = None  # a store's code or name
    firmware: str | None = None  # an exact firmware version
    model: str | None = None  # an exact model
    maintenance: bool | None = None  # True: only those under maintenance
    serials: tuple[str, ...] = ()  # rows ticked in the list: only these
    tags: tuple[str, ...] = ()  # only terminals carrying every one of these

    def describe(self) -> str:
        """The selection in words, for confirmation pages and the bulk's summary."""
        parts = [
            f"customer {self.customer}" if self.customer else "all customers",
            f"status {self.status}" if self.status else "",
            f"store {self.store}" if self.store else "",
            f"firmware {self.firmware}" if self.firmware else "",
            f"model {self.model}" if self.model else "",
            "under maintenance" if self.maintenance else "",
            f"{len(self.serials)} chosen terminal{'s' if len(self.serials) != 1 else ''}"
            if self.serials
            else "",
            f"serial, host or store contains {self.search!r}" if self.search else "",
            f"tagged {', '.join(self.tags)}" if self.tags else "",
        ]
        return " · ".join(part for part in parts if part)

    def to_json(self) -> dict[str, Any]:
        found = {key: value for key, value in asdict(self).items() if value}
        for key in ("serials", "tags"):
            if key in found:
                found[key] = list(found[key])
        return found


@dataclass(frozen=True)
class DeliveryView:
    """What ingest found of the terminal's message numbers (ingest.sequence): how far
    they go, and the numbers found missing, got back, given up on, and still open."""

    numbered_up_to: int | None
    gaps_found: int
    missing: int
    recovered: int
    lost: int

    @property
    def still_open(self) -> int:
        return max(0, self.missing - self.recovered - self.lost)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"still_open": self.still_open}


@dataclass(frozen=True)
class TerminalView:
    """One terminal as the console shows it."""

    serial: str
    customer: str
    store: str | None
    model: str
    status: str
    status_reason: str | None
    status_changed_at: datetime | None
    firmware: str | None
    last_heartbeat_at: datetime | None
    cpu: float | None
    memory: float | None
    disk: float | None
    host_name: str | None
    uptime_s: int | None = None
    delivery: DeliveryView | None = None
    maintenance: bool = False
    maintenance_note: str | None = None
    installed_at: datetime | None = None
    updated_at: datetime | None = None
    timezone: str = "UTC"  # the store's (else the customer's): times are shown in it
    customer_id: int | None = None  # for links to the customer's and the store's pages
    store_id: int | None = None
    tags: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The API form: the fields support scripts rely on, timestamps in ISO 8601."""
        return {
            "serial": self.serial,
            "customer": self.customer,
            "store": self.store,
            "status": self.status,
            "status_reason": self.status_reason,
            "firmware": self.firmware,
            "last_heartbeat_at": _iso(self.last_heartbeat_at),
            "cpu": self.cpu,
            "memory": self.memory,
            "disk": self.disk,
        }

    def to_detail_json(self) -> dict[str, Any]:
        """One terminal's API form: the list's fields, its tags and its message delivery."""
        delivery = self.delivery.to_json() if self.delivery is not None else None
        return self.to_json() | {"tags": list(self.tags), "delivery": delivery}


@dataclass(frozen=True)
class StatusChangeView:
    at: datetime | None
    old_status: str | None
    new_status: str
    reason: str


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _base_query() -> _RowQuery:
    store_label = func.coalesce(func.nullif(Store.name, ""), Store.code)
    return (
        select(
            Terminal,
            col(Customer.name).label("customer_name"),
            store_label.label("store"),
            func.coalesce(col(Store.timezone), col(Customer.timezone)).label("timezone"),
        )
        .join(Customer, col(Customer.id) == col(Terminal.customer_id))
        .outerjoin(Store, col(Store.id) == col(Terminal.store_id))
    )


def _filtered(query: _Query, wanted: TerminalFilter) -> _Query:
    if wanted.status:
        query = query.where(col(Terminal.status) == wanted.status)
    if wanted.customer:
        query = query.where(col(Customer.name) == wanted.customer)
    if wanted.search:
        escaped = wanted.search.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")
        pattern = f"%{escaped}%"
        # Serial and host have trigram indexes (migration 0009), and ANY(ARRAY(...)) runs
        # the store lookup once, up front: PostgreSQL ORs index scans instead of reading
        # 100,000 rows (with IN (subquery) it could not).
        in_matching_store = text(
            "terminal.store_id = ANY(ARRAY(SELECT store.id FROM store"
            " WHERE store.code ILIKE :store_pattern ESCAPE '\\'"
            " OR store.name ILIKE :store_pattern ESCAPE '\\'))"
        ).bindparams(store_pattern=pattern)
        query = query.where(
            col(Terminal.serial).ilike(pattern, escape="\\")
            | col(Terminal.host_name).ilike(pattern, escape="\\")
            | in_matching_store
        )
    if wanted.serials:
        query = query.where(col(Terminal.serial).in_(wanted.serials))
    if wanted.model:
        query = query.where(col(Terminal.model) == wanted.model)
    if wanted.maintenance:
        query = query.where(col(Terminal.maintenance).is_(True))
    if wanted.store:
        stores = select(col(Store.id)).where(
            (col(Store.code) == wanted.store) | (col(Store.name) == wanted.store)
        )
        query = query.where(col(Terminal.store_id).in_(stores))
    if wanted.firmware:
        query = query.where(col(Terminal.firmware_version) == wanted.firmware)
    if wanted.tags:
        query = query.where(_carries(wanted.tags))
    return query


def _carries(tags: tuple[str, ...]) -> Any:
    """Terminals carrying every one of ``tags``: ``tags @> ARRAY[...]``, which the GIN
    index (ix_terminal_tags) answers. A tag no terminal can carry (malformed, or more
    tags than a terminal may have) matches nothing: never dropped from the filter, which
    would widen a selection a bulk command is sent to; and never cast to varchar(64),
    which would cut a long one down to a tag that exists."""
    if len(tags) > TAGS_MAX or not all(is_tag(tag) for tag in tags):
        return false()
    return col(Terminal.tags).contains(list(tags))


def _view(row: Any) -> TerminalView:
    terminal: Terminal = row[0]
    return TerminalView(
        serial=terminal.serial,
        customer=row[1],
        store=row[2],
        model=terminal.model,
        status=terminal.status,
        status_reason=terminal.status_reason,
        status_changed_at=terminal.status_changed_at,
        firmware=terminal.firmware_version,
        last_heartbeat_at=terminal.last_heartbeat_at,
        cpu=terminal.cpu_pct,
        memory=terminal.memory_pct,
        disk=terminal.disk_pct,
        host_name=terminal.host_name,
        uptime_s=terminal.uptime_s,
        maintenance=bool(terminal.maintenance),
        maintenance_note=terminal.maintenance_note,
        installed_at=terminal.installed_at,
        updated_at=terminal.updated_at,
        timezone=row[3] or "UTC",
        customer_id=terminal.customer_id,
        store_id=terminal.store_id,
        tags=tuple(terminal.tags or ()),
        delivery=DeliveryView(
            numbered_up_to=terminal.seq_high,
            gaps_found=terminal.seq_gaps_found or 0,
            missing=terminal.seq_missing or 0,
            recovered=terminal.seq_recovered or 0,
            lost=terminal.seq_lost or 0,
        ),
    )


# The list's sortable columns; the serial breaks ties, so that pages never overlap.
SORT_COLUMNS: dict[str, Any] = {
    "serial": col(Terminal.serial),
    "customer": col(Customer.name),
    "store": func.coalesce(func.nullif(Store.name, ""), Store.code),
    "firmware": col(Terminal.firmware_version),
    "model": col(Terminal.model),
    "heartbeat": col(Terminal.last_heartbeat_at),
    "cpu": col(Terminal.cpu_pct),
    "memory": col(Terminal.memory_pct),
    "disk": col(Terminal.disk_pct),
    "installed": col(Terminal.installed_at),
}


def list_terminals(
    session: Session,
    wanted: TerminalFilter = TerminalFilter(),
    *,
    limit: int = 100,
    offset: int = 0,
    order: Order | str = "serial",
    descending: bool = False,
) -> list[TerminalView]:
    """A page of terminals; ``order`` is "attention" (problems first), or a column of
    SORT_COLUMNS; empty values sort last either way.

    Two steps: the page's ids in order (a sort of narrow rows, which stays in memory
    for a deep page of 100,000 terminals), then those rows whole.
    """
    # Joined only when the filter or the order reads them: every terminal has a
    # customer, so the join filters nothing out.
    ids: Any = select(col(Terminal.id))
    if wanted.customer or order == "customer":
        ids = ids.join(Customer, col(Customer.id) == col(Terminal.customer_id))
    if order == "store":
        ids = ids.outerjoin(Store, col(Store.id) == col(Terminal.store_id))
    ids = _filtered(ids, wanted)
    if order == "attention":
        # Literal SQL, the expression of ix_terminal_attention: the first page of 100,000
        # terminals is an index range, not a sort.
        rank: Any = literal_column(f"({ATTENTION_RANK_SQL.replace('status', 'terminal.status')})")
        ids = ids.order_by(rank.desc() if descending else rank, col(Terminal.serial))
    else:
        column = SORT_COLUMNS.get(order, col(Terminal.serial))
        key = column.desc().nulls_last() if descending else column.asc().nulls_last()
        ids = ids.order_by(key, col(Terminal.serial))
    page = list(session.exec(ids.limit(limit).offset(offset)).all())
    if not page:
        return []
    rows = session.exec(_base_query().where(col(Terminal.id).in_(page))).all()
    by_id = {row[0].id: row for row in rows}
    return [_view(by_id[terminal_id]) for terminal_id in page if terminal_id in by_id]


# The distinct values of an indexed column, one index probe per value (a loose index
# scan): a handful of models or versions among 100,000 terminals costs microseconds,
# where DISTINCT reads every entry.
_DISTINCT_SQL = """
WITH RECURSIVE v(x) AS (
    (SELECT {c} FROM terminal WHERE {c} IS NOT NULL ORDER BY {c} LIMIT 1)
    UNION ALL
    SELECT (SELECT {c} FROM terminal WHERE {c} > v.x ORDER BY {c} LIMIT 1) FROM v
    WHERE v.x IS NOT NULL
)
SELECT x FROM v WHERE x IS NOT NULL LIMIT :limit
"""
DISTINCT_MAX = 500


def distinct_values(session: Session, column: str) -> list[str]:
    """The models or firmware versions in the fleet, for the list's filter boxes."""
    name = {"model": "model", "firmware": "firmware_version"}[column]
    rows = session.execute(text(_DISTINCT_SQL.format(c=name)), {"limit": DISTINCT_MAX + 1})
    return [value for (value,) in rows.all() if value][:DISTINCT_MAX]


# What the trigger-kept counts (shared.terminal_counts) can answer without the fleet.
_COUNTED_FIELDS = {"status", "customer", "maintenance"}


def count_terminals(session: Session, wanted: TerminalFilter = TerminalFilter()) -> int:
    asked = {name for name, value in asdict(wanted).items() if value not in (None, (), False)}
    if asked <= _COUNTED_FIELDS:
        return _counted(session, wanted)
    query = _filtered(
        select(func.count())
        .select_from(Terminal)
        .join(Customer, col(Customer.id) == col(Terminal.customer_id)),
        wanted,
    )
    return int(session.exec(query).one())


def _counted(session: Session, wanted: TerminalFilter) -> int:
    where, params = ["true"], {}
    if wanted.status:
        where.append("k.status = :status")
        params["status"] = wanted.status
    if wanted.maintenance:
        where.append("k.maintenance")
    if wanted.customer:
        where.append("k.customer_id = (SELECT id FROM customer WHERE name = :customer)")
        params["customer"] = wanted.customer
    row = session.execute(
        text(
            f"SELECT coalesce(sum(n), 0)::bigint FROM terminal_count k WHERE {' AND '.join(where)}"
        ),
        params,
    ).one()
    return int(row[0])


def counts_by_status(session: Session, customer: str | None = None) -> dict[str, int]:
    """Terminals per status (every known status present, zero when none), from the
    trigger-kept counts."""
    where, params = "", {}
    if customer:
        where = " WHERE k.customer_id = (SELECT id FROM customer WHERE name = :customer)"
        params["customer"] = customer
    rows = session.execute(
        text(f"SELECT k.status, sum(k.n)::bigint FROM terminal_count k{where} GROUP BY k.status"),
        params,
    ).all()
    counts = {status.value: 0 for status in TerminalStatus}
    for status, number in rows:
        if number:
            counts[status] = int(number)
    return counts


def customer_names(session: Session) -> list[str]:
    return list(session.exec(select(col(Customer.name)).order_by(col(Customer.name))).all())


def get_terminal(session: Session, serial: str) -> TerminalView | None:
    row = session.exec(_base_query().where(col(Terminal.serial) == serial)).first()
    return _view(row) if row is not None else None


def status_history(session: Session, serial: str, limit: int = 20) -> list[StatusChangeView]:
    rows = session.exec(
        select(StatusChange)
        .join(Terminal, col(Terminal.id) == col(StatusChange.terminal_id))
        .where(col(Terminal.serial) == serial)
        .order_by(col(StatusChange.id).desc())
        .limit(limit)
    ).all()
    return [StatusChangeView(row.at, row.old_status, row.new_status, row.reason) for row in rows]


def terminal_ids(session: Session, wanted: TerminalFilter) -> list[int]:
    """The ids of every terminal the filter matches (a bulk command's selection)."""
    query = _filtered(
        select(col(Terminal.id))
        .select_from(Terminal)
        .join(Customer, col(Customer.id) == col(Terminal.customer_id)),
        wanted,
    )
    return [int(terminal_id) for terminal_id in session.exec(query).all()]


@dataclass(frozen=True)
class LogEntryView:
    """One line of a terminal's log: a device event or a command's result."""

    at: datetime
    kind: str
    severity: str
    code: str | None
    message: str
    source_id: str | None


def terminal_log(session: Session, serial: str, limit: int = 50) -> list[LogEntryView]:
    """A terminal's log, newest first."""
    rows = session.exec(
        select(TerminalLog)
        .join(Terminal, col(Terminal.id) == col(TerminalLog.terminal_id))
        .where(col(Terminal.serial) == serial)
        .order_by(col(TerminalLog.at).desc(), col(TerminalLog.id).desc())
        .limit(limit)
    ).all()
    return [
        LogEntryView(row.at, row.kind, row.severity, row.code, row.message, row.source_id)
        for row in rows
        if row.at is not None
    ]


@dataclass(frozen=True)
class BulkProblemView:
    """A terminal a bulk command did not succeed on, for the progress page."""

    command_id: str
    serial: str
    state: str
    error: str | None
    finished_at: datetime | None


def bulk_problems(session: Session, bulk_id: int, limit: int = 50) -> list[BulkProblemView]:
    """A bulk's commands that failed, were rejected or expired, latest first."""
    rows = session.execute(
        text(
            "SELECT c.id, t.serial, c.status, c.error, c.finished_at FROM command c"
            " JOIN terminal t ON t.id = c.terminal_id WHERE c.bulk_id = :bulk"
            " AND c.status IN ('failed', 'rejected', 'expired')"
            " ORDER BY c.finished_at DESC NULLS LAST, t.serial LIMIT :limit"
        ),
        {"bulk": bulk_id, "limit": limit},
    ).all()
    return [BulkProblemView(*row) for row in rows]


def database_answers(session: Session) -> None:
    """Raises the driver's error when PostgreSQL does not answer a trivial query."""
    session.exec(select(text("1"))).one()


# Periods of the terminal page's charts: how far back, and the width of one point.
PERIODS: dict[str, tuple[timedelta, int]] = {
    "24h": (timedelta(hours=24), 600),
    "7d": (timedelta(days=7), 3600),
    "30d": (timedelta(days=30), 6 * 3600),
}


@dataclass(frozen=True)
class ResourcePoint:
    at: datetime
    cpu: float | None
    memory: float | None
    disk: float | None
    heartbeats: int


def resource_history(
    session: Session, serial: str, period: str, now: datetime
) -> list[ResourcePoint]:
    """CPU, memory, disk and heartbeats per point over ``period``: the last day from
    the raw heartbeats (one index range), longer periods from the hourly rollups."""
    span, step = PERIODS[period]
    since = now - span
    if period == "24h":
        statement = text(
            "SELECT to_timestamp(floor(extract(epoch FROM h.ts) / :step) * :step),"
            " avg(h.cpu_pct), avg(h.memory_pct), avg(h.disk_pct), count(*)"
            " FROM telemetry h JOIN terminal t ON t.id = h.terminal_id"
            " WHERE t.serial = :serial AND h.ts >= :since AND h.ts <= :now"
            " GROUP BY 1 ORDER BY 1"
        )
    else:
        statement = text(
            "SELECT to_timestamp(floor(extract(epoch FROM h.hour) / :step) * :step),"
            " sum(h.cpu_avg * h.samples) / nullif(sum(h.samples), 0),"
            " sum(h.memory_avg * h.samples) / nullif(sum(h.samples), 0),"
            " sum(h.disk_avg * h.samples) / nullif(sum(h.samples), 0), sum(h.samples)"
            " FROM telemetry_hourly h JOIN terminal t ON t.id = h.terminal_id"
            " WHERE t.serial = :serial AND h.hour >= :since AND h.hour <= :now"
            " GROUP BY 1 ORDER BY 1"
        )
    rows = session.execute(
        statement, {"step": step, "serial": serial, "since": since, "now": now}
    ).all()
    return [
        ResourcePoint(at, _finite(cpu), _finite(memory), _finite(disk), int(count or 0))
        for at, cpu, memory, disk, count in rows
        if at is not None
    ]


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class AuditLine:
    at: datetime | None
    actor: str
    action: str
    detail: dict[str, Any] | None


def terminal_audit(session: Session, serial: str, limit: int = 20) -> list[AuditLine]:
    """What people and scripts did to this terminal, newest first."""
    rows = session.execute(
        text(
            "SELECT at, actor, action, detail FROM audit_event WHERE target = :serial"
            " ORDER BY id DESC LIMIT :limit"
        ),
        {"serial": serial, "limit": limit},
    ).all()
    return [AuditLine(at, actor, action, detail) for at, actor, action, detail in rows]


def set_maintenance(
    session: Session, serial: str, on: bool, note: str | None, actor: str, remote_addr: str | None
) -> bool:
    """Put a terminal under maintenance or take it out, audited; False if unknown."""
    terminal = session.exec(select(Terminal).where(col(Terminal.serial) == serial)).first()
    if terminal is None:
        return False
    terminal.maintenance = on
    terminal.maintenance_note = (note or "").strip()[:200] or None if on else None
    terminal.updated_at = datetime.now(UTC)
    session.add(terminal)
    audit_trail.record(
        session, actor, "terminal.maintenance_on" if on else "terminal.maintenance_off",
        serial, {"note": terminal.maintenance_note} if on else None, remote_addr,
    )  # fmt: skip
    session.commit()
    return True


@dataclass(frozen=True)
class TerminalAlert:
    id: int
    kind: str
    severity: str
    status: str
    message: str
    raised_at: datetime | None
    resolved_at: datetime | None
    count: int


def terminal_alerts(session: Session, serial: str, limit: int = 10) -> list[TerminalAlert]:
    """The terminal's open alerts first, then its latest resolved ones."""
    rows = session.execute(
        text(
            "SELECT a.id, a.kind, a.severity, a.status, a.message, a.raised_at,"
            " a.resolved_at, a.count FROM alert a JOIN terminal t ON t.id = a.terminal_id"
            " WHERE t.serial = :serial"
            " ORDER BY (a.status = 'resolved'), a.raised_at DESC, a.id DESC LIMIT :limit"
        ),
        {"serial": serial, "limit": limit},
    ).all()
    return [TerminalAlert(*row) for row in rows]
