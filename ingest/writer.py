"""Write batches into PostgreSQL: ingest's hot path, one transaction per batch.

History goes in with one binary COPY; if some message of the batch is already stored
(telemetry is unique on ``(message_id, ts)``: the table is partitioned by month on ts,
and a redelivery carries the same ts), the batch goes through a staging table and
``INSERT ... ON CONFLICT DO NOTHING`` instead, so a redelivered message is never written
twice. Each terminal's latest state is one ``UPDATE`` per batch; the columns of both are
listed once, in ``ingest.telemetry_columns``. Command results move their command rows
(the rules of ``shared.command_states``) and, with device events, become rows of the
terminal's log; message numbers go to ``ingest.sequence_store``. The daemon hands each
write its alert step (a ``CommitStep``, run inside the transaction) and a back-pressure
callback (``on_locking``); the writer knows nothing else of either. Library errors are
translated at this edge: transient ones become ``DatabaseUnavailableError`` (retry the
batch), data the server refuses becomes ``BatchRefusedError`` (write the batch again
message by message, see ``write_isolated``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

import psycopg
from psycopg_pool import AsyncConnectionPool

from ingest.batch import Batch, StatusSignal, split
from ingest.columns import as_columns
from ingest.decode import (
    DETAIL_MAX,
    REASON_STORE_ERROR,
    REASON_UNKNOWN_COMMAND,
    REASON_UNKNOWN_TERMINAL,
    TOPIC_MAX,
    CommandResultRecord,
    EventRecord,
    Rejection,
    TelemetryRecord,
    safe_text,
)
from ingest.errors import BatchRefusedError, DatabaseUnavailableError
from ingest.sequence import StreamMark
from ingest.sequence_store import SequenceOutcome, arrivals_by_terminal, record_sequences
from ingest.status import StatusTransition, TerminalState, status_transitions
from ingest.telemetry_columns import (
    HISTORY,
    LATEST,
    column_list,
    copy_types,
    history_rows,
    latest_rows,
    set_list,
    staging_columns,
)
from shared.command_states import FINAL, CommandState, state_after_result
from shared.db import libpq_url
from shared.messages import CommandStatus

log = logging.getLogger(__name__)

# Both join an unnest instead of filtering with ``= ANY(array)``: on a small table the
# planner chose a sequential scan that compares every row with every array element
# (500 ids against 1,000 terminals: 15-24 ms, against 4 ms for the join's index probes),
# which would grow with the fleet times the batch.
SQL_TERMINAL_IDS = """
SELECT t.serial, t.id, t.customer_id FROM unnest(%s::text[]) AS s(serial)
JOIN terminal AS t ON t.serial = s.serial
"""

# Every terminal the batch signals or numbers, in one statement in id order: two
# workers then never hold one of each other's rows while waiting for another. NO KEY
# UPDATE, because nothing here changes a key: a plain FOR UPDATE would also conflict
# with the share lock every insert referencing a terminal takes (a rollout being
# created, a command queued), which deadlocked a rollout's create against a batch.
SQL_LOCK_TERMINALS = """
SELECT t.id, t.status, t.last_heartbeat_at, t.seq_stream, t.seq_high
FROM unnest(%b::int[]) AS v(id)
JOIN terminal AS t ON t.id = v.id ORDER BY t.id FOR NO KEY UPDATE OF t
"""

# History goes straight into the partitioned table with a binary COPY, inside a
# savepoint. Only when a message is already there (a redelivery after a crash) does
# the COPY fail, and then the batch goes through a staging table and
# ``INSERT ... ON CONFLICT DO NOTHING``, which costs twice as much per row.
HISTORY_COLUMNS = column_list(HISTORY)
HISTORY_TYPES = copy_types(HISTORY)
SQL_COPY_HISTORY = f"COPY telemetry ({HISTORY_COLUMNS}) FROM STDIN (FORMAT BINARY)"

# The staging tables live as long as the pooled connection (created by its configure
# hook). The latest-state one is emptied by every commit (ON COMMIT DELETE ROWS); the
# history one, used only after a refused COPY, empties itself, so that the commits
# of the fast path do not truncate it every time.
SQL_CREATE_STAGING = f"CREATE TEMP TABLE ingest_telemetry_staging ({staging_columns(HISTORY)})"
SQL_COPY_STAGING = f"COPY ingest_telemetry_staging ({HISTORY_COLUMNS}) FROM STDIN (FORMAT BINARY)"
SQL_EMPTY_STAGING = "DELETE FROM ingest_telemetry_staging"
SQL_INSERT_HISTORY = f"""
INSERT INTO telemetry ({HISTORY_COLUMNS})
SELECT {HISTORY_COLUMNS} FROM ingest_telemetry_staging
ON CONFLICT (message_id, ts) DO NOTHING
"""

# Each terminal's newest heartbeat of the batch goes to a staging table of its own
# (one row per terminal; COPY dumps rows in C, where binding the same values as
# arrays cost three times the UPDATE itself), and from there into the terminal rows,
# which are already locked.
LATEST_COLUMNS = column_list(LATEST)
LATEST_TYPES = copy_types(LATEST)
SQL_CREATE_LATEST = (
    f"CREATE TEMP TABLE ingest_latest_staging ({staging_columns(LATEST)}) ON COMMIT DELETE ROWS"
)
SQL_COPY_LATEST = f"COPY ingest_latest_staging ({LATEST_COLUMNS}) FROM STDIN (FORMAT BINARY)"

# Only a heartbeat newer than the stored one replaces the latest state, so a replayed
# or redelivered old heartbeat never rolls the console back; what each column keeps is
# in ingest.telemetry_columns. None of these columns is indexed, so the update stays
# HOT (migration 0003).
SQL_UPSERT_LATEST = f"""
UPDATE terminal AS t SET
    {set_list(LATEST)}
