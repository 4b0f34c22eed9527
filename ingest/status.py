"""The rules that turn presence and heartbeats into a terminal's status (pure).

Signals are folded in the order the broker delivered them, because that order is
what says whether the agent connected or disconnected last. A heartbeat no newer
than the last one already stored is history being replayed (an agent's offline
queue): it is written to the history but does not change the status.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from ingest.batch import StatusSignal
from ingest.decode import PresenceRecord, TelemetryRecord
from shared.messages import DeviceStatus, PresenceState
from shared.models import TerminalStatus

REASON_CONNECTED = "agent connected"
REASON_DISCONNECTED = "agent disconnected"
REASON_HEARTBEAT = "heartbeat received"
REASON_DEVICE_ERROR = "terminal error"
REASON_UNPLUGGED = "terminal unplugged from the PC"
REASON_HEARTBEAT_MISSED = "heartbeat missed"  # set by the sweep (ingest.sweep)

# A decommissioned terminal keeps that status whatever its agent still sends.
FROZEN_STATUSES = frozenset({TerminalStatus.DECOMMISSIONED.value})


@dataclass(frozen=True, slots=True)
class TerminalState:
    """What the database holds about a terminal when the batch starts."""

    terminal_id: int
    status: str
    last_heartbeat_at: datetime | None


@dataclass(frozen=True, slots=True)
class StatusTransition:
    terminal_id: int
    old_status: str
    new_status: str
    reason: str
    at: datetime


def _target(
    signal: StatusSignal, last_heartbeat_at: datetime | None
) -> tuple[TerminalStatus, str] | None:
    """The status and reason one signal asks for, or None when it asks for nothing."""
    if isinstance(signal, PresenceRecord):
        if signal.state is PresenceState.ONLINE:
            return TerminalStatus.ONLINE, signal.reason or REASON_CONNECTED
        return TerminalStatus.OFFLINE, signal.reason or REASON_DISCONNECTED
    assert isinstance(signal, TelemetryRecord)
    if last_heartbeat_at is not None and signal.ts <= last_heartbeat_at:
        return None
    if signal.device_status is DeviceStatus.ERROR:
        return TerminalStatus.ERROR, REASON_DEVICE_ERROR
    if signal.device_status is DeviceStatus.UNPLUGGED:
        return TerminalStatus.ERROR, REASON_UNPLUGGED
    return TerminalStatus.ONLINE, REASON_HEARTBEAT


def status_transitions(
    state: TerminalState, signals: Iterable[StatusSignal]
) -> list[StatusTransition]:
    """Every real change of status the signals cause, oldest first."""
    if state.status in FROZEN_STATUSES:
        return []
    transitions: list[StatusTransition] = []
    status = state.status
    last_heartbeat_at = state.last_heartbeat_at
    for signal in signals:
        target = _target(signal, last_heartbeat_at)
        if isinstance(signal, TelemetryRecord) and (
            last_heartbeat_at is None or signal.ts > last_heartbeat_at
        ):
            last_heartbeat_at = signal.ts
        if target is None or target[0].value == status:
            continue
        new_status, reason = target[0].value, target[1]
        transitions.append(
            StatusTransition(
                state.terminal_id, status, new_status, reason, signal.envelope.received_at
            )
        )
        status = new_status
    return transitions
