"""Every remote command against running agents and a real broker, sent as the console is.

A simulated terminal (the fleet simulator's agent: the real driver over a simulated
USB bus), the real ``tms agent`` process, and an agent over TLS each answer on
``cmd-result``; restart_agent brings the agent back and a redelivered command id is
not run again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.client import MQTTProtocolVersion

from shared import topics
from shared.diagnostics import DiagnosticsReport, Outcome, report_of
from shared.messages import (
    Command,
    CommandResult,
    CommandStatus,
    Presence,
    PresenceState,
    parse_message,
)
from shared.models import AccountKind
from shared.settings import MqttClientSettings
from tests.fixtures.broker import MqttProbe, RunningBroker
from tests.integration.agent_harness import (
    FleetThread,
    agent_process,
    ingest_probe,
    mqtt_of,
    presence,
    provision_fleet,
    results,
    running,
    send_command,
    unnumbered,
    wait_for_message,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


CHECK_IDS = [
    "usb_link",
    "device_self_test",
    "device_errors",
    "firmware_config",
    "host_resources",
    "clock_offset",
    "broker_round_trip",
    "dns",
    "tls",
    "outbox",
    "log_tail",
]


class Console:
    """Sends commands as the console's MQTT account and collects their results."""

    def __init__(self, broker: RunningBroker, serial: str) -> None:
        secret = broker.service_account(AccountKind.CONSOLE, "tms-console")
        # MQTT 3.1.1: amqtt 0.12.1 does not speak MQTT 5.
        self.probe = MqttProbe(broker, "tms-console", secret, protocol=MQTTProtocolVersion.MQTTv311)
        assert self.probe.connect()
        assert self.probe.subscribe(f"{topics.ROOT}/+/cmd-result/+")
        self.serial = serial

    def send(self, command_id: str, name: str, **args: Any) -> None:
        command = Command(id=command_id, name=name, args=args)
        send_command(self.probe, self.serial, command_id, command.to_payload())

    def run(self, command_id: str, name: str, **args: Any) -> CommandResult:
        """Send one command; its result (and nothing else) must come back."""
        self.send(command_id, name, **args)
        answered = results(self.probe, self.serial)
        assert [result.id for result in answered] == [command_id], answered
        return answered[0]

    def close(self) -> None:
        self.probe.close()


def status_probe(broker: RunningBroker) -> MqttProbe:
    """Ingest's view of presence: "online" comes once an agent has subscribed to commands."""
    secret = broker.service_account(AccountKind.INGEST, "tms-ingest")
    probe = MqttProbe(broker, "tms-ingest", secret, protocol=MQTTProtocolVersion.MQTTv311)
    assert probe.connect()
    assert probe.subscribe(f"{topics.ROOT}/+/status")
    return probe


def wait_online(probe: MqttProbe, serials: set[str], timeout: float = 120.0) -> None:
    online: set[str] = set()

    def all_online() -> bool:
        for message in probe.drain():
            state = parse_message(Presence, bytes(message.payload)).state
            serial = topics.parse(message.topic).serial
            if state is PresenceState.ONLINE:
                online.add(serial)
            else:
                online.discard(serial)
        return serials <= online

    wait_until(all_online, lambda: f"{len(serials)} terminals online ({len(online)} are)", timeout)


def check_report(result: CommandResult) -> DiagnosticsReport:
    assert result.status is CommandStatus.OK, result.error
    report = report_of(result.output)
    assert report is not None, result.output
    assert [check.id for check in report.checks] == CHECK_IDS
    return report


@contextmanager
def console_for(broker: RunningBroker, serial: str) -> Iterator[Console]:
    console = Console(broker, serial)
    try:
        yield console
    finally:
        console.close()


