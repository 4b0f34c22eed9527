"""The broker service with a real Mosquitto: logins, topic isolation, live revocation."""

from __future__ import annotations

import psycopg
import pytest

from shared import topics
from shared.models import AccountKind
from tests.fixtures.broker import MqttProbe, RunningBroker

pytestmark = pytest.mark.integration


def nothing_came(probe: MqttProbe, barrier_filter: str) -> bool:
    """Whether ``probe`` got no message: Mosquitto routes a message before its PUBACK,
    so after the publisher's PUBACK and this barrier, what has not come was not sent."""
    probe.barrier(barrier_filter)
    return probe.drain() == []


@pytest.fixture
def ingest(mosquitto_broker: RunningBroker) -> MqttProbe:
    secret = mosquitto_broker.service_account(AccountKind.INGEST, "tms-ingest")
    probe = MqttProbe(mosquitto_broker, "tms-ingest", secret)
    assert probe.connect()
    for topic_filter in topics.INGEST_FILTERS:
        assert probe.subscribe(f"$share/ingest/{topic_filter}")
    return probe


def test_terminal_telemetry_reaches_ingest(mosquitto_broker: RunningBroker, ingest: MqttProbe):
    secret = mosquitto_broker.provision_terminal("TC-0001", store="S1")
    terminal = MqttProbe.terminal(mosquitto_broker, "TC-0001", secret)
    assert terminal.connect()
    assert terminal.publish(topics.telemetry("TC-0001"), b'{"hello": 1}')
    message = ingest.next_message()
    assert (message.topic, message.payload) == ("tms/v1/TC-0001/telemetry", b'{"hello": 1}')


def test_terminal_cannot_publish_as_another(mosquitto_broker: RunningBroker, ingest: MqttProbe):
    mosquitto_broker.provision_terminal("TC-0001")
    intruder_secret = mosquitto_broker.provision_terminal("TC-0002")
    intruder = MqttProbe.terminal(mosquitto_broker, "TC-0002", intruder_secret)
    assert intruder.connect()
    assert not intruder.publish(topics.telemetry("TC-0001"))
    assert not intruder.publish(topics.command_result("TC-0001", "c1"))
    assert nothing_came(ingest, "tms/v1/+/cmd-result/barrier")


def test_anonymous_login_refused(mosquitto_broker: RunningBroker) -> None:
    probe = MqttProbe(mosquitto_broker, None, None)
    assert not probe.connect()
    assert probe.connack is not None and probe.connack.is_failure
    probe.close()


@pytest.mark.parametrize("password", ["wrong", ""])
def test_wrong_password_refused(mosquitto_broker: RunningBroker, password: str) -> None:
    mosquitto_broker.provision_terminal("TC-0001")
    probe = MqttProbe.terminal(mosquitto_broker, "TC-0001", password)
    assert not probe.connect()
    probe.close()


def test_terminal_cannot_read_another_terminals_commands(mosquitto_broker: RunningBroker):
    own = MqttProbe.terminal(
        mosquitto_broker, "TC-0001", mosquitto_broker.provision_terminal("TC-0001")
    )
    spy = MqttProbe.terminal(
        mosquitto_broker, "TC-0002", mosquitto_broker.provision_terminal("TC-0002")
    )
    console_secret = mosquitto_broker.service_account(AccountKind.CONSOLE, "tms-console")
    console = MqttProbe(mosquitto_broker, "tms-console", console_secret)
    assert own.connect() and spy.connect() and console.connect()
    assert own.subscribe(topics.command_filter("TC-0001"))
    # Mosquitto 2.0 grants every SUBACK and checks read access per delivered message.
    spy.subscribe("tms/v1/TC-0001/cmd/+")
    spy.subscribe("#")
    assert console.publish(topics.command("TC-0001", "c1"), b"reboot")
    assert own.next_message().topic == "tms/v1/TC-0001/cmd/c1"  # the command was sent
    assert nothing_came(spy, "tms/v1/TC-0002/cmd/barrier")


def test_revoked_credential_drops_live_session(mosquitto_broker: RunningBroker) -> None:
    secret = mosquitto_broker.provision_terminal("TC-0001")
    terminal = MqttProbe.terminal(mosquitto_broker, "TC-0001", secret)
    assert terminal.connect()
    # Straight SQL, as any tool might do it: the trigger's NOTIFY must be enough (the
    # broker service re-reads credentials on a NOTIFY only, never on a timer).
    with psycopg.connect(mosquitto_broker.database_url, autocommit=True) as conn:
        conn.execute("UPDATE credential SET revoked_at = now() WHERE username = 'TC-0001'")
    assert terminal.disconnected.wait(60), "the revoked terminal is still connected"
    again = MqttProbe.terminal(mosquitto_broker, "TC-0001", secret)
    assert not again.connect()


def test_rotated_secret_replaces_the_old_one(mosquitto_broker: RunningBroker) -> None:
    from sqlmodel import Session

    from registry.provisioning import rotate_secret

    old = mosquitto_broker.provision_terminal("TC-0001")
    with Session(mosquitto_broker.engine) as session:
        new = rotate_secret(session, "TC-0001")
        session.commit()
    mosquitto_broker.wait_reloaded()
    assert not MqttProbe.terminal(mosquitto_broker, "TC-0001", old).connect()
    assert MqttProbe.terminal(mosquitto_broker, "TC-0001", new).connect()


def test_terminal_cannot_disturb_a_shared_ingest_subscription(
    mosquitto_broker: RunningBroker,
) -> None:
    secret = mosquitto_broker.service_account(AccountKind.INGEST, "tms-ingest")
    ingest = MqttProbe(mosquitto_broker, "tms-ingest", secret)
    assert ingest.connect() and ingest.subscribe("$share/ingest/tms/v1/+/telemetry")
    intruder = MqttProbe.terminal(
        mosquitto_broker, "TC-0002", mosquitto_broker.provision_terminal("TC-0002")
    )
    assert intruder.connect()
    # Refused in the SUBACK by the TMS plugin; acl_file alone would grant it.
    assert not intruder.subscribe("$share/ingest/tms/v1/+/telemetry")
    terminal = MqttProbe.terminal(
        mosquitto_broker, "TC-0001", mosquitto_broker.provision_terminal("TC-0001")
    )
    assert terminal.connect()
    for n in range(6):
        assert terminal.publish(topics.telemetry("TC-0001"), str(n).encode())
    ingest.wait_for(6)
    assert len(ingest.drain()) == 6
