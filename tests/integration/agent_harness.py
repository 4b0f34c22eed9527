"""Running agents in tests against a real broker: threads, processes, probes and waits.

An agent (or a simulated fleet) runs in an event loop of its own thread, so the test
thread can block on MQTT probes; ``tms agent`` runs as a real process. The probes log
in as ingest or the console would, and the helpers wait for the one message a test
expects, with a deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Generic, TypeVar

from sqlmodel import Session

from agent.runtime import AgentOptions, RunOutcome, TerminalAgent
from agent.sim.fleet import FleetSummary, run_fleet
from registry import provisioning
from shared import topics
from shared.messages import Command, CommandResult, Presence, PresenceState, parse_message
from shared.models import AccountKind
from shared.settings import MqttClientSettings
from tests.fixtures.broker import BrokerAddress, MqttProbe, RunningBroker

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
FAST = AgentOptions(
    heartbeat_interval_s=0.2,
    status_poll_interval_s=0.05,
    reconnect_base_s=0.05,
    reconnect_max_s=0.5,
    mqtt_timeout_s=10.0,  # the default: a busy machine can take seconds to answer
)

Accept = Callable[[str, bytes, bool], bool]


class LoopThread(Generic[T]):
    """Runs ``main(stop)`` in its own event loop and thread; ``stop()`` sets ``stop``."""

    def __init__(self, main: Callable[[asyncio.Event], Awaitable[T]], what: str) -> None:
        self._main_of = main
        self._what = what
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def main() -> T:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            return await self._main_of(self._stop)

        try:
            self.result = asyncio.run(main())
        except BaseException as exc:
            self.error = exc

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(60)

    def stop(self, timeout: float = 60.0) -> None:
        """Set ``stop``, wait for ``main`` to end, and raise what it raised."""
        if self._thread.is_alive():
            assert self._loop is not None and self._stop is not None
            # The loop may have closed since is_alive(): main ended on its own.
            with suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the {self._what} did not stop"
        if self.error is not None:
            raise self.error

    def __exit__(self, *exc: object) -> None:
        self.stop()


class AgentThread(LoopThread[RunOutcome]):
    """One TerminalAgent, run until stopped."""

    def __init__(self, agent: TerminalAgent) -> None:
        super().__init__(agent.run, "agent")
        self.agent = agent

    def __enter__(self) -> AgentThread:
        self.start()
        return self


class FleetThread(LoopThread[FleetSummary]):
    """``run_fleet`` (the simulator, restarts included); ``agents`` fills as they start."""

    def __init__(
        self,
        terminals: list[tuple[str, str]],
        mqtt: MqttClientSettings,
        heartbeat_s: float = 0.5,
        *,
        connect_spread_s: float = 0.0,
        status_poll_s: float = 0.1,
    ) -> None:
        self.agents: list[TerminalAgent] = []

        def main(stop: asyncio.Event) -> Awaitable[FleetSummary]:
            return run_fleet(
                terminals,
                mqtt,
                heartbeat_s,
                stop,
                connect_spread_s=connect_spread_s,
                status_poll_s=status_poll_s,
                agents_out=self.agents,
            )

        super().__init__(main, "fleet")

    def __enter__(self) -> FleetThread:
        self.start()
        return self


def unnumbered(result: CommandResult) -> CommandResult:
    """A result without its message number: an answer sent again is a new message."""
    return result.model_copy(update={"seq": None, "stream": None})


def mqtt_of(broker: RunningBroker, port: int | None = None) -> MqttClientSettings:
    return MqttClientSettings(host=broker.host, port=port or broker.port, keepalive_s=5)


def provision_fleet(broker: RunningBroker, count: int, prefix: str) -> list[tuple[str, str]]:
    """Provision ``count`` terminals in one transaction, then wait for one broker reload."""
    with Session(broker.engine) as session:
        fleet = [
            (serial, provisioning.provision_terminal(session, serial, "Fleet Customer", None))
            for serial in (f"{prefix}-{n:04d}" for n in range(count))
        ]
        session.commit()
    broker.wait_reloaded()
    return fleet


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


def wait_for_message(probe: MqttProbe, accept: Accept, timeout: float = 60.0) -> tuple[str, bytes]:
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


def presence(serial: str, state: PresenceState, reason: str | None = None) -> Accept:
    def accept(topic: str, payload: bytes, retain: bool) -> bool:
        if topic != topics.status(serial):
            return False
        message = parse_message(Presence, payload)
        return message.state is state and (reason is None or message.reason == reason)

    return accept


def telemetry_of(serial: str) -> Accept:
    return lambda topic, payload, retain: topic == topics.telemetry(serial)


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


def agent_process(
    broker: BrokerAddress, serial: str, secret: str, queue_path: Path, port: int | None = None
) -> subprocess.Popen[bytes]:
    """``tms agent`` over a simulated TC-200, as its own process."""
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
    """``process``, killed on the way out if it still runs."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
