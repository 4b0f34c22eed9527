"""The MQTT topic trees: builders, a parser for each tree, and checks for filters.

Every topic a terminal uses lives under ``tms/v1/<serial>/``::

    tms/v1/<serial>/telemetry              agent -> platform, heartbeat with metrics
    tms/v1/<serial>/status                 agent -> platform, retained presence (and last will)
    tms/v1/<serial>/event                  agent -> platform, errors and state changes
    tms/v1/<serial>/cmd/<command-id>       console -> agent
    tms/v1/<serial>/cmd-result/<command-id> agent -> platform

Support scripts ask the command sender for commands in a tree of their own, outside
``tms/v1/`` so that no serial can collide with it (docs/command-requests.md)::

    tms/requests/<account>/cmd/<request-id>    support script -> sender
    tms/requests/<account>/reply/<request-id>  sender -> support script
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from shared.errors import TopicError

ROOT = "tms/v1"

# A serial is also the terminal's MQTT username, so it must never contain MQTT
# wildcards, separators or characters that broker ACL substitution treats specially.
SERIAL_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
COMMAND_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
# An account name in the request tree follows the serial's rules for the same reasons;
# service accounts may be named more freely (registry.provisioning), but only one named
# like this can use the request topics.
ACCOUNT_PATTERN = SERIAL_PATTERN

_SERIAL_RE = re.compile(rf"^{SERIAL_PATTERN}$")
_COMMAND_ID_RE = re.compile(rf"^{COMMAND_ID_PATTERN}$")
_ACCOUNT_RE = re.compile(rf"^{ACCOUNT_PATTERN}$")
_TOPIC_RE = re.compile(
    rf"^tms/v1/(?P<serial>{SERIAL_PATTERN})/"
    rf"(?:(?P<kind>telemetry|status|event)"
    rf"|(?P<cmdkind>cmd|cmd-result)/(?P<command_id>{COMMAND_ID_PATTERN}))$"
)


REQUESTS_ROOT = "tms/requests"
_REQUEST_TOPIC_RE = re.compile(
    rf"^tms/requests/(?P<account>{ACCOUNT_PATTERN})/(?P<kind>cmd|reply)"
    rf"/(?P<request_id>{COMMAND_ID_PATTERN})$"
)


class TopicKind(StrEnum):
    TELEMETRY = "telemetry"
    STATUS = "status"
    EVENT = "event"
    COMMAND = "cmd"
    COMMAND_RESULT = "cmd-result"


# The regular expression admits only these names; a dict is cheaper than TopicKind(...)
# on ingest's path, once per message.
_KINDS = {kind.value: kind for kind in TopicKind}


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed TMS topic; ``command_id`` is set only for cmd and cmd-result."""

    serial: str
    kind: TopicKind
    command_id: str | None = None

    def __str__(self) -> str:
        base = f"{ROOT}/{self.serial}/{self.kind.value}"
        return f"{base}/{self.command_id}" if self.command_id is not None else base


def is_valid_serial(serial: str) -> bool:
    return bool(_SERIAL_RE.fullmatch(serial))


