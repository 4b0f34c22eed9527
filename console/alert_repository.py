"""The alerts and incidents as the console reads and changes them: the alert repository.

The ingest daemon owns how alerts are raised; the console only reads them and applies
people's decisions (acknowledge, resolve with a note, assign). The list is read a page
at a time, newest first, by keyset on (raised_at, id): no OFFSET, and no count of the
whole table (only of the active alerts, which the partial indexes hold). A storm
incident's alerts take one place in the list, at its newest matching alert. A change
and its audit rows are committed here together, in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlmodel import Session

from console.alert_query import ASSIGNEE_ME, ASSIGNEE_NONE, AlertQuery
from console.alert_scope import rollout_of
from shared import audit_trail

PAGE_SIZE = 100
INCIDENT_MEMBERS = 50
NOTE_MAX = 2000
# What the audit trail keeps of a note (the alert row keeps all of it).
AUDIT_NOTE_MAX = 200
ACTIONS = ("acknowledge", "assign", "resolve")

_ROW_COLUMNS = """
a.id, a.kind, a.severity, a.status, a.message, a.count, a.raised_at, a.first_seen_at,
a.last_seen_at, a.host_name, a.incident_id, a.resolution_note, a.resolved_at,
a.acknowledged_at, t.serial, c.name, s.code,
assignee.username, ack.username, a.scope
"""
_ROW_JOINS = """
LEFT JOIN terminal t ON t.id = a.terminal_id
LEFT JOIN store s ON s.id = t.store_id
LEFT JOIN customer c ON c.id = a.customer_id
LEFT JOIN user_account assignee ON assignee.id = a.assignee_id
LEFT JOIN user_account ack ON ack.id = a.acknowledged_by
"""
# Older than the cursor alert in the list's order; no row at all when it is gone.
_BEFORE = "(a.raised_at, a.id) < (SELECT b.raised_at, b.id FROM alert b WHERE b.id = :before)"
_NEWEST_FIRST = "ORDER BY a.raised_at DESC, a.id DESC"

# Each statement's WHERE names the same alert columns so that the planner can use the
# partial indexes on "status <> 'resolved'" for the active list and the counts.
SQL_EXISTING = "SELECT id FROM alert WHERE id = ANY(CAST(:ids AS int[]))"
SQL_ACKNOWLEDGE = """
UPDATE alert SET status = 'acknowledged', acknowledged_by = :user, acknowledged_at = now()
WHERE id = ANY(CAST(:ids AS int[])) AND status = 'open'
RETURNING id
"""
SQL_RESOLVE = """
UPDATE alert SET status = 'resolved', resolved_at = now(), resolution_note = :note
WHERE id = ANY(CAST(:ids AS int[])) AND status <> 'resolved'
RETURNING id
"""
SQL_ASSIGN = """
UPDATE alert SET assignee_id = :user
WHERE id = ANY(CAST(:ids AS int[])) AND status <> 'resolved'
  AND assignee_id IS DISTINCT FROM :user
RETURNING id
"""
_CHANGES = {"acknowledge": SQL_ACKNOWLEDGE, "resolve": SQL_RESOLVE, "assign": SQL_ASSIGN}
SQL_ACTIVE_KINDS = "SELECT DISTINCT kind FROM alert WHERE status <> 'resolved' ORDER BY 1 LIMIT 200"


@dataclass(frozen=True)
class AlertRow:
    id: int
    kind: str
    severity: str
    status: str
    message: str
    count: int
    raised_at: datetime
    first_seen_at: datetime
    last_seen_at: datetime
    host_name: str | None
    incident_id: int | None
    resolution_note: str | None
    resolved_at: datetime | None
    acknowledged_at: datetime | None
    serial: str | None
    customer: str | None
    store: str | None
    assignee: str | None
    acknowledged_by: str | None
    scope: str

    is_incident = False

    @property
    def rollout_id(self) -> int | None:
        """The rollout a halt alert is about (it has no terminal)."""
        return rollout_of(self.scope)

    @property
    def subject(self) -> str:
        if self.serial:
            return self.serial
        if self.host_name:
            return f"store PC {self.host_name}"
        return f"rollout {self.rollout_id}" if self.rollout_id is not None else "—"


@dataclass(frozen=True)
class IncidentGroup:
    """One storm incident as a row of the list: its matching alerts, newest first."""

    id: int
    status: str
    severity: str
    summary: str
    alert_count: int  # every alert it grouped, as ingest counted them
    opened_at: datetime
    last_alert_at: datetime
    closed_at: datetime | None
    matching: int  # its alerts that match the list's filters
    members: tuple[AlertRow, ...]  # the newest INCIDENT_MEMBERS of those

    is_incident = True


Entry = AlertRow | IncidentGroup


@dataclass(frozen=True)
class AlertPage:
    entries: list[Entry]
    next_before: int | None  # the cursor of the next (older) page, if there is one


@dataclass(frozen=True)
class AlertCounts:
    """Active alerts by status and severity, under the list's other filters."""

    by_status: dict[str, int]
    by_severity: dict[str, int]

    @property
    def active(self) -> int:
        return sum(self.by_status.values())


