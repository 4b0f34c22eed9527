"""The dashboard on real PostgreSQL: totals, critical alerts, customers, uptime and the
online charts from fleet samples, and ingest's sampler that writes them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlmodel import Session

from console.db import engine_of
from ingest.fleet_samples import bucket_of, sample_fleet
from shared.db import libpq_url
from tests.fixtures.console import Fleet, sign_in

pytestmark = pytest.mark.integration


@pytest.fixture
def viewer(client: FlaskClient, make_user: Callable[..., str]) -> FlaskClient:
    make_user("vera", "viewer")
    sign_in(client, "vera")
    return client


def sql(app: Flask, statement: str, **params: object) -> None:
    with Session(engine_of(app)) as session:
        session.execute(text(statement), params)
        session.commit()


# What ingest's sampler adds with each sample, from fleet_sample rows a test wrote.
DERIVE_ROLLUPS = (
    "INSERT INTO fleet_sample_total SELECT bucket, sum(in_service), sum(online)"
    " FROM fleet_sample GROUP BY bucket;"
    " INSERT INTO fleet_sample_daily SELECT date_trunc('day', bucket, 'UTC'), customer_id,"
    " count(*), sum(in_service), sum(online) FROM fleet_sample GROUP BY 1, 2"
)


def alert(app: Flask, serial: str, kind: str, severity: str, minutes_ago: int,
          status: str = "open") -> None:  # fmt: skip
    sql(
        app,
        "INSERT INTO alert (scope, kind, severity, status, message, count, terminal_id,"
        " customer_id, raised_at) SELECT 'terminal:' || t.id, CAST(:kind AS text), :severity,"
        " :status, 'because ' || CAST(:kind AS text), 1, t.id, t.customer_id,"
        " now() - make_interval(mins => :m) FROM terminal t WHERE t.serial = :serial",
        kind=kind, severity=severity, status=status, m=minutes_ago, serial=serial,
    )  # fmt: skip


def test_totals_alerts_and_customers_add_up(
    viewer: FlaskClient, console_app: Flask, fleet: Fleet
) -> None:
    fleet.add_terminal("TC-1", customer="Acme", store="S01", status="online")
    fleet.add_terminal("TC-2", customer="Acme", store="S02", status="error", reason="PIN pad")
    fleet.add_terminal("TC-3", customer="Bolt", store="B01", status="offline")
    fleet.add_terminal("TC-4", customer="Bolt", store=None, status="decommissioned")
    alert(console_app, "TC-2", "error", "critical", 5)
    alert(console_app, "TC-3", "offline", "critical", 90)
    alert(console_app, "TC-1", "high_cpu", "warning", 1)
    alert(console_app, "TC-1", "offline", "critical", 2, status="resolved")

    page = viewer.get("/").get_data(as_text=True)
    assert 'id="total-terminals">3<' in page  # the decommissioned one is not in service
    assert 'id="total-online">1<' in page and 'id="total-error">1<' in page
    assert 'id="total-offline">1<' in page
    assert 'id="total-alerts">3<' in page and "2 critical" in page
    critical = page.split('id="critical-alerts"')[1].split("</section>")[0]
    # Newest first, with customer, store and age; the resolved one is gone.
    assert critical.index("TC-2") < critical.index("TC-3")
    assert "Acme · S02" in critical and "5 min ago" in critical and "high_cpu" not in critical
    table = page.split('id="customer-table"')[1]
    acme = table.split('data-customer="Acme"')[1].split("</tr>")[0]
    cells = [c.split(">")[-1] for c in acme.split("</td>")[1:-1]]
    assert cells == ["2", "1", "0", "1", "—"]  # terminals, online, offline, errors, uptime
    assert "No samples yet" in page


def test_uptime_and_charts_come_from_the_fleet_samples(
    viewer: FlaskClient, console_app: Flask, fleet: Fleet
) -> None:
    fleet.add_terminal("TC-1", customer="Acme")
    now = datetime.now(UTC)
    # Today: 3 of 4 online in one sample, 4 of 4 in the other; earlier this month 0 of 4.
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    samples = [(day + timedelta(minutes=1), 3), (day + timedelta(minutes=6), 4)]
    if day.day > 1:
        samples.append((day - timedelta(hours=1), 0))
    for bucket, online in samples:
        sql(
            console_app,
            "INSERT INTO fleet_sample (bucket, customer_id, in_service, online, offline, error,"
            " unknown, maintenance) SELECT :b, id, 4, :o, 4 - :o, 0, 0, 0 FROM customer",
            b=bucket, o=online,
        )  # fmt: skip
    for statement in DERIVE_ROLLUPS.split(";"):
        sql(console_app, statement)
    page = viewer.get("/").get_data(as_text=True)
    assert 'id="uptime-today">87.5%<' in page
    month = "58.3%" if day.day > 1 else "87.5%"
    assert f'id="uptime-month">{month}<' in page
    acme = page.split('data-customer="Acme"')[1].split("</tr>")[0]
    assert month in acme
    day_chart = page.split('id="chart-day"')[1].split("</svg>")[0]
    assert '<path d="M ' in day_chart and "No samples yet" not in day_chart


def test_the_live_partial_and_who_may_see_it(
    client: FlaskClient, viewer: FlaskClient, fleet: Fleet
) -> None:
    fleet.add_terminal("TC-1", customer="Acme")
    partial = viewer.get("/dashboard/live")
    assert partial.status_code == 200
    body = partial.get_data(as_text=True)
    assert 'id="total-terminals">1<' in body and "<html" not in body
    page = viewer.get("/").get_data(as_text=True)
    assert 'data-refresh-url="/dashboard/live"' in page
    anonymous = client.application.test_client()
    assert anonymous.get("/").status_code == 302
    assert anonymous.get("/dashboard/live").status_code == 302


def test_the_sampler_writes_one_row_per_customer_and_bucket(
    console_app: Flask, fleet: Fleet, database_url: str
) -> None:
    fleet.add_terminal("TC-1", customer="Acme", status="online")
    fleet.add_terminal("TC-2", customer="Acme", status="error")
    fleet.add_terminal("TC-3", customer="Acme", status="decommissioned")
    fleet.add_terminal("TC-4", customer="Bolt", status="offline")
    sql(console_app, "UPDATE terminal SET maintenance = true WHERE serial IN ('TC-2', 'TC-3')")
    now = datetime(2026, 12, 2, 10, 7, 31, tzinfo=UTC)

    async def sample_twice() -> tuple[int, int]:
        async with await psycopg.AsyncConnection.connect(
            libpq_url(database_url), autocommit=True
        ) as conn:
            first = await sample_fleet(conn, now, 300)
            again = await sample_fleet(conn, now + timedelta(seconds=100), 300)
            return first, again

    assert asyncio.run(sample_twice()) == (2, 0)  # the second falls in the same bucket
    with psycopg.connect(libpq_url(database_url)) as conn:
        rows = conn.execute(
            "SELECT c.name, s.bucket, s.in_service, s.online, s.offline, s.error, s.unknown,"
            " s.maintenance FROM fleet_sample s JOIN customer c ON c.id = s.customer_id"
            " ORDER BY c.name"
        ).fetchall()
        total = conn.execute("SELECT bucket, in_service, online FROM fleet_sample_total").fetchall()
        daily = conn.execute(
            "SELECT c.name, d.day, d.samples, d.in_service, d.online FROM fleet_sample_daily d"
            " JOIN customer c ON c.id = d.customer_id ORDER BY c.name"
        ).fetchall()
    bucket = datetime(2026, 12, 2, 10, 5, tzinfo=UTC)
    assert rows == [("Acme", bucket, 2, 1, 0, 1, 0, 1), ("Bolt", bucket, 1, 0, 1, 0, 0, 0)]
    assert total == [(bucket, 3, 1)]
    day = datetime(2026, 12, 2, tzinfo=UTC)
    # Counted once though sampled twice in the bucket.
    assert daily == [("Acme", day, 1, 2, 1), ("Bolt", day, 1, 1, 0)]


def test_daily_sums_grow_with_each_new_bucket(
    console_app: Flask, fleet: Fleet, database_url: str
) -> None:
    fleet.add_terminal("TC-1", customer="Acme", status="online")
    fleet.add_terminal("TC-2", customer="Acme", status="offline")
    start = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)

    async def sample(minutes: list[int]) -> None:
        async with await psycopg.AsyncConnection.connect(
            libpq_url(database_url), autocommit=True
        ) as conn:
            for minute in minutes:
                await sample_fleet(conn, start + timedelta(minutes=minute), 300)

    asyncio.run(sample([0, 5, 10, 12]))  # three buckets; 12 is in the bucket of 10
    with psycopg.connect(libpq_url(database_url)) as conn:
        daily = conn.execute(
            "SELECT samples, in_service, online FROM fleet_sample_daily"
        ).fetchone()
        totals = conn.execute("SELECT count(*) FROM fleet_sample_total").fetchone()
    assert daily == (3, 6, 3) and totals == (3,)


def test_buckets_are_aligned_to_the_interval() -> None:
    moment = datetime(2026, 12, 2, 10, 7, 31, tzinfo=UTC)
    assert bucket_of(moment, 300) == datetime(2026, 12, 2, 10, 5, tzinfo=UTC)
    assert bucket_of(moment, 3600) == datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def test_ingests_sampling_loop_writes_the_current_bucket_once(
    console_app: Flask, fleet: Fleet, database_url: str
) -> None:
    from ingest.background import fleet_sample_loop, make_side_pool

    fleet.add_terminal("TC-1", customer="Acme", status="online")

    async def run() -> int:
        pool = make_side_pool(database_url, 5.0)
        await pool.open()
        stop = asyncio.Event()
        task = asyncio.create_task(fleet_sample_loop(pool, 3600, stop))
        try:
            for _ in range(200):  # the loop checks at once, then every 720 s
                async with pool.connection() as conn:
                    row = await (await conn.execute("SELECT count(*) FROM fleet_sample")).fetchone()
                if row and row[0]:
                    break
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await task
            await pool.close()
        with psycopg.connect(libpq_url(database_url)) as conn:
            found = conn.execute(
                "SELECT (SELECT count(*) FROM fleet_sample) + (SELECT count(*)"
                " FROM fleet_sample_total) + (SELECT count(*) FROM fleet_sample_daily)"
            ).fetchone()
        assert found is not None
        return int(found[0])

    assert asyncio.run(run()) == 3  # one row in each: the customer, the fleet, the day


def test_a_halted_rollout_is_a_critical_alert_linked_to_its_rollout(
    viewer: FlaskClient, console_app: Flask, fleet: Fleet
) -> None:
    fleet.add_terminal("TC-1", customer="Acme", store="S01", status="offline")
    alert(console_app, "TC-1", "offline", "critical", 5)
    # As the rollout driver writes it (rollouts/driver.py): no terminal, no customer.
    sql(
        console_app,
        "INSERT INTO alert (scope, kind, severity, status, message, count)"
        " VALUES ('rollout:3', 'rollout_halted', 'critical', 'open',"
        " 'rollout 3 (pilot) halted: wave 1: 2 of 10 failed', 1)",
    )
    page = viewer.get("/").get_data(as_text=True)
    assert 'id="total-alerts">2<' in page and "2 critical" in page
    critical = page.split('id="critical-alerts"')[1].split("</section>")[0]
    rows = critical.split("<tr>")[2:]
    assert '<a href="/rollouts/3">rollout 3</a>' in rows[0] and "rollout_halted" in rows[0]
    assert "halted: wave 1" in rows[0] and "TC-1" in rows[1]
