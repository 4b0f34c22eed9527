"""The console's defences on real PostgreSQL: sign-in throttling, sessions that end on
the server, forced password changes and the IP allowlist."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydantic import SecretStr
from sqlalchemy import text
from sqlmodel import Session, col, select

from console import users
from console.db import engine_of
from shared.models import AuditEvent, ConsoleSession
from shared.settings import ConsoleSettings
from tests.fixtures.console import TEST_PASSWORD, build_app, csrf_of, sign_in

pytestmark = pytest.mark.integration


@pytest.fixture
def console_settings() -> ConsoleSettings:
    return ConsoleSettings(
        secret_key=SecretStr("test-secret-key-0123456789abcdef"),
        refresh_s=1,
        login_failures_per_user=3,
        login_failures_per_address=5,
    )


def attempt(client: FlaskClient, username: str, password: str, addr: str = "127.0.0.1") -> int:
    response = client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": csrf_of(client)},
        environ_base={"REMOTE_ADDR": addr},
    )
    return response.status_code


def actions(app: Flask, action: str) -> list[AuditEvent]:
    with Session(engine_of(app)) as session:
        return list(
            session.exec(
                select(AuditEvent).where(AuditEvent.action == action).order_by(col(AuditEvent.id))
            ).all()
        )


def age_failures(app: Flask, minutes: int) -> None:
    with Session(engine_of(app)) as session:
        session.execute(
            text("UPDATE audit_event SET at = at - make_interval(mins => :m)"), {"m": minutes}
        )
        session.commit()


def test_after_too_many_wrong_passwords_even_the_right_one_is_refused_until_the_window_passes(
    client: FlaskClient, console_app: Flask, make_user: Callable[..., str]
) -> None:
    make_user("ann", "operator")
    assert [attempt(client, "ann", "wrong password!") for _ in range(3)] == [401, 401, 401]
    # Locked: the right password is not even checked.
    response = client.post(
        "/login",
        data={"username": "ann", "password": TEST_PASSWORD, "csrf_token": csrf_of(client)},
    )
    assert response.status_code == 429
    assert "Too many failed sign-ins for this username" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302  # not signed in
    [throttled] = actions(console_app, "login.throttled")
    assert throttled.target == "ann" and throttled.detail is not None
    assert throttled.detail["scope"] == "user" and 800 < throttled.detail["retry_after_s"] <= 900
    # Hammering a locked account adds no failures: it only gets refused.
    assert attempt(client, "ann", "wrong again!!") == 429
    assert len(actions(console_app, "login.failed")) == 3

    age_failures(console_app, 16)
    assert attempt(client, "ann", TEST_PASSWORD) == 302
    assert client.get("/").status_code == 200


def test_a_successful_sign_in_clears_the_users_count_but_not_the_addresses(
    client: FlaskClient, console_app: Flask, make_user: Callable[..., str]
) -> None:
    make_user("ann")
    assert [attempt(client, "ann", "wrong password!") for _ in range(2)] == [401, 401]
    assert attempt(client, "ann", TEST_PASSWORD) == 302
    client.post("/logout", data={"csrf_token": csrf_of(client)})
    # Two more failures are fine again for the user (its count starts at the sign-in)...
    assert [attempt(client, "ann", "wrong password!") for _ in range(2)] == [401, 401]
    # ...but the address has now failed four times of its five.
    assert attempt(client, "bob", "wrong password!") == 401
    assert attempt(client, "carl", "wrong password!") == 429


def test_one_address_trying_many_usernames_is_throttled_and_another_address_is_not(
    client: FlaskClient, console_app: Flask, make_user: Callable[..., str]
) -> None:
    make_user("ann")
    codes = [attempt(client, f"user{n}", "wrong password!", "192.0.2.7") for n in range(5)]
    assert codes == [401] * 5
    response = client.post(
        "/login",
        data={"username": "ann", "password": TEST_PASSWORD, "csrf_token": csrf_of(client)},
        environ_base={"REMOTE_ADDR": "192.0.2.7"},
    )
    assert response.status_code == 429
    assert "from your address" in response.get_data(as_text=True)
    assert attempt(client, "ann", TEST_PASSWORD, "192.0.2.8") == 302
    [throttled] = actions(console_app, "login.throttled")
    assert throttled.remote_addr == "192.0.2.7" and throttled.detail is not None
    assert throttled.detail["scope"] == "address"


def copy_cookie(source: FlaskClient, target: FlaskClient) -> None:
    cookie = source.get_cookie("tms_session")
    assert cookie is not None
    target.set_cookie("tms_session", cookie.value)


def test_a_cookie_copied_before_logout_no_longer_signs_in(
    console_app: Flask, make_user: Callable[..., str]
) -> None:
    make_user("ann")
    browser, thief = console_app.test_client(), console_app.test_client()
    sign_in(browser, "ann")
    copy_cookie(browser, thief)
    assert thief.get("/").status_code == 200
    browser.post("/logout", data={"csrf_token": csrf_of(browser)})
    assert thief.get("/").status_code == 302
    [logout] = actions(console_app, "logout")
    assert logout.detail == {"sessions_ended": 1}


def test_logout_ends_every_session_of_the_user(
    console_app: Flask, make_user: Callable[..., str]
) -> None:
    make_user("ann")
    laptop, phone = console_app.test_client(), console_app.test_client()
    sign_in(laptop, "ann")
    sign_in(phone, "ann")
    laptop.post("/logout", data={"csrf_token": csrf_of(laptop)})
    assert phone.get("/").status_code == 302
    with Session(engine_of(console_app)) as session:
        ended = session.exec(select(ConsoleSession.end_reason)).all()
    assert ended == ["logout", "logout"]


def test_a_session_idle_longer_than_the_lifetime_is_over(
    client: FlaskClient, console_app: Flask, make_user: Callable[..., str]
) -> None:
    make_user("ann")
    sign_in(client, "ann")
    with Session(engine_of(console_app)) as session:
        session.execute(text("UPDATE console_session SET last_seen_at = now() - interval '13 h'"))
        session.commit()
    assert client.get("/").status_code == 302
    with Session(engine_of(console_app)) as session:
        assert session.exec(select(ConsoleSession.end_reason)).one() == "expired"


def test_a_reset_password_must_be_changed_before_anything_else(
    console_app: Flask, make_user: Callable[..., str]
) -> None:
    make_user("root", "admin")
    make_user("ann", "operator")
    admin, ann = console_app.test_client(), console_app.test_client()
    sign_in(ann, "ann")
    sign_in(admin, "root")
    page = admin.post("/users/ann/reset-password", data={"csrf_token": csrf_of(admin)})
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    one_time = page.get_data(as_text=True).split('id="one-time-password">')[1].split("<")[0]
    assert len(one_time) >= 16
    assert ann.get("/").status_code == 302  # the reset ended ann's session
    assert attempt(ann, "ann", TEST_PASSWORD) == 401

    assert attempt(ann, "ann", one_time) == 302
    for path in ("/", "/alerts", "/terminals/TC-1"):
        response = ann.get(path)
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/account/password")
    bad = ann.post(
        "/account/password",
        data={"current": one_time, "new": "short", "confirm": "short",
              "csrf_token": csrf_of(ann)},
    )  # fmt: skip
    assert bad.status_code == 400 and "Use at least 10 characters." in bad.get_data(as_text=True)
    wrong = ann.post(
        "/account/password",
        data={"current": "not it", "new": "a brand new secret", "confirm": "a brand new secret",
              "csrf_token": csrf_of(ann)},
    )  # fmt: skip
    assert wrong.status_code == 400
    assert "The current password is wrong." in wrong.get_data(as_text=True)
    done = ann.post(
        "/account/password",
        data={"current": one_time, "new": "a brand new secret", "confirm": "a brand new secret",
              "csrf_token": csrf_of(ann)},
    )  # fmt: skip
    assert done.status_code == 302
    assert ann.get("/").status_code == 200
    fresh = console_app.test_client()
    assert attempt(fresh, "ann", "a brand new secret") == 302
    assert [e.action for e in actions(console_app, "user.password_reset")] == [
        "user.password_reset"
    ]
    assert len(actions(console_app, "user.password_changed")) == 1


def test_changing_the_password_signs_out_every_other_session(
    console_app: Flask, make_user: Callable[..., str]
) -> None:
    make_user("ann")
    here, elsewhere = console_app.test_client(), console_app.test_client()
    sign_in(here, "ann")
    sign_in(elsewhere, "ann")
    response = here.post(
        "/account/password",
        data={"current": TEST_PASSWORD, "new": "another long one", "confirm": "another long one",
              "csrf_token": csrf_of(here)},
    )  # fmt: skip
    assert response.status_code == 302
    assert here.get("/").status_code == 200
    assert elsewhere.get("/").status_code == 302


@pytest.fixture
def fenced_app(database_url: str) -> Iterator[Flask]:
    settings = ConsoleSettings(
        secret_key=SecretStr("test-secret-key-0123456789abcdef"),
        allowed_networks=("10.20.0.0/16",),  # type: ignore[arg-type]  # validated to networks
    )
    app = build_app(settings, database_url)
    app.config["TESTING"] = True
    yield app
    engine_of(app).dispose()


def test_addresses_outside_the_allowlist_get_403_and_one_audit_line(
    fenced_app: Flask, make_user: Callable[..., str]
) -> None:
    outside = fenced_app.test_client()
    for path in ("/login", "/", "/api/v1/terminals", "/login"):
        response = outside.get(path)
        assert response.status_code == 403, path
    assert "Your address may not use this console." in outside.get("/").get_data(as_text=True)
    assert outside.post("/login", data={"username": "x", "password": "y"}).status_code == 403
    assert outside.get("/healthz").status_code in (200, 503)  # the probe stays open
    refused = actions(fenced_app, "access.refused")
    assert len(refused) == 1 and refused[0].remote_addr == "127.0.0.1"

    make_user("ann")
    inside = fenced_app.test_client()
    inside.environ_base["REMOTE_ADDR"] = "10.20.4.5"
    assert inside.get("/login").status_code == 200
    with fenced_app.app_context():
        token = _token_for(fenced_app, "ann")
    api = inside.get("/api/v1/terminals", headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == 200
    denied = outside.get("/api/v1/terminals", headers={"Authorization": f"Bearer {token}"})
    assert denied.status_code == 403


def _token_for(app: Flask, username: str) -> str:
    with Session(engine_of(app), expire_on_commit=False) as session:
        account = users.get_user_by_name(session, username)
        assert account is not None
        return users.create_api_token(session, account, "test")
