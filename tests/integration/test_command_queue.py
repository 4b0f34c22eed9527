"""The command queue on real PostgreSQL: checks before a row, who asked, cancel, bulk pacing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlmodel import Session, select

from commands import queue
from commands.queue import CommandConflict, CommandNotFound, Requester, Target
from shared.command_catalog import CommandRefused
from shared.db import make_engine
from shared.models import AuditEvent, Customer, Terminal

pytestmark = pytest.mark.integration

OPERATOR = Requester("olga", "operator", "user", origin="10.0.0.7")
SUPPORT = Requester("sam", "support", "token", token_name="nightly", origin="10.0.0.8")
VIEWER = Requester("vic", "viewer", "user")
ADMIN = Requester("ada", "admin", "user")


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    engine = make_engine(database_url, pool_size=1)
    with Session(engine, expire_on_commit=False) as session:
        for name in ("acme", "globex"):
            session.add(Customer(name=name))
        session.commit()
        ids = {c.name: c.id for c in session.exec(select(Customer))}
        for index in range(6):
            customer = "acme" if index < 4 else "globex"
            assert ids[customer] is not None
            session.add(Terminal(serial=f"TC{index}", customer_id=ids[customer]))
        session.add(Terminal(serial="GONE", customer_id=ids["acme"], status="decommissioned"))
        session.commit()
        yield session
    engine.dispose()


def test_a_command_is_a_row_with_who_asked_and_an_audit_entry(session: Session) -> None:
    view = queue.queue_command(session, SUPPORT, "TC1", "fetch_logs", {"lines": 10}, 120)
    assert view.state == "queued" and view.args == {"lines": 10}
    assert (view.requested_by, view.requester_kind, view.token_name) == ("sam", "token", "nightly")
    assert view.max_attempts == 3 and view.attempts == 0
    assert view.expires_at is not None
    assert 119 <= (view.expires_at - view.created_at).total_seconds() <= 121
    audit = session.exec(select(AuditEvent).where(AuditEvent.action == "command.queued")).one()
    assert audit.actor == "sam" and audit.target == "TC1" and audit.remote_addr == "10.0.0.8"
    assert audit.detail is not None and audit.detail["command"] == view.id
    assert audit.detail["via"] == "token" and audit.detail["token"] == "nightly"
    assert [c.id for c in queue.list_commands(session, "TC1")] == [view.id]


@pytest.mark.parametrize(
    ("requester", "serial", "name", "args", "expires", "message"),
    [
        (VIEWER, "TC1", "ping", None, None, "viewer role may not send ping"),
        (SUPPORT, "TC1", "reboot", None, None, "support role may not send reboot"),
        (OPERATOR, "TC1", "self_destruct", None, None, "unknown command 'self_destruct'"),
        (OPERATOR, "TC1", "fetch_logs", {"lines": 0}, None, "bad argument lines"),
        (OPERATOR, "TC1", "ping", {"x": 1}, None, "bad argument x"),
        (OPERATOR, "TC1", "set_config", {}, None, "set_config needs at least one"),
        (OPERATOR, "TC1", "ping", None, 0, "expires_in_s must be between"),
        (OPERATOR, "NOPE", "ping", None, None, "no terminal with serial 'NOPE'"),
        (OPERATOR, "GONE", "ping", None, None, "decommissioned"),
    ],
)
def test_refused_before_anything_is_queued(
    session: Session,
    requester: Requester,
    serial: str,
    name: str,
    args: dict | None,
    expires: float | None,
    message: str,
) -> None:
    with pytest.raises(CommandRefused, match=message):
        queue.queue_command(session, requester, serial, name, args, expires)
    assert queue.list_commands(session, "TC1") == []


def test_a_repeated_request_id_gives_the_same_command(session: Session) -> None:
    script = Requester("script-7", "support", "mqtt", origin="mqtt")
    first = queue.queue_command(session, script, "TC2", "ping", request_id="r-1")
    again = queue.queue_command(session, script, "TC2", "ping", request_id="r-1")
    other = queue.queue_command(session, script, "TC2", "ping", request_id="r-2")
    assert first.id == again.id != other.id
    assert len(queue.list_commands(session, "TC2")) == 2


def test_cancel_rules(session: Session) -> None:
    mine = queue.queue_command(session, SUPPORT, "TC1", "ping")
    with pytest.raises(CommandRefused, match="only its own"):
        queue.cancel_command(session, Requester("other", "operator", "user"), mine.id)
    cancelled = queue.cancel_command(session, SUPPORT, mine.id)
    assert cancelled.state == "cancelled" and cancelled.cancelled_by == "sam"
    assert cancelled.finished_at is not None
    with pytest.raises(CommandConflict, match="already cancelled"):
        queue.cancel_command(session, ADMIN, mine.id)
    theirs = queue.queue_command(session, OPERATOR, "TC1", "reboot")
    assert queue.cancel_command(session, ADMIN, theirs.id).cancelled_by == "ada"
    with pytest.raises(CommandNotFound):
        queue.cancel_command(session, ADMIN, "no-such-id")
    sent = queue.queue_command(session, OPERATOR, "TC1", "ping")
    session.execute(
        queue.text("UPDATE command SET status = 'sent' WHERE id = :id"), {"id": sent.id}
    )
    session.commit()
    with pytest.raises(CommandConflict, match="cannot be called back"):
        queue.cancel_command(session, OPERATOR, sent.id)
    actions = session.exec(
        select(AuditEvent.action).where(AuditEvent.action.startswith("command."))
    )  # type: ignore[attr-defined]
    assert sorted(actions).count("command.cancelled") == 2


def test_pace_spreads_each_customer_at_the_rate() -> None:
    targets = [Target(1, 10), Target(2, 10), Target(3, 20), Target(4, 10), Target(5, 20)]
    assert queue.pace(targets, 2.0) == [(1, 0.0), (2, 0.5), (3, 0.0), (4, 1.0), (5, 0.5)]


def test_bulk_is_paced_per_customer_and_cancellable(session: Session) -> None:
    ids = [t.id for t in session.exec(select(Terminal)) if t.id is not None]
    targets = queue.bulk_targets(session, ids)
    assert len(targets) == 6  # the decommissioned one is left out
    with pytest.raises(CommandRefused, match="rate must be between"):
        queue.queue_bulk(session, OPERATOR, "reboot", None, targets, rate_per_s=1000)
    with pytest.raises(CommandRefused, match="support role may not send reboot"):
        queue.queue_bulk(session, SUPPORT, "reboot", None, targets)
    bulk = queue.queue_bulk(
        session, OPERATOR, "reboot", None, targets, rate_per_s=2, summary="all of acme, globex"
    )
    assert bulk.total == 6 and bulk.counts == {"queued": 6}
    rows = session.execute(
        queue.text(
            "SELECT t.customer_id, c.due_at - c.created_at AS delay,"
            " c.expires_at - c.due_at AS life"
            " FROM command c JOIN terminal t ON t.id = c.terminal_id WHERE c.bulk_id = :id"
        ),
        {"id": bulk.id},
    ).all()
    by_customer: dict[int, list[float]] = {}
    for customer, delay, life in rows:
        by_customer.setdefault(customer, []).append(delay.total_seconds())
        assert life.total_seconds() == pytest.approx(3600)
    assert sorted(sorted(d) for d in by_customer.values()) == [[0, 0.5], [0, 0.5, 1.0, 1.5]]
    stopped = queue.cancel_bulk(session, OPERATOR, bulk.id)
    assert stopped.counts == {"cancelled": 6} and stopped.cancelled_at is not None
    assert queue.list_bulks(session)[0].id == bulk.id
