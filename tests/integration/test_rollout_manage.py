"""What people do to rollouts (rollouts.manage) on real PostgreSQL: create writes the
rollout, its waves and queued tasks and leaves out terminals another unfinished rollout
holds; refusals (an image not released, an empty target, a bad name or policy) write
nothing; pause, resume (policy changes checked again), cancel and approve follow the
rollout's state; every action is audited and announced to the driver. The
``test_bug_`` tests fail until rollouts/manage.py is fixed (see each one's comment)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlmodel import Session

from ingest.writer import SQL_LOCK_TERMINALS
from rollouts import library, manage
from rollouts.decide import RolloutPolicy
from rollouts.errors import (
    PolicyError,
    RolloutConflict,
    RolloutError,
    RolloutNotFound,
    TargetError,
    WaveSpecError,
)
from rollouts.rollout_json import policy_to_json, target_to_json
from rollouts.targets import Target
from rollouts.tasks import RetryPolicy
from shared.models import FirmwareState
from tests.integration.test_rollout_driver import (
    OLD,
    PLAIN,
    RELEASE,
    VERIFIED,
    World,
    image,
    open_world,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    with open_world(database_url, tmp_path) as found:
        yield found


@pytest.fixture
def listener(world: World) -> Iterator[psycopg.Connection[Any]]:
    """A connection listening as the driver does."""
    with psycopg.connect(world.url, autocommit=True) as conn:
        conn.execute(f"LISTEN {manage.NOTIFY_CHANNEL}")
        yield conn


def announced(listener: psycopg.Connection[Any]) -> list[str]:
    return [n.payload for n in listener.notifies(timeout=1.0)]


def refused(world: World, error: type[Exception], call: Any, *args: Any, **kwargs: Any) -> str:
    """The message of ``call``'s refusal; the session is rolled back as a caller would."""
    with Session(world.engine) as session, pytest.raises(error) as caught:
        try:
            call(session, *args, **kwargs)
        finally:
            session.rollback()
    return str(caught.value)


def create_args(**fields: Any) -> dict[str, Any]:
    return {
        "name": "roll", "version": RELEASE, "target": Target(), "policy": dict(PLAIN),
        "wave_spec": "100%", "actor": "ops", "seed": 1, **fields,
    }  # fmt: skip


def written(world: World) -> tuple[int, int, int]:
    """Rollouts, tasks and rollout audit rows: what a refusal must not add to."""
    return world.one(
        "SELECT (SELECT count(*) FROM rollout), (SELECT count(*) FROM update_task),"
        " (SELECT count(*) FROM audit_event WHERE action LIKE 'rollout.%%')"
    )


def holders(world: World) -> dict[str, list[int]]:
    """Each terminal's unfinished tasks, by rollout."""
    rows = world.sql(
        "SELECT t.serial, u.rollout_id FROM update_task AS u JOIN terminal AS t"
        " ON t.id = u.terminal_id WHERE u.state NOT IN"
        " ('succeeded', 'failed', 'rolled_back', 'cancelled', 'skipped') ORDER BY u.rollout_id"
    )
    found: dict[str, list[int]] = {}
    for serial, rollout_id in rows:
        found.setdefault(serial, []).append(rollout_id)
    return found


# -- create -------------------------------------------------------------------------------


