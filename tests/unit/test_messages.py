"""Message schemas: valid payloads parse; every bad one raises MessageError naming the field."""

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.command_states import CommandState
from shared.errors import MessageError
from shared.messages import (
    Command,
    CommandRequest,
    CommandRequestReply,
    CommandResult,
    DeviceStatus,
    Event,
    Metrics,
    Presence,
    PresenceState,
    RequestState,
    Telemetry,
    parse_message,
)

MODELS = [Telemetry, Presence, Event, Command, CommandResult, CommandRequest, CommandRequestReply]


def test_telemetry_round_trips() -> None:
    sent = Telemetry(
        status=DeviceStatus.OK,
        firmware="2.1.0",
        terminal=Metrics(cpu=12.5, memory=40, disk=70),
        ts=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    received = parse_message(Telemetry, sent.to_payload())
    assert received == sent
    assert received.terminal.cpu == 12.5


def test_presence_and_command_round_trip() -> None:
    will = Presence(state=PresenceState.OFFLINE, reason="agent disconnected")
    assert parse_message(Presence, will.to_payload()).reason == "agent disconnected"
    cmd = Command(id="c1", name="ping")
    assert parse_message(Command, cmd.to_payload()).name == "ping"


def test_unknown_fields_are_ignored_within_a_version() -> None:
    payload = json.dumps({"v": 1, "status": "ok", "new_field_from_newer_agent": 1})
    assert parse_message(Telemetry, payload).status is DeviceStatus.OK


def _telemetry(**overrides: object) -> bytes:
    body: dict[str, object] = {"v": 1, "status": "ok", "ts": "2026-01-01T00:00:00Z"}
    body.update(overrides)
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("payload", "field", "reason"),
    [
        (b"not json", "", "JSON"),
        (b"\xff\xfe", "", "JSON"),
        (b"[1, 2]", "", "object"),
        (b"{}", "v", "missing"),
        (_telemetry(v=2), "v", "unsupported"),
        (_telemetry(v="1"), "v", "unsupported"),
        (_telemetry(v=True), "v", "unsupported"),
        (_telemetry(status="exploded"), "status", ""),
        (_telemetry(terminal={"cpu": 900}), "terminal.cpu", "less than or equal"),
        (_telemetry(terminal={"memory": -1}), "terminal.memory", "greater than"),
        (_telemetry(ts="2026-01-01T00:00:00"), "ts", "timezone"),
        (_telemetry(ts="yesterday"), "ts", ""),
        (_telemetry(id="has space"), "id", ""),
        (_telemetry(errors=[{"message": "no code"}]), "errors.0.code", "required"),
        (b'{"v": 1, "status": "ok", "terminal": {"cpu": NaN}}', "terminal.cpu", ""),
        (b"[" * 100_000, "", ""),
        (b"{" + b" " * (70 * 1024) + b"}", "", "larger"),
    ],
)
def test_bad_telemetry_names_the_field(payload: bytes, field: str, reason: str) -> None:
    with pytest.raises(MessageError) as caught:
        parse_message(Telemetry, payload)
    assert caught.value.field == field
    assert reason in str(caught.value)
    assert "telemetry" in str(caught.value)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
_field_names = st.sampled_from(
    ["v", "id", "ts", "status", "terminal", "host", "errors", "state", "name", "args", "cpu"]
    + ["serial", "expires_in_s", "request_id", "command_id", "output", "error", "at"]
)
_near_valid = st.dictionaries(_field_names, _json_values | st.just(1), max_size=8).map(
    lambda d: json.dumps(d, allow_nan=True).encode()
)


@given(model=st.sampled_from(MODELS), payload=st.binary(max_size=300) | _near_valid)
def test_validation_raises_only_message_error(model: type, payload: bytes) -> None:
    try:
        parse_message(model, payload)
    except MessageError as exc:
        assert str(exc).startswith("invalid ")


@pytest.mark.parametrize(
    "payload",
    [
        b'{"v":1,"status":"ok","v":true}',  # the canonical start, but a second version
        b'{"v":1,"status":"ok","v":2}',
        b'{"v":1.0,"status":"ok"}',
        b'{"v":true,"status":"ok"}',
    ],
)
def test_a_version_that_is_not_the_integer_1_is_refused_however_it_is_spelled(
    payload: bytes,
) -> None:
    with pytest.raises(MessageError) as caught:
        parse_message(Telemetry, payload)
    assert caught.value.field == "v"


