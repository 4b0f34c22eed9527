"""A bounded in-memory outbox of telemetry waiting for the broker, oldest dropped first.

Store-and-forward to disk replaces this in a later issue; until then a restart of the
agent loses what is queued here, and overflow is counted rather than silent.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


class Outbox:
    """FIFO of messages not yet acknowledged by the broker."""

    def __init__(self, max_messages: int) -> None:
        if max_messages < 1:
            raise ValueError("an outbox must hold at least one message")
        self.max_messages = max_messages
        self._messages: deque[OutgoingMessage] = deque()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._messages)

    def put(self, message: OutgoingMessage) -> None:
        if len(self._messages) >= self.max_messages:
            self._messages.popleft()
            self.dropped += 1
        self._messages.append(message)

    def peek(self) -> OutgoingMessage | None:
        """The oldest message, left in place until ``done`` confirms it was sent."""
        return self._messages[0] if self._messages else None

    def done(self, message: OutgoingMessage) -> None:
        """Remove ``message`` after the broker acknowledged it.

        Overflow may have dropped it while it was being sent; then nothing is removed.
        """
        if self._messages and self._messages[0] is message:
            self._messages.popleft()
