"""The alerts screen as operators use it: filters in the URL, keyset pages, bulk actions
(audited), storm incidents as one row, the live partial, and who may act."""

from __future__ import annotations

import html
import itertools
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
from flask.testing import FlaskClient

from tests.fixtures.console import Fleet, csrf_of, sign_in

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
_scopes = itertools.count()
_ALERT_ROW = re.compile(r'<tr id="alert-(\d+)"')
_CHECKBOX = re.compile(r'<input type="checkbox" name="alert" value="(\d+)"[^>]*?(checked)?>')


def add_alert(
    conn: psycopg.Connection[Any],
    *,
    serial: str | None = None,
    customer: str | None = None,
    kind: str = "offline",
    severity: str = "critical",
    status: str = "open",
    raised_at: datetime | None = None,
    incident: int | None = None,
    assignee: str | None = None,
    message: str = "",
) -> int:
    """One alert as ingest raises it (a terminal's, or a store PC's when no serial)."""
    row = conn.execute(
        "INSERT INTO alert (scope, kind, severity, status, message, count, terminal_id,"
        " customer_id, host_name, raised_at, incident_id, assignee_id)"
        " VALUES (%(scope)s, %(kind)s, %(severity)s, %(status)s, %(message)s, 1,"
        " (SELECT id FROM terminal WHERE serial = %(serial)s),"
        " COALESCE((SELECT customer_id FROM terminal WHERE serial = %(serial)s),"
        "          (SELECT id FROM customer WHERE name = %(customer)s)),"
        " CASE WHEN %(serial)s::text IS NULL THEN 'PC-1' END, %(raised_at)s, %(incident)s,"
        " (SELECT id FROM user_account WHERE username = %(assignee)s)) RETURNING id",
        {
            "scope": f"test:{next(_scopes)}",
            "kind": kind,
            "severity": severity,
            "status": status,
            "message": message or f"{serial or 'PC-1'}: {kind}",
            "serial": serial,
            "customer": customer,
            "raised_at": raised_at or NOW,
            "incident": incident,
            "assignee": assignee,
        },
    ).fetchone()
    assert row is not None
    return int(row[0])


def add_incident(conn: psycopg.Connection[Any], alert_count: int, summary: str) -> int:
    row = conn.execute(
        "INSERT INTO incident (status, severity, summary, alert_count, opened_at, last_alert_at)"
        " VALUES ('open', 'critical', %s, %s, now() - interval '10 minutes', now()) RETURNING id",
        (summary, alert_count),
    ).fetchone()
    assert row is not None
    return int(row[0])


def shown(client: FlaskClient, url: str) -> list[int]:
    """The alert rows of a page, in order (an incident's members included)."""
    response = client.get(url)
    assert response.status_code == 200, url
    return [int(n) for n in _ALERT_ROW.findall(response.get_data(as_text=True))]


def bulk(client: FlaskClient, ids: list[Any], query: str = "", **form: str) -> Any:
    data: dict[str, Any] = {"csrf_token": csrf_of(client), "alert": [str(i) for i in ids]}
    return client.post(f"/alerts/bulk{query}", data={**data, **form})


def flashed(client: FlaskClient) -> str:
    with client.session_transaction() as session:
        return " ".join(message for _, message in session.get("_flashes", []))


def audit_rows(database_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT actor, action, target, detail FROM audit_event"
            " WHERE action LIKE 'alert.%' ORDER BY id"
        ).fetchall()


def states(database_url: str, ids: list[int]) -> dict[int, tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT a.id, a.status, a.resolution_note, u.username, k.username FROM alert a"
            " LEFT JOIN user_account u ON u.id = a.assignee_id"
            " LEFT JOIN user_account k ON k.id = a.acknowledged_by WHERE a.id = ANY(%s)",
            (ids,),
        ).fetchall()
    return {row[0]: tuple(row[1:]) for row in rows}


@pytest.fixture
def conn(database_url: str) -> Any:
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def operator(client: FlaskClient, make_user: Callable[..., str]) -> FlaskClient:
    make_user("otto", "operator")
    make_user("sam", "support")
    sign_in(client, "otto")
    return client


