"""Staged rollouts end to end on real parts: the rollout driver (``rollouts.driver``)
starts tasks as ``firmware`` command rows, the command sender publishes them over a real
Mosquitto, simulated terminals (the real agent over a faked USB device) download the
image from a real console with their own logins, verify its signature and install it,
ingest writes the results and progress events back, and the driver moves the rollout on.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from pydantic import SecretStr
from sqlmodel import Session

from agent.sim.firmware import ImageHeader, make_image
from agent.sim.fleet import FleetSummary, run_fleet
from agent.sim.fleet_file import FleetFirmware
from commands.mqtt_link import MqttLink
from commands.sender import serve as serve_commands
from console.db import engine_of
from console.server import ConsoleServer
from rollouts import library, manage
from rollouts.driver import Driver
from rollouts.driver import serve as serve_rollouts
from rollouts.targets import Target
from shared.db import libpq_url
from shared.firmware_signature import generate_key, private_key_pem, public_key_pem
from shared.models import AccountKind, FirmwareState
from shared.ports import free_port
from shared.settings import ConsoleSettings, IngestSettings, MqttClientSettings
from tests.fixtures.broker import RunningBroker
from tests.fixtures.console import build_app, scratch_firmware_library
from tests.fixtures.firmware import wait_fleet_ready
from tests.integration.agent_harness import LoopThread, mqtt_of, provision_fleet
from tests.integration.test_ingest_daemon import IngestThread
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

WAIT_S = 120.0
FAST = {"health_margin_points": None, "retry_delay_s": 1, "max_retry_delay_s": 2}


@dataclass
class Platform:
    broker: RunningBroker
    database_url: str
    lib: library.Library
    console_url: str
    public_key: Path
    tmp: Path

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(libpq_url(self.database_url), autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description is not None else []

    def release(self, version: str, image: bytes) -> None:
        with Session(self.broker.engine) as session:
            library.add_image(
                session, self.lib, image=image, filename=f"{version}.img", version=version,
                models=("TC-200",), notes="", actor="test",
            )  # fmt: skip
            library.change_state(session, version, FirmwareState.RELEASED, "test")
            session.commit()

    def create(self, version: str, waves: str, policy: dict[str, Any], seed: int = 7) -> int:
        with Session(self.broker.engine) as session:
            rollout_id = manage.create(
                session, name=f"roll {version}", version=version, target=Target(),
                policy=policy, wave_spec=waves, actor="test", seed=seed,
            )  # fmt: skip
            session.commit()
        return rollout_id

    def plan(self, version: str, waves: str, seed: int = 7) -> manage.Plan:
        with Session(self.broker.engine) as session:
            return manage.plan(session, version, Target(), waves, seed)

    def steer(self, action: str, rollout_id: int, *args: Any) -> None:
        with Session(self.broker.engine) as session:
            getattr(manage, action)(session, rollout_id, *args)
            session.commit()

    @contextmanager
    def fleet(self, terminals: list[tuple[str, str]]) -> Iterator[None]:
        firmware = FleetFirmware(
            public_key=self.public_key, directory=self.tmp / "downloads", boot_wait_s=2.0
        )

        def main(stop: asyncio.Event) -> Awaitable[FleetSummary]:
            return run_fleet(
                terminals, mqtt_of(self.broker), 0.5, stop,
                connect_spread_s=0.0, status_poll_s=0.1, firmware=firmware,
            )  # fmt: skip

        thread = LoopThread(main, "fleet")
        thread.start()
        try:
            yield
        finally:
            thread.stop()

    def states(self, rollout_id: int) -> dict[tuple[int, str], int]:
        rows = self.sql(
            "SELECT wave, state, count(*) FROM update_task WHERE rollout_id = %s"
            " GROUP BY wave, state",
            rollout_id,
        )
        return {(wave, state): n for wave, state, n in rows}

    def rollout_state(self, rollout_id: int) -> str:
        return str(self.sql("SELECT state FROM rollout WHERE id = %s", rollout_id)[0][0])

    def wait_state(self, rollout_id: int, state: str, timeout: float = WAIT_S) -> None:
        wait_until(
            lambda: self.rollout_state(rollout_id) == state,
            f"rollout {rollout_id} {state} (tasks: {self.states(rollout_id)})",
            timeout,
        )

    def online(self, serials: list[str]) -> None:
        wait_fleet_ready(self.sql, serials, WAIT_S)


def _account(broker: RunningBroker, username: str, secret: str) -> MqttClientSettings:
    return MqttClientSettings(
        host=broker.host, port=broker.port, username=username, password=SecretStr(secret)
    )


@pytest.fixture
def platform(
    mosquitto_broker: RunningBroker,
    database_url: str,
    console_settings: ConsoleSettings,
    tmp_path: Path,
) -> Iterator[Platform]:
    broker = mosquitto_broker
    lib = scratch_firmware_library(tmp_path / "library")
    library.write_signing_key(lib.signing_key, private_key_pem(generate_key()))
    public_key = tmp_path / "public.pem"
    public_key.write_bytes(public_key_pem(library.read_signing_key(lib.signing_key)))

    app = build_app(console_settings, database_url, lib)
    server = ConsoleServer(app, "127.0.0.1", free_port(), threads=8)
    console = threading.Thread(target=server.serve, name="console", daemon=True)
    console.start()

    ingest_secret = broker.service_account(AccountKind.INGEST, "tms-ingest")
    console_secret = broker.service_account(AccountKind.CONSOLE, "tms-console")
    ingest = IngestThread(
        IngestSettings(
            mqtt=_account(broker, "tms-ingest", ingest_secret),
            client_id="tms-ingest-rollouts",
            batch_interval_ms=50,
            metrics_port=free_port(),
        ),
        database_url,
    ).start()
    link = MqttLink(_account(broker, "tms-console", console_secret), subscriptions=[])
    link.start()
    assert link.wait_connected(WAIT_S)
    stop = threading.Event()
    url = libpq_url(database_url)
    sender = threading.Thread(
        target=serve_commands, args=(url, link, stop), kwargs={"idle_check_s": 0.5}, daemon=True
    )
    image_url = f"{server.url}/agent/v1/firmware/{{}}/image"
    driver = threading.Thread(
        target=serve_rollouts,
        args=(
            url,
            lambda conn: Driver(conn, download_url=image_url.format, mirror_url=lambda _: None),
            stop,
        ),
        kwargs={"tick_s": 0.3},
        daemon=True,
    )
    sender.start()
    driver.start()
    try:
        yield Platform(broker, database_url, lib, server.url, public_key, tmp_path)
    finally:
        stop.set()
        sender.join(WAIT_S)
        driver.join(WAIT_S)
        link.stop()
        ingest.stop()
        server.stop()
        console.join(WAIT_S)
        engine_of(app).dispose()
    assert not sender.is_alive() and not driver.is_alive()


def test_a_clean_rollout_goes_through_three_waves(platform: Platform) -> None:
    fleet = provision_fleet(platform.broker, 6, "RC")
    serials = [serial for serial, _ in fleet]
    version = "7.1.0"
    platform.release(version, make_image(version))
    with platform.fleet(fleet):
        platform.online(serials)
        rollout_id = platform.create(version, "1,3,*", {**FAST, "success_threshold_pct": 100})
        assert platform.plan(version, "1,3,*").total == 0  # every terminal is taken
        platform.wait_state(rollout_id, "completed")
    assert platform.states(rollout_id) == {(1, "succeeded"): 1, (2, "succeeded"): 3,
                                           (3, "succeeded"): 2}  # fmt: skip
    # Each wave opened after the one before it had succeeded.
    waves = platform.sql(
        "SELECT w.number, w.started_at, max(u.finished_at) FROM rollout_wave AS w"
        " JOIN update_task AS u ON u.rollout_id = w.rollout_id AND u.wave = w.number"
        " WHERE w.rollout_id = %s GROUP BY w.number, w.started_at ORDER BY w.number",
        rollout_id,
    )
    assert waves[0][2] <= waves[1][1] and waves[1][2] <= waves[2][1]
    assert {row[0] for row in platform.sql(
        "SELECT firmware_version FROM terminal WHERE serial = ANY(%s)", serials
    )} == {version}  # fmt: skip
    tasks = platform.sql(
        "SELECT attempts, from_version, version_after, started_at <= finished_at"
        " FROM update_task WHERE rollout_id = %s",
        rollout_id,
    )
    assert all(row[0] == 1 and row[1] != version and row[2] == version and row[3] for row in tasks)
    audited = {row[0] for row in platform.sql(
        "SELECT action FROM audit_event WHERE target = %s", f"rollout:{rollout_id}"
    )}  # fmt: skip
    assert {"rollout.create", "rollout.wave", "rollout.complete"} <= audited


def _failing_version(wave_one: tuple[str, ...], rest: list[str], percent: float) -> str:
    """A version whose image fails to boot on exactly one terminal of wave 1 and on none
    of the others: the simulator picks by a hash of (serial, version)."""
    for minor in range(1, 5000):
        header = ImageHeader(f"8.{minor}.0", percent)
        failing = [s for s in wave_one if header.fails_on(s)]
        if len(failing) == 1 and not any(header.fails_on(s) for s in rest):
            return header.version
    raise AssertionError("no version fails on exactly one terminal of wave 1")


def test_an_image_that_fails_to_boot_halts_wave_one_and_those_terminals_roll_back(
    platform: Platform,
) -> None:
    fleet = provision_fleet(platform.broker, 10, "RB")
    serials = [serial for serial, _ in fleet]
    platform.release("6.0.0", make_image("6.0.0"))  # a released image to plan with
    with platform.fleet(fleet):
        platform.online(serials)
        # The waves a seed gives do not depend on the version: every terminal qualifies.
        wave_one = platform.plan("6.0.0", "5,*", seed=11).waves[0]
        version = _failing_version(wave_one, [s for s in serials if s not in wave_one], 20)
        platform.release(version, make_image(version, fail_boot_percent=20))
        rollout_id = platform.create(
            version, "5,*", {**FAST, "error_threshold_pct": 10, "max_attempts": 3}, seed=11
        )
        platform.wait_state(rollout_id, "halted")
        # What was in flight when it halted finishes; nothing new starts.
        wait_until(
            lambda: sum(n for (wave, state), n in platform.states(rollout_id).items()
                        if wave == 1 and state in ("succeeded", "rolled_back")) == 5,
            "wave 1's terminals finished", WAIT_S,
        )  # fmt: skip
    states = platform.states(rollout_id)
    assert states == {(1, "succeeded"): 4, (1, "rolled_back"): 1, (2, "queued"): 5}
    reason = platform.sql("SELECT halt_reason FROM rollout WHERE id = %s", rollout_id)[0][0]
    assert reason.startswith("wave 1: 1 of 5 terminals failed, 1 of them rolled back"), reason
    rolled = platform.sql(
        "SELECT t.serial, t.firmware_version, u.attempts, u.failure, u.reason, u.from_version"
        " FROM update_task AS u JOIN terminal AS t ON t.id = u.terminal_id"
        " WHERE u.rollout_id = %s AND u.state = 'rolled_back'",
        rollout_id,
    )
    (serial, running, attempts, failure, why, before) = rolled[0]
    # Rolled back is never retried: the image already failed on that till once.
    assert serial in wave_one and running == before != version and attempts == 1
    assert failure == "rolled_back" and "failed its boot self-test" in why
    alert = platform.sql(
        "SELECT kind, severity, status, message FROM alert WHERE scope = %s",
        f"rollout:{rollout_id}",
    )
    assert [(a[0], a[1], a[2]) for a in alert] == [("rollout_halted", "critical", "open")]
    # The terminal's own "update failed" alert, raised by ingest from the agent's event.
    failed = platform.sql(
        "SELECT a.status FROM alert AS a JOIN terminal AS t ON t.id = a.terminal_id"
        " WHERE t.serial = %s AND a.kind = 'update-failed'",
        serial,
    )
    assert failed == [("open",)]


def test_a_closed_maintenance_window_downloads_now_and_installs_when_it_opens(
    platform: Platform,
) -> None:
    fleet = provision_fleet(platform.broker, 2, "RW")
    serials = [serial for serial, _ in fleet]
    version = "7.2.0"
    platform.release(version, make_image(version))
    # The store's window opens in two hours, in its own zone: it must not install now.
    zone = "Pacific/Auckland"
    later = datetime.now(UTC).astimezone(ZoneInfo(zone)) + timedelta(hours=2)
    window = f"{later:%H}:00-{(later.hour + 1) or 24:02d}:00"
    platform.sql(
        "WITH s AS (INSERT INTO store (customer_id, code, name, timezone, maintenance_window)"
        " SELECT customer_id, 'AKL', 'Auckland', %s, %s FROM terminal WHERE serial = %s"
        " RETURNING id)"
        " UPDATE terminal SET store_id = (SELECT id FROM s) WHERE serial = ANY(%s)",
        zone, window, serials[0], serials,
    )  # fmt: skip
    with platform.fleet(fleet):
        platform.online(serials)
        rollout_id = platform.create(version, "100%", FAST)
        wait_until(
            lambda: platform.states(rollout_id) == {(1, "waiting_window"): 2},
            "both terminals downloaded and waiting for their window", WAIT_S,
        )  # fmt: skip
        commands = platform.sql(
            "SELECT args->>'download_only', status FROM command WHERE name = 'firmware'"
            " AND terminal_id IN (SELECT id FROM terminal WHERE serial = ANY(%s))",
            serials,
        )
        assert commands == [("true", "succeeded")] * 2
        assert {row[0] for row in platform.sql(
            "SELECT firmware_version FROM terminal WHERE serial = ANY(%s)", serials
        )} != {version}  # fmt: skip
        # The window opens (the store's window is changed to "any time"): they install.
        platform.sql(
            "UPDATE store SET maintenance_window = NULL WHERE id IN"
            " (SELECT store_id FROM terminal WHERE serial = ANY(%s))",
            serials,
        )
        platform.wait_state(rollout_id, "completed")
    assert platform.states(rollout_id) == {(1, "succeeded"): 2}


def test_pause_resume_and_cancel(platform: Platform) -> None:
    fleet = provision_fleet(platform.broker, 8, "RP")
    serials = [serial for serial, _ in fleet]
    version = "7.3.0"
    platform.release(version, make_image(version))
    with platform.fleet(fleet):
        platform.online(serials)
        # Approval before each wave holds wave 2 until a person acts.
        rollout_id = platform.create(
            version, "2,4,*", {**FAST, "approve_each_wave": True, "success_threshold_pct": 100}
        )
        platform.steer("approve", rollout_id, 1, "test")
        wait_until(
            lambda: platform.states(rollout_id).get((1, "succeeded")) == 2,
            "wave 1 done", WAIT_S,
        )  # fmt: skip
        platform.steer("pause", rollout_id, "test")
        platform.steer("approve", rollout_id, 2, "test")
        # Paused: wave 2, approved, does not start.
        with pytest.raises(AssertionError):
            wait_until(
                lambda: platform.states(rollout_id).get((2, "queued"), 0) < 4,
                "a start while paused", 3,
            )  # fmt: skip
        platform.steer("resume", rollout_id, "test")
        wait_until(
            lambda: platform.states(rollout_id).get((2, "succeeded")) == 4,
            "wave 2 done after the resume", WAIT_S,
        )  # fmt: skip
        # Wave 3 waits for approval; cancelling skips its terminals, which keep their image.
        wait_until(
            lambda: "waits for approval" in (platform.sql(
                "SELECT note FROM rollout WHERE id = %s", rollout_id)[0][0] or ""),
            "wave 3 to wait for approval", WAIT_S,
        )  # fmt: skip
        platform.steer("cancel", rollout_id, "test")
        assert platform.rollout_state(rollout_id) == "cancelled"
    assert platform.states(rollout_id) == {
        (1, "succeeded"): 2, (2, "succeeded"): 4, (3, "skipped"): 2,
    }  # fmt: skip
    with pytest.raises(manage.RolloutConflict):
        platform.steer("resume", rollout_id, "test")


def test_a_tampered_image_is_refused_by_the_agent_before_the_tc200_is_touched(
    platform: Platform,
) -> None:
    fleet = provision_fleet(platform.broker, 1, "RT")
    serials = [serial for serial, _ in fleet]
    version = "7.4.0"
    platform.release(version, make_image(version))
    with Session(platform.broker.engine) as session:
        firmware = library.get(session, version)
        assert firmware is not None
        stored = library.image_path(platform.lib, firmware)
    # Someone with access to the image store changes one byte after the release.
    image = bytearray(stored.read_bytes())
    image[-1] ^= 0xFF
    stored.write_bytes(bytes(image))
    with platform.fleet(fleet):
        platform.online(serials)
        before = platform.sql("SELECT firmware_version FROM terminal WHERE serial = %s", serials[0])
        rollout_id = platform.create(version, "100%", {**FAST, "max_attempts": 2})
        platform.wait_state(rollout_id, "halted")
        wait_until(
            lambda: platform.states(rollout_id) == {(1, "failed"): 1},
            "the task failed after its attempts", WAIT_S,
        )  # fmt: skip
        after = platform.sql("SELECT firmware_version FROM terminal WHERE serial = %s", serials[0])
    assert after == before
    attempts, failure, reason = platform.sql(
        "SELECT attempts, failure, reason FROM update_task WHERE rollout_id = %s", rollout_id
    )[0]
    assert (attempts, failure) == (2, "sha256") and "SHA-256 is not the manifest's" in reason
    # Nothing of the install began: no firmware transfer was ever started on the device.
    steps = platform.sql(
        "SELECT DISTINCT l.code FROM terminal_log AS l JOIN terminal AS t ON t.id = l.terminal_id"
        " WHERE t.serial = %s AND l.data->>'kind' = 'update.progress'",
        serials[0],
    )
    assert {row[0] for row in steps} <= {"downloading", "downloaded"}
