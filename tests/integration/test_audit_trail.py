"""The audit trail's two writers on real PostgreSQL: a Session's and a bare psycopg
connection's rows are the same, cut to the columns' widths and never refused, and a
change and its row land or roll back together."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from sqlmodel import Session, col, select

from shared import audit_trail
from shared.db import libpq_url, make_engine
from shared.models import AuditEvent

pytestmark = pytest.mark.integration

# The worst a caller may pass: far past every width, with characters of 1 to 4 bytes.
LONG = "é€😀x" * 500


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    engine = make_engine(database_url, pool_size=1)
    with Session(engine) as session:
        yield session
    engine.dispose()


def _rows(session: Session) -> list[tuple[str, str, str, str | None]]:
    session.rollback()
    events = session.exec(select(AuditEvent).order_by(col(AuditEvent.id))).all()
    return [(e.actor, e.action, e.target, e.remote_addr) for e in events]


def _details(session: Session) -> list[object]:
    return list(session.exec(select(AuditEvent.detail).order_by(col(AuditEvent.id))).all())


def test_both_writers_cut_overlong_fields_the_same_way(session: Session, database_url: str) -> None:
    detail = {"why": "worst values"}
    audit_trail.record(session, LONG, LONG, LONG, detail, LONG)
    session.commit()
    with psycopg.connect(libpq_url(database_url)) as conn, conn.transaction():
        audit_trail.record_on_connection(conn, LONG, LONG, LONG, detail, LONG)
    by_session, by_connection = _rows(session)
    assert by_session == by_connection
    actor, action, target, remote_addr = by_session
    assert (len(actor), len(action), len(target), len(remote_addr or "")) == (
        audit_trail.ACTOR_MAX,
        audit_trail.ACTION_MAX,
        audit_trail.TARGET_MAX,
        audit_trail.REMOTE_ADDR_MAX,
    )
    assert _details(session) == [detail, detail]


def test_no_address_and_no_detail_stay_null(session: Session, database_url: str) -> None:
    with psycopg.connect(libpq_url(database_url)) as conn, conn.transaction():
        audit_trail.record_on_connection(conn, "system:rollouts", "rollout.wave", "r-1")
        audit_trail.record_on_connection(conn, "system:rollouts", "rollout.wave", "r-2", None, "")
    assert _rows(session) == [
        ("system:rollouts", "rollout.wave", "r-1", None),
        ("system:rollouts", "rollout.wave", "r-2", None),
    ]
    assert _details(session) == [None, None]


def test_a_rolled_back_change_leaves_no_audit_row(session: Session, database_url: str) -> None:
    with (
        psycopg.connect(libpq_url(database_url)) as conn,
        pytest.raises(psycopg.errors.DivisionByZero),
        conn.transaction(),
    ):
        audit_trail.record_on_connection(conn, "olga", "terminal.edit", "TC-1")
        conn.execute("SELECT 1 / 0")
    audit_trail.record(session, "olga", "terminal.edit", "TC-1")
    session.rollback()
    assert _rows(session) == []
