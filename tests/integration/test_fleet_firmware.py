"""Simulated terminals of ``tms simulate`` update their firmware end to end: a ``firmware``
command over a real Mosquitto, the image from a real console (waitress on a free port,
the terminal's own login), verified with the platform's public key, installed over the
simulated USB. One image that fails its boot on half the terminals: the terminal its
share picks rolls back and says so, the other boots it and heartbeats the new version.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Iterator
from pathlib import Path

import pytest
from sqlmodel import Session

from agent.sim.firmware import ImageHeader, make_image
from agent.sim.fleet import FleetSummary, run_fleet
from agent.sim.fleet_file import FleetFirmware
from console.db import engine_of
from console.server import ConsoleServer
from rollouts import library
from shared import topics
from shared.firmware_signature import public_key_pem
from shared.messages import (
    Command,
    CommandResult,
    CommandStatus,
    Presence,
    PresenceState,
    Telemetry,
    parse_message,
)
from shared.models import FirmwareState
from shared.ports import free_port
from shared.settings import ConsoleSettings
from tests.fixtures.broker import MqttProbe, RunningBroker
from tests.fixtures.console import build_app
from tests.integration.agent_harness import (
    LoopThread,
    console_probe,
    ingest_probe,
    mqtt_of,
    provision_fleet,
    send_command,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

STEPS = ["downloading", "downloaded", "verified", "installing", "rebooting"]


@pytest.fixture
def console_url(
    console_settings: ConsoleSettings, database_url: str, firmware_library: library.Library
) -> Iterator[str]:
    app = build_app(console_settings, database_url, firmware_library)
    server = ConsoleServer(app, "127.0.0.1", free_port(), threads=4)
    thread = threading.Thread(target=server.serve, name="console-server", daemon=True)
    thread.start()
    yield server.url
    server.stop()
    thread.join(timeout=60)
    engine_of(app).dispose()
    assert not thread.is_alive(), "the console server did not stop"


def splitting_version(serials: tuple[str, str], percent: float) -> str:
    """A version whose image, failing on ``percent`` %, boots on the first terminal and
    fails on the second: the share picks by (serial, version), the same on every run."""
    for minor in range(1, 1000):
        header = ImageHeader(f"9.{minor}.0", percent)
        if not header.fails_on(serials[0]) and header.fails_on(serials[1]):
            return header.version
    raise AssertionError("no version splits the two terminals")


def released(
    broker: RunningBroker, firmware_library: library.Library, image: bytes, version: str
) -> Command:
    """Add and release ``image``; the firmware command a rollout would send for it."""
    with Session(broker.engine) as session:
        firmware = library.add_image(
            session, firmware_library, image=image, filename="sim.img", version=version,
            models=("TC-200",), notes="", actor="test",
        )  # fmt: skip
        library.change_state(session, version, FirmwareState.RELEASED, "test")
        session.commit()
        args = {
            "version": firmware.version,
            "models": list(firmware.models or ()),
            "size": firmware.size,
            "sha256": firmware.sha256,
            "signature": firmware.signature,
        }
    return Command(id=f"fw-{version.replace('.', '-')}", name="firmware", args=args)


def wait_online(probe: MqttProbe, serials: set[str]) -> None:
    online: set[str] = set()

    def all_online() -> bool:
        for message in probe.drain():
            parsed = topics.parse(message.topic)
            if parsed.kind is topics.TopicKind.STATUS:
                state = parse_message(Presence, bytes(message.payload)).state
                (online.add if state is PresenceState.ONLINE else online.discard)(parsed.serial)
        return serials <= online

    wait_until(all_online, "the simulated terminals online", 120)


def answers_to(console: MqttProbe, command_id: str, serials: set[str]) -> dict[str, CommandResult]:
    """Each terminal's result of command ``command_id``, by serial."""
    answers: dict[str, CommandResult] = {}

    def all_answered() -> bool:
        for message in console.drain():
            result = parse_message(CommandResult, bytes(message.payload))
            if result.id == command_id:
                answers[topics.parse(message.topic).serial] = result
        return set(answers) == serials

    wait_until(all_answered, f"the results of {command_id}", 120)
    return answers


def test_a_simulated_fleet_installs_from_the_console_and_the_share_rolls_back(
    mosquitto_broker: RunningBroker,
    firmware_library: library.Library,
    console_url: str,
    tmp_path: Path,
) -> None:
    fleet = provision_fleet(mosquitto_broker, 2, "FW")
    (good, _), (bad, _) = fleet
    version = splitting_version((good, bad), 50)
    command = released(
        mosquitto_broker, firmware_library, make_image(version, fail_boot_percent=50), version
    )
    command.args["url"] = f"{console_url}/agent/v1/firmware/{version}/image"
    public_key = tmp_path / "firmware-public.pem"
    public_key.write_bytes(public_key_pem(library.read_signing_key(firmware_library.signing_key)))
    firmware = FleetFirmware(public_key=public_key, directory=tmp_path / "downloads")

    def fleet_main(stop: asyncio.Event) -> Awaitable[FleetSummary]:
        return run_fleet(
            fleet, mqtt_of(mosquitto_broker), 0.5, stop,
            connect_spread_s=0.0, status_poll_s=0.1, firmware=firmware,
        )  # fmt: skip

    watcher = ingest_probe(mosquitto_broker)
    console = console_probe(mosquitto_broker)
    fleet_thread = LoopThread(fleet_main, "fleet")
    fleet_thread.start()
    try:
        wait_online(watcher, {good, bad})
        for serial, _ in fleet:
            send_command(console, serial, command.id, command.to_payload())
        answers = answers_to(console, command.id, {good, bad})

        booted = answers[good]
        assert booted.status is CommandStatus.OK, booted.error
        assert booted.output["outcome"] == "succeeded"
        assert booted.output["version_after"] == version != booted.output["version_before"]
        assert [s["state"] for s in booted.output["states"]] == [*STEPS, "succeeded"]

        rolled = answers[bad]
        assert rolled.status is CommandStatus.ERROR and "rolled_back" in (rolled.error or "")
        assert (rolled.output["outcome"], rolled.output["failure"]) == (
            "rolled_back",
            "rolled_back",
        )
        assert rolled.output["version_after"] == rolled.output["version_before"] != version
        assert [s["state"] for s in rolled.output["states"]] == [*STEPS, "rolled_back"]

        # The updated terminal heartbeats its new version; the image it installed is gone
        # from its directory, while the rolled-back one keeps its copy for a retry.
        def heartbeats_new_version() -> bool:
            return any(
                message.topic == topics.telemetry(good)
                and parse_message(Telemetry, bytes(message.payload)).firmware == version
                for message in watcher.drain()
            )

        wait_until(heartbeats_new_version, f"{good} heartbeating firmware {version}", 60)
        assert not list((tmp_path / "downloads" / good).glob("*.img"))
        assert [p.name for p in (tmp_path / "downloads" / bad).glob("*.img")] == [f"{version}.img"]
    finally:
        fleet_thread.stop()
        watcher.close()
        console.close()
