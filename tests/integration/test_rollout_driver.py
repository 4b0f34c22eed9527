"""The rollout driver tick by tick on real PostgreSQL, with no broker and no fleet: the
test is the agent and ingest (it ends the ``firmware`` command rows and writes the
progress events) and owns the clock, so that retries, rates and store windows are
checked to the second.

Covers: the command rows START_TASKS inserts; max_concurrent and rate_per_minute;
retries after their time, never after a rollback; the error threshold, max_failures
and health gating halting with one alert and an audit line; approval; pause, resume
and cancel; store windows (download now, install in the window); progress events; two
drivers on one rollout; a stored policy that no longer reads. The ``test_bug_`` tests
fail until the driver is fixed (see each one's comment)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from sqlalchemy import Engine
from sqlmodel import Session

from rollouts import library, manage
from rollouts.driver import Driver, TickResult, serve
from rollouts.targets import Target
from shared.command_catalog import FirmwareArgs
from shared.db import libpq_url, make_engine
from shared.firmware_signature import generate_key, private_key_pem
from shared.models import FirmwareState
from tests.fixtures.console import scratch_firmware_library
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

T0 = datetime(2030, 1, 7, 12, 0, tzinfo=UTC)  # a Monday, noon UTC
RELEASE = "2.5.0"
OLD = "2.4.1"
DOWNLOAD = "https://console.example/agent/v1/firmware/{}/image"
MIRROR = "https://mirror.example/firmware/{}"
# No retries, no health gating, unless a test asks: each test turns on what it checks.
PLAIN: dict[str, Any] = {"health_margin_points": None, "max_attempts": 1}


def image(version: str, size: int = 4096) -> bytes:
    return (f"TC200FW:{version}\n".encode() + bytes(range(256)) * (size // 256 + 1))[:size]


class Clock:
    """The driver's ``now``, moved by the test."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> datetime:
        self.at += timedelta(**delta)
        return self.at


def report(outcome: str, *steps: str, **fields: Any) -> dict[str, Any]:
    """A firmware command's result as agent/firmware_update.py UpdateReport.output()."""
    return {
        "outcome": outcome,
        "version": RELEASE,
        "version_before": OLD,
        "version_after": fields.get("version_after"),
        "failure": fields.get("failure"),
        "reason": fields.get("reason"),
        "already_installed": False,
        "states": [{"state": step, "at": T0.isoformat()} for step in steps],
    }


SUCCEEDED = report("succeeded", "downloading", "downloaded", "verified", "installing",
                   "rebooting", "succeeded", version_after=RELEASE)  # fmt: skip
VERIFIED = report("verified", "downloading", "downloaded", "verified")
ROLLED_BACK = report(
    "rolled_back", "downloading", "downloaded", "verified", "installing", "rebooting",
    "rolled_back", version_after=OLD, failure="rolled_back",
    reason=f"firmware {RELEASE} failed its boot self-test; the TC-200 went back to {OLD}",
)  # fmt: skip


def failed(*steps: str, failure: str = "http", reason: str = "connection reset") -> dict[str, Any]:
    return report("failed", *steps, "failed", failure=failure, reason=reason)


