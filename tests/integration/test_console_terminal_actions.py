"""Console terminal lifecycle actions: admins only, CSRF-checked, audited, secret shown once."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient
from sqlmodel import Session, col, select

from registry.provisioning import provision_terminal
from shared.db import make_engine
from shared.models import AuditEvent, Credential, Terminal
from tests.fixtures.console import csrf_of, sign_in

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(database_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(database_url, pool_size=1)
    with Session(engine) as session:
        provision_terminal(session, "TC-1", "Acme", "S1")
        session.commit()
    yield engine
    engine.dispose()


@pytest.fixture
def admin(client: FlaskClient, make_user: Callable[..., str], engine) -> FlaskClient:  # type: ignore[no-untyped-def]
    make_user("ada", "admin")
    sign_in(client, "ada")
    return client


def _post(client: FlaskClient, path: str, **form: str):  # type: ignore[no-untyped-def]
    return client.post(path, data={"csrf_token": csrf_of(client), **form})


def test_admin_sees_the_actions_and_a_viewer_does_not(
    client: FlaskClient, make_user: Callable[..., str], engine
) -> None:  # type: ignore[no-untyped-def]
    make_user("vera", "viewer")
    sign_in(client, "vera")
    assert b"Rotate secret" not in client.get("/terminals/TC-1").data
    assert _post(client, "/terminals/TC-1/revoke").status_code == 403


def test_rotate_shows_the_secret_once_and_is_audited(admin: FlaskClient, engine) -> None:  # type: ignore[no-untyped-def]
    page = admin.get("/terminals/TC-1")
    assert b"Rotate secret" in page.data
    response = _post(admin, "/terminals/TC-1/rotate")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert b"MQTT secret" in response.data
    with Session(engine) as session:
        [event] = session.exec(
            select(AuditEvent).where(AuditEvent.action == "terminal.rotated")
        ).all()
        assert (event.actor, event.target) == ("ada", "TC-1")


def test_revoke_decommission_and_swap(admin: FlaskClient, engine) -> None:  # type: ignore[no-untyped-def]
    assert _post(admin, "/terminals/TC-1/revoke").status_code == 302
    response = _post(admin, "/terminals/TC-1/swap", new_serial="TC-2")
    assert response.status_code == 200 and b"TC-2" in response.data
    with Session(engine) as session:
        old = session.exec(select(Terminal).where(Terminal.serial == "TC-1")).one()
        new = session.exec(select(Terminal).where(Terminal.serial == "TC-2")).one()
        assert old.status == "decommissioned" and new.store_id is not None
        actions = session.exec(select(AuditEvent.action).order_by(col(AuditEvent.id))).all()
        assert actions[-2:] == ["terminal.revoked", "terminal.swapped"]
    # Acting on a decommissioned terminal is refused with a message, not an error page.
    response = _post(admin, "/terminals/TC-1/decommission", reason="x")
    assert response.status_code == 302
    assert b"decommissioned" in admin.get(response.headers["Location"]).data


def test_decommission_revokes_the_credential(admin: FlaskClient, engine) -> None:  # type: ignore[no-untyped-def]
    assert _post(admin, "/terminals/TC-1/decommission", reason="water damage").status_code == 302
    with Session(engine) as session:
        credential = session.exec(select(Credential).where(Credential.username == "TC-1")).one()
        terminal = session.exec(select(Terminal).where(Terminal.serial == "TC-1")).one()
        assert credential.revoked_at is not None
        assert terminal.status_reason == "water damage"


def test_forms_without_csrf_token_are_refused(admin: FlaskClient) -> None:
    assert admin.post("/terminals/TC-1/rotate").status_code == 400
