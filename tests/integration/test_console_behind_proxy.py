"""The console behind reverse proxies ([console] proxy_hops), on real PostgreSQL: the
client's address from X-Forwarded-For is the one throttled, allowed and audited; with
no proxies configured the header is a client's claim and changes nothing."""

from __future__ import annotations

import http.client
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask, request
from flask.testing import FlaskClient
from pydantic import SecretStr
from sqlmodel import Session, col, select

from console.db import engine_of
from shared.models import AuditEvent, ConsoleSession
from shared.settings import ConsoleSettings
from tests.fixtures.console import TEST_PASSWORD, csrf_of

pytestmark = pytest.mark.integration

CLIENT = "203.0.113.7"  # the address the proxy saw, what it appends to X-Forwarded-For
PROXY = "127.0.0.1"  # the connection's own address: the test client's, or the proxy's
BEHIND_ONE_PROXY = {"proxy_hops": 1}
NO_PROXY = {"proxy_hops": 0}
FENCED = {"allowed_networks": ("203.0.113.0/24",)}


@pytest.fixture
def console_settings(request: pytest.FixtureRequest) -> ConsoleSettings:
    """The console_app, client and live_console fixtures' settings; a test picks hops
    and the allowlist with indirect parametrisation."""
    chosen: dict[str, Any] = getattr(request, "param", {})
    return ConsoleSettings(
        secret_key=SecretStr("test-secret-key-0123456789abcdef"),
        refresh_s=1,
        login_failures_per_address=3,
        **chosen,
    )


def settings(*parts: dict[str, Any]) -> pytest.MarkDecorator:
    merged: dict[str, Any] = {}
    for part in parts:
        merged.update(part)
    name = f"hops={merged['proxy_hops']}" + ("+allowlist" if "allowed_networks" in merged else "")
    return pytest.mark.parametrize("console_settings", [merged], indirect=True, ids=[name])


def forwarded(value: str) -> dict[str, str]:
    return {"X-Forwarded-For": value}


def failed_sign_in(client: FlaskClient, username: str, xff: str | None) -> int:
    response = client.post(
        "/login",
        data={"username": username, "password": "wrong password!", "csrf_token": csrf_of(client)},
        headers=forwarded(xff) if xff else {},
    )
    return response.status_code


def audited(app: Flask, action: str) -> list[str | None]:
    """The remote_addr of each audit line of ``action``, oldest first."""
    with Session(engine_of(app)) as session:
        rows = session.exec(
            select(AuditEvent.remote_addr)
            .where(AuditEvent.action == action)
            .order_by(col(AuditEvent.id))
        ).all()
    return list(rows)


@settings(BEHIND_ONE_PROXY)
def test_behind_a_proxy_the_forwarded_address_is_audited_throttled_and_kept_with_the_session(
    client: FlaskClient, console_app: Flask, make_user: Callable[..., str]
) -> None:
    make_user("ann")
    # Three wrong passwords for three usernames, all through the same proxy connection.
    assert [failed_sign_in(client, f"user{n}", CLIENT) for n in range(3)] == [401] * 3
    assert audited(console_app, "login.failed") == [CLIENT] * 3
    # The client's address is now locked, even with the right password...
    locked = client.post(
        "/login",
        data={"username": "ann", "password": TEST_PASSWORD, "csrf_token": csrf_of(client)},
        headers=forwarded(CLIENT),
    )
    assert locked.status_code == 429
    assert "from your address" in locked.get_data(as_text=True)
    assert audited(console_app, "login.throttled") == [CLIENT]
    # ...but another client behind the same proxy is not: the proxy is not counted.
    other = client.post(
        "/login",
        data={"username": "ann", "password": TEST_PASSWORD, "csrf_token": csrf_of(client)},
        headers=forwarded("198.51.100.20"),
    )
    assert other.status_code == 302
    assert audited(console_app, "login") == ["198.51.100.20"]
    with Session(engine_of(console_app)) as session:
        assert session.exec(select(ConsoleSession.remote_addr)).all() == ["198.51.100.20"]


@settings(NO_PROXY)
def test_without_proxy_hops_a_forwarded_address_is_ignored(
    client: FlaskClient, console_app: Flask
) -> None:
    # A client that names a fresh address on every attempt still counts as itself.
    codes = [failed_sign_in(client, f"user{n}", f"203.0.113.{n}") for n in range(4)]
    assert codes == [401, 401, 401, 429]
    assert audited(console_app, "login.failed") == [PROXY] * 3
    assert audited(console_app, "login.throttled") == [PROXY]


