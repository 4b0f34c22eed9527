"""What both real brokers do with retained and over-size publishes (docs/broker-security.md).

Only a terminal's ``status`` (its presence, and its last will) may be retained; a
retained heartbeat is refused like a publish on a forbidden topic. A packet over
``[broker] max_packet_bytes`` ends its connection and reaches no subscriber.
"""

from __future__ import annotations

import contextlib
import socket
import struct

import paho.mqtt.client as mqtt
import pytest

from shared import topics
from shared.models import AccountKind
from tests.fixtures.broker import ANSWER_TIMEOUT_S, MqttProbe, RunningBroker
from tests.fixtures.brokers import any_broker  # noqa: F401

pytestmark = pytest.mark.integration

V311 = mqtt.MQTTProtocolVersion.MQTTv311


def _reader(broker: RunningBroker, name: str, topic_filter: str) -> MqttProbe:
    """A support script reading ``topic_filter``: it may read every terminal topic."""
    secret = broker.service_account(AccountKind.SUPPORT_SCRIPT, name)
    probe = MqttProbe(broker, name, secret, protocol=V311)
    assert probe.connect() and probe.subscribe(topic_filter)
    return probe


def _terminal(broker: RunningBroker, serial: str) -> MqttProbe:
    secret = broker.provision_terminal(serial)
    probe = MqttProbe.terminal(broker, serial, secret, protocol=V311)
    assert probe.connect()
    return probe


def _publish_retained(probe: MqttProbe, topic: str, payload: bytes) -> None:
    """A retained QoS 1 publish; returns once the broker has acknowledged it."""
    info = probe.client.publish(topic, payload, qos=1, retain=True)
    info.wait_for_publish(ANSWER_TIMEOUT_S)
    assert info.is_published(), f"no PUBACK for the retained publish on {topic}"


def _until(probe: MqttProbe, payload: bytes) -> list[mqtt.MQTTMessage]:
    """Every message up to and including the one carrying ``payload``."""
    got = [probe.next_message()]
    while got[-1].payload != payload:
        got.append(probe.next_message())
    return got


def _retained_for_a_new_subscriber(broker: RunningBroker, name: str, topic_filter: str) -> list:
    late = _reader(broker, name, topic_filter)
    try:
        late.barrier("tms/v1/barrier/event")  # after what the subscription brought
        return [(m.topic, m.payload) for m in late.drain()]
    finally:
        late.close()


def test_a_retained_heartbeat_is_refused_not_kept_and_the_terminal_stays(
    any_broker: RunningBroker,  # noqa: F811
) -> None:
    reader = _reader(any_broker, "reader", "tms/v1/+/telemetry")
    terminal = _terminal(any_broker, "TC-R1")
    try:
        heartbeat = topics.telemetry("TC-R1")
        _publish_retained(terminal, heartbeat, b"retained 1970 heartbeat")
        # The same connection is still taken: a plain heartbeat goes through after it.
        assert terminal.publish(heartbeat, b"plain")
        assert not terminal.disconnected.is_set()
        got = _until(reader, b"plain")
        assert [m.payload for m in got] == [b"plain"], any_broker.kind  # never delivered
        assert not got[-1].retain
        # ... and not kept for whoever subscribes later.
        assert _retained_for_a_new_subscriber(any_broker, "late", "tms/v1/+/telemetry") == []
    finally:
        terminal.close()
        reader.close()


@pytest.mark.parametrize("leaf", ["event", "cmd-result/c-1"])
def test_events_and_results_are_not_retained_either(
    any_broker: RunningBroker,  # noqa: F811
    leaf: str,
) -> None:
    terminal = _terminal(any_broker, "TC-R2")
    try:
        _publish_retained(terminal, f"tms/v1/TC-R2/{leaf}", b"retained")
        assert terminal.publish("tms/v1/TC-R2/telemetry", b"after")  # processed in order
        assert _retained_for_a_new_subscriber(any_broker, "late", f"tms/v1/+/{leaf}") == []
    finally:
        terminal.close()


def test_a_terminals_retained_status_is_kept(any_broker: RunningBroker) -> None:  # noqa: F811
    terminal = _terminal(any_broker, "TC-R3")
    try:
        _publish_retained(terminal, topics.status("TC-R3"), b'{"online": true}')
    finally:
        terminal.close()
    kept = _retained_for_a_new_subscriber(any_broker, "late", "tms/v1/+/status")
    assert kept == [("tms/v1/TC-R3/status", b'{"online": true}')], any_broker.kind