@dataclass(frozen=True)
class BulkOutcome:
    changed: tuple[int, ...]
    unchanged: tuple[int, ...]  # exist, but were already so (or resolved: left alone)
    missing: tuple[int, ...]  # no such alert


def _conditions(
    query: AlertQuery, me: str | None, *, status: bool = True, severity: bool = True
) -> tuple[list[str], dict[str, Any]]:
    """SQL conditions on ``alert a`` for the query's filters, and their parameters."""
    where: list[str] = []
    params: dict[str, Any] = {}
    if status and query.status == "active":
        where.append("a.status <> 'resolved'")
    elif status and query.status != "all":
        where.append("a.status = :status")
        params["status"] = query.status
    if severity and query.severity:
        where.append("a.severity = :severity")
        params["severity"] = query.severity
    if query.kind:
        where.append("a.kind = :kind")
        params["kind"] = query.kind
    if query.customer:
        where.append("a.customer_id = (SELECT id FROM customer WHERE name = :customer)")
        params["customer"] = query.customer
    if query.assignee == ASSIGNEE_NONE:
        where.append("a.assignee_id IS NULL")
    elif query.assignee:
        where.append("a.assignee_id = (SELECT id FROM user_account WHERE username = :assignee)")
        params["assignee"] = me if query.assignee == ASSIGNEE_ME else query.assignee
    if query.incident is not None:
        where.append("a.incident_id = :incident")
        params["incident"] = query.incident
    if query.serial:
        where.append(
            "a.terminal_id IN (SELECT id FROM terminal WHERE serial ILIKE :serial ESCAPE '\\')"
        )
        params["serial"] = escape_like(query.serial) + "%"
    return where, params


