"""Who may publish and subscribe where: every rule row, allowed and refused, on both brokers.

Observed by delivery, the one thing both brokers agree on (Mosquitto grants every
SUBACK and filters deliveries; amqtt acknowledges a refused publish and drops it):
a row is allowed exactly when its message arrives. Each row is also checked
against ``is_allowed``, so the table and the pure function cannot drift apart.
MQTT 3.1.1 throughout: amqtt 0.12.1 has no MQTT 5.
"""

from __future__ import annotations

import itertools
import time

import paho.mqtt.client as mqtt
import pytest

from broker.acl import Access, is_allowed
from shared import topics
from shared.models import AccountKind
from tests.fixtures.broker import MqttProbe
from tests.fixtures.brokers import KindBroker

pytestmark = pytest.mark.integration

V311 = mqtt.MQTTProtocolVersion.MQTTv311
SETTLE_S = 0.6

T, INGEST, CONSOLE, SUPPORT = (
    AccountKind.TERMINAL,
    AccountKind.INGEST,
    AccountKind.CONSOLE,
    AccountKind.SUPPORT_SCRIPT,
)
NAMES = {T: "TC-1", INGEST: "tms-ingest", CONSOLE: "tms-console", SUPPORT: "support-1"}
OTHER = "TC-2"

# (who, topic, allowed)
PUBLISH_ROWS = [
    (T, "tms/v1/TC-1/telemetry", True),
    (T, "tms/v1/TC-1/status", True),
    (T, "tms/v1/TC-1/event", True),
    (T, "tms/v1/TC-1/cmd-result/c1", True),
    (T, "tms/v1/TC-1/cmd/c1", False),
    (T, "tms/v1/TC-2/telemetry", False),
    (T, "tms/v1/TC-2/cmd-result/c1", False),
    (T, "tms/v1/TC-2/cmd/c1", False),
    (INGEST, "tms/v1/TC-1/telemetry", False),
    (INGEST, "tms/v1/TC-1/cmd/c1", False),
    (CONSOLE, "tms/v1/TC-1/cmd/c1", True),
    (CONSOLE, "tms/v1/TC-2/cmd/c2", True),
    (CONSOLE, "tms/v1/TC-1/telemetry", False),
    (SUPPORT, "tms/v1/TC-1/cmd/c1", False),
    (SUPPORT, "tms/v1/TC-1/telemetry", False),
]

# (who, filter, a topic it matches, the account that publishes it, allowed)
# For a refused wide filter the probe topic is one the subscriber may not read:
# Mosquitto 2.0.11 grants such a SUBSCRIBE and still delivers the topics within it
# that the account may read (docs/broker-security.md); amqtt refuses it in the SUBACK.
SUBSCRIBE_ROWS = [
    (T, "tms/v1/TC-1/cmd/+", "tms/v1/TC-1/cmd/s1", CONSOLE, True),
    (T, "tms/v1/TC-1/cmd/s2", "tms/v1/TC-1/cmd/s2", CONSOLE, True),
    (T, "tms/v1/TC-2/cmd/+", "tms/v1/TC-2/cmd/s3", CONSOLE, False),
    (T, "tms/v1/+/cmd/+", "tms/v1/TC-2/cmd/s4", CONSOLE, False),
    (T, "tms/v1/TC-1/#", "tms/v1/TC-1/telemetry", "TC-1", False),
    (T, "#", "tms/v1/TC-2/cmd/s6", CONSOLE, False),
    (T, "tms/v1/TC-2/telemetry", "tms/v1/TC-2/telemetry", OTHER, False),
    (T, "$SYS/#", "tms/v1/TC-1/cmd/s7", CONSOLE, False),
    (INGEST, "tms/v1/+/telemetry", "tms/v1/TC-2/telemetry", OTHER, True),
    (INGEST, "tms/v1/+/status", "tms/v1/TC-2/status", OTHER, True),
    (INGEST, "tms/v1/+/event", "tms/v1/TC-2/event", OTHER, True),
    (INGEST, "tms/v1/+/cmd-result/+", "tms/v1/TC-2/cmd-result/r1", OTHER, True),
    (INGEST, "tms/v1/+/cmd/+", "tms/v1/TC-2/cmd/s8", CONSOLE, False),
    (INGEST, "#", "tms/v1/TC-2/cmd/s10", CONSOLE, False),
    (CONSOLE, "tms/v1/+/cmd-result/+", "tms/v1/TC-2/cmd-result/r2", OTHER, True),
    (CONSOLE, "tms/v1/+/telemetry", "tms/v1/TC-2/telemetry", OTHER, False),
    (SUPPORT, "tms/v1/+/telemetry", "tms/v1/TC-2/telemetry", OTHER, True),
    (SUPPORT, "tms/v1/+/event", "tms/v1/TC-2/event", OTHER, True),
    (SUPPORT, "tms/v1/+/cmd/+", "tms/v1/TC-2/cmd/s9", CONSOLE, False),
]