def test_create_writes_the_rollout_waves_and_queued_tasks_audited_and_announced(
    world: World, listener: psycopg.Connection[Any]
) -> None:
    world.terminals("MA", 4, store="A1")
    world.terminals("MB", 2, customer="Bolt", store="B1")
    target = Target(models=frozenset({"TC-200"}), max_version="3.0")
    policy = {"error_threshold_pct": 10, "window": " mon-fri 2:00-5:00 "}
    rollout_id = world.create(
        policy, waves=" 50,100 ", target=target, name="  2.5.0 for all  ",
        remote_addr="10.0.0.9",
    )  # fmt: skip
    row = world.one(
        "SELECT name, state, target, policy, wave_spec, seed, excluded, created_by,"
        " halt_reason, finished_at FROM rollout WHERE id = %s",
        rollout_id,
    )
    assert row == (
        "2.5.0 for all", "running", target_to_json(target),
        policy_to_json(RolloutPolicy(error_threshold_pct=10, health_margin_points=None,
                                     retry=RetryPolicy(max_attempts=1)),
                       "Mon-Fri 02:00-05:00"),
        "50,100", 1, {}, "ops", None, None,
    )  # fmt: skip
    assert world.sql(
        "SELECT number, size, started_at, approved_at FROM rollout_wave WHERE rollout_id = %s"
        " ORDER BY number",
        rollout_id,
    ) == [(1, 3, None, None), (2, 3, None, None)]
    tasks = world.sql(
        "SELECT u.wave, u.state, u.attempts, u.command_id, u.from_version, f.version"
        " FROM update_task AS u JOIN firmware AS f ON f.id = u.firmware_id"
        " WHERE u.rollout_id = %s",
        rollout_id,
    )
    assert (
        sorted(tasks)
        == [(1, "queued", 0, None, OLD, RELEASE)] * 3 + [(2, "queued", 0, None, OLD, RELEASE)] * 3
    )
    ((actor, detail),) = world.audit(rollout_id, "rollout.create")
    assert actor == "ops" and detail["waves"] == [3, 3] and detail["version"] == RELEASE
    assert detail["excluded"] == {} and detail["target"] == target_to_json(target)
    assert detail["policy"]["window"] == "Mon-Fri 02:00-05:00"
    assert (
        world.one("SELECT remote_addr FROM audit_event WHERE action = 'rollout.create'")
        == "10.0.0.9"
    )
    assert announced(listener) == [str(rollout_id)]


def test_a_preview_writes_nothing_and_matches_what_create_makes(world: World) -> None:
    world.terminals("MP", 7)
    before = written(world)
    with Session(world.engine) as session:
        plan = manage.plan(session, RELEASE, Target(), "1,3,*", seed=5)
        session.rollback()
    assert plan.wave_sizes == (1, 3, 3) and plan.total == 7 and written(world) == before
    rollout_id = world.create({}, waves="1,3,*", seed=5)
    waves = world.sql(
        "SELECT t.serial, u.wave FROM update_task AS u JOIN terminal AS t"
        " ON t.id = u.terminal_id WHERE u.rollout_id = %s",
        rollout_id,
    )
    assert sorted(waves) == sorted(
        (serial, n) for n, wave in enumerate(plan.waves, start=1) for serial in wave
    )


def test_create_leaves_out_terminals_another_unfinished_rollout_holds(world: World) -> None:
    acme = world.terminals("MH", 3)
    bolt = world.terminals("MK", 2, customer="Bolt")
    first = world.create({}, target=Target(customers=frozenset({world.customer("Acme")})))
    with Session(world.engine) as session:
        plan = manage.plan(session, RELEASE, Target(), "100%")
    assert plan.excluded == {manage.BUSY: 3} and sorted(plan.waves[0]) == bolt
    second = world.create({})
    assert world.rollout(second, "excluded") == {"in another rollout": 3}
    assert holders(world) == {**{s: [first] for s in acme}, **{s: [second] for s in bolt}}
    message = refused(world, TargetError, manage.create, **create_args())
    assert message == "no terminal to update: 5 in another rollout"
    # Paused and halted rollouts hold their terminals too.
    world.steer("pause", first, "ops")
    world.sql("UPDATE rollout SET state = 'halted' WHERE id = %s", second)
    assert "5 in another rollout" in refused(world, TargetError, manage.create, **create_args())
    # A cancelled one lets them go (its tasks were skipped).
    world.steer("cancel", first, "ops")
    third = world.create({})
    assert sorted(holders(world)) == sorted(acme + bolt)
    assert world.rollout(third, "excluded") == {"in another rollout": 2}


def test_a_finished_task_frees_its_terminal(world: World) -> None:
    (serial, other) = world.terminals("MF", 2)
    first = world.create({"success_threshold_pct": 0})
    world.tick(first)
    world.finish(serial, "failed", {"outcome": "failed", "reason": "disk full"})
    world.tick(first)
    assert world.task(serial) == "failed" and world.rollout(first, "state") == "halted"
    second = world.create({})
    assert holders(world) == {serial: [second], other: [first]}


def test_create_refuses_an_image_that_is_not_released(world: World) -> None:
    world.terminals("MR", 2)
    with Session(world.engine) as session:
        for version in ("2.6.0", "2.7.0"):
            library.add_image(
                session, world.lib, image=image(version), filename="fw.img", version=version,
                models=("TC-200",), notes="", actor="test",
            )  # fmt: skip
        library.change_state(session, "2.7.0", FirmwareState.RELEASED, "test")
        library.change_state(session, "2.7.0", FirmwareState.DEPRECATED, "test")
        session.commit()
    before = written(world)
    for version, words in (
        ("2.6.0", "firmware 2.6.0 is draft: only a released image is rolled out"),
        ("2.7.0", "firmware 2.7.0 is deprecated: only a released image is rolled out"),
        ("9.9.9", "no firmware '9.9.9' in the library"),
    ):
        assert refused(world, TargetError, manage.create, **create_args(version=version)) == words
        assert refused(world, TargetError, manage.plan, version, Target(), "100%") == words
    assert written(world) == before


