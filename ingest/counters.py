"""In-process counters of the ingest daemon (later served as /metrics) and its summary line."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ingest.store import WriteResult


@dataclass
class IngestCounters:
    """Running totals since start; only the event loop thread updates them."""

    received: int = 0
    committed: int = 0  # messages in committed batches (acknowledged when still connected)
    batches: int = 0
    telemetry_written: int = 0
    telemetry_duplicates: int = 0
    status_changes: int = 0
    commands_finished: int = 0
    events: int = 0
    dead_lettered: Counter[str] = field(default_factory=Counter)
    database_retries: int = 0
    broker_reconnects: int = 0
    # Committed on a connection that has gone since: the broker redelivers them and
    # the unique message id keeps the history free of duplicates.
    acks_dropped: int = 0

    def add_batch(self, messages: int, result: WriteResult) -> None:
        self.batches += 1
        self.committed += messages
        self.telemetry_written += result.telemetry_written
        self.telemetry_duplicates += result.telemetry_duplicates
        self.status_changes += result.status_changes
        self.commands_finished += result.commands_finished
        self.events += result.events
        self.dead_lettered.update(result.dead_letters)

    def summary(self) -> str:
        dead = ", ".join(f"{reason}={n}" for reason, n in sorted(self.dead_lettered.items()))
        return (
            f"received={self.received} committed={self.committed} batches={self.batches}"
            f" telemetry={self.telemetry_written} duplicates={self.telemetry_duplicates}"
            f" status_changes={self.status_changes} commands={self.commands_finished}"
            f" events={self.events} dead_letters=[{dead}]"
            f" database_retries={self.database_retries}"
            f" broker_reconnects={self.broker_reconnects} acks_dropped={self.acks_dropped}"
        )
