"""The JSON API for support scripts: token auth, filters, pagination, health, on real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlmodel import Session, select

from console import users
from console.db import engine_of
from shared.models import ApiToken, AuditEvent, Customer, Terminal
from tests.fixtures.console import Fleet, sign_in

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
    assert body["delivery"] == {
        "numbered_up_to": None, "gaps_found": 0, "missing": 0, "recovered": 0, "lost": 0,
        "still_open": 0,
    }  # fmt: skip
    status, body = api("/api/v1/terminals/TC-9999")
    assert status == 404
    assert body == {"error": "not_found", "message": "no terminal with serial 'TC-9999'"}


def test_healthz_answers_without_sign_in(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}


# -- remote commands -------------------------------------------------------------------


Call = Callable[..., tuple[int, Any]]


@pytest.fixture
def token_of(console_app: Flask, make_user: Callable[..., str]) -> Callable[[str], str]:
    """A bearer token named '<role>-script' of a new user '<role>-bot'."""

    def make(role: str) -> str:
        make_user(f"{role}-bot", role)
        with Session(engine_of(console_app)) as session:
            account = users.get_user_by_name(session, f"{role}-bot")
            assert account is not None
            return users.create_api_token(session, account, f"{role}-script")

    return make


@pytest.fixture
def as_role(client: FlaskClient, token_of: Callable[[str], str]) -> Callable[[str], Call]:
    """``as_role("operator")(method, path, body)``: a JSON call with that role's token."""

    def caller(role: str) -> Call:
        token = token_of(role)

        def call(method: str, path: str, body: Any = None, raw: bytes | None = None) -> Any:
            headers = {"Authorization": f"Bearer {token}"}
            if raw is not None:
                response = client.open(path, method=method, data=raw, headers=headers)
            elif body is not None:
                response = client.open(path, method=method, json=body, headers=headers)
            else:
                response = client.open(path, method=method, headers=headers)
            return response.status_code, response.get_json()

        return call

    return caller


@pytest.fixture
def operator(as_role: Callable[[str], Call], fleet: Fleet) -> Call:
    fleet.add_terminal("TC-1", customer="Acme")
    return as_role("operator")


def test_send_a_command_and_read_it_back(operator: Call, console_app: Flask) -> None:
    status, body = operator(
        "POST", "/api/v1/terminals/TC-1/commands",
        {"name": "fetch_logs", "args": {"lines": 20}, "expires_in_s": 600},
    )  # fmt: skip
    assert status == 201, body
    assert body["state"] == "queued" and body["serial"] == "TC-1"
    assert body["args"] == {"lines": 20} and body["attempts"] == 0
    assert (body["requested_by"], body["requester_kind"], body["token_name"]) == (
        "operator-bot", "token", "operator-script",
    )  # fmt: skip
    assert operator("GET", f"/api/v1/commands/{body['id']}") == (200, body)
    with Session(engine_of(console_app)) as session:
        audit = session.exec(select(AuditEvent).where(AuditEvent.action == "command.queued")).one()
    assert audit.actor == "operator-bot" and audit.remote_addr == "127.0.0.1"
    assert audit.detail is not None and audit.detail["token"] == "operator-script"


def test_history_is_newest_first_with_a_limit(operator: Call) -> None:
    ids = [
        operator("POST", "/api/v1/terminals/TC-1/commands", {"name": "ping"})[1]["id"]
        for _ in range(3)
    ]
    status, body = operator("GET", "/api/v1/terminals/TC-1/commands?limit=2")
    assert status == 200 and body["count"] == 2 and body["limit"] == 2
    assert [c["id"] for c in body["commands"]] == ids[::-1][:2]
    status, body = operator("GET", "/api/v1/terminals/TC-1/commands?name=diagnostics")
    assert status == 200 and body["commands"] == []
    for bad in ("limit=0", "limit=501", "limit=many", "name=self_destruct"):
        status, body = operator("GET", f"/api/v1/terminals/TC-1/commands?{bad}")
        assert status == 400 and body["error"] == "bad_request", bad
    assert operator("GET", "/api/v1/terminals/NOPE/commands")[0] == 404


