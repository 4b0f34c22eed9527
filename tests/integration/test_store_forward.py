"""Store-and-forward against a real Mosquitto: broker restarts, agent kills, duplicate commands.

The agent queues on disk (SQLite); what it queued while the broker was away must arrive
afterwards, all of it, in order, with the timestamps it was made with.
"""

from __future__ import annotations

import signal
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from sqlmodel import Session

from agent.runtime import AgentOptions, TerminalAgent
from agent.store import AgentStore
from agent.terminal import SimulatedUsbTerminal
from agent.usb_driver import open_terminal
from agent.usb_sim import SimulatedUsbBackend
from broker import provisioning
from broker.service import SyncTracker, run_broker_service
from shared import topics
from shared.db import make_engine
from shared.messages import Command, CommandStatus, PresenceState, Telemetry, parse_message
from shared.models import AccountKind
from shared.settings import BrokerSettings, MqttClientSettings
from tests.fixtures.broker import RunningBroker
from tests.integration.test_agent_runtime import (
    AgentThread,
    agent_process,
    console_probe,
    ingest_probe,
    presence,
    results,
    running,
    send_command,
    wait_for,
)
from tms.ports import free_port

pytestmark = pytest.mark.integration

FAST = AgentOptions(
    heartbeat_interval_s=0.1,
    status_poll_interval_s=0.05,
    reconnect_base_s=0.05,
    reconnect_max_s=0.3,
    mqtt_timeout_s=2.0,
)


class RestartableBroker:
    """The real broker service on one port and directory, which the test stops and restarts."""

    def __init__(self, database_url: str) -> None:
        self.host, self.port = "127.0.0.1", free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="tms-test-restart-"))
        self.directory.chmod(0o755)
        self.database_url = database_url
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        ready, self._stop = threading.Event(), threading.Event()
        settings = BrokerSettings(host=self.host, port=self.port)
        self._thread = threading.Thread(
            target=run_broker_service,
            args=(settings, self.database_url, self.directory / "broker", self._stop, ready),
            kwargs={"tracker": SyncTracker()},
            daemon=True,
        )
        self._thread.start()
        assert ready.wait(30), "the broker did not start"

    def stop(self) -> None:
        assert self._thread is not None
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive()


@pytest.fixture
def restartable_broker(database_url: str) -> Iterator[RestartableBroker]:
    broker = RestartableBroker(database_url)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def provision(database_url: str, serial: str) -> tuple[str, str]:
    """(terminal secret, ingest secret), committed before the broker (re)reads them."""
    engine = make_engine(database_url, pool_size=1)
    with Session(engine) as session:
        secret = provisioning.provision_terminal(session, serial, "Test Customer", None)
        ingest = provisioning.ensure_service_account(session, AccountKind.INGEST, "tms-ingest")
        session.commit()
    engine.dispose()
    return secret, ingest


class DurableSubscriber:
    """Ingest's view: a persistent session (clean_session off), so Mosquitto keeps its
    messages while it is away and across the broker's restart; paho reconnects by itself."""

    def __init__(self, broker: RestartableBroker, secret: str, serial: str) -> None:
        self.beats: list[Telemetry] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id="durable-ingest",
            clean_session=False,
            protocol=mqtt.MQTTProtocolVersion.MQTTv311,
        )
        self.client.username_pw_set("tms-ingest", secret)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(topics.telemetry(serial), qos=1)
        self.client.loop_start()
        assert subscribed.wait(5)

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.beats.append(parse_message(Telemetry, bytes(message.payload)))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def simulated_terminal(serial: str) -> SimulatedUsbTerminal:
    backend = SimulatedUsbBackend.for_serial(serial)
    return SimulatedUsbTerminal(lambda: open_terminal(backend=backend))