@dataclass
class World:
    """A migrated database with a released image, terminals the test adds, and a driver."""

    url: str
    engine: Engine
    lib: library.Library
    clock: Clock
    admin: psycopg.Connection[Any]
    conn: psycopg.Connection[Any]
    driver: Driver = field(init=False)
    _customers: dict[str, int] = field(default_factory=dict)
    _stores: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.driver = self.new_driver(self.conn)

    def new_driver(self, conn: psycopg.Connection[Any]) -> Driver:
        return Driver(conn, download_url=DOWNLOAD.format, mirror_url=MIRROR.format, now=self.clock)

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        cursor = self.admin.execute(query, params)
        return cursor.fetchall() if cursor.description is not None else []

    def one(self, query: str, *params: Any) -> Any:
        rows = self.sql(query, *params)
        assert len(rows) == 1, rows
        return rows[0][0] if len(rows[0]) == 1 else rows[0]

    # -- the fleet ----------------------------------------------------------------------

    def customer(self, name: str) -> int:
        if name not in self._customers:
            self._customers[name] = self.one(
                "INSERT INTO customer (name) VALUES (%s) RETURNING id", name
            )
        return self._customers[name]

    def store(
        self, code: str, *, customer: str = "Acme", zone: str = "UTC", window: str | None = None
    ) -> int:
        if code not in self._stores:
            self._stores[code] = self.one(
                "INSERT INTO store (customer_id, code, name, timezone, maintenance_window)"
                " VALUES (%s, %s, %s, %s, %s) RETURNING id",
                self.customer(customer), code, f"Store {code}", zone, window,
            )  # fmt: skip
        return self._stores[code]

    def terminals(
        self, prefix: str, count: int, *, customer: str = "Acme", store: str | None = None
    ) -> list[str]:
        serials = [f"{prefix}{n:02d}" for n in range(count)]
        store_id = self.store(store, customer=customer) if store else None
        for serial in serials:
            self.sql(
                "INSERT INTO terminal (serial, customer_id, store_id, model, status,"
                " firmware_version) VALUES (%s, %s, %s, 'TC-200', 'online', %s)",
                serial, self.customer(customer), store_id, OLD,
            )  # fmt: skip
        return serials

    def release(self, version: str = RELEASE) -> None:
        with Session(self.engine) as session:
            library.add_image(
                session, self.lib, image=image(version), filename="fw.img", version=version,
                models=("TC-200",), notes="", actor="test",
            )  # fmt: skip
            library.change_state(session, version, FirmwareState.RELEASED, "test")
            session.commit()

    # -- people -------------------------------------------------------------------------

    def create(
        self,
        policy: dict[str, Any],
        waves: str = "100%",
        target: Target | None = None,
        **fields: Any,
    ) -> int:
        """A rollout of RELEASE made as the console makes it; ``fields`` override
        ``manage.create``'s arguments (name, version, actor, remote_addr, seed)."""
        with Session(self.engine) as session:
            rollout_id = manage.create(
                session,
                **{
                    "name": "roll", "version": RELEASE, "target": target or Target(),
                    "policy": {**PLAIN, **policy}, "wave_spec": waves, "actor": "ops",
                    "seed": 1, **fields,
                },
            )  # fmt: skip
            session.commit()
        return rollout_id

    def steer(self, action: str, rollout_id: int, *args: Any, **kwargs: Any) -> None:
        with Session(self.engine) as session:
            getattr(manage, action)(session, rollout_id, *args, **kwargs)
            session.commit()

    # -- the driver ---------------------------------------------------------------------

    def tick(self, rollout_id: int, at: datetime | None = None) -> TickResult:
        if at is not None:
            self.clock.at = at
        return self.driver.tick(rollout_id)

    # -- the agent and ingest -------------------------------------------------------------

    def command_of(self, serial: str) -> str:
        command_id = self.one(
            "SELECT u.command_id FROM update_task AS u JOIN terminal AS t"
            " ON t.id = u.terminal_id WHERE t.serial = %s ORDER BY u.rollout_id DESC LIMIT 1",
            serial,
        )
        assert command_id is not None, f"{serial} has no command in flight"
        return str(command_id)

    def sent(self, serial: str) -> str:
        """The sender published the task's command."""
        command_id = self.command_of(serial)
        self.sql(
            "UPDATE command SET status = 'sent', attempts = 1, sent_at = %s, last_sent_at = %s"
            " WHERE id = %s AND status = 'queued'",
            self.clock.at, self.clock.at, command_id,
        )  # fmt: skip
        return command_id

    def finish(
        self,
        serial: str,
        status: str,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        command_id: str | None = None,
    ) -> None:
        """Ingest wrote the command's result, at the test's clock."""
        self.sql(
            "UPDATE command SET status = %s, result = %s, error = %s, finished_at = %s,"
            " attempts = greatest(attempts, 1) WHERE id = %s",
            status, None if result is None else Jsonb(result), error, self.clock.at,
            command_id or self.command_of(serial),
        )  # fmt: skip

    def progress(
        self, serial: str, step: str, percent: float | None = None, at: datetime | None = None
    ) -> None:
        """An ``update.progress`` event as ingest writes it."""
        shown = "" if percent is None else f" {percent:g} %"
        self.sql(
            "INSERT INTO terminal_log (terminal_id, at, kind, severity, code, message, data)"
            " SELECT id, %s, 'event', 'info', %s, %s, %s FROM terminal WHERE serial = %s",
            at or self.clock.at, step, f"firmware {RELEASE}: {step}{shown}",
            Jsonb({"kind": "update.progress"}), serial,
        )  # fmt: skip

    # -- reading ------------------------------------------------------------------------

    def task(self, serial: str, *columns: str) -> Any:
        names = ", ".join(f"u.{c}" for c in columns or ("state",))
        return self.one(
            f"SELECT {names} FROM update_task AS u JOIN terminal AS t ON t.id = u.terminal_id"
            " WHERE t.serial = %s ORDER BY u.rollout_id DESC LIMIT 1",
            serial,
        )

    def states(self, rollout_id: int) -> dict[str, str]:
        rows = self.sql(
            "SELECT t.serial, u.state FROM update_task AS u JOIN terminal AS t"
            " ON t.id = u.terminal_id WHERE u.rollout_id = %s ORDER BY t.serial",
            rollout_id,
        )
        return dict(rows)

    def in_state(self, rollout_id: int, state: str) -> list[str]:
        return [s for s, st in self.states(rollout_id).items() if st == state]

    def commands(self, serial: str) -> list[tuple[str, str, dict[str, Any]]]:
        rows = self.sql(
            "SELECT c.id, c.status, c.args FROM command AS c JOIN terminal AS t"
            " ON t.id = c.terminal_id WHERE t.serial = %s AND c.name = 'firmware'"
            " ORDER BY c.created_at, c.id",
            serial,
        )
        return [(r[0], r[1], r[2]) for r in rows]

    def rollout(self, rollout_id: int, *columns: str) -> Any:
        return self.one(f"SELECT {', '.join(columns)} FROM rollout WHERE id = %s", rollout_id)

    def alerts(self, rollout_id: int) -> list[tuple[Any, ...]]:
        return self.sql(
            "SELECT kind, severity, status, count, message FROM alert WHERE scope = %s",
            f"rollout:{rollout_id}",
        )

    def audit(self, rollout_id: int, action: str) -> list[tuple[Any, ...]]:
        return self.sql(
            "SELECT actor, detail FROM audit_event WHERE target = %s AND action = %s ORDER BY id",
            f"rollout:{rollout_id}", action,
        )  # fmt: skip


@contextmanager
def open_world(database_url: str, root: Path) -> Iterator[World]:
    """A World on the test's database, with RELEASE in the library and released."""
    lib = scratch_firmware_library(root / "library")
    library.write_signing_key(lib.signing_key, private_key_pem(generate_key()))
    url = libpq_url(database_url)
    engine = make_engine(database_url, pool_size=2)
    try:
        with (
            psycopg.connect(url, autocommit=True) as admin,
            psycopg.connect(url) as conn,
        ):
            found = World(url, engine, lib, Clock(T0), admin, conn)
            found.release()
            yield found
    finally:
        engine.dispose()


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    with open_world(database_url, tmp_path) as found:
        yield found


# -- starting ---------------------------------------------------------------------------