FROM ingest_latest_staging AS v
WHERE t.id = v.terminal_id AND (t.last_heartbeat_at IS NULL OR v.ts > t.last_heartbeat_at)
"""

SQL_SET_STATUS = """
UPDATE terminal AS t SET status = v.status, status_reason = v.reason, status_changed_at = v.at
FROM unnest(%s::int[], %s::text[], %s::text[], %s::timestamptz[]) AS v(id, status, reason, at)
WHERE t.id = v.id
"""

SQL_INSERT_STATUS_CHANGES = """
INSERT INTO status_change (terminal_id, old_status, new_status, reason, at)
SELECT * FROM unnest(%s::int[], %s::text[], %s::text[], %s::text[], %s::timestamptz[])
"""

# One statement per batch for every command result (at most one per command: the
# writer drops repeats within a batch first, as UPDATE ... FROM would pick one at random):
# ``known`` are the results whose command exists for that terminal; ``moved`` those
# whose command was still live (queued or sent; a row in a final state keeps it, so a
# duplicate or late result changes nothing) and tells the sender at commit; each known
# result becomes a row of the terminal's log, once, however often it is redelivered.
# ``known`` locks the rows in id order before the UPDATE touches them, so two workers
# given the same results (a redelivery) cannot deadlock; a final state committed
# meanwhile (the sender expiring the command) is what the UPDATE then checks.
SQL_FINISH_COMMANDS = """
WITH v AS (
    SELECT * FROM unnest(
        %(id)s::text[], %(terminal_id)s::int[], %(status)s::text[], %(state)s::text[],
        %(severity)s::text[], %(output)s::text[], %(error)s::text[],
        %(finished_at)s::timestamptz[], %(received_at)s::timestamptz[]
    ) AS v(id, terminal_id, status, state, severity, output, error, finished_at, received_at)
),
known AS (
    SELECT c.id, c.terminal_id, c.name FROM v
    JOIN command AS c ON c.id = v.id AND c.terminal_id = v.terminal_id
    ORDER BY c.id FOR NO KEY UPDATE OF c
),
moved AS (
    UPDATE command AS c SET
        status = v.state, result = v.output::jsonb, error = v.error,
        finished_at = v.finished_at
    FROM v JOIN known AS k ON k.id = v.id AND k.terminal_id = v.terminal_id
    WHERE c.id = k.id AND c.status = ANY(%(live)s::text[])
    RETURNING c.id, pg_notify('tms_command_done', c.id)
),
logged AS (
    INSERT INTO terminal_log (
        terminal_id, at, received_at, kind, severity, code, message, source_id, data)
    SELECT v.terminal_id, v.finished_at, v.received_at, 'command', v.severity, k.name,
        left(
            k.name || ' ' || v.state
            || CASE WHEN m.id IS NULL THEN ' (arrived after the command was closed)' ELSE '' END
            || COALESCE(': ' || v.error, ''),
            2000),
        v.id, jsonb_build_object('status', v.status, 'command', k.name, 'applied', m.id IS NOT NULL)
    FROM v
    JOIN known AS k ON k.id = v.id AND k.terminal_id = v.terminal_id
    LEFT JOIN moved AS m ON m.id = v.id
    ON CONFLICT (kind, source_id, at) DO NOTHING
)
SELECT k.id, k.terminal_id, m.id IS NOT NULL FROM known AS k LEFT JOIN moved AS m ON m.id = k.id
"""
FINISH_COMMAND_COLUMNS = (
    "id", "terminal_id", "status", "state", "severity", "output", "error", "finished_at",
    "received_at",
)  # fmt: skip
# The states a result may still move: queued and sent (shared.command_states).
LIVE_COMMAND_STATES = sorted(state.value for state in CommandState if state not in FINAL)
COMMAND_LOG_SEVERITY = {
    CommandStatus.OK: "info",
    CommandStatus.REJECTED: "warning",
    CommandStatus.ERROR: "error",
}

SQL_INSERT_EVENT_LOG = """
INSERT INTO terminal_log (
    terminal_id, at, received_at, kind, severity, code, message, source_id, data)
