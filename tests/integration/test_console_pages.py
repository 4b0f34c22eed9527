"""The terminal screens as HTML: list with counts, live partial, filters, detail, error pages."""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from flask.testing import FlaskClient

from tests.fixtures.console import Fleet, sign_in

pytestmark = pytest.mark.integration


@pytest.fixture
def viewer(client: FlaskClient, make_user: Callable[..., str]) -> FlaskClient:
    make_user("vera", "viewer")
    sign_in(client, "vera")
    return client


def test_dashboard_lists_terminals_with_status_reason_firmware_heartbeat(
    viewer: FlaskClient, fleet: Fleet
) -> None:
    fleet.add_terminal("TC-0001", status="online", firmware="2.4.1")
    fleet.add_terminal(
        "TC-0002",
        status="offline",
        reason="heartbeat timeout",
        firmware="2.3.9",
        heartbeat=datetime.now(UTC) - timedelta(minutes=7, seconds=30),  # 30 s to render
    )
    page = viewer.get("/terminals").get_data(as_text=True)
    assert "TC-0001" in page and "TC-0002" in page
    assert "heartbeat timeout" in page and "2.3.9" in page and "7 min ago" in page
    assert 'id="count-online">1<' in page and 'id="count-offline">1<' in page
    assert 'data-refresh-s="1"' in page
    # Problems first: the offline terminal is listed before the online one.
    assert page.index("TC-0002") < page.index("TC-0001")


def test_partial_reflects_changes(viewer: FlaskClient, fleet: Fleet) -> None:
    fleet.add_terminal("TC-0001", status="online")
    assert "badge-online" in viewer.get("/terminals/fleet").get_data(as_text=True)
    fleet.set_status("TC-0001", "error", "PIN pad not responding")
    partial = viewer.get("/terminals/fleet").get_data(as_text=True)
    assert "badge-error" in partial and "PIN pad not responding" in partial
    assert "<html" not in partial  # a fragment, not a page


def test_status_and_customer_filters(viewer: FlaskClient, fleet: Fleet) -> None:
    fleet.add_terminal("A-1", customer="Acme", status="online")
    fleet.add_terminal("A-2", customer="Acme", status="error", reason="tamper")
    fleet.add_terminal("B-1", customer="Bolt", status="error", reason="tamper")
    page = viewer.get("/terminals?status=error&customer=Acme").get_data(as_text=True)
    assert "A-2" in page and "A-1" not in page and "B-1" not in page
    page = viewer.get("/terminals/fleet?q=b-").get_data(as_text=True)
    assert "B-1" in page and "A-2" not in page


def test_terminal_detail_shows_history(viewer: FlaskClient, fleet: Fleet) -> None:
    fleet.add_terminal("TC-0001", status="online")
    fleet.set_status("TC-0001", "offline", "last will")
    page = viewer.get("/terminals/TC-0001").get_data(as_text=True)
    assert "TC-0001" in page and "last will" in page and "Status history" in page


def test_terminal_detail_shows_its_message_delivery(viewer: FlaskClient, fleet: Fleet) -> None:
    fleet.add_terminal("TC-0001", status="online")
    page = viewer.get("/terminals/TC-0001").get_data(as_text=True)
    assert "No numbered message yet" in page
    with fleet.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE terminal SET seq_stream = 'abc', seq_high = 5120, seq_gaps_found = 3,"
            " seq_missing = 40, seq_recovered = 31, seq_lost = 2 WHERE serial = 'TC-0001'"
        )
    page = viewer.get("/terminals/TC-0001").get_data(as_text=True)
    delivery = page[page.index('id="delivery"') :]
    for fact in ("#5120", "3 (40 messages)", "<dd>31</dd>", ">2</dd>", ">7</dd>"):
        assert fact in delivery, fact


def test_unknown_terminal_is_a_404_page(viewer: FlaskClient) -> None:
    response = viewer.get("/terminals/NOPE")
    assert response.status_code == 404
    assert "There is no terminal with serial NOPE." in response.get_data(as_text=True)


def test_empty_fleet_says_so(viewer: FlaskClient) -> None:
    assert "No terminals match" in viewer.get("/terminals").get_data(as_text=True)


def test_static_assets_are_served_locally(viewer: FlaskClient) -> None:
    page = viewer.get("/terminals").get_data(as_text=True)
    assert "http://" not in page and "https://" not in page
    assert viewer.get("/static/console.css").status_code == 200
    assert viewer.get("/static/console.js").status_code == 200


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/terminals?q=%00", "query parameter 'q' contains a NUL byte"),
        ("/terminals?customer=%00", "query parameter 'customer' contains a NUL byte"),
        ("/terminals/fleet?q=a%00b", "query parameter 'q' contains a NUL byte"),
        ("/dead-letters?reason=%00", "query parameter 'reason' contains a NUL byte"),
        ("/alerts?x%00=1", "contains a NUL byte"),
        ("/terminals?q=" + "x" * 1001, "query parameter 'q' is longer than 1000 characters"),
    ],
)
def test_bad_query_strings_get_a_400_with_the_reason(
    client: FlaskClient, make_user: Callable[..., str], path: str, says: str
) -> None:
    make_user("ada", "admin")
    sign_in(client, "ada")
    response = client.get(path)
    assert response.status_code == 400
    assert says in html.unescape(response.get_data(as_text=True))


def test_a_nul_byte_in_a_form_or_the_api_query_is_a_400(
    client: FlaskClient, make_user: Callable[..., str]
) -> None:
    response = client.post("/login", data={"username": "a\x00", "password": "x"})
    assert response.status_code == 400
    assert "form field 'username' contains a NUL byte" in html.unescape(
        response.get_data(as_text=True)
    )
    api = client.get("/api/v1/terminals?customer=%00", headers={"Authorization": "Bearer x"})
    assert api.status_code == 400
    assert api.get_json() == {
        "error": "bad_request",
        "message": "query parameter 'customer' contains a NUL byte",
    }
