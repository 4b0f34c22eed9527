"""Store-and-forward against a real Mosquitto: broker restarts, agent kills, duplicate commands.

The agent queues on disk (SQLite); what it queued while the broker was away must arrive
afterwards, all of it, in order, with the timestamps it was made with.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from sqlmodel import Session

from agent.runtime import AgentOptions, TerminalAgent
from agent.sim.usb_backend import SimulatedUsbBackend, SimulatedUsbTerminal
from agent.state_file import StateFile
from agent.usb_driver import open_terminal
from broker.credential_sync import SyncTracker
from broker.service import run_broker_service
from registry import provisioning
from shared import topics
from shared.db import make_engine
from shared.messages import (
    Command,
    CommandStatus,
    PresenceState,
    Telemetry,
    parse_message,
)
from shared.models import AccountKind
from shared.ports import free_port
from shared.settings import BrokerSettings, MqttClientSettings
from tests.fixtures.broker import RunningBroker
from tests.integration.agent_harness import (
    AgentThread,
    agent_process,
    console_probe,
    ingest_probe,
    presence,
    results,
    running,
    send_command,
    unnumbered,
    wait_for_message,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


FAST = AgentOptions(
    heartbeat_interval_s=0.1,
    status_poll_interval_s=0.05,
    reconnect_base_s=0.05,
    reconnect_max_s=0.3,
    mqtt_timeout_s=10.0,  # the default: a busy machine can take seconds to answer
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
        assert ready.wait(60), "the broker did not start"

    def stop(self) -> None:
        assert self._thread is not None
        self._stop.set()
        self._thread.join(60)
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
        assert subscribed.wait(60), "no SUBACK within 60 s"

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.beats.append(parse_message(Telemetry, bytes(message.payload)))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def queued_telemetry_ids(path: Path) -> list[str]:
    """The ids of the heartbeats in an agent's disk queue, oldest first."""
    # Read-only: never create the file, or a table, the agent has yet to make.
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT payload FROM outbox WHERE topic LIKE '%/telemetry' ORDER BY id")
        return [parse_message(Telemetry, row[0]).id for row in rows]


def queued_telemetry(path: Path, process: subprocess.Popen[bytes]) -> int:
    """How many heartbeats the running agent has queued; 0 until its queue table exists."""
    assert process.poll() is None, process.stdout.read() if process.stdout else b""
    try:
        return len(queued_telemetry_ids(path))
    except sqlite3.OperationalError:  # no file or no table yet, or the agent holds a lock
        return 0


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
    store = StateFile(tmp_path / "queue.sqlite3", 10_000)
    mqtt_settings = MqttClientSettings(
        host=restartable_broker.host, port=restartable_broker.port, keepalive_s=5
    )
    agent = TerminalAgent(
        serial, secret, mqtt_settings, simulated_terminal(serial), options=FAST, queue=store
    )
    try:
        with AgentThread(agent):
            wait_until(lambda: len(subscriber.beats) >= 3, "3 heartbeats through the broker")
            restartable_broker.stop()
            down_from = datetime.now().astimezone()
            # The broker is down: heartbeats go to disk.
            wait_until(lambda: len(store) >= 5, "5 heartbeats queued on disk")
            queued_while_down = len(store)
            down_until = datetime.now().astimezone()
            restartable_broker.start()
            wait_until(lambda: len(store) <= 1, "the disk queue to drain")
        # Stopped cleanly, after a flush of at most STOP_FLUSH_S (2 s): on a busy machine
        # a heartbeat or two may still be on disk, kept for the agent's next start. None
        # is lost: each is at the subscriber or in the disk queue.
        # Distinct ids: a redelivered duplicate must not count for one still in flight.
        kept = set(queued_telemetry_ids(tmp_path / "queue.sqlite3"))
        wait_until(
            lambda: len({b.id for b in subscriber.beats} | kept) >= agent.stats.telemetry_queued,
            lambda: f"every queued heartbeat at the subscriber or on disk ({len(kept)} there)",
        )
        beats = subscriber.beats
        ids = [beat.id for beat in beats]
        assert len(set(ids) | kept) == agent.stats.telemetry_queued, "a heartbeat was lost"
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
        wait_until(
            lambda: queued_telemetry(queue_path, first) >= 5,
            "the agent to queue 5 heartbeats on disk",
            timeout=60,
        )
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    left_behind = queued_telemetry_ids(queue_path)
    assert len(left_behind) >= 5

    ingest = ingest_probe(mosquitto_broker)
    with running(agent_process(mosquitto_broker, serial, secret, queue_path)):
        wait_for_message(ingest, presence(serial, PresenceState.ONLINE))
        received: list[str] = []

        def drained() -> bool:
            for message in ingest.drain():
                if message.topic == topics.telemetry(serial):
                    received.append(parse_message(Telemetry, bytes(message.payload)).id)
            return set(left_behind) <= set(received)

        wait_until(drained, "the killed agent's queue to be drained", timeout=60)
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

    def agent_on(store: StateFile) -> TerminalAgent:
        return TerminalAgent(
            serial,
            secret,
            mqtt_settings,
            simulated_terminal(serial),
            options=FAST,
            queue=store,
            recent_commands=store,
        )

    store = StateFile(path, 1000)
    with AgentThread(agent_on(store)):
        wait_for_message(ingest, presence(serial, PresenceState.ONLINE))
        send_command(console, serial, "once-1", ping)
        send_command(console, serial, "once-1", ping)
        # Run once; the redelivery gets the same result again (same finish time).
        first, again = results(console, serial)
        assert (first.id, first.status) == ("once-1", CommandStatus.OK)
        assert unnumbered(again) == unnumbered(first)  # a new message, the same answer
    store.close()

    store = StateFile(path, 1000)  # a restarted agent, same disk
    with AgentThread(agent_on(store)):
        wait_for_message(ingest, presence(serial, PresenceState.ONLINE))
        send_command(console, serial, "once-1", ping)
        # From disk, not run again.
        assert [unnumbered(r) for r in results(console, serial)] == [unnumbered(first)]
        send_command(console, serial, "once-2", Command(id="once-2", name="ping").to_payload())
        assert [r.id for r in results(console, serial)] == ["once-2"]
    store.close()
    console.close()
    ingest.close()
