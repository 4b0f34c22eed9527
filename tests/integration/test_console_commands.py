"""Remote commands in the console: buttons per role, form posts, history, reports, bulk."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlmodel import Session, select
from werkzeug.test import TestResponse

from commands import queue
from commands.queue import Requester
from shared.db import make_engine
from shared.models import AuditEvent, CommandRow
from tests.fixtures.console import Fleet, csrf_of, diagnostics_result, sign_in

pytestmark = pytest.mark.integration

BUTTONS = {
    "viewer": set(),
    "support": {"ping", "diagnostics", "fetch_logs"},
    "operator": {
        "ping", "diagnostics", "fetch_logs", "reboot", "restart_agent", "reset_usb", "set_config",
    },
}  # fmt: skip
BUTTONS["admin"] = BUTTONS["operator"]


@pytest.fixture
def signed_in(
    client: FlaskClient, make_user: Callable[..., str], fleet: Fleet
) -> Callable[[str], FlaskClient]:
    fleet.add_terminal("TC-1", customer="Acme")

    def sign(role: str) -> FlaskClient:
        make_user(f"{role}-user", role)
        sign_in(client, f"{role}-user")
        return client

    return sign


def _post(client: FlaskClient, path: str, **form: str) -> TestResponse:
    return client.post(path, data={"csrf_token": csrf_of(client), **form})


def _commands(database_url: str) -> list[CommandRow]:
    engine = make_engine(database_url, pool_size=1)
    with Session(engine) as session:
        rows = list(session.exec(select(CommandRow)).all())
    engine.dispose()
    return rows


def _buttons(page: str) -> set[str]:
    return {name for name in BUTTONS["operator"] if f'data-command="{name}"' in page}


@pytest.mark.parametrize("role", ["viewer", "support", "operator", "admin"])
def test_buttons_per_role(signed_in: Callable[[str], FlaskClient], role: str) -> None:
    page = signed_in(role).get("/terminals/TC-1").get_data(as_text=True)
    assert _buttons(page) == BUTTONS[role]
    assert 'id="command-history"' in page and 'id="terminal-log"' in page
    if role == "viewer":
        assert "can follow commands but not send them" in page


@pytest.mark.parametrize(("role", "name"), [("viewer", "ping"), ("support", "reboot")])
def test_a_form_post_the_role_may_not_send_is_403(
    signed_in: Callable[[str], FlaskClient], database_url: str, role: str, name: str
) -> None:
    client = signed_in(role)
    response = _post(client, "/terminals/TC-1/commands", name=name, confirmed="yes")
    assert response.status_code == 403
    assert _commands(database_url) == []


def test_send_queues_audits_and_shows_in_the_history(
    signed_in: Callable[[str], FlaskClient], database_url: str
) -> None:
    client = signed_in("support")
    response = _post(client, "/terminals/TC-1/commands", name="fetch_logs", arg_lines="25")
    assert response.status_code == 302
    [row] = _commands(database_url)
    assert (row.name, row.args, row.requested_by, row.requester_kind) == (
        "fetch_logs", {"lines": 25}, "support-user", "user",
    )  # fmt: skip
    assert response.headers["Location"].endswith(f"/terminals/TC-1#command-{row.id}")
    page = client.get("/terminals/TC-1").get_data(as_text=True)
    assert "Fetch logs: queued for TC-1" in page or "queued for TC-1" in page
    partial = client.get("/terminals/TC-1/activity").get_data(as_text=True)
    assert f'id="command-{row.id}"' in partial and "state-queued" in partial
    assert "lines 25" in partial and "by support-user" in partial and "<html" not in partial
    engine = make_engine(database_url, pool_size=1)
    with Session(engine) as session:
        audit = session.exec(select(AuditEvent).where(AuditEvent.action == "command.queued")).one()
    engine.dispose()
    assert audit.actor == "support-user" and audit.detail is not None
    assert audit.detail["via"] == "user"


@pytest.mark.parametrize(
    ("name", "form", "field", "message"),
    [
        ("fetch_logs", {"arg_lines": "0"}, "lines", "Lines: Input should be greater than"),
        ("fetch_logs", {"arg_lines": "lots"}, "lines", "Lines must be a whole number"),
        ("fetch_logs", {"arg_lines": "99999999999999999999999"}, "lines", "Lines:"),
        ("set_config", {}, None, "Fill in at least one setting"),
        ("set_config", {"arg_display_brightness": "101"}, "display_brightness", "less than"),
        ("set_config", {"arg_timezone": "../../etc"}, "timezone", "Time zone:"),
        ("set_config", {"arg_receipt_header": "x" * 65}, "receipt_header", "at most 64"),
    ],
)
def test_a_bad_field_is_shown_on_the_page(
    signed_in: Callable[[str], FlaskClient],
    database_url: str,
    name: str,
    form: dict[str, str],
    field: str | None,
    message: str,
) -> None:
    client = signed_in("operator")
    response = _post(client, "/terminals/TC-1/commands", name=name, **form)
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert 'id="command-error"' in page and message in page
    if field is not None:
        assert f'id="arg-{name}-{field}"' in page
        assert page.count('aria-invalid="true"') == 1
    for value in form.values():
        assert f'value="{value[:64]}' in page  # what was typed stays in the form
    assert _commands(database_url) == []


def test_set_config_writes_only_the_filled_fields(
    signed_in: Callable[[str], FlaskClient], database_url: str
) -> None:
    client = signed_in("operator")
    response = _post(
        client, "/terminals/TC-1/commands", name="set_config",
        arg_display_brightness="70", arg_beep_volume="", arg_timezone="Europe/Berlin",
        arg_receipt_header="  ",
    )  # fmt: skip
    assert response.status_code == 302
    [row] = _commands(database_url)
    assert row.args == {"display_brightness": 70, "timezone": "Europe/Berlin"}


def test_risky_commands_ask_first(
    signed_in: Callable[[str], FlaskClient], database_url: str
) -> None:
    client = signed_in("operator")
    page = client.get("/terminals/TC-1").get_data(as_text=True)
    assert page.count("data-confirm=") == 3
    # Without the page's script: a confirmation page, nothing queued yet.
    response = _post(client, "/terminals/TC-1/commands", name="reboot")
    assert response.status_code == 200 and "Reboot the TC-200 of TC-1?" in response.get_data(
        as_text=True
    )
    assert _commands(database_url) == []
    response = _post(client, "/terminals/TC-1/commands", name="reboot", confirmed="yes")
    assert response.status_code == 302
    assert [row.name for row in _commands(database_url)] == ["reboot"]


def test_form_posts_need_the_csrf_token(signed_in: Callable[[str], FlaskClient]) -> None:
    client = signed_in("operator")
    assert client.post("/terminals/TC-1/commands", data={"name": "ping"}).status_code == 400


def test_unknown_terminal_or_command(signed_in: Callable[[str], FlaskClient]) -> None:
    client = signed_in("operator")
    assert _post(client, "/terminals/NOPE/commands", name="ping").status_code == 404
    assert _post(client, "/terminals/TC-1/commands", name="nuke").status_code == 400
    assert client.get("/commands/nope").status_code == 404
    assert client.get("/commands/x%00y").status_code == 404
    assert client.get("/terminals/NOPE/activity").status_code == 404
    assert _post(client, "/commands/nope/cancel").status_code == 404


def test_cancel_from_the_page(
    signed_in: Callable[[str], FlaskClient], database_url: str, fleet: Fleet
) -> None:
    client = signed_in("support")
    _post(client, "/terminals/TC-1/commands", name="ping")
    [row] = _commands(database_url)
    assert 'action="/commands/' + row.id + '/cancel"' in client.get(
        "/terminals/TC-1/activity"
    ).get_data(as_text=True)
    response = _post(client, f"/commands/{row.id}/cancel")
    assert response.status_code == 302
    [row] = _commands(database_url)
    assert row.status == "cancelled" and row.cancelled_by == "support-user"
    partial = client.get("/terminals/TC-1/activity").get_data(as_text=True)
    assert "state-cancelled" in partial and "/cancel" not in partial
    # Cancelling twice says why, on the page.
    response = _post(client, f"/commands/{row.id}/cancel")
    assert "already cancelled" in client.get(response.headers["Location"]).get_data(as_text=True)


def test_others_commands_have_no_cancel_button_except_for_admins(
    console_app: Flask,
    client: FlaskClient,
    make_user: Callable[..., str],
    fleet: Fleet,
    database_url: str,
) -> None:
    fleet.add_terminal("TC-1")
    engine = make_engine(database_url, pool_size=1)
    with Session(engine) as session:
        view = queue.queue_command(session, Requester("olga", "operator", "user"), "TC-1", "ping")
    engine.dispose()
    make_user("otto", "operator")
    sign_in(client, "otto")
    assert "/cancel" not in client.get("/terminals/TC-1/activity").get_data(as_text=True)
    assert _post(client, f"/commands/{view.id}/cancel").status_code == 403
    make_user("ada", "admin")
    client = console_app.test_client()
    sign_in(client, "ada")
    assert "/cancel" in client.get("/terminals/TC-1/activity").get_data(as_text=True)
    assert _post(client, f"/commands/{view.id}/cancel").status_code == 302


def _queued(database_url: str, name: str, args: dict[str, Any] | None = None) -> str:
    engine = make_engine(database_url, pool_size=1)
    with Session(engine) as session:
        view = queue.queue_command(session, Requester("sam", "support", "user"), "TC-1", name, args)
    engine.dispose()
    return view.id


def test_diagnostics_report_page(
    signed_in: Callable[[str], FlaskClient], database_url: str, fleet: Fleet
) -> None:
    command_id = _queued(database_url, "diagnostics")
    fleet.finish_command(command_id, "succeeded", diagnostics_result())
    client = signed_in("viewer")  # anyone signed in reads reports
    partial = client.get("/terminals/TC-1/activity").get_data(as_text=True)
    summary = "3 of 11 checks failed; first: USB link — device does not answer; 1 warning"
    assert summary in partial and "Open report" in partial
    page = client.get(f"/commands/{command_id}").get_data(as_text=True)
    assert summary in page
    checks = [part.split('"')[0] for part in page.split('data-check="')[1:]]
    assert checks[:3] == ["usb_link", "device_self_test", "outbox"]  # failed first, run order
    assert checks[3] == "host_resources" and checks[4] == "tls" and len(checks) == 11
    assert page.count("failed first") == 1
    assert '<dt>disk_pct</dt><dd class="mono">91</dd>' in page
    assert "10.0.0.5" in page and "line 39" in page and "<details" in page


def test_every_report_is_kept(
    signed_in: Callable[[str], FlaskClient], database_url: str, fleet: Fleet
) -> None:
    first, second = _queued(database_url, "diagnostics"), _queued(database_url, "diagnostics")
    fleet.finish_command(first, "succeeded", diagnostics_result(failed=True))
    fleet.finish_command(second, "succeeded", diagnostics_result(failed=False))
    client = signed_in("support")
    assert "3 of 11 checks failed" in client.get(f"/commands/{first}").get_data(as_text=True)
    assert "All 11 checks passed; 1 warning" in client.get(f"/commands/{second}").get_data(
        as_text=True
    )


def test_other_results_render(
    signed_in: Callable[[str], FlaskClient], database_url: str, fleet: Fleet
) -> None:
    logs = _queued(database_url, "fetch_logs", {"lines": 2})
    fleet.finish_command(logs, "succeeded", {"lines": ["first <line>", "second line"]})
    ping = _queued(database_url, "ping")
    fleet.finish_command(ping, "succeeded", {"pong": True}, round_trip_ms=42)
    odd = _queued(database_url, "diagnostics")
    fleet.finish_command(odd, "succeeded", {"info": {"flags": 3}})  # an older agent's shape
    broken = _queued(database_url, "diagnostics")
    fleet.finish_command(broken, "failed", None, error="no result after 2 attempts")
    client = signed_in("support")
    page = client.get(f"/commands/{logs}").get_data(as_text=True)
    assert '<pre class="log">first &lt;line&gt;\nsecond line</pre>' in page
    assert "42 ms" in client.get(f"/commands/{ping}").get_data(as_text=True)
    assert "older format" in client.get(f"/commands/{odd}").get_data(as_text=True)
    page = client.get(f"/commands/{broken}").get_data(as_text=True)
    assert "no result after 2 attempts" in page
    partial = client.get("/terminals/TC-1/activity").get_data(as_text=True)
    assert "round trip 42 ms" in partial and "2 log lines" in partial
    assert "no result after 2 attempts" in partial


def test_terminal_log_and_facts(signed_in: Callable[[str], FlaskClient], fleet: Fleet) -> None:
    fleet.set_facts("TC-1", model="TC-200B", uptime_s=3 * 86_400 + 4 * 3600)
    fleet.add_log("TC-1", "paper low", severity="warning", code="printer.paper_low")
    fleet.add_log("TC-1", "tamper switch", severity="critical", code="tamper")
    page = signed_in("viewer").get("/terminals/TC-1").get_data(as_text=True)
    assert "TC-200B" in page and "3 d 4 h" in page
    assert page.index("tamper switch") < page.index("paper low")  # newest first
    assert "sev-critical" in page and "printer.paper_low" in page


def test_terminal_without_uptime_shows_a_dash(
    signed_in: Callable[[str], FlaskClient], fleet: Fleet
) -> None:
    page = signed_in("viewer").get("/terminals/TC-1").get_data(as_text=True)
    assert '<dd id="uptime">—</dd>' in page


# -- bulk ----------------------------------------------------------------------------------


@pytest.fixture
def bulk_fleet(fleet: Fleet) -> Fleet:
    for number in range(6):
        fleet.add_terminal(f"A-{number}", customer="Acme", status="offline" if number else "online")
    fleet.add_terminal("B-1", customer="Bolt")
    return fleet


def test_the_list_offers_a_bulk_command_to_senders_only(
    console_app: Flask, client: FlaskClient, make_user: Callable[..., str], bulk_fleet: Fleet
) -> None:
    make_user("vera", "viewer")
    sign_in(client, "vera")
    assert "Send a command to" not in client.get("/terminals?customer=Acme").get_data(as_text=True)
    assert client.get("/commands/bulk/new?customer=Acme").status_code == 403
    assert _post(client, "/commands/bulk", name="ping", expected="6").status_code == 403
    make_user("olga", "operator")
    client = console_app.test_client()
    sign_in(client, "olga")
    page = client.get("/terminals?customer=Acme&status=offline").get_data(as_text=True)
    assert "these 5 terminals" in page
    assert 'href="/commands/bulk/new?status=offline&amp;customer=Acme"' in page


def test_bulk_review_confirm_and_progress(
    client: FlaskClient, make_user: Callable[..., str], bulk_fleet: Fleet, database_url: str
) -> None:
    make_user("olga", "operator")
    sign_in(client, "olga")
    page = client.get("/commands/bulk/new?customer=Acme").get_data(as_text=True)
    assert 'id="bulk-count">6<' in page and "customer Acme" in page
    response = _post(client, "/commands/bulk/review", customer="Acme", name="reboot", rate="2")
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and 'id="bulk-confirm"' in page
    assert "Reboot terminal on 6 terminals" in page and "about 2 s from now" in page
    assert _commands(database_url) == []
    # The fleet changed between the count and the confirmation: ask again.
    bulk_fleet.add_terminal("A-9", customer="Acme")
    response = _post(
        client, "/commands/bulk", customer="Acme", name="reboot", rate="2", expected="6"
    )
    assert response.status_code == 200
    assert "now matches 7 terminals, not 6" in response.get_data(as_text=True)
    assert _commands(database_url) == []
    response = _post(
        client, "/commands/bulk", customer="Acme", name="reboot", rate="2", expected="7"
    )
    assert response.status_code == 302
    rows = _commands(database_url)
    assert len(rows) == 7 and {row.name for row in rows} == {"reboot"}
    progress = client.get(response.headers["Location"]).get_data(as_text=True)
    assert 'id="bulk-queued">7<' in progress and "0</strong> of 7 finished" in progress
    bulk_id = response.headers["Location"].rsplit("/", 1)[1]
    bulk_fleet.finish_command(rows[0].id, "succeeded", {"rebooting": True})
    partial = client.get(f"/commands/bulk/{bulk_id}/progress").get_data(as_text=True)
    assert 'id="bulk-succeeded">1<' in partial and 'id="bulk-queued">6<' in partial
    response = _post(client, f"/commands/bulk/{bulk_id}/cancel")
    assert response.status_code == 302
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert 'id="bulk-cancelled">6<' in page and 'id="bulk-cancel"' not in page


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"rate": "0"}, "Rate: rate must be between"),
        ({"rate": "fast"}, "Rate: a number is needed"),
        ({"rate": "nan"}, "Rate: rate must be between"),
        ({"name": ""}, "Choose a command."),
        ({"name": "fetch_logs", "arg_lines": "0"}, "Lines:"),
    ],
)
def test_bulk_form_errors_are_shown(
    client: FlaskClient,
    make_user: Callable[..., str],
    bulk_fleet: Fleet,
    form: dict[str, str],
    message: str,
) -> None:
    make_user("olga", "operator")
    sign_in(client, "olga")
    fields = {"customer": "Acme", "name": "ping", "rate": "5"} | form
    response = _post(client, "/commands/bulk/review", **fields)
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)


def test_support_bulk_is_limited_to_its_commands(
    client: FlaskClient, make_user: Callable[..., str], bulk_fleet: Fleet, database_url: str
) -> None:
    make_user("sam", "support")
    sign_in(client, "sam")
    page = client.get("/commands/bulk/new").get_data(as_text=True)
    assert 'value="ping"' in page and 'value="reboot"' not in page
    response = _post(client, "/commands/bulk", name="reboot", rate="5", expected="7")
    assert response.status_code == 403
    assert _commands(database_url) == []


# -- pure: how results read ------------------------------------------------------------------


def test_diagnostics_summary_wording() -> None:
    from console.formatting import diagnostics_summary
    from shared.diagnostics import DiagnosticsReport, report_of

    report = report_of(diagnostics_result())
    assert report is not None
    assert diagnostics_summary(report) == (
        "3 of 11 checks failed; first: USB link — device does not answer; 1 warning"
    )
    clean = report_of(diagnostics_result(failed=False))
    assert clean is not None and diagnostics_summary(clean) == "All 11 checks passed; 1 warning"
    assert diagnostics_summary(DiagnosticsReport(checks=[])) == "The report holds no checks"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "—"), (-3, "0 s"), (59, "59 s"), (60, "1 min"), (3 * 3600 + 120, "3 h 2 min"),
     (93_784, "1 d 2 h"), (10**12, "11574074 d 1 h")],
)  # fmt: skip
def test_duration(seconds: float | None, text: str) -> None:
    from console.formatting import duration

    assert duration(seconds) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "—"), (True, "yes"), (0.25, "0.25"), ([], "none"), (["a", 1], "a, 1"),
     ({"b": 1, "a": [1, {"x": None}]}, '{"a": [1, {"x": null}], "b": 1}'), ("ü", "ü")],
)  # fmt: skip
def test_data_value(value: Any, text: str) -> None:
    from console.formatting import data_value

    assert data_value(value) == text