def test_agent_shaped_payloads_with_a_lone_surrogate_get_the_full_checks() -> None:
    payload = b'{"v":1,"status":"ok","host":{"name":"pc\\ud800"}}'
    with pytest.raises(MessageError) as caught:
        parse_message(Telemetry, payload)
    assert caught.value.field == "host.name"  # not "" (pydantic's own parser says JSON)


def _canonical(body: dict[str, object]) -> bytes:
    """A payload shaped as agents send it: ``v`` first, no spaces."""
    rest = json.dumps(body, separators=(",", ":"), allow_nan=True)[1:]
    return b'{"v":1' + (b"," if body else b"") + rest.encode()


def _outcome(parse: object, model: type, payload: bytes) -> object:
    try:
        message = parse(model, payload)  # type: ignore[operator]
    except MessageError as exc:
        return ("error", exc.field, str(exc))
    # Defaults drawn per message (a new id, the time now) are not compared.
    return ("ok", message.model_fields_set, message.model_dump(include=message.model_fields_set))


@given(
    model=st.sampled_from(MODELS),
    body=st.dictionaries(_field_names, _json_values | st.just(1), max_size=8)
    | st.fixed_dictionaries(
        {"status": st.sampled_from(["ok", "error"]), "ts": st.just("2026-01-01T00:00:00Z")},
        optional={"terminal": st.fixed_dictionaries({}, optional={"cpu": _json_values})},
    ),
)
def test_the_fast_path_agrees_with_the_full_checks(model: type, body: dict[str, object]) -> None:
    from shared.messages import _parse_checked

    payload = _canonical(body)
    assert _outcome(parse_message, model, payload) == _outcome(_parse_checked, model, payload)


def test_command_request_round_trips_with_defaults() -> None:
    sent = CommandRequest(serial="TC200-0001", name="fetch_logs", args={"lines": 50})
    received = parse_message(CommandRequest, sent.to_payload())
    assert received == sent
    assert received.expires_in_s is None
    bare = parse_message(CommandRequest, b'{"v":1,"serial":"S1","name":"ping"}')
    assert bare.args == {} and bare.expires_in_s is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "ping"}, "serial"),
        ({"serial": "S1"}, "name"),
        ({"serial": "a/b", "name": "ping"}, "serial"),
        ({"serial": "+", "name": "ping"}, "serial"),
        ({"serial": "S1\n", "name": "ping"}, "serial"),
        ({"serial": "S1", "name": ""}, "name"),
        ({"serial": "S1", "name": "x" * 65}, "name"),
        ({"serial": "S1", "name": "ping", "args": [1]}, "args"),
        ({"serial": "S1", "name": "ping", "expires_in_s": "soon"}, "expires_in_s"),
    ],
)
def test_bad_command_request_names_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(MessageError) as caught:
        parse_message(CommandRequest, json.dumps({"v": 1, **body}))
    assert caught.value.field == field
    assert "command request" in str(caught.value)


def test_command_request_reply_round_trips() -> None:
    accepted = CommandRequestReply(request_id="r-1", state="queued", command_id="c1")
    assert parse_message(CommandRequestReply, accepted.to_payload()) == accepted
    refused = CommandRequestReply(request_id="r-1", state=RequestState.REFUSED, error="no role")
    received = parse_message(CommandRequestReply, refused.to_payload())
    assert received.state == "refused" and received.command_id is None
    assert received.output == {} and received.at.tzinfo is not None
    done = CommandRequestReply(
        request_id="r-1", state=CommandState.SUCCEEDED, command_id="c1", output={"rtt_ms": 12}
    )
    assert parse_message(CommandRequestReply, done.to_payload()).output == {"rtt_ms": 12}


def test_a_reply_state_is_refused_or_a_command_state() -> None:
    assert {s.value for s in RequestState} == {"refused"} | {s.value for s in CommandState}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"state": "queued"}, "request_id"),
        ({"request_id": "r/1", "state": "queued"}, "request_id"),
        ({"request_id": "-r", "state": "queued"}, "request_id"),
        ({"request_id": "r1"}, "state"),
        ({"request_id": "r1", "state": "exploded"}, "state"),
        ({"request_id": "r1", "state": "failed", "error": "e" * 2001}, "error"),
        ({"request_id": "r1", "state": "queued", "command_id": "c/1"}, "command_id"),
        ({"request_id": "r1", "state": "queued", "at": "2026-01-01T00:00:00"}, "at"),
    ],
)
def test_bad_command_request_reply_names_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(MessageError) as caught:
        parse_message(CommandRequestReply, json.dumps({"v": 1, **body}))
    assert caught.value.field == field
