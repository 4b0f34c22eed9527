"""The customer and store forms: good values kept (trimmed, canonical), each bad one
named against its field, and the customer's day and month boundaries."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from console.customer_forms import CustomerForm, StoreForm, same_name
from console.customer_repository import Uptime, period_starts

GOOD = {
    "name": "  Müller Märkte GmbH ",
    "contact_person": "Jürgen Ødegård",
    "email": "ops@mueller.example",
    "phone": "+49 (30) 123-456.7",
    "contract_type": "Premium",
    "timezone": "europe/berlin",
}


def test_good_values_are_trimmed_and_made_canonical() -> None:
    form = CustomerForm.parse(GOOD)
    assert form.errors == {}
    assert form.values() == {
        "name": "Müller Märkte GmbH",
        "contact_person": "Jürgen Ødegård",
        "email": "ops@mueller.example",
        "phone": "+49 (30) 123-456.7",
        "contract_type": "premium",
        "timezone": "Europe/Berlin",
    }


def test_only_the_name_is_required_and_the_rest_may_be_empty() -> None:
    form = CustomerForm.parse({"name": "A", "contract_type": "basic", "timezone": "UTC"})
    assert form.errors == {}
    assert (form.contact_person, form.email, form.phone) == ("", "", "")


def test_a_200_character_name_is_the_longest_allowed() -> None:
    assert CustomerForm.parse({**GOOD, "name": "é" * 200}).errors == {}
    assert "200" in CustomerForm.parse({**GOOD, "name": "é" * 201}).errors["name"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "", "Enter the company name."),
        ("name", "   ", "Enter the company name."),
        ("name", "ACME\tLtd", "control characters"),
        ("name", "ACME\nLtd", "control characters"),
        ("contact_person", "x" * 201, "at most 200"),
        ("email", "not-an-address", "e-mail address like"),
        ("email", "a@b", "e-mail address like"),
        ("email", "a b@c.de", "e-mail address like"),
        ("email", "a@@c.de", "e-mail address like"),
        ("email", "a@c..de", "e-mail address like"),
        ("email", "a@" + "c" * 250 + ".de", "at most 254"),
        ("phone", "030 ABC", "digits, spaces"),
        ("phone", "+-()", "digits, spaces"),
        ("phone", "١٢٣", "digits, spaces"),  # Arabic-Indic digits: not what dialers take
        ("phone", "1" * 65, "at most 64"),
        ("contract_type", "gold", "Choose one of: basic, standard, premium."),
        ("contract_type", "", "Choose one of"),
        ("timezone", "", "Choose a time zone"),
        ("timezone", "Mars/Olympus_Mons", "not an IANA time zone"),
        ("timezone", "../../etc/passwd", "not an IANA time zone"),
        ("timezone", "Europe/Berlin" * 10, "not an IANA time zone"),
    ],
)
def test_each_bad_field_is_named_with_its_error(field: str, value: str, message: str) -> None:
    form = CustomerForm.parse({**GOOD, field: value})
    assert list(form.errors) == [field]
    assert message in form.errors[field]


def test_every_bad_field_is_reported_at_once() -> None:
    form = CustomerForm.parse(
        {"name": "", "email": "x", "phone": "x", "contract_type": "x", "timezone": "x"}
    )
    assert set(form.errors) == {"name", "email", "phone", "contract_type", "timezone"}


def test_a_form_filled_from_a_customer_round_trips() -> None:
    form = CustomerForm.parse(GOOD)
    assert CustomerForm.of(form).values() == form.values()


def test_store_form() -> None:
    good = StoreForm.parse({"code": " S-001 ", "name": "", "timezone": "utc"})
    assert good.errors == {} and good.values() == {
        "code": "S-001", "name": "", "timezone": "UTC", "maintenance_window": None,
    }  # fmt: skip
    bad = StoreForm.parse({"code": "", "name": "n" * 201, "timezone": "Nowhere"})
    assert set(bad.errors) == {"code", "name", "timezone"}
    assert bad.errors["code"] == "Enter the store code."
    assert "64" in StoreForm.parse({"code": "c" * 65, "timezone": "UTC"}).errors["code"]
    assert StoreForm.parse({"code": "c" * 64, "timezone": "UTC"}).errors == {}


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("", None),
        ("   ", None),
        (" monday-friday 2:00 - 5:00 ", "Mon-Fri 02:00-05:00"),
        ("sat,sun 22:00-04:00", "Sat,Sun 22:00-04:00"),
        ("Mon,Tue,Wed,Thu,Fri,Sat,Sun 00:00-24:00", "00:00-24:00"),
    ],
)
def test_the_install_window_is_kept_in_its_normal_form(typed: str, stored: str | None) -> None:
    form = StoreForm.parse({"code": "S1", "timezone": "UTC", "maintenance_window": typed})
    assert form.errors == {} and form.maintenance_window == stored


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("02:00", "is not a window"),
        ("25:00-05:00", "is not a time of day"),
        ("Mon-Fry 02:00-05:00", "is not a day"),
        ("02:00-02:00", "leave it blank"),
        ("Mon " * 30 + "02:00-05:00", "at most 100 characters"),
    ],
)
def test_a_bad_install_window_is_named_and_kept_as_typed(typed: str, message: str) -> None:
    form = StoreForm.parse({"code": "S1", "timezone": "UTC", "maintenance_window": typed})
    assert set(form.errors) == {"maintenance_window"}
    assert message in form.errors["maintenance_window"]
    assert form.maintenance_window == typed.strip()


def test_names_differing_only_in_case_are_the_same_name() -> None:
    assert same_name("ACME", "acme")
    assert same_name("ÄRZTE GmbH", "ärzte gmbh")
    assert same_name("Straße", "STRASSE")
    assert same_name("Cafe\u0301", "CAFÉ")  # decomposed and composed accent
    assert not same_name("ACME", "ACME 2")


def test_days_and_months_start_at_midnight_in_the_customers_zone() -> None:
    now = datetime(2026, 3, 1, 3, 30, tzinfo=UTC)
    assert period_starts(now, ZoneInfo("UTC")) == (
        datetime(2026, 3, 1, tzinfo=UTC),
        datetime(2026, 3, 1, tzinfo=UTC),
    )
    # 03:30 UTC is still 28 February in New York (UTC-5): its day and month began earlier.
    assert period_starts(now, ZoneInfo("America/New_York")) == (
        datetime(2026, 2, 28, 5, tzinfo=UTC),
        datetime(2026, 2, 1, 5, tzinfo=UTC),
    )
    # Tokyo (UTC+9) is already at 12:30 on 1 March.
    assert period_starts(now, ZoneInfo("Asia/Tokyo")) == (
        datetime(2026, 2, 28, 15, tzinfo=UTC),
        datetime(2026, 2, 28, 15, tzinfo=UTC),
    )


def test_uptime_text() -> None:
    assert Uptime.text(None) == "—"
    assert Uptime.text(0.99954) == "99.95%"
    assert Uptime.text(1.0) == "100.00%"