def test_start_tasks_inserts_one_firmware_command_per_task_with_the_manifest(
    world: World,
) -> None:
    serials = world.terminals("TA", 3)
    rollout_id = world.create({})
    result = world.tick(rollout_id)
    assert result.started == 3
    firmware = world.one(
        "SELECT version, models, size, sha256, signature FROM firmware WHERE version = %s",
        RELEASE,
    )
    for serial in serials:
        ((command_id, status, args),) = world.commands(serial)
        assert status == "queued"
        assert args == {
            "version": RELEASE, "models": firmware[1], "size": firmware[2],
            "sha256": firmware[3], "signature": firmware[4],
            "url": DOWNLOAD.format(RELEASE), "mirror_url": MIRROR.format(firmware[3]),
            "download_only": False,
        }  # fmt: skip
        FirmwareArgs.model_validate(args)  # what the sender checks before publishing
        state, attempts, task_command, started_at, download_only = world.task(
            serial, "state", "attempts", "command_id", "started_at", "download_only"
        )
        assert (state, attempts, task_command, started_at, download_only) == (
            "downloading", 1, command_id, T0, False
        )  # fmt: skip
    row = world.one(
        "SELECT requested_by, requester_kind, due_at, expires_at > due_at, max_attempts"
        " FROM command WHERE name = 'firmware' LIMIT 1"
    )
    assert row[:3] == ("system:rollouts", "system", T0) and row[3] and row[4] >= 1
    assert world.one("SELECT started_at FROM rollout_wave WHERE rollout_id = %s", rollout_id) == T0
    assert [d for _, d in world.audit(rollout_id, "rollout.wave")] == [{"wave": 1}]
    # Ticking again starts nobody twice.
    assert world.tick(rollout_id, T0 + timedelta(minutes=5)).started == 0
    assert all(len(world.commands(s)) == 1 for s in serials)


def test_max_concurrent_bounds_the_tasks_in_flight(world: World) -> None:
    world.terminals("TC", 5)
    rollout_id = world.create({"max_concurrent": 2, "success_threshold_pct": 0})
    assert world.tick(rollout_id).started == 2
    assert world.tick(rollout_id, world.clock.advance(minutes=1)).started == 0
    first, second = world.in_state(rollout_id, "downloading")
    world.progress(first, "installing")  # still in flight
    world.finish(second, "succeeded", SUCCEEDED)
    assert world.tick(rollout_id, world.clock.advance(seconds=1)).started == 1
    assert len(world.in_state(rollout_id, "queued")) == 2
    assert world.task(first) == "installing"


def test_rate_per_minute_paces_the_starts_over_time(world: World) -> None:
    world.terminals("TR", 8)
    # 12 a minute: one every 5 s, at most two (ten seconds' worth) at once.
    rollout_id = world.create({"rate_per_minute": 12})
    assert world.tick(rollout_id).started == 2
    result = world.tick(rollout_id, T0 + timedelta(seconds=4))
    assert result.started == 0 and result.not_before == T0 + timedelta(seconds=5)
    assert world.tick(rollout_id, T0 + timedelta(seconds=5)).started == 1
    assert world.tick(rollout_id, T0 + timedelta(seconds=7)).started == 0
    # A quiet minute does not save up more than the burst.
    assert world.tick(rollout_id, T0 + timedelta(minutes=2)).started == 2
    assert len(world.in_state(rollout_id, "downloading")) == 5


# -- retries ------------------------------------------------------------------------------


def test_a_failed_attempt_is_queued_and_restarted_only_after_its_retry_time(
    world: World,
) -> None:
    (serial,) = world.terminals("TF", 1)
    rollout_id = world.create({"max_attempts": 3, "retry_delay_s": 60, "max_retry_delay_s": 90})
    world.tick(rollout_id)
    world.sent(serial)
    # A result not final yet changes nothing.
    world.tick(rollout_id, T0 + timedelta(seconds=5))
    assert world.task(serial) == "downloading"
    world.clock.at = T0 + timedelta(seconds=10)
    world.finish(serial, "failed", failed("downloading", "downloaded"), "failed: reset")
    world.tick(rollout_id)
    assert world.task(serial, "state", "attempts", "retry_at", "command_id", "failure",
                      "reason", "finished_at") == (
        "queued", 1, T0 + timedelta(seconds=70), None, "http",
        "attempt 1 failed: connection reset", None,
    )  # fmt: skip
    assert world.tick(rollout_id, T0 + timedelta(seconds=69)).started == 0
    assert world.tick(rollout_id, T0 + timedelta(seconds=70)).started == 1
    assert world.task(serial, "state", "attempts", "retry_at") == ("downloading", 2, None)
    # The second attempt expires without a result: the delay doubles, up to its cap.
    world.clock.at = T0 + timedelta(seconds=100)
    world.finish(serial, "expired", error="the terminal did not take it in time")
    world.tick(rollout_id)
    assert world.task(serial, "state", "retry_at", "failure") == (
        "queued",
        T0 + timedelta(seconds=190),
        "expired",
    )
    assert world.tick(rollout_id, T0 + timedelta(seconds=189)).started == 0
    assert world.tick(rollout_id, T0 + timedelta(seconds=190)).started == 1
    # The third and last attempt fails for good: the reason as it came, and a halt.
    world.clock.at = T0 + timedelta(seconds=200)
    world.finish(serial, "failed", failed("downloading", reason="disk full"))
    world.tick(rollout_id)
    assert world.task(serial, "state", "attempts", "retry_at", "reason", "finished_at") == (
        "failed",
        3,
        None,
        "disk full",
        T0 + timedelta(seconds=200),
    )
    assert [c[1] for c in world.commands(serial)] == ["failed", "expired", "failed"]
    assert world.rollout(rollout_id, "state") == "halted"
    assert world.tick(rollout_id, T0 + timedelta(days=1)).started == 0


def test_a_rolled_back_terminal_is_never_retried(world: World) -> None:
    world.terminals("TB", 4)
    rollout_id = world.create(
        {"max_attempts": 5, "retry_delay_s": 1, "error_threshold_pct": 50,
         "success_threshold_pct": 50}
    )  # fmt: skip
    world.tick(rollout_id)
    serial, *_ = world.in_state(rollout_id, "downloading")
    world.finish(serial, "failed", ROLLED_BACK, f"rolled_back: {ROLLED_BACK['reason']}")
    world.tick(rollout_id, world.clock.advance(seconds=1))
    assert world.task(serial, "state", "attempts", "failure", "version_after", "retry_at") == (
        "rolled_back",
        1,
        "rolled_back",
        OLD,
        None,
    )
    assert "failed its boot self-test" in world.task(serial, "reason")
    for hours in (1, 24):
        world.tick(rollout_id, T0 + timedelta(hours=hours))
    assert len(world.commands(serial)) == 1
    assert world.rollout(rollout_id, "state") == "running"  # 1 of 4 is not above 50 %


# -- halts ------------------------------------------------------------------------------------


