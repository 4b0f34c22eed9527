"""The users screen on real PostgreSQL: admins add, re-role, disable and reset users and
manage their API tokens; every change audited; nobody else may, even by posting."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlmodel import Session, col, select

from console.db import engine_of
from shared.models import AuditEvent, UserAccount
from tests.fixtures.console import TEST_PASSWORD, csrf_of, sign_in

pytestmark = pytest.mark.integration


def audit(app: Flask) -> list[tuple[str, str, str]]:
    with Session(engine_of(app)) as session:
        rows = session.exec(select(AuditEvent).order_by(col(AuditEvent.id))).all()
        return [(row.actor, row.action, row.target) for row in rows if row.action != "login"]


def account(app: Flask, username: str) -> UserAccount:
    with Session(engine_of(app)) as session:
        found = session.exec(select(UserAccount).where(UserAccount.username == username)).one()
        session.expunge(found)
        return found


def post(client: FlaskClient, path: str, **data: str) -> tuple[int, str]:
    response = client.post(path, data={**data, "csrf_token": csrf_of(client)})
    return response.status_code, response.get_data(as_text=True)


@pytest.fixture
def admin(client: FlaskClient, make_user: Callable[..., str]) -> FlaskClient:
    make_user("root", "admin")
    sign_in(client, "root")
    return client


def test_an_admin_adds_a_user_who_signs_in_with_the_one_time_password(
    admin: FlaskClient, console_app: Flask
) -> None:
    status, page = post(admin, "/users", username="Dana", role="support")
    assert status == 200
    password = page.split('id="one-time-password">')[1].split("<")[0]
    created = account(console_app, "dana")
    assert created.role == "support" and created.must_change_password
    assert ("root", "user.created", "dana") in audit(console_app)
    dana = console_app.test_client()
    sign_in(dana, "dana", password)
    assert dana.get("/").headers["Location"].startswith("/account/password")
    listing = admin.get("/users").get_data(as_text=True)
    assert "dana" in listing and "must change password" in listing


@pytest.mark.parametrize(
    ("username", "role", "message"),
    [
        ("", "viewer", "Invalid username"),
        ("root", "viewer", "User &#39;root&#39; already exists."),
        ("x" * 80, "viewer", "Invalid username"),
        ("eve", "superuser", "Choose one of: admin, operator, support, viewer."),
    ],
)
def test_a_bad_new_user_is_shown_beside_the_form(
    admin: FlaskClient, console_app: Flask, username: str, role: str, message: str
) -> None:
    status, page = post(admin, "/users", username=username, role=role)
    assert status == 400 and message in page
    assert 'aria-invalid="true"' in page
    assert not [a for a in audit(console_app) if a[1] == "user.created"]


def test_role_changes_take_effect_at_once_and_are_audited(
    admin: FlaskClient, console_app: Flask, make_user: Callable[..., str]
) -> None:
    make_user("ann", "viewer")
    ann = console_app.test_client()
    sign_in(ann, "ann")
    assert ann.get("/audit").status_code == 403
    status, _ = post(admin, "/users/ann/role", role="admin")
    assert status == 302
    assert ann.get("/audit").status_code == 200
    assert ("root", "user.role_changed", "ann") in audit(console_app)


def test_disabling_ends_the_users_sessions_and_tokens_stop_working(
    admin: FlaskClient, console_app: Flask, make_user: Callable[..., str]
) -> None:
    make_user("ann", "operator")
    ann = console_app.test_client()
    sign_in(ann, "ann")
    status, page = post(admin, "/users/ann/tokens", name="nightly report")
    token = page.split('id="api-token">')[1].split("<")[0]
    bearer = {"Authorization": f"Bearer {token}"}
    assert ann.get("/api/v1/terminals", headers=bearer).status_code == 200

    assert post(admin, "/users/ann/disable")[0] == 302
    assert ann.get("/").status_code == 302
    assert ann.get("/api/v1/terminals", headers=bearer).status_code == 401
    assert attempt_sign_in(console_app, "ann") == 401
    assert post(admin, "/users/ann/enable")[0] == 302
    assert attempt_sign_in(console_app, "ann") == 302
    trail = audit(console_app)
    assert ("root", "token.created", "ann") in trail
    assert ("root", "user.disabled", "ann") in trail and ("root", "user.enabled", "ann") in trail


def attempt_sign_in(app: Flask, username: str) -> int:
    client = app.test_client()
    return client.post(
        "/login",
        data={"username": username, "password": TEST_PASSWORD, "csrf_token": csrf_of(client)},
    ).status_code


def test_tokens_are_listed_and_revocable(
    admin: FlaskClient, console_app: Flask, make_user: Callable[..., str]
) -> None:
    make_user("ann", "support")
    _, page = post(admin, "/users/ann/tokens", name="support script")
    token = page.split('id="api-token">')[1].split("<")[0]
    detail = admin.get("/users/ann").get_data(as_text=True)
    assert "support script" in detail and token not in detail
    token_id = detail.split("/users/ann/tokens/")[1].split("/revoke")[0]
    assert post(admin, f"/users/ann/tokens/{token_id}/revoke")[0] == 302
    bearer = {"Authorization": f"Bearer {token}"}
    assert admin.get("/api/v1/terminals", headers=bearer).status_code == 401
    assert "revoked" in admin.get("/users/ann").get_data(as_text=True)
    assert ("root", "token.revoked", "ann") in audit(console_app)
    # Another user's token id, or an empty name, is refused with a message.
    assert post(admin, f"/users/root/tokens/{token_id}/revoke")[0] == 302
    assert f"&#39;root&#39; has no token {token_id}." in admin.get("/users/root").get_data(
        as_text=True
    )
    assert post(admin, "/users/ann/tokens", name="   ")[0] == 302
    assert "Token name must be 1-100 characters" in admin.get("/users/ann").get_data(as_text=True)


def test_the_last_admin_cannot_be_removed_and_nobody_changes_themselves(
    admin: FlaskClient, console_app: Flask
) -> None:
    post(admin, "/users/root/disable")
    page = admin.get("/users/root").get_data(as_text=True)
    assert "You cannot disable yourself (ask another admin)." in page
    post(admin, "/users/root/role", role="viewer")
    page = admin.get("/users/root").get_data(as_text=True)
    assert "You cannot change your own role (ask another admin)." in page
    assert account(console_app, "root").active and account(console_app, "root").role == "admin"
    assert not [a for a in audit(console_app) if a[1] in ("user.disabled", "user.role_changed")]


def test_the_only_other_admin_cannot_be_demoted_when_it_would_leave_none(
    admin: FlaskClient, console_app: Flask, make_user: Callable[..., str]
) -> None:
    make_user("bea", "admin")
    assert post(admin, "/users/bea/role", role="operator")[0] == 302
    assert account(console_app, "bea").role == "operator"
    # root is now the only admin; bea (operator) may not touch users at all.
    bea = console_app.test_client()
    sign_in(bea, "bea")
    assert bea.get("/users").status_code == 403


@pytest.mark.parametrize("role", ["operator", "support", "viewer"])
def test_other_roles_see_no_users_screen_and_are_refused_when_posting(
    client: FlaskClient, console_app: Flask, make_user: Callable[..., str], role: str
) -> None:
    make_user("ann", role)
    make_user("bob", "viewer")
    sign_in(client, "ann")
    assert "/users" not in client.get("/").get_data(as_text=True)
    assert client.get("/users").status_code == 403
    assert client.get("/users/bob").status_code == 403
    for path, data in (
        ("/users", {"username": "eve", "role": "admin"}),
        ("/users/bob/role", {"role": "admin"}),
        ("/users/bob/disable", {}),
        ("/users/bob/reset-password", {}),
        ("/users/bob/tokens", {"name": "x"}),
        ("/users/ann/role", {"role": "admin"}),
    ):
        assert post(client, path, **data)[0] == 403, path
    assert account(console_app, "bob").role == "viewer"
    assert account(console_app, "ann").role == role
    assert audit(console_app) == []


def test_unknown_users_are_404(admin: FlaskClient) -> None:
    assert admin.get("/users/nobody").status_code == 404
    assert post(admin, "/users/nobody/disable")[0] == 404
    assert post(admin, "/users/nobody/tokens/1/revoke")[0] == 404