def check_serial(serial: str) -> str:
    if not isinstance(serial, str) or not _SERIAL_RE.fullmatch(serial):
        raise TopicError(
            f"invalid terminal serial {serial!r}: use 1-64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return serial


def check_command_id(command_id: str) -> str:
    if not isinstance(command_id, str) or not _COMMAND_ID_RE.fullmatch(command_id):
        raise TopicError(f"invalid command id {command_id!r}: use 1-64 letters, digits, '_' or '-'")
    return command_id


def is_valid_account(account: str) -> bool:
    return isinstance(account, str) and bool(_ACCOUNT_RE.fullmatch(account))


def check_account(account: str) -> str:
    if not is_valid_account(account):
        raise TopicError(
            f"invalid account name {account!r} for the request topics: use 1-64 letters,"
            " digits, '.', '_' or '-', starting with a letter or digit"
        )
    return account


def check_request_id(request_id: str) -> str:
    if not isinstance(request_id, str) or not _COMMAND_ID_RE.fullmatch(request_id):
        raise TopicError(f"invalid request id {request_id!r}: use 1-64 letters, digits, '_' or '-'")
    return request_id


def telemetry(serial: str) -> str:
    return f"{ROOT}/{check_serial(serial)}/telemetry"


def status(serial: str) -> str:
    return f"{ROOT}/{check_serial(serial)}/status"


def event(serial: str) -> str:
    return f"{ROOT}/{check_serial(serial)}/event"


def command(serial: str, command_id: str) -> str:
    return f"{ROOT}/{check_serial(serial)}/cmd/{check_command_id(command_id)}"


def command_result(serial: str, command_id: str) -> str:
    return f"{ROOT}/{check_serial(serial)}/cmd-result/{check_command_id(command_id)}"


def command_filter(serial: str) -> str:
    """The one subscription an agent makes: every command for its terminal."""
    return f"{ROOT}/{check_serial(serial)}/cmd/+"


# What the ingest service subscribes to: everything terminals publish.
INGEST_FILTERS: tuple[str, ...] = (
    f"{ROOT}/+/telemetry",
    f"{ROOT}/+/status",
    f"{ROOT}/+/event",
    f"{ROOT}/+/cmd-result/+",
)


def command_request(account: str, request_id: str) -> str:
    """Where a support script asks the sender for a command."""
    return f"{REQUESTS_ROOT}/{check_account(account)}/cmd/{check_request_id(request_id)}"


def command_request_reply(account: str, request_id: str) -> str:
    """Where the sender answers a request: once on acceptance or refusal, once at the end."""
    return f"{REQUESTS_ROOT}/{check_account(account)}/reply/{check_request_id(request_id)}"


def command_reply_filter(account: str) -> str:
    """The one subscription a support script makes: the replies to its own requests."""
    return f"{REQUESTS_ROOT}/{check_account(account)}/reply/+"


# What the sender subscribes to: every account's requests (the ACL lets each script
# publish only under its own name, so the account level says who asked).
COMMAND_REQUEST_FILTER = f"{REQUESTS_ROOT}/+/cmd/+"


class RequestKind(StrEnum):
    COMMAND = "cmd"
    REPLY = "reply"


_REQUEST_KINDS = {kind.value: kind for kind in RequestKind}


@dataclass(frozen=True, slots=True)
class RequestTopic:
    """A parsed topic of the request tree."""

    account: str
    kind: RequestKind
    request_id: str

    def __str__(self) -> str:
        return f"{REQUESTS_ROOT}/{self.account}/{self.kind.value}/{self.request_id}"


def parse_request_topic(topic: str) -> RequestTopic:
    """Parse a concrete topic of the request tree, or raise TopicError saying why not."""
    if not isinstance(topic, str):
        raise TopicError(f"topic must be a string, not {type(topic).__name__}")
    match = _REQUEST_TOPIC_RE.fullmatch(topic)
    if match is None:
        raise TopicError(f"not a TMS request topic: {topic[:200]!r}")
    return RequestTopic(match["account"], _REQUEST_KINDS[match["kind"]], match["request_id"])


def parse(topic: str) -> Topic:
    """Parse a concrete (wildcard-free) ``tms/v1/`` topic, or raise TopicError saying why not."""
    if not isinstance(topic, str):
        raise TopicError(f"topic must be a string, not {type(topic).__name__}")
    match = _TOPIC_RE.fullmatch(topic)
    if match is None:
        raise TopicError(f"not a TMS v1 topic: {topic[:200]!r}")
    if match["kind"] is not None:
        return Topic(match["serial"], _KINDS[match["kind"]])
    return Topic(match["serial"], _KINDS[match["cmdkind"]], match["command_id"])


def check_filter(topic_filter: str) -> str:
    """Check MQTT subscription-filter syntax (MQTT 3.1.1 section 4.7); return it unchanged."""
    if not isinstance(topic_filter, str) or not topic_filter:
        raise TopicError("a topic filter must be a non-empty string")
    if "\x00" in topic_filter or len(topic_filter.encode("utf-8", "surrogatepass")) > 65535:
        raise TopicError("a topic filter must not contain NUL or exceed 65535 bytes")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise TopicError(f"'#' must be a whole last level in filter {topic_filter!r}")
        if "+" in level and level != "+":
            raise TopicError(f"'+' must be a whole level in filter {topic_filter!r}")
    return topic_filter


def check_publish_topic(topic: str) -> str:
    """Check that a topic may be published to at all: no wildcards, not empty."""
    if not isinstance(topic, str) or not topic:
        raise TopicError("a publish topic must be a non-empty string")
    if "+" in topic or "#" in topic or "\x00" in topic:
        raise TopicError(f"a publish topic must not contain wildcards: {topic[:200]!r}")
    return topic
