"""The store-and-forward queue: its interface, the thinning rule, and the in-memory version.

Everything the agent publishes except presence (heartbeats, events, command results)
goes through one FIFO queue and leaves it only once the broker acknowledged it, so
messages are sent in order with the timestamps they were made with. When the queue is
full, the oldest heartbeats are thinned (every second one of the oldest half goes, so the
history of an outage gets coarser instead of losing its start); events and command
results are never dropped. The real agent uses the SQLite queue (agent/store.py); the
fleet simulator uses ``Outbox``, which loses its content with the process.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    # Heartbeats may be thinned when the queue is full; events and results may not.
    droppable: bool = True


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """A message in a queue, with the id ``done`` removes it by."""

    id: int
    message: OutgoingMessage


class MessageQueue(Protocol):
    max_messages: int
    dropped: int

    def __len__(self) -> int: ...

    def put(self, message: OutgoingMessage) -> None: ...

    def peek(self) -> QueuedMessage | None: ...

    def done(self, queued: QueuedMessage) -> None: ...


class RecentCommands(Protocol):
    """Ids of commands already run, so a redelivery is not run again, and their results,
    so a redelivery is answered again: the sender resends when a result went missing."""

    def seen(self, command_id: str) -> bool: ...

    def remember(self, command_id: str) -> None: ...

    def keep_result(self, command_id: str, payload: bytes) -> None: ...

    def result_of(self, command_id: str) -> bytes | None: ...


def thinning_victims(droppable_ids: Sequence[int]) -> list[int]:
    """Ids to drop from a full queue: every second heartbeat of the oldest half, at least one."""
    if not droppable_ids:
        return []
    oldest_half = droppable_ids[: max(2, len(droppable_ids) // 2)]
    return list(oldest_half[1::2]) or [droppable_ids[0]]


class Outbox:
    """The in-memory queue: same rules as the SQLite one, nothing survives a restart."""

    def __init__(self, max_messages: int) -> None:
        if max_messages < 1:
            raise ValueError("an outbox must hold at least one message")
        self.max_messages = max_messages
        self._messages: OrderedDict[int, OutgoingMessage] = OrderedDict()
        self._next_id = 1
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._messages)

    def put(self, message: OutgoingMessage) -> None:
        self._messages[self._next_id] = message
        self._next_id += 1
        if len(self._messages) > self.max_messages:
            droppable = [key for key, queued in self._messages.items() if queued.droppable]
            for key in thinning_victims(droppable):
                del self._messages[key]
                self.dropped += 1

    def peek(self) -> QueuedMessage | None:
        """The oldest message, left in place until ``done`` confirms it was sent."""
        for key, message in self._messages.items():
            return QueuedMessage(key, message)
        return None

    def done(self, queued: QueuedMessage) -> None:
        """Remove ``queued`` once acknowledged; thinning may already have dropped it."""
        self._messages.pop(queued.id, None)


class MemoryRecentCommands:
    """The last ``max_ids`` command ids and their results, in memory."""

    def __init__(self, max_ids: int = 256) -> None:
        self._ids: OrderedDict[str, bytes | None] = OrderedDict()
        self._max_ids = max_ids

    def seen(self, command_id: str) -> bool:
        return command_id in self._ids

    def remember(self, command_id: str) -> None:
        self._ids.setdefault(command_id, None)
        while len(self._ids) > self._max_ids:
            self._ids.popitem(last=False)

    def keep_result(self, command_id: str, payload: bytes) -> None:
        if command_id in self._ids:
            self._ids[command_id] = payload

    def result_of(self, command_id: str) -> bytes | None:
        return self._ids.get(command_id)
