"""Defences on both real brokers: client-id takeover by a stranger, keepalive, brute force,
will topics, and TLS with the private CA."""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from shared import topics
from shared.models import AccountKind
from tests.fixtures.broker import MqttProbe, RunningBroker, running_broker
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

V311 = mqtt.MQTTProtocolVersion.MQTTv311


def _field(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def _connect_packet(
    client_id: str, username: str, password: str, keepalive: int, will: tuple[str, bytes]
) -> bytes:
    """A raw MQTT 3.1.1 CONNECT with a will: a client that then never says another word."""
    flags = 0x80 | 0x40 | 0x04 | 0x02  # username, password, will (QoS 0), clean session
    variable = _field(b"MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    payload = (
        _field(client_id.encode())
        + _field(will[0].encode())
        + _field(will[1])
        + _field(username.encode())
        + _field(password.encode())
    )
    body = variable + payload
    assert len(body) < 128
    return bytes([0x10, len(body)]) + body


def _ingest(broker: RunningBroker) -> MqttProbe:
    secret = broker.service_account(AccountKind.INGEST, "tms-ingest")
    probe = MqttProbe(broker, "tms-ingest", secret, protocol=V311)
    assert probe.connect()
    for topic_filter in topics.INGEST_FILTERS:
        assert probe.subscribe(topic_filter)
    return probe


def test_wrong_secret_with_a_connected_client_id_changes_nothing(any_broker: RunningBroker) -> None:
    secret = any_broker.provision_terminal("TC-1")
    terminal = MqttProbe(any_broker, "TC-1", secret, client_id="TC-1", protocol=V311)
    assert terminal.connect() and terminal.subscribe(topics.command_filter("TC-1"))
    stranger = MqttProbe(any_broker, "TC-1", "wrong", client_id="TC-1", protocol=V311)
    assert not stranger.connect()
    stranger.close()
    console_secret = any_broker.service_account(AccountKind.CONSOLE, "tms-console")
    console = MqttProbe(any_broker, "tms-console", console_secret, protocol=V311)
    assert console.connect()
    assert console.publish(topics.command("TC-1", "c1"), b"reboot")
    assert terminal.next_message().topic == "tms/v1/TC-1/cmd/c1"  # subscription intact
    assert terminal.connected.is_set()


def test_a_silent_client_is_dropped_and_its_will_sent(any_broker: RunningBroker) -> None:
    secret = any_broker.provision_terminal("TC-1")
    ingest = _ingest(any_broker)
    will = (topics.status("TC-1"), b'{"online": false}')
    with socket.create_connection((any_broker.host, any_broker.port)) as raw:
        # Before the CONNECT goes: the broker's keepalive clock cannot start earlier.
        started = time.monotonic()
        raw.sendall(_connect_packet("TC-1", "TC-1", secret, 2, will))
        assert raw.recv(4) == b"\x20\x02\x00\x00"  # CONNACK accepted
        # Keepalive 2 s: dropped after 3 s. The socket stays open meanwhile, so only the
        # keepalive can end the session; a busy machine may take longer than 3 s.
        message = ingest.next_message()
        assert (message.topic, message.payload) == will
        assert time.monotonic() - started > 2.5, any_broker.kind


def test_a_will_on_another_terminals_topic_is_refused(any_broker: RunningBroker) -> None:
    secret = any_broker.provision_terminal("TC-1")
    any_broker.provision_terminal("TC-2")
    ingest = _ingest(any_broker)
    will = (topics.status("TC-2"), b'{"online": false}')
    with socket.create_connection((any_broker.host, any_broker.port)) as raw:
        raw.sendall(_connect_packet("TC-1", "TC-1", secret, 30, will))
        raw.recv(4)  # the broker's answer: refused, or accepted and then cut
    # A marker: a will TC-1 may send, from a connection made and cut after that one.
    marker = (topics.status("TC-1"), b'{"marker": true}')
    with socket.create_connection((any_broker.host, any_broker.port)) as raw:
        raw.sendall(_connect_packet("TC-1", "TC-1", secret, 30, marker))
        assert raw.recv(4) == b"\x20\x02\x00\x00"
    got = []
    while not got or (got[-1].topic, got[-1].payload) != marker:
        got.append(ingest.next_message())
    # Refused at CONNECT, or at least the forged will is never delivered.
    assert [m.topic for m in got] == [marker[0]], any_broker.kind


def test_repeated_failures_are_slowed_then_locked_out(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings: dict[str, Any] = {
        "login_delay_after": 2,
        "login_lockout_after": 4,
        "login_lockout_s": 60,
    }
    with running_broker("amqtt", database_url, **settings) as broker:
        secret = broker.provision_terminal("TC-1")
        terminal = MqttProbe(broker, "TC-1", secret, client_id="TC-1", protocol=V311)
        assert terminal.connect()
        durations = []
        for _ in range(4):
            started = time.monotonic()
            assert not MqttProbe(broker, "TC-1", "guess", client_id="TC-1", protocol=V311).connect()
            durations.append(time.monotonic() - started)
        # Slowed down: the fourth try waits 2 steps of the default 0.5 s (a lower bound,
        # which a busy machine can only lengthen).
        assert durations[-1] >= 0.9, durations
        # Locked out now: even the right secret from that client id is refused for a while.
        assert not MqttProbe(broker, "TC-1", secret, client_id="TC-1", protocol=V311).connect()
        assert terminal.connected.is_set()  # the connected terminal was never disturbed
    assert "too many failed logins" in caplog.text
    assert "lockouts=" in caplog.text


def _tls_client(broker: RunningBroker, secret: str, cafile: str | None) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="TC-1", protocol=V311)
    client.username_pw_set("TC-1", secret)
    context = ssl.create_default_context(cafile=cafile)
    client.tls_set_context(context)
    return client


def test_tls_with_the_private_ca(tls_broker: RunningBroker) -> None:
    assert tls_broker.tls is not None and tls_broker.tls_port is not None
    secret = tls_broker.provision_terminal("TC-1")
    trusting = _tls_client(tls_broker, secret, str(tls_broker.tls.ca_cert))
    assert trusting.connect("localhost", tls_broker.tls_port, 30) == 0
    connacks: list[object] = []
    trusting.on_connect = lambda _c, _u, _f, reason, _p: connacks.append(reason)
    trusting.loop_start()
    wait_until(lambda: connacks, "the CONNACK over TLS")
    trusting.disconnect()
    trusting.loop_stop()
    assert connacks and not connacks[0].is_failure  # type: ignore[attr-defined]

    untrusting = _tls_client(tls_broker, secret, None)  # the system's CAs only
    with pytest.raises(ssl.SSLCertVerificationError):
        untrusting.connect("localhost", tls_broker.tls_port, 30)


def test_mosquitto_disconnects_a_publish_over_the_packet_limit(
    mosquitto_broker: RunningBroker,
) -> None:
    secret = mosquitto_broker.provision_terminal("TC-BIG")
    ingest_secret = mosquitto_broker.service_account(AccountKind.INGEST, "tms-ingest")
    reader = MqttProbe(mosquitto_broker, "tms-ingest", ingest_secret)
    terminal = MqttProbe(mosquitto_broker, "TC-BIG", secret, client_id="TC-BIG")
    try:
        assert reader.connect() and reader.subscribe("tms/v1/+/telemetry")
        assert terminal.connect()
        # Within the limit (a 64 KiB payload and its topic): taken and delivered.
        assert terminal.publish(topics.telemetry("TC-BIG"), b"x" * 65_536)
        reader.wait_for(1)
        assert len(reader.drain()[0].payload) == 65_536
        # A megabyte: the connection is closed; nothing reaches a subscriber.
        terminal.client.publish(topics.telemetry("TC-BIG"), b"y" * 1_048_576, qos=1)
        assert terminal.disconnected.wait(30), "a 1 MiB publish was taken"
        reader.barrier("tms/v1/barrier/telemetry")
        assert reader.drain() == []
    finally:
        terminal.close()
        reader.close()
