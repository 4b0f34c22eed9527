"""The audit trail as the console searches it: filtered pages, the export, the actions.

The table grows by millions of rows, so every read walks the primary key from the
newest row down (keyset on ``id``, ``before_id`` for the next page) and stops at what it
needs: no OFFSET, and no count of the whole table. Rows come back as frozen
``AuditRow`` values, never session-tracked models (an export reads 100,000 of them).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, or_, select, text
from sqlmodel import Session, col

from console.audit_query import AuditQuery
from shared import audit_trail
from shared.models import AuditEvent

PAGE_SIZE = 100
EXPORT_MAX = 100_000
EXPORT_BATCH = 1_000
# The select box lists at most this many actions (the code writes a few dozen).
ACTIONS_MAX = 1_000
EXPORTED = "audit.exported"

_COLUMNS = (
    col(AuditEvent.id),
    col(AuditEvent.at),
    col(AuditEvent.actor),
    col(AuditEvent.action),
    col(AuditEvent.target),
    col(AuditEvent.detail),
    col(AuditEvent.remote_addr),
)

# PostgreSQL has no skip scan: DISTINCT would read the whole action index. This walks
# it instead, one index probe per distinct action (a "loose index scan").
SQL_DISTINCT_ACTIONS = """
WITH RECURSIVE actions(action) AS (
    (SELECT action FROM audit_event ORDER BY action LIMIT 1)
    UNION ALL
    SELECT (SELECT e.action FROM audit_event e WHERE e.action > a.action
            ORDER BY e.action LIMIT 1)
    FROM actions a WHERE a.action IS NOT NULL
)
SELECT action FROM actions WHERE action IS NOT NULL LIMIT :limit
"""


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: Any
    remote_addr: str | None


@dataclass(frozen=True)
class AuditPage:
    rows: list[AuditRow]
    has_next: bool

    @property
    def next_before_id(self) -> int | None:
        """``before_id`` of the next (older) page, if there is one."""
        return self.rows[-1].id if self.has_next and self.rows else None


def escape_like(value: str) -> str:
    """``value`` as literal text inside a LIKE pattern (escape character ``\\``)."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _conditions(query: AuditQuery) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if query.actor:
        # lower() on both sides: PostgreSQL's idea of lower case, not Python's.
        conditions.append(func.lower(col(AuditEvent.actor)) == func.lower(query.actor))
    match = query.action_match()
    if match is not None:
        kind, value = match
        action = col(AuditEvent.action)
        if kind == "exact":
            conditions.append(action == value)
        elif kind == "family":
            family = action.like(escape_like(value + ".") + "%", escape="\\")
            conditions.append(or_(action == value, family))
        else:
            conditions.append(action.like(escape_like(value) + "%", escape="\\"))
    if query.target:
        pattern = "%" + escape_like(query.target) + "%"
        conditions.append(col(AuditEvent.target).ilike(pattern, escape="\\"))
    if query.since is not None:
        conditions.append(col(AuditEvent.at) >= query.since)
    if query.until_end is not None:
        conditions.append(col(AuditEvent.at) < query.until_end)
    if query.remote_addr:
        conditions.append(col(AuditEvent.remote_addr) == query.remote_addr)
    return conditions


def _page_select(query: AuditQuery, before_id: int | None, limit: int) -> Select[Any]:
    conditions = _conditions(query)
    if before_id is not None:
        conditions.append(col(AuditEvent.id) < before_id)
    return select(*_COLUMNS).where(*conditions).order_by(col(AuditEvent.id).desc()).limit(limit)


def _rows(session: Session, statement: Select[Any]) -> list[AuditRow]:
    return [AuditRow(*row) for row in session.execute(statement)]


def search_audit(session: Session, query: AuditQuery, limit: int = PAGE_SIZE) -> AuditPage:
    """One page of matching rows, newest first, older than ``query.before_id`` if set.

    One row more than the page is read to learn whether an older page exists."""
    rows = _rows(session, _page_select(query, query.before_id, limit + 1))
    return AuditPage(rows[:limit], has_next=len(rows) > limit)


def export_rows(
    session: Session, query: AuditQuery, limit: int | None = None, batch: int | None = None
) -> Iterator[list[AuditRow]]:
    """Batches of the matching rows, newest first, at most ``limit`` (EXPORT_MAX) in all;
    the page position is ignored: an export starts at the newest row. Each batch is its
    own keyset query, so no cursor or transaction stays open between them."""
    batch = batch or EXPORT_BATCH
    before_id: int | None = None
    left = EXPORT_MAX if limit is None else limit
    while left > 0:
        rows = _rows(session, _page_select(query, before_id, min(batch, left)))
        if not rows:
            return
        yield rows
        left -= len(rows)
        before_id = rows[-1].id
        session.rollback()  # end the read's transaction before the next batch


def distinct_actions(session: Session) -> list[str]:
    """Every action in the trail, in order (a few dozen: the code names them)."""
    result = session.execute(text(SQL_DISTINCT_ACTIONS), {"limit": ACTIONS_MAX})
    return [row[0] for row in result]


def record_export(session: Session, actor: str, query: AuditQuery, remote_addr: str | None) -> None:
    """Audit an export (who took a copy of which rows) and commit."""
    detail = {"filters": query.args(before_id=None), "max_rows": EXPORT_MAX}
    audit_trail.record(session, actor, EXPORTED, "audit log", detail, remote_addr)
    session.commit()
