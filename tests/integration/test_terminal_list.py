"""The terminal list on real PostgreSQL: search by serial, store or host; filters;
sorting by any column; everything in the URL; CSV export of the current view."""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlmodel import Session, select

from console.db import engine_of
from shared.models import AuditEvent
from tests.fixtures.console import Fleet, sign_in

pytestmark = pytest.mark.integration


@pytest.fixture
def viewer(client: FlaskClient, make_user: Callable[..., str]) -> FlaskClient:
    make_user("vera", "viewer")
    sign_in(client, "vera")
    return client


@pytest.fixture
def stocked(console_app: Flask, fleet: Fleet) -> Fleet:
    fleet.add_terminal("TC-0001", customer="Acme", store="S01", cpu=10.0, firmware="2.4.1")
    fleet.add_terminal("TC-0002", customer="Acme", store="S02", cpu=90.0, firmware="2.3.9")
    fleet.add_terminal("TC-0003", customer="Bolt", store="B77", cpu=50.0, firmware="2.4.1",
                       status="offline")  # fmt: skip
    fleet.add_terminal("=cmd|' /C calc'!A0", customer="Bolt", store=None, cpu=None)
    with Session(engine_of(console_app)) as session:
        session.execute(
            text(
                "UPDATE terminal SET host_name = 'POS-PC-' || right(serial, 2),"
                " model = CASE WHEN serial = 'TC-0002' THEN 'TC-200X' ELSE model END,"
                " maintenance = (serial = 'TC-0003'), maintenance_note = 'new PIN pad'"
            )
        )
        session.commit()
    return fleet


def serials(page: str) -> list[str]:
    return [html.unescape(chunk.split('"')[0]) for chunk in page.split('data-serial="')[1:]]


def test_search_finds_serial_store_or_host(viewer: FlaskClient, stocked: Fleet) -> None:
    assert serials(viewer.get("/terminals?q=0002").get_data(as_text=True)) == ["TC-0002"]
    assert serials(viewer.get("/terminals?q=b77").get_data(as_text=True)) == ["TC-0003"]
    assert serials(viewer.get("/terminals?q=pos-pc-01").get_data(as_text=True)) == ["TC-0001"]
    assert serials(viewer.get("/terminals?q=%25").get_data(as_text=True)) == []  # literal %


def test_filters_combine_and_stay_in_the_links(viewer: FlaskClient, stocked: Fleet) -> None:
    page = viewer.get("/terminals?firmware=2.4.1&customer=Acme").get_data(as_text=True)
    assert serials(page) == ["TC-0001"]
    assert "firmware=2.4.1" in page.split('id="csv-export"')[1].split(">")[0]
    assert serials(viewer.get("/terminals?model=TC-200X").get_data(as_text=True)) == ["TC-0002"]
    maintenance = viewer.get("/terminals?status=maintenance").get_data(as_text=True)
    assert serials(maintenance) == ["TC-0003"] and 'title="new PIN pad"' in maintenance
    assert "TC-200X" in viewer.get("/terminals").get_data(as_text=True)  # the model box


def test_any_column_sorts_both_ways_with_empty_values_last(
    viewer: FlaskClient, stocked: Fleet
) -> None:
    up = serials(viewer.get("/terminals?sort=cpu").get_data(as_text=True))
    down = serials(viewer.get("/terminals?sort=cpu&dir=desc").get_data(as_text=True))
    assert up[:3] == ["TC-0001", "TC-0003", "TC-0002"]
    assert down[:3] == ["TC-0002", "TC-0003", "TC-0001"]
    assert up[-1] == down[-1] == "=cmd|' /C calc'!A0"  # no CPU figure: last either way
    page = viewer.get("/terminals?sort=cpu").get_data(as_text=True)
    assert 'aria-sort="ascending"' in page and "sort=cpu&amp;dir=desc" in page
    # An unknown sort falls back to problems first, not an error.
    fallback = serials(viewer.get("/terminals?sort=password").get_data(as_text=True))
    assert fallback[0] == "TC-0003"


def test_csv_exports_the_current_view_and_is_audited(
    viewer: FlaskClient, stocked: Fleet, console_app: Flask
) -> None:
    response = viewer.get("/terminals.csv?customer=Bolt&sort=serial")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0][:3] == ["serial", "status", "status_reason"]
    assert [row[0] for row in rows[1:]] == ["'=cmd|' /C calc'!A0", "TC-0003"]
    assert rows[2][12] == "yes"  # maintenance
    with Session(engine_of(console_app)) as session:
        event = session.exec(
            select(AuditEvent).where(AuditEvent.action == "terminals.exported")
        ).one()
    assert event.actor == "vera" and event.detail is not None
    assert event.detail["filter"] == {"customer": "Bolt"}


def test_the_export_needs_a_signed_in_user(client: FlaskClient, stocked: Fleet) -> None:
    assert client.get("/terminals.csv").status_code == 302


def test_ticked_rows_become_a_bulk_selection_of_exactly_those(
    client: FlaskClient, make_user: Callable[..., str], stocked: Fleet
) -> None:
    make_user("otto", "operator")
    sign_in(client, "otto")
    page = client.get("/terminals").get_data(as_text=True)
    assert 'form="bulk-pick" id="pick-TC-0001"' in page and 'id="bulk-pick"' in page
    chosen = client.get("/commands/bulk/new?serial=TC-0001&serial=TC-0003&serial=TC-0001")
    body = chosen.get_data(as_text=True)
    assert chosen.status_code == 200
    assert "2 chosen terminals" in body
    assert body.count('name="serial"') >= 2  # carried on to the next step
    assert 'id="bulk-count">2<' in body


def test_viewers_get_no_tick_boxes(viewer: FlaskClient, stocked: Fleet) -> None:
    page = viewer.get("/terminals").get_data(as_text=True)
    assert 'id="bulk-pick"' not in page and "pick-TC-0001" not in page