def _field(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def _connect_with_retained_will(serial: str, secret: str, will: tuple[str, bytes]) -> bytes:
    """A raw MQTT 3.1.1 CONNECT with a retained QoS 1 will."""
    flags = 0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02  # user, password, will retain+QoS 1, clean
    variable = _field(b"MQTT") + bytes([4, flags]) + struct.pack("!H", 30)
    payload = b"".join(
        _field(part) for part in (serial.encode(), will[0].encode(), will[1], serial.encode())
    )
    body = variable + payload + _field(secret.encode())
    assert len(body) < 128
    return bytes([0x10, len(body)]) + body


def test_a_retained_last_will_on_status_is_kept(any_broker: RunningBroker) -> None:  # noqa: F811
    secret = any_broker.provision_terminal("TC-R4")
    reader = _reader(any_broker, "reader", "tms/v1/+/status")
    will = (topics.status("TC-R4"), b'{"online": false}')
    with socket.create_connection((any_broker.host, any_broker.port)) as raw:
        raw.sendall(_connect_with_retained_will("TC-R4", secret, will))
        assert raw.recv(4) == b"\x20\x02\x00\x00"  # accepted
    # Closed without a DISCONNECT: the will goes out, and is kept.
    message = reader.next_message()
    reader.close()
    assert (message.topic, message.payload) == will
    assert _retained_for_a_new_subscriber(any_broker, "late", "tms/v1/+/status") == [will]


def test_a_retained_last_will_on_telemetry_is_never_delivered(
    any_broker: RunningBroker,  # noqa: F811
) -> None:
    secret = any_broker.provision_terminal("TC-R5")
    reader = _reader(any_broker, "reader", "tms/v1/+/telemetry")
    will = (topics.telemetry("TC-R5"), b"retained will")
    with socket.create_connection((any_broker.host, any_broker.port)) as raw:
        raw.sendall(_connect_with_retained_will("TC-R5", secret, will))
        raw.recv(4)  # refused (amqtt), or accepted and the will dropped (Mosquitto)
    terminal = _terminal(any_broker, "TC-R6")
    try:
        assert terminal.publish(topics.telemetry("TC-R6"), b"marker")
        # The marker's connection was made after the first one ended.
        assert [m.payload for m in _until(reader, b"marker")] == [b"marker"], any_broker.kind
    finally:
        terminal.close()
        reader.close()
    assert _retained_for_a_new_subscriber(any_broker, "late", "tms/v1/+/telemetry") == []


def test_a_100_kb_publish_closes_its_connection_and_reaches_no_one(
    any_broker: RunningBroker,  # noqa: F811
) -> None:
    reader = _reader(any_broker, "reader", "tms/v1/+/telemetry")
    terminal = _terminal(any_broker, "TC-BIG")
    try:
        # The largest payload TMS sends (64 KiB) still goes through, on both brokers.
        assert terminal.publish(topics.telemetry("TC-BIG"), b"x" * 65_536)
        assert len(reader.next_message().payload) == 65_536
        terminal.client.publish(topics.telemetry("TC-BIG"), b"y" * 100_000, qos=1)
        assert terminal.disconnected.wait(ANSWER_TIMEOUT_S), f"{any_broker.kind} took 100 KB"
        # Another terminal's later heartbeat arrives alone: the big one was never routed.
        other = _terminal(any_broker, "TC-SMALL")
        try:
            assert other.publish(topics.telemetry("TC-SMALL"), b"marker")
            assert [m.payload for m in _until(reader, b"marker")] == [b"marker"]
        finally:
            other.close()
    finally:
        terminal.close()
        reader.close()


def test_a_terminal_gets_no_one_elses_retained_status(any_broker: RunningBroker) -> None:  # noqa: F811
    # Someone (as ingest does) reads every status, so the filter exists on the broker.
    reader = _reader(any_broker, "reader", "tms/v1/+/status")
    other = _terminal(any_broker, "TC-R7")
    try:
        _publish_retained(other, topics.status("TC-R7"), b'{"online": true}')
        reader.next_message()
        # A terminal connecting now must not be handed TC-R7's presence.
        terminal = _terminal(any_broker, "TC-R8")
        try:
            assert terminal.subscribe(topics.command_filter("TC-R8"))
            terminal.barrier("tms/v1/TC-R8/cmd/barrier")
            assert [m.topic for m in terminal.drain()] == [], any_broker.kind
        finally:
            terminal.close()
    finally:
        other.close()
        reader.close()


def test_an_oversize_packet_ends_the_connection_with_its_will(
    any_broker: RunningBroker,  # noqa: F811
) -> None:
    secret = any_broker.provision_terminal("TC-R9")
    reader = _reader(any_broker, "reader", "tms/v1/+/status")
    will = (topics.status("TC-R9"), b'{"online": false}')
    topic = _field(topics.telemetry("TC-R9").encode())
    body = topic + b"z" * 100_000  # QoS 0: no packet id
    remaining = bytearray()
    size = len(body)
    while True:
        byte, size = size % 128, size // 128
        remaining.append(byte | (0x80 if size else 0))
        if not size:
            break
    with socket.create_connection((any_broker.host, any_broker.port)) as raw:
        raw.sendall(_connect_with_retained_will("TC-R9", secret, will))
        assert raw.recv(4) == b"\x20\x02\x00\x00"
        with contextlib.suppress(OSError):  # closed while the body was still being sent
            raw.sendall(bytes([0x30]) + bytes(remaining) + body)
        raw.settimeout(ANSWER_TIMEOUT_S)
        with contextlib.suppress(ConnectionResetError):
            assert raw.recv(1) == b""  # the broker closed the connection (v3.1.1: no answer)
    # The will goes out as for any connection lost.
    message = reader.next_message()
    reader.close()
    assert (message.topic, message.payload) == will, any_broker.kind