SELECT v.terminal_id, v.at, v.received_at, 'event', v.severity, v.code, v.message, v.id,
    jsonb_build_object('kind', v.kind)
FROM unnest(
    %s::int[], %s::timestamptz[], %s::timestamptz[], %s::text[], %s::text[], %s::text[],
    %s::text[], %s::text[]
) AS v(terminal_id, at, received_at, severity, code, message, id, kind)
ON CONFLICT (kind, source_id, at) DO NOTHING
"""

# What a dead letter keeps of its payload: enough to see what was wrong, never a
# broker's whole maximum packet per row (a broker without a packet limit passed 100 MB).
DEAD_LETTER_PAYLOAD_MAX = 64 * 1024


def _with_size(rejection: Rejection) -> str:
    size = len(rejection.envelope.payload)
    if size <= DEAD_LETTER_PAYLOAD_MAX:
        return rejection.detail
    return f"{rejection.detail} (payload of {size} bytes; the first {DEAD_LETTER_PAYLOAD_MAX} kept)"


SQL_INSERT_DEAD_LETTERS = """
INSERT INTO dead_letter (received_at, topic, payload, reason, detail)
SELECT * FROM unnest(%s::timestamptz[], %s::text[], %s::bytea[], %s::text[], %s::text[])
"""


@dataclass
class WriteResult:
    """What one committed batch changed; the service adds it to its counters."""

    telemetry_written: int = 0
    telemetry_duplicates: int = 0
    status_changes: int = 0
    commands_finished: int = 0
    command_duplicates: int = 0  # results for a command already final: repeated or late
    events: int = 0
    alerts_opened: int = 0
    alerts_resolved: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    sequence: SequenceOutcome = field(default_factory=SequenceOutcome)

    def add(self, other: WriteResult) -> None:
        self.alerts_opened += other.alerts_opened
        self.alerts_resolved += other.alerts_resolved
        self.telemetry_written += other.telemetry_written
        self.telemetry_duplicates += other.telemetry_duplicates
        self.status_changes += other.status_changes
        self.commands_finished += other.commands_finished
        self.command_duplicates += other.command_duplicates
        self.events += other.events
        self.dead_letters.update(other.dead_letters)
        self.sequence.add(other.sequence)


class AlertCounts(Protocol):
    """What a commit step reports: the alerts it opened and resolved."""

    @property
    def opened(self) -> int: ...

    @property
    def resolved(self) -> int: ...


class CommitStep(Protocol):
    """Work of another room inside a batch's transaction: the daemon's alert step.

    The writer calls it at three points of each write and knows nothing else about it
    (``ingest.alerts.step`` is the one there is).
    """

    def plan(self, batch: Batch[Any], ids: Mapping[str, int], customers: Mapping[int, int]) -> None:
        """Before the terminal rows are locked: pure work the other workers need not wait for."""

    async def apply(self, conn: psycopg.AsyncConnection[Any]) -> AlertCounts:
        """Last in the transaction, under the terminal locks: commits with the batch."""

    def committed(self) -> None:
        """After the commit: what the step keeps in memory may change only now."""


# Told True when a write starts holding its terminals' row locks, False once it no
# longer does (committed or failed): the daemon stops reading the broker meanwhile.
OnLocking = Callable[[bool], None]


def _ignore_locking(locking: bool) -> None:
    pass


class CommandOutcome(NamedTuple):
    """What a batch's command results did: moved, changed nothing, or found no command."""

    finished: int
    duplicates: int
    unmatched: list[Rejection]


