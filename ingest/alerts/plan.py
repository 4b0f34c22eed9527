"""What alerts to open, bump or resolve, as pure functions over a snapshot.

``plan_status_alerts`` turns the terminals that are offline or in error (and the
alerts already open) into actions: one alert per terminal and kind, or one
"pc-offline" alert when every terminal of a store PC is offline together. The
storm decision and the notification routing are here too; ``ingest.alerts.store``
applies the results in PostgreSQL.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from ingest.alerts.config import (
    KIND_ERROR,
    KIND_OFFLINE,
    KIND_PC_OFFLINE,
    AlertConfig,
    Route,
    Severity,
    StatusRule,
)
from shared.models import TerminalStatus

NOTE_AUTO = "resolved automatically"
NOTE_MERGED = "merged into the store PC alert"


def terminal_scope(terminal_id: int) -> str:
    return f"terminal:{terminal_id}"


def host_scope(customer_id: int, host_name: str) -> str:
    return f"host:{customer_id}:{host_name}"


@dataclass(frozen=True, slots=True)
class OpenAlert:
    """Open the alert, or bump the open one's count and last time (``occurrences``)."""

    scope: str
    kind: str
    severity: Severity
    message: str
    at: datetime
    terminal_id: int | None = None
    customer_id: int | None = None
    host_name: str | None = None
    occurrences: int = 1


@dataclass(frozen=True, slots=True)
class ResolveAlert:
    scope: str
    kind: str
    at: datetime
    note: str = NOTE_AUTO


AlertAction = OpenAlert | ResolveAlert


@dataclass(frozen=True, slots=True)
class TerminalSnapshot:
    terminal_id: int
    serial: str
    customer_id: int
    host_name: str | None
    status: str
    reason: str | None
    changed_at: datetime


@dataclass(frozen=True, slots=True)
class OpenAlertRow:
    scope: str
    kind: str
    last_seen_at: datetime


OpenAlerts = dict[tuple[str, str], OpenAlertRow]

OFFLINE = TerminalStatus.OFFLINE.value
ERROR = TerminalStatus.ERROR.value


def _age(now: datetime, since: datetime) -> float:
    return (now - since).total_seconds()


def _terminal_actions(
    terminal: TerminalSnapshot,
    rule: StatusRule,
    open_alerts: OpenAlerts,
    now: datetime,
    wait_s: float,
) -> list[AlertAction]:
    """One terminal against one status rule (offline or error)."""
    key = (terminal_scope(terminal.terminal_id), rule.kind)
    current = open_alerts.get(key)
    if terminal.status == rule.kind:
        reason = terminal.reason or terminal.status
        message = f"{terminal.serial} is {terminal.status}: {reason}"
        opened = OpenAlert(
            key[0],
            rule.kind,
            rule.severity,
            message,
            terminal.changed_at,
            terminal.terminal_id,
            terminal.customer_id,
            terminal.host_name,
        )
        if current is None:
            return [opened] if _age(now, terminal.changed_at) >= max(rule.for_s, wait_s) else []
        # A new episode since the alert last saw one: the same alert, counted again.
        return [opened] if current.last_seen_at < terminal.changed_at else []
    if current is not None and _age(now, terminal.changed_at) >= rule.clear_for_s:
        return [ResolveAlert(key[0], rule.kind, now)]
    return []


def _host_actions(
    siblings: list[TerminalSnapshot], config: AlertConfig, open_alerts: OpenAlerts, now: datetime
) -> tuple[list[AlertAction], bool]:
    """The PC alert of one host; True when it covers the host's offline terminals."""
    rule = config.status_rule(KIND_OFFLINE)
    assert rule is not None
    first = siblings[0]
    assert first.host_name is not None
    scope = host_scope(first.customer_id, first.host_name)
    current = open_alerts.get((scope, KIND_PC_OFFLINE))
    if all(t.status == OFFLINE for t in siblings):
        latest = max(t.changed_at for t in siblings)
        serials = ", ".join(sorted(t.serial for t in siblings))
        message = (
            f"store PC {first.host_name} is down: {len(siblings)} terminals offline ({serials})"
        )
        opened = OpenAlert(
            scope,
            KIND_PC_OFFLINE,
            config.host.severity,
            message,
            latest,
            None,
            first.customer_id,
            first.host_name,
        )
        actions: list[AlertAction] = []
        if current is None:
            if _age(now, latest) < rule.for_s:
                return [], True
            actions.append(opened)
        elif current.last_seen_at < latest:
            actions.append(opened)
        for t in siblings:  # alerts raised alone before the PC was seen down join it
            if (terminal_scope(t.terminal_id), KIND_OFFLINE) in open_alerts:
                actions.append(
                    ResolveAlert(terminal_scope(t.terminal_id), KIND_OFFLINE, now, NOTE_MERGED)
                )
        return actions, True
    back = [t for t in siblings if t.status != OFFLINE]
    if current is not None and any(_age(now, t.changed_at) >= rule.clear_for_s for t in back):
        return [ResolveAlert(scope, KIND_PC_OFFLINE, now)], False
    return [], current is not None


