"""The rollout screens and their REST API on real PostgreSQL: an admin previews a
rollout (each wave's terminals, who is left out why, nothing written) and starts it
(the rollout, its waves and its queued tasks, audited); bad fields are refused beside
them; pause, resume (from a halt with new thresholds), cancel and approve change the
state or answer 409; the other roles look but may not act; the API does the same in
JSON. No driver runs: the tasks stay queued unless a test moves them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from markupsafe import escape
from sqlalchemy import text as sql
from sqlmodel import Session, col, select

from console import users
from console.db import engine_of
from rollouts import library, manage
from rollouts.targets import Target
from shared.models import AuditEvent, FirmwareState, Rollout
from tests.fixtures.console import Fleet, csrf_of, sign_in
from tests.fixtures.firmware import firmware_image

pytestmark = pytest.mark.integration

ROLES = ("viewer", "support", "operator")
RELEASE = "2.5.0"


@pytest.fixture
def stocked(firmware_app: Flask, fleet: Fleet, firmware_library: library.Library) -> Fleet:
    """20 terminals: Acme's 12 in two stores and Bolt's 6 on 2.4.1, one already on the
    release, one decommissioned; two of Acme's tagged "pilot". Firmware 2.5.0 released,
    2.6.0 a draft."""
    for n in range(12):
        fleet.add_terminal(f"TC-A{n:02d}", customer="Acme", store=f"S{n % 2 + 1}")
    for n in range(6):
        fleet.add_terminal(f"TC-B{n:02d}", customer="Bolt", store="B1")
    fleet.add_terminal("TC-C00", customer="Bolt", store="B1", firmware=RELEASE)
    fleet.add_terminal("TC-D00", customer="Bolt", store="B1")
    with fleet.engine.begin() as conn:
        conn.execute(
            sql(
                "UPDATE terminal SET status = 'decommissioned', decommissioned_at = now()"
                " WHERE serial = 'TC-D00'"
            )
        )
        conn.execute(
            sql("UPDATE terminal SET tags = '{pilot}' WHERE serial IN ('TC-A00', 'TC-A01')")
        )
    with Session(engine_of(firmware_app)) as session:
        for version in (RELEASE, "2.6.0"):
            library.add_image(
                session, firmware_library, image=firmware_image(version), filename="fw.img",
                version=version, models=("TC-200",), notes="", actor="test",
            )  # fmt: skip
        library.change_state(session, RELEASE, FirmwareState.RELEASED, "test")
        session.commit()
    return fleet


@pytest.fixture
def as_role(firmware_app: Flask, make_user: Callable[..., str]) -> Callable[[str], FlaskClient]:
    def sign(role: str) -> FlaskClient:
        client = firmware_app.test_client()
        sign_in(client, make_user(f"{role}-user", role))
        return client

    return sign


@pytest.fixture
def admin(as_role: Callable[[str], FlaskClient]) -> FlaskClient:
    return as_role("admin")


@pytest.fixture
def token_of(firmware_app: Flask, make_user: Callable[..., str]) -> Callable[[str], str]:
    def token(role: str) -> str:
        name = make_user(f"{role}-script", role)
        with Session(engine_of(firmware_app)) as session:
            account = users.get_user_by_name(session, name)
            assert account is not None
            return users.create_api_token(session, account, "rollout-script")

    return token


# -- helpers -------------------------------------------------------------------------


def text(response: Any) -> str:
    return str(response.get_data(as_text=True))


def post(client: FlaskClient, path: str, data: dict[str, Any] | None = None) -> Any:
    return client.post(path, data={**(data or {}), "csrf_token": csrf_of(client)})


def new_form(**changes: Any) -> dict[str, Any]:
    """The new-rollout form as a person fills it in: the defaults, plus ``changes``."""
    form: dict[str, Any] = {
        "name": "2.5.0 everywhere", "version": RELEASE, "waves": "10%,50%,100%",
        "success_threshold_pct": "95", "error_threshold_pct": "5", "max_failures": "",
        "max_concurrent": "100", "rate_per_minute": "", "max_attempts": "3",
        "retry_delay_min": "5", "max_retry_delay_min": "120", "watch_period_min": "0",
        "health_margin_points": "5", "install_time_min": "15", "window": "",
    }  # fmt: skip
    form.update(changes)
    return form


def sql_rows(firmware_app: Flask, statement: str, **params: Any) -> list[Any]:
    with Session(engine_of(firmware_app)) as session:
        return list(session.execute(sql(statement), params).all())


def rollout_row(firmware_app: Flask, rollout_id: int) -> Rollout:
    with Session(engine_of(firmware_app)) as session:
        row = session.get(Rollout, rollout_id)
        assert row is not None
        session.expunge(row)
        return row


def audit(firmware_app: Flask) -> list[tuple[str, str, str, Any]]:
    with Session(engine_of(firmware_app)) as session:
        events = session.exec(
            select(AuditEvent)
            .where(col(AuditEvent.action).startswith("rollout."))
            .order_by(col(AuditEvent.id))
        ).all()
        return [(e.actor, e.action, e.target, e.detail) for e in events]


def start(firmware_app: Flask, policy: dict[str, Any] | None = None, **target: Any) -> int:
    """A running rollout of the release (no driver: its tasks stay queued)."""
    with Session(engine_of(firmware_app)) as session:
        rollout_id = manage.create(
            session, name="Pilot", version=RELEASE, target=Target(**target),
            policy=policy or {}, wave_spec="10%,50%,100%", actor="someone",
        )  # fmt: skip
        session.commit()
    return rollout_id


def sizes_shown(page: str) -> list[int]:
    return [int(n) for n in re.findall(r'data-size="(\d+)"', page)]


def set_tasks(firmware_app: Flask, rollout_id: int, serials: list[str], **values: Any) -> None:
    """What the driver does to tasks, for the screens to show."""
    assignments = ", ".join(f"{key} = :{key}" for key in values)
    with engine_of(firmware_app).begin() as conn:
        conn.execute(
            sql(
                f"UPDATE update_task SET {assignments} FROM terminal AS t"
                " WHERE t.id = update_task.terminal_id AND update_task.rollout_id = :id"
                " AND t.serial = ANY(:serials)"
            ),
            {"id": rollout_id, "serials": serials, **values},
        )


# -- a new rollout -------------------------------------------------------------------


def test_the_preview_shows_each_waves_terminals_and_who_is_left_out(
    firmware_app: Flask, admin: FlaskClient, stocked: Fleet
) -> None:
    form = text(admin.get("/rollouts/new"))
    assert f'<option value="{RELEASE}"' in form and 'value="2.6.0"' not in form  # released only
    assert ">Acme</option>" in form and ">Bolt</option>" in form and 'label="Acme"' in form
    assert 'value="pilot"' in form and 'value="TC-200"' in form
    assert 'value="95"' in form and 'placeholder="no limit"' in form  # the policy's defaults
    shown = post(admin, "/rollouts/preview", new_form())
    assert shown.status_code == 200, text(shown)
    page = text(shown)
    # 18 terminals on 2.4.1 in waves of 10%, 50%, 100%: 2, 7 and 9.
    assert 'id="preview-total">18<' in page and sizes_shown(page) == [2, 7, 9]
    assert 'data-reason="already on release"' in page
    assert "TC-D00" not in page and 'data-reason="decommissioned"' not in page  # out of the fleet
    assert 'name="expected" value="18"' in page and 'id="start-button"' in page
    assert 'value="2.5.0 everywhere"' in page  # what was typed stays in the form
    assert sql_rows(firmware_app, "SELECT id FROM rollout") == []
    # A narrower target: Acme's pilot terminals only.
    acme = sql_rows(firmware_app, "SELECT id FROM customer WHERE name = 'Acme'")[0][0]
    narrow = text(post(admin, "/rollouts/preview", new_form(customers=[str(acme)], tags="pilot")))
    assert 'id="preview-total">2<' in narrow and sizes_shown(narrow) == [1, 1]
    assert "No terminal is left out." in narrow  # those outside the target are not counted


def test_an_admin_starts_a_rollout_asked_once_more_and_it_is_audited(
    firmware_app: Flask, admin: FlaskClient, stocked: Fleet
) -> None:
    fields = new_form(expected="18")
    # Without the page's script the question comes on the page; nothing starts yet.
    asked = post(admin, "/rollouts", fields)
    assert asked.status_code == 200 and 'id="start-question"' in text(asked)
    assert 'name="confirmed" value="yes"' in text(asked)
    assert sql_rows(firmware_app, "SELECT id FROM rollout") == []
    started = post(admin, "/rollouts", fields | {"confirmed": "yes"})
    assert started.status_code == 302, text(started)
    rollout_id = int(started.headers["Location"].rsplit("/", 1)[1])
    row = rollout_row(firmware_app, rollout_id)
    assert (row.name, row.state, row.created_by, row.wave_spec) == (
        "2.5.0 everywhere", "running", "admin-user", "10%,50%,100%",
    )  # fmt: skip
    assert row.policy["error_threshold_pct"] == 5 and row.policy["retry_delay_s"] == 300
    assert row.excluded == {"already on release": 1}
    waves = sql_rows(
        firmware_app,
        "SELECT number, size FROM rollout_wave WHERE rollout_id = :id ORDER BY 1",
        id=rollout_id,
    )
    assert [tuple(w) for w in waves] == [(1, 2), (2, 7), (3, 9)]
    tasks = sql_rows(
        firmware_app, "SELECT wave, state, count(*) FROM update_task WHERE rollout_id = :id"
        " GROUP BY 1, 2 ORDER BY 1", id=rollout_id,
    )  # fmt: skip
    assert [tuple(t) for t in tasks] == [(1, "queued", 2), (2, "queued", 7), (3, "queued", 9)]
    [(actor, action, target, detail)] = audit(firmware_app)
    assert (actor, action, target) == ("admin-user", "rollout.create", f"rollout:{rollout_id}")
    assert detail["waves"] == [2, 7, 9]
    page = text(admin.get(started.headers["Location"]))
    assert "started: firmware 2.5.0 to 18 terminals in 3 waves" in page
    assert 'id="wave-3"' in page and 'id="tasks-queued">18<' in page
    assert 'id="pause-button"' in page and 'id="cancel-button"' in page
    listing = text(admin.get("/rollouts"))
    assert f'id="rollout-{rollout_id}"' in listing and "0</strong> / 18 updated" in listing


def test_a_changed_fleet_since_the_preview_is_shown_before_anything_starts(
    firmware_app: Flask, admin: FlaskClient, stocked: Fleet
) -> None:
    stale = post(admin, "/rollouts", new_form(expected="17", confirmed="yes"))
    assert stale.status_code == 200 and 'id="preview-changed"' in text(stale)
    assert "now hits 18 terminals, not 17" in text(stale)
    assert sql_rows(firmware_app, "SELECT id FROM rollout") == []


BAD_FIELDS = [
    pytest.param({"name": ""}, "name", "Give the rollout a name", id="no-name"),
    pytest.param({"version": ""}, "version", "Choose the released firmware", id="no-version"),
    pytest.param({"version": "2.6.0"}, "version", "only a released image is rolled out",
                 id="draft"),
    pytest.param({"version": "9.9.9"}, "version", "no firmware &#39;9.9.9&#39;", id="unknown"),
    pytest.param({"waves": "10,5"}, "waves", "the percentages are cumulative", id="waves"),
    pytest.param({"waves": "50"}, "waves", "the last wave must be 100", id="waves-end"),
    pytest.param({"min_version": "abc"}, "min_version", "is not a version", id="min-version"),
    pytest.param({"min_version": "2.5", "max_version": "2.0"}, "max_version",
                 "the version range 2.5..2.0 is empty", id="range"),
    pytest.param({"tags": "pilot", "exclude_tags": "pilot"}, "exclude_tags",
                 "both required and excluded", id="tags"),
    pytest.param({"customers": "acme"}, "customers", "Choose each customer", id="customers"),
    pytest.param({"error_threshold_pct": "150"}, "error_threshold_pct",
                 "percentage between 0 and 100", id="threshold"),
    pytest.param({"max_concurrent": "two"}, "max_concurrent", "is not a number", id="nan"),
    pytest.param({"max_attempts": "1.5"}, "max_attempts", "whole number", id="whole"),
    pytest.param({"retry_delay_min": "300"}, "max_retry_delay_min", "retry delays need",
                 id="retry-pair"),
    pytest.param({"window": "someday"}, "window", "is not a window", id="window"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "field", "reason"), BAD_FIELDS)
def test_a_bad_field_is_refused_beside_it(
    firmware_app: Flask,
    admin: FlaskClient,
    stocked: Fleet,
    changes: dict[str, Any],
    field: str,
    reason: str,
) -> None:
    for path in ("/rollouts/preview", "/rollouts"):
        refused = post(admin, path, new_form(**changes) | {"expected": "18", "confirmed": "yes"})
        assert refused.status_code == 400, (path, text(refused)[:300])
        page = text(refused)
        beside = re.search(f'id="{field}-error">([^<]*)<', page)
        assert beside is not None, page[:3000]
        assert reason.lower() in beside.group(1).lower()
        assert 'id="start-button"' not in page
    assert sql_rows(firmware_app, "SELECT id FROM rollout") == [] and audit(firmware_app) == []


def test_a_target_that_selects_nobody_says_so(
    firmware_app: Flask, admin: FlaskClient, stocked: Fleet
) -> None:
    preview = text(post(admin, "/rollouts/preview", new_form(min_version="3.0")))
    assert 'id="nothing-to-update"' in preview and 'id="start-button"' not in preview
    assert 'data-reason="version out of range"' in preview
    refused = post(admin, "/rollouts", new_form(min_version="3.0", expected="0", confirmed="yes"))
    assert refused.status_code == 400 and "No terminal to update" in text(refused)
    assert sql_rows(firmware_app, "SELECT id FROM rollout") == []


def test_the_threshold_warning_when_the_error_threshold_cannot_decide(
    admin: FlaskClient, stocked: Fleet
) -> None:
    page = text(post(admin, "/rollouts/preview", new_form(error_threshold_pct="20")))
    assert 'id="threshold-warning"' in page and "never decides" in page
    calm = text(post(admin, "/rollouts/preview", new_form()))
    assert 'id="threshold-warning"' not in calm


# -- who may do what -----------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_other_roles_may_look_but_not_act(
    firmware_app: Flask, stocked: Fleet, as_role: Callable[[str], FlaskClient], role: str
) -> None:
    rollout_id = start(firmware_app, {"approve_each_wave": True})
    client = as_role(role)
    listing = text(client.get("/rollouts"))
    assert f'id="rollout-{rollout_id}"' in listing and 'id="new-rollout"' not in listing
    assert ">Rollouts</a>" in listing
    detail = client.get(f"/rollouts/{rollout_id}")
    assert detail.status_code == 200
    page = text(detail)
    assert 'id="wave-1"' in page and "awaiting approval" in page
    for button in ("pause-button", "cancel-button", "resume-button", "approve-1"):
        assert f'id="{button}"' not in page
    assert client.get(f"/rollouts/{rollout_id}/live").status_code == 200
    assert client.get("/rollouts/new").status_code == 403
    assert client.get(f"/rollouts/{rollout_id}/resume").status_code == 403
    form = new_form(expected="18", confirmed="yes")
    assert post(client, "/rollouts/preview", form).status_code == 403
    assert post(client, "/rollouts", form).status_code == 403
    for action in ("pause", "resume", "cancel"):
        answer = post(client, f"/rollouts/{rollout_id}/{action}", {"confirmed": "yes"})
        assert answer.status_code == 403
    approve = post(client, f"/rollouts/{rollout_id}/approve", {"wave": "1", "confirmed": "yes"})
    assert approve.status_code == 403
    assert rollout_row(firmware_app, rollout_id).state == "running"
    assert len(sql_rows(firmware_app, "SELECT 1 FROM rollout")) == 1
    assert sql_rows(firmware_app, "SELECT 1 FROM rollout_wave WHERE approved_at IS NOT NULL") == []
    assert [action for _, action, _, _ in audit(firmware_app)] == ["rollout.create"]


def test_signed_out_visitors_are_sent_to_sign_in(firmware_app: Flask) -> None:
    client = firmware_app.test_client()
    for path in ("/rollouts", "/rollouts/new", "/rollouts/1", "/rollouts/1/live"):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"]


# -- steering ------------------------------------------------------------------------


def test_pause_resume_cancel_and_what_the_state_refuses(
    firmware_app: Flask, admin: FlaskClient, stocked: Fleet
) -> None:
    rollout_id = start(firmware_app)
    path = f"/rollouts/{rollout_id}"
    assert post(admin, f"{path}/pause").status_code == 302
    assert rollout_row(firmware_app, rollout_id).state == "paused"
    paused = text(admin.get(path))
    assert "Rollout paused" in paused and 'id="resume-button"' in paused
    again = post(admin, f"{path}/pause")
    assert again.status_code == 409
    assert "Cannot pause rollout" in text(again) and "it is paused" in text(again)
    # Resuming without the page's script asks on the page first.
    asked = post(admin, f"{path}/resume")
    assert asked.status_code == 200 and 'id="rollout-confirm"' in text(asked)
    assert rollout_row(firmware_app, rollout_id).state == "paused"
    assert post(admin, f"{path}/resume", {"confirmed": "yes"}).status_code == 302
    assert rollout_row(firmware_app, rollout_id).state == "running"
    set_tasks(firmware_app, rollout_id, ["TC-A00"], state="downloading", percent=40.0)
    asked = post(admin, f"{path}/cancel")
    assert asked.status_code == 200 and "Cancel rollout “Pilot”?" in text(asked)
    assert rollout_row(firmware_app, rollout_id).state == "running"
    assert post(admin, f"{path}/cancel", {"confirmed": "yes"}).status_code == 302
    row = rollout_row(firmware_app, rollout_id)
    assert row.state == "cancelled" and row.finished_at is not None
    states = sql_rows(
        firmware_app, "SELECT state, count(*) FROM update_task WHERE rollout_id = :id GROUP BY 1"
        " ORDER BY 1", id=rollout_id,
    )  # fmt: skip
    assert [tuple(s) for s in states] == [("cancelled", 1), ("skipped", 17)]
    page = text(admin.get(path))
    assert "Rollout cancelled." in page and 'id="pause-button"' not in page
    assert 'id="cancel-button"' not in page and 'id="tasks-skipped">18<' in page
    for action in ("pause", "resume", "cancel"):
        late = post(admin, f"{path}/{action}", {"confirmed": "yes"})
        assert late.status_code == 409 and "it is cancelled" in text(late)
    assert [action for _, action, _, _ in audit(firmware_app)] == [
        "rollout.create", "rollout.pause", "rollout.resume", "rollout.cancel",
    ]  # fmt: skip
    assert all(actor == "admin-user" for actor, *_ in audit(firmware_app)[1:])
    assert post(admin, "/rollouts/99999/pause").status_code == 404
    assert admin.get("/rollouts/99999").status_code == 404


def test_an_admin_approves_a_wave_once(
    firmware_app: Flask, admin: FlaskClient, stocked: Fleet
) -> None:
    rollout_id = start(firmware_app, {"approve_each_wave": True})
    path = f"/rollouts/{rollout_id}"
    page = text(admin.get(path))
    assert all(f'id="approve-{n}"' in page for n in (1, 2, 3))
    asked = post(admin, f"{path}/approve", {"wave": "1"})
    assert asked.status_code == 200 and "Approve wave 1 of “Pilot” (2 terminals)?" in text(asked)
    assert post(admin, f"{path}/approve", {"wave": "1", "confirmed": "yes"}).status_code == 302
    approved = sql_rows(
        firmware_app, "SELECT number, approved_by FROM rollout_wave WHERE rollout_id = :id"
        " AND approved_at IS NOT NULL", id=rollout_id,
    )  # fmt: skip
    assert [tuple(a) for a in approved] == [(1, "admin-user")]
    page = text(admin.get(path))
    assert "Wave 1 approved." in page and "approved by admin-user" in page
    assert 'id="approve-1"' not in page and 'id="approve-2"' in page
    twice = post(admin, f"{path}/approve", {"wave": "1", "confirmed": "yes"})
    assert twice.status_code == 409 and "is approved, or has begun" in text(twice)
    nowhere = post(admin, f"{path}/approve", {"wave": "7", "confirmed": "yes"})
    assert nowhere.status_code == 400 and "no wave" in text(nowhere)
    assert audit(firmware_app)[-1][1:] == ("rollout.approve", f"rollout:{rollout_id}", {"wave": 1})


def test_a_halted_rollout_shows_why_and_resumes_with_higher_thresholds(
    firmware_app: Flask, admin: FlaskClient, stocked: Fleet, as_role: Callable[[str], FlaskClient]
) -> None:
    rollout_id = start(firmware_app)
    reason = "wave 1: 1 of 2 terminals failed (50% > error threshold 5%)"
    with engine_of(firmware_app).begin() as conn:
        conn.execute(
            sql("UPDATE rollout SET state = 'halted', halt_reason = :why WHERE id = :id"),
            {"why": reason, "id": rollout_id},
        )
    set_tasks(
        firmware_app, rollout_id, ["TC-A00"], state="rolled_back", failure="boot",
        reason="the new image did not boot; the old one runs again", attempts=1,
    )  # fmt: skip
    path = f"/rollouts/{rollout_id}"
    viewer_page = text(as_role("viewer").get(path))
    assert 'id="halt-reason"' in viewer_page and str(escape(reason)) in viewer_page
    page = text(admin.get(path))
    assert 'class="halt-box"' in page and str(escape(reason)) in page
    assert f'href="/rollouts/{rollout_id}/resume"' in page  # resume asks for the thresholds
    failures = page[page.index('id="rollout-failures"') :]
    assert 'href="/terminals/TC-A00"' in failures and "rolled back" in failures
    assert "the new image did not boot" in failures and ">boot<" in failures
    live = text(admin.get(f"{path}/live"))
    assert 'id="halt-reason"' in live and "the new image did not boot" in live
    form = text(admin.get(f"{path}/resume"))
    assert 'id="resume-halt-reason"' in form
    assert re.search(r'id="error_threshold_pct"[^>]*value="5"', form)
    assert re.search(r'id="success_threshold_pct"[^>]*value="95"', form)
    fields = {"error_threshold_pct": "150", "success_threshold_pct": "95", "max_failures": ""}
    bad = post(admin, f"{path}/resume", fields | {"confirmed": "yes"})
    assert bad.status_code == 400 and 'id="error_threshold_pct-error"' in text(bad)
    assert 'value="150"' in text(bad) and rollout_row(firmware_app, rollout_id).state == "halted"
    fields["error_threshold_pct"] = "60"
    assert post(admin, f"{path}/resume", fields | {"confirmed": "yes"}).status_code == 302
    row = rollout_row(firmware_app, rollout_id)
    assert (row.state, row.halt_reason) == ("running", None)
    assert row.policy["error_threshold_pct"] == 60 and row.policy["success_threshold_pct"] == 95
    assert audit(firmware_app)[-1][1] == "rollout.resume"
    assert audit(firmware_app)[-1][3] == {"from": "halted", "policy": {"error_threshold_pct": 60}}


def test_tasks_in_flight_show_their_download_and_failures_are_paged(
    firmware_app: Flask, admin: FlaskClient, stocked: Fleet
) -> None:
    rollout_id = start(firmware_app)
    set_tasks(firmware_app, rollout_id, ["TC-A02"], state="downloading", percent=42.0, attempts=1)
    serials = [f"TC-A{n:02d}" for n in range(3, 12)] + [f"TC-B{n:02d}" for n in range(6)]
    set_tasks(
        firmware_app, rollout_id, serials, state="failed", failure="verify", reason="bad signature"
    )
    page = text(admin.get(f"/rollouts/{rollout_id}"))
    in_flight = page[page.index('id="rollout-in-flight"') :]
    assert 'data-serial="TC-A02"' in in_flight and "42%" in in_flight
    assert 'id="tasks-failed">15<' in page and "15 terminals failed or rolled back" in page
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("console.rollout_screens.FAILURES_SHOWN", 10)
        first = text(admin.get(f"/rollouts/{rollout_id}"))
        assert first.count("bad signature") == 10 and "Failures 1–10 of 15" in first
        assert f"/rollouts/{rollout_id}?failures=10" in first
        second = text(admin.get(f"/rollouts/{rollout_id}?failures=10"))
        assert second.count("bad signature") == 5 and "Failures 11–15 of 15" in second
        assert f"/rollouts/{rollout_id}/live?failures=10" in second  # refreshed in place


def test_the_list_filters_by_state(firmware_app: Flask, admin: FlaskClient, stocked: Fleet) -> None:
    acme = sql_rows(firmware_app, "SELECT id FROM customer WHERE name = 'Acme'")[0][0]
    first = start(firmware_app, customers=frozenset({acme}))
    second = start(firmware_app)
    with Session(engine_of(firmware_app)) as session:
        manage.pause(session, second, "someone")
        session.commit()
    paused = text(admin.get("/rollouts?state=paused"))
    assert f'id="rollout-{second}"' in paused and f'id="rollout-{first}"' not in paused
    assert 'id="count-paused">1<' in paused and 'id="count-running">1<' in paused
    every = text(admin.get("/rollouts?state=nonsense"))
    assert f'id="rollout-{first}"' in every and f'id="rollout-{second}"' in every


# -- the REST API --------------------------------------------------------------------


def api(firmware_app: Flask, token: str, method: str, path: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    return firmware_app.test_client().open(path, method=method, headers=headers, json=body)


def test_the_api_previews_creates_reads_and_pages_the_tasks(
    firmware_app: Flask, stocked: Fleet, token_of: Callable[[str], str]
) -> None:
    token = token_of("admin")
    body = {"name": "By script", "version": RELEASE, "waves": "10%,50%,100%",
            "target": {"models": ["TC-200"]}, "policy": {"error_threshold_pct": 10}}  # fmt: skip
    preview = api(firmware_app, token, "POST", "/api/v1/rollouts", body | {"dry_run": True})
    assert preview.status_code == 200, preview.get_json()
    assert preview.get_json() == {
        "dry_run": True, "version": RELEASE, "waves": "10%,50%,100%", "total": 18,
        "wave_sizes": [2, 7, 9], "excluded": {"already on release": 1},
    }  # fmt: skip
    assert sql_rows(firmware_app, "SELECT id FROM rollout") == []
    created = api(firmware_app, token, "POST", "/api/v1/rollouts", body)
    assert created.status_code == 201, created.get_json()
    made = created.get_json()
    assert created.headers["Location"].endswith(f"/api/v1/rollouts/{made['id']}")
    assert (made["state"], made["total"], made["created_by"]) == ("running", 18, "admin-script")
    assert made["policy"]["error_threshold_pct"] == 10
    assert [(w["number"], w["size"], w["counts"]["queued"]) for w in made["waves"]] == [
        (1, 2, 2), (2, 7, 7), (3, 9, 9),
    ]  # fmt: skip
    assert audit(firmware_app)[0][:3] == ("admin-script", "rollout.create", f"rollout:{made['id']}")
    listed = api(firmware_app, token, "GET", "/api/v1/rollouts").get_json()
    assert [r["id"] for r in listed["rollouts"]] == [made["id"]] and listed["counts"]["running"]
    one = api(firmware_app, token, "GET", f"/api/v1/rollouts/{made['id']}").get_json()
    assert one["counts"]["queued"] == 18 and one["excluded"] == made["excluded"]
    serials: list[str] = []
    after = None
    while True:
        query = f"?limit=7&after={after}" if after else "?limit=7"
        page = api(
            firmware_app, token, "GET", f"/api/v1/rollouts/{made['id']}/tasks{query}"
        ).get_json()
        serials += [task["serial"] for task in page["tasks"]]
        after = page["next_after"]
        if after is None:
            break
    assert len(serials) == 18 and serials == sorted(serials) and page["total"] == 18
    set_tasks(
        firmware_app, made["id"], ["TC-B01"], state="failed", failure="download", reason="cut"
    )
    failed = api(
        firmware_app, token, "GET", f"/api/v1/rollouts/{made['id']}/tasks?state=failed,rolled_back"
    )
    assert [(t["serial"], t["failure"], t["reason"]) for t in failed.get_json()["tasks"]] == [
        ("TC-B01", "download", "cut"),
    ]  # fmt: skip
    wave_two = api(
        firmware_app, token, "GET", f"/api/v1/rollouts/{made['id']}/tasks?wave=2"
    ).get_json()
    assert wave_two["total"] == 7 and {t["wave"] for t in wave_two["tasks"]} == {2}


def test_the_api_steers_and_answers_409_when_the_state_refuses(
    firmware_app: Flask, stocked: Fleet, token_of: Callable[[str], str]
) -> None:
    token = token_of("admin")
    rollout_id = start(firmware_app, {"approve_each_wave": True})
    base = f"/api/v1/rollouts/{rollout_id}"
    paused = api(firmware_app, token, "POST", f"{base}/pause")
    assert paused.status_code == 200 and paused.get_json()["state"] == "paused"
    twice = api(firmware_app, token, "POST", f"{base}/pause")
    assert twice.status_code == 409 and "it is paused" in twice.get_json()["message"]
    resumed = api(firmware_app, token, "POST", f"{base}/resume", {"policy": {"max_failures": 3}})
    assert resumed.status_code == 200
    assert resumed.get_json()["policy"]["max_failures"] == 3
    bad_policy = api(firmware_app, token, "POST", f"{base}/resume", {"policy": {"max_fails": 3}})
    assert bad_policy.status_code == 409  # running: nothing to resume; the state comes first
    approved = api(firmware_app, token, "POST", f"{base}/approve", {"wave": 2})
    assert approved.status_code == 200
    assert approved.get_json()["waves"][1]["approved_by"] == "admin-script"
    again = api(firmware_app, token, "POST", f"{base}/approve", {"wave": 2})
    assert again.status_code == 409
    assert api(firmware_app, token, "POST", f"{base}/approve", {"wave": "two"}).status_code == 400
    cancelled = api(firmware_app, token, "POST", f"{base}/cancel")
    assert cancelled.status_code == 200 and cancelled.get_json()["state"] == "cancelled"
    assert cancelled.get_json()["counts"]["skipped"] == 18
    late = api(firmware_app, token, "POST", f"{base}/resume")
    assert late.status_code == 409 and late.get_json()["error"] == "conflict"
    missing = api(firmware_app, token, "POST", "/api/v1/rollouts/99999/pause")
    assert missing.status_code == 404 and missing.get_json()["message"] == "no rollout 99999"
    assert api(firmware_app, token, "GET", "/api/v1/rollouts/99999").status_code == 404


BAD_BODIES = [
    pytest.param({"target": {"customer": [1]}}, "unknown target field 'customer'", id="target-key"),
    pytest.param({"target": {"min_version": "x"}}, "is not a version", id="version"),
    pytest.param({"policy": {"error_threshold_pct": "5"}}, "error_threshold_pct: a number",
                 id="policy-type"),
    pytest.param({"policy": {"success_threshold_pct": 101}}, "between 0 and 100", id="policy"),
    pytest.param({"policy": {"window": "25:00-26:00"}}, "window:", id="window"),
    pytest.param({"waves": "50,10"}, "cumulative", id="waves"),
    pytest.param({"version": "2.6.0"}, "only a released image", id="draft"),
    pytest.param({"name": ""}, "name must be", id="no-name"),
    pytest.param({"dry_run": "yes"}, "dry_run must be true or false", id="dry-run"),
    pytest.param({"surprise": 1}, "unknown field 'surprise'", id="unknown-key"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "reason"), BAD_BODIES)
def test_the_api_refuses_a_bad_body_with_the_reason(
    firmware_app: Flask,
    stocked: Fleet,
    token_of: Callable[[str], str],
    change: dict[str, Any],
    reason: str,
) -> None:
    body = {"name": "By script", "version": RELEASE} | change
    refused = api(firmware_app, token_of("admin"), "POST", "/api/v1/rollouts", body)
    assert refused.status_code == 400, refused.get_json()
    assert reason in refused.get_json()["message"]
    assert sql_rows(firmware_app, "SELECT id FROM rollout") == []


@pytest.mark.parametrize("role", ROLES)
def test_the_api_lets_other_roles_read_but_not_act(
    firmware_app: Flask, stocked: Fleet, token_of: Callable[[str], str], role: str
) -> None:
    rollout_id = start(firmware_app)
    token = token_of(role)
    assert api(firmware_app, token, "GET", "/api/v1/rollouts").status_code == 200
    assert api(firmware_app, token, "GET", f"/api/v1/rollouts/{rollout_id}").status_code == 200
    assert (
        api(firmware_app, token, "GET", f"/api/v1/rollouts/{rollout_id}/tasks").status_code == 200
    )
    body = {"name": "x", "version": RELEASE, "dry_run": True}
    assert api(firmware_app, token, "POST", "/api/v1/rollouts", body).status_code == 403
    for action, action_body in (("pause", None), ("resume", None), ("cancel", None),
                                ("approve", {"wave": 1})):  # fmt: skip
        answer = api(
            firmware_app, token, "POST", f"/api/v1/rollouts/{rollout_id}/{action}", action_body
        )
        assert answer.status_code == 403 and answer.get_json()["error"] == "forbidden"
    assert rollout_row(firmware_app, rollout_id).state == "running"
    assert firmware_app.test_client().get("/api/v1/rollouts").status_code == 401
