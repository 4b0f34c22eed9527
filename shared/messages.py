"""Versioned MQTT message schemas (v1) and the one function that parses payloads.

Messages are wire formats, not tables: ingest maps them onto ``shared.models``.
Within a schema version, unknown fields are ignored so that a newer agent can add
a field without older ingest daemons rejecting its messages; anything that changes
the meaning of a field needs a new version.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from shared.errors import MessageError
from shared.topics import COMMAND_ID_PATTERN, SERIAL_PATTERN

SCHEMA_VERSION: Literal[1] = 1
SUPPORTED_VERSIONS = frozenset({1})
MAX_PAYLOAD_BYTES = 64 * 1024

Percent = Annotated[float, Field(ge=0, le=100)]
ShortText = Annotated[str, Field(max_length=200)]
MessageId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
# An agent's message numbering (agent/outbox.py, ingest/sequence.py): the stream's name
# sorts by its start, and the numbers count from 1 within it.
SEQ_MAX = 2**63 - 1
SeqNumber = Annotated[int, Field(ge=1, le=SEQ_MAX)]
StreamName = Annotated[str, Field(pattern=r"^[0-9a-z]{1,32}$")]


def new_message_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    v: Literal[1] = SCHEMA_VERSION

    def to_payload(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class _Sequenced(_Message):
    """A message an agent numbers: ``seq`` within ``stream``, both or neither."""

    seq: SeqNumber | None = None
    stream: StreamName | None = None

    @property
    def sequence(self) -> tuple[str, int] | None:
        if self.seq is None or self.stream is None:
            return None
        return (self.stream, self.seq)


def stamp_sequence(payload: bytes, stream: str, seq: int) -> bytes:
    """``payload`` (as ``to_payload`` makes it) with its stream and number, still canonical.

    The queue numbers a message when it takes it, after the payload was made; splicing
    the two fields in after ``{"v":1,`` costs nothing next to parsing and dumping again.
    """
    if not payload.startswith(_CANONICAL_PREFIX) or b'"seq"' in payload:
        raise ValueError("only an unnumbered payload made by to_payload can be numbered")
    fields = f'"seq":{seq},"stream":"{stream}",'.encode()
    return _CANONICAL_PREFIX + fields + payload[len(_CANONICAL_PREFIX) :]


class DeviceStatus(StrEnum):
    """The TC-200's own state as its agent sees it over USB."""

    OK = "ok"
    ERROR = "error"
    UNPLUGGED = "unplugged"
    BUSY = "busy"
    UPDATING = "updating"


class Metrics(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    cpu: Percent | None = None
    memory: Percent | None = None
    disk: Percent | None = None


class HostMetrics(Metrics):
    """The store PC the terminal hangs off."""

    name: ShortText | None = None


class DeviceError(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    code: ShortText
    message: Annotated[str, Field(max_length=1000)] = ""


class Telemetry(_Sequenced):
    """A heartbeat: the terminal's status and metrics, sent every interval and on change."""

    id: MessageId = Field(default_factory=new_message_id)
    ts: AwareDatetime = Field(default_factory=utcnow)
    status: DeviceStatus
    model: ShortText | None = None
    firmware: ShortText | None = None
    uptime_s: Annotated[int, Field(ge=0)] | None = None
    # Factories, not shared instances: pydantic deep-copies a default per message.
    terminal: Metrics = Field(default_factory=Metrics)
    host: HostMetrics = Field(default_factory=HostMetrics)
    errors: Annotated[list[DeviceError], Field(max_length=50, default_factory=list)]


class PresenceState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class Presence(_Message):
    """Retained on ``.../status``: online on connect, offline as the last will."""

    state: PresenceState
    ts: AwareDatetime | None = None
    reason: ShortText | None = None


class EventSeverity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class Event(_Sequenced):
    id: MessageId = Field(default_factory=new_message_id)
    ts: AwareDatetime = Field(default_factory=utcnow)
    kind: ShortText
    severity: EventSeverity = EventSeverity.INFO
    code: ShortText | None = None
    message: Annotated[str, Field(max_length=2000)] = ""


class Command(_Message):
    """Console -> agent on ``.../cmd/<id>``; ``id`` repeats the topic's command id."""

    id: MessageId
    name: Annotated[str, Field(min_length=1, max_length=64)]
    args: dict[str, Any] = Field(default_factory=dict)
    issued_at: AwareDatetime = Field(default_factory=utcnow)
    expires_at: AwareDatetime | None = None


class CommandStatus(StrEnum):
    OK = "ok"
    ERROR = "error"
    REJECTED = "rejected"


class CommandResult(_Sequenced):
    id: MessageId
    status: CommandStatus
    output: dict[str, Any] = Field(default_factory=dict)
    error: Annotated[str, Field(max_length=2000)] | None = None
    finished_at: AwareDatetime = Field(default_factory=utcnow)


Serial = Annotated[str, Field(pattern=rf"^{SERIAL_PATTERN}$")]
RequestId = Annotated[str, Field(pattern=rf"^{COMMAND_ID_PATTERN}$")]


class CommandRequest(_Message):
    """Support script -> sender on ``tms/requests/<account>/cmd/<request-id>``.

    The topic says who asks and names the request; the sender checks the command, its
    arguments and expiry against the catalogue and the account's role, so they are only
    shaped here (docs/command-requests.md).
    """

    serial: Serial
    name: Annotated[str, Field(min_length=1, max_length=64)]
    args: dict[str, Any] = Field(default_factory=dict)
    expires_in_s: float | None = None


class RequestState(StrEnum):
    """A reply's state: ``refused`` (nothing was queued), else the command's own state.

    The values after ``refused`` are ``shared.command_states.CommandState``'s, which
    cannot be imported here (it imports this module); a unit test keeps them equal.
    """

    REFUSED = "refused"
    QUEUED = "queued"
    SENT = "sent"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


_REQUEST_STATES = frozenset(state.value for state in RequestState)


def _known_request_state(state: str) -> str:
    if state not in _REQUEST_STATES:
        raise ValueError(f"must be one of {', '.join(RequestState)}")
    return state


# A plain str to callers (a CommandState or a row's status passes as it is), checked
# against RequestState's values.
ReplyState = Annotated[str, AfterValidator(_known_request_state)]


class CommandRequestReply(_Message):
    """Sender -> support script on ``tms/requests/<account>/reply/<request-id>``.

    One when the request is accepted (``queued``, with the command id) or refused (with
    the reason in ``error``), and one when the command reaches a final state.
    """

    request_id: RequestId
    state: ReplyState
    command_id: MessageId | None = None
    error: Annotated[str, Field(max_length=2000)] | None = None
    output: dict[str, Any] = Field(default_factory=dict)
    at: AwareDatetime = Field(default_factory=utcnow)


M = TypeVar("M", bound=_Message)

_KIND_NAMES: dict[type[_Message], str] = {
    Telemetry: "telemetry",
    Presence: "status",
    Event: "event",
    Command: "cmd",
    CommandResult: "cmd-result",
    CommandRequest: "command request",
    CommandRequestReply: "command request reply",
}


# What every TMS agent's payload starts with (``to_payload``: ``v`` is the first field,
# no spaces): the schema version is then exactly the integer 1, as parse_message requires.
_CANONICAL_PREFIX = b'{"v":1,'


def parse_message(model: type[M], payload: bytes | str) -> M:
    """Decode and validate one payload, or raise MessageError naming the field."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8", "surrogatepass")
    fast = _parse_canonical(model, payload)
    return fast if fast is not None else _parse_checked(model, payload)


def _parse_canonical(model: type[M], payload: bytes) -> M | None:
    """The hot path: pydantic's own JSON parser, for payloads shaped as agents send them.

    It takes only what ``_parse_checked`` would accept with the same result, and returns
    None for everything else, which then gets the full checks and their exact errors:
    a version spelled otherwise (``1.0``, ``true``, a second ``"v"`` key), ``\\u`` escapes
    (json.loads and pydantic treat a lone surrogate differently), any validation error.
    """
    if (
        not payload.startswith(_CANONICAL_PREFIX)
        or len(payload) > MAX_PAYLOAD_BYTES
        or payload.count(b'"v"') != 1
        or b"\\u" in payload
    ):
        return None
    try:
        return model.model_validate_json(payload)
    except (ValidationError, RecursionError):
        return None


def _parse_checked(model: type[M], payload: bytes) -> M:
    kind = _KIND_NAMES.get(model, model.__name__)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MessageError(kind, "", f"larger than {MAX_PAYLOAD_BYTES} bytes")
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise MessageError(kind, "", f"not valid UTF-8 JSON ({exc.__class__.__name__})") from exc
    if not isinstance(data, dict):
        raise MessageError(kind, "", f"must be a JSON object, not {type(data).__name__}")
    version = data.get("v")
    if version is None:
        raise MessageError(kind, "v", "missing schema version")
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise MessageError(kind, "v", f"unsupported schema version {version!r} (supported: 1)")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise MessageError(kind, field, first["msg"]) from None
    except RecursionError as exc:
        raise MessageError(kind, "", "nested too deeply") from exc
