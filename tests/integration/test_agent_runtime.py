"""The agent against a real Mosquitto: presence, telemetry, will, commands, reconnects."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from agent.runtime import AgentOptions, TerminalAgent
from agent.sim.device import SimulatedTC200
from shared import topics
from shared.messages import (
    Command,
    CommandResult,
    CommandStatus,
    DeviceStatus,
    Presence,
    PresenceState,
    Telemetry,
    parse_message,
)
from shared.models import AccountKind
from shared.settings import MqttClientSettings
from tests.fixtures.broker import BrokerAddress, MqttProbe, RunningBroker
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def unnumbered(result: CommandResult) -> CommandResult:
    """A result without its message number: an answer sent again is a new message."""
    return result.model_copy(update={"seq": None, "stream": None})


REPO = Path(__file__).resolve().parents[2]
FAST = AgentOptions(
    heartbeat_interval_s=0.2,
    status_poll_interval_s=0.05,
    reconnect_base_s=0.05,
    reconnect_max_s=0.5,
    mqtt_timeout_s=10.0,  # the default: a busy machine can take seconds to answer
)


class AgentThread:
    """Runs one TerminalAgent in its own event loop, so the test thread can block on probes."""

    def __init__(self, agent: TerminalAgent) -> None:
        self.agent = agent
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await self.agent.run(self._stop)

        try:
            asyncio.run(main())
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> AgentThread:
        self._thread.start()
        assert self._ready.wait(60)
        return self

    def stop(self, timeout: float = 60.0) -> None:
        if self._thread.is_alive():
            assert self._loop is not None and self._stop is not None
            # The loop may have closed since is_alive(): the agent ended on its own.
            with suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)
        assert not self._thread.is_alive(), "the agent did not stop"
        if self.error is not None:
            raise self.error

    def __exit__(self, *exc: object) -> None:
        self.stop()


class TcpCutter:
    """A TCP relay in front of the broker whose connections the test can cut, or refuse."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.refusing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self, refuse: bool = True) -> None:
        """Drop every relayed connection at once, as a dead network would."""
        self.refusing = refuse
        with self._lock:
            doomed, self._sockets = self._sockets, []
        for sock in doomed:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.cut()
        self._listener.close()


def mqtt_of(broker: RunningBroker, port: int | None = None) -> MqttClientSettings:
    return MqttClientSettings(host=broker.host, port=port or broker.port, keepalive_s=5)


_ingest_secrets: dict[str, str] = {}


def ingest_probe(broker: RunningBroker) -> MqttProbe:
    # One secret per broker: asking again rotates it, and the reload drops earlier probes.
    if broker.database_url not in _ingest_secrets:
        _ingest_secrets[broker.database_url] = broker.service_account(
            AccountKind.INGEST, "tms-ingest"
        )
    probe = MqttProbe(broker, "tms-ingest", _ingest_secrets[broker.database_url])
    assert probe.connect()
    for topic_filter in topics.INGEST_FILTERS:
        assert probe.subscribe(topic_filter)
    return probe


def console_probe(broker: RunningBroker) -> MqttProbe:
    secret = broker.service_account(AccountKind.CONSOLE, "tms-console")
    probe = MqttProbe(broker, "tms-console", secret)
    assert probe.connect()
    assert probe.subscribe("tms/v1/+/cmd-result/+")
    return probe


