"""The rollout driver (``tms rollouts``): moves every unfinished rollout on, one tick at a
time, by reading its rows, asking ``rollouts.decide`` and writing what it says.

A tick of one rollout is one transaction holding the rollout's row (``FOR UPDATE SKIP
LOCKED``: a second driver skips it, so two never start the same terminal):

1. tasks whose ``firmware`` command ended take its outcome (``rollouts.task_outcome``),
   a failure queued again with its retry time while attempts are left;
2. tasks in flight take the step their terminal's newest progress event reports;
3. a downloaded and verified task (the store's window was closed when it started)
   installs when ``install_gate`` says the window is open, else waits for it;
4. ``decide`` is asked until it has nothing to do now: start N tasks of a wave (one
   ``firmware`` command row each, inserted here: it is a system command nobody types),
   open a wave, halt (an alert and an audit line), complete.

Wakes on ``NOTIFY tms_command_done`` (a result came in), ``tms_rollouts`` (a person
acted), at the time ``decide`` said, and every ``tick_s`` at the latest. The rate
budget of each rollout is kept in memory: after a restart a full bucket is one burst.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from rollouts.decide import (
    Action,
    Decision,
    InstallGate,
    RolloutPolicy,
    RolloutProgress,
    RolloutState,
    WaveProgress,
    decide,
    install_gate,
    needed_successes,
)
from rollouts.errors import RolloutError
from rollouts.health import HealthCounts, HealthSample
from rollouts.manage import NOTIFY_CHANNEL
from rollouts.pace import RateBucket
from rollouts.rollout_json import policy_from_json, window_of
from rollouts.task_outcome import after_command, progress_of
from rollouts.tasks import FINAL, IN_FLIGHT, TaskState
from rollouts.windows import WindowError, parse_window
from shared import audit_trail
from shared.command_catalog import spec_of
from shared.service_loop import serve_listening, wait_notified

log = logging.getLogger(__name__)

APPLICATION_NAME = "tms-rollouts"
DONE_CHANNEL = "tms_command_done"
ACTOR = "system:rollouts"
# A tick acts at most this many times: a rollout of 10 waves opens one and starts its
# first tasks in one tick, and a bug in a rule cannot spin the loop.
MAX_STEPS = 20
# Health is judged over this long at least, so that a terminal that updated a second
# ago is not judged on nothing.
MIN_WATCH = timedelta(minutes=1)
HEALTH_EVERY = timedelta(seconds=10)
WINDOW_RECHECK = timedelta(seconds=60)
# A TC-200 rebooting into new firmware is unplugged from its agent for a moment, and
# its status says so until the next heartbeat: an updated terminal is judged from this
# long after its update finished, so that the reboot is not taken for ill health.
SETTLE = timedelta(seconds=60)

_ORDER = [
    TaskState.QUEUED,
    TaskState.DOWNLOADING,
    TaskState.DOWNLOADED,
    TaskState.VERIFIED,
    TaskState.WAITING_WINDOW,
    TaskState.INSTALLING,
    TaskState.REBOOTING,
]
_IN_FLIGHT = sorted(state.value for state in IN_FLIGHT)
_FINAL = sorted(state.value for state in FINAL)
_COMMAND_FINAL = ["succeeded", "failed", "rejected", "expired", "cancelled"]


@dataclass
class TickResult:
    rollout_id: int
    decision: Decision | None = None
    started: int = 0
    finished: int = 0
    not_before: datetime | None = None  # the rollout waits: look again then at the latest


@dataclass
class Driver:
    """One database connection's worth of rollout ticks; the URL builder for commands."""

    conn: psycopg.Connection[Any]
    download_url: Any  # Callable[[str], str]: version -> the console's image URL
    mirror_url: Any  # Callable[[str], str | None]: sha256 -> a mirror's URL
    buckets: dict[int, RateBucket] = field(default_factory=dict)
    # Health is a scan of the customers' fleet: taken at most every HEALTH_EVERY per
    # rollout, not every tick (error thresholds, which must halt within seconds, are
    # counted every tick).
    health_cache: dict[int, tuple[datetime, HealthSample | None]] = field(default_factory=dict)
    # Tasks waiting for their store's window are looked at when their window opens
    # (retry_at), and all of them only every WINDOW_RECHECK (a store's window edited):
    # looking at each of 10,000 waiting tasks every tick took 73% of a core.
    windows_checked: dict[int, datetime] = field(default_factory=dict)
    now: Any = None  # Callable[[], datetime], for tests

    def clock(self) -> datetime:
        return self.now() if self.now is not None else datetime.now(UTC)

    def active_ids(self) -> list[int]:
        rows = self.conn.execute(
            "SELECT r.id FROM rollout AS r WHERE r.state IN ('running', 'paused', 'halted')"
            " OR (r.state = 'cancelled' AND EXISTS (SELECT 1 FROM update_task AS u"
            " WHERE u.rollout_id = r.id AND u.state = ANY(%s)))"
            " ORDER BY r.id",
            (_IN_FLIGHT,),
        ).fetchall()
        self.conn.commit()
        return [row[0] for row in rows]

    def tick(self, rollout_id: int) -> TickResult:
        result = TickResult(rollout_id)
        with self.conn.transaction():
            row = self.conn.execute(
                "SELECT r.state, r.policy, f.version, f.models, f.size, f.sha256, f.signature"
                " FROM rollout AS r JOIN firmware AS f ON f.id = r.firmware_id"
                " WHERE r.id = %s FOR NO KEY UPDATE OF r SKIP LOCKED",
                (rollout_id,),
            ).fetchone()
            if row is None:
                return result
            state = RolloutState(row[0])
            policy_json = row[1]
            try:
                policy = policy_from_json(policy_json)
            except RolloutError as exc:
                self._halt(rollout_id, f"its stored policy no longer reads: {exc}")
                return result
            image = _Image(row[2], list(row[3] or []), row[4], row[5], row[6])
            now = self.clock()
            result.finished = self._take_results(rollout_id, state, policy, now)
            self._take_progress(rollout_id)
            self._skip_gone(rollout_id, now)
            self._gate_installs(rollout_id, state, policy, window_of(policy_json), image, now)
            fresh_health = False
            for _ in range(MAX_STEPS):
                progress = self._progress(rollout_id, state, policy, now)
                decision = decide(progress, policy, now)
                result.decision = decision
                if (
                    decision.action is Action.START_WAVE
                    and policy.health_margin_points is not None
                    and not fresh_health
                ):
                    # A wave opens on a health sample of now, not the cached one: a
                    # terminal that went into error since must halt it first.
                    self.health_cache.pop(rollout_id, None)
                    fresh_health = True
                    continue
                if decision.action is Action.START_TASKS:
                    result.started += self._start(
                        rollout_id, decision, policy, window_of(policy_json), image, now
                    )
                    continue
                if decision.action is Action.START_WAVE:
                    self.conn.execute(
                        "UPDATE rollout_wave SET started_at = %s"
                        " WHERE rollout_id = %s AND number = %s AND started_at IS NULL",
                        (now, rollout_id, decision.wave),
                    )
                    self._event(rollout_id, "rollout.wave", {"wave": decision.wave})
                    log.info("rollout %d: %s", rollout_id, decision.reason)
                    continue
                if decision.action is Action.HALT:
                    self._halt(rollout_id, decision.reason)
                elif decision.action is Action.COMPLETE:
                    self.conn.execute(
                        "UPDATE rollout SET state = 'completed', finished_at = %s,"
                        " updated_at = %s, note = %s WHERE id = %s",
                        (now, now, decision.reason, rollout_id),
                    )
                    self._event(rollout_id, "rollout.complete", {"reason": decision.reason})
                    log.info("rollout %d completed: %s", rollout_id, decision.reason)
                else:
                    self.conn.execute(
                        "UPDATE rollout SET note = %s WHERE id = %s AND note IS DISTINCT FROM %s",
                        (decision.reason, rollout_id, decision.reason),
                    )
                    result.not_before = decision.not_before
                break
        return result

    # -- 1. results ---------------------------------------------------------------

    def _take_results(
        self, rollout_id: int, state: RolloutState, policy: RolloutPolicy, now: datetime
    ) -> int:
        rows = self.conn.execute(
            "SELECT u.id, u.attempts, c.status, c.result, c.error, c.finished_at"
            " FROM update_task AS u JOIN command AS c ON c.id = u.command_id"
            " WHERE u.rollout_id = %s AND u.state = ANY(%s) AND c.status = ANY(%s)",
            (rollout_id, _IN_FLIGHT, _COMMAND_FINAL),
        ).fetchall()
        for task_id, attempts, status, report, error, finished_at in rows:
            update = after_command(
                status,
                report,
                error,
                attempt=max(1, attempts),
                at=finished_at or now,
                retry=policy.retry,
            )
            if update.retried and state is RolloutState.CANCELLED:
                # An install a cancel let run failed: it is not tried again, and its
                # terminal is free for the next rollout.
                update = replace(
                    update,
                    state=TaskState.CANCELLED,
                    retry_at=None,
                    reason=f"{update.reason}; not retried: the rollout was cancelled"[:2000],
                )
            final = update.state in FINAL
            self.conn.execute(
                "UPDATE update_task SET state = %s, retry_at = %s, version_after ="
                " COALESCE(%s, version_after), failure = %s, reason = %s, percent = NULL,"
                " updated_at = %s, finished_at = %s,"
                " command_id = CASE WHEN %s THEN NULL ELSE command_id END"
                " WHERE id = %s",
                (
                    update.state.value,
                    update.retry_at,
                    update.version_after,
                    update.failure,
                    update.reason,
                    now,
                    (finished_at or now) if final else None,
                    # Queued again, or downloaded (the window was closed): no command
                    # is in flight for it now.
                    update.retried or update.state is TaskState.VERIFIED,
                    task_id,
                ),
            )
        return len(rows)

    def _skip_gone(self, rollout_id: int, now: datetime) -> None:
        """Queued tasks of terminals decommissioned since the rollout began: skipped (a
        firmware command to them would be refused, as every command is)."""
        self.conn.execute(
            "UPDATE update_task AS u SET state = 'skipped', updated_at = %s, finished_at = %s,"
            " reason = 'the terminal was decommissioned' FROM terminal AS t"
            " WHERE u.rollout_id = %s AND u.state = 'queued' AND t.id = u.terminal_id"
            " AND t.decommissioned_at IS NOT NULL",
            (now, now, rollout_id),
        )

    # -- 2. progress --------------------------------------------------------------

    def _take_progress(self, rollout_id: int) -> None:
        rows = self.conn.execute(
            "SELECT DISTINCT ON (u.id) u.id, u.state, l.code, l.message"
            " FROM update_task AS u JOIN terminal_log AS l"
            # From the task's last send on: 5 s earlier for a device clock running behind,
            # but not for a retry, where they could be its failed attempt's.
            " ON l.terminal_id = u.terminal_id AND l.kind = 'event' AND l.at >= u.updated_at"
            " - CASE WHEN u.attempts > 1 THEN interval '0 s' ELSE interval '5 s' END"
            " AND l.data->>'kind' = 'update.progress'"
            " WHERE u.rollout_id = %s AND u.command_id IS NOT NULL AND u.state = ANY(%s)"
            " AND u.state <> 'waiting_window'"
            " ORDER BY u.id, l.at DESC, l.id DESC",
            (rollout_id, _IN_FLIGHT),
        ).fetchall()
        for task_id, current, code, message in rows:
            seen = progress_of(code, message)
            if seen is None:
                continue
            step, percent = seen
            if step not in _ORDER or _ORDER.index(step) < _ORDER.index(TaskState(current)):
                continue  # an older event, or a step the task is past already
            self.conn.execute(
                "UPDATE update_task SET state = %s, percent = %s WHERE id = %s"
                " AND (state <> %s OR percent IS DISTINCT FROM %s)",
                (step.value, percent, task_id, step.value, percent),
            )

    # -- 3. windows ---------------------------------------------------------------

    def _gate_installs(
        self,
        rollout_id: int,
        state: RolloutState,
        policy: RolloutPolicy,
        default_window: str | None,
        image: _Image,
        now: datetime,
    ) -> None:
        last = self.windows_checked.get(rollout_id)
        every = last is None or now - last >= WINDOW_RECHECK or now < last
        if every:
            self.windows_checked[rollout_id] = now
        rows = self.conn.execute(
            "SELECT u.id, u.terminal_id, u.state, COALESCE(s.timezone, 'UTC'),"
            " s.maintenance_window FROM update_task AS u JOIN terminal AS t"
            " ON t.id = u.terminal_id LEFT JOIN store AS s ON s.id = t.store_id"
            " WHERE u.rollout_id = %s AND ((u.state = 'waiting_window'"
            " AND (%s OR u.retry_at IS NULL OR u.retry_at <= %s))"
            " OR (u.state = 'verified' AND u.command_id IS NULL))",
            (rollout_id, every, now),
        ).fetchall()
        install: list[tuple[int, int]] = []
        for task_id, terminal_id, task_state, zone, window_text in rows:
            gate = install_gate(state, now, zone, _window(window_text, default_window), policy)
            if gate.gate is InstallGate.INSTALL:
                install.append((task_id, terminal_id))
            elif task_state == TaskState.VERIFIED and gate.gate is InstallGate.WAIT_WINDOW:
                self.conn.execute(
                    "UPDATE update_task SET state = 'waiting_window', retry_at = %s,"
                    " reason = %s, updated_at = %s WHERE id = %s",
                    (
                        gate.not_before,
                        f"downloaded; installs when the store's window opens "
                        f"({gate.not_before:%Y-%m-%d %H:%M} UTC)",
                        now,
                        task_id,
                    ),
                )
        if install:
            self._send(install, image, now, download_only=False, state=TaskState.INSTALLING)

    # -- 4. acting on decide --------------------------------------------------------

    def _start(
        self,
        rollout_id: int,
        decision: Decision,
        policy: RolloutPolicy,
        default_window: str | None,
        image: _Image,
        now: datetime,
    ) -> int:
        rows = self.conn.execute(
            "SELECT u.id, u.terminal_id, COALESCE(s.timezone, 'UTC'), s.maintenance_window"
            " FROM update_task AS u JOIN terminal AS t ON t.id = u.terminal_id"
            " LEFT JOIN store AS s ON s.id = t.store_id"
            " WHERE u.rollout_id = %s AND u.wave = %s AND u.state = 'queued'"
            " AND (u.retry_at IS NULL OR u.retry_at <= %s)"
            " ORDER BY u.retry_at NULLS FIRST, u.id LIMIT %s",
            (rollout_id, decision.wave, now, decision.count),
        ).fetchall()
        full: list[tuple[int, int]] = []
        download_only: list[tuple[int, int]] = []
        for task_id, terminal_id, zone, window_text in rows:
            gate = install_gate(
                RolloutState.RUNNING, now, zone, _window(window_text, default_window), policy
            )
            (full if gate.gate is InstallGate.INSTALL else download_only).append(
                (task_id, terminal_id)
            )
        self._send(full, image, now, download_only=False, state=TaskState.DOWNLOADING, first=True)
        self._send(
            download_only, image, now, download_only=True, state=TaskState.DOWNLOADING, first=True
        )
        if policy.rate is not None and rows:
            bucket = self.buckets.get(rollout_id) or RateBucket.full(policy.rate, now)
            bucket = bucket.refilled(policy.rate, now)
            self.buckets[rollout_id] = bucket.take(min(len(rows), bucket.available))
        return len(rows)

    def _send(
        self,
        tasks: list[tuple[int, int]],
        image: _Image,
        now: datetime,
        *,
        download_only: bool,
        state: TaskState,
        first: bool = False,
    ) -> None:
        """One ``firmware`` command row per task, queued for the sender."""
        if not tasks:
            return
        spec = spec_of("firmware")
        args = json.dumps(
            {
                "version": image.version,
                "models": image.models,
                "size": image.size,
                "sha256": image.sha256,
                "signature": image.signature,
                "url": self.download_url(image.version),
                "mirror_url": self.mirror_url(image.sha256),
                "download_only": download_only,
            }
        )
        ids = [uuid.uuid4().hex for _ in tasks]  # as commands.queue names commands
        self.conn.execute(
            "INSERT INTO command (id, terminal_id, name, args, status, requested_by,"
            " requester_kind, origin, max_attempts, timeout_s, due_at, expires_at)"
            " SELECT v.id, v.terminal_id, 'firmware', %s::jsonb, 'queued', %s, 'system',"
            " 'rollouts', %s, %s, %s, %s"
            " FROM unnest(%s::text[], %s::int[]) AS v(id, terminal_id)",
            (
                args,
                ACTOR,
                spec.max_attempts,
                spec.timeout_s,
                now,
                now + timedelta(seconds=spec.expires_in_s),
                ids,
                [terminal for _, terminal in tasks],
            ),
        )
        self.conn.execute(
            "UPDATE update_task AS u SET state = %s, command_id = v.command_id,"
            " download_only = %s, retry_at = NULL, percent = NULL, updated_at = %s,"
            " attempts = u.attempts + %s, started_at = COALESCE(u.started_at, %s)"
            " FROM unnest(%s::int[], %s::text[]) AS v(id, command_id) WHERE u.id = v.id",
            (
                state.value,
                download_only,
                now,
                1 if first else 0,
                now,
                [task for task, _ in tasks],
                ids,
            ),
        )

    def _progress(
        self, rollout_id: int, state: RolloutState, policy: RolloutPolicy, now: datetime
    ) -> RolloutProgress:
        counts: dict[int, dict[TaskState, int]] = defaultdict(dict)
        ready: dict[int, int] = defaultdict(int)
        for wave, task_state, n, n_ready in self.conn.execute(
            "SELECT wave, state, count(*), count(*) FILTER (WHERE state = 'queued'"
            " AND (retry_at IS NULL OR retry_at <= %s)) FROM update_task"
            " WHERE rollout_id = %s GROUP BY wave, state",
            (now, rollout_id),
        ):
            counts[wave][TaskState(task_state)] = n
            ready[wave] += n_ready
        waves: list[WaveProgress] = []
        for number, started_at, approved_at in self.conn.execute(
            "SELECT number, started_at, approved_at FROM rollout_wave"
            " WHERE rollout_id = %s ORDER BY number",
            (rollout_id,),
        ).fetchall():
            wave_counts = counts.get(number, {})
            threshold_met_at = None
            if started_at is not None:
                counted = (
                    sum(wave_counts.values())
                    - wave_counts.get(TaskState.SKIPPED, 0)
                    - wave_counts.get(TaskState.CANCELLED, 0)
                )
                needed = needed_successes(counted, policy)
                if 0 < needed <= wave_counts.get(TaskState.SUCCEEDED, 0):
                    met = self.conn.execute(
                        "SELECT finished_at FROM update_task WHERE rollout_id = %s"
                        " AND wave = %s AND state = 'succeeded'"
                        " ORDER BY finished_at, id OFFSET %s LIMIT 1",
                        (rollout_id, number, needed - 1),
                    ).fetchone()
                    threshold_met_at = met[0] if met else now
                    if policy.health_margin_points is not None:
                        # The watch judges terminals from SETTLE after their update on.
                        threshold_met_at += SETTLE
            waves.append(
                WaveProgress(
                    counts=wave_counts,
                    ready=ready.get(number, 0),
                    started=started_at is not None,
                    approved=approved_at is not None,
                    threshold_met_at=threshold_met_at,
                )
            )
        return RolloutProgress(
            state=state,
            waves=tuple(waves),
            health=self._cached_health(rollout_id, policy, now),
            bucket=self.buckets.get(rollout_id),
        )

    def _cached_health(
        self, rollout_id: int, policy: RolloutPolicy, now: datetime
    ) -> HealthSample | None:
        taken = self.health_cache.get(rollout_id)
        if taken is not None and timedelta(0) <= now - taken[0] < HEALTH_EVERY:
            return taken[1]
        sample = self._health(rollout_id, policy, now)
        self.health_cache[rollout_id] = (now, sample)
        return sample

    def _health(self, rollout_id: int, policy: RolloutPolicy, now: datetime) -> HealthSample | None:
        """The terminals updated at least SETTLE ago, since then, against the customers'
        terminals this rollout has not touched, over as long: in error, or offline."""
        if policy.health_margin_points is None:
            return None
        settled = now - SETTLE
        row = self.conn.execute(
            "SELECT min(finished_at) FROM update_task WHERE rollout_id = %s"
            " AND state = 'succeeded' AND finished_at <= %s",
            (rollout_id, settled),
        ).fetchone()
        first = row[0] if row and row[0] is not None else None
        if first is None:
            return HealthSample(HealthCounts(0, 0, 0), HealthCounts(0, 0, 0))
        since = min(first + SETTLE, now - max(policy.watch_period, MIN_WATCH))
        updated = self.conn.execute(
            _HEALTH_UPDATED, {"rollout": rollout_id, "settled": settled, "settle": SETTLE}
        ).fetchone()
        rest = self.conn.execute(_HEALTH_REST, {"rollout": rollout_id, "since": since}).fetchone()
        assert updated is not None and rest is not None
        return HealthSample(HealthCounts(*updated), HealthCounts(*rest))

    def _halt(self, rollout_id: int, reason: str) -> None:
        row = self.conn.execute(
            "UPDATE rollout SET state = 'halted', halt_reason = %s, note = %s,"
            " updated_at = now() WHERE id = %s AND state IN ('running', 'paused')"
            " RETURNING name",
            (reason[:2000], reason[:2000], rollout_id),
        ).fetchone()
        if row is None:
            return
        log.warning("rollout %d halted: %s", rollout_id, reason)
        self._event(rollout_id, "rollout.halt", {"reason": reason})
        self.conn.execute(
            _RAISE_HALT_ALERT,
            {
                "scope": f"rollout:{rollout_id}",
                "message": f"rollout {rollout_id} ({row[0]}) halted: {reason}"[:2000],
            },
        )

    def _event(self, rollout_id: int, action: str, detail: dict[str, Any]) -> None:
        audit_trail.record_on_connection(self.conn, ACTOR, action, f"rollout:{rollout_id}", detail)