def test_every_command_on_a_simulated_terminal(
    mosquitto_broker: RunningBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # the agent's log ring sees what the root logger passes
    serial = "TC200-CMD1"
    secret = mosquitto_broker.provision_terminal(serial)
    ingest = ingest_probe(mosquitto_broker)
    with (
        console_for(mosquitto_broker, serial) as console,
        FleetThread([(serial, secret)], mqtt_of(mosquitto_broker)),
    ):
        wait_for_message(ingest, presence(serial, PresenceState.ONLINE))

        pong = console.run("ping-1", "ping")
        assert pong.status is CommandStatus.OK and pong.output["pong"] is True
        datetime.fromisoformat(pong.output["received_at"])

        report = check_report(console.run("diag-1", "diagnostics"))
        outcome = {check.id: check.outcome for check in report.checks}
        assert outcome["usb_link"] is Outcome.PASSED
        assert outcome["broker_round_trip"] is Outcome.PASSED
        assert outcome["dns"] is Outcome.SKIPPED and outcome["tls"] is Outcome.SKIPPED
        round_trip = next(c for c in report.checks if c.id == "broker_round_trip")
        assert round_trip.data["round_trip_ms"] > 0

        written = console.run("cfg-1", "set_config", beep_volume=30)
        assert written.status is CommandStatus.OK and written.output == {
            "written": {"beep_volume": "30"}
        }
        refused = console.run("cfg-2", "set_config", beep_volume=300)
        assert refused.status is CommandStatus.REJECTED
        assert "bad argument beep_volume" in (refused.error or "")

        reset = console.run("usb-1", "reset_usb")
        assert reset.status is CommandStatus.OK
        assert reset.output["reset"] is True and reset.output["answered"] is True

        logs = console.run("logs-1", "fetch_logs", lines=20)
        assert logs.status is CommandStatus.OK
        assert logs.output["count"] == len(logs.output["lines"]) <= 20
        assert any("USB link reset" in line for line in logs.output["lines"])
        assert all(serial in line for line in logs.output["lines"])

        rebooted = console.run("boot-1", "reboot")
        assert rebooted.status is CommandStatus.OK and rebooted.output == {"rebooting": True}

        restart_and_check_once(console, ingest, serial, pong.output["agent_started_at"])
    ingest.close()


def restart_and_check_once(
    console: Console, ingest: MqttProbe, serial: str, started_before: str
) -> None:
    """restart_agent: answered first, the agent comes back, a redelivery is not run."""
    restarted = console.run("restart-1", "restart_agent")
    assert restarted.status is CommandStatus.OK and restarted.output["restarting"] is True
    wait_for_message(ingest, presence(serial, PresenceState.OFFLINE, "agent restarting"))
    wait_for_message(ingest, presence(serial, PresenceState.ONLINE))

    pong = console.run("ping-after-restart", "ping")
    assert pong.output["agent_started_at"] > started_before  # a new run of the agent

    # The sender's retry of the same command id (its result went missing, say): the
    # first run's result again, kept on disk across the restart, and no second restart.
    console.send("restart-1", "restart_agent")
    # A new message (its own number) with the same content.
    assert [unnumbered(r) for r in results(console.probe, serial)] == [unnumbered(restarted)]
    ingest.drain()
    # Still the same run: the redelivered restart_agent did not restart it again.
    again = console.run("ping-after-redelivery", "ping")
    assert again.output["agent_started_at"] == pong.output["agent_started_at"]
    assert not [
        m for m in ingest.drain() if m.topic == topics.status(serial) and b"restarting" in m.payload
    ]


def test_restart_agent_re_executes_the_agent_process(
    mosquitto_broker: RunningBroker, tmp_path: Path
) -> None:
    serial = "TC200-CMD2"
    secret = mosquitto_broker.provision_terminal(serial)
    ingest = ingest_probe(mosquitto_broker)
    queue_path = tmp_path / "queue.sqlite3"
    with (
        console_for(mosquitto_broker, serial) as console,
        running(agent_process(mosquitto_broker, serial, secret, queue_path)) as process,
    ):
        wait_for_message(ingest, presence(serial, PresenceState.ONLINE))
        pong = console.run("ping-1", "ping")
        report = check_report(console.run("diag-1", "diagnostics"))
        # The real agent logs at INFO: its own lines are in the report.
        assert any("agent for TC200-CMD2 starting" in line for line in report.log_tail)
        logs = console.run("logs-1", "fetch_logs", lines=5)
        assert 0 < logs.output["count"] <= 5

        restart_and_check_once(console, ingest, serial, pong.output["agent_started_at"])
        # Re-executed in place: the same process (systemd keeps tracking it), still running.
        assert process.poll() is None
    ingest.close()


def test_diagnostics_checks_tls_to_the_broker(tls_broker: RunningBroker) -> None:
    assert tls_broker.tls is not None and tls_broker.tls_port is not None
    serial = "TC200-CMD3"
    secret = tls_broker.provision_terminal(serial)
    mqtt = MqttClientSettings(
        host="localhost", port=tls_broker.tls_port, tls_ca=tls_broker.tls.ca_cert, keepalive_s=5
    )
    statuses = status_probe(tls_broker)
    with console_for(tls_broker, serial) as console, FleetThread([(serial, secret)], mqtt):
        wait_online(statuses, {serial})
        report = check_report(console.run("diag-tls", "diagnostics"))
        by_id = {check.id: check for check in report.checks}
        tls = by_id["tls"]
        assert tls.outcome is Outcome.PASSED, tls.summary
        assert tls.data["handshake_ok"] is True and tls.data["protocol"].startswith("TLS")
        assert tls.data["ca_days_left"] > 30 and tls.data["server_days_left"] > 30
        assert by_id["dns"].outcome is Outcome.SKIPPED  # localhost: not looked up
    statuses.close()


def test_diagnostics_to_a_simulated_fleet_at_once(mosquitto_broker: RunningBroker) -> None:
    fleet = provision_fleet(mosquitto_broker, 50, "TC200-DF")
    console = Console(mosquitto_broker, "unused")
    statuses = status_probe(mosquitto_broker)
    try:
        with FleetThread(fleet, mqtt_of(mosquitto_broker)):
            wait_online(statuses, {serial for serial, _ in fleet})
            for serial, _ in fleet:
                command = Command(id=f"diag-{serial}", name="diagnostics")
                send_command(console.probe, serial, command.id, command.to_payload())
            reports: dict[str, DiagnosticsReport] = {}

            def collect() -> bool:
                for message in console.probe.drain():
                    result = parse_message(CommandResult, bytes(message.payload))
                    reports[result.id] = check_report(result)
                return len(reports) == len(fleet)

            wait_until(collect, lambda: f"50 diagnostics results ({len(reports)} came)", 120)
        assert all(report.passed for report in reports.values()), [
            (key, report.first_failure) for key, report in reports.items() if not report.passed
        ]
    finally:
        console.close()
        statuses.close()
