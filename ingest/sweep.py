"""The periodic sweep: missed heartbeats, status alerts, storm incidents, open-alert count.

Every ``sweep_interval_s`` (1 s by default) the sweep marks terminals whose last message
is older than their heartbeat policy allows offline (``ingest.missed_heartbeats``),
plans and applies the status alerts (``ingest.alerts.status_checks``), queues the
notifications of alerts other processes raise (a halted rollout:
``ingest.alerts.store.notify_raised_elsewhere``), and notifies, summarises and closes
storm incidents when they are due (``ingest.alerts.incidents``); each step is its own
transaction. Working from the database, not from memory, keeps this right across
restarts and with several ingest processes; advisory locks and ``SKIP LOCKED`` let them
share the work.

``sweep_once`` looks at the whole fleet (the tests, one-off runs). The daemon's
``FleetSweep`` does that once after a start, a group of customers per sweep, and
otherwise looks only at what is due: the terminals whose ``offline_due_at`` or
``alert_check_at`` has passed (migration 0015). So an idle fleet costs a few index
probes per second, whatever its size.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

from ingest.alerts.config import AlertConfig
from ingest.alerts.incidents import TickResult, incident_tick
from ingest.alerts.status_checks import (
    CheckResult,
    check_customers,
    check_flagged,
    customer_groups,
    flag_resolved,
)
from ingest.alerts.store import ApplyResult, notify_raised_elsewhere
from ingest.missed_heartbeats import (
    last_terminal_id,
    lower_due_times,
    mark_due_heartbeats,
    mark_missed_heartbeats,
    policy_fingerprint,
)

log = logging.getLogger(__name__)

SQL_OPEN_COUNT = "SELECT count(*) FROM alert WHERE status <> 'resolved'"


@dataclass
class SweepResult:
    heartbeats_missed: int = 0
    alerts: ApplyResult | None = None
    raised_elsewhere_notifications: int = 0
    incidents: TickResult | None = None
    open_alerts: int = 0
    terminals_checked: int = 0  # by the status alert rules, with their store PCs


@dataclass(frozen=True)
class SweepPace:
    """How much one sweep of the daemon does at most (a fleet catching up after a
    storm or an upgrade takes several sweeps, none of them long)."""

    due_heartbeats: int = 10_000  # terminals whose offline_due_at has passed
    flagged: int = 10_000  # terminals whose alert_check_at has passed
    group_terminals: int = 20_000  # the whole-fleet check after a start, per sweep
    lower_ids: int = 50_000  # ids whose due times a shorter policy brings down
    open_count_every_s: float = 15.0  # a count of every open alert (the gauge)
    resolved_window_s: float = 30.0  # how far back resolved alerts are looked for


def _add(total: ApplyResult | None, part: ApplyResult | None) -> ApplyResult | None:
    if part is None:
        return total
    if total is None:
        return part
    total.opened += part.opened
    total.repeated += part.repeated
    total.resolved += part.resolved
    total.notifications += part.notifications
    total.incident_id = part.incident_id or total.incident_id
    return total


def _tally(result: SweepResult, check: CheckResult | None) -> None:
    if check is not None:
        result.alerts = _add(result.alerts, check.applied or ApplyResult())
        result.terminals_checked += check.looked_at


async def _finish(
    conn: psycopg.AsyncConnection[Any],
    config: AlertConfig,
    now: datetime,
    result: SweepResult,
    count: bool,
) -> None:
    """Alerts raised elsewhere, storm incidents and (when ``count``) the open alerts."""
    async with conn.transaction():
        result.raised_elsewhere_notifications = await notify_raised_elsewhere(conn, config, now)
    async with conn.transaction():
        result.incidents = await incident_tick(conn, config, now)
        if count:
            row = await (await conn.execute(SQL_OPEN_COUNT)).fetchone()
            result.open_alerts = row[0] if row else 0


async def sweep_once(
    conn: psycopg.AsyncConnection[Any], config: AlertConfig, now: datetime
) -> SweepResult:
    """One sweep of the whole fleet; each step its own transaction (``conn`` is not in
    autocommit mode)."""
    result = SweepResult()
    async with conn.transaction():
        result.heartbeats_missed = await mark_missed_heartbeats(conn, config)
    async with conn.transaction():
        groups = await customer_groups(conn, SweepPace.group_terminals)
    for customers in groups:
        async with conn.transaction():
            _tally(result, await check_customers(conn, config, now, customers))
    await _finish(conn, config, now, result, count=True)
    return result


@dataclass
class FleetSweep:
    """The daemon's sweep: the whole fleet once after a start, then only what is due."""

    config: AlertConfig
    pace: SweepPace = field(default_factory=SweepPace)
    # Customer groups the first check has still to look at; None until read.
    _groups: list[list[int]] | None = None
    _policies: tuple[int, int] | None = None
    # (next id, last id) while stored due times are being brought down to the policy.
    _lowering: tuple[int, int] | None = None
    _counted_at: float | None = None
    _open_alerts: int = 0
    _last_ok: datetime | None = None
    _resolved_seen: dict[int, datetime] = field(default_factory=dict)

    async def once(self, conn: psycopg.AsyncConnection[Any], now: datetime) -> SweepResult:
        """One sweep at ``now``; each step its own transaction."""
        result = SweepResult()
        await self._keep_due_times(conn)
        async with conn.transaction():
            due = await mark_due_heartbeats(conn, self.config, self.pace.due_heartbeats)
        result.heartbeats_missed = due.missed
        await self._status_alerts(conn, now, result)
        count = self._counted_at is None or (
            time.monotonic() - self._counted_at >= self.pace.open_count_every_s
        )
        await _finish(conn, self.config, now, result, count)
        if count:
            self._counted_at, self._open_alerts = time.monotonic(), result.open_alerts
        result.open_alerts = self._open_alerts
        self._last_ok = now
        return result

    async def _keep_due_times(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """After a start or a change of heartbeat policy, bring stored due times down
        to the policies (a range of ids per sweep): the due-time index then stays a
        lower bound of every deadline."""
        async with conn.transaction():
            policies = await policy_fingerprint(conn)
            if policies != self._policies:
                self._policies = policies
                self._lowering = (0, await last_terminal_id(conn))
        if self._lowering is None:
            return
        first, last = self._lowering
        end = first + self.pace.lower_ids
        async with conn.transaction():
            lowered = await lower_due_times(conn, self.config, first, end)
        if lowered:
            log.info("%d terminals due sooner for missed heartbeats (heartbeat policy)", lowered)
        self._lowering = None if end > last else (end, last)

    async def _status_alerts(
        self, conn: psycopg.AsyncConnection[Any], now: datetime, result: SweepResult
    ) -> None:
        if self._groups is None:
            async with conn.transaction():
                self._groups = await customer_groups(conn, self.pace.group_terminals)
        if self._groups:
            async with conn.transaction():
                check = await check_customers(conn, self.config, now, self._groups[0])
            if check is not None:  # else another ingest process checks now: next time
                self._groups.pop(0)
                _tally(result, check)
                if not self._groups:
                    log.info("status alerts: every terminal checked since the start")
        window = timedelta(seconds=self.pace.resolved_window_s)
        since = (self._last_ok or now) - window
        async with conn.transaction():
            fresh = await flag_resolved(conn, since, now, set(self._resolved_seen))
        for alert_id in fresh:
            self._resolved_seen[alert_id] = now
        self._resolved_seen = {a: at for a, at in self._resolved_seen.items() if at >= since}
        async with conn.transaction():
            _tally(result, await check_flagged(conn, self.config, now, self.pace.flagged))
