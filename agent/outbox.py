"""The store-and-forward queue: its interface, the thinning rule, and the in-memory version.

Everything the agent publishes except presence (heartbeats, events, command results)
goes through one FIFO queue and leaves it only once the broker acknowledged it, so
messages are sent in order with the timestamps they were made with. When the queue is
full, the oldest heartbeats are thinned (every second one of the oldest half goes, so the
history of an outage gets coarser instead of losing its start); events and command
results are never dropped. The real agent uses the SQLite queue (agent/state_file.py); the
fleet simulator (agent/sim/fleet.py) uses ``Outbox``, which loses its content with the
process.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from shared.messages import stamp_sequence

# How many sent messages a queue keeps to publish again on request: the real agent's
# default (settings: [agent] resend_keep) holds days of heartbeats; the simulator's is
# smaller, since it holds thousands of terminals in one process.
DEFAULT_KEEP_SENT = 10_000
# The most ranges one resend answer lists as no longer held (the rest stay missing and
# are asked for again): keeps the answer well inside one MQTT message.
MAX_MISSING_RANGES = 1000


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    # Heartbeats may be thinned when the queue is full; events and results may not.
    droppable: bool = True
    # Set by the queue when it numbers the message (the payload then carries it too).
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class ResendOutcome:
    """What a queue did with a resend request: how many it queued again, and the ranges
    it no longer holds (thinned, or sent longer ago than it keeps)."""

    stream: str
    resent: int
    missing: list[tuple[int, int]]


def new_stream() -> str:
    """A stream name that sorts after every earlier one: the start time, then randomness."""
    return f"{int(time.time()):010x}{secrets.token_hex(3)}"


def numbered(message: OutgoingMessage, stream: str, seq: int) -> OutgoingMessage:
    """``message`` with its number in the payload; a payload not made by ``to_payload``
    (only tests make such) goes unnumbered."""
    try:
        payload = stamp_sequence(message.payload, stream, seq)
    except ValueError:
        return message
    return replace(message, payload=payload, seq=seq)


def missing_ranges(ranges: Iterable[tuple[int, int]], held: set[int]) -> list[tuple[int, int]]:
    """The numbers of ``ranges`` not in ``held``, as ranges, at most MAX_MISSING_RANGES."""
    missing: list[tuple[int, int]] = []
    for first, last in ranges:
        # A range may be far larger than what is held: walk only the held numbers in it.
        inside = sorted(n for n in held if first <= n <= last)
        cursor = first
        for number in inside:
            if number > cursor:
                missing.append((cursor, number - 1))
            cursor = number + 1
        if cursor <= last:
            missing.append((cursor, last))
        if len(missing) >= MAX_MISSING_RANGES:
            return missing[:MAX_MISSING_RANGES]
    return missing


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """A message in a queue, with the id ``done`` removes it by."""

    id: int
    message: OutgoingMessage


class MessageQueue(Protocol):
    """FIFO of what is to be published; numbers each message as it takes it (in its
    ``stream``), and keeps what was sent to publish again on request."""

    max_messages: int
    dropped: int
    stream: str

    def __len__(self) -> int: ...

    def put(self, message: OutgoingMessage) -> None: ...

    def peek(self) -> QueuedMessage | None: ...

    def done(self, queued: QueuedMessage) -> None: ...

    def resend(self, stream: str, ranges: Sequence[tuple[int, int]]) -> ResendOutcome: ...


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

    def __init__(self, max_messages: int, keep_sent: int = DEFAULT_KEEP_SENT) -> None:
        if max_messages < 1:
            raise ValueError("an outbox must hold at least one message")
        self.max_messages = max_messages
        self.keep_sent = keep_sent
        self.stream = new_stream()
        self._messages: OrderedDict[int, OutgoingMessage] = OrderedDict()
        self._sent: OrderedDict[int, OutgoingMessage] = OrderedDict()  # by number
        self._next_id = 1
        self._next_seq = 1
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._messages)

    def put(self, message: OutgoingMessage) -> None:
        if message.seq is None:
            message = numbered(message, self.stream, self._next_seq)
            if message.seq is not None:
                self._next_seq += 1
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
        message = self._messages.pop(queued.id, None)
        if message is None or message.seq is None or self.keep_sent < 1:
            return
        self._sent[message.seq] = message
        self._sent.move_to_end(message.seq)
        while len(self._sent) > self.keep_sent:
            self._sent.popitem(last=False)

    def resend(self, stream: str, ranges: Sequence[tuple[int, int]]) -> ResendOutcome:
        """Queue again the sent messages of ``ranges``; say which numbers are gone."""
        if stream != self.stream:  # an earlier install's numbers: none is held
            return ResendOutcome(stream, 0, list(ranges)[:MAX_MISSING_RANGES])
        queued = {m.seq for m in self._messages.values() if m.seq is not None}
        again = [
            self._sent[n]
            for n in sorted(self._sent)
            if any(first <= n <= last for first, last in ranges) and n not in queued
        ]
        for message in again:
            self.put(message)
        held = queued.union(m.seq for m in again if m.seq is not None)
        return ResendOutcome(stream, len(again), missing_ranges(ranges, held))


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
