"""A regional Mosquitto bridged to a core Mosquitto over TLS, both run by `tms broker`
from the same database: a terminal logs in at the regional broker with its own
credentials and the same ACL, ingest on the core writes its messages, commands from the
core reach it, and what the ACL refuses at the edge never reaches the core."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from pydantic import SecretStr

from broker.mosquitto import MosquittoFiles
from shared import topics
from shared.models import AccountKind
from shared.settings import BridgeSettings
from tests.fixtures.broker import MqttProbe, RunningBroker, running_broker
from tests.integration.test_ingest_lossless import SERIAL, IngestProcess, Publisher, count
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

BRIDGE_ACCOUNT = "bridge-eu"
OTHER = "TC-OTHER-1"
TOTAL = 300


def _core_log(core: RunningBroker) -> str:
    return MosquittoFiles(core.directory / "broker").log.read_text(errors="replace")


def _bridge(core: RunningBroker, password: str) -> BridgeSettings:
    assert core.tls is not None and core.tls_port is not None
    return BridgeSettings(
        address=f"localhost:{core.tls_port}",  # the name its certificate was made for
        cafile=core.tls.ca_cert,
        username=BRIDGE_ACCOUNT,
        password=SecretStr(password),
        name="eu-core",
    )


@pytest.fixture
def brokers(database_url: str) -> Iterator[tuple[RunningBroker, RunningBroker]]:
    with ExitStack() as stack:
        core = stack.enter_context(running_broker("mosquitto", database_url, with_tls=True))
        secret = core.service_account(AccountKind.BRIDGE, BRIDGE_ACCOUNT)
        regional = stack.enter_context(
            running_broker("mosquitto", database_url, bridge=_bridge(core, secret))
        )
        wait_until(
            lambda: f"as {BRIDGE_ACCOUNT} " in _core_log(core),
            lambda: f"the bridge to log in at the core: {_core_log(core)[-1500:]}",
        )
        yield core, regional


def test_a_terminal_on_a_regional_broker_is_seen_by_ingest_on_the_core(
    brokers: tuple[RunningBroker, RunningBroker], database_url: str
) -> None:
    core, regional = brokers
    terminal_secret = core.provision_terminal(SERIAL)
    core.provision_terminal(OTHER)
    regional.wait_reloaded()  # the regional broker learns the terminal from the database
    ingest_secret = core.service_account(AccountKind.INGEST, "tms-ingest")
    console_secret = core.service_account(AccountKind.CONSOLE, "tms-console")
    regional.wait_reloaded()

    # The terminal's own credentials work at the regional broker only with its own id.
    terminal = MqttProbe(regional, SERIAL, terminal_secret, client_id=SERIAL)
    assert terminal.connect()
    wrong = MqttProbe(regional, SERIAL, "not-the-secret", client_id=SERIAL + "-x")
    assert not wrong.connect(timeout=10)
    assert terminal.subscribe(f"tms/v1/{SERIAL}/cmd/+")

    ingest = IngestProcess(core, ingest_secret, database_url).wait_healthy()
    watcher = MqttProbe(core, "tms-ingest", ingest_secret, client_id="bridge-watch")
    console = MqttProbe(core, "tms-console", console_secret)
    try:
        assert watcher.connect() and watcher.subscribe("tms/v1/+/telemetry")
        Publisher(terminal, TOTAL, per_second=300).finish()
        wait_until(lambda: count(database_url)[0] >= TOTAL, "ingest on the core to commit all")
        assert count(database_url) == (TOTAL, TOTAL)

        # Refused at the edge (MQTT 5: PUBACK "not authorised"): another terminal's
        # topic; then one of its own. The bridge relays in order, so once its own has
        # reached the core the other would have too.
        assert not terminal.publish(topics.telemetry(OTHER), b'{"forged": true}')
        assert terminal.publish(topics.telemetry(SERIAL), b'{"marker": true}')
        wait_until(
            lambda: any(b"marker" in m.payload for m in list(watcher.messages.queue)),
            "the terminal's own message at the core",
        )
        relayed = {m.topic for m in watcher.drain()}
        assert topics.telemetry(OTHER) not in relayed

        # A command published on the core goes down the bridge to the terminal.
        assert console.connect()
        command_topic = topics.command(SERIAL, "cmd-bridge-1")
        assert console.publish(command_topic, b'{"v":1}')
        message = terminal.next_message()
        assert (message.topic, message.payload) == (command_topic, b'{"v":1}')
    finally:
        for probe in (terminal, watcher, console, wrong):
            probe.close()
        ingest.stop()
    assert ingest.process.returncode == 0, ingest.output()


def test_a_bridge_with_a_wrong_password_relays_nothing(database_url: str) -> None:
    with running_broker("mosquitto", database_url, with_tls=True) as core:
        core.service_account(AccountKind.BRIDGE, BRIDGE_ACCOUNT)
        settings = _bridge(core, "not-the-bridge-secret")
        with running_broker("mosquitto", database_url, bridge=settings):
            # Mosquitto names no user for a refused login; the bridge is the only client
            # here, and it tries again (backing off) rather than giving up.
            wait_until(
                lambda: _core_log(core).count("disconnected, not authorised") >= 2,
                lambda: f"the core to refuse the bridge twice: {_core_log(core)[-1500:]}",
            )
        assert f"as {BRIDGE_ACCOUNT} " not in _core_log(core)