# -- filters --------------------------------------------------------------------------------


def test_each_filter_narrows_the_list(
    operator: FlaskClient, fleet: Fleet, conn: psycopg.Connection[Any]
) -> None:
    fleet.add_terminal("TC-1001", customer="Acme Grocers", store="S1")
    fleet.add_terminal("TC-1002", customer="Acme Grocers", store="S2")
    fleet.add_terminal("TC-2001", customer="Bolt Pharmacy")
    t = timedelta(minutes=1)
    a_open = add_alert(conn, serial="TC-1001", raised_at=NOW - 1 * t)
    a_ack = add_alert(
        conn, serial="TC-1002", kind="error", severity="major", status="acknowledged",
        assignee="otto", raised_at=NOW - 2 * t,
    )  # fmt: skip
    a_res = add_alert(conn, serial="TC-2001", kind="disk", severity="warning",
                      status="resolved", raised_at=NOW - 3 * t)  # fmt: skip
    a_pc = add_alert(conn, customer="Bolt Pharmacy", kind="host_down", severity="major",
                     assignee="sam", raised_at=NOW - 4 * t)  # fmt: skip
    incident = add_incident(conn, 1, "storm")
    a_inc = add_alert(conn, serial="TC-2001", severity="info", incident=incident,
                      raised_at=NOW - 5 * t)  # fmt: skip

    assert shown(operator, "/alerts") == [a_open, a_ack, a_pc, a_inc]
    assert shown(operator, "/alerts?status=active") == [a_open, a_ack, a_pc, a_inc]
    assert shown(operator, "/alerts?status=open") == [a_open, a_pc, a_inc]
    assert shown(operator, "/alerts?status=acknowledged") == [a_ack]
    assert shown(operator, "/alerts?status=resolved") == [a_res]
    assert shown(operator, "/alerts?status=all") == [a_open, a_ack, a_res, a_pc, a_inc]
    assert shown(operator, "/alerts?status=nonsense") == [a_open, a_ack, a_pc, a_inc]
    assert shown(operator, "/alerts?severity=major") == [a_ack, a_pc]
    assert shown(operator, "/alerts?status=all&severity=warning") == [a_res]
    assert shown(operator, "/alerts?kind=error") == [a_ack]
    assert shown(operator, "/alerts?kind=no-such-kind") == []
    assert shown(operator, "/alerts?customer=Acme+Grocers") == [a_open, a_ack]
    assert shown(operator, "/alerts?customer=Bolt+Pharmacy&status=all") == [a_res, a_pc, a_inc]
    assert shown(operator, "/alerts?customer=Nobody+Inc") == []
    assert shown(operator, "/alerts?assignee=sam") == [a_pc]
    assert shown(operator, "/alerts?assignee=me") == [a_ack]  # otto is signed in
    assert shown(operator, "/alerts?assignee=none") == [a_open, a_inc]
    assert shown(operator, f"/alerts?incident={incident}") == [a_inc]
    assert shown(operator, "/alerts?q=TC-10") == [a_open, a_ack]
    assert shown(operator, "/alerts?q=tc-100") == [a_open, a_ack]  # any case
    assert shown(operator, "/alerts?q=TC-1001") == [a_open]
    assert shown(operator, "/alerts?q=%25") == []  # a LIKE wildcard is literal text
    assert shown(operator, "/alerts?q=C-10") == []  # a prefix, not a substring
    # Filters combine.
    assert shown(operator, "/alerts?customer=Acme+Grocers&severity=critical") == [a_open]
    assert shown(operator, "/alerts?status=all&q=TC-2&severity=warning") == [a_res]