def test_cancel_and_its_conflicts(operator: Call, fleet: Fleet) -> None:
    _, queued = operator("POST", "/api/v1/terminals/TC-1/commands", {"name": "reboot"})
    status, body = operator("POST", f"/api/v1/commands/{queued['id']}/cancel")
    assert status == 200 and body["state"] == "cancelled"
    assert body["cancelled_by"] == "operator-bot"
    status, body = operator("POST", f"/api/v1/commands/{queued['id']}/cancel")
    assert status == 409 and body["error"] == "conflict" and "already cancelled" in body["message"]
    _, sent = operator("POST", "/api/v1/terminals/TC-1/commands", {"name": "ping"})
    fleet.finish_command(sent["id"], "sent")
    status, body = operator("POST", f"/api/v1/commands/{sent['id']}/cancel")
    assert status == 409 and "cannot be called back" in body["message"]
    status, body = operator("POST", "/api/v1/commands/no-such-id/cancel")
    assert status == 404 and body["error"] == "not_found"


@pytest.mark.parametrize(
    ("role", "name", "expected"),
    [
        ("viewer", "ping", 403),
        ("support", "ping", 201),
        ("support", "diagnostics", 201),
        ("support", "fetch_logs", 201),
        ("support", "reboot", 403),
        ("support", "set_config", 403),
        ("operator", "reboot", 201),
        ("operator", "reset_usb", 201),
        ("admin", "restart_agent", 201),
    ],
)
def test_roles_per_command(
    as_role: Callable[[str], Call], fleet: Fleet, role: str, name: str, expected: int
) -> None:
    fleet.add_terminal("TC-1")
    status, body = as_role(role)("POST", "/api/v1/terminals/TC-1/commands", {"name": name})
    assert status == expected, body
    if expected == 403:
        assert (
            body["error"] == "forbidden" and f"{role} role may not send {name}" in body["message"]
        )


def test_only_the_sender_or_an_admin_cancels(as_role: Callable[[str], Call], fleet: Fleet) -> None:
    fleet.add_terminal("TC-1")
    support, other, admin, viewer = (as_role(r) for r in ("support", "operator", "admin", "viewer"))
    _, mine = support("POST", "/api/v1/terminals/TC-1/commands", {"name": "ping"})
    for caller in (other, viewer):
        status, body = caller("POST", f"/api/v1/commands/{mine['id']}/cancel")
        assert status == 403 and "only its own" in body["message"]
        assert caller("GET", f"/api/v1/commands/{mine['id']}")[0] == 200  # may read it
    status, body = admin("POST", f"/api/v1/commands/{mine['id']}/cancel")
    assert status == 200 and body["cancelled_by"] == "admin-bot"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "self_destruct"}, "unknown command 'self_destruct'"),
        ({"name": "ping", "args": {"x": 1}}, "bad argument x"),
        ({"name": "fetch_logs", "args": {"lines": 0}}, "bad argument lines"),
        ({"name": "fetch_logs", "args": {"lines": 10**40}}, "bad argument lines"),
        ({"name": "fetch_logs", "args": {"lines": "many"}}, "bad argument lines"),
        ({"name": "set_config", "args": {}}, "set_config needs at least one"),
        ({"name": "set_config", "args": {"receipt_header": "x" * 100_000}}, "receipt_header"),
        ({"name": "set_config", "args": {"timezone": "../etc"}}, "timezone"),
        ({"name": "ping", "expires_in_s": 0}, "expires_in_s must be between 1 and"),
        ({"name": "ping", "expires_in_s": 1e12}, "expires_in_s must be between 1 and"),
        ({"name": "ping", "expires_in_s": -5}, "expires_in_s must be between 1 and"),
        ({"name": "ping", "expires_in_s": 10**400}, "expires_in_s is far too large"),
        ({"name": "ping", "expires_in_s": "soon"}, "expires_in_s must be a number"),
        ({"name": "ping", "expires_in_s": True}, "expires_in_s must be a number"),
        ({"name": 7}, "name must name a command"),
        ({}, "name must name a command"),
        ({"name": "ping", "args": [1]}, "args must be a JSON object"),
        ({"name": "ping", "expires": 60}, "unknown field 'expires'"),
        ({"name": "ping\u0000"}, "NUL"),
        ({"name": "set_config", "args": {"receipt_header": "a\u0000b"}}, "NUL"),
        ([1, 2], "must be a JSON object, not list"),
        ("ping", "must be a JSON object, not str"),
    ],
)
def test_bad_requests_are_400_with_the_reason(operator: Call, body: Any, message: str) -> None:
    status, answer = operator("POST", "/api/v1/terminals/TC-1/commands", body)
    assert status == 400, answer
    assert answer["error"] == "bad_request" and message in answer["message"]
    assert operator("GET", "/api/v1/terminals/TC-1/commands")[1]["commands"] == []


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"{", b'{"name": "ping",}', b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000,
     b"NaN", b'{"name": "ping", "expires_in_s": NaN}',
     b'{"name": "ping", "expires_in_s": Infinity}'],
)  # fmt: skip
def test_non_json_bodies_are_400(operator: Call, raw: bytes) -> None:
    status, body = operator("POST", "/api/v1/terminals/TC-1/commands", raw=raw)
    assert status == 400 and body["error"] == "bad_request", body