@dataclass(frozen=True)
class _Image:
    version: str
    models: list[str]
    size: int
    sha256: str
    signature: str


def _window(store_window: str | None, default_window: str | None) -> Any:
    """The store's own window, else the rollout's; an unreadable one is "any time" no
    more: it falls back to the rollout's, and with none to any time."""
    for text in (store_window, default_window):
        if text:
            try:
                return parse_window(text)
            except WindowError:
                continue
    return None


# Terminals the rollout updated: in error or offline now, or at some point since their
# update finished.
# Terminals the rollout updated at least SETTLE ago: in error or offline now, or at some
# point since SETTLE after their update finished (the reboot itself is not held against
# them). "In error now" needs a heartbeat since then: a status from before it is the
# reboot's, and a busy store PC's agent may take a while to say it is over.
_HEALTH_UPDATED = """
SELECT count(*),
    count(*) FILTER (WHERE (t.status = 'error'
            AND t.last_heartbeat_at >= u.finished_at + %(settle)s)
        OR EXISTS (SELECT 1 FROM status_change AS c
        WHERE c.terminal_id = t.id AND c.at >= u.finished_at + %(settle)s
        AND c.new_status = 'error')),
    count(*) FILTER (WHERE t.status = 'offline' OR EXISTS (SELECT 1 FROM status_change AS c
        WHERE c.terminal_id = t.id AND c.at >= u.finished_at + %(settle)s
        AND c.new_status = 'offline'))
FROM update_task AS u JOIN terminal AS t ON t.id = u.terminal_id
WHERE u.rollout_id = %(rollout)s AND u.state = 'succeeded' AND u.finished_at <= %(settled)s
"""
# The customers' terminals this rollout has not started (nor failed, nor rolled back:
# those rebooted too), over the same period.
_HEALTH_REST = """
WITH customers AS (
    SELECT DISTINCT t.customer_id FROM update_task AS u JOIN terminal AS t ON t.id = u.terminal_id
    WHERE u.rollout_id = %(rollout)s
)
SELECT count(*),
    count(*) FILTER (WHERE t.status = 'error' OR EXISTS (SELECT 1 FROM status_change AS c
        WHERE c.terminal_id = t.id AND c.at >= %(since)s AND c.new_status = 'error')),
    count(*) FILTER (WHERE t.status = 'offline' OR EXISTS (SELECT 1 FROM status_change AS c
        WHERE c.terminal_id = t.id AND c.at >= %(since)s AND c.new_status = 'offline'))
FROM terminal AS t
WHERE t.customer_id IN (SELECT customer_id FROM customers) AND t.decommissioned_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM update_task AS u WHERE u.rollout_id = %(rollout)s
      AND u.terminal_id = t.id AND u.state NOT IN ('queued', 'skipped', 'cancelled'))
"""
_RAISE_HALT_ALERT = """
INSERT INTO alert (scope, kind, severity, status, message, count)
VALUES (%(scope)s, 'rollout_halted', 'critical', 'open', %(message)s, 1)
ON CONFLICT (scope, kind) WHERE status <> 'resolved'
DO UPDATE SET count = alert.count + 1, last_seen_at = now(), message = EXCLUDED.message
"""


