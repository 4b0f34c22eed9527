"""Who may publish and subscribe where: every rule row, allowed and refused, on both brokers.

Observed by delivery, the one thing both brokers agree on (Mosquitto grants every
SUBACK and filters deliveries; amqtt acknowledges a refused publish and drops it):
a row is allowed exactly when its message arrives. Each row is also checked
against ``is_allowed``, so the table and the pure function cannot drift apart.
MQTT 3.1.1 throughout: amqtt 0.12.1 has no MQTT 5.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
import threading
from pathlib import Path
from types import ModuleType

import paho.mqtt.client as mqtt
import pytest

from broker.acl import Access, is_allowed
from shared import topics
from shared.messages import CommandRequest, CommandRequestReply, parse_message
from shared.models import AccountKind
from tests.fixtures.broker import MqttProbe, RunningBroker
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

V311 = mqtt.MQTTProtocolVersion.MQTTv311

T, INGEST, CONSOLE, SUPPORT = (
    AccountKind.TERMINAL,
    AccountKind.INGEST,
    AccountKind.CONSOLE,
    AccountKind.SUPPORT_SCRIPT,
)
NAMES = {T: "TC-1", INGEST: "tms-ingest", CONSOLE: "tms-console", SUPPORT: "support-1"}
OTHER = "TC-2"
OTHER_SCRIPT = "support-2"  # a second support script: its requests and replies are not ours

# (who, topic, allowed)
PUBLISH_ROWS: list[tuple[AccountKind | str, str, bool]] = [
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
    # Command requests: a script asks under its own name, the sender (console) replies.
    (SUPPORT, "tms/requests/support-1/cmd/r1", True),
    (SUPPORT, "tms/requests/support-2/cmd/r2", False),
    (SUPPORT, "tms/requests/support-1/reply/r3", False),
    (SUPPORT, "tms/requests/support-2/reply/r4", False),
    (OTHER_SCRIPT, "tms/requests/support-2/cmd/r5", True),
    (OTHER_SCRIPT, "tms/requests/support-1/cmd/r6", False),
    (CONSOLE, "tms/requests/support-1/reply/r7", True),
    (CONSOLE, "tms/requests/support-2/reply/r8", True),
    (CONSOLE, "tms/requests/support-1/cmd/r9", False),
    (T, "tms/requests/TC-1/cmd/r10", False),
    (T, "tms/requests/support-1/reply/r11", False),
    (INGEST, "tms/requests/support-1/cmd/r12", False),
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
    # The request tree: the sender reads every request; a script only its own replies.
    (CONSOLE, "tms/requests/+/cmd/+", "tms/requests/support-1/cmd/s11", SUPPORT, True),
    (CONSOLE, "tms/requests/+/cmd/+", "tms/requests/support-2/cmd/s12", OTHER_SCRIPT, True),
    (CONSOLE, "tms/requests/+/reply/+", "tms/requests/support-1/reply/s13", CONSOLE, False),
    (SUPPORT, "tms/requests/support-1/reply/+", "tms/requests/support-1/reply/s14", CONSOLE, True),
    (SUPPORT, "tms/requests/support-2/reply/+", "tms/requests/support-2/reply/s15", CONSOLE, False),
    (SUPPORT, "tms/requests/+/reply/+", "tms/requests/support-2/reply/s16", CONSOLE, False),
    (SUPPORT, "tms/requests/#", "tms/requests/support-2/reply/s17", CONSOLE, False),
    (SUPPORT, "tms/requests/+/cmd/+", "tms/requests/support-2/cmd/s18", OTHER_SCRIPT, False),
    (SUPPORT, "tms/requests/support-1/cmd/+", "tms/requests/support-1/cmd/s19", SUPPORT, False),
    (INGEST, "tms/requests/+/cmd/+", "tms/requests/support-1/cmd/s20", SUPPORT, False),
    (T, "tms/requests/+/reply/+", "tms/requests/support-1/reply/s21", CONSOLE, False),
]

_payloads = itertools.count()


def _secrets(broker: RunningBroker) -> dict[str, str]:
    found = {NAMES[T]: broker.provision_terminal(NAMES[T])}
    found[OTHER] = broker.provision_terminal(OTHER)
    for kind in (INGEST, CONSOLE, SUPPORT):
        found[NAMES[kind]] = broker.service_account(kind, NAMES[kind])
    found[OTHER_SCRIPT] = broker.service_account(SUPPORT, OTHER_SCRIPT)
    return found


def _kind_of(username: str) -> AccountKind:
    if username == OTHER_SCRIPT:
        return SUPPORT
    return next((k for k, n in NAMES.items() if n == username), T)


def _name(who: str | AccountKind) -> str:
    return NAMES[who] if isinstance(who, AccountKind) else who


def _barrier(probe: MqttProbe, username: str) -> None:
    """Every message already routed to ``probe`` is in its queue once this returns.

    The barrier's filter is one the account may read and nobody publishes to.
    """
    if _kind_of(username) is T:
        probe.barrier(f"tms/v1/{username}/cmd/barrier")
    else:
        probe.barrier("tms/v1/+/cmd-result/barrier")


def _probe(broker: RunningBroker, username: str, secrets: dict[str, str]) -> MqttProbe:
    # A terminal's client id must be its serial, so one connection per terminal at a time.
    client_id = username if _kind_of(username) is T else None
    probe = MqttProbe(broker, username, secrets[username], client_id=client_id, protocol=V311)
    assert probe.connect(), f"{username} could not log in"
    return probe


def test_the_rule_table_is_what_is_allowed_says() -> None:
    for who, topic, allowed in PUBLISH_ROWS:
        name = _name(who)
        assert is_allowed(_kind_of(name), name, Access.PUBLISH, topic) is allowed, (who, topic)
    for who, topic_filter, topic, publisher, allowed in SUBSCRIBE_ROWS:
        assert is_allowed(who, NAMES[who], Access.SUBSCRIBE, topic_filter) is allowed
        name = _name(publisher)
        assert is_allowed(_kind_of(name), name, Access.PUBLISH, topic), (publisher, topic)


def test_publish_rows(any_broker: RunningBroker) -> None:
    secrets = _secrets(any_broker)
    # Observers that may read every topic in the table.
    ingest = _probe(any_broker, NAMES[INGEST], secrets)
    for topic_filter in topics.INGEST_FILTERS:
        assert ingest.subscribe(topic_filter)
    other = _probe(any_broker, OTHER, secrets)
    assert other.subscribe(f"tms/v1/{OTHER}/cmd/+")
    sender = _probe(any_broker, NAMES[CONSOLE], secrets)
    assert sender.subscribe(topics.COMMAND_REQUEST_FILTER)
    scripts = {name: _probe(any_broker, name, secrets) for name in (NAMES[SUPPORT], OTHER_SCRIPT)}
    for name, script in scripts.items():
        assert script.subscribe(topics.command_reply_filter(name))
    own: MqttProbe | None = None
    expected, sent, got = set(), {}, set[bytes]()
    # The terminal's own rows first: each needs a fresh TC-1 connection, which would take
    # over the session of a TC-1 listener, so that listener connects only after them.
    for who, topic, allowed in sorted(PUBLISH_ROWS, key=lambda row: row[0] is not T):
        if who is not T and own is None:
            own = _probe(any_broker, NAMES[T], secrets)
            assert own.subscribe(f"tms/v1/{NAMES[T]}/cmd/+")
        payload = f"p{next(_payloads)}".encode()
        sent[payload] = (who, topic)
        if allowed:
            expected.add(payload)
        # A fresh connection per row; both brokers acknowledge a refused 3.1.1 publish and
        # drop it (the last test below), so the PUBACK is not the oracle: delivery is.
        publisher = _probe(any_broker, _name(who), secrets)
        if who is T:  # the one reader of its own commands, while it is connected
            assert publisher.subscribe(f"tms/v1/{NAMES[T]}/cmd/+")
        publisher.publish(topic, payload)
        if who is T:
            _barrier(publisher, NAMES[T])
            got |= {bytes(m.payload) for m in publisher.drain()}
        publisher.close()
    assert own is not None
    observers = {NAMES[INGEST]: ingest, OTHER: other, NAMES[T]: own, NAMES[CONSOLE]: sender}
    observers |= scripts

    def all_expected_came() -> bool:
        got.update(bytes(m.payload) for probe in observers.values() for m in probe.drain())
        return expected <= got

    # What should arrive, first; then a barrier, after which what has not come was not sent.
    wait_until(all_expected_came, lambda: f"{any_broker.kind}: {sorted(expected - got)}")
    for username, probe in observers.items():
        _barrier(probe, username)
    got |= {bytes(m.payload) for probe in observers.values() for m in probe.drain()}
    wrong = sorted(str(sent[p]) for p in got ^ expected)
    assert wrong == [], f"{any_broker.kind}: rows that did not behave as the table says: {wrong}"


def _observe(
    broker: RunningBroker,
    secrets: dict[str, str],
    rows: list[tuple[AccountKind, str, str, str | AccountKind, bool]],
) -> list[tuple[AccountKind, str, str, str | AccountKind, bool]]:
    """Subscribe once per row, publish each row's topic, return the rows that misbehaved."""
    subscribers = []
    for who, topic_filter, topic, publisher, allowed in rows:
        probe = _probe(broker, NAMES[who], secrets)
        granted = probe.subscribe(topic_filter)
        if broker.kind == "amqtt":
            # amqtt refuses in the SUBACK; Mosquitto 2.0.11 grants it and filters deliveries.
            assert granted is allowed, (who, topic_filter)
        subscribers.append((probe, (who, topic_filter, topic, publisher, allowed)))
    publishers: dict[str, MqttProbe] = {}
    for probe, (who, _, topic, publisher, _) in subscribers:
        name = NAMES[publisher] if isinstance(publisher, AccountKind) else publisher
        if name == NAMES[who] and _kind_of(name) is T:
            sender = probe  # a second connection as this terminal would take its place
        else:
            if name not in publishers:
                publishers[name] = _probe(broker, name, secrets)
            sender = publishers[name]
        assert sender.publish(topic, topic.encode())
    got: dict[MqttProbe, set[str]] = {probe: set() for probe, _ in subscribers}

    def drain() -> None:
        for probe, _ in subscribers:
            got[probe] |= {m.topic for m in probe.drain()}

    def allowed_rows_delivered() -> bool:
        drain()
        return all(row[2] in got[probe] for probe, row in subscribers if row[4])

    # What should arrive, first; then a barrier, after which what has not come was not sent.
    wait_until(
        allowed_rows_delivered,
        lambda: f"{broker.kind}: {[r for p, r in subscribers if r[4] and r[2] not in got[p]]}",
    )
    for probe, row in subscribers:
        _barrier(probe, NAMES[row[0]])
    drain()
    wrong = []
    for probe, row in subscribers:
        topic, allowed = row[2], row[4]
        if (topic in got[probe]) is not allowed:
            wrong.append(row)
        probe.close()
    for sender in publishers.values():
        sender.close()
    return wrong


