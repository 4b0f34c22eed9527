"""The customers screens on real PostgreSQL: the list's counts, one customer's page
(stores, terminals by status, open alerts, uptime from the fleet samples), adding and
editing customers and stores with every bad field shown beside it, each change audited,
and only operators and admins may change anything, even by posting."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask, url_for
from flask.testing import FlaskClient
from markupsafe import escape
from sqlalchemy import text
from sqlmodel import Session, col, select

from console import customer_repository, customers
from console.db import engine_of
from shared.models import AuditEvent, Customer, Store
from tests.fixtures.console import Fleet, csrf_of, sign_in

pytestmark = pytest.mark.integration

NEW = {
    "name": "Nordkauf AG",
    "contact_person": "Ída Þórsdóttir",
    "email": "it@nordkauf.example",
    "phone": "+49 40 555-0100",
    "contract_type": "premium",
    "timezone": "Europe/Berlin",
}


@pytest.fixture(autouse=True)
def customers_screens(console_app: Flask) -> Flask:
    """The blueprint on the app until console.app registers it itself."""
    if "customers" not in console_app.blueprints:
        console_app.register_blueprint(customers.bp)
    return console_app


def as_role(client: FlaskClient, make_user: Callable[..., str], role: str) -> FlaskClient:
    sign_in(client, make_user(f"{role}-user", role))
    return client


@pytest.fixture
def operator(client: FlaskClient, make_user: Callable[..., str]) -> FlaskClient:
    return as_role(client, make_user, "operator")


@pytest.fixture
def viewer(client: FlaskClient, make_user: Callable[..., str]) -> FlaskClient:
    return as_role(client, make_user, "viewer")


def post(client: FlaskClient, path: str, data: dict[str, str]) -> tuple[int, str]:
    response = client.post(path, data={**data, "csrf_token": csrf_of(client)})
    return response.status_code, response.get_data(as_text=True)


def page(client: FlaskClient, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_data(as_text=True)


def sql(app: Flask, statement: str, **params: Any) -> list[Any]:
    with Session(engine_of(app)) as session:
        result = session.execute(text(statement), params)
        rows = list(result) if result.returns_rows else []
        session.commit()
        return rows


def customer_named(app: Flask, name: str) -> Customer:
    with Session(engine_of(app)) as session:
        found = session.exec(select(Customer).where(Customer.name == name)).one()
        session.expunge(found)
        return found


def store_of(app: Flask, customer_id: int, code: str) -> Store:
    with Session(engine_of(app)) as session:
        found = session.exec(
            select(Store).where(Store.customer_id == customer_id, Store.code == code)
        ).one()
        session.expunge(found)
        return found


def audit(app: Flask, prefix: str) -> list[AuditEvent]:
    with Session(engine_of(app)) as session:
        rows = session.exec(
            select(AuditEvent)
            .where(col(AuditEvent.action).startswith(prefix))
            .order_by(col(AuditEvent.id))
        ).all()
        for row in rows:
            session.expunge(row)
        return list(rows)


def counts_row(html: str, customer_id: int) -> dict[str, int]:
    row = html.split(f'id="customer-{customer_id}"')[1].split("</tr>")[0]
    return {name: int(value) for name, value in re.findall(r'data-count="(\w+)">(\d+)<', row)}


def add_alert(
    app: Flask,
    *,
    serial: str | None = None,
    customer_id: int | None = None,
    kind: str = "offline",
    status: str = "open",
    message: str = "",
    raised_at: datetime | None = None,
) -> None:
    sql(
        app,
        "INSERT INTO alert (terminal_id, customer_id, scope, kind, severity, status, message,"
        " count, raised_at)"
        " VALUES ((SELECT id FROM terminal WHERE serial = :serial), :customer, :scope, :kind,"
        " 'warning', :status, :message, 1, :raised)",
        serial=serial,
        customer=customer_id,
        scope=f"terminal:{serial}" if serial else f"host:{customer_id}:{kind}",
        kind=kind,
        status=status,
        message=message,
        raised=raised_at or datetime.now(UTC),
    )


def add_sample(
    app: Flask, customer_id: int, bucket: datetime, online: int, in_service: int
) -> None:
    sql(
        app,
        "INSERT INTO fleet_sample (bucket, customer_id, in_service, online, offline, error,"
        " unknown, maintenance) VALUES (:bucket, :customer, :in_service, :online,"
        " :in_service - :online, 0, 0, 0)",
        bucket=bucket,
        customer=customer_id,
        in_service=in_service,
        online=online,
    )


@pytest.fixture
def shops(fleet: Fleet, console_app: Flask) -> Iterator[dict[str, int]]:
    """Two customers: ACME with two stores and terminals in every status, Beta with one."""
    for serial, store, status in [
        ("A-1", "S1", "online"),
        ("A-2", "S1", "online"),
        ("A-3", "S1", "error"),
        ("A-4", "S2", "offline"),
        ("A-5", "S2", "decommissioned"),
        ("A-6", None, "unknown"),
    ]:
        fleet.add_terminal(serial, customer="ACME", store=store, status=status)
    fleet.add_terminal("B-1", customer="Beta Foods", store="S1", status="error")
    ids = {name: customer_named(console_app, name).id for name in ("ACME", "Beta Foods")}
    assert all(ids.values())
    yield {name: value for name, value in ids.items() if value is not None}


def test_the_list_shows_each_customers_counts(
    viewer: FlaskClient, console_app: Flask, shops: dict[str, int]
) -> None:
    add_alert(console_app, serial="A-3", kind="error")
    add_alert(console_app, serial="A-4", kind="offline")
    add_alert(console_app, serial="A-1", kind="offline", status="resolved")
    add_alert(console_app, customer_id=shops["ACME"], kind="host_down")  # a store PC
    add_alert(console_app, serial="B-1", kind="error", status="acknowledged")
    html = page(viewer, "/customers")
    assert counts_row(html, shops["ACME"]) == {
        "in_service": 5, "online": 2, "error": 1, "open_alerts": 3, "stores": 2,
    }  # fmt: skip
    assert counts_row(html, shops["Beta Foods"]) == {
        "in_service": 1, "online": 0, "error": 1, "open_alerts": 1, "stores": 1,
    }  # fmt: skip
    assert html.index("ACME") < html.index("Beta Foods")


def test_a_customer_without_terminals_is_listed_with_zeros(
    operator: FlaskClient, console_app: Flask
) -> None:
    assert post(operator, "/customers", NEW)[0] == 302
    customer = customer_named(console_app, NEW["name"])
    assert customer.id is not None
    assert counts_row(page(operator, "/customers"), customer.id) == {
        "in_service": 0, "online": 0, "error": 0, "open_alerts": 0, "stores": 0,
    }  # fmt: skip


def test_the_search_matches_part_of_the_name_in_any_case_and_literally(
    viewer: FlaskClient, fleet: Fleet
) -> None:
    for name in ("ACME", "Beta Foods", "100% Retail", "1000 Retail"):
        fleet.add_terminal(f"T-{name}", customer=name)
    html = page(viewer, "/customers?q=acm")
    assert "ACME" in html and "Beta Foods" not in html
    html = page(viewer, "/customers?q=100%25")
    assert "100% Retail" in html and "1000 Retail" not in html
    html = page(viewer, "/customers?q=_")
    assert "No customer&#39;s name contains" in html or "No customer's name contains" in html
    assert "ACME" not in html


def test_an_operator_adds_a_customer_and_it_is_audited(
    operator: FlaskClient, console_app: Flask
) -> None:
    response = operator.post("/customers", data={**NEW, "csrf_token": csrf_of(operator)})
    assert response.status_code == 302
    customer = customer_named(console_app, NEW["name"])
    assert response.headers["Location"] == f"/customers/{customer.id}"
    assert {name: getattr(customer, name) for name in NEW} == NEW
    assert customer.updated_at is not None
    (event,) = audit(console_app, "customer.")
    assert (event.actor, event.action, event.target) == (
        "operator-user", "customer.created", NEW["name"],
    )  # fmt: skip
    assert event.detail == {"id": customer.id, **NEW}
    html = page(operator, f"/customers/{customer.id}")
    assert "Ída Þórsdóttir" in html and "it@nordkauf.example" in html
    assert "Customer Nordkauf AG added." in html


def test_the_new_customer_form_offers_the_choices(operator: FlaskClient) -> None:
    html = page(operator, "/customers/new")
    assert '<option value="premium"' in html and '<option value="Europe/Berlin">' in html
    assert 'name="csrf_token"' in html


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "", "Enter the company name."),
        ("name", "é" * 201, "at most 200 characters"),
        ("name", "Tab\there", "control characters"),
        ("email", "nobody", "e-mail address like"),
        ("phone", "call me", "digits, spaces"),
        ("phone", "1" * 65, "at most 64"),
        ("contract_type", "platinum", "Choose one of: basic, standard, premium."),
        ("timezone", "Berlin", "not an IANA time zone"),
    ],
)
def test_a_bad_field_is_shown_beside_it_and_nothing_is_written(
    operator: FlaskClient, console_app: Flask, field: str, value: str, message: str
) -> None:
    status, html = post(operator, "/customers", {**NEW, field: value})
    assert status == 400
    assert message in html
    # Beside its own field: the input marked invalid and pointing at its message.
    assert re.search(
        rf'id="{field}" name="{field}"[^>]*aria-invalid="true" aria-describedby="{field}-error"',
        html,
    )
    assert f'<p class="field-error" id="{field}-error">' in html
    assert html.count('class="field-error"') == 1
    assert sql(console_app, "SELECT count(*) FROM customer")[0][0] == 0
    assert audit(console_app, "customer.") == []


def test_worst_values(operator: FlaskClient, console_app: Flask) -> None:
    longest = "Ω" + "ü" * 198 + "😀"
    assert post(operator, "/customers", {**NEW, "name": longest})[0] == 302
    assert customer_named(console_app, longest).name == longest
    status, html = post(operator, "/customers", {**NEW, "name": "<script>alert(1)</script>"})
    assert status == 302
    listing = page(operator, "/customers")
    assert "<script>alert(1)</script>" not in listing
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in listing
    status, html = post(operator, "/customers", {**NEW, "name": "Nul\x00Byte"})
    assert status == 400 and "NUL byte" in html
    assert sql(console_app, "SELECT count(*) FROM customer")[0][0] == 2


@pytest.mark.parametrize("clash", ["ACME", "acme", "Acme"])
def test_a_name_in_use_in_any_case_is_refused(
    operator: FlaskClient, console_app: Flask, fleet: Fleet, clash: str
) -> None:
    fleet.add_terminal("A-1", customer="ACME")
    status, html = post(operator, "/customers", {**NEW, "name": clash})
    assert status == 400
    assert "There is already a customer called &#39;ACME&#39;." in html
    assert 'aria-describedby="name-error"' in html
    assert sql(console_app, "SELECT count(*) FROM customer")[0][0] == 1
    assert audit(console_app, "customer.") == []


def test_letter_case_outside_ascii_clashes_too(operator: FlaskClient, console_app: Flask) -> None:
    assert post(operator, "/customers", {**NEW, "name": "Ärzte Straße"})[0] == 302
    status, html = post(operator, "/customers", {**NEW, "name": "ÄRZTE STRASSE"})
    assert status == 400 and "There is already a customer called" in html


def test_an_edit_saves_and_audits_only_the_changed_fields(
    operator: FlaskClient, console_app: Flask
) -> None:
    post(operator, "/customers", NEW)
    customer = customer_named(console_app, NEW["name"])
    form = page(operator, f"/customers/{customer.id}/edit")
    assert 'value="Ída Þórsdóttir"' in form and 'value="Europe/Berlin"' in form
    changed = {**NEW, "name": "Nordkauf SE", "phone": "", "contract_type": "basic"}
    response = operator.post(
        f"/customers/{customer.id}/edit", data={**changed, "csrf_token": csrf_of(operator)}
    )
    assert response.status_code == 302
    after = customer_named(console_app, "Nordkauf SE")
    assert (after.id, after.phone, after.contract_type) == (customer.id, "", "basic")
    assert after.updated_at and customer.updated_at and after.updated_at > customer.updated_at
    event = audit(console_app, "customer.")[-1]
    assert (event.action, event.target) == ("customer.updated", "Nordkauf SE")
    assert event.detail == {
        "id": customer.id,
        "changes": {
            "name": {"from": "Nordkauf AG", "to": "Nordkauf SE"},
            "phone": {"from": "+49 40 555-0100", "to": ""},
            "contract_type": {"from": "premium", "to": "basic"},
        },
    }
    # Saving it unchanged writes nothing.
    assert post(operator, f"/customers/{customer.id}/edit", changed)[0] == 302
    assert len(audit(console_app, "customer.")) == 2
    assert "nothing changed" in page(operator, f"/customers/{customer.id}")


def test_a_bad_edit_is_refused_beside_the_field(
    operator: FlaskClient, console_app: Flask, fleet: Fleet
) -> None:
    fleet.add_terminal("A-1", customer="ACME")
    post(operator, "/customers", NEW)
    customer = customer_named(console_app, NEW["name"])
    status, html = post(operator, f"/customers/{customer.id}/edit", {**NEW, "name": "acme"})
    assert status == 400 and 'aria-describedby="name-error"' in html
    status, html = post(operator, f"/customers/{customer.id}/edit", {**NEW, "email": "a@b"})
    assert status == 400 and 'aria-describedby="email-error"' in html
    assert customer_named(console_app, NEW["name"]).email == NEW["email"]
    assert len(audit(console_app, "customer.")) == 1  # the creation only


def test_renaming_in_letter_case_only_is_allowed(operator: FlaskClient, console_app: Flask) -> None:
    post(operator, "/customers", NEW)
    customer = customer_named(console_app, NEW["name"])
    status, _ = post(operator, f"/customers/{customer.id}/edit", {**NEW, "name": "NORDKAUF AG"})
    assert status == 302
    assert customer_named(console_app, "NORDKAUF AG").id == customer.id


def test_the_customer_page(viewer: FlaskClient, console_app: Flask, shops: dict[str, int]) -> None:
    acme = shops["ACME"]
    now = datetime.now(UTC)
    add_alert(console_app, serial="A-3", kind="error", message="printer jam",
              raised_at=now - timedelta(hours=2))  # fmt: skip
    add_alert(console_app, serial="A-4", kind="offline", message="gone quiet",
              raised_at=now - timedelta(minutes=5))  # fmt: skip
    add_alert(console_app, serial="A-1", kind="offline", message="old news", status="resolved")
    add_alert(console_app, serial="B-1", kind="error", message="other customer")
    html = page(viewer, f"/customers/{acme}")
    # Stores with their terminals.
    s1 = store_of(console_app, acme, "S1")
    row = html.split(f'id="store-{s1.id}"')[1].split("</tr>")[0]
    assert re.findall(r'class="num[^"]*">(\d+)<', row) == ["3", "2", "1"]
    # Terminals by status, linked to the terminal list for this customer.
    status_row = html.split('id="status-online"')[1].split("</tr>")[0]
    assert re.findall(r'class="num">(\d+)<', status_row) == ["2", "0"]
    with console_app.test_request_context():
        listed = url_for("terminals.index", customer="ACME")
        in_error = url_for("terminals.index", customer="ACME", status="error")
    assert f'href="{listed}"' in html
    assert f'href="{escape(in_error)}"' in html
    # Open alerts, newest first, with serial and store; resolved and others' left out.
    assert html.index("gone quiet") < html.index("printer jam")
    assert "old news" not in html and "other customer" not in html
    alert_row = html.split("gone quiet")[0].rsplit("<tr", 1)[1]
    assert "A-4" in alert_row and "S2" in alert_row
    assert 'id="uptime-today">—<' in html and 'id="uptime-month">—<' in html


def test_the_open_alerts_show_at_most_fifty(
    viewer: FlaskClient, console_app: Flask, fleet: Fleet
) -> None:
    for number in range(55):
        fleet.add_terminal(f"M-{number:02d}", customer="Many", status="offline")
        raised = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=number)
        add_alert(console_app, serial=f"M-{number:02d}", message=f"alert {number:02d}",
                  raised_at=raised)  # fmt: skip
    customer = customer_named(console_app, "Many")
    html = page(viewer, f"/customers/{customer.id}")
    assert html.count('id="alert-') == 50
    assert "alert 54" in html and "alert 05" in html and "alert 04" not in html
    assert "newest 50 of 55" in html


def test_uptime_today_and_this_month_from_the_fleet_samples(
    viewer: FlaskClient, console_app: Flask, shops: dict[str, int]
) -> None:
    acme, beta = shops["ACME"], shops["Beta Foods"]
    day, month = customer_repository.period_starts(datetime.now(UTC), ZoneInfo("UTC"))
    add_sample(console_app, acme, day, online=9, in_service=10)
    add_sample(console_app, acme, day + timedelta(minutes=5), online=10, in_service=10)
    add_sample(console_app, acme, month - timedelta(minutes=5), online=0, in_service=10)
    add_sample(console_app, beta, day, online=1, in_service=10)  # not ACME's
    html = page(viewer, f"/customers/{acme}")
    assert 'id="uptime-today">95.00%<' in html
    assert 'id="uptime-month">95.00%<' in html
    assert 'id="uptime-today">10.00%<' in page(viewer, f"/customers/{beta}")


def test_uptime_periods_are_the_customers_days_and_months(console_app: Flask, fleet: Fleet) -> None:
    fleet.add_terminal("NY-1", customer="Big Apple")
    sql(console_app, "UPDATE customer SET timezone = 'America/New_York'")
    customer = customer_named(console_app, "Big Apple")
    assert customer.id is not None
    # 04:00 UTC on 1 March is 23:00 on 28 February in New York.
    now = datetime(2026, 3, 1, 4, 0, tzinfo=UTC)
    add_sample(console_app, customer.id, datetime(2026, 3, 1, 3, 0, tzinfo=UTC), 10, 10)  # today
    add_sample(console_app, customer.id, datetime(2026, 2, 28, 4, 0, tzinfo=UTC), 0, 10)  # 27 Feb
    add_sample(console_app, customer.id, datetime(2026, 2, 1, 4, 0, tzinfo=UTC), 0, 30)  # January
    with Session(engine_of(console_app)) as session:
        uptime = customer_repository.uptime(session, customer, now)
    assert (uptime.today, uptime.month, uptime.timezone) == (1.0, 0.5, "America/New_York")
    # Samples with nothing in service say nothing: a dash, not 0 %.
    add_sample(console_app, customer.id, datetime(2026, 3, 2, 6, 0, tzinfo=UTC), 0, 0)
    with Session(engine_of(console_app)) as session:
        later = customer_repository.uptime(session, customer, datetime(2026, 3, 2, 7, tzinfo=UTC))
    assert later.today is None and later.month is None


def test_an_operator_adds_and_edits_a_store(
    operator: FlaskClient, console_app: Flask, shops: dict[str, int]
) -> None:
    acme = shops["ACME"]
    store = {"code": "S3", "name": "Hafen", "timezone": "europe/berlin"}
    response = operator.post(
        f"/customers/{acme}/stores", data={**store, "csrf_token": csrf_of(operator)}
    )
    assert response.status_code == 302
    added = store_of(console_app, acme, "S3")
    assert (added.name, added.timezone) == ("Hafen", "Europe/Berlin")
    (event,) = audit(console_app, "store.")
    assert (event.action, event.target) == ("store.created", "ACME/S3")
    assert event.detail == {
        "id": added.id, "customer_id": acme, "code": "S3", "name": "Hafen",
        "timezone": "Europe/Berlin", "maintenance_window": None,
    }  # fmt: skip
    path = f"/customers/{acme}/stores/{added.id}/edit"
    assert 'value="Hafen"' in page(operator, path)
    assert post(operator, path, {"code": "S3", "name": "Hafen Nord", "timezone": "UTC"})[0] == 302
    assert store_of(console_app, acme, "S3").name == "Hafen Nord"
    event = audit(console_app, "store.")[-1]
    assert (event.action, event.target) == ("store.updated", "ACME/S3")
    assert event.detail == {
        "id": added.id,
        "customer_id": acme,
        "changes": {
            "name": {"from": "Hafen", "to": "Hafen Nord"},
            "timezone": {"from": "Europe/Berlin", "to": "UTC"},
        },
    }


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        ({"code": "", "name": "x", "timezone": "UTC"}, "code", "Enter the store code."),
        ({"code": "c" * 65, "name": "", "timezone": "UTC"}, "code", "at most 64"),
        ({"code": "s1", "name": "", "timezone": "UTC"}, "code", "already has a store &#39;S1&#39;"),
        ({"code": "S9", "name": "", "timezone": "Moon/Base"}, "timezone", "not an IANA"),
    ],
)
def test_a_bad_new_store_is_shown_beside_its_field(
    operator: FlaskClient,
    console_app: Flask,
    shops: dict[str, int],
    values: dict[str, str],
    field: str,
    message: str,
) -> None:
    status, html = post(operator, f"/customers/{shops['ACME']}/stores", values)
    assert status == 400 and message in html
    assert f'aria-invalid="true" aria-describedby="store-{field}-error"' in html
    assert f'class="field-error" id="store-{field}-error"' in html
    assert sql(console_app, "SELECT count(*) FROM store")[0][0] == 3
    assert audit(console_app, "store.") == []


def test_a_bad_store_edit_is_refused(
    operator: FlaskClient, console_app: Flask, shops: dict[str, int]
) -> None:
    acme = shops["ACME"]
    s2 = store_of(console_app, acme, "S2")
    path = f"/customers/{acme}/stores/{s2.id}/edit"
    status, html = post(operator, path, {"code": "S1", "name": "", "timezone": "UTC"})
    assert status == 400 and 'aria-describedby="code-error"' in html
    status, html = post(operator, path, {"code": "S2", "name": "n" * 201, "timezone": "UTC"})
    assert status == 400 and 'aria-describedby="name-error"' in html
    assert store_of(console_app, acme, "S2").name == "Store S2"
    assert audit(console_app, "store.") == []


def test_a_stores_install_window_is_kept_normalised_audited_and_shown_in_its_zone(
    operator: FlaskClient, console_app: Flask, shops: dict[str, int]
) -> None:
    acme = shops["ACME"]
    new = {"code": "S4", "timezone": "Europe/Berlin", "maintenance_window": "sat,sun 22:00-4:00"}
    assert post(operator, f"/customers/{acme}/stores", new)[0] == 302
    added = store_of(console_app, acme, "S4")
    assert added.maintenance_window == "Sat,Sun 22:00-04:00"
    assert audit(console_app, "store.")[-1].detail["maintenance_window"] == "Sat,Sun 22:00-04:00"
    shown = page(operator, f"/customers/{acme}/stores/{added.id}")
    fact = shown.split('id="maintenance-window">')[1].split("</dd>")[0]
    assert "Sat,Sun 22:00-04:00" in fact and "Europe/Berlin" in fact
    path = f"/customers/{acme}/stores/{added.id}/edit"
    assert 'value="Sat,Sun 22:00-04:00"' in page(operator, path)
    # Changed to every weekday, then cleared: none is "any time" (NULL), each audited.
    edit = {"code": "S4", "name": "", "timezone": "Europe/Berlin"}
    assert (
        post(operator, path, {**edit, "maintenance_window": "Monday-Friday 02:00-05:00"})[0] == 302
    )
    assert store_of(console_app, acme, "S4").maintenance_window == "Mon-Fri 02:00-05:00"
    assert audit(console_app, "store.")[-1].detail["changes"] == {
        "maintenance_window": {"from": "Sat,Sun 22:00-04:00", "to": "Mon-Fri 02:00-05:00"}
    }
    assert post(operator, path, {**edit, "maintenance_window": "  "})[0] == 302
    assert store_of(console_app, acme, "S4").maintenance_window is None
    assert audit(console_app, "store.")[-1].detail["changes"] == {
        "maintenance_window": {"from": "Mon-Fri 02:00-05:00", "to": None}
    }
    fact = page(operator, f"/customers/{acme}/stores/{added.id}").split('id="maintenance-window">')
    assert fact[1].startswith("any time")


def test_a_bad_install_window_is_refused_beside_its_field(
    operator: FlaskClient, console_app: Flask, shops: dict[str, int]
) -> None:
    acme = shops["ACME"]
    s1 = store_of(console_app, acme, "S1")
    path = f"/customers/{acme}/stores/{s1.id}/edit"
    typed = {"code": "S1", "name": "", "timezone": "UTC", "maintenance_window": "Mon-Fry 2-5"}
    status, html = post(operator, path, typed)
    assert status == 400 and 'aria-describedby="maintenance_window-error"' in html
    error = html.split('id="maintenance_window-error">')[1].split("</p>")[0]
    assert "is not a window" in error
    assert 'value="Mon-Fry 2-5"' in html  # kept as typed, to be corrected
    status, html = post(operator, f"/customers/{acme}/stores", {**typed, "code": "S9"})
    assert status == 400 and 'id="store-maintenance_window-error"' in html
    assert store_of(console_app, acme, "S1").maintenance_window is None
    assert sql(console_app, "SELECT count(*) FROM store WHERE code = 'S9'")[0][0] == 0
    assert audit(console_app, "store.") == []


@pytest.mark.parametrize("role", ["viewer", "support"])
def test_viewers_and_support_see_no_controls_and_are_refused_every_change(
    client: FlaskClient,
    make_user: Callable[..., str],
    console_app: Flask,
    shops: dict[str, int],
    role: str,
) -> None:
    as_role(client, make_user, role)
    acme = shops["ACME"]
    s1 = store_of(console_app, acme, "S1")
    listing = page(client, "/customers")
    detail = page(client, f"/customers/{acme}")
    assert "ACME" in listing and "ACME" in detail
    assert 'id="new-customer"' not in listing
    for control in ('id="edit-customer"', 'id="add-store"', "/edit"):
        assert control not in detail
    for path in (
        "/customers",
        f"/customers/{acme}/edit",
        f"/customers/{acme}/stores",
        f"/customers/{acme}/stores/{s1.id}/edit",
    ):
        assert post(client, path, {**NEW, "code": "S7"})[0] == 403, path
    for path in ("/customers/new", f"/customers/{acme}/edit",
                 f"/customers/{acme}/stores/{s1.id}/edit"):  # fmt: skip
        assert client.get(path).status_code == 403, path
    assert sql(console_app, "SELECT count(*) FROM customer")[0][0] == 2
    assert sql(console_app, "SELECT count(*) FROM store")[0][0] == 3
    assert audit(console_app, "customer.") == audit(console_app, "store.") == []


@pytest.mark.parametrize("role", ["operator", "admin"])
def test_operators_and_admins_see_the_controls_and_may_change(
    client: FlaskClient, make_user: Callable[..., str], console_app: Flask, role: str
) -> None:
    as_role(client, make_user, role)
    assert 'id="new-customer"' in page(client, "/customers")
    assert post(client, "/customers", NEW)[0] == 302
    customer = customer_named(console_app, NEW["name"])
    detail = page(client, f"/customers/{customer.id}")
    assert 'id="edit-customer"' in detail and 'id="add-store"' in detail
    assert (
        post(client, f"/customers/{customer.id}/stores", {"code": "X1", "timezone": "UTC"})[0]
        == 302
    )
    changes = audit(console_app, "customer.") + audit(console_app, "store.")
    assert [event.actor for event in changes] == [f"{role}-user"] * 2


def test_signed_out_visitors_are_sent_to_sign_in(client: FlaskClient) -> None:
    response = client.get("/customers")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_unknown_customers_and_stores_are_404_with_a_message(
    operator: FlaskClient, console_app: Flask, shops: dict[str, int]
) -> None:
    acme, beta = shops["ACME"], shops["Beta Foods"]
    beta_store = store_of(console_app, beta, "S1")
    response = operator.get("/customers/999999")
    assert response.status_code == 404
    assert "There is no customer with id 999999." in response.get_data(as_text=True)
    assert operator.get("/customers/999999/edit").status_code == 404
    assert post(operator, "/customers/999999/edit", NEW)[0] == 404
    assert post(operator, "/customers/999999/stores", {"code": "S1", "timezone": "UTC"})[0] == 404
    # Another customer's store is not this customer's.
    response = operator.get(f"/customers/{acme}/stores/{beta_store.id}/edit")
    assert response.status_code == 404
    assert f"Customer ACME has no store with id {beta_store.id}." in response.get_data(as_text=True)
    assert operator.get(f"/customers/{acme}/stores/999999/edit").status_code == 404
    # Past PostgreSQL's integer, and not a number at all.
    assert operator.get("/customers/99999999999999999999").status_code == 404
    assert operator.get("/customers/abc").status_code == 404
    assert operator.get("/customers/-1").status_code == 404


def test_the_store_page(viewer: FlaskClient, console_app: Flask, shops: dict[str, int]) -> None:
    acme = shops["ACME"]
    s1, s2 = store_of(console_app, acme, "S1"), store_of(console_app, acme, "S2")
    add_alert(console_app, serial="A-3", kind="error", message="printer jam")
    add_alert(console_app, serial="A-4", kind="offline", message="other store")
    add_alert(console_app, serial="A-1", kind="offline", message="old news", status="resolved")
    sql(console_app, "UPDATE terminal SET maintenance = true WHERE serial = 'A-2'")
    html = page(viewer, f"/customers/{acme}/stores/{s1.id}")
    assert 'Store <span class="mono">S1</span>' in html
    facts = {
        name: int(value) for name, value in re.findall(r'id="count-([\w-]+)"[^>]*>(\d+)<', html)
    }
    assert facts == {"in-service": 3, "online": 2, "offline": 0, "error": 1, "maintenance": 1}
    table = html.split('id="store-terminals-table"')[1].split("</table>")[0]
    assert re.findall(r">(A-\d)</a>", table) == ["A-1", "A-2", "A-3"]
    assert "A-4" not in table and "B-1" not in table
    alerts = html.split('id="store-alerts-table"')[1].split("</table>")[0]
    assert "printer jam" in alerts
    assert "other store" not in alerts and "old news" not in alerts
    # The terminal list link keeps both the customer and the store.
    with console_app.test_request_context():
        listed = url_for("terminals.index", customer="ACME", store="S1")
    assert f'href="{escape(listed)}"' in html
    # A viewer gets no edit control; the customer page links each store's page.
    assert 'id="edit-store"' not in html and "/edit" not in html
    customer_page = page(viewer, f"/customers/{acme}")
    assert f'href="/customers/{acme}/stores/{s2.id}"' in customer_page
    # The terminal's page links its customer and its store.
    terminal_page = page(viewer, "/terminals/A-3")
    assert f'href="/customers/{acme}/stores/{s1.id}"' in terminal_page
    assert f'href="/customers/{acme}"' in terminal_page


def test_store_uptime_comes_from_status_history_in_the_stores_time_zone(
    console_app: Flask, fleet: Fleet
) -> None:
    from console import store_repository

    fleet.add_terminal("T-1", customer="Tokio", store="J1")
    fleet.add_terminal("T-2", customer="Tokio", store="J1")
    sql(console_app, "UPDATE store SET timezone = 'Asia/Tokyo'")
    # Both in service since long before the month.
    sql(console_app, "UPDATE terminal SET installed_at = '2025-01-01T00:00:00Z'")
    customer = customer_named(console_app, "Tokio")
    assert customer.id is not None
    store = store_of(console_app, customer.id, "J1")
    # 2026-03-01 00:00 in Tokyo is 2026-02-28 15:00 UTC; "now" is 2026-03-02 03:00 Tokyo.
    now = datetime(2026, 3, 1, 18, 0, tzinfo=UTC)
    changes = [
        ("T-1", "2026-02-20T00:00:00Z", "online"),  # before the month: online from its start
        ("T-1", "2026-03-01T12:00:00Z", "offline"),  # Tokyo 21:00 on 1 March
        ("T-2", "2026-02-28T21:00:00Z", "online"),  # Tokyo 06:00 on 1 March
    ]
    for serial, at, status in changes:
        sql(
            console_app,
            "INSERT INTO status_change (terminal_id, at, new_status, reason)"
            " VALUES ((SELECT id FROM terminal WHERE serial = :serial), :at, :status, '')",
            serial=serial, at=at, status=status,
        )  # fmt: skip
    with Session(engine_of(console_app)) as session:
        uptime = store_repository.uptime(session, store, now)
    assert uptime.timezone == "Asia/Tokyo"
    # Today (Tokyo 2 March from 15:00 UTC on 1 March, 3 h so far): T-1 offline, T-2 online.
    assert (uptime.today.online, uptime.today.in_service) == (3 * 3600, 2 * 3 * 3600)
    # The month (27 h so far): T-1 online 21 h, T-2 online from its change 21 h.
    assert (uptime.month.online, uptime.month.in_service) == (42 * 3600, 2 * 27 * 3600)
    assert store_repository.StoreUptime.text(uptime.month) == "77.78%"


def test_a_store_with_no_terminals_in_service_shows_a_dash_and_other_stores_are_404(
    viewer: FlaskClient, console_app: Flask, shops: dict[str, int]
) -> None:
    acme, beta = shops["ACME"], shops["Beta Foods"]
    empty_code = "S9"
    sql(
        console_app,
        "INSERT INTO store (customer_id, code, name, timezone)"
        " VALUES (:c, :code, '', 'Nowhere/Atlantis')",
        c=acme,
        code=empty_code,
    )
    empty = store_of(console_app, acme, empty_code)
    html = page(viewer, f"/customers/{acme}/stores/{empty.id}")
    assert 'id="uptime-today">—<' in html and 'id="uptime-month">—<' in html
    assert "No terminals at this store." in html and "No open alerts." in html
    beta_store = store_of(console_app, beta, "S1")
    response = viewer.get(f"/customers/{acme}/stores/{beta_store.id}")
    assert response.status_code == 404
    assert f"Customer ACME has no store with id {beta_store.id}." in response.get_data(as_text=True)
    assert viewer.get(f"/customers/{acme}/stores/99999999999").status_code == 404