def test_the_page_shows_its_filters_and_counts_under_them(
    operator: FlaskClient, fleet: Fleet, conn: psycopg.Connection[Any]
) -> None:
    fleet.add_terminal("TC-1001", customer="Acme Grocers")
    fleet.add_terminal("TC-2001", customer="Bolt Pharmacy")
    add_alert(conn, serial="TC-1001")
    add_alert(conn, serial="TC-1001", kind="error", severity="major", status="acknowledged")
    add_alert(conn, serial="TC-2001")
    add_alert(conn, serial="TC-2001", kind="disk", status="resolved")
    page = operator.get("/alerts?customer=Acme+Grocers&severity=critical").get_data(as_text=True)
    assert re.search(r'<option value="Acme Grocers" selected>', page)
    assert re.search(r'<option value="critical" selected>', page)

    def count(page: str, name: str) -> int:
        found = re.search(rf'id="count-{name}">(\d+)<', page)
        assert found, name
        return int(found.group(1))

    # Counts follow the customer filter; the status cards follow the severity filter too.
    assert (count(page, "active"), count(page, "open"), count(page, "acknowledged")) == (1, 1, 0)
    assert (count(page, "critical"), count(page, "major")) == (1, 1)
    everything = operator.get("/alerts").get_data(as_text=True)
    assert (count(everything, "active"), count(everything, "open")) == (3, 2)
    assert count(everything, "acknowledged") == 1
    # The live partial is asked with the same filters, and answers without the page.
    assert 'data-refresh-url="/alerts/live?severity=critical&amp;customer=Acme+Grocers"' in page
    live = operator.get("/alerts/live?severity=critical&customer=Acme+Grocers")
    body = live.get_data(as_text=True)
    assert live.status_code == 200 and "<html" not in body and 'id="alerts-table"' in body
    assert count(body, "active") == 1 and len(_ALERT_ROW.findall(body)) == 1


# -- pages ------------------------------------------------------------------------------------