def test_the_error_threshold_halts_with_its_reason_one_alert_and_an_audit_line(
    world: World,
) -> None:
    world.terminals("TE", 10)
    rollout_id = world.create(
        {"error_threshold_pct": 10, "success_threshold_pct": 80, "max_concurrent": 5}
    )
    world.tick(rollout_id)
    started = world.in_state(rollout_id, "downloading")
    assert len(started) == 5
    world.finish(started[0], "failed", failed("downloading"))
    world.tick(rollout_id, world.clock.advance(seconds=10))
    assert world.rollout(rollout_id, "state") == "running"  # 1 of 10 is not above 10 %
    world.finish(started[1], "failed", failed("installing", reason="USB transfer failed"))
    world.tick(rollout_id, world.clock.advance(seconds=10))
    reason = "wave 1: 2 of 10 terminals failed (20% > error threshold 10%)"
    assert world.rollout(rollout_id, "state", "halt_reason", "note") == ("halted", reason, reason)
    ((kind, severity, status, count, message),) = world.alerts(rollout_id)
    assert (kind, severity, status, count) == ("rollout_halted", "critical", "open", 1)
    assert message == f"rollout {rollout_id} (roll) halted: {reason}"
    assert world.audit(rollout_id, "rollout.halt") == [("system:rollouts", {"reason": reason})]
    # Halted: what runs finishes and is recorded; nothing new starts; no second alert.
    world.finish(started[2], "succeeded", SUCCEEDED)
    world.tick(rollout_id, world.clock.advance(minutes=10))
    assert world.task(started[2]) == "succeeded"
    assert len(world.in_state(rollout_id, "queued")) == 4  # one started after the 1st failure
    assert world.alerts(rollout_id)[0][3] == 1 and len(world.audit(rollout_id, "rollout.halt")) == 1
    # Resumed with the same threshold, the same facts halt it again: the open alert counts.
    world.steer("resume", rollout_id, "ops")
    world.tick(rollout_id, world.clock.advance(seconds=1))
    assert world.rollout(rollout_id, "state") == "halted"
    assert [(a[2], a[3]) for a in world.alerts(rollout_id)] == [("open", 2)]
    assert len(world.audit(rollout_id, "rollout.halt")) == 2
    # A person accepts more risk: it runs on.
    world.steer("resume", rollout_id, "ops", {"error_threshold_pct": 30})
    result = world.tick(rollout_id, world.clock.advance(seconds=1))
    assert world.rollout(rollout_id, "state", "halt_reason") == ("running", None)
    assert result.started == 2  # 5 at once: 3 still in flight


def test_max_failures_halts_across_waves(world: World) -> None:
    world.terminals("TM", 4)
    rollout_id = world.create(
        {"max_failures": 1, "error_threshold_pct": 100, "success_threshold_pct": 50},
        waves="50,100",
    )
    world.tick(rollout_id)
    bad, good = world.in_state(rollout_id, "downloading")
    world.finish(bad, "failed", failed("downloading"))
    world.finish(good, "succeeded", SUCCEEDED)
    assert world.tick(rollout_id, world.clock.advance(seconds=10)).started == 2  # wave 2
    assert world.rollout(rollout_id, "state") == "running"  # 1 failure is allowed
    world.finish(world.in_state(rollout_id, "downloading")[0], "failed", failed("verified"))
    world.tick(rollout_id, world.clock.advance(seconds=10))
    assert world.rollout(rollout_id, "state", "halt_reason") == (
        "halted",
        "2 terminals failed in this rollout (more than 1)",
    )
    assert len(world.alerts(rollout_id)) == 1


def _health_rollout(world: World) -> tuple[int, list[str], list[str]]:
    """Wave 1 of 2 updated, wave 2 held by a watch period; the updated and the rest."""
    world.terminals("TH", 4)
    rollout_id = world.create(
        {"health_margin_points": 5, "success_threshold_pct": 100, "watch_period_s": 3600},
        waves="50,100",
    )
    world.tick(rollout_id)
    updated = world.in_state(rollout_id, "downloading")
    for serial in updated:
        world.finish(serial, "succeeded", SUCCEEDED)
    world.tick(rollout_id, world.clock.advance(minutes=1))
    assert world.in_state(rollout_id, "succeeded") == updated
    rest = world.in_state(rollout_id, "queued")
    assert len(rest) == 2
    return rollout_id, updated, rest


def _goes_to_error(world: World, serial: str, at: datetime) -> None:
    """What ingest writes when a terminal reports an error."""
    world.sql(
        "INSERT INTO status_change (terminal_id, at, old_status, new_status, reason)"
        " SELECT id, %s, status, 'error', 'TC-200 reports E42' FROM terminal WHERE serial = %s",
        at, serial,
    )  # fmt: skip
    world.sql("UPDATE terminal SET status = 'error' WHERE serial = %s", serial)


def test_health_gating_halts_when_updated_terminals_go_to_error(world: World) -> None:
    rollout_id, updated, _ = _health_rollout(world)
    _goes_to_error(world, updated[0], world.clock.advance(minutes=5))
    world.tick(rollout_id, world.clock.advance(minutes=1))
    assert world.rollout(rollout_id, "state") == "halted"
    assert world.rollout(rollout_id, "halt_reason") == (
        "health: updated terminals: 1 of 2 in error (50.0%) against 0.0% of the other 2 "
        "(more than 5 points worse)"
    )
    assert [a[0] for a in world.alerts(rollout_id)] == ["rollout_halted"]


def test_health_gating_does_not_halt_when_the_rest_is_as_bad(world: World) -> None:
    rollout_id, updated, rest = _health_rollout(world)
    _goes_to_error(world, updated[0], world.clock.advance(minutes=5))
    _goes_to_error(world, rest[0], world.clock.at)
    world.tick(rollout_id, world.clock.advance(minutes=1))
    assert world.rollout(rollout_id, "state", "halt_reason") == ("running", None)
    assert "watching the updated terminals" in world.rollout(rollout_id, "note")
    # The watch period over, wave 2 opens.
    assert world.tick(rollout_id, world.clock.advance(hours=1)).started == 2