def test_create_refuses_an_empty_target_saying_why(world: World) -> None:
    world.terminals("ME", 2, store="E1")
    world.sql("UPDATE terminal SET firmware_version = %s WHERE serial = 'ME00'", RELEASE)
    world.sql("UPDATE terminal SET firmware_version = NULL WHERE serial = 'ME01'")
    before = written(world)
    for target, message in (
        (Target(customers=frozenset({999})), "no terminal to update: none"),
        (Target(models=frozenset({"TC-300"})), "no terminal to update: none"),
        (Target(tags=frozenset({"pilot"})), "no terminal to update: none"),
        (Target(), "no terminal to update: 1 already on release, 1 unknown version"),
        (Target(max_version="2.5.0"), "no terminal to update: 1 unknown version, "
                                      "1 version out of range"),
    ):  # fmt: skip
        assert refused(world, TargetError, manage.create, **create_args(target=target)) == message
    assert written(world) == before


@pytest.mark.parametrize("name", ["", "   ", "x" * 201, "tab\there", "two\nlines", "\x00"])
def test_create_refuses_a_bad_name(world: World, name: str) -> None:
    world.terminals("MN", 1)
    message = refused(world, PolicyError, manage.create, **create_args(name=name))
    assert message == "a rollout needs a name of 1 to 200 printable characters"
    assert written(world) == (0, 0, 0)


def test_a_name_is_kept_trimmed_up_to_its_length(world: World) -> None:
    world.terminals("ML", 1)
    rollout_id = world.create({}, name=f"  {'n' * 200}  ")
    assert world.rollout(rollout_id, "name") == "n" * 200


@pytest.mark.parametrize(
    "fields, error",
    [
        ({"policy": {"error_threshold": 5}}, PolicyError),
        ({"policy": {"max_concurrent": 0}}, PolicyError),
        ({"policy": {"window": "someday"}}, PolicyError),
        ({"wave_spec": "10,50"}, WaveSpecError),
        ({"wave_spec": ""}, WaveSpecError),
        ({"target": Target(min_version="2.0")}, None),  # fine: the control
    ],
)
def test_create_refuses_a_bad_policy_or_wave_spec(
    world: World, fields: dict[str, Any], error: type[Exception] | None
) -> None:
    world.terminals("MW", 2)
    if error is None:
        assert world.create({}, **fields)
        return
    refused(world, error, manage.create, **create_args(**fields))
    assert written(world) == (0, 0, 0)


# -- pause, resume, cancel, approve -------------------------------------------------------------


def test_each_action_needs_a_state_that_allows_it(world: World) -> None:
    world.terminals("MS", 2)
    rollout_id = world.create({})
    world.steer("pause", rollout_id, "ops")
    assert world.rollout(rollout_id, "state") == "paused"
    message = refused(world, RolloutConflict, manage.pause, rollout_id, "ops")
    assert message == f"cannot pause rollout {rollout_id}: it is paused"
    world.steer("resume", rollout_id, "ops")
    assert world.rollout(rollout_id, "state") == "running"
    refused(world, RolloutConflict, manage.resume, rollout_id, "ops")
    world.sql("UPDATE rollout SET state = 'halted', halt_reason = 'x' WHERE id = %s", rollout_id)
    refused(world, RolloutConflict, manage.pause, rollout_id, "ops")  # halted is not running
    world.steer("cancel", rollout_id, "ops")
    assert world.rollout(rollout_id, "state") == "cancelled"
    for action, args in (
        (manage.pause, ()), (manage.resume, ()), (manage.cancel, ()), (manage.approve, (1,)),
    ):  # fmt: skip
        assert "it is cancelled" in refused(
            world, RolloutConflict, action, rollout_id, *args, "ops"
        )
    world.sql("UPDATE rollout SET state = 'completed' WHERE id = %s", rollout_id)
    refused(world, RolloutConflict, manage.resume, rollout_id, "ops")
    for action, args in (
        (manage.pause, ()), (manage.resume, ()), (manage.cancel, ()), (manage.approve, (1,)),
    ):  # fmt: skip
        assert refused(world, RolloutNotFound, action, 9999, *args, "ops") == "no rollout 9999"


