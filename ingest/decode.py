"""Turn one MQTT message (topic, payload bytes) into a typed record or a Rejection (pure).

Everything past this module works with the immutable records below, never with raw
payloads. ``decode`` never raises: whatever arrives on the wire becomes either a
record or a ``Rejection`` whose reason is one of the ``REASON_*`` constants, so the
daemon can count it, log it and keep it as a dead letter.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from pydantic import BaseModel

from shared import topics
from shared.errors import MessageError, TopicError
from shared.messages import (
    SEQ_MAX,
    CommandResult,
    DeviceStatus,
    Event,
    Presence,
    PresenceState,
    Telemetry,
    parse_message,
)

REASON_BAD_TOPIC = "bad-topic"
REASON_BAD_PAYLOAD = "bad-payload"
REASON_UNSUPPORTED_VERSION = "unsupported-version"
REASON_UNKNOWN_TERMINAL = "unknown-terminal"  # decided by the store, not here
REASON_UNKNOWN_COMMAND = "unknown-command"  # decided by the store, not here
REASON_STORE_ERROR = "store-error"  # a record the database refused on its own
REASON_FUTURE_TIMESTAMP = "future-timestamp"
REASON_PAST_TIMESTAMP = "past-timestamp"
# Kept by the broker and replayed at each subscription: only presence (the last will)
# may be; a retained heartbeat would be written again at every reconnect of ingest.
REASON_RETAINED = "retained"

# A clock this far ahead of ours is wrong, and would put the heartbeat's status above
# every real one that follows (and the row beyond the created partitions).
DEFAULT_MAX_FUTURE = timedelta(minutes=5)
# Before any TC-200 was made: a clock reset to 1970, or a crafted year 1 that PostgreSQL
# would store and psycopg could not read back (every page listing it would fail).
EARLIEST = datetime(2020, 1, 1, tzinfo=UTC)

# Column widths the wire schema allows to be longer (shared.models): checked here so
# that one long value is a dead letter, not a batch the database refuses forever.
FIRMWARE_MAX = 64
MODEL_MAX = 64
UPTIME_MAX = 2**63 - 1  # bigint
DETAIL_MAX = 2000
TOPIC_MAX = 1024
_STREAM = re.compile(r"[0-9a-z]{1,32}")


# Envelope and TelemetryRecord are NamedTuples, the other records frozen dataclasses:
# both are immutable, and a NamedTuple is built in a fifth of the time, which counts
# on the path every telemetry message takes (~3 us of ~19 per message here).
class Envelope(NamedTuple):
    """Where a record came from, kept so that the store can still dead-letter it."""

    topic: str
    payload: bytes
    received_at: datetime


class TelemetryRecord(NamedTuple):
    serial: str
    envelope: Envelope
    message_id: str
    ts: datetime
    device_status: DeviceStatus
    firmware_version: str | None
    cpu_pct: float | None
    memory_pct: float | None
    disk_pct: float | None
    host_name: str | None
    host_cpu_pct: float | None
    host_memory_pct: float | None
    host_disk_pct: float | None
    errors_json: str | None  # JSON array of {code, message}, or None when there are none
    model: str | None = None
    uptime_s: int | None = None
    seq: tuple[str, int] | None = None  # (stream, number): ingest.sequence


@dataclass(frozen=True, slots=True)
class PresenceRecord:
    serial: str
    envelope: Envelope
    state: PresenceState
    reason: str | None
    ts: datetime | None


@dataclass(frozen=True, slots=True)
class EventRecord:
    serial: str
    envelope: Envelope
    message_id: str
    ts: datetime
    event: Event
    seq: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class CommandResultRecord:
    serial: str
    envelope: Envelope
    command_id: str
    status: str
    output_json: str
    error: str | None
    finished_at: datetime
    seq: tuple[str, int] | None = None


Record = TelemetryRecord | PresenceRecord | EventRecord | CommandResultRecord


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message ingest cannot use; ``detail`` says why in words for the dead letter."""

    envelope: Envelope
    reason: str
    detail: str
    # (serial, stream, number) when the message was numbered: a dead letter still
    # arrived, and must not look like a gap to repair (ingest.sequence).
    sequence: tuple[str, str, int] | None = None