def command_target(status: str) -> CommandState:
    """The final state a result of ``status`` moves a live command to."""
    target = state_after_result(CommandState.SENT, CommandStatus(status))
    assert target is not None  # from sent, every result is a move (shared.command_states)
    return target


def latest_per_terminal(
    history: Iterable[TelemetryRecord], ids: dict[str, int]
) -> dict[int, TelemetryRecord]:
    """Each known terminal's newest heartbeat; of equal timestamps, the first to arrive."""
    newest: dict[int, TelemetryRecord] = {}
    for record in history:
        terminal_id = ids.get(record.serial)
        if terminal_id is None:
            continue
        held = newest.get(terminal_id)
        if held is None or record.ts > held.ts:
            newest[terminal_id] = record
    return newest


async def _copy(
    conn: psycopg.AsyncConnection[Any],
    statement: str,
    rows: list[tuple[Any, ...]],
    types: list[str] = HISTORY_TYPES,
) -> None:
    async with conn.cursor().copy(statement) as copy:
        copy.set_types(types)  # binary COPY needs them; one dumper per column
        for row in rows:
            await copy.write_row(row)


async def _create_staging_tables(conn: psycopg.AsyncConnection[Any]) -> None:
    """Once per connection (the pool's configure hook), not once per batch."""
    await conn.execute(SQL_CREATE_STAGING)
    await conn.execute(SQL_CREATE_LATEST)
    await conn.commit()


