"""In-process counters of the ingest daemon (served as /metrics) and its summary line."""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

from ingest.writer import WriteResult

BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10_000)
COMMIT_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Histogram:
    """A Prometheus-style histogram as plain numbers: bucket counts, total and count."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.bounds, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        running, out = 0, []
        for bound, count in zip(self.bounds, self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


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
    # Results for a command already final: a resend's second answer, or a late one.
    command_duplicates: int = 0
    events: int = 0
    # Message numbering (ingest.sequence): gaps found, and the numbers in them that
    # came back, that the agent no longer had, and resend commands asked.
    seq_gaps_found: int = 0
    seq_missing: int = 0
    seq_recovered: int = 0
    seq_gaps_repaired: int = 0
    seq_lost: int = 0
    seq_resends: int = 0
    dead_lettered: Counter[str] = field(default_factory=Counter)
    database_retries: int = 0
    broker_reconnects: int = 0
    # Committed on a connection that has gone since: the broker redelivers them and
    # the unique message id keeps the history free of duplicates.
    acks_dropped: int = 0
    # Times reading paused because max_pending messages waited for the writer.
    read_pauses: int = 0
    alerts_opened: int = 0
    alerts_resolved: int = 0
    open_alerts: int = 0  # as of the last sweep
    heartbeats_missed: int = 0
    notifications_sent: int = 0
    notification_failures: int = 0
    database_ok: bool = True  # False from a failed write or sweep until the next success
    batch_sizes: Histogram = field(default_factory=lambda: Histogram(BATCH_SIZE_BUCKETS))
    commit_seconds: Histogram = field(default_factory=lambda: Histogram(COMMIT_SECONDS_BUCKETS))

    def add_batch(self, messages: int, result: WriteResult, seconds: float = 0.0) -> None:
        self.batches += 1
        self.committed += messages
        self.telemetry_written += result.telemetry_written
        self.telemetry_duplicates += result.telemetry_duplicates
        self.status_changes += result.status_changes
        self.commands_finished += result.commands_finished
        self.command_duplicates += result.command_duplicates
        self.events += result.events
        self.seq_gaps_found += result.sequence.gaps_found
        self.seq_missing += result.sequence.missing
        self.seq_recovered += result.sequence.recovered
        self.seq_gaps_repaired += result.sequence.gaps_closed
        self.alerts_opened += result.alerts_opened
        self.alerts_resolved += result.alerts_resolved
        self.dead_lettered.update(result.dead_letters)
        self.batch_sizes.observe(messages)
        self.commit_seconds.observe(seconds)

    def summary(self) -> str:
        dead = ", ".join(f"{reason}={n}" for reason, n in sorted(self.dead_lettered.items()))
        return (
            f"received={self.received} committed={self.committed} batches={self.batches}"
            f" telemetry={self.telemetry_written} duplicates={self.telemetry_duplicates}"
            f" status_changes={self.status_changes} commands={self.commands_finished}"
            f" command_duplicates={self.command_duplicates}"
            f" events={self.events} dead_letters=[{dead}]"
            f" gaps={self.seq_gaps_found} missing={self.seq_missing}"
            f" recovered={self.seq_recovered} lost={self.seq_lost}"
            f" database_retries={self.database_retries}"
            f" broker_reconnects={self.broker_reconnects} acks_dropped={self.acks_dropped}"
            f" read_pauses={self.read_pauses}"
            f" alerts_opened={self.alerts_opened} open_alerts={self.open_alerts}"
            f" notifications_sent={self.notifications_sent}"
        )