def wait_for_message(
    probe: MqttProbe, accept: Callable[[str, bytes, bool], bool], timeout: float = 60.0
) -> tuple[str, bytes]:
    """The first message (topic, payload) ``accept`` takes; others are skipped."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = probe.messages.get(timeout=left)
        except queue.Empty:
            break
        payload = bytes(message.payload)
        if accept(message.topic, payload, bool(message.retain)):
            return message.topic, payload
    raise AssertionError(f"the expected message did not arrive within {timeout:g} s")


Accept = Callable[[str, bytes, bool], bool]


def presence(serial: str, state: PresenceState, reason: str | None = None) -> Accept:
    def accept(topic: str, payload: bytes, retain: bool) -> bool:
        if topic != topics.status(serial):
            return False
        message = parse_message(Presence, payload)
        return message.state is state and (reason is None or message.reason == reason)

    return accept


def telemetry_of(serial: str) -> Callable[[str, bytes, bool], bool]:
    return lambda topic, payload, retain: topic == topics.telemetry(serial)


def test_online_presence_retained_and_telemetry_flows(mosquitto_broker: RunningBroker) -> None:
    serial = "TC200-AG1"
    secret = mosquitto_broker.provision_terminal(serial)
    ingest = ingest_probe(mosquitto_broker)
    agent = TerminalAgent(
        serial, secret, mqtt_of(mosquitto_broker), SimulatedTC200(serial), options=FAST
    )
    with AgentThread(agent):
        wait_for_message(ingest, presence(serial, PresenceState.ONLINE))
        beats = [
            parse_message(Telemetry, wait_for_message(ingest, telemetry_of(serial))[1])
            for _ in range(3)
        ]
        assert all(beat.status is DeviceStatus.OK and beat.model == "TC-200" for beat in beats)
        assert beats[0].host.cpu is not None and beats[0].terminal.memory is not None
        assert len({beat.id for beat in beats}) == 3

        # A subscriber that arrives later still learns the terminal is online: retained.
        late = ingest_probe(mosquitto_broker)
        wait_for_message(
            late,
            lambda topic, payload, retain: (
                retain and presence(serial, PresenceState.ONLINE)(topic, payload, retain)
            ),
        )
        late.close()
    # A clean stop leaves a retained offline presence saying so.
    wait_for_message(ingest, presence(serial, PresenceState.OFFLINE, "agent stopped"))
    ingest.close()


def test_status_change_is_sent_at_once(mosquitto_broker: RunningBroker) -> None:
    serial = "TC200-AG2"
    secret = mosquitto_broker.provision_terminal(serial)
    ingest = ingest_probe(mosquitto_broker)
    device = SimulatedTC200(serial)
    # The next heartbeat is an hour away: telemetry within the wait is the status change's.
    slow = AgentOptions(heartbeat_interval_s=3600, status_poll_interval_s=0.05)
    with AgentThread(
        TerminalAgent(serial, secret, mqtt_of(mosquitto_broker), device, options=slow)
    ):
        wait_for_message(ingest, telemetry_of(serial))
        device.inject_fault(DeviceStatus.ERROR)
        beat = parse_message(Telemetry, wait_for_message(ingest, telemetry_of(serial))[1])
        assert beat.status is DeviceStatus.ERROR and beat.errors
    ingest.close()


def test_cut_connection_fires_will_then_agent_reconnects_and_sends_backlog(
    mosquitto_broker: RunningBroker,
) -> None:
    serial = "TC200-AG3"
    secret = mosquitto_broker.provision_terminal(serial)
    ingest = ingest_probe(mosquitto_broker)
    cutter = TcpCutter((mosquitto_broker.host, mosquitto_broker.port))
    agent = TerminalAgent(
        serial, secret, mqtt_of(mosquitto_broker, cutter.port), SimulatedTC200(serial), options=FAST
    )
    try:
        with AgentThread(agent):
            wait_for_message(ingest, presence(serial, PresenceState.ONLINE))
            cutter.cut(refuse=True)
            wait_for_message(ingest, presence(serial, PresenceState.OFFLINE, "agent disconnected"))
            # Heartbeats pile up in the outbox meanwhile.
            wait_until(lambda: len(agent.outbox) >= 3, "3 heartbeats in the outbox")
            cutter.refusing = False
            wait_for_message(ingest, presence(serial, PresenceState.ONLINE))
            wait_until(lambda: len(agent.outbox) <= 1, "the backlog to be sent")
            assert agent.stats.connects >= 2
            assert agent.stats.connect_failures >= 1
    finally:
        cutter.close()
        ingest.close()


def test_refused_login_is_retried_and_stop_is_prompt(mosquitto_broker: RunningBroker) -> None:
    serial = "TC200-AG4"
    mosquitto_broker.provision_terminal(serial)
    agent = TerminalAgent(
        serial,
        "not-the-secret",
        mqtt_of(mosquitto_broker),
        SimulatedTC200(serial),
        options=AgentOptions(heartbeat_interval_s=0.2),
    )
    runner = AgentThread(agent).__enter__()
    wait_until(lambda: agent.stats.refused_logins > 0, "the broker to refuse the login")
    assert agent.stats.refused_logins == 1  # the next try is 30 to 60 s away
    assert agent.stats.connects == 0
    started = time.monotonic()
    runner.stop()
    # The refused-login wait (at least 30 s) yields to stop; 20 s leaves room for a busy host.
    assert time.monotonic() - started < 20


def send_command(console: MqttProbe, serial: str, command_id: str, payload: bytes) -> None:
    assert console.publish(topics.command(serial, command_id), payload)


_markers = itertools.count(1)


def results(console: MqttProbe, serial: str, timeout: float = 60.0) -> list[CommandResult]:
    """Every result the agent sent for the commands sent so far, and nothing else.

    The agent answers its commands one at a time, in order, through its outbox: the
    answer to a ping sent now comes after every answer it owes, so once it is here,
    a result that has not come will not come.
    """
    marker = f"marker-{next(_markers)}"
    send_command(console, serial, marker, Command(id=marker, name="ping").to_payload())
    got: list[CommandResult] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = console.messages.get(timeout=left)
        except queue.Empty:
            break
        result = parse_message(CommandResult, bytes(message.payload))
        if result.id == marker:
            return got
        if result.id.startswith("marker-"):
            # An earlier marker's answer sent again: the caller saw it and stopped the agent
            # before the agent had its PUBACK, so the stop's flush (or the restarted agent,
            # from its disk queue) publishes it once more, as QoS 1 may.
            continue
        got.append(result)
    raise AssertionError(f"no answer to the marker command within {timeout:g} s: {got}")


def test_commands_answered_once_rejected_when_unknown_or_malformed(
    mosquitto_broker: RunningBroker,
) -> None:
    serial = "TC200-AG5"
    secret = mosquitto_broker.provision_terminal(serial)
    ingest = ingest_probe(mosquitto_broker)
    console = console_probe(mosquitto_broker)
    agent = TerminalAgent(
        serial, secret, mqtt_of(mosquitto_broker), SimulatedTC200(serial), options=FAST
    )
    with AgentThread(agent):
        wait_for_message(ingest, presence(serial, PresenceState.ONLINE))
        ping = Command(id="ping-1", name="ping").to_payload()
        send_command(console, serial, "ping-1", ping)
        send_command(console, serial, "ping-1", ping)  # delivered twice
        answered = results(console, serial)
        # Run once; the second delivery gets the first run's result again.
        assert [(r.id, r.status, r.output) for r in answered] == [
            ("ping-1", CommandStatus.OK, {"pong": True})
        ] * 2
        assert unnumbered(answered[0]) == unnumbered(answered[1])

        send_command(console, serial, "c-2", Command(id="c-2", name="self-destruct").to_payload())
        send_command(console, serial, "c-3", b'{"v": 1, "id": "c-3"')
        send_command(console, serial, "c-4", json.dumps({"v": 1, "id": "c-4"}).encode())
        by_id = {r.id: r for r in results(console, serial)}
        assert set(by_id) == {"c-2", "c-3", "c-4"}
        assert all(r.status is CommandStatus.REJECTED for r in by_id.values())
        assert "unknown command 'self-destruct'" in (by_id["c-2"].error or "")
        assert "not valid UTF-8 JSON" in (by_id["c-3"].error or "")
        assert "name" in (by_id["c-4"].error or "")

        # Still alive and answering after all that.
        send_command(console, serial, "ping-2", Command(id="ping-2", name="ping").to_payload())
        assert [r.id for r in results(console, serial)] == ["ping-2"]
        assert agent.stats.connects == 1
    console.close()
    ingest.close()


def agent_process(
    broker: BrokerAddress, serial: str, secret: str, queue_path: Path, port: int | None = None
) -> subprocess.Popen[bytes]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TMS_")}
    env |= {
        "TMS_AGENT_SERIAL": serial,
        "TMS_AGENT_MQTT_PASSWORD": secret,
        "TMS_AGENT_MQTT_HOST": broker.host,
        "TMS_AGENT_MQTT_PORT": str(port or broker.port),
        "TMS_AGENT_HEARTBEAT_INTERVAL_S": "0.2",
        "TMS_AGENT_SIMULATED_DEVICE": "true",
        "TMS_AGENT_QUEUE_PATH": str(queue_path),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tms", "agent"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@contextmanager
def running(process: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def test_killed_agent_process_goes_offline_by_will(
    mosquitto_broker: RunningBroker, tmp_path: Path
) -> None:
    serial = "TC200-AG6"
    secret = mosquitto_broker.provision_terminal(serial)
    ingest = ingest_probe(mosquitto_broker)
    with running(
        agent_process(mosquitto_broker, serial, secret, tmp_path / "queue.sqlite3")
    ) as process:
        wait_for_message(ingest, presence(serial, PresenceState.ONLINE))
        wait_for_message(ingest, telemetry_of(serial))
        process.send_signal(signal.SIGKILL)
        wait_for_message(ingest, presence(serial, PresenceState.OFFLINE, "agent disconnected"))
    ingest.close()


def test_sigterm_stops_agent_process_cleanly(
    mosquitto_broker: RunningBroker, tmp_path: Path
) -> None:
    serial = "TC200-AG7"
    secret = mosquitto_broker.provision_terminal(serial)
    ingest = ingest_probe(mosquitto_broker)
    with running(
        agent_process(mosquitto_broker, serial, secret, tmp_path / "queue.sqlite3")
    ) as process:
        wait_for_message(ingest, presence(serial, PresenceState.ONLINE))
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, process.stdout.read() if process.stdout else b""
        wait_for_message(ingest, presence(serial, PresenceState.OFFLINE, "agent stopped"))
    ingest.close()