def test_a_stored_policy_that_no_longer_reads_halts_with_a_clear_reason(world: World) -> None:
    world.terminals("TP", 2)
    rollout_id = world.create({})
    world.sql(
        "UPDATE rollout SET policy = policy || '{\"max_concurent\": 5}' WHERE id = %s",
        rollout_id,
    )
    result = world.tick(rollout_id)
    assert result.started == 0 and world.sql("SELECT id FROM command") == []
    assert world.rollout(rollout_id, "state", "halt_reason") == (
        "halted",
        "its stored policy no longer reads: unknown policy field 'max_concurent'",
    )
    assert [a[:4] for a in world.alerts(rollout_id)] == [("rollout_halted", "critical", "open", 1)]
    world.tick(rollout_id, world.clock.advance(minutes=1))
    assert world.alerts(rollout_id)[0][3] == 1  # halted once, not on every tick
    # A value out of range is named too.
    world.terminals("TQ", 1)
    second = world.create({})
    world.sql(
        "UPDATE rollout SET policy = jsonb_set(policy, '{error_threshold_pct}', '500')"
        " WHERE id = %s",
        second,
    )
    world.tick(second)
    assert "error threshold is a percentage between 0 and 100" in world.rollout(
        second, "halt_reason"
    )


# -- people -----------------------------------------------------------------------------------


def test_approval_holds_each_wave_until_a_person_approves_it(world: World) -> None:
    world.terminals("TV", 3)
    rollout_id = world.create({"approve_each_wave": True, "success_threshold_pct": 100},
                              waves="1,*")  # fmt: skip
    assert world.tick(rollout_id).started == 0
    assert world.rollout(rollout_id, "note") == "wave 1 (1 terminal) waits for approval"
    world.steer("approve", rollout_id, 1, "ops")
    assert world.tick(rollout_id).started == 1
    (serial,) = world.in_state(rollout_id, "downloading")
    world.finish(serial, "succeeded", SUCCEEDED)
    assert world.tick(rollout_id, world.clock.advance(minutes=1)).started == 0
    assert world.rollout(rollout_id, "note") == "wave 2 (2 terminals) waits for approval"
    world.steer("approve", rollout_id, 2, "ops")
    assert world.tick(rollout_id).started == 2


def test_pause_starts_nothing_and_resume_continues(world: World) -> None:
    world.terminals("TZ", 3)
    rollout_id = world.create({"max_concurrent": 1})
    assert world.tick(rollout_id).started == 1
    (first,) = world.in_state(rollout_id, "downloading")
    world.steer("pause", rollout_id, "ops")
    world.finish(first, "succeeded", SUCCEEDED)
    result = world.tick(rollout_id, world.clock.advance(minutes=1))
    # Paused: the running one's result is taken, nothing starts.
    assert result.started == 0 and world.task(first) == "succeeded"
    assert world.rollout(rollout_id, "note").startswith("paused: no download or install starts")
    assert world.tick(rollout_id, world.clock.advance(hours=5)).started == 0
    world.steer("resume", rollout_id, "ops")
    assert world.tick(rollout_id, world.clock.advance(seconds=1)).started == 1


def test_cancel_skips_queued_stops_downloads_and_waits_and_lets_installs_finish(
    world: World,
) -> None:
    # Store W's window is closed all afternoon; store O installs any time. Wave 1 has 6
    # of the 7 terminals: at least 4 of O's 5 and at least one of W's 2.
    world.store("W", window="02:00-04:00")
    open_ones = world.terminals("TO", 5, store="O")
    window_ones = world.terminals("TW", 2, store="W")
    rollout_id = world.create({"max_concurrent": 10}, waves="6,*")
    assert world.tick(rollout_id).started == 6
    started = set(world.in_state(rollout_id, "downloading"))
    installing, rebooting, downloading, downloaded = [s for s in open_ones if s in started][:4]
    waiting = next(s for s in window_ones if s in started)
    (skipped,) = world.in_state(rollout_id, "queued")
    for serial in (installing, rebooting):
        world.sent(serial)
    world.progress(installing, "installing")
    world.progress(rebooting, "rebooting")
    world.progress(downloaded, "downloaded")
    assert world.commands(waiting)[0][2]["download_only"] is True
    world.finish(waiting, "succeeded", VERIFIED)
    world.tick(rollout_id, world.clock.advance(seconds=30))
    assert (world.task(installing), world.task(rebooting), world.task(downloading),
            world.task(downloaded), world.task(waiting)) == (
        "installing", "rebooting", "downloading", "downloaded", "waiting_window"
    )  # fmt: skip
    stopped = {s: world.command_of(s) for s in (downloading, downloaded)}

    world.steer("cancel", rollout_id, "ops")
    assert world.rollout(rollout_id, "state") == "cancelled"
    assert world.rollout(rollout_id, "finished_at") is not None
    assert world.task(skipped) == "skipped"
    for serial in (downloading, downloaded, waiting):
        assert world.task(serial) == "cancelled", serial
    for serial, command_id in stopped.items():
        assert world.one("SELECT status, cancelled_by FROM command WHERE id = %s",
                         command_id) == ("cancelled", "ops"), serial  # fmt: skip
    assert (world.task(installing), world.task(rebooting)) == ("installing", "rebooting")
    # The driver still takes the results of the installs that were let finish.
    assert rollout_id in world.driver.active_ids()
    world.finish(installing, "succeeded", SUCCEEDED)
    world.finish(rebooting, "failed", ROLLED_BACK)
    result = world.tick(rollout_id, world.clock.advance(minutes=5))
    assert result.started == 0
    assert world.task(installing, "state", "version_after") == ("succeeded", RELEASE)
    assert world.task(rebooting) == "rolled_back"
    assert rollout_id not in world.driver.active_ids()
    assert world.rollout(rollout_id, "state") == "cancelled"
    # Nothing was sent after the cancel, not even when the window opens.
    world.tick(rollout_id, T0 + timedelta(hours=14, minutes=30))
    assert len(world.commands(waiting)) == 1 and len(world.commands(skipped)) == 0


# -- store windows ----------------------------------------------------------------------------


