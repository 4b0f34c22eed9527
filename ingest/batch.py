"""Accumulate decoded messages into one write, bounded by count and by age (pure).

The builder takes the clock as an argument (monotonic seconds) so that it is tested
without waiting. A ``Batch`` holds everything one database transaction needs: every
telemetry row for the history (the store derives each terminal's latest state from
them), the status signals in arrival order, and the receipts to acknowledge after commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ingest.decode import (
    CommandResultRecord,
    Decoded,
    EventRecord,
    PresenceRecord,
    Rejection,
    TelemetryRecord,
)

R = TypeVar("R")

StatusSignal = TelemetryRecord | PresenceRecord


@dataclass
class Batch(Generic[R]):
    """One transaction's worth of messages; ``receipts`` are acknowledged after commit."""

    decoded: list[Decoded] = field(default_factory=list)  # everything, in arrival order
    history: list[TelemetryRecord] = field(default_factory=list)
    signals: list[StatusSignal] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    command_results: list[CommandResultRecord] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    # (serial, stream, number) of every numbered message, dead letters and repeats too:
    # each arrived, so none is a gap (ingest.sequence).
    sequenced: list[tuple[str, str, int]] = field(default_factory=list)
    receipts: list[R] = field(default_factory=list)
    _message_ids: set[str] = field(default_factory=set, repr=False)

    def __len__(self) -> int:
        return len(self.receipts)

    def serials(self) -> set[str]:
        """Every terminal the batch writes for (rejections have no trusted serial)."""
        found = {record.serial for record in self.history}
        found.update(record.serial for record in self.signals)
        found.update(record.serial for record in self.events)
        found.update(record.serial for record in self.command_results)
        return found

    def add(self, decoded: Decoded, receipt: R) -> None:
        self.receipts.append(receipt)
        self.decoded.append(decoded)
        if isinstance(decoded, Rejection):
            if decoded.sequence is not None:
                self.sequenced.append(decoded.sequence)
        elif not isinstance(decoded, PresenceRecord) and decoded.seq is not None:
            self.sequenced.append((decoded.serial, *decoded.seq))
        match decoded:
            case TelemetryRecord():
                self._add_telemetry(decoded)
            case PresenceRecord():
                self.signals.append(decoded)
            case EventRecord():
                self.events.append(decoded)
            case CommandResultRecord():
                self.command_results.append(decoded)
            case Rejection():
                self.rejections.append(decoded)

    def _add_telemetry(self, record: TelemetryRecord) -> None:
        # A redelivery inside one batch is dropped here; across batches the database's
        # unique message_id does the same.
        if record.message_id in self._message_ids:
            return
        self._message_ids.add(record.message_id)
        self.history.append(record)
        self.signals.append(record)


def split(batch: Batch[R]) -> list[Batch[None]]:
    """One batch per message, to find the one the database refuses (receipts stay behind)."""
    singles: list[Batch[None]] = []
    for decoded in batch.decoded:
        single: Batch[None] = Batch()
        single.add(decoded, None)
        singles.append(single)
    return singles


class BatchBuilder(Generic[R]):
    """Collects messages until ``max_messages`` are held or the oldest is ``max_age_s`` old."""

    def __init__(self, max_messages: int, max_age_s: float) -> None:
        if max_messages < 1 or max_age_s <= 0:
            raise ValueError("a batch needs room for one message and a positive age limit")
        self.max_messages = max_messages
        self.max_age_s = max_age_s
        self._batch: Batch[R] = Batch()
        self._started_at: float | None = None

    def __len__(self) -> int:
        return len(self._batch)

    def add(self, decoded: Decoded, receipt: R, now: float) -> None:
        if self._started_at is None:
            self._started_at = now
        self._batch.add(decoded, receipt)

    @property
    def deadline(self) -> float | None:
        """When the current batch must be written (monotonic seconds), None when empty."""
        return None if self._started_at is None else self._started_at + self.max_age_s

    def is_full(self) -> bool:
        return len(self._batch) >= self.max_messages

    def is_due(self, now: float) -> bool:
        deadline = self.deadline
        return self.is_full() or (deadline is not None and now >= deadline)

    def take(self) -> Batch[R]:
        """Hand over the current batch and start an empty one."""
        batch, self._batch, self._started_at = self._batch, Batch(), None
        return batch