def test_subscribe_rows(any_broker: RunningBroker) -> None:
    secrets = _secrets(any_broker)
    # The terminal's rows one at a time (one connection per terminal), the rest at once.
    wrong = []
    for row in SUBSCRIBE_ROWS:
        if row[0] is T:
            wrong += _observe(any_broker, secrets, [row])
    wrong += _observe(any_broker, secrets, [row for row in SUBSCRIBE_ROWS if row[0] is not T])
    assert wrong == [], f"{any_broker.kind}: rows that did not behave as the table says: {wrong}"


def _load_example() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "request_command.py"
    spec = importlib.util.spec_from_file_location("request_command_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_request_round_trip_with_the_example_script(
    any_broker: RunningBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    """The example asks, a stand-in sender with the console's account reads and replies."""
    secrets = _secrets(any_broker)
    sender = _probe(any_broker, NAMES[CONSOLE], secrets)
    assert sender.subscribe(topics.COMMAND_REQUEST_FILTER)
    example = _load_example()
    account = NAMES[SUPPORT]
    argv = ["--host", any_broker.host, "--port", str(any_broker.port), "--account", account]
    argv += ["--password", secrets[account], "--timeout", "60", "TC-1", "ping"]
    outcome: list[int] = []
    script = threading.Thread(target=lambda: outcome.append(example.main(argv)), daemon=True)
    script.start()
    try:
        message = sender.next_message()
        asked = topics.parse_request_topic(message.topic)
        assert (asked.account, asked.kind) == (account, topics.RequestKind.COMMAND)
        request = parse_message(CommandRequest, bytes(message.payload))
        assert (request.serial, request.name, request.args) == ("TC-1", "ping", {})
        reply_topic = topics.command_request_reply(asked.account, asked.request_id)
        for state, output in (("queued", {}), ("succeeded", {"rtt_ms": 3})):
            reply = CommandRequestReply(
                request_id=asked.request_id, state=state, command_id="c-1", output=output
            )
            assert sender.publish(reply_topic, reply.to_payload())
    finally:
        script.join(60)
        sender.close()
    assert outcome == [0], capsys.readouterr()
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [p["state"] for p in printed] == ["queued", "succeeded"]
    assert printed[-1]["output"] == {"rtt_ms": 3}


def test_a_refused_mqtt311_publish_is_acknowledged_dropped_and_the_client_stays(
    any_broker: RunningBroker,
) -> None:
    """What docs/broker-security.md says of a refused publish over MQTT 3.1.1."""
    secret = any_broker.provision_terminal("TC-31")
    other = any_broker.provision_terminal("TC-32")
    listener = MqttProbe(any_broker, "TC-32", other, client_id="TC-32", protocol=V311)
    publisher = MqttProbe(any_broker, "TC-31", secret, client_id="TC-31", protocol=V311)
    try:
        assert listener.connect() and listener.subscribe("tms/v1/TC-32/cmd/+")
        assert publisher.connect()
        # Another terminal's command topic: refused, yet answered with a PUBACK.
        assert publisher.publish("tms/v1/TC-32/cmd/forged", b"forged")
        # Still connected: its own telemetry goes through on the same connection.
        assert publisher.publish("tms/v1/TC-31/telemetry", b"mine")
        assert not publisher.disconnected.is_set()
        _barrier(listener, "TC-32")
        assert [m.payload for m in listener.drain()] == []  # dropped, never delivered
    finally:
        publisher.close()
        listener.close()