@settings(BEHIND_ONE_PROXY)
def test_in_a_chain_only_the_value_the_trusted_proxy_appended_counts(
    client: FlaskClient, console_app: Flask
) -> None:
    # The client sent "X-Forwarded-For: 6.6.6.6"; the proxy appended what it saw.
    assert failed_sign_in(client, "ann", f"6.6.6.6, {CLIENT}") == 401
    assert failed_sign_in(client, "bob", f"198.51.100.1,6.6.6.6,  {CLIENT}") == 401
    assert audited(console_app, "login.failed") == [CLIENT, CLIENT]


@settings(BEHIND_ONE_PROXY, FENCED)
def test_behind_a_proxy_the_allowlist_judges_the_forwarded_address(
    client: FlaskClient, console_app: Flask
) -> None:
    assert client.get("/login", headers=forwarded(CLIENT)).status_code == 200
    assert client.get("/login", headers=forwarded(f"6.6.6.6, {CLIENT}")).status_code == 200
    # The client cannot put an allowed address in front of the one the proxy appended.
    refused = client.get("/login", headers=forwarded(f"{CLIENT}, 198.51.100.9"))
    assert refused.status_code == 403
    assert "Your address may not use this console." in refused.get_data(as_text=True)
    # A request without the header is the proxy's own (or one that bypassed it): refused.
    assert client.get("/login").status_code == 403
    assert client.get("/login", headers=forwarded("not-an-address")).status_code == 403
    assert audited(console_app, "access.refused") == ["198.51.100.9", PROXY, "not-an-address"]


@settings(NO_PROXY, FENCED)
def test_without_proxy_hops_a_forwarded_allowed_address_does_not_pass_the_allowlist(
    client: FlaskClient, console_app: Flask
) -> None:
    refused = client.get("/login", headers=forwarded(CLIENT))
    assert refused.status_code == 403
    assert audited(console_app, "access.refused") == [PROXY]


def _probe(app: Flask) -> None:
    """A route that shows what the app believes about the request: only for this test."""

    def seen() -> dict[str, str | None]:
        return {"addr": request.remote_addr, "scheme": request.scheme, "host": request.host}

    app.add_url_rule("/_test/seen", "test_seen", seen)


@settings(BEHIND_ONE_PROXY)
def test_behind_a_proxy_the_scheme_is_the_proxys_and_the_host_is_not_taken_from_a_header(
    client: FlaskClient, console_app: Flask
) -> None:
    _probe(console_app)
    headers = {
        "X-Forwarded-For": CLIENT,
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.example",
    }
    seen = client.get("/_test/seen", base_url="http://tms.example.net", headers=headers).get_json()
    assert seen == {"addr": CLIENT, "scheme": "https", "host": "tms.example.net"}


@settings(NO_PROXY)
def test_without_proxy_hops_the_scheme_header_is_ignored_too(
    client: FlaskClient, console_app: Flask
) -> None:
    _probe(console_app)
    headers = {"X-Forwarded-For": CLIENT, "X-Forwarded-Proto": "https"}
    seen = client.get("/_test/seen", headers=headers).get_json()
    assert seen["addr"] == PROXY and seen["scheme"] == "http"


def get_over_http(base_url: str, path: str, headers: dict[str, str]) -> int:
    """A GET to the console served by waitress, over a real socket (as Caddy sends it)."""
    parts = urlsplit(base_url)
    assert parts.hostname is not None and parts.port is not None
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


@settings(BEHIND_ONE_PROXY, FENCED)
def test_served_by_waitress_behind_a_proxy_the_forwarded_address_reaches_the_app(
    live_console: str, console_app: Flask
) -> None:
    # waitress deletes X-Forwarded-* before the app unless the server is told otherwise.
    assert get_over_http(live_console, "/login", forwarded(CLIENT)) == 200
    assert get_over_http(live_console, "/login", forwarded(f"{CLIENT}, 6.6.6.6")) == 403
    assert audited(console_app, "access.refused") == ["6.6.6.6"]


@settings(NO_PROXY, FENCED)
def test_served_by_waitress_without_proxy_hops_the_header_is_dropped(
    live_console: str, console_app: Flask
) -> None:
    assert get_over_http(live_console, "/login", forwarded(CLIENT)) == 403
    assert audited(console_app, "access.refused") == [PROXY]
