"""The JSON API for support scripts: token auth, filters, pagination, health, on real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlmodel import Session, select

from console import users
from console.db import engine_of
from shared.models import ApiToken, Customer, Terminal
from tests.fixtures.browser import Fleet, sign_in

pytestmark = pytest.mark.integration


@pytest.fixture
def token(console_app: Flask, make_user: Callable[..., str]) -> str:
    make_user("script-owner", "support")
    with Session(engine_of(console_app)) as session:
        account = users.get_user_by_name(session, "script-owner")
        assert account is not None
        return users.create_api_token(session, account, "nightly-report")


@pytest.fixture
def api(client: FlaskClient, token: str) -> Iterator[Callable[[str], tuple[int, dict]]]:
    def get(path: str) -> tuple[int, dict]:
        response = client.get(path, headers={"Authorization": f"Bearer {token}"})
        return response.status_code, response.get_json()

    yield get


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Basic dXNlcjpwYXNz", "Bearer tms_not-a-real-token", "Bearer garbage"],
)
def test_missing_or_bad_token_is_401_json(client: FlaskClient, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = client.get("/api/v1/terminals", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    body = response.get_json()
    assert body["error"] == "unauthorized" and "token" in body["message"]


def test_revoked_token_is_refused(client: FlaskClient, console_app: Flask, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/terminals", headers=headers).status_code == 200
    with Session(engine_of(console_app)) as session:
        account = users.get_user_by_name(session, "script-owner")
        assert account is not None
        assert users.revoke_api_tokens(session, account, "nightly-report") == 1
    assert client.get("/api/v1/terminals", headers=headers).status_code == 401


def test_token_use_is_stamped_and_only_the_hash_is_stored(
    api: Callable[[str], tuple[int, dict]], console_app: Flask, token: str
) -> None:
    assert api("/api/v1/terminals")[0] == 200
    with Session(engine_of(console_app)) as session:
        row = session.exec(select(ApiToken)).one()
    assert row.last_used_at is not None
    assert token not in row.token_hash and len(row.token_hash) == 64


def test_a_browser_session_is_not_an_api_credential(
    client: FlaskClient, make_user: Callable[..., str]
) -> None:
    make_user("ann", "admin")
    sign_in(client, "ann")
    assert client.get("/api/v1/terminals").status_code == 401


def test_terminal_list_shape(api: Callable[[str], tuple[int, dict]], fleet: Fleet) -> None:
    beat = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
    fleet.add_terminal("TC-0001", status="error", reason="printer jam", heartbeat=beat, cpu=93.5)
    status, body = api("/api/v1/terminals")
    assert status == 200
    assert body["count"] == 1 and body["total"] == 1
    assert body["terminals"] == [
        {
            "serial": "TC-0001",
            "customer": "Demo Retail",
            "store": "Store S001",
            "status": "error",
            "status_reason": "printer jam",
            "firmware": "2.4.1",
            "last_heartbeat_at": "2026-03-01T08:30:00+00:00",
            "cpu": 93.5,
            "memory": 40.0,
            "disk": 55.0,
        }
    ]


def test_filters_by_status_and_customer(
    api: Callable[[str], tuple[int, dict]], fleet: Fleet
) -> None:
    fleet.add_terminal("A-1", customer="Acme", status="online")
    fleet.add_terminal("A-2", customer="Acme", status="offline", reason="last will")
    fleet.add_terminal("B-1", customer="Bolt", status="offline", reason="heartbeat timeout")

    def serials(path: str) -> list[str]:
        status, body = api(path)
        assert status == 200
        return [terminal["serial"] for terminal in body["terminals"]]

    assert serials("/api/v1/terminals?status=offline") == ["A-2", "B-1"]
    assert serials("/api/v1/terminals?customer=Acme") == ["A-1", "A-2"]
    assert serials("/api/v1/terminals?customer=Acme&status=offline") == ["A-2"]
    assert serials("/api/v1/terminals?customer=Nobody") == []


def test_bad_filter_is_a_400_that_says_why(api: Callable[[str], tuple[int, dict]]) -> None:
    status, body = api("/api/v1/terminals?status=sleeping")
    assert status == 400
    assert body["error"] == "bad_request" and "status must be one of" in body["message"]
    status, body = api("/api/v1/terminals?limit=1001")
    assert status == 400 and "between 1 and 1000" in body["message"]


def test_pagination(api: Callable[[str], tuple[int, dict]], console_app: Flask) -> None:
    with Session(engine_of(console_app)) as session:
        customer = Customer(name="Big Chain")
        session.add(customer)
        session.flush()
        assert customer.id is not None
        session.add_all(
            Terminal(serial=f"TC-{number:04d}", customer_id=customer.id) for number in range(105)
        )
        session.commit()
    _, body = api("/api/v1/terminals")
    assert (body["count"], body["total"], body["limit"]) == (100, 105, 100)
    assert body["terminals"][0]["serial"] == "TC-0000"
    _, body = api("/api/v1/terminals?limit=10&offset=100")
    assert [t["serial"] for t in body["terminals"]] == [f"TC-{n:04d}" for n in range(100, 105)]
    assert body["count"] == 5
    _, body = api("/api/v1/terminals?limit=1000")
    assert body["count"] == 105


def test_single_terminal(api: Callable[[str], tuple[int, dict]], fleet: Fleet) -> None:
    fleet.add_terminal("TC-0042", store=None, heartbeat=None, firmware=None)
    status, body = api("/api/v1/terminals/TC-0042")
    assert status == 200
    assert body["serial"] == "TC-0042" and body["store"] is None and body["firmware"] is None
    status, body = api("/api/v1/terminals/TC-9999")
    assert status == 404
    assert body == {"error": "not_found", "message": "no terminal with serial 'TC-9999'"}


def test_healthz_answers_without_sign_in(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}