def plan_status_alerts(
    terminals: Iterable[TerminalSnapshot],
    open_alerts: OpenAlerts,
    config: AlertConfig,
    now: datetime,
) -> list[AlertAction]:
    """Actions for every terminal in the snapshot (which holds whole host groups)."""
    snapshot = list(terminals)
    actions: list[AlertAction] = []
    offline_rule = config.status_rule(KIND_OFFLINE)
    error_rule = config.status_rule(KIND_ERROR)
    hosts: dict[tuple[int, str], list[TerminalSnapshot]] = defaultdict(list)
    for t in snapshot:
        if t.host_name:
            hosts[(t.customer_id, t.host_name)].append(t)
    covered: set[int] = set()
    grouped: set[int] = set()  # terminals whose PC has siblings: they wait for them
    if offline_rule is not None:
        for siblings in hosts.values():
            if len(siblings) < config.host.min_terminals:
                continue
            grouped.update(t.terminal_id for t in siblings)
            host_actions, covers = _host_actions(siblings, config, open_alerts, now)
            actions.extend(host_actions)
            if covers:
                covered.update(t.terminal_id for t in siblings)
    for t in snapshot:
        if offline_rule is not None and t.terminal_id not in covered:
            wait = config.host.group_wait_s if t.terminal_id in grouped else 0.0
            actions.extend(_terminal_actions(t, offline_rule, open_alerts, now, wait))
        if error_rule is not None:
            actions.extend(_terminal_actions(t, error_rule, open_alerts, now, 0.0))
    return actions


def decision_ages(config: AlertConfig) -> tuple[float, ...]:
    """Every age of a status change at which ``plan_status_alerts`` can decide otherwise
    for that terminal or its store PC: a rule's ``for_s`` (alone or after the PC's
    ``group_wait_s``) and ``clear_for_s``. Between two of them, with nothing else
    changing, its plan stays the same."""
    ages = {0.0}
    for rule in config.status_rules:
        ages.update((rule.for_s, max(rule.for_s, config.host.group_wait_s), rule.clear_for_s))
    return tuple(sorted(ages))


def next_decision_at(changed_at: datetime, now: datetime, config: AlertConfig) -> datetime | None:
    """When the rules must next look at a terminal whose status changed at ``changed_at``
    (the first of ``decision_ages`` still ahead of ``now``), or None once all have passed.

    Its store PC's decisions are covered too: each of its siblings has its own times,
    and a PC is planned whole whenever one of its terminals is due."""
    for age in decision_ages(config):
        due = changed_at + timedelta(seconds=age)
        if due > now:
            return due
    return None


def merge_opens(actions: Iterable[AlertAction]) -> list[AlertAction]:
    """One action per (scope, kind): repeated opens add up, the latest message wins."""
    merged: dict[tuple[str, str], AlertAction] = {}
    for action in actions:
        key = (action.scope, action.kind)
        before = merged.get(key)
        if isinstance(action, OpenAlert) and isinstance(before, OpenAlert):
            action = OpenAlert(
                action.scope,
                action.kind,
                action.severity,
                action.message,
                max(action.at, before.at),
                action.terminal_id,
                action.customer_id,
                action.host_name,
                before.occurrences + action.occurrences,
            )
        merged.pop(key, None)
        merged[key] = action
    return list(merged.values())


class StormPlan(Enum):
    NOTIFY_EACH = "notify-each"
    OPEN_INCIDENT = "open-incident"
    JOIN_INCIDENT = "join-incident"


def storm_plan(opened_in_window: int, max_per_window: int, incident_open: bool) -> StormPlan:
    """How new alerts are notified: each alone, or grouped into one incident."""
    if incident_open:
        return StormPlan.JOIN_INCIDENT
    if opened_in_window > max_per_window:
        return StormPlan.OPEN_INCIDENT
    return StormPlan.NOTIFY_EACH


def routes_for(routes: Iterable[Route], severity: Severity, customer: str | None) -> list[Route]:
    return [route for route in routes if route.accepts(severity, customer)]


def incident_routes(routes: Iterable[Route], severity: Severity) -> list[Route]:
    return [r for r in routes if r.incidents and severity.rank >= r.min_severity.rank]
