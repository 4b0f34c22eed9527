"""A command's life as pure rules: its states, the moves between them, and when to resend.

queued -> sent -> succeeded / failed / rejected, or expired / cancelled on the way.
The sender and ingest apply these rules (the sender's give-up and expiry, set-based,
in its SQL: commands/sender.py) to the ``command`` rows; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from shared.messages import CommandStatus


class CommandState(StrEnum):
    QUEUED = "queued"  # a row, not yet published (its terminal may be offline)
    SENT = "sent"  # published; waiting for the result, resent after a timeout
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the agent reported an error, or no result after every attempt
    REJECTED = "rejected"  # the agent refused the arguments
    EXPIRED = "expired"  # its terminal did not take it in time
    CANCELLED = "cancelled"


FINAL = frozenset(
    {
        CommandState.SUCCEEDED,
        CommandState.FAILED,
        CommandState.REJECTED,
        CommandState.EXPIRED,
        CommandState.CANCELLED,
    }
)

# Where each state may go. A result may arrive for a command the sender is about to
# resend (sent -> sent is a resend), but nothing leaves a final state.
MOVES: dict[CommandState, frozenset[CommandState]] = {
    CommandState.QUEUED: frozenset(
        {CommandState.SENT, CommandState.EXPIRED, CommandState.CANCELLED}
    ),
    CommandState.SENT: frozenset(
        {
            CommandState.SENT,
            CommandState.SUCCEEDED,
            CommandState.FAILED,
            CommandState.REJECTED,
            CommandState.EXPIRED,
        }
    ),
    **{state: frozenset() for state in FINAL},
}

_FROM_RESULT = {
    CommandStatus.OK: CommandState.SUCCEEDED,
    CommandStatus.ERROR: CommandState.FAILED,
    CommandStatus.REJECTED: CommandState.REJECTED,
}


def may_move(current: CommandState, to: CommandState) -> bool:
    return to in MOVES[current]


def state_after_result(current: CommandState, status: CommandStatus) -> CommandState | None:
    """The state a result moves the command to; None if the command is already final
    (a late result after expiry or a duplicate answer changes nothing)."""
    target = _FROM_RESULT[status]
    if current is CommandState.QUEUED:
        # Its send was committed by a sender that died before it recorded it: the
        # agent's answer is the proof it went out.
        return target
    return target if may_move(current, target) else None


@dataclass(frozen=True, slots=True)
class ResendPolicy:
    """Exponential backoff between sends of a command that got no result."""

    first_timeout_s: float
    factor: float = 2.0
    max_timeout_s: float = 600.0

    def timeout_after(self, attempt: int) -> timedelta:
        """How long to wait for a result after send number ``attempt`` (1-based)."""
        seconds = self.first_timeout_s * self.factor ** max(0, attempt - 1)
        return timedelta(seconds=min(seconds, self.max_timeout_s))
