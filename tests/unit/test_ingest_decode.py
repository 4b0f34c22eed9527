"""ingest.decode: every topic/payload becomes a typed record or a Rejection, never an exception."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.decode import (
    REASON_BAD_PAYLOAD,
    REASON_BAD_TOPIC,
    REASON_PAST_TIMESTAMP,
    REASON_RETAINED,
    REASON_UNSUPPORTED_VERSION,
    CommandResultRecord,
    EventRecord,
    PresenceRecord,
    Rejection,
    TelemetryRecord,
    decode,
    safe_text,
)
from shared.messages import DeviceStatus, PresenceState, stamp_sequence

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _json(**body: object) -> bytes:
    return json.dumps({"v": 1, **body}).encode()


TELEMETRY = _json(
    id="m1",
    ts="2026-11-22T11:59:00Z",
    status="ok",
    firmware="2.1.0",
    terminal={"cpu": 10, "memory": 20, "disk": 30},
    host={"name": "till-1", "cpu": 1.5},
    errors=[{"code": "E1", "message": "paper low"}],
)


def test_telemetry_becomes_a_flat_record() -> None:
    record = decode("tms/v1/TC-1/telemetry", TELEMETRY, NOW)
    assert isinstance(record, TelemetryRecord)
    assert record.serial == "TC-1"
    assert record.message_id == "m1"
    assert record.ts == datetime(2026, 11, 22, 11, 59, tzinfo=UTC)
    assert record.device_status is DeviceStatus.OK
    assert (record.cpu_pct, record.memory_pct, record.disk_pct) == (10, 20, 30)
    assert (record.host_name, record.host_cpu_pct, record.host_memory_pct) == ("till-1", 1.5, None)
    assert json.loads(record.errors_json or "") == [{"code": "E1", "message": "paper low"}]
    assert record.envelope.payload == TELEMETRY
    assert record.envelope.received_at == NOW


def test_telemetry_carries_model_and_uptime_when_sent() -> None:
    body = _json(status="ok", ts=NOW.isoformat(), model="TC-200", uptime_s=86400)
    record = decode("tms/v1/TC-1/telemetry", body, NOW)
    assert isinstance(record, TelemetryRecord)
    assert (record.model, record.uptime_s) == ("TC-200", 86400)
    bare = decode("tms/v1/TC-1/telemetry", TELEMETRY, NOW)
    assert isinstance(bare, TelemetryRecord)
    assert (bare.model, bare.uptime_s) == (None, None)


def test_telemetry_without_errors_stores_none() -> None:
    # A ts of its own: the default (the time of parsing) is days after the fixed NOW.
    record = decode("tms/v1/TC-1/telemetry", _json(status="busy", ts=NOW.isoformat()), NOW)
    assert isinstance(record, TelemetryRecord)
    assert record.errors_json is None
    assert record.device_status is DeviceStatus.BUSY


def test_presence_event_and_command_result() -> None:
    presence = decode("tms/v1/TC-1/status", _json(state="offline", reason="bye"), NOW)
    assert isinstance(presence, PresenceRecord)
    assert (presence.state, presence.reason) == (PresenceState.OFFLINE, "bye")

    event = decode("tms/v1/TC-1/event", _json(id="e1", kind="reboot", ts=NOW.isoformat()), NOW)
    assert isinstance(event, EventRecord)
    assert event.event.kind == "reboot"

    result = decode(
        "tms/v1/TC-1/cmd-result/c1",
        _json(id="c1", status="ok", output={"pong": True}, finished_at=NOW.isoformat()),
        NOW,
    )
    assert isinstance(result, CommandResultRecord)
    assert (result.command_id, result.status) == ("c1", "ok")
    assert json.loads(result.output_json) == {"pong": True}


@pytest.mark.parametrize(
    ("topic", "payload", "reason", "detail_part"),
    [
        ("tms/v2/TC-1/telemetry", TELEMETRY, REASON_BAD_TOPIC, "not a TMS v1 topic"),
        ("tms/v1/TC-1/unknown", TELEMETRY, REASON_BAD_TOPIC, "not a TMS v1 topic"),
        ("tms/v1/TC-1/cmd/c1", _json(id="c1", name="ping"), REASON_BAD_TOPIC, "cmd"),
        ("tms/v1/TC-1/telemetry", b"{not json", REASON_BAD_PAYLOAD, "JSON"),
        ("tms/v1/TC-1/telemetry", b"[]", REASON_BAD_PAYLOAD, "JSON object"),
        ("tms/v1/TC-1/telemetry", b'{"status": "ok"}', REASON_UNSUPPORTED_VERSION, "missing"),
        ("tms/v1/TC-1/telemetry", b'{"v": 2, "status": "ok"}', REASON_UNSUPPORTED_VERSION, "2"),
        ("tms/v1/TC-1/telemetry", _json(status="melted"), REASON_BAD_PAYLOAD, "'status'"),
        ("tms/v1/TC-1/telemetry", _json(status="ok", ts="yesterday"), REASON_BAD_PAYLOAD, "ts"),
        (
            "tms/v1/TC-1/telemetry",
            _json(status="ok", terminal={"cpu": 101}),
            REASON_BAD_PAYLOAD,
            "terminal.cpu",
        ),
        (
            "tms/v1/TC-1/telemetry",
            _json(status="ok", firmware="x" * 65),
            REASON_BAD_PAYLOAD,
            "firmware",
        ),
        ("tms/v1/TC-1/telemetry", _json(status="ok", model="a\x00b"), REASON_BAD_PAYLOAD, "NUL"),
        # The terminal row's columns: a model of 64 characters, uptime as a bigint.
        ("tms/v1/TC-1/telemetry", _json(status="ok", model="m" * 65), REASON_BAD_PAYLOAD, "model"),
        (
            "tms/v1/TC-1/telemetry",
            _json(status="ok", uptime_s=2**63),
            REASON_BAD_PAYLOAD,
            "uptime_s",
        ),
        ("tms/v1/TC-1/telemetry", _json(status="ok", uptime_s=-1), REASON_BAD_PAYLOAD, "uptime_s"),
        (
            "tms/v1/TC-1/event",
            b'{"v": 1, "kind": "x", "message": "\\ud800"}',
            REASON_BAD_PAYLOAD,
            "'message'",
        ),
        ("tms/v1/TC-1/status", _json(state="asleep"), REASON_BAD_PAYLOAD, "state"),
        (
            "tms/v1/TC-1/cmd-result/c1",
            _json(id="c2", status="ok"),
            REASON_BAD_PAYLOAD,
            "does not match",
        ),
        (
            "tms/v1/TC-1/cmd-result/c1",
            _json(id="c1", status="ok", output={"k": "\x00"}),
            REASON_BAD_PAYLOAD,
            "NUL",
        ),
    ],
)
def test_rejections_say_why(topic: str, payload: bytes, reason: str, detail_part: str) -> None:
    rejection = decode(topic, payload, NOW)
    assert isinstance(rejection, Rejection)
    assert rejection.reason == reason
    assert detail_part in rejection.detail
    assert rejection.envelope.topic == topic
    assert rejection.envelope.payload == payload


def test_safe_text_is_storable_and_bounded() -> None:
    assert safe_text("a\x00b", 100) == "a\\x00b"
    assert safe_text("\ud800x", 100).encode("utf-8")
    assert len(safe_text("x" * 50, 10)) == 10


TOPICS = st.one_of(
    st.text(max_size=80),
    st.sampled_from(
        [
            "tms/v1/TC-1/telemetry",
            "tms/v1/TC-1/status",
            "tms/v1/TC-1/event",
            "tms/v1/TC-1/cmd-result/c1",
            "tms/v1/TC-1/cmd/c1",
        ]
    ),
)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    ["v", "id", "ts", "status", "state", "kind", "firmware", "terminal", "errors", "output"]
)
PAYLOADS = st.one_of(
    st.binary(max_size=200),
    st.dictionaries(FIELDS, JSON_VALUES, max_size=6).map(
        lambda body: json.dumps({"v": 1, **body}).encode()
    ),
)


@settings(max_examples=400, deadline=None)
@given(topic=TOPICS, payload=PAYLOADS)
def test_decode_never_raises(topic: str, payload: bytes) -> None:
    result = decode(topic, payload, NOW)
    assert isinstance(
        result, TelemetryRecord | PresenceRecord | EventRecord | CommandResultRecord | Rejection
    )
    if isinstance(result, Rejection):
        assert result.reason in {REASON_BAD_TOPIC, REASON_BAD_PAYLOAD, REASON_UNSUPPORTED_VERSION}


@pytest.mark.parametrize(
    ("topic", "fields", "reason"),
    [
        # The heartbeat that broke every page: year 1 at +23:59 is 1 BC in UTC.
        ("tms/v1/TC-1/telemetry", {"status": "ok", "ts": "0001-01-01T00:00:00+23:59"}, "past"),
        ("tms/v1/TC-1/telemetry", {"status": "ok", "ts": "1970-01-01T00:00:00Z"}, "past"),
        ("tms/v1/TC-1/event", {"id": "e", "kind": "k", "ts": "1999-12-31T23:59:59Z"}, "past"),
    ],
)
def test_device_times_outside_the_sane_window_are_dead_lettered(
    topic: str, fields: dict[str, object], reason: str
) -> None:
    rejected = decode(topic, _json(**fields), NOW)
    assert isinstance(rejected, Rejection), rejected
    assert rejected.reason == f"{reason}-timestamp"
    assert "ts" in rejected.detail


@pytest.mark.parametrize("finished_at", ["1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z"])
def test_a_result_from_a_wrong_clock_is_kept_with_its_receive_time(finished_at: str) -> None:
    result = decode(
        "tms/v1/TC-1/cmd-result/c1", _json(id="c1", status="ok", finished_at=finished_at), NOW
    )
    assert isinstance(result, CommandResultRecord) and result.finished_at == NOW


def test_a_retained_message_is_refused_except_presence() -> None:
    refused = decode("tms/v1/T-1/telemetry", TELEMETRY, NOW, retained=True)
    assert isinstance(refused, Rejection) and refused.reason == REASON_RETAINED
    presence = decode("tms/v1/T-1/status", _json(state="offline"), NOW, retained=True)
    assert isinstance(presence, PresenceRecord)


def test_numbers_are_kept_on_records_and_on_refused_messages() -> None:
    body = {"v": 1, "id": "m1", "status": "ok", "ts": "2026-11-22T11:59:00Z"}
    payload = json.dumps(body, separators=(",", ":")).encode()
    record = decode("tms/v1/T-1/telemetry", stamp_sequence(payload, "abc", 7), NOW)
    assert isinstance(record, TelemetryRecord) and record.seq == ("abc", 7)
    stale = _json(seq=8, stream="abc", id="m2", status="ok", ts="1970-01-01T00:00:00Z")
    refused = decode("tms/v1/T-1/telemetry", stale, NOW)
    assert isinstance(refused, Rejection) and refused.reason == REASON_PAST_TIMESTAMP
    assert refused.sequence == ("T-1", "abc", 8)
    broken = _json(seq=9, stream="abc", id="m3", status="no-such-status")
    refused = decode("tms/v1/T-1/telemetry", broken, NOW)
    assert isinstance(refused, Rejection) and refused.sequence == ("T-1", "abc", 9)
    for odd in (
        _json(seq=0, stream="abc"),
        _json(seq="9", stream="abc"),
        _json(seq=9, stream="A B"),
    ):
        refused = decode("tms/v1/T-1/telemetry", odd, NOW)
        assert isinstance(refused, Rejection) and refused.sequence is None
