"""The agent's on-disk state in one SQLite file: the store-and-forward queue, and recent
command ids with their results.

WAL with ``synchronous=FULL``: every committed put is on disk (fsync'd) before ``put``
returns, so neither a killed agent nor a power cut loses a queued message, and a command
id remembered before its command ran is still remembered after a restart (its result
too, to answer a resend of it again without running it twice). The queue is
bounded by ``max_messages``; overflow thins the oldest heartbeats (agent/outbox.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from agent.errors import AgentError
from agent.outbox import (
    DEFAULT_KEEP_SENT,
    MAX_MISSING_RANGES,
    OutgoingMessage,
    QueuedMessage,
    ResendOutcome,
    missing_ranges,
    new_stream,
    numbered,
    thinning_victims,
)

SCHEMA_VERSION = 3
RECENT_COMMANDS_MAX = 1000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    droppable INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_droppable ON outbox (droppable, id);
CREATE TABLE IF NOT EXISTS seen_command (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    result BLOB
);
CREATE TABLE IF NOT EXISTS sent (
    seq INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    droppable INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS numbering (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    stream TEXT NOT NULL,
    next_seq INTEGER NOT NULL
);
"""


class StateFile:
    """One open SQLite file; implements MessageQueue and RecentCommands. Close it when done."""

    def __init__(
        self,
        path: Path,
        max_messages: int,
        recent_commands_max: int = RECENT_COMMANDS_MAX,
        keep_sent: int = DEFAULT_KEEP_SENT,
    ) -> None:
        if max_messages < 1:
            raise ValueError("a queue must hold at least one message")
        self.path = path
        self.max_messages = max_messages
        self.recent_commands_max = recent_commands_max
        self.keep_sent = keep_sent
        self.dropped = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: each statement group below is its own explicit transaction.
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(seen_command)")}
            if "result" not in columns:  # a file of schema 1: ids only
                self._db.execute("ALTER TABLE seen_command ADD COLUMN result BLOB")
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
            if "seq" not in columns:  # schema 2: messages went unnumbered
                self._db.execute("ALTER TABLE outbox ADD COLUMN seq INTEGER")
            self._db.execute(
                "INSERT OR IGNORE INTO numbering (one, stream, next_seq) VALUES (1, ?, 1)",
                (new_stream(),),
            )
            self.stream = self._db.execute("SELECT stream FROM numbering").fetchone()[0]
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._count = self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        except (OSError, sqlite3.Error) as exc:
            raise AgentError(
                f"cannot open the agent's queue {path}: {exc}; check [agent] queue_path "
                "(TMS_AGENT_QUEUE_PATH) and that the agent's user may write there"
            ) from exc

    def close(self) -> None:
        self._db.close()

    # MessageQueue.

    def __len__(self) -> int:
        return self._count

    def put(self, message: OutgoingMessage) -> None:
        with self._transaction():
            self._put(message)

    def _put(self, message: OutgoingMessage) -> None:
        """Number (in the same transaction as the insert, so no number is skipped by a
        crash between them) and insert; thin the oldest heartbeats when over the bound."""
        if message.seq is None:
            (next_seq,) = self._db.execute("SELECT next_seq FROM numbering").fetchone()
            message = numbered(message, self.stream, next_seq)
            if message.seq is not None:
                self._db.execute("UPDATE numbering SET next_seq = next_seq + 1")
        self._db.execute(
            "INSERT INTO outbox (topic, payload, qos, retain, droppable, seq)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                message.topic,
                message.payload,
                message.qos,
                message.retain,
                message.droppable,
                message.seq,
            ),
        )
        self._count += 1
        if self._count > self.max_messages:
            droppable = [
                row[0]
                for row in self._db.execute("SELECT id FROM outbox WHERE droppable = 1 ORDER BY id")
            ]
            victims = thinning_victims(droppable)
            self._db.executemany("DELETE FROM outbox WHERE id = ?", [(v,) for v in victims])
            self._count -= len(victims)
            self.dropped += len(victims)

    def peek(self) -> QueuedMessage | None:
        row = self._db.execute(
            "SELECT id, topic, payload, qos, retain, droppable, seq FROM outbox ORDER BY id LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        key, topic, payload, qos, retain, droppable, seq = row
        message = OutgoingMessage(topic, payload, qos, bool(retain), bool(droppable), seq)
        return QueuedMessage(key, message)

    def done(self, queued: QueuedMessage) -> None:
        """Acknowledged: out of the queue, and into the sent messages kept for a resend."""
        with self._transaction():
            if self.keep_sent > 0:
                self._db.execute(
                    "INSERT OR REPLACE INTO sent (seq, topic, payload, qos, retain, droppable)"
                    " SELECT seq, topic, payload, qos, retain, droppable FROM outbox"
                    " WHERE id = ? AND seq IS NOT NULL",
                    (queued.id,),
                )
                self._db.execute(
                    "DELETE FROM sent WHERE seq <= (SELECT max(seq) FROM sent) - ?",
                    (self.keep_sent,),
                )
            deleted = self._db.execute("DELETE FROM outbox WHERE id = ?", (queued.id,)).rowcount
            self._count -= deleted

    def resend(self, stream: str, ranges: Sequence[tuple[int, int]]) -> ResendOutcome:
        """Queue again the sent messages of ``ranges``; say which numbers are gone."""
        if stream != self.stream:  # an earlier install's numbers: none is held
            return ResendOutcome(stream, 0, list(ranges)[:MAX_MISSING_RANGES])
        with self._transaction():
            held: set[int] = set()
            again: list[OutgoingMessage] = []
            for first, last in ranges:
                for (seq,) in self._db.execute(
                    "SELECT seq FROM outbox WHERE seq BETWEEN ? AND ?", (first, last)
                ):
                    held.add(seq)
                for row in self._db.execute(
                    "SELECT seq, topic, payload, qos, retain, droppable FROM sent"
                    " WHERE seq BETWEEN ? AND ? ORDER BY seq",
                    (first, last),
                ):
                    seq, topic, payload, qos, retain, droppable = row
                    if seq not in held:
                        held.add(seq)
                        again.append(
                            OutgoingMessage(topic, payload, qos, bool(retain), bool(droppable), seq)
                        )
            for message in again:
                self._put(message)
        return ResendOutcome(stream, len(again), missing_ranges(ranges, held))

    # RecentCommands.

    def seen(self, command_id: str) -> bool:
        row = self._db.execute("SELECT 1 FROM seen_command WHERE id = ?", (command_id,))
        return row.fetchone() is not None

    def remember(self, command_id: str) -> None:
        with self._transaction():
            self._db.execute("INSERT OR IGNORE INTO seen_command (id) VALUES (?)", (command_id,))
            self._db.execute(
                "DELETE FROM seen_command WHERE seq <= (SELECT max(seq) FROM seen_command) - ?",
                (self.recent_commands_max,),
            )

    def keep_result(self, command_id: str, payload: bytes) -> None:
        with self._transaction():
            self._db.execute(
                "UPDATE seen_command SET result = ? WHERE id = ?", (payload, command_id)
            )

    def result_of(self, command_id: str) -> bytes | None:
        row = self._db.execute(
            "SELECT result FROM seen_command WHERE id = ?", (command_id,)
        ).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error; commit is the fsync point."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")
