"""One terminal's page on real PostgreSQL: resource charts over 24 h / 7 d / 30 d, times
in the store's time zone, maintenance, and the audit trail of the terminal."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlmodel import Session

from console.db import engine_of
from tests.fixtures.console import Fleet, csrf_of, sign_in

pytestmark = pytest.mark.integration


def sql(app: Flask, statement: str, **params: object) -> None:
    with Session(engine_of(app)) as session:
        session.execute(text(statement), params)
        session.commit()


@pytest.fixture
def terminal(console_app: Flask, fleet: Fleet) -> str:
    fleet.add_terminal("TC-1", customer="Acme", store="S01")
    sql(console_app, "UPDATE store SET timezone = 'Europe/Berlin'")
    # A day of heartbeats every 5 minutes at 30 % CPU; a month of hourly rollups at 60 %.
    sql(
        console_app,
        "INSERT INTO telemetry (terminal_id, message_id, ts, device_status, cpu_pct,"
        " memory_pct, disk_pct) SELECT t.id, 'm' || n, now() - make_interval(mins => n * 5),"
        " 'ok', 30, 40, 50 FROM terminal t, generate_series(0, 287) n",
    )
    sql(
        console_app,
        "INSERT INTO telemetry_hourly (terminal_id, hour, samples, error_samples, cpu_avg,"
        " memory_avg, disk_avg) SELECT t.id, date_trunc('hour', now()) - make_interval("
        "hours => n), 12, 0, 60, 70, 80 FROM terminal t, generate_series(1, 720) n",
    )
    return "TC-1"


def chart(page: str, name: str) -> str:
    return page.split(f'id="chart-{name}"')[1].split("</svg>")[0]


def test_charts_come_from_heartbeats_for_a_day_and_rollups_beyond(
    client: FlaskClient, make_user: Callable[..., str], terminal: str
) -> None:
    make_user("vera", "viewer")
    sign_in(client, "vera")
    day = client.get(f"/terminals/{terminal}").get_data(as_text=True)
    for name in ("cpu", "memory", "disk", "heartbeats"):
        assert '<path d="M ' in chart(day, name), name
    assert 'aria-current="true">24h<' in day
    # 30 % CPU on a 0-100 axis: every point at the same height, 70 % of the way down.
    line = chart(day, "cpu").split('d="M ')[2].split('"')[0]
    heights = {point.split(" ")[1] for point in line.split(" L ")}
    assert heights == {"99.0"}  # top 8 px + 130 px plot * (1 - 0.30)
    month = client.get(f"/terminals/{terminal}?period=30d").get_data(as_text=True)
    assert 'aria-current="true">30d<' in month and '<path d="M ' in chart(month, "cpu")
    assert chart(month, "cpu") != chart(day, "cpu")
    odd = client.get(f"/terminals/{terminal}?period=forever").get_data(as_text=True)
    assert 'aria-current="true">24h<' in odd


def test_times_are_in_the_stores_zone_with_utc_on_hover(
    client: FlaskClient, make_user: Callable[..., str], terminal: str, console_app: Flask
) -> None:
    make_user("vera", "viewer")
    sign_in(client, "vera")
    sql(console_app, "UPDATE terminal SET installed_at = '2026-07-01 08:00+00'")
    page = client.get(f"/terminals/{terminal}").get_data(as_text=True)
    assert "times in Europe/Berlin" in page
    assert 'title="2026-07-01 08:00:00 UTC">2026-07-01 10:00 CEST<' in page
    sql(console_app, "UPDATE store SET timezone = 'Mars/Olympus'")
    page = client.get(f"/terminals/{terminal}").get_data(as_text=True)
    assert ">2026-07-01 08:00:00 UTC<" in page  # an unknown zone falls back to UTC


def test_operators_put_a_terminal_under_maintenance_and_it_is_audited(
    client: FlaskClient, make_user: Callable[..., str], terminal: str
) -> None:
    make_user("otto", "operator")
    sign_in(client, "otto")
    response = client.post(
        f"/terminals/{terminal}/maintenance",
        data={"on": "yes", "note": "PIN pad swap", "csrf_token": csrf_of(client)},
    )
    assert response.status_code == 302
    page = client.get(f"/terminals/{terminal}").get_data(as_text=True)
    assert 'id="maintenance-badge"' in page and "yes: PIN pad swap" in page
    audit = page.split('id="terminal-audit"')[1]
    assert "terminal.maintenance_on" in audit and "otto" in audit
    assert "TC-1" in client.get("/terminals?status=maintenance").get_data(as_text=True)
    client.post(
        f"/terminals/{terminal}/maintenance", data={"on": "no", "csrf_token": csrf_of(client)}
    )
    page = client.get(f"/terminals/{terminal}").get_data(as_text=True)
    assert 'id="maintenance-badge"' not in page
    assert "terminal.maintenance_off" in page.split('id="terminal-audit"')[1]
    unknown = client.post("/terminals/NOPE/maintenance", data={"csrf_token": csrf_of(client)})
    assert unknown.status_code == 404


@pytest.mark.parametrize("role", ["viewer", "support"])
def test_viewers_and_support_cannot_change_maintenance(
    client: FlaskClient, make_user: Callable[..., str], terminal: str, role: str
) -> None:
    make_user("ann", role)
    sign_in(client, "ann")
    page = client.get(f"/terminals/{terminal}").get_data(as_text=True)
    assert "Start maintenance" not in page
    response = client.post(
        f"/terminals/{terminal}/maintenance", data={"on": "yes", "csrf_token": csrf_of(client)}
    )
    assert response.status_code == 403
    assert 'id="maintenance-badge"' not in client.get(f"/terminals/{terminal}").get_data(
        as_text=True
    )


def test_the_terminals_alerts_open_ones_first(
    client: FlaskClient, make_user: Callable[..., str], terminal: str, console_app: Flask
) -> None:
    make_user("vera", "viewer")
    sign_in(client, "vera")
    for kind, status, minutes in (("offline", "resolved", 5), ("high_cpu", "open", 60)):
        sql(
            console_app,
            "INSERT INTO alert (scope, kind, severity, status, message, count, terminal_id,"
            " customer_id, raised_at, resolved_at) SELECT 'terminal:' || id, :kind, 'warning',"
            " :status, 'because', 1, id, customer_id, now() - make_interval(mins => :m),"
            " CASE WHEN CAST(:status AS varchar) = 'resolved' THEN now() END FROM terminal",
            kind=kind, status=status, m=minutes,
        )  # fmt: skip
    panel = client.get(f"/terminals/{terminal}").get_data(as_text=True)
    panel = panel.split('id="terminal-alerts"')[1].split("</section>")[0]
    assert panel.index("high_cpu") < panel.index("offline")  # open first, though older
    assert "q=TC-1" in panel