def test_a_closed_window_downloads_now_and_installs_when_the_clock_enters_it(
    world: World,
) -> None:
    # Berlin is UTC+1 in January: its 02:00-04:00 is 01:00-03:00 UTC.
    world.store("B", zone="Europe/Berlin", window="02:00-04:00")
    (late,) = world.terminals("TL", 1, store="B")
    (any_time,) = world.terminals("TN", 1)
    rollout_id = world.create({"success_threshold_pct": 100})
    world.tick(rollout_id)
    assert world.commands(late)[0][2]["download_only"] is True
    assert world.commands(any_time)[0][2]["download_only"] is False
    assert world.task(late, "download_only") is True
    world.finish(late, "succeeded", VERIFIED)
    world.finish(any_time, "succeeded", SUCCEEDED)
    world.tick(rollout_id, world.clock.advance(minutes=10))
    opens = datetime(2030, 1, 8, 1, 0, tzinfo=UTC)
    assert world.task(late, "state", "retry_at", "command_id", "attempts") == (
        "waiting_window",
        opens,
        None,
        1,
    )
    assert "installs when the store's window opens (2030-01-08 01:00 UTC)" in world.task(
        late, "reason"
    )
    assert world.rollout(rollout_id, "state") == "running"
    world.tick(rollout_id, opens - timedelta(seconds=1))
    assert world.task(late) == "waiting_window" and len(world.commands(late)) == 1
    world.tick(rollout_id, opens)
    (_, first_status, _), (second_id, second_status, args) = world.commands(late)
    assert (first_status, second_status, args["download_only"]) == ("succeeded", "queued", False)
    assert world.task(late, "state", "attempts", "download_only", "command_id") == (
        "installing",
        1,
        False,
        second_id,
    )
    world.finish(late, "succeeded", SUCCEEDED)
    world.tick(rollout_id, opens + timedelta(minutes=20))
    assert world.task(late) == "succeeded"
    assert world.rollout(rollout_id, "state") == "completed"


def test_a_waiting_task_is_looked_at_when_its_window_opens_or_a_minute_later(
    world: World,
) -> None:
    """10,000 waiting tasks looked at every tick took 73% of a core (bench/rollout.py):
    a waiting task is looked at when its window opens, and every task again each
    WINDOW_RECHECK, so a store's window edited meanwhile takes effect within it."""
    world.store("W", window="23:00-23:30")
    (serial,) = world.terminals("TW", 1, store="W")
    rollout_id = world.create({"success_threshold_pct": 100})
    world.tick(rollout_id, T0)
    world.finish(serial, "succeeded", VERIFIED)
    world.tick(rollout_id, world.clock.advance(seconds=1))
    assert world.task(serial) == "waiting_window"
    # The store's window now includes the present: not seen until the next full look.
    world.sql("UPDATE store SET maintenance_window = NULL WHERE code = 'W'")
    world.tick(rollout_id, world.clock.advance(seconds=30))
    assert world.task(serial) == "waiting_window" and len(world.commands(serial)) == 1
    world.tick(rollout_id, world.clock.advance(seconds=31))
    assert world.task(serial) == "installing" and len(world.commands(serial)) == 2


def test_an_install_waits_when_too_little_of_the_window_is_left(world: World) -> None:
    world.store("U", window="12:00-12:30")
    (serial,) = world.terminals("TU", 1, store="U")
    rollout_id = world.create({"install_time_s": 20 * 60})
    world.tick(rollout_id, T0 + timedelta(minutes=15))  # 15 of the 30 minutes left
    assert world.commands(serial)[0][2]["download_only"] is True
    world.finish(serial, "succeeded", VERIFIED)
    world.tick(rollout_id, world.clock.advance(minutes=1))
    assert world.task(serial, "state", "retry_at") == ("waiting_window", T0 + timedelta(days=1))


# -- progress events --------------------------------------------------------------------------


def test_progress_events_move_a_task_forward_only(world: World) -> None:
    (serial, other) = world.terminals("TG", 2)
    rollout_id = world.create({})
    world.tick(rollout_id)
    world.sent(serial)
    world.progress(serial, "downloading", 40, at=T0 + timedelta(seconds=1))
    world.tick(rollout_id, T0 + timedelta(seconds=2))
    assert world.task(serial, "state", "percent") == ("downloading", 40.0)
    assert world.task(other, "state", "percent") == ("downloading", None)
    world.progress(serial, "downloaded", at=T0 + timedelta(seconds=3))
    world.tick(rollout_id, T0 + timedelta(seconds=4))
    assert world.task(serial, "state", "percent") == ("downloaded", None)
    # A later event naming an earlier step (a resent one) does not take it back.
    world.progress(serial, "downloading", 90, at=T0 + timedelta(seconds=5))
    world.tick(rollout_id, T0 + timedelta(seconds=6))
    assert world.task(serial, "state", "percent") == ("downloaded", None)
    world.progress(serial, "installing", at=T0 + timedelta(seconds=7))
    world.progress(serial, "verified", at=T0 + timedelta(seconds=6, milliseconds=500))
    world.tick(rollout_id, T0 + timedelta(seconds=8))
    assert world.task(serial) == "installing"
    # Events of other kinds, and codes that are no step, are not progress.
    world.sql(
        "INSERT INTO terminal_log (terminal_id, at, kind, severity, code, message, data)"
        " SELECT id, %s, 'event', 'error', 'rebooting', 'x', %s FROM terminal WHERE serial = %s",
        T0 + timedelta(seconds=9), Jsonb({"kind": "update"}), serial,
    )  # fmt: skip
    world.progress(serial, "FW-FAILED", at=T0 + timedelta(seconds=10))
    world.tick(rollout_id, T0 + timedelta(seconds=11))
    assert world.task(serial) == "installing"
    world.progress(serial, "rebooting", at=T0 + timedelta(seconds=12))
    world.tick(rollout_id, T0 + timedelta(seconds=13))
    assert world.task(serial) == "rebooting"
    # The result wins over any event.
    world.finish(serial, "succeeded", SUCCEEDED)
    world.progress(serial, "installing", at=T0 + timedelta(seconds=14))
    world.tick(rollout_id, T0 + timedelta(seconds=15))
    assert world.task(serial) == "succeeded"


# -- two drivers ------------------------------------------------------------------------------


