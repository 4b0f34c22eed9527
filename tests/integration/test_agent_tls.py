"""The agent over TLS: it verifies the broker against the private CA from `tms certs init`."""

from __future__ import annotations

import ssl
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from agent.runtime import TerminalAgent
from agent.sim.device import SimulatedTC200
from shared import topics
from shared.messages import PresenceState
from shared.models import AccountKind
from shared.settings import MqttClientSettings
from tests.fixtures.broker import MqttProbe, RunningBroker
from tests.integration.agent_harness import FAST, AgentThread, presence, wait_for_message
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def _tls_settings(broker: RunningBroker, ca: Path | None) -> MqttClientSettings:
    assert broker.tls_port is not None
    return MqttClientSettings(host="127.0.0.1", port=broker.tls_port, tls_ca=ca, keepalive_s=5)


def _ingest_probe(broker: RunningBroker) -> MqttProbe:
    # MQTT 3.1.1: amqtt 0.12.1 does not speak MQTT 5.
    secret = broker.service_account(AccountKind.INGEST, "tms-ingest")
    probe = MqttProbe(broker, "tms-ingest", secret, protocol=mqtt.MQTTProtocolVersion.MQTTv311)
    assert probe.connect()
    assert probe.subscribe(f"{topics.ROOT}/+/status")
    return probe


def test_agent_connects_over_tls_trusting_the_private_ca(tls_broker: RunningBroker) -> None:
    assert tls_broker.tls is not None
    serial = "TC200-TLS1"
    secret = tls_broker.provision_terminal(serial)
    ingest = _ingest_probe(tls_broker)
    mqtt = _tls_settings(tls_broker, tls_broker.tls.ca_cert)
    agent = TerminalAgent(serial, secret, mqtt, SimulatedTC200(serial), options=FAST)
    with AgentThread(agent):
        wait_for_message(ingest, presence(serial, PresenceState.ONLINE))
        assert agent.stats.connected
    ingest.close()


def test_agent_refuses_a_broker_it_cannot_verify(tls_broker: RunningBroker) -> None:
    serial = "TC200-TLS2"
    secret = tls_broker.provision_terminal(serial)
    # The system's public CAs do not vouch for the private broker certificate.
    untrusting = ssl.create_default_context()
    agent = TerminalAgent(
        serial,
        secret,
        _tls_settings(tls_broker, None),
        SimulatedTC200(serial),
        options=FAST,
        tls_context=untrusting,
    )
    with AgentThread(agent):
        wait_until(lambda: agent.stats.connect_failures >= 2, "two failed connection attempts")
        assert agent.stats.connects == 0
        assert agent.stats.connect_failures >= 2
        assert "certificate" in (agent.stats.last_error or "").lower()
