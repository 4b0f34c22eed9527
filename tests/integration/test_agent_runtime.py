"""The agent against a real Mosquitto: presence, telemetry, will, commands, reconnects."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent.commands import DEFAULT_HANDLERS
from agent.runtime import AgentOptions, TerminalAgent
from agent.sim.device import SimulatedTC200
from shared.messages import (
    Command,
    CommandStatus,
    DeviceStatus,
    PresenceState,
    Telemetry,
    parse_message,
)
from tests.fixtures.broker import RunningBroker
from tests.integration.agent_harness import (
    FAST,
    AgentThread,
    agent_process,
    console_probe,
    ingest_probe,
    mqtt_of,
    presence,
    results,
    running,
    send_command,
    telemetry_of,
    unnumbered,
    wait_for_message,
)
from tests.integration.tcp_cutter import TcpCutter
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


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


def test_command_running_when_the_broker_goes_away_is_answered_once(
    mosquitto_broker: RunningBroker,
) -> None:
    """A lost connection must not cancel the command it interrupts: its id is already
    remembered, so a cancelled run would leave every resend ignored as "still running"
    (a firmware wave then waited half an hour for a result that never came)."""
    serial = "TC200-AG9"
    secret = mosquitto_broker.provision_terminal(serial)
    ingest = ingest_probe(mosquitto_broker)
    console = console_probe(mosquitto_broker)
    cutter = TcpCutter((mosquitto_broker.host, mosquitto_broker.port))
    started, release = threading.Event(), threading.Event()
    runs: list[str] = []

    async def slow(command: Command) -> dict[str, Any]:
        runs.append(command.id)
        started.set()
        while not release.is_set():
            await asyncio.sleep(0.02)
        return {"finished": True}

    agent = TerminalAgent(
        serial,
        secret,
        mqtt_of(mosquitto_broker, cutter.port),
        SimulatedTC200(serial),
        options=FAST,
        handlers={**DEFAULT_HANDLERS, "slow": slow},
    )
    slow_1 = Command(id="slow-1", name="slow").to_payload()
    try:
        with AgentThread(agent):
            wait_for_message(ingest, presence(serial, PresenceState.ONLINE))
            send_command(console, serial, "slow-1", slow_1)
            wait_until(started.is_set, "the slow command to start")
            cutter.cut(refuse=True)
            wait_for_message(ingest, presence(serial, PresenceState.OFFLINE, "agent disconnected"))
            # The agent itself must have seen the session end while the command runs.
            wait_until(lambda: not agent.stats.connected, "the agent to notice the cut")
            assert not release.is_set() and runs == ["slow-1"]
            release.set()
            cutter.refusing = False
            wait_for_message(ingest, presence(serial, PresenceState.ONLINE))
            answered = results(console, serial)
            assert [(r.id, r.status, r.output) for r in answered] == [
                ("slow-1", CommandStatus.OK, {"finished": True})
            ]
            # The sender's resend gets the same result again, not a second run.
            send_command(console, serial, "slow-1", slow_1)
            again = results(console, serial)
            assert [unnumbered(r) for r in again] == [unnumbered(answered[0])]
            assert runs == ["slow-1"]
    finally:
        cutter.close()
        console.close()
        ingest.close()


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
