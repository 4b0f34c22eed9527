"""The alerts and dead-letter screens: who sees, who acts, and the audit trail."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient

from tests.fixtures.console import Fleet, csrf_of, sign_in

pytestmark = pytest.mark.integration


@pytest.fixture
def alert_id(database_url: str, fleet: Fleet) -> int:
    fleet.add_terminal("TC-ALERT", status="offline", reason="heartbeat missed")
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO alert (scope, kind, severity, status, message, count, terminal_id,"
            " customer_id) SELECT 'terminal:' || id, 'offline', 'critical', 'open',"
            " 'TC-ALERT is offline: heartbeat missed', 3, id, customer_id FROM terminal"
            " RETURNING id"
        ).fetchone()
    assert row is not None
    return int(row[0])


def audit_actions(database_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT actor, action, target FROM audit_event WHERE action LIKE 'alert.%' ORDER BY id"
        ).fetchall()


def alert(database_url: str, alert_id: int) -> tuple[Any, ...]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT a.status, a.resolution_note, u.username, k.username FROM alert a"
            " LEFT JOIN user_account u ON u.id = a.assignee_id"
            " LEFT JOIN user_account k ON k.id = a.acknowledged_by WHERE a.id = %s",
            (alert_id,),
        ).fetchone()
    assert row is not None
    return tuple(row)


def post(client: FlaskClient, path: str, **form: str) -> Any:
    return client.post(path, data={"csrf_token": csrf_of(client), **form})


def test_a_viewer_sees_alerts_but_cannot_act(
    client: FlaskClient, make_user: Callable[..., str], alert_id: int, database_url: str
) -> None:
    make_user("vera", "viewer")
    sign_in(client, "vera")
    page = client.get("/alerts").get_data(as_text=True)
    assert "TC-ALERT is offline: heartbeat missed" in page
    # No bulk bar and no checkboxes: nothing to act with.
    assert 'id="alert-bulk"' not in page and 'type="checkbox"' not in page
    assert post(client, f"/alerts/{alert_id}/acknowledge").status_code == 403
    assert post(client, f"/alerts/{alert_id}/resolve", note="x").status_code == 403
    assert alert(database_url, alert_id)[0] == "open"
    assert client.get("/dead-letters").status_code == 403


def test_an_operator_acknowledges_assigns_and_resolves_with_a_note_all_audited(
    client: FlaskClient, make_user: Callable[..., str], alert_id: int, database_url: str
) -> None:
    make_user("otto", "operator")
    make_user("sam", "support")
    sign_in(client, "otto")
    assert post(client, f"/alerts/{alert_id}/acknowledge").status_code == 302
    assert post(client, f"/alerts/{alert_id}/assign", assignee="sam").status_code == 302
    assert alert(database_url, alert_id) == ("acknowledged", None, "sam", "otto")
    # A resolution needs a note.
    post(client, f"/alerts/{alert_id}/resolve", note="  ")
    assert alert(database_url, alert_id)[0] == "acknowledged"
    post(client, f"/alerts/{alert_id}/resolve", note="PC rebooted by store staff")
    assert alert(database_url, alert_id)[:2] == ("resolved", "PC rebooted by store staff")
    assert audit_actions(database_url) == [
        ("otto", "alert.acknowledge", f"alert:{alert_id}"),
        ("otto", "alert.assign", f"alert:{alert_id}"),
        ("otto", "alert.resolve", f"alert:{alert_id}"),
    ]
    resolved = client.get("/alerts?status=resolved").get_data(as_text=True)
    assert "PC rebooted by store staff" in resolved


def test_admins_see_dead_letters_by_reason(
    client: FlaskClient, make_user: Callable[..., str], database_url: str
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO dead_letter (topic, payload, reason, detail) VALUES"
            " ('tms/v1/TC-1/telemetry', '\\x7b6e6f74206a736f6e', 'bad-payload', 'not JSON'),"
            " ('tms/v1/TC-1/telemetry', '\\xff00', 'bad-payload', 'not UTF-8'),"
            " ('tms/v1/TC-9/telemetry', '{}', 'unknown-terminal', 'no terminal TC-9')"
        )
    make_user("ada", "admin")
    sign_in(client, "ada")
    page = client.get("/dead-letters").get_data(as_text=True)
    assert "bad-payload" in page and "unknown-terminal" in page and "{not json" in page
    assert "\\xff" in page  # bytes that are not text are shown escaped, never a crash
    only = client.get("/dead-letters?reason=unknown-terminal").get_data(as_text=True)
    assert "no terminal TC-9" in only and "not JSON" not in only