def test_two_drivers_ticking_one_rollout_never_start_a_terminal_twice(world: World) -> None:
    serials = world.terminals("TD", 24)
    rollout_id = world.create({"success_threshold_pct": 100}, waves="25,50,100")
    rounds = 12
    barrier = threading.Barrier(3, timeout=120)
    errors: list[BaseException] = []

    def drive() -> None:
        try:
            with psycopg.connect(world.url) as conn:
                driver = world.new_driver(conn)
                for _ in range(rounds):
                    barrier.wait()
                    driver.tick(rollout_id)
                    barrier.wait()
        except Exception as exc:  # reported by the main thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=drive, name=f"driver-{n}") for n in range(2)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(rounds):
            barrier.wait()
            barrier.wait()
            # Between rounds the fleet ends every command sent so far.
            world.sql(
                "UPDATE command SET status = 'succeeded', result = %s, finished_at = %s"
                " WHERE status = 'queued'",
                Jsonb(SUCCEEDED), world.clock.advance(seconds=1),
            )  # fmt: skip
    except threading.BrokenBarrierError:
        pass  # a driver failed: its error is reported below
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    per_terminal = dict(world.sql(
        "SELECT t.serial, count(c.id) FROM terminal AS t LEFT JOIN command AS c"
        " ON c.terminal_id = t.id GROUP BY t.serial"
    ))  # fmt: skip
    assert per_terminal == {serial: 1 for serial in serials}
    assert world.rollout(rollout_id, "state") == "completed"


# -- serve ---------------------------------------------------------------------------------


@contextmanager
def serving(world: World, tick_s: float = 0.2) -> Iterator[threading.Thread]:
    """``serve`` in a thread on the real clock, as ``tms rollouts run`` runs it."""
    stop = threading.Event()

    def driver_of(conn: psycopg.Connection[Any]) -> Driver:
        return Driver(conn, download_url=DOWNLOAD.format, mirror_url=MIRROR.format)

    thread = threading.Thread(
        target=serve, args=(world.url, driver_of, stop), kwargs={"tick_s": tick_s}, daemon=True
    )
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()


def test_serve_drives_the_active_rollouts_and_stops_cleanly(world: World) -> None:
    serials = world.terminals("TW", 2)
    rollout_id = world.create({})
    world.clock.at = datetime.now(UTC)
    with serving(world) as thread:
        wait_until(lambda: all(world.commands(s) for s in serials), "both started", 60)
        for serial in serials:
            world.finish(serial, "succeeded", SUCCEEDED)
        wait_until(lambda: world.rollout(rollout_id, "state") == "completed", "completed", 60)
        assert thread.is_alive()
    assert all(len(world.commands(s)) == 1 for s in serials)


def test_serve_wakes_when_the_rate_allows_the_next_start_not_at_the_next_tick(
    world: World,
) -> None:
    serials = world.terminals("TP", 2)
    # 11 a minute: one at a time (ten seconds' worth is 1), the next token 5.5 s later.
    world.create({"rate_per_minute": 11})
    world.clock.at = datetime.now(UTC)
    with serving(world, tick_s=120):
        wait_until(lambda: any(world.commands(s) for s in serials), "the first started", 60)
        # Well before the next tick: the driver slept until decide's not_before.
        wait_until(lambda: all(world.commands(s) for s in serials), "the second started", 30)


# -- bugs found (these fail until rollouts/ is fixed) ------------------------------------------


def test_bug_a_waiting_window_event_from_a_terminal_does_not_start_a_second_command(
    world: World,
) -> None:
    # progress_of takes any TaskState as an event code, and the driver moves a task to
    # waiting_window on it with its command still running; _gate_installs then sends a
    # second firmware command to the same terminal and forgets the first.
    (serial,) = world.terminals("TX", 1)
    rollout_id = world.create({})
    world.tick(rollout_id)
    first = world.sent(serial)
    world.progress(serial, "waiting_window", at=T0 + timedelta(seconds=1))
    world.tick(rollout_id, T0 + timedelta(seconds=2))
    world.tick(rollout_id, T0 + timedelta(seconds=3))
    assert [c[0] for c in world.commands(serial)] == [first]
    assert world.task(serial, "state", "command_id") == ("downloading", first)


def test_bug_a_long_failure_word_from_a_terminal_does_not_break_the_tick(world: World) -> None:
    # update_task.failure and version_after are varchar(64); task_outcome cuts them at
    # 2000. The UPDATE raises StringDataRightTruncation, the tick rolls back, and the
    # same result fails every tick; rollouts.driver.serve retries only OperationalError,
    # so the driver process ends and no rollout moves.
    (serial,) = world.terminals("TK", 1)
    rollout_id = world.create({})
    world.tick(rollout_id)
    world.finish(serial, "failed", failed("installing", failure="x" * 100, reason="odd"))
    world.tick(rollout_id, world.clock.advance(seconds=5))
    assert world.task(serial) == "failed"


def test_bug_a_cancel_does_not_hide_an_install_the_agent_goes_on_with(world: World) -> None:
    # cancel() marks a downloading/downloaded/verified task cancelled and cancels only a
    # *queued* command. A full (not download_only) command already sent cannot be called
    # back (commands.queue says so): the agent downloads, verifies and installs. Its
    # result is then ignored (the task is final), so the task says "cancelled" while the
    # TC-200 runs the new image - and manage.candidates no longer counts it as busy.
    (serial, _) = world.terminals("TY", 2)
    rollout_id = world.create({})
    world.tick(rollout_id)
    command_id = world.sent(serial)
    world.progress(serial, "verified", at=T0 + timedelta(seconds=1))
    world.tick(rollout_id, T0 + timedelta(seconds=2))
    assert world.task(serial) == "verified"
    world.steer("cancel", rollout_id, "ops")
    world.finish(serial, "succeeded", SUCCEEDED, command_id=command_id)
    world.tick(rollout_id, T0 + timedelta(minutes=5))
    assert world.task(serial, "state", "version_after") == ("succeeded", RELEASE)