def test_broker_restart_loses_nothing_and_keeps_order(
    restartable_broker: RestartableBroker, tmp_path: Path
) -> None:
    serial = "TC200-SF1"
    secret, ingest_secret = provision(restartable_broker.database_url, serial)
    restartable_broker.stop()
    restartable_broker.start()  # now with the new accounts
    subscriber = DurableSubscriber(restartable_broker, ingest_secret, serial)
    store = AgentStore(tmp_path / "queue.sqlite3", 10_000)
    mqtt_settings = MqttClientSettings(
        host=restartable_broker.host, port=restartable_broker.port, keepalive_s=5
    )
    agent = TerminalAgent(
        serial, secret, mqtt_settings, simulated_terminal(serial), options=FAST, queue=store
    )
    try:
        with AgentThread(agent):
            deadline = time.monotonic() + 10
            while len(subscriber.beats) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(subscriber.beats) >= 3
            restartable_broker.stop()
            down_from = datetime.now().astimezone()
            time.sleep(1.5)  # the broker is down: heartbeats go to disk
            queued_while_down = len(store)
            down_until = datetime.now().astimezone()
            assert queued_while_down >= 5
            restartable_broker.start()
            deadline = time.monotonic() + 15
            while len(store) > 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(store) <= 1
        # Stopped cleanly: everything queued has been sent.
        deadline = time.monotonic() + 10
        while len(subscriber.beats) < agent.stats.telemetry_queued and time.monotonic() < deadline:
            time.sleep(0.05)
        beats = subscriber.beats
        ids = [beat.id for beat in beats]
        assert len(set(ids)) == agent.stats.telemetry_queued, "a heartbeat was lost"
        # In order, with the original timestamps: some were made while the broker was down.
        unique = list(dict.fromkeys(ids))
        by_id = {beat.id: beat for beat in beats}
        stamps = [by_id[i].ts for i in unique]
        assert stamps == sorted(stamps)
        during = [ts for ts in stamps if down_from < ts < down_until]
        assert len(during) >= queued_while_down - 2
        assert store.dropped == 0
    finally:
        store.close()
        subscriber.close()


def test_killed_agent_drains_its_disk_queue_after_restart(
    mosquitto_broker: RunningBroker, tmp_path: Path
) -> None:
    serial = "TC200-SF2"
    secret = mosquitto_broker.provision_terminal(serial)
    queue_path = tmp_path / "queue.sqlite3"
    nowhere = free_port()  # nothing listens there: the agent queues everything
    with running(agent_process(mosquitto_broker, serial, secret, queue_path, nowhere)) as first:
        deadline = time.monotonic() + 20
        queued = 0
        while queued < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
            if queue_path.exists():
                with sqlite3.connect(queue_path) as db:
                    queued = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        assert queued >= 5
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    with sqlite3.connect(queue_path) as db:
        left_behind = [
            parse_message(Telemetry, row[0]).id
            for row in db.execute("SELECT payload FROM outbox WHERE topic LIKE '%/telemetry'")
        ]
    assert len(left_behind) >= 5

    ingest = ingest_probe(mosquitto_broker)
    with running(agent_process(mosquitto_broker, serial, secret, queue_path)):
        wait_for(ingest, presence(serial, PresenceState.ONLINE), timeout=20)
        received: list[str] = []
        deadline = time.monotonic() + 15
        while not set(left_behind) <= set(received) and time.monotonic() < deadline:
            for message in ingest.received(0.2):
                if message.topic == topics.telemetry(serial):
                    received.append(parse_message(Telemetry, bytes(message.payload)).id)
        assert set(left_behind) <= set(received), "the killed agent's queue was not drained"
        # The backlog went first, in the order it was queued.
        assert received[: len(left_behind)] == left_behind
    ingest.close()


def test_duplicate_command_runs_once_even_across_a_restart(
    mosquitto_broker: RunningBroker, tmp_path: Path
) -> None:
    serial = "TC200-SF3"
    secret = mosquitto_broker.provision_terminal(serial)
    ingest = ingest_probe(mosquitto_broker)
    console = console_probe(mosquitto_broker)
    mqtt_settings = MqttClientSettings(
        host=mosquitto_broker.host, port=mosquitto_broker.port, keepalive_s=5
    )
    path = tmp_path / "queue.sqlite3"
    ping = Command(id="once-1", name="ping").to_payload()

    def agent_on(store: AgentStore) -> TerminalAgent:
        return TerminalAgent(
            serial,
            secret,
            mqtt_settings,
            simulated_terminal(serial),
            options=FAST,
            queue=store,
            recent_commands=store,
        )

    store = AgentStore(path, 1000)
    with AgentThread(agent_on(store)):
        wait_for(ingest, presence(serial, PresenceState.ONLINE))
        send_command(console, serial, "once-1", ping)
        send_command(console, serial, "once-1", ping)
        assert [(r.id, r.status) for r in results(console, 1.0)] == [("once-1", CommandStatus.OK)]
    store.close()

    store = AgentStore(path, 1000)  # a restarted agent, same disk
    with AgentThread(agent_on(store)):
        wait_for(ingest, presence(serial, PresenceState.ONLINE))
        send_command(console, serial, "once-1", ping)
        assert results(console, 1.0) == []
        send_command(console, serial, "once-2", Command(id="once-2", name="ping").to_payload())
        assert [r.id for r in results(console, 1.0)] == ["once-2"]
    store.close()
    console.close()
    ingest.close()
