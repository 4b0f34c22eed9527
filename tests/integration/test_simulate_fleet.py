"""The fleet simulator against a real Mosquitto: every terminal its own login, all online."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlmodel import Session

from agent.runtime import TerminalAgent
from agent.sim.fleet import FleetSummary, run_fleet, summarise
from agent.sim.fleet_file import write_fleet_file
from registry import provisioning
from shared import topics
from shared.messages import Presence, PresenceState, parse_message
from shared.models import AccountKind
from shared.settings import MqttClientSettings
from tests.fixtures.broker import MqttProbe, RunningBroker
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


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


def ingest_probe(broker: RunningBroker) -> MqttProbe:
    secret = broker.service_account(AccountKind.INGEST, "tms-ingest")
    probe = MqttProbe(broker, "tms-ingest", secret)
    assert probe.connect()
    for topic_filter in topics.INGEST_FILTERS:
        assert probe.subscribe(topic_filter)
    return probe


class PresenceWatcher:
    """Follows the latest presence and telemetry count per serial from an ingest probe."""

    def __init__(self, probe: MqttProbe) -> None:
        self.probe = probe
        self.presence: dict[str, Presence] = {}
        self.telemetry: dict[str, int] = {}

    def wait(self, done: Callable[[], bool], timeout: float = 60.0) -> None:
        def reached() -> bool:
            for message in self.probe.drain():
                parsed = topics.parse(message.topic)
                if parsed.kind is topics.TopicKind.STATUS:
                    self.presence[parsed.serial] = parse_message(Presence, bytes(message.payload))
                elif parsed.kind is topics.TopicKind.TELEMETRY:
                    self.telemetry[parsed.serial] = self.telemetry.get(parsed.serial, 0) + 1
            return done()

        wait_until(reached, "the fleet to reach the expected state", timeout)

    def all_in(self, serials: set[str], state: PresenceState) -> bool:
        return all(
            serial in self.presence and self.presence[serial].state is state for serial in serials
        )


def test_twenty_terminals_come_online_heartbeat_and_go_offline(
    mosquitto_broker: RunningBroker,
) -> None:
    fleet = provision_fleet(mosquitto_broker, 20, "SIM")
    serials = {serial for serial, _ in fleet}
    watcher = PresenceWatcher(ingest_probe(mosquitto_broker))
    mqtt = MqttClientSettings(host=mosquitto_broker.host, port=mosquitto_broker.port)
    agents: list[TerminalAgent] = []
    summary: list[FleetSummary] = []
    loop_ready = threading.Event()
    holder: dict[str, object] = {}

    def serve() -> None:
        async def main() -> None:
            stop = asyncio.Event()
            holder["loop"], holder["stop"] = asyncio.get_running_loop(), stop
            loop_ready.set()
            summary.append(
                await run_fleet(fleet, mqtt, 0.2, stop, connect_spread_s=0.5, agents_out=agents)
            )

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert loop_ready.wait(60)
    try:
        watcher.wait(lambda: watcher.all_in(serials, PresenceState.ONLINE))
        watcher.wait(lambda: all(watcher.telemetry.get(serial, 0) >= 2 for serial in serials))
        live = summarise(agents)
        assert live.connected == 20
        assert live.refused_logins == 0
    finally:
        loop, stop = holder["loop"], holder["stop"]
        assert isinstance(loop, asyncio.AbstractEventLoop) and isinstance(stop, asyncio.Event)
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)
    assert not thread.is_alive()
    watcher.wait(lambda: watcher.all_in(serials, PresenceState.OFFLINE))
    assert all(watcher.presence[s].reason == "agent stopped" for s in serials)
    assert summary[0].terminals == 20 and summary[0].connected == 0
    assert summary[0].telemetry_sent >= 40
    watcher.probe.close()


def test_simulate_command_runs_fleet_from_credentials_file_and_stops_on_sigterm(
    mosquitto_broker: RunningBroker, tmp_path: Path
) -> None:
    fleet = provision_fleet(mosquitto_broker, 5, "CLI")
    serials = {serial for serial, _ in fleet}
    credentials_file = tmp_path / "fleet.json"
    mqtt = MqttClientSettings(host=mosquitto_broker.host, port=mosquitto_broker.port)
    write_fleet_file(credentials_file, fleet, mqtt)
    watcher = PresenceWatcher(ingest_probe(mosquitto_broker))
    env = {key: value for key, value in os.environ.items() if not key.startswith("TMS_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "tms", "simulate", "--terminals", "4",
         "--credentials-file", str(credentials_file), "--heartbeat", "0.5", "--fault-rate", "0.01"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        simulated = {serial for serial in serials if serial != "CLI-0004"}
        watcher.wait(lambda: watcher.all_in(simulated, PresenceState.ONLINE))
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0].decode()
        assert process.returncode == 0, output
        assert "fleet stopped: 0/4 connected" in output
        watcher.wait(lambda: watcher.all_in(simulated, PresenceState.OFFLINE))
        assert "CLI-0004" not in watcher.presence  # only the first four were asked for
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        watcher.probe.close()