def serve(
    database_url: str,
    driver_of: Any,  # Callable[[psycopg.Connection], Driver]
    stop: threading.Event,
    *,
    tick_s: float = 1.0,
) -> None:
    """Tick every unfinished rollout until ``stop``; PostgreSQL outages are retried."""

    def work(conn: psycopg.Connection[Any], listener: psycopg.Connection[Any]) -> None:
        driver = driver_of(conn)
        while not stop.is_set():
            wake = time.monotonic() + tick_s
            for rollout_id in driver.active_ids():
                try:
                    result = driver.tick(rollout_id)
                except psycopg.OperationalError:
                    raise
                except psycopg.Error:
                    # A row this code cannot write (a bug, or a value no check
                    # foresaw) stops this rollout's tick, not every rollout's.
                    log.exception("rollout %d: tick failed; retrying", rollout_id)
                    continue
                if result.started:
                    log.info("rollout %d: started %d", rollout_id, result.started)
                if result.not_before is not None:
                    # A rate token or the end of a watch, sooner than the next tick.
                    due_s = (result.not_before - driver.clock()).total_seconds()
                    wake = min(wake, time.monotonic() + max(0.0, due_s))
            # A result or a person's action is acted on at once.
            wait_notified(listener, stop, wake)

    serve_listening(
        database_url,
        stop,
        work,
        application_name=APPLICATION_NAME,
        channels=(NOTIFY_CHANNEL, DONE_CHANNEL),
        log=log,
        resumed="driving rollouts again",
    )
