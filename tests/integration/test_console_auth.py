"""Sign-in, sign-out, CSRF, cookies, the role decorator and the audit trail, on real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Blueprint, Flask
from flask.testing import FlaskClient
from sqlmodel import Session, col, select

from console.access import requires_role
from console.db import engine_of
from console.errors import ConsoleConfigError
from shared.models import AuditEvent, Role, UserAccount
from shared.settings import ConsoleSettings
from tests.fixtures.console import TEST_PASSWORD, build_app, csrf_of, sign_in

pytestmark = pytest.mark.integration


def audit_rows(app: Flask) -> list[AuditEvent]:
    with Session(engine_of(app)) as session:
        return list(session.exec(select(AuditEvent).order_by(col(AuditEvent.id))).all())


def test_login_page_has_a_form_with_csrf(client: FlaskClient) -> None:
    page = client.get("/login").get_data(as_text=True)
    assert 'name="csrf_token"' in page and 'name="password"' in page


def test_sign_in_sets_a_safe_cookie_and_is_audited(
    client: FlaskClient, console_app: Flask, make_user: Callable[..., str]
) -> None:
    make_user("ann", "operator")
    response = client.post(
        "/login",
        data={"username": "Ann", "password": TEST_PASSWORD, "csrf_token": csrf_of(client)},
    )
    assert response.status_code == 302 and response.headers["Location"] == "/"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert client.get("/").status_code == 200
    [event] = audit_rows(console_app)
    assert (event.actor, event.action, event.target) == ("ann", "login", "ann")
    assert event.remote_addr == "127.0.0.1"
    with Session(engine_of(console_app)) as session:
        account = session.exec(select(UserAccount)).one()
        assert account.last_login_at is not None
        assert account.password_hash.startswith("scrypt:")


@pytest.mark.parametrize("username", ["ann", "nobody"])
def test_wrong_password_and_unknown_user_get_the_same_refusal(
    client: FlaskClient, console_app: Flask, make_user: Callable[..., str], username: str
) -> None:
    make_user("ann")
    response = client.post(
        "/login",
        data={"username": username, "password": "wrong password", "csrf_token": csrf_of(client)},
    )
    assert response.status_code == 401
    assert "Wrong username or password." in response.get_data(as_text=True)
    assert client.get("/").status_code == 302  # still signed out
    [event] = audit_rows(console_app)
    assert (event.actor, event.action, event.detail) == (username, "login.failed", None)


def test_empty_fields_are_shown_next_to_the_form(client: FlaskClient) -> None:
    response = client.post(
        "/login", data={"username": "", "password": "", "csrf_token": csrf_of(client)}
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "Enter your username." in page and "Enter your password." in page


def test_disabled_user_cannot_sign_in(
    client: FlaskClient, console_app: Flask, make_user: Callable[..., str]
) -> None:
    make_user("ann")
    with Session(engine_of(console_app)) as session:
        account = session.exec(select(UserAccount)).one()
        account.active = False
        session.add(account)
        session.commit()
    response = client.post(
        "/login",
        data={"username": "ann", "password": TEST_PASSWORD, "csrf_token": csrf_of(client)},
    )
    assert response.status_code == 401


def test_form_without_csrf_token_is_refused(
    client: FlaskClient, make_user: Callable[..., str]
) -> None:
    make_user("ann")
    response = client.post("/login", data={"username": "ann", "password": TEST_PASSWORD})
    assert response.status_code == 400
    assert "Reload the page" in response.get_data(as_text=True)


def test_pages_need_sign_in_and_return_where_asked(
    client: FlaskClient, make_user: Callable[..., str]
) -> None:
    response = client.get("/terminals/fleet")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")
    make_user("ann")
    response = client.post(
        "/login",
        data={
            "username": "ann",
            "password": TEST_PASSWORD,
            "csrf_token": csrf_of(client),
            "next": "/audit",
        },
    )
    assert response.headers["Location"] == "/audit"


def test_offsite_next_is_ignored(client: FlaskClient, make_user: Callable[..., str]) -> None:
    make_user("ann")
    response = client.post(
        "/login",
        data={
            "username": "ann",
            "password": TEST_PASSWORD,
            "csrf_token": csrf_of(client),
            "next": "//evil.example/",
        },
    )
    assert response.headers["Location"] == "/"


def test_sign_out_is_audited_and_ends_the_session(
    client: FlaskClient, console_app: Flask, make_user: Callable[..., str]
) -> None:
    make_user("ann")
    sign_in(client, "ann")
    response = client.post("/logout", data={"csrf_token": csrf_of(client)})
    assert response.status_code == 302
    assert client.get("/").status_code == 302
    assert [event.action for event in audit_rows(console_app)] == ["login", "logout"]


@pytest.mark.parametrize(
    ("role", "status"),
    [("admin", 200), ("operator", 403), ("support", 403), ("viewer", 403)],
)
def test_audit_screen_is_for_admins_only(
    client: FlaskClient, make_user: Callable[..., str], role: str, status: int
) -> None:
    make_user("ann", role)
    sign_in(client, "ann")
    response = client.get("/audit")
    assert response.status_code == status
    if status == 200:
        assert "login" in response.get_data(as_text=True)
    else:
        assert "Not allowed" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("role", "status"),
    [("admin", 200), ("operator", 200), ("support", 403), ("viewer", 403)],
)
def test_requires_role_follows_the_role_order(
    console_settings: ConsoleSettings,
    database_url: str,
    make_user: Callable[..., str],
    role: str,
    status: int,
) -> None:
    app = build_app(console_settings, database_url)
    probe = Blueprint("probe", __name__)

    @probe.route("/probe")
    @requires_role(Role.OPERATOR)
    def operator_only() -> str:
        return "ok"

    app.register_blueprint(probe)
    try:
        client = app.test_client()
        make_user("ann", role)
        sign_in(client, "ann")
        assert client.get("/probe").status_code == status
    finally:
        engine_of(app).dispose()


def test_app_refuses_to_start_without_secret_key(database_url: str) -> None:
    with pytest.raises(ConsoleConfigError, match="set TMS_CONSOLE_SECRET_KEY"):
        build_app(ConsoleSettings(), database_url)


def test_pages_send_security_headers(client: FlaskClient) -> None:
    headers = client.get("/login").headers
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"


def test_a_lost_database_is_a_503_page_with_what_to_do_not_a_trace(
    console_settings: ConsoleSettings,
) -> None:
    from shared.ports import free_port

    # Nothing listens there: every query fails to connect.
    url = f"postgresql+psycopg://tms:x@127.0.0.1:{free_port()}/tms?connect_timeout=2"
    app = build_app(console_settings, url)
    app.config["TESTING"] = True
    client = app.test_client()
    with client.session_transaction() as session:
        session["_user_id"] = "a-session-token"  # a signed-in browser
    page = client.get("/")
    body = page.get_data(as_text=True)
    assert page.status_code == 503
    assert "cannot reach its database" in body and "Traceback" not in body
    assert 'id="database-down"' in body
    api = client.get("/api/v1/terminals", headers={"Authorization": "Bearer tms_x"})
    assert api.status_code == 503 and api.get_json()["error"] == "database_unavailable"
    assert api.headers["Retry-After"] == "30"
    engine_of(app).dispose()
