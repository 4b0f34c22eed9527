"""The fleet simulator against a real Mosquitto: every terminal its own login, all online."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.sim.fleet import DEFAULT_STATUS_POLL_S, summarise
from agent.sim.fleet_file import write_fleet_file
from shared import topics
from shared.messages import Presence, PresenceState, parse_message
from shared.settings import MqttClientSettings
from tests.fixtures.broker import MqttProbe, RunningBroker
from tests.integration.agent_harness import FleetThread, ingest_probe, provision_fleet
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


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
    fleet_thread = FleetThread(
        fleet, mqtt, 0.2, connect_spread_s=0.5, status_poll_s=DEFAULT_STATUS_POLL_S
    )
    with fleet_thread:
        watcher.wait(lambda: watcher.all_in(serials, PresenceState.ONLINE))
        watcher.wait(lambda: all(watcher.telemetry.get(serial, 0) >= 2 for serial in serials))
        live = summarise(fleet_thread.agents)
        assert live.connected == 20
        assert live.refused_logins == 0
    summary = fleet_thread.result
    assert summary is not None
    watcher.wait(lambda: watcher.all_in(serials, PresenceState.OFFLINE))
    assert all(watcher.presence[s].reason == "agent stopped" for s in serials)
    assert summary.terminals == 20 and summary.connected == 0
    assert summary.telemetry_sent >= 40
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