def escape_like(value: str) -> str:
    """``value`` as literal text inside a LIKE pattern (escape character ``\\``)."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _and(conditions: Sequence[str]) -> str:
    return " AND ".join(conditions) or "TRUE"


def _page_keys(
    session: Session, query: AlertQuery, me: str | None, limit: int
) -> list[tuple[int, int | None]]:
    """(alert id, incident id or None) of the page's entries, in order: an incident's
    entry is keyed by its newest matching alert."""
    where, params = _conditions(query, me)
    params.update(limit=limit, before=query.before)
    cursor = [_BEFORE] if query.before is not None else []
    singles = where + cursor + (["a.incident_id IS NULL"] if query.grouped else [])
    sql = f"""
        SELECT a.id, a.raised_at, NULL::int AS incident_id FROM alert a
        WHERE {_and(singles)} {_NEWEST_FIRST} LIMIT :limit
    """
    if query.grouped:
        # One probe per incident (there are few: storms); the cursor applies to the
        # incident's newest alert, so an incident is on exactly one page.
        newest = cursor and [_BEFORE.replace("a.raised_at, a.id", "m.raised_at, m.id")]
        sql = f"""
            ({sql})
            UNION ALL
            (SELECT m.id, m.raised_at, i.id FROM incident i
             CROSS JOIN LATERAL (
                SELECT a.id, a.raised_at FROM alert a
                WHERE a.incident_id = i.id AND {_and(where)} {_NEWEST_FIRST} LIMIT 1
             ) m
             WHERE {_and(newest)}
             ORDER BY m.raised_at DESC, m.id DESC LIMIT :limit)
        """
    sql = f"SELECT id, incident_id FROM ({sql}) k ORDER BY raised_at DESC, id DESC LIMIT :limit"
    return [(row[0], row[1]) for row in session.execute(text(sql), params)]


def _rows(session: Session, ids: Sequence[int]) -> dict[int, AlertRow]:
    sql = f"SELECT {_ROW_COLUMNS} FROM alert a {_ROW_JOINS} WHERE a.id = ANY(CAST(:ids AS int[]))"
    return {row[0]: AlertRow(*row) for row in session.execute(text(sql), {"ids": list(ids)})}


def _groups(
    session: Session, query: AlertQuery, me: str | None, incident_ids: Sequence[int]
) -> dict[int, IncidentGroup]:
    if not incident_ids:
        return {}
    where, params = _conditions(query, me)
    params.update(ids=list(incident_ids), members=INCIDENT_MEMBERS)
    members: dict[int, list[AlertRow]] = {i: [] for i in incident_ids}
    sql = f"""
        SELECT m.* FROM unnest(CAST(:ids AS int[])) AS i(id)
        CROSS JOIN LATERAL (
            SELECT {_ROW_COLUMNS} FROM alert a {_ROW_JOINS}
            WHERE a.incident_id = i.id AND {_and(where)} {_NEWEST_FIRST} LIMIT :members
        ) m
    """
    for row in session.execute(text(sql), params):
        alert = AlertRow(*row)
        members[alert.incident_id or 0].append(alert)
    counts_sql = f"""
        SELECT a.incident_id, count(*) FROM alert a
        WHERE a.incident_id = ANY(CAST(:ids AS int[])) AND {_and(where)} GROUP BY 1
    """
    matching = {row[0]: row[1] for row in session.execute(text(counts_sql), params)}
    incidents_sql = """
        SELECT id, status, severity, summary, alert_count, opened_at, last_alert_at, closed_at
        FROM incident WHERE id = ANY(CAST(:ids AS int[]))
    """
    groups = {}
    for row in session.execute(text(incidents_sql), {"ids": list(incident_ids)}):
        incident_id, status, severity, summary, alert_count, opened, last, closed = row
        groups[incident_id] = IncidentGroup(
            incident_id, status, severity, summary, alert_count, opened, last, closed,
            matching.get(incident_id, 0), tuple(members[incident_id]),
        )  # fmt: skip
    return groups


def list_page(
    session: Session, query: AlertQuery, me: str | None, limit: int = PAGE_SIZE
) -> AlertPage:
    """One page of the list, newest first, older than ``query.before`` if set. ``me`` is
    the signed-in user's name (the assignee filter "me").

    One entry more than the page is read to learn whether an older page exists."""
    keys = _page_keys(session, query, me, limit + 1)
    has_next = len(keys) > limit
    keys = keys[:limit]
    rows = _rows(session, [alert_id for alert_id, incident in keys if incident is None])
    groups = _groups(session, query, me, [incident for _, incident in keys if incident])
    entries: list[Entry] = []
    for alert_id, incident in keys:
        entry = groups.get(incident) if incident else rows.get(alert_id)
        if entry is not None:
            entries.append(entry)
    return AlertPage(entries, keys[-1][0] if has_next else None)


def counts(session: Session, query: AlertQuery, me: str | None) -> AlertCounts:
    """Active alerts by status (under the severity filter) and by severity (under the
    status filter), both under the other filters: read from the active alerts alone."""
    where, params = _conditions(query, me, status=False, severity=False)
    sql = f"""
        SELECT a.status, a.severity, count(*) FROM alert a
        WHERE a.status <> 'resolved' AND {_and(where)} GROUP BY 1, 2
    """
    by_status: dict[str, int] = {}
    by_severity: dict[str, int] = {}
    for status, severity, number in session.execute(text(sql), params):
        if query.severity is None or severity == query.severity:
            by_status[status] = by_status.get(status, 0) + number
        if query.status in ("active", "all", "resolved") or status == query.status:
            by_severity[severity] = by_severity.get(severity, 0) + number
    return AlertCounts(by_status, by_severity)


def active_kinds(session: Session) -> list[str]:
    """The kinds of the active alerts, for the kind filter's suggestions."""
    return [row[0] for row in session.execute(text(SQL_ACTIVE_KINDS))]


def apply(
    session: Session,
    action: str,
    ids: Sequence[int],
    *,
    actor: str,
    actor_id: int,
    remote_addr: str | None,
    note: str = "",
    assignee: tuple[int, str] | None = None,
    bulk: bool = False,
) -> BulkOutcome:
    """Acknowledge, resolve (with ``note``) or assign (to ``assignee``, (id, name), or
    nobody) the alerts ``ids``; audit each one changed and commit, all in one transaction.

    An alert already in that state is left alone and not audited."""
    params: dict[str, Any] = {"ids": list(ids)}
    detail: dict[str, Any] = {"bulk": True} if bulk else {}
    if action == "acknowledge":
        params["user"] = actor_id
    elif action == "resolve":
        params["note"] = note[:NOTE_MAX]
        detail["note"] = note[:AUDIT_NOTE_MAX]
    elif action == "assign":
        params["user"] = assignee[0] if assignee else None
        detail["assignee"] = assignee[1] if assignee else None
    else:
        raise ValueError(f"unknown alert action {action!r}")
    existing = {row[0] for row in session.execute(text(SQL_EXISTING), {"ids": list(ids)})}
    changed = sorted(row[0] for row in session.execute(text(_CHANGES[action]), params))
    for alert_id in changed:
        audit_trail.record(
            session, actor, f"alert.{action}", f"alert:{alert_id}", dict(detail), remote_addr
        )
    session.commit()
    done = set(changed)
    return BulkOutcome(
        changed=tuple(changed),
        unchanged=tuple(i for i in ids if i in existing and i not in done),
        missing=tuple(i for i in ids if i not in existing),
    )