def test_a_body_over_a_megabyte_is_413_json(operator: Call) -> None:
    big = {"name": "set_config", "args": {"receipt_header": "x" * 2_000_000}}
    status, body = operator("POST", "/api/v1/terminals/TC-1/commands", big)
    assert status == 413 and body["error"] == "request_entity_too_large"


@pytest.mark.parametrize(
    "serial", ["NOPE", "Терминал-1", "TC-1\u0000", "%00", "x" * 300, "TC 1", "😀"]
)
def test_unknown_or_impossible_serials_are_404(operator: Call, serial: str) -> None:
    from urllib.parse import quote

    path = f"/api/v1/terminals/{quote(serial, safe='')}/commands"
    status, body = operator("POST", path, {"name": "ping"})
    assert status == 404 and body["error"] == "not_found", body
    assert operator("GET", path)[0] == 404


@pytest.mark.parametrize("command_id", ["nope", "a" * 65, "%00", "x%00y", "..%2F..", "😀"])
def test_unknown_command_ids_are_404(operator: Call, command_id: str) -> None:
    assert operator("GET", f"/api/v1/commands/{command_id}")[0] == 404
    assert operator("POST", f"/api/v1/commands/{command_id}/cancel")[0] == 404


def test_a_decommissioned_terminal_takes_no_command(operator: Call, fleet: Fleet) -> None:
    fleet.add_terminal("OLD-1", status="decommissioned")
    status, body = operator("POST", "/api/v1/terminals/OLD-1/commands", {"name": "ping"})
    assert status == 400 and "decommissioned" in body["message"]


def test_command_endpoints_need_a_token(client: FlaskClient, fleet: Fleet) -> None:
    fleet.add_terminal("TC-1")
    for method, path in [
        ("POST", "/api/v1/terminals/TC-1/commands"),
        ("GET", "/api/v1/terminals/TC-1/commands"),
        ("GET", "/api/v1/commands/abc"),
        ("POST", "/api/v1/commands/abc/cancel"),
        ("POST", "/api/v1/commands/bulk"),
        ("GET", "/api/v1/commands/bulk/1"),
        ("POST", "/api/v1/commands/bulk/1/cancel"),
    ]:
        response = client.open(path, method=method, json={"name": "ping"})
        assert response.status_code == 401, path
        assert response.get_json()["error"] == "unauthorized"


# -- bulk --------------------------------------------------------------------------------


@pytest.fixture
def bulk_fleet(fleet: Fleet) -> Fleet:
    for number in range(4):
        fleet.add_terminal(f"A-{number}", customer="Acme", store="S1" if number < 2 else "S2")
    fleet.add_terminal("A-OLD", customer="Acme", status="decommissioned")
    fleet.add_terminal("B-1", customer="Bolt", status="offline", firmware="2.3.9")
    return fleet