def test_resume_checks_policy_changes_again(world: World) -> None:
    world.terminals("MC", 2)
    rollout_id = world.create({"error_threshold_pct": 5, "window": "02:00-05:00"})
    world.sql(
        "UPDATE rollout SET state = 'halted', halt_reason = 'wave 1: 1 of 2 failed' WHERE id = %s",
        rollout_id,
    )
    stored = world.rollout(rollout_id, "policy")
    for changes, words in (
        ({"error_threshold_pct": 500}, "between 0 and 100"),
        ({"error_threshold_pct": True}, "a number"),
        ({"max_concurrent": 1.5}, "whole"),
        ({"retry_delay_s": -5}, "not negative"),
        ({"window": "02:00-99:00"}, "window"),
        ({"error_treshold_pct": 50}, "unknown policy field 'error_treshold_pct'"),
    ):
        message = refused(world, PolicyError, manage.resume, rollout_id, "ops", changes)
        assert words in message, message
        assert world.rollout(rollout_id, "state", "policy", "halt_reason") == (
            "halted", stored, "wave 1: 1 of 2 failed"
        )  # fmt: skip
    world.steer("resume", rollout_id, "ops", {"error_threshold_pct": 50, "window": "22:00-4:00"})
    state, policy, reason = world.rollout(rollout_id, "state", "policy", "halt_reason")
    assert (state, reason) == ("running", None)
    assert policy == {**stored, "error_threshold_pct": 50.0, "window": "22:00-04:00"}
    assert world.audit(rollout_id, "rollout.resume") == [
        ("ops", {"from": "halted", "policy": {"error_threshold_pct": 50,
                                              "window": "22:00-4:00"}}),
    ]  # fmt: skip


def test_approve_opens_only_a_wave_not_yet_begun(world: World) -> None:
    world.terminals("MV", 3)
    gated = world.create({"approve_each_wave": True}, waves="1,*")
    world.steer("approve", gated, 1, "ops", remote_addr="10.1.1.1")
    assert world.one(
        "SELECT approved_by, approved_at IS NOT NULL FROM rollout_wave"
        " WHERE rollout_id = %s AND number = 1",
        gated,
    ) == ("ops", True)
    assert world.audit(gated, "rollout.approve") == [("ops", {"wave": 1})]
    for wave in (1, 3, 0):  # approved already, no such wave
        refused(world, RolloutConflict, manage.approve, gated, wave, "ops")
    world.steer("pause", gated, "ops")
    world.steer("approve", gated, 2, "ops")  # ahead of time, while paused: allowed
    world.steer("cancel", gated, "ops")
    # A wave the driver opened (no approval asked) cannot be approved after the fact.
    world.terminals("MU", 2)
    plain = world.create({})  # the cancelled rollout's terminals too
    assert world.tick(plain).started == 5
    message = refused(world, RolloutConflict, manage.approve, plain, 1, "ops")
    assert message == f"wave 1 of rollout {plain} does not exist, is approved, or has begun"
    assert len(world.audit(plain, "rollout.approve")) == 0


def test_every_action_is_audited_and_announced(
    world: World, listener: psycopg.Connection[Any]
) -> None:
    world.terminals("MZ", 2)
    rollout_id = world.create({"approve_each_wave": True}, remote_addr="192.0.2.7")
    addr = {"remote_addr": "192.0.2.7"}
    world.steer("approve", rollout_id, 1, "ops", **addr)
    world.steer("pause", rollout_id, "ops", **addr)
    world.steer("resume", rollout_id, "ops", **addr)
    world.steer("cancel", rollout_id, "ops", **addr)
    # A refused action leaves no trace.
    refused(world, RolloutConflict, manage.cancel, rollout_id, "ops")
    rows = world.sql(
        "SELECT action, actor, target, remote_addr FROM audit_event"
        " WHERE action LIKE 'rollout.%%' ORDER BY id"
    )
    target = f"rollout:{rollout_id}"
    assert rows == [
        (f"rollout.{action}", "ops", target, "192.0.2.7")
        for action in ("create", "approve", "pause", "resume", "cancel")
    ]
    assert announced(listener) == [str(rollout_id)] * 5


