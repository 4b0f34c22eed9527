"""An open storm incident's next step, and what its notifications say, as pure functions.

An incident is told when it opens (``settle_s`` after, so the first count means
something), then every ``summary_interval_s`` while alerts keep joining it, and a last
time when it closes: after ``quiet_s`` without an alert, or at ``max_duration_s``. Each
notification carries the incident's running totals by kind, severity and customer; the
difference from the previous one is what joined since. ``ingest.alerts.incidents`` keeps
nothing else: the previous notification's payload in ``notification_outbox`` is the
incident's notification state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from ingest.alerts.config import StormRule

DIMENSIONS = ("kind", "severity", "customer")
NO_CUSTOMER = "(no customer)"
TOP = 5  # entries per dimension in a notification's text; the payload keeps them all

# dimension -> value -> number of alerts, e.g. {"kind": {"offline": 12, "error": 3}}
Breakdown = dict[str, dict[str, int]]


class IncidentStep(Enum):
    WAIT = "wait"
    NOTIFY_OPENED = "opened"
    NOTIFY_SUMMARY = "summary"
    CLOSE_QUIET = "closed-quiet"
    CLOSE_MAX_LENGTH = "closed-max-length"

    @property
    def closes(self) -> bool:
        return self in (IncidentStep.CLOSE_QUIET, IncidentStep.CLOSE_MAX_LENGTH)


@dataclass(frozen=True, slots=True)
class OpenIncident:
    id: int
    severity: str
    summary: str
    alert_count: int
    opened_at: datetime
    last_alert_at: datetime


@dataclass(frozen=True, slots=True)
class LastNotice:
    """The incident's previous notification: when, and the totals it told."""

    at: datetime
    alert_count: int
    totals: Breakdown


def _since(now: datetime, then: datetime) -> float:
    return (now - then).total_seconds()


def incident_step(
    incident: OpenIncident, last: LastNotice | None, storm: StormRule, now: datetime
) -> IncidentStep:
    """What to do with one open incident now (the sweep asks every second)."""
    if _since(now, incident.opened_at) >= storm.max_duration_s:
        return IncidentStep.CLOSE_MAX_LENGTH
    if _since(now, incident.last_alert_at) >= storm.quiet_s:
        return IncidentStep.CLOSE_QUIET
    if last is None:
        if _since(now, incident.opened_at) >= storm.settle_s:
            return IncidentStep.NOTIFY_OPENED
        return IncidentStep.WAIT
    grown = incident.alert_count > last.alert_count
    if grown and _since(now, last.at) >= storm.summary_interval_s:
        return IncidentStep.NOTIFY_SUMMARY
    return IncidentStep.WAIT


def breakdown(rows: Iterable[tuple[str, str, str | None, int]]) -> Breakdown:
    """Totals per dimension from (kind, severity, customer, count) groups."""
    totals: Breakdown = {dimension: {} for dimension in DIMENSIONS}
    for kind, severity, customer, count in rows:
        for dimension, value in zip(
            DIMENSIONS, (kind, severity, customer or NO_CUSTOMER), strict=True
        ):
            totals[dimension][value] = totals[dimension].get(value, 0) + count
    return totals


def since(totals: Breakdown, before: Mapping[str, Mapping[str, int]]) -> Breakdown:
    """What joined between two notifications (counts only grow, so no value goes below 0)."""
    joined: Breakdown = {}
    for dimension in DIMENSIONS:
        earlier = before.get(dimension, {})
        now = totals.get(dimension, {})
        joined[dimension] = {
            value: count - earlier.get(value, 0)
            for value, count in now.items()
            if count > earlier.get(value, 0)
        }
    return joined


def top(counts: Mapping[str, int], n: int = TOP) -> tuple[list[tuple[str, int]], int]:
    """The ``n`` largest entries, most first (ties by name), and how many were left out."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ranked[:n], max(len(ranked) - n, 0)


def incident_payload(
    incident: OpenIncident,
    step: IncidentStep,
    totals: Breakdown,
    last: LastNotice | None,
    now: datetime,
) -> dict[str, Any]:
    """The notification body (what a webhook receives and the e-mail is written from).

    ``alert_count`` and ``totals`` are what this notification tells; the next one
    subtracts them, so every alert of the incident is in exactly one ``new_count``.
    """
    before: Mapping[str, Mapping[str, int]] = last.totals if last is not None else {}
    alert_count = sum(totals.get("kind", {}).values())
    new_count = alert_count - (last.alert_count if last is not None else 0)
    return {
        "type": "incident",
        "event": "closed" if step.closes else step.value,
        "close_reason": {
            IncidentStep.CLOSE_QUIET: "quiet",
            IncidentStep.CLOSE_MAX_LENGTH: "max-length",
        }.get(step),
        "id": incident.id,
        "severity": incident.severity,
        "summary": incident.summary,
        "opened_at": incident.opened_at.isoformat(),
        "last_alert_at": incident.last_alert_at.isoformat(),
        "at": now.isoformat(),
        "previous_at": last.at.isoformat() if last is not None else None,
        "alert_count": alert_count,
        "new_count": new_count,
        "totals": totals,
        "new": since(totals, before),
    }


def last_notice(payload: Mapping[str, Any], created_at: datetime) -> LastNotice:
    """The state an earlier incident notification left (rows from before summaries
    existed carry no totals: they count as having told nothing)."""
    at = payload.get("at")
    return LastNotice(
        datetime.fromisoformat(at) if isinstance(at, str) else created_at,
        int(payload.get("alert_count") or 0),
        dict(payload.get("totals") or {}),
    )