Decoded = Record | Rejection


def safe_text(text: str, limit: int) -> str:
    """Text PostgreSQL accepts (no NUL, valid UTF-8) and that fits a column of ``limit``."""
    cleaned = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return cleaned[:limit]


def _storable(value: Any) -> bool:
    """True if every string inside can go into a PostgreSQL text or jsonb value."""
    if isinstance(value, str):
        if "\x00" in value:
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates from JSON "\ud800" escapes
            return False
        return True
    if isinstance(value, dict):
        return all(_storable(key) and _storable(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return all(_storable(item) for item in value)
    return True


def _may_hold_unstorable(payload: bytes) -> bool:
    """False when no string in the payload can hold a NUL or a lone surrogate.

    JSON spells both as a ``\\u`` escape, and a raw surrogate in UTF-8 starts with byte
    0xED; a payload with neither needs no walk over the parsed message (the hot path).
    """
    return b"\\u" in payload or b"\xed" in payload


def _check_storable(message: BaseModel, kind: str, payload: bytes) -> None:
    if not _may_hold_unstorable(payload):
        return
    if not _storable(message.model_dump(mode="json")):
        raise MessageError(kind, "", "text must not contain NUL characters or lone surrogates")


def _telemetry(serial: str, envelope: Envelope) -> TelemetryRecord:
    message = parse_message(Telemetry, envelope.payload)
    _check_storable(message, "telemetry", envelope.payload)
    if message.firmware is not None and len(message.firmware) > FIRMWARE_MAX:
        raise MessageError("telemetry", "firmware", f"longer than {FIRMWARE_MAX} characters")
    if message.model is not None and len(message.model) > MODEL_MAX:
        raise MessageError("telemetry", "model", f"longer than {MODEL_MAX} characters")
    if message.uptime_s is not None and message.uptime_s > UPTIME_MAX:
        raise MessageError("telemetry", "uptime_s", f"larger than {UPTIME_MAX}")
    errors = [error.model_dump(mode="json") for error in message.errors]
    return TelemetryRecord(
        serial=serial,
        envelope=envelope,
        message_id=message.id,
        ts=message.ts,
        device_status=message.status,
        firmware_version=message.firmware,
        cpu_pct=message.terminal.cpu,
        memory_pct=message.terminal.memory,
        disk_pct=message.terminal.disk,
        host_name=message.host.name,
        host_cpu_pct=message.host.cpu,
        host_memory_pct=message.host.memory,
        host_disk_pct=message.host.disk,
        errors_json=json.dumps(errors) if errors else None,
        model=message.model,
        uptime_s=message.uptime_s,
        seq=message.sequence,
    )


def _presence(serial: str, envelope: Envelope) -> PresenceRecord:
    message = parse_message(Presence, envelope.payload)
    _check_storable(message, "status", envelope.payload)
    return PresenceRecord(serial, envelope, message.state, message.reason, message.ts)


def _event(serial: str, envelope: Envelope) -> EventRecord:
    message = parse_message(Event, envelope.payload)
    _check_storable(message, "event", envelope.payload)
    return EventRecord(serial, envelope, message.id, message.ts, message, message.sequence)


def _command_result(serial: str, command_id: str, envelope: Envelope) -> CommandResultRecord:
    message = parse_message(CommandResult, envelope.payload)
    _check_storable(message, "cmd-result", envelope.payload)
    if message.id != command_id:
        raise MessageError(
            "cmd-result", "id", f"{message.id!r} does not match the topic's {command_id!r}"
        )
    return CommandResultRecord(
        serial=serial,
        envelope=envelope,
        command_id=command_id,
        status=message.status.value,
        output_json=json.dumps(message.output),
        error=message.error,
        finished_at=_sane_finish(message.finished_at, envelope.received_at),
        seq=message.sequence,
    )


def _sane_finish(finished_at: datetime, received_at: datetime) -> datetime:
    """The agent's finish time, or the receive time when the store PC's clock is off:
    a result is worth more than its timestamp, and out of the window it would break
    the pages that show it (year 1) or sort it into the future."""
    if finished_at < EARLIEST or finished_at - received_at > DEFAULT_MAX_FUTURE:
        return received_at
    return finished_at


def _reason_of(error: MessageError) -> str:
    return REASON_UNSUPPORTED_VERSION if error.field == "v" else REASON_BAD_PAYLOAD


def _time_rejection(record: Record, max_future: timedelta) -> Rejection | None:
    """A device's time that would go into a column, outside the sane window."""
    if not isinstance(record, TelemetryRecord | EventRecord):
        return None  # a result's time is made sane instead (_command_result)
    name, ts = "ts", record.ts
    sequence = None if record.seq is None else (record.serial, *record.seq)
    if ts < EARLIEST:
        detail = f"{name} {ts.isoformat()} is before {EARLIEST:%Y-%m-%d}: the device clock is wrong"
        return Rejection(record.envelope, REASON_PAST_TIMESTAMP, detail, sequence)
    if ts - record.envelope.received_at <= max_future:
        return None
    ahead = (ts - record.envelope.received_at).total_seconds()
    detail = f"{name} {ts.isoformat()} is {ahead:.0f} s ahead of the receive time"
    return Rejection(record.envelope, REASON_FUTURE_TIMESTAMP, detail, sequence)


def decode(
    topic: str,
    payload: bytes,
    received_at: datetime,
    max_future: timedelta = DEFAULT_MAX_FUTURE,
    *,
    retained: bool = False,
) -> Decoded:
    """The one entry point: a record for a usable message, else a Rejection saying why.

    ``retained``: the broker delivered a stored retained message (MQTT sets the flag
    only then), which is refused on every topic but status.
    """
    decoded = _decode(topic, payload, received_at)
    if isinstance(decoded, Rejection):
        return decoded
    if retained and not isinstance(decoded, PresenceRecord):
        detail = "a retained message: only status (the last will) may be retained"
        return Rejection(decoded.envelope, REASON_RETAINED, detail)
    return _time_rejection(decoded, max_future) or decoded


def _decode(topic: str, payload: bytes, received_at: datetime) -> Decoded:
    envelope = Envelope(topic, bytes(payload), received_at)
    try:
        parsed = topics.parse(topic)
    except TopicError as exc:
        return Rejection(envelope, REASON_BAD_TOPIC, safe_text(str(exc), DETAIL_MAX))
    try:
        match parsed.kind:
            case topics.TopicKind.TELEMETRY:
                return _telemetry(parsed.serial, envelope)
            case topics.TopicKind.STATUS:
                return _presence(parsed.serial, envelope)
            case topics.TopicKind.EVENT:
                return _event(parsed.serial, envelope)
            case topics.TopicKind.COMMAND_RESULT:
                assert parsed.command_id is not None
                return _command_result(parsed.serial, parsed.command_id, envelope)
            case _:
                # Commands flow console -> agent; ingest never subscribes to them.
                return Rejection(
                    envelope, REASON_BAD_TOPIC, f"ingest does not take {parsed.kind.value} topics"
                )
    except MessageError as exc:
        detail = safe_text(str(exc), DETAIL_MAX)
        return Rejection(envelope, _reason_of(exc), detail, _sequence_of(parsed.serial, payload))


def _sequence_of(serial: str, payload: bytes) -> tuple[str, str, int] | None:
    """The number of a message refused for its content, if it has a well-formed one."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    stream, seq = data.get("stream"), data.get("seq")
    if not isinstance(stream, str) or not _STREAM.fullmatch(stream):
        return None
    if type(seq) is not int or not 1 <= seq <= SEQ_MAX:
        return None
    return (serial, stream, seq)