def test_pages_walk_250_alerts_newest_first_each_once(
    operator: FlaskClient, conn: psycopg.Connection[Any]
) -> None:
    # Three alerts per second: the id breaks ties of raised_at. Ids do not follow time.
    ids = {
        add_alert(conn, customer="Acme", raised_at=NOW - timedelta(seconds=(n * 37 % 250) // 3))
        for n in range(250)
    }
    with conn.cursor() as cur:
        expected = [
            row[0] for row in cur.execute("SELECT id FROM alert ORDER BY raised_at DESC, id DESC")
        ]
    seen: list[int] = []
    url: str | None = "/alerts"
    pages = []
    while url is not None:
        page = operator.get(url).get_data(as_text=True)
        rows = [int(n) for n in _ALERT_ROW.findall(page)]
        pages.append(len(rows))
        seen += rows
        older = re.search(r'id="alerts-older" href="([^"]+)"', page)
        url = html.unescape(older.group(1)) if older else None
        if len(pages) > 1:
            assert 'id="alerts-newest" href="/alerts"' in page
        assert len(pages) < 10, "the pages do not end"
    assert pages == [100, 100, 50]
    assert seen == expected  # none twice, none missing, newest first
    assert set(seen) == ids
    # A page link past the oldest alert, or to an id that does not exist: an empty page.
    assert shown(operator, f"/alerts?before={expected[-1]}") == []
    assert shown(operator, "/alerts?before=2147483647") == []


def test_an_older_link_keeps_the_filters(
    operator: FlaskClient, fleet: Fleet, conn: psycopg.Connection[Any]
) -> None:
    for n in range(105):
        add_alert(conn, customer="Acme", severity="major", raised_at=NOW - timedelta(seconds=n))
    add_alert(conn, customer="Acme", severity="critical", raised_at=NOW - timedelta(seconds=200))
    page = operator.get("/alerts?severity=major").get_data(as_text=True)
    older = re.search(r'id="alerts-older" href="([^"]+)"', page)
    assert older is not None
    assert html.unescape(older.group(1)).startswith("/alerts?severity=major&before=")
    assert len(shown(operator, html.unescape(older.group(1)))) == 5


# -- storm incidents --------------------------------------------------------------------------


def test_an_incidents_alerts_are_one_row_that_opens_to_its_members(
    operator: FlaskClient, conn: psycopg.Connection[Any]
) -> None:
    before = add_alert(conn, customer="Acme", raised_at=NOW - timedelta(minutes=30))
    storm = add_incident(conn, 60, "alert storm: more than 50 alerts within 60 s")
    start = NOW - timedelta(minutes=20)
    members = [
        add_alert(conn, customer="Acme", incident=storm, raised_at=start - timedelta(seconds=n))
        for n in range(60)
    ]
    resolved_member = add_alert(
        conn, customer="Acme", incident=storm, status="resolved", raised_at=NOW
    )
    after = add_alert(conn, customer="Acme", raised_at=NOW - timedelta(minutes=10))
    page = operator.get("/alerts").get_data(as_text=True)
    # One row for the incident, between the alerts raised before and after its newest.
    assert page.count('class="incident-row"') == 1
    order = [m.group(0) for m in re.finditer(r'<tr id="(alert|incident-row)-\d+"', page)]
    assert order[0] == f'<tr id="alert-{after}"'
    assert order[1] == f'<tr id="incident-row-{storm}"'
    assert order[-1] == f'<tr id="alert-{before}"'
    assert f'<details id="incident-{storm}" class="incident">' in page
    assert "alert storm: more than 50 alerts within 60 s" in page
    assert "60 alerts" in page and "10 min ago" in page
    # Up to 50 members, the newest, inside it; a link lists all of them.
    rows = [int(n) for n in _ALERT_ROW.findall(page)]
    assert rows == [after, *members[:50], before]
    assert resolved_member not in rows  # the active list shows its active members
    assert f'href="/alerts?incident={storm}">' in page and "All 60 alerts of incident" in page
    assert shown(operator, f"/alerts?incident={storm}") == members
    assert shown(operator, f"/alerts?incident={storm}&status=all")[0] == resolved_member
    assert 'class="incident-row"' not in operator.get(f"/alerts?incident={storm}").get_data(
        as_text=True
    )
    # Filtered to nothing of the incident: no incident row.
    assert 'class="incident-row"' not in operator.get("/alerts?severity=info").get_data(
        as_text=True
    )


def test_an_incident_takes_one_place_in_a_page(
    operator: FlaskClient, conn: psycopg.Connection[Any]
) -> None:
    storm = add_incident(conn, 30, "storm")
    for n in range(30):
        add_alert(conn, customer="Acme", incident=storm, raised_at=NOW - timedelta(seconds=n))
    singles = [
        add_alert(conn, customer="Acme", raised_at=NOW - timedelta(minutes=1, seconds=n))
        for n in range(100)
    ]
    first = operator.get("/alerts").get_data(as_text=True)
    assert first.count('class="incident-row"') == 1
    assert _ALERT_ROW.findall(first)[30:] == [str(i) for i in singles[:99]]
    older = re.search(r'id="alerts-older" href="([^"]+)"', first)
    assert older is not None
    assert shown(operator, html.unescape(older.group(1))) == singles[99:]


# -- bulk actions ---------------------------------------------------------------------------


def test_an_operator_acknowledges_assigns_and_resolves_in_bulk_all_audited(
    operator: FlaskClient, conn: psycopg.Connection[Any], database_url: str
) -> None:
    a, b, c = (add_alert(conn, customer="Acme", kind=f"k{n}") for n in range(3))
    done = add_alert(conn, customer="Acme", kind="old", status="resolved")

    response = bulk(operator, [a, b], "?severity=critical", action="acknowledge")
    assert response.status_code == 302
    assert response.headers["Location"] == "/alerts?severity=critical"  # filters kept
    assert flashed(operator) == "2 alerts acknowledged."
    response = bulk(operator, [a, b, c], action="acknowledge")
    assert flashed(operator) == "1 alert acknowledged. 2 were already acknowledged or resolved."

    bulk(operator, [a, b, done], action="assign", assignee="sam")
    assert flashed(operator) == "2 alerts assigned. 1 was already so assigned, or resolved."
    bulk(operator, [a], action="assign", assignee="-")  # nobody
    assert flashed(operator) == "1 alert assigned."

    bulk(operator, [a, b, done], action="resolve", note="  store rebooted the PC  ")
    assert flashed(operator) == "2 alerts resolved. 1 was already resolved."
    assert states(database_url, [a, b, c]) == {
        a: ("resolved", "store rebooted the PC", None, "otto"),
        b: ("resolved", "store rebooted the PC", "sam", "otto"),
        c: ("acknowledged", None, None, "otto"),
    }
    assert audit_rows(database_url) == [
        ("otto", "alert.acknowledge", f"alert:{a}", {"bulk": True}),
        ("otto", "alert.acknowledge", f"alert:{b}", {"bulk": True}),
        ("otto", "alert.acknowledge", f"alert:{c}", {"bulk": True}),
        ("otto", "alert.assign", f"alert:{a}", {"bulk": True, "assignee": "sam"}),
        ("otto", "alert.assign", f"alert:{b}", {"bulk": True, "assignee": "sam"}),
        ("otto", "alert.assign", f"alert:{a}", {"bulk": True, "assignee": None}),
        ("otto", "alert.resolve", f"alert:{a}", {"bulk": True, "note": "store rebooted the PC"}),
        ("otto", "alert.resolve", f"alert:{b}", {"bulk": True, "note": "store rebooted the PC"}),
    ]
    assert shown(operator, "/alerts") == [c]  # the resolved ones left the active list


def test_resolving_needs_a_note_shown_beside_the_field_with_the_selection_kept(
    operator: FlaskClient, conn: psycopg.Connection[Any], database_url: str
) -> None:
    a, b = (add_alert(conn, customer="Acme", kind=f"k{n}") for n in range(2))
    response = bulk(operator, [a], "?status=open", action="resolve", note="   ")
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert re.search(r'id="bulk-note"[^>]*aria-invalid="true"', page)
    assert 'class="field-error" id="bulk-note-error"' in page
    assert "a note is required" in page
    checked = {int(n) for n, mark in _CHECKBOX.findall(page) if mark}
    assert checked == {a}  # ticked again, ready to try once more
    assert 'action="/alerts/bulk?status=open"' in page
    assert states(database_url, [a, b])[a][0] == "open" and audit_rows(database_url) == []


@pytest.mark.parametrize(
    ("form", "field", "message"),
    [
        ({"action": "acknowledge"}, "alert", "Select alerts first."),
        ({"action": "delete"}, "action", "Choose Acknowledge, Assign or Resolve."),
        ({}, "action", "Choose Acknowledge, Assign or Resolve."),
        ({"action": "assign", "assignee": ""}, "assignee", "Choose whom to assign them to."),
        ({"action": "assign", "assignee": "ghost"}, "assignee", "There is no active user"),
    ],
)
def test_a_bulk_form_without_what_it_needs_is_a_400_saying_what(
    operator: FlaskClient,
    conn: psycopg.Connection[Any],
    database_url: str,
    form: dict[str, str],
    field: str,
    message: str,
) -> None:
    alert = add_alert(conn, customer="Acme")
    ids = [] if field == "alert" else [alert]
    response = bulk(operator, ids, **form)
    assert response.status_code == 400
    page = html.unescape(response.get_data(as_text=True))
    assert f'id="bulk-{field}-error"' in page and message in page
    assert audit_rows(database_url) == []


def test_ids_that_are_not_alerts_are_reported_not_a_500(
    operator: FlaskClient, conn: psycopg.Connection[Any], database_url: str
) -> None:
    alert = add_alert(conn, customer="Acme")
    response = bulk(
        operator, [alert, "abc", "99999999", "-1", "9" * 50, "1.5"], action="acknowledge"
    )
    assert response.status_code == 302
    assert flashed(operator) == (
        "1 alert acknowledged. No such alert: 99999999."
        f" Not an alert id: 'abc', '-1', '{'9' * 40}', '1.5'."
    )
    assert states(database_url, [alert])[alert][0] == "acknowledged"
    # Nothing usable at all: said beside the selection, with a 400.
    response = bulk(operator, ["x", "<script>"], action="acknowledge")
    assert response.status_code == 400
    assert "None of these is an alert: &#39;x&#39;, &#39;&lt;script&gt;&#39;." in (
        response.get_data(as_text=True)
    )
    # Only missing ids: nothing changed, and said so.
    assert bulk(operator, [2_000_000_000], action="resolve", note="n").status_code == 302
    assert flashed(operator) == "0 alerts resolved. No such alert: 2000000000."


def test_at_most_500_alerts_at_once(
    operator: FlaskClient, conn: psycopg.Connection[Any], database_url: str
) -> None:
    alert = add_alert(conn, customer="Acme")
    response = bulk(operator, [alert, *range(10_000, 10_500)], action="acknowledge")
    assert response.status_code == 400
    assert "Select at most 500 alerts at once." in response.get_data(as_text=True)
    assert states(database_url, [alert])[alert][0] == "open"
    assert bulk(operator, [alert, *range(10_000, 10_499)], action="acknowledge").status_code == 302
    assert states(database_url, [alert])[alert][0] == "acknowledged"


# -- roles ------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "support"])
def test_viewers_and_support_see_alerts_without_checkboxes_and_cannot_post(
    client: FlaskClient,
    make_user: Callable[..., str],
    conn: psycopg.Connection[Any],
    database_url: str,
    role: str,
) -> None:
    alert = add_alert(conn, customer="Acme", message="PC-1 is down")
    make_user("watcher", role)
    sign_in(client, "watcher")
    for url in ("/alerts", "/alerts/live"):
        page = client.get(url).get_data(as_text=True)
        assert "PC-1 is down" in page
        assert 'type="checkbox"' not in page and 'id="alert-bulk"' not in page
    for action in ("acknowledge", "assign", "resolve"):
        form = {"action": action, "note": "n", "assignee": "watcher"}
        assert bulk(client, [alert], **form).status_code == 403
    assert states(database_url, [alert])[alert][0] == "open"
    assert audit_rows(database_url) == []


def test_operators_and_admins_get_checkboxes(
    client: FlaskClient, make_user: Callable[..., str], conn: psycopg.Connection[Any]
) -> None:
    alert = add_alert(conn, customer="Acme")
    make_user("ada", "admin")
    sign_in(client, "ada")
    page = client.get("/alerts").get_data(as_text=True)
    assert f'value="{alert}" form="alert-bulk"' in page and 'id="alert-bulk"' in page
    assert client.get("/alerts/live").get_data(as_text=True).count('type="checkbox"') == 1


def test_signed_out_the_list_and_the_partial_ask_to_sign_in(client: FlaskClient) -> None:
    for url in ("/alerts", "/alerts/live?" + urlencode({"status": "open"})):
        response = client.get(url)
        assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_a_halted_rollouts_alert_has_no_terminal_and_links_its_rollout(
    operator: FlaskClient, conn: Any, fleet: Fleet, database_url: str
) -> None:
    fleet.add_terminal("TC-1", customer="Acme")
    terminal = add_alert(conn, serial="TC-1", message="TC-1: offline")
    # As the rollout driver writes it (rollouts/driver.py): no terminal, no customer.
    row = conn.execute(
        "INSERT INTO alert (scope, kind, severity, status, message, count)"
        " VALUES ('rollout:7', 'rollout_halted', 'critical', 'open',"
        " 'rollout 7 (pilot) halted: wave 1: 2 of 10 failed', 1),"
        " ('rollout:99999999999', 'rollout_halted', 'critical', 'open', 'odd scope', 1)"
        " RETURNING id"
    ).fetchall()
    halted, odd = (int(r[0]) for r in row)
    page = operator.get("/alerts").get_data(as_text=True)
    assert shown(operator, "/alerts") == [odd, halted, terminal]
    cells = page.split(f'<tr id="alert-{halted}"')[1].split("</tr>")[0]
    assert '<a href="/rollouts/7">rollout 7</a>' in cells
    assert "rollout_halted" in cells and "halted: wave 1: 2 of 10 failed" in cells
    # A scope that names no possible rollout is shown without a link, not a 500.
    cells = page.split(f'<tr id="alert-{odd}"')[1].split("</tr>")[0]
    assert "/rollouts/" not in cells and ">—<" in cells
    # It is filtered like any alert: by kind, and not under a customer or a serial.
    assert shown(operator, "/alerts?kind=rollout_halted") == [odd, halted]
    assert shown(operator, "/alerts?customer=Acme") == [terminal]
    assert shown(operator, "/alerts?q=TC-") == [terminal]
    # And acted on like any: resolved with a note, audited.
    assert bulk(operator, [halted], action="resolve", note="bad image pulled").status_code == 302
    assert states(database_url, [halted])[halted][:2] == ("resolved", "bad image pulled")