def test_cancel_leaves_a_rollout_that_never_started_with_every_task_skipped(
    world: World,
) -> None:
    serials = world.terminals("MX", 3)
    rollout_id = world.create({})
    world.steer("cancel", rollout_id, "ops")
    assert world.states(rollout_id) == {s: "skipped" for s in serials}
    assert world.sql(
        "SELECT DISTINCT reason, finished_at IS NOT NULL FROM update_task WHERE rollout_id = %s",
        rollout_id,
    ) == [("the rollout was cancelled", True)]
    assert world.sql("SELECT id FROM command") == []
    assert rollout_id not in world.driver.active_ids()


# -- bugs found (these fail until rollouts/manage.py is fixed) ----------------------------------


def test_bug_an_install_of_a_cancelled_rollout_still_holds_its_terminal(world: World) -> None:
    # Busy means "an unfinished task of a running, paused or halted rollout". A cancel
    # lets installs finish (the driver keeps ticking a cancelled rollout until they do),
    # but its rollout is no longer in ACTIVE, so a new rollout takes the terminal and
    # sends it a second firmware command while the TC-200 is being written.
    (busy, free) = world.terminals("MI", 2)
    first = world.create({})
    world.tick(first)
    world.sent(busy)
    world.progress(busy, "installing")
    world.tick(first)
    assert world.task(busy) == "installing"
    world.steer("cancel", first, "ops")
    with Session(world.engine) as session:
        plan = manage.plan(session, RELEASE, Target(), "100%")
    assert plan.excluded == {manage.BUSY: 1} and plan.waves == ((free,),)


def test_bug_two_creates_at_once_do_not_both_take_a_terminal(world: World) -> None:
    # create() reads which terminals are busy and then inserts its tasks, with nothing
    # to keep another create() from doing the same in between (READ COMMITTED; the
    # unique key is per rollout): two people starting a rollout at once both get every
    # terminal. A transaction-level advisory lock taken before candidates() would
    # serialise them, the second then seeing the first's tasks.
    serials = world.terminals("MD", 3)
    first = Session(world.engine)
    outcome: list[Any] = []

    def second_person() -> None:
        with Session(world.engine) as session:
            try:
                outcome.append(manage.create(session, **create_args(name="second")))
                session.commit()
            except RolloutError as exc:
                session.rollback()
                outcome.append(exc)

    try:
        manage.create(first, **create_args(name="first"))
        thread = threading.Thread(target=second_person)
        thread.start()
        thread.join(5.0)  # done by now unless something makes it wait for the first
        first.commit()
    finally:
        first.close()
    thread.join(60)
    assert not thread.is_alive() and len(outcome) == 1
    assert all(len(rollouts) == 1 for rollouts in holders(world).values()), holders(world)
    assert sorted(holders(world)) == serials


def test_bug_create_is_not_held_up_by_ingest_locking_its_terminals(world: World) -> None:
    # Ingest's writer locked the terminals of a batch FOR UPDATE, which conflicts with
    # the share lock each update_task row's foreign key takes on its terminal: a create
    # waited for every batch, and with its rows in wave order against the writer's id
    # order the two deadlocked (CI, stop 24). Nothing ingest does changes a key.
    world.terminals("MK", 6)
    with psycopg.connect(world.url) as ingest:
        ids = [row[0] for row in ingest.execute("SELECT id FROM terminal ORDER BY id")]
        locked = ingest.execute(SQL_LOCK_TERMINALS, (ids,)).fetchall()
        assert len(locked) == 6  # held until this block ends
        with Session(world.engine) as session:
            session.execute(text("SET LOCAL lock_timeout = '3s'"))
            rollout_id = manage.create(session, **create_args(wave_spec="50,100"))
            session.commit()
        ingest.rollback()
    assert world.one("SELECT count(*) FROM update_task WHERE rollout_id = %s", rollout_id) == 6


def test_bug_a_cancelled_task_says_it_was_cancelled(world: World) -> None:
    # cancel() writes its reason with COALESCE(reason, ...): a task waiting for its
    # store's window keeps "downloaded; installs when the store's window opens (...)",
    # and the console shows a cancelled task that still promises an install.
    world.store("N", window="02:00-04:00")
    (serial,) = world.terminals("MQ", 1, store="N")
    rollout_id = world.create({})
    world.tick(rollout_id)
    world.finish(serial, "succeeded", VERIFIED)
    world.tick(rollout_id)
    assert world.task(serial) == "waiting_window"
    world.steer("cancel", rollout_id, "ops")
    state, reason = world.task(serial, "state", "reason")
    assert state == "cancelled" and "cancelled" in reason and "installs when" not in reason
