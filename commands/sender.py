"""The sender: publishes queued commands, resends the ones whose result is late, and
ends the ones that ran out of time or attempts.

One cycle (``SendCycle.run_once``) is one transaction per step against PostgreSQL:

1. queued commands past their expiry become ``expired``;
2. sent commands whose result is overdue and whose sends are spent (or that expired
   meanwhile) become ``failed`` with the reason;
3. due commands of reachable terminals are claimed ``FOR UPDATE SKIP LOCKED``,
   published at QoS 1, and recorded ``sent`` in the same transaction once the broker
   has acknowledged them. Another sender skips the locked rows, so no command is
   sent by two; a crash between the PUBACK and the commit leaves the row queued and
   it is sent again, which the agent answers once (it runs a command id once).

The loop around it (``serve``) sleeps until the next row falls due, a NOTIFY on
``tms_commands`` (a new row, a terminal back online) or ``idle_check_s``, and rides out
a broker or PostgreSQL outage by retrying.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import psycopg
from pydantic import ValidationError

from shared import topics
from shared.command_states import ResendPolicy
from shared.errors import TopicError
from shared.messages import Command, utcnow
from shared.service_loop import serve_listening, wait_notified

log = logging.getLogger(__name__)

# Named in pg_stat_activity, so an operator (or a test) can tell its sessions apart.
APPLICATION_NAME = "tms-commands"
WAKE_CHANNEL = "tms_commands"
DONE_CHANNEL = "tms_command_done"
# A terminal that is connected: offline and never-seen ones keep their commands queued.
REACHABLE = ("online", "error")

# The two ends the sender decides, written to the terminal's log as ingest writes a
# result's end, and told to the relay (NOTIFY at commit).
_LOG_END = """
, logged AS (
    INSERT INTO terminal_log (terminal_id, at, kind, severity, code, message, source_id, data)
    SELECT terminal_id, finished_at, 'command', '{severity}', name,
        left(name || ' {state}: ' || error, 2000), id,
        jsonb_build_object('status', '{state}', 'command', name, 'applied', true)
    FROM moved
    ON CONFLICT DO NOTHING
)
SELECT id, pg_notify('tms_command_done', id) FROM moved
"""

# Both claim their rows in id order and skip those locked: ingest locks the commands
# whose results it writes in id order too, so the two can wait for each other but never
# deadlock, and a row ingest holds is finished by its result or looked at next cycle.
SQL_EXPIRE = """
WITH due AS (
    SELECT id FROM command WHERE status = 'queued' AND expires_at <= now()
    ORDER BY id FOR NO KEY UPDATE SKIP LOCKED
), moved AS (
    UPDATE command AS c SET status = 'expired', finished_at = now(),
        error = 'not delivered before it expired at '
            || to_char(c.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC'
    FROM due WHERE c.id = due.id
    RETURNING c.id, c.terminal_id, c.name, c.error, c.finished_at
)""" + _LOG_END.format(severity="warning", state="expired")

SQL_GIVE_UP = """
WITH due AS (
    SELECT id FROM command WHERE status = 'sent' AND due_at <= now()
        AND (attempts >= max_attempts OR expires_at <= now())
    ORDER BY id FOR NO KEY UPDATE SKIP LOCKED
), moved AS (
    UPDATE command AS c SET status = 'failed', finished_at = now(),
        error = CASE WHEN c.expires_at <= now()
            THEN 'no result before it expired at '
                || to_char(c.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC'
            ELSE 'no result after ' || c.attempts || ' attempt(s)' END
    FROM due WHERE c.id = due.id
    RETURNING c.id, c.terminal_id, c.name, c.error, c.finished_at
)""" + _LOG_END.format(severity="error", state="failed")

SQL_CLAIM = """
SELECT c.id, t.serial, c.name, c.args, c.expires_at, c.attempts, c.timeout_s
FROM command c JOIN terminal t ON t.id = c.terminal_id
WHERE c.status IN ('queued', 'sent') AND c.due_at <= now() AND c.expires_at > now()
    AND c.attempts < c.max_attempts AND t.status = ANY(%s)
ORDER BY c.due_at
LIMIT %s
FOR NO KEY UPDATE OF c SKIP LOCKED
"""

SQL_RECORD_SENT = """
UPDATE command AS c SET status = 'sent', attempts = c.attempts + 1,
    sent_at = coalesce(c.sent_at, %(at)s), last_sent_at = %(at)s,
    due_at = %(at)s + make_interval(secs => v.wait_s)
FROM unnest(%(ids)s::text[], %(waits)s::float8[]) AS v(id, wait_s)
WHERE c.id = v.id AND c.status IN ('queued', 'sent')
"""

# When to look again: the next due row of a reachable terminal (or one whose sends are
# spent), else the next expiry. Rows of offline terminals wait for their NOTIFY.
SQL_NEXT = """
SELECT extract(epoch FROM min(CASE
    WHEN t.status = ANY(%s) OR c.attempts >= c.max_attempts
        THEN least(c.due_at, c.expires_at)
    ELSE c.expires_at END) - now())
FROM command c JOIN terminal t ON t.id = c.terminal_id
WHERE c.status IN ('queued', 'sent')
"""


SQL_UNSENDABLE = """
UPDATE command AS c SET status = 'failed', finished_at = now(), error = v.why
FROM unnest(%s::text[], %s::text[]) AS v(id, why)
WHERE c.id = v.id AND c.status IN ('queued', 'sent')
RETURNING c.id, pg_notify('tms_command_done', c.id)
"""


class Publisher(Protocol):
    def connected(self) -> bool: ...

    def publish_all(self, messages: Sequence[tuple[str, bytes]], timeout_s: float) -> list[bool]:
        """Publish at QoS 1; True for each message the broker acknowledged in time."""
        ...


@dataclass(frozen=True, slots=True)
class Claimed:
    id: str
    serial: str
    name: str
    args: dict[str, Any]
    expires_at: datetime
    attempts: int
    timeout_s: float

    def message(self) -> tuple[str, bytes]:
        topic = topics.command(self.serial, self.id)  # its error names the bad part
        command = Command(id=self.id, name=self.name, args=self.args, expires_at=self.expires_at)
        return topic, command.to_payload()

    def wait_s(self) -> float:
        """How long to wait for the result of the send about to be recorded."""
        policy = ResendPolicy(first_timeout_s=self.timeout_s)
        return policy.timeout_after(self.attempts + 1).total_seconds()


def _messages_of(
    claimed: list[Claimed],
) -> tuple[list[Claimed], list[tuple[str, bytes]], list[tuple[str, str]]]:
    """The rows that make a message and their messages, and (id, why) for the others."""
    good: list[Claimed] = []
    messages: list[tuple[str, bytes]] = []
    bad: list[tuple[str, str]] = []
    for command in claimed:
        try:
            messages.append(command.message())
        except (TopicError, ValidationError) as exc:
            bad.append((command.id, f"cannot be sent: {str(exc).splitlines()[0]}"[:2000]))
            continue
        good.append(command)
    return good, messages, bad


@dataclass
class CycleResult:
    expired: int = 0
    failed: int = 0
    sent: int = 0
    unacknowledged: int = 0
    more: bool = False  # a full batch: more rows may be due now
    finished: list[str] | None = None  # ids this cycle moved to a final state


class SendCycle:
    """One pass over the queue on an open connection (autocommit off)."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        publisher: Publisher,
        *,
        batch_size: int = 500,
        publish_timeout_s: float = 10.0,
    ) -> None:
        self.conn = conn
        self.publisher = publisher
        self.batch_size = batch_size
        self.publish_timeout_s = publish_timeout_s

    def run_once(self) -> CycleResult:
        result = CycleResult(finished=[])
        assert result.finished is not None
        with self.conn.transaction():
            expired = [row[0] for row in self.conn.execute(SQL_EXPIRE).fetchall()]
        with self.conn.transaction():
            failed = [row[0] for row in self.conn.execute(SQL_GIVE_UP).fetchall()]
        result.expired, result.failed = len(expired), len(failed)
        result.finished += expired + failed
        if expired or failed:
            log.info("%d command(s) expired, %d failed without a result", len(expired), len(failed))
        if not self.publisher.connected():
            return result
        with self.conn.transaction():
            rows = self.conn.execute(SQL_CLAIM, (list(REACHABLE), self.batch_size)).fetchall()
            claimed = [Claimed(r[0], r[1], r[2], r[3] or {}, r[4], r[5], r[6]) for r in rows]
            if not claimed:
                return result
            claimed, messages, unsendable = _messages_of(claimed)
            if unsendable:
                # A row no message can be made of (written around the queue's checks)
                # fails with the reason instead of stopping the sender at every claim.
                finished = self.conn.execute(
                    SQL_UNSENDABLE, ([i for i, _ in unsendable], [w for _, w in unsendable])
                ).fetchall()
                result.failed += len(finished)
                result.finished += [row[0] for row in finished]
                log.error("%d command(s) could not be sent: %s", len(unsendable), unsendable[:3])
            # The send's time is when it left, not when the transaction began: the round
            # trip an operator reads starts here.
            sent_at = utcnow()
            acked = self.publisher.publish_all(messages, self.publish_timeout_s)
            sent = [c for c, ok in zip(claimed, acked, strict=True) if ok]
            if sent:
                self.conn.execute(
                    SQL_RECORD_SENT,
                    {
                        "at": sent_at,
                        "ids": [c.id for c in sent],
                        "waits": [c.wait_s() for c in sent],
                    },
                )
        result.sent = len(sent)
        result.unacknowledged = len(claimed) - len(sent)
        result.more = len(rows) >= self.batch_size and not result.unacknowledged
        if result.unacknowledged:
            log.warning(
                "the broker acknowledged %d of %d commands; the rest stay queued",
                len(sent),
                len(claimed),
            )
        return result

    def next_wake_s(self, cap_s: float) -> float:
        row = self.conn.execute(SQL_NEXT, (list(REACHABLE),)).fetchone()
        self.conn.rollback()  # end the read's transaction: no snapshot held while idle
        if row is None or row[0] is None:
            return cap_s
        return min(cap_s, max(0.0, float(row[0])))


def serve(
    database_url: str,
    publisher: Publisher,
    stop: threading.Event,
    *,
    batch_size: int = 500,
    publish_timeout_s: float = 10.0,
    idle_check_s: float = 5.0,
    on_finished: Callable[[list[str]], None] | None = None,
) -> None:
    """Run cycles until ``stop`` is set; PostgreSQL outages are retried with backoff."""

    def work(conn: psycopg.Connection[Any], listener: psycopg.Connection[Any]) -> None:
        cycle = SendCycle(
            conn, publisher, batch_size=batch_size, publish_timeout_s=publish_timeout_s
        )
        _loop(cycle, listener, stop, idle_check_s, on_finished)

    serve_listening(
        database_url,
        stop,
        work,
        application_name=APPLICATION_NAME,
        channels=(WAKE_CHANNEL, DONE_CHANNEL),
        log=log,
        resumed="sending again",
    )


def _loop(
    cycle: SendCycle,
    listener: psycopg.Connection[Any],
    stop: threading.Event,
    idle_check_s: float,
    on_finished: Callable[[list[str]], None] | None,
) -> None:
    def wakes(notify: psycopg.Notify) -> bool:
        """A new row or a terminal back wakes the sender; a result only is passed on."""
        if notify.channel != DONE_CHANNEL:
            return True
        if on_finished is not None:
            on_finished([notify.payload])
        return False

    while not stop.is_set():
        result = cycle.run_once()
        if on_finished is not None and result.finished:
            on_finished(result.finished)
        if result.sent or result.unacknowledged:
            log.debug("sent %d command(s)", result.sent)
        if result.more:
            continue
        # With the broker away, look again soon rather than at the next due row.
        cap = idle_check_s if cycle.publisher.connected() else min(idle_check_s, 1.0)
        wait = cycle.next_wake_s(cap)
        if result.unacknowledged:
            wait = max(wait, 1.0)  # the broker is struggling: do not hammer it
        wait_notified(listener, stop, time.monotonic() + wait, wakes)
