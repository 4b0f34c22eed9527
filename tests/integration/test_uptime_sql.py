"""The uptime PostgreSQL works out (shared.uptime_sql) is the uptime console.uptime
defines, terminal by terminal, over a few hundred random histories and the edge cases:
changes on the window's edges, several at one instant, installed or decommissioned
inside the period, never in service, no change at all."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import text
from sqlmodel import Session

from console.report_model import WORST_SHOWN
from console.uptime import in_service_window, uptime_seconds
from shared.db import make_engine
from shared.uptime_sql import FLEET_UPTIME, TERMINAL_UPTIME

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 1, tzinfo=UTC)
END = datetime(2026, 12, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 20, 12, 30, tzinfo=UTC)  # the month in progress ends here
STATUSES = ("online", "offline", "error", "unknown", "maintenance")


def _moment(rng: random.Random) -> datetime:
    edges = [START, END, NOW, START - timedelta(days=3), END + timedelta(days=1)]
    if rng.random() < 0.2:
        return rng.choice(edges)
    return START + timedelta(seconds=rng.uniform(-10 * 86_400, 40 * 86_400))


def _seed(conn: psycopg.Connection, terminals: int) -> None:
    rng = random.Random(20261202)
    conn.execute("INSERT INTO customer (name) VALUES ('Alpha'), ('Beta')")
    conn.execute(
        "INSERT INTO store (customer_id, code, name, timezone)"
        " SELECT id, 'S-' || name, 'Store ' || name, 'UTC' FROM customer"
    )
    for n in range(terminals):
        created = _moment(rng) if rng.random() < 0.5 else START - timedelta(days=60)
        installed = _moment(rng) if rng.random() < 0.3 else None
        gone = _moment(rng) if rng.random() < 0.2 else None
        row = conn.execute(
            "INSERT INTO terminal (serial, customer_id, store_id, model, status, created_at,"
            " installed_at, decommissioned_at)"
            " SELECT %s, c.id, CASE WHEN %s THEN s.id END, 'TC-200', %s, %s, %s, %s"
            " FROM customer c JOIN store s ON s.customer_id = c.id WHERE c.name = %s"
            " RETURNING id",
            (f"TC-U{n:04d}", n % 3 != 0, rng.choice(STATUSES), created, installed, gone,
             rng.choice(["Alpha", "Beta"])),
        ).fetchone()  # fmt: skip
        assert row is not None
        changes = [
            (_moment(rng), rng.choice(STATUSES)) for _ in range(rng.choice([0, 1, 2, 5, 12]))
        ]
        if changes and rng.random() < 0.3:  # several changes at one instant
            changes += [(changes[0][0], rng.choice(STATUSES)) for _ in range(2)]
        for at, status in changes:
            conn.execute(
                "INSERT INTO status_change (terminal_id, at, new_status, reason)"
                " VALUES (%s, %s, %s, '')",
                (row[0], at, status),
            )


def _python_uptime(conn: psycopg.Connection) -> dict[str, tuple[float, float]]:
    expected = {}
    terminals = conn.execute(
        "SELECT id, serial, COALESCE(installed_at, created_at), decommissioned_at FROM terminal"
    ).fetchall()
    for terminal_id, serial, since, gone in terminals:
        window = in_service_window(
            START, min(END, NOW), in_service_from=since, decommissioned_at=gone, now=NOW
        )
        changes = conn.execute(
            "SELECT at, new_status FROM status_change WHERE terminal_id = %s ORDER BY at, id",
            (terminal_id,),
        ).fetchall()
        seconds = uptime_seconds(window, changes)
        if seconds.in_service > 0:
            expected[serial] = (seconds.online, seconds.in_service)
    return expected


def test_sql_uptime_is_the_reference_uptime_for_every_terminal(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        _seed(conn, 400)
        expected = _python_uptime(conn)
    engine = make_engine(database_url, pool_size=1)
    params = {"customer": None, "start": START, "end": min(END, NOW)}
    with Session(engine) as session:
        rows = session.execute(text(TERMINAL_UPTIME), params).all()
        fleet = session.execute(text(FLEET_UPTIME), {**params, "worst": WORST_SHOWN}).all()
    engine.dispose()
    got = {row.serial: (row.online_s, row.in_service_s) for row in rows}
    assert got.keys() == expected.keys()
    assert 100 < len(got) < 400  # some terminals were out of service all the period
    for serial, (online, in_service) in expected.items():
        assert got[serial] == pytest.approx((online, in_service), abs=1e-3), serial
    assert any(0 < online < in_service for online, in_service in expected.values())

    # The fleet statement's sums are the sums of the same terminals, its worst the worst.
    customers = {r.customer: r for r in fleet if r.part == "customer"}
    assert sum(r.terminals for r in customers.values()) == len(expected)
    total_online = sum(online for online, _ in expected.values())
    assert sum(r.online_s for r in customers.values()) == pytest.approx(total_online, abs=1e-2)
    stores = [r for r in fleet if r.part == "store"]
    assert sum(r.terminals for r in stores) == len(expected)
    assert {r.store_code for r in stores} == {"S-Alpha", "S-Beta", None}
    worst = [r for r in fleet if r.part == "worst"]
    assert len(worst) == WORST_SHOWN
    shares = sorted(online / in_service for online, in_service in expected.values())
    assert [r.online_s / r.in_service_s for r in worst] == pytest.approx(shares[:WORST_SHOWN])