_payloads = itertools.count()


def _secrets(broker: KindBroker) -> dict[str, str]:
    found = {NAMES[T]: broker.provision_terminal(NAMES[T])}
    found[OTHER] = broker.provision_terminal(OTHER)
    for kind in (INGEST, CONSOLE, SUPPORT):
        found[NAMES[kind]] = broker.service_account(kind, NAMES[kind])
    return found


def _kind_of(username: str) -> AccountKind:
    return next((k for k, n in NAMES.items() if n == username), T)


def _probe(broker: KindBroker, username: str, secrets: dict[str, str]) -> MqttProbe:
    probe = MqttProbe(broker, username, secrets[username], protocol=V311)
    assert probe.connect(), f"{username} could not log in"
    return probe


def test_the_rule_table_is_what_is_allowed_says() -> None:
    for who, topic, allowed in PUBLISH_ROWS:
        assert is_allowed(who, NAMES[who], Access.PUBLISH, topic) is allowed, (who, topic)
    for who, topic_filter, topic, publisher, allowed in SUBSCRIBE_ROWS:
        assert is_allowed(who, NAMES[who], Access.SUBSCRIBE, topic_filter) is allowed
        name = NAMES[publisher] if isinstance(publisher, AccountKind) else publisher
        assert is_allowed(_kind_of(name), name, Access.PUBLISH, topic), (publisher, topic)


def test_publish_rows(any_broker: KindBroker) -> None:
    secrets = _secrets(any_broker)
    # Observers that may read every topic in the table.
    ingest = _probe(any_broker, NAMES[INGEST], secrets)
    for topic_filter in topics.INGEST_FILTERS:
        assert ingest.subscribe(topic_filter)
    listeners = {}
    for serial in (NAMES[T], OTHER):
        listeners[serial] = _probe(any_broker, serial, secrets)
        assert listeners[serial].subscribe(f"tms/v1/{serial}/cmd/+")

    expected, sent = set(), {}
    for who, topic, allowed in PUBLISH_ROWS:
        payload = f"p{next(_payloads)}".encode()
        sent[payload] = (who, topic)
        if allowed:
            expected.add(payload)
        # A fresh connection per row: Mosquitto disconnects a 3.1.1 client after a refused
        # publish, and amqtt acknowledges and drops it; neither answer is the oracle.
        publisher = _probe(any_broker, NAMES[who], secrets)
        publisher.publish(topic, payload)
        publisher.close()
    time.sleep(SETTLE_S)
    got = {m.payload for probe in (ingest, *listeners.values()) for m in probe.drain()}
    wrong = sorted(str(sent[p]) for p in got ^ expected)
    assert wrong == [], f"{any_broker.kind}: rows that did not behave as the table says: {wrong}"


def test_subscribe_rows(any_broker: KindBroker) -> None:
    secrets = _secrets(any_broker)
    subscribers = []
    for who, topic_filter, topic, publisher, allowed in SUBSCRIBE_ROWS:
        probe = _probe(any_broker, NAMES[who], secrets)
        granted = probe.subscribe(topic_filter)
        if any_broker.kind == "amqtt":
            # amqtt refuses in the SUBACK; Mosquitto 2.0.11 grants it and filters deliveries.
            assert granted is allowed, (who, topic_filter)
        subscribers.append((probe, (who, topic_filter, topic, publisher, allowed)))
    publishers: dict[str, MqttProbe] = {}
    for _, (_, _, topic, publisher, _) in subscribers:
        name = NAMES[publisher] if isinstance(publisher, AccountKind) else publisher
        if name not in publishers:
            publishers[name] = _probe(any_broker, name, secrets)
        assert publishers[name].publish(topic, topic.encode())
    time.sleep(SETTLE_S)
    wrong = []
    for probe, row in subscribers:
        got = {m.topic for m in probe.drain()}
        topic, allowed = row[2], row[4]
        if (topic in got) is not allowed:
            wrong.append(row)
        probe.close()
    assert wrong == [], f"{any_broker.kind}: rows that did not behave as the table says: {wrong}"