class BatchWriter:
    """Batches into PostgreSQL through a small pool; keeps a serial -> terminal id cache."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        self._terminal_ids: dict[str, int] = {}
        self._customers: dict[int, int] = {}  # terminal id -> customer id

    @classmethod
    def create(cls, database_url: str, connect_timeout_s: float = 10.0) -> BatchWriter:
        """A writer whose write waits at most ``connect_timeout_s`` for a connection."""
        # One writer needs one connection; the second serves a retry while a broken
        # one is being replaced. check= tests each connection before it is handed out.
        pool = AsyncConnectionPool(
            libpq_url(database_url),
            min_size=1,
            max_size=2,
            open=False,
            timeout=connect_timeout_s,
            check=AsyncConnectionPool.check_connection,
            configure=_create_staging_tables,
            name="ingest",
        )
        return cls(pool)

    async def open(self) -> None:
        # wait=False: the daemon starts (and keeps messages unacknowledged at the
        # broker) even while PostgreSQL is still down.
        await self._pool.open(wait=False)

    async def close(self) -> None:
        await self._pool.close()

    @asynccontextmanager
    async def _transaction(self) -> Any:
        try:
            async with self._pool.connection() as conn, conn.transaction():
                yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._terminal_ids.clear()
            detail = " ".join(str(exc).split())  # libpq's message spans lines
            raise DatabaseUnavailableError(f"PostgreSQL is unavailable: {detail}") from exc
        except psycopg.Error as exc:
            # A terminal deleted under the cache shows up as a foreign-key error.
            self._terminal_ids.clear()
            raise BatchRefusedError(f"PostgreSQL refused the batch: {exc}") from exc

    async def write(
        self,
        batch: Batch[Any],
        step: CommitStep | None = None,
        on_locking: OnLocking = _ignore_locking,
    ) -> WriteResult:
        """Write one batch in one transaction, or raise and leave the database unchanged.

        ``step`` (the daemon's alert step) runs inside the same transaction, and hears
        of the commit once it has happened; ``on_locking`` hears when the batch starts
        and stops holding its terminals' row locks.
        """
        try:
            async with self._transaction() as conn:
                result = await self._write(conn, batch, step, on_locking)
        finally:
            on_locking(False)
        if step is not None:
            step.committed()
        return result

    async def write_isolated(
        self,
        batch: Batch[Any],
        step: CommitStep | None = None,
        on_locking: OnLocking = _ignore_locking,
    ) -> WriteResult:
        """Write a refused batch message by message; a message refused alone is dead-lettered."""
        total = WriteResult()
        for single in split(batch):
            try:
                total.add(await self.write(single, step, on_locking))
            except BatchRefusedError as exc:
                (decoded,) = single.decoded
                rejection = Rejection(decoded.envelope, REASON_STORE_ERROR, str(exc))
                async with self._transaction() as conn:
                    await self._insert_dead_letters(conn, [rejection])
                    # Numbered, it arrived: not a gap to ask the agent for again.
                    ids = await self._resolve(conn, {s for s, _, _ in single.sequenced})
                    arrivals = arrivals_by_terminal(single.sequenced, ids)
                    if arrivals:
                        _, marks = await self._lock_terminals(conn, single, {}, arrivals.keys())
                        now = datetime.now(UTC)
                        total.sequence.add(await record_sequences(conn, arrivals, marks, now))
                total.dead_letters[REASON_STORE_ERROR] += 1
        return total

    async def _write(
        self,
        conn: psycopg.AsyncConnection[Any],
        batch: Batch[Any],
        step: CommitStep | None,
        on_locking: OnLocking,
    ) -> WriteResult:
        result = WriteResult()
        ids = await self._resolve(conn, batch.serials())
        rejections = list(batch.rejections)
        rejections.extend(self._unknown(batch, ids))
        known = ids.keys()
        if batch.history:
            written = await self._write_history(conn, batch, ids)
            result.telemetry_written = written
            result.telemetry_duplicates = sum(r.serial in known for r in batch.history) - written
        commands = await self._finish_commands(conn, batch.command_results, ids)
        result.commands_finished = commands.finished
        result.command_duplicates = commands.duplicates
        rejections.extend(commands.unmatched)
        result.events = await self._log_events(conn, batch.events, ids)
        await self._insert_dead_letters(conn, rejections)
        result.dead_letters.update(rejection.reason for rejection in rejections)
        if step is not None:
            step.plan(batch, ids, self._customers)
        # The terminal rows last, locked in id order and held only until the commit:
        # ingest workers on a shared subscription write the same terminals, and wait
        # for each other only here.
        staged = await self._stage_latest(conn, batch, ids)
        # From here to the commit the batch holds its terminals' row locks: only
        # statements that need them, and ``on_locking`` tells the daemon to stop reading
        # the broker meanwhile (each await would otherwise let the reader decode a
        # whole chunk before the writer resumes, with the other workers waiting).
        on_locking(True)
        arrivals = arrivals_by_terminal(batch.sequenced, ids)
        states, marks = await self._lock_terminals(conn, batch, ids, arrivals.keys())
        transitions = self._transitions(batch, ids, states)
        if arrivals:
            result.sequence = await record_sequences(conn, arrivals, marks, datetime.now(UTC))
        if staged:
            await conn.execute(SQL_UPSERT_LATEST)
        await self._apply_transitions(conn, transitions)
        result.status_changes = len(transitions)
        if step is not None:
            applied = await step.apply(conn)
            result.alerts_opened += applied.opened
            result.alerts_resolved += applied.resolved
        return result

    async def _resolve(
        self, conn: psycopg.AsyncConnection[Any], serials: set[str]
    ) -> dict[str, int]:
        """Terminal ids for the serials the database knows; asks it only about cache misses."""
        missing = [serial for serial in serials if serial not in self._terminal_ids]
        if missing:
            cursor = await conn.execute(SQL_TERMINAL_IDS, (missing,))
            async for serial, id_, customer_id in cursor:
                self._terminal_ids[serial] = id_
                self._customers[id_] = customer_id
        return {s: self._terminal_ids[s] for s in serials if s in self._terminal_ids}

    @staticmethod
    def _unknown(batch: Batch[Any], ids: dict[str, int]) -> Iterator[Rejection]:
        for decoded in batch.decoded:
            if isinstance(decoded, Rejection) or decoded.serial in ids:
                continue
            detail = f"no terminal with serial {decoded.serial!r} is provisioned"
            yield Rejection(decoded.envelope, REASON_UNKNOWN_TERMINAL, detail)

    @staticmethod
    async def _write_history(
        conn: psycopg.AsyncConnection[Any], batch: Batch[Any], ids: dict[str, int]
    ) -> int:
        """Write the batch's telemetry into the history; returns the rows new to it."""
        rows = history_rows(batch.history, ids)
        if not rows:
            return 0
        try:
            async with conn.transaction():  # a savepoint: a refused COPY leaves no trace
                await _copy(conn, SQL_COPY_HISTORY, rows)
            return len(rows)
        except psycopg.errors.UniqueViolation:
            pass  # some of the batch is already stored: a redelivery
        await _copy(conn, SQL_COPY_STAGING, rows)
        cursor = await conn.execute(SQL_INSERT_HISTORY)
        await conn.execute(SQL_EMPTY_STAGING)  # rolled back with the batch if it fails
        return max(cursor.rowcount, 0)

    @staticmethod
    async def _lock_terminals(
        conn: psycopg.AsyncConnection[Any],
        batch: Batch[Any],
        ids: dict[str, int],
        numbered: Iterable[int],
    ) -> tuple[dict[int, TerminalState], dict[int, StreamMark | None]]:
        """Lock the terminals the batch signals or numbers; their status and stream marks."""
        signalled = {ids[s.serial] for s in batch.signals if s.serial in ids}
        locked = sorted(signalled.union(numbered))
        if not locked:
            return {}, {}
        cursor = await conn.execute(SQL_LOCK_TERMINALS, (locked,))
        states: dict[int, TerminalState] = {}
        marks: dict[int, StreamMark | None] = {}
        for terminal_id, status, last_heartbeat_at, stream, high in await cursor.fetchall():
            if terminal_id in signalled:
                states[terminal_id] = TerminalState(terminal_id, status, last_heartbeat_at)
            marks[terminal_id] = None if stream is None else StreamMark(stream, high or 0)
        return states, marks

    @staticmethod
    def _transitions(
        batch: Batch[Any], ids: dict[str, int], states: dict[int, TerminalState]
    ) -> list[StatusTransition]:
        """Fold each locked terminal's signals, in arrival order, over its state."""
        if not states:
            return []
        by_terminal: dict[int, list[StatusSignal]] = {}  # arrival order kept per terminal
        for signal in batch.signals:
            terminal_id = ids.get(signal.serial)
            if terminal_id is not None:
                by_terminal.setdefault(terminal_id, []).append(signal)
        transitions: list[StatusTransition] = []
        for terminal_id, state in states.items():
            transitions.extend(status_transitions(state, by_terminal.get(terminal_id, [])))
        return transitions

    @staticmethod
    async def _stage_latest(
        conn: psycopg.AsyncConnection[Any], batch: Batch[Any], ids: dict[str, int]
    ) -> bool:
        """Copy each terminal's newest heartbeat of the batch to staging; False if none."""
        newest = latest_per_terminal(batch.history, ids)
        if not newest:
            return False
        await _copy(conn, SQL_COPY_LATEST, latest_rows(newest), LATEST_TYPES)
        return True

    @staticmethod
    async def _apply_transitions(
        conn: psycopg.AsyncConnection[Any], transitions: list[StatusTransition]
    ) -> None:
        if not transitions:
            return
        final = {t.terminal_id: t for t in transitions}  # the last change per terminal wins
        await conn.execute(
            SQL_SET_STATUS,
            as_columns(((t.terminal_id, t.new_status, t.reason, t.at) for t in final.values()), 4),
        )
        changes = ((t.terminal_id, t.old_status, t.new_status, t.reason, t.at) for t in transitions)
        await conn.execute(SQL_INSERT_STATUS_CHANGES, as_columns(changes, 5))

    @staticmethod
    async def _finish_commands(
        conn: psycopg.AsyncConnection[Any],
        results: list[CommandResultRecord],
        ids: dict[str, int],
    ) -> CommandOutcome:
        known = [r for r in results if r.serial in ids]
        if not known:
            return CommandOutcome(0, 0, [])
        first: dict[tuple[str, int], CommandResultRecord] = {}
        for r in known:
            first.setdefault((r.command_id, ids[r.serial]), r)
        rows = (
            (
                r.command_id, terminal_id, r.status, command_target(r.status).value,
                COMMAND_LOG_SEVERITY[CommandStatus(r.status)], r.output_json, r.error,
                r.finished_at, r.envelope.received_at,
            )
            for (_, terminal_id), r in first.items()
        )  # fmt: skip
        params: dict[str, Any] = dict(
            zip(FINISH_COMMAND_COLUMNS, as_columns(rows, len(FINISH_COMMAND_COLUMNS)), strict=True)
        )
        params["live"] = LIVE_COMMAND_STATES
        cursor = await conn.execute(SQL_FINISH_COMMANDS, params)
        moved = {(row[0], row[1]): row[2] async for row in cursor}  # known -> moved?
        unmatched = [
            Rejection(
                r.envelope,
                REASON_UNKNOWN_COMMAND,
                f"terminal {r.serial!r} has no command {r.command_id!r}",
            )
            for r in known
            if (r.command_id, ids[r.serial]) not in moved
        ]
        finished = sum(moved.values())
        return CommandOutcome(finished, len(known) - len(unmatched) - finished, unmatched)

    @staticmethod
    async def _log_events(
        conn: psycopg.AsyncConnection[Any], events: list[EventRecord], ids: dict[str, int]
    ) -> int:
        """Each event of a known terminal into its log (once); the alert rules act on them too."""
        rows = []
        for record in events:
            terminal_id = ids.get(record.serial)
            if terminal_id is None:
                continue
            event = record.event
            rows.append(
                (
                    terminal_id, record.ts, record.envelope.received_at, event.severity.value,
                    event.code, event.message, record.message_id, event.kind,
                )
            )  # fmt: skip
            log.info(
                "event from %s: %s %s %s %s",
                record.serial,
                event.severity.value,
                event.kind,
                event.code or "-",
                event.message[:200],
            )
        if rows:
            await conn.execute(SQL_INSERT_EVENT_LOG, as_columns(rows, 8))
        return len(rows)

    @staticmethod
    async def _insert_dead_letters(
        conn: psycopg.AsyncConnection[Any], rejections: list[Rejection]
    ) -> None:
        if not rejections:
            return
        rows = (
            (
                r.envelope.received_at,
                safe_text(r.envelope.topic, TOPIC_MAX),
                r.envelope.payload[:DEAD_LETTER_PAYLOAD_MAX],
                r.reason,
                safe_text(_with_size(r), DETAIL_MAX),
            )
            for r in rejections
        )
        await conn.execute(SQL_INSERT_DEAD_LETTERS, as_columns(rows, 5))