def test_bulk_dry_run_counts_and_queues_nothing(
    as_role: Callable[[str], Call], bulk_fleet: Fleet
) -> None:
    operator = as_role("operator")
    status, body = operator(
        "POST", "/api/v1/commands/bulk",
        {"name": "reboot", "selection": {"customer": "Acme"}, "dry_run": True},
    )  # fmt: skip
    assert status == 200, body
    assert body["dry_run"] is True and body["count"] == 4 and body["rate_per_s"] == 5.0
    assert body["selection"] == {"customer": "Acme"}
    assert operator("GET", "/api/v1/terminals/A-0/commands")[1]["count"] == 0
    for selection, count in [
        ({}, 5),
        ({"store": "S1"}, 2),
        ({"store": "Store S2"}, 2),
        ({"firmware": "2.3.9"}, 1),
        ({"status": "offline"}, 1),
        ({"search": "a-"}, 4),
        ({"customer": "Nobody"}, 0),
    ]:
        status, body = operator(
            "POST", "/api/v1/commands/bulk",
            {"name": "ping", "selection": selection, "dry_run": True},
        )  # fmt: skip
        assert (status, body["count"]) == (200, count), selection
    # A dry run is refused for what a real one would be.
    status, body = as_role("support")(
        "POST", "/api/v1/commands/bulk", {"name": "reboot", "selection": {}, "dry_run": True}
    )
    assert status == 403


def test_bulk_send_progress_and_cancel(
    as_role: Callable[[str], Call], bulk_fleet: Fleet, console_app: Flask
) -> None:
    operator = as_role("operator")
    status, bulk = operator(
        "POST", "/api/v1/commands/bulk",
        {"name": "reboot", "selection": {"customer": "Acme"}, "rate_per_s": 0.5},
    )  # fmt: skip
    assert status == 201, bulk
    assert bulk["total"] == 4 and bulk["counts"] == {"queued": 4} and bulk["rate_per_s"] == 0.5
    assert bulk["summary"] == "customer Acme: 4 terminals"
    assert operator("GET", f"/api/v1/commands/bulk/{bulk['id']}") == (200, bulk)
    [command] = operator("GET", "/api/v1/terminals/A-0/commands")[1]["commands"]
    assert command["bulk_id"] == bulk["id"] and command["token_name"] == "operator-script"
    status, body = as_role("support")("POST", f"/api/v1/commands/bulk/{bulk['id']}/cancel")
    assert status == 403
    status, body = operator("POST", f"/api/v1/commands/bulk/{bulk['id']}/cancel")
    assert status == 200 and body["counts"] == {"cancelled": 4} and body["cancelled_at"]
    with Session(engine_of(console_app)) as session:
        actions = set(session.exec(select(AuditEvent.action)).all())
    assert {"command.bulk", "command.bulk_cancelled"} <= actions


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"name": "ping", "selection": {}, "rate_per_s": 0}, 400, "rate must be between"),
        ({"name": "ping", "selection": {}, "rate_per_s": 1e9}, 400, "rate must be between"),
        ({"name": "ping", "selection": {}, "rate_per_s": "fast"}, 400, "rate_per_s must be"),
        ({"name": "ping"}, 400, "selection must be a JSON object"),
        ({"name": "ping", "selection": {"region": "x"}}, 400, "unknown selection field"),
        ({"name": "ping", "selection": {"status": "asleep"}}, 400, "selection.status"),
        ({"name": "ping", "selection": {"customer": 5}}, 400, "selection.customer"),
        ({"name": "ping", "selection": {"customer": "Nobody"}}, 400, "has no terminals"),
        ({"name": "ping", "selection": {}, "dry_run": "yes"}, 400, "dry_run"),
        ({"name": "ping", "selection": {}, "expires_in_s": 0}, 400, "expires_in_s"),
        ({"name": "nuke", "selection": {}}, 400, "unknown command"),
    ],
)
def test_bulk_refusals(
    as_role: Callable[[str], Call], bulk_fleet: Fleet, body: dict, status: int, message: str
) -> None:
    got, answer = as_role("operator")("POST", "/api/v1/commands/bulk", body)
    assert got == status and message in answer["message"], answer


def test_bulk_by_role_and_unknown_bulks(as_role: Callable[[str], Call], bulk_fleet: Fleet) -> None:
    body = {"name": "ping", "selection": {"customer": "Bolt"}}
    assert as_role("viewer")("POST", "/api/v1/commands/bulk", body)[0] == 403
    assert as_role("support")("POST", "/api/v1/commands/bulk", body)[0] == 201
    admin = as_role("admin")
    for path in ("/api/v1/commands/bulk/999", f"/api/v1/commands/bulk/{2**31 - 1}"):
        assert admin("GET", path)[0] == 404
        assert admin("POST", path + "/cancel")[0] == 404
    assert admin("GET", f"/api/v1/commands/bulk/{2**31}")[0] == 404
    assert admin("GET", "/api/v1/commands/bulk/-1")[0] == 404