def test_bug_an_event_of_the_failed_attempt_does_not_move_its_retry(world: World) -> None:
    # Progress events are matched to a task by time only (from 5 s before its last
    # send): with a retry delay under 5 s, the failed attempt's "installing" moves the
    # new attempt, still downloading, to installing (and a cancel would then let it run).
    (serial,) = world.terminals("TS", 1)
    rollout_id = world.create({"max_attempts": 2, "retry_delay_s": 0})
    world.tick(rollout_id)
    world.progress(serial, "installing", at=T0 + timedelta(seconds=10))
    world.tick(rollout_id, T0 + timedelta(seconds=11))
    assert world.task(serial) == "installing"
    world.finish(serial, "failed", failed("installing", reason="USB transfer failed"))
    world.tick(rollout_id, T0 + timedelta(seconds=12))  # queued, and restarted at once
    assert world.task(serial, "state", "attempts") == ("downloading", 2)
    world.tick(rollout_id, T0 + timedelta(seconds=13))
    assert world.task(serial) == "downloading"


def test_bug_one_rollouts_bad_result_does_not_stop_serve_for_the_others(world: World) -> None:
    # serve() retries only psycopg.OperationalError: any other error of one rollout's
    # tick (here the DataError of the too-long failure word above) ends the loop, and
    # with it every rollout. STYLE.md 5: guard the per-item handler, log, go on.
    (bad,) = world.terminals("TJ", 1)
    first = world.create({})
    world.tick(first)
    world.finish(bad, "failed", failed("installing", failure="x" * 100))
    (good,) = world.terminals("TI", 1)
    world.create({})
    with serving(world) as thread:
        wait_until(lambda: world.commands(good) or not thread.is_alive(), "a start", 60)
        assert thread.is_alive(), "serve() ended"
        assert world.commands(good)


def test_bug_a_terminal_decommissioned_while_queued_is_skipped_not_sent_firmware(
    world: World,
) -> None:
    # commands.queue refuses any command to a decommissioned terminal; the driver
    # inserts its firmware commands itself and never looks. rollouts/tasks.py says a
    # terminal that stops qualifying before its install is skipped: nothing does it.
    (gone, kept) = world.terminals("TT", 2)
    rollout_id = world.create({})
    world.sql(
        "UPDATE terminal SET status = 'decommissioned', decommissioned_at = %s"
        " WHERE serial = %s",
        T0, gone,
    )  # fmt: skip
    world.tick(rollout_id)
    assert world.commands(kept) and world.commands(gone) == []
    assert world.task(gone) == "skipped"


def test_bug_an_install_a_cancel_let_run_that_fails_is_not_queued_again(world: World) -> None:
    # A cancel now leaves a full install already sent in flight and takes its result.
    # A failure with attempts left then puts the task back to queued, in a cancelled
    # rollout that never starts anything again: it stays queued for good, and since
    # any rollout's unfinished task makes a terminal busy, no later rollout can take it.
    (serial, _) = world.terminals("TC", 2)
    rollout_id = world.create({"max_attempts": 3, "retry_delay_s": 60})
    world.tick(rollout_id)
    world.sent(serial)
    world.steer("cancel", rollout_id, "ops")
    assert world.task(serial) == "downloading"  # sent: it cannot be called back
    world.finish(serial, "failed", failed("downloading"))
    world.tick(rollout_id, world.clock.advance(seconds=5))
    world.tick(rollout_id, world.clock.advance(hours=1))
    assert len(world.commands(serial)) == 1
    assert world.task(serial) in ("failed", "cancelled")
    with Session(world.engine) as session:
        assert serial in manage.plan(session, RELEASE, Target(), "100%").waves[0]


def _watched(world: World, watch_s: int) -> int:
    """Wave 1 (one terminal) updated at T0 + 10 s, wave 2 (two) held by a watch period."""
    world.terminals("TH", 3)
    rollout_id = world.create(
        {"health_margin_points": 5, "success_threshold_pct": 100, "watch_period_s": watch_s},
        waves="1,*",
    )
    world.tick(rollout_id)
    world.clock.at = T0 + timedelta(seconds=10)
    (updated,) = world.in_state(rollout_id, "downloading")
    world.finish(updated, "succeeded", SUCCEEDED)
    world.tick(rollout_id)
    assert world.task(updated) == "succeeded"
    return rollout_id


def test_bug_a_watch_period_shorter_than_the_settle_time_still_judges_the_wave(
    world: World,
) -> None:
    # Updated terminals are judged only from SETTLE (60 s) after their update, but the
    # watch period starts when the wave met its threshold: a 30 s watch ends before its
    # terminal is judged at all, and wave 2 opens on a wave 1 nobody looked at. The
    # watch could end no sooner than SETTLE + watch_period after the threshold was met.
    rollout_id = _watched(world, 30)
    (updated,) = world.in_state(rollout_id, "succeeded")
    _goes_to_error(world, updated, T0 + timedelta(seconds=20))  # and stays in error
    assert world.tick(rollout_id, T0 + timedelta(seconds=40)).started == 0
    # Its heartbeats go on saying so after the settle time (one before it would not
    # count: the status could be its reboot's).
    world.sql(
        "UPDATE terminal SET last_heartbeat_at = %s WHERE serial = %s",
        T0 + timedelta(seconds=90), updated,
    )  # fmt: skip
    world.tick(rollout_id, T0 + timedelta(seconds=100))
    assert world.rollout(rollout_id, "state") == "halted"
    assert world.in_state(rollout_id, "queued") == [s for s in world.states(rollout_id)
                                                   if s != updated]  # fmt: skip


def test_bug_the_next_wave_opens_on_a_health_sample_taken_after_its_watch(
    world: World,
) -> None:
    # Health is cached for 10 s (HEALTH_EVERY). A sample taken 5 s before the watch
    # ends opens the next wave although a terminal went to error in between; the halt
    # comes a tick later, after wave 2's terminals were sent their firmware. Opening a
    # wave could take a fresh sample (or one taken after the watch ended).
    rollout_id = _watched(world, 120)  # watching until T0 + 10 s + SETTLE + 120 s
    world.tick(rollout_id, T0 + timedelta(seconds=185))  # a healthy sample, cached
    (updated,) = world.in_state(rollout_id, "succeeded")
    _goes_to_error(world, updated, T0 + timedelta(seconds=187))
    assert world.tick(rollout_id, T0 + timedelta(seconds=190)).started == 0
    assert world.rollout(rollout_id, "state") == "halted"
