"""The customer and store forms: their values and what is wrong with them (pure: no
Flask, no database). A name clash needs the database and is the repository's check.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import available_timezones

from rollouts.errors import WindowError
from rollouts.windows import parse_window
from shared.models import ContractType

NAME_MAX = 200
CONTACT_MAX = 200
EMAIL_MAX = 254
PHONE_MAX = 64
TIMEZONE_MAX = 64
STORE_CODE_MAX = 64
STORE_NAME_MAX = 200
# What a person may type in the install window field; a window in its normal form is
# far shorter than the column (100), and a long paste is refused before it is parsed.
WINDOW_INPUT_MAX = 100
CONTRACT_TYPES = [contract.value for contract in ContractType]

# Deliberately loose: one "@", something before it, a dotted domain after it, no spaces.
# Whether the address reaches anyone only a mail to it can tell.
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
_PHONE = re.compile(r"[0-9 +\-().]*")


@functools.cache
def time_zones() -> dict[str, str]:
    """IANA zone names by their lower-case form, so that "europe/berlin" is understood."""
    return {zone.lower(): zone for zone in sorted(available_timezones())}


def zone_names() -> list[str]:
    """Every IANA zone name, sorted: the forms' suggestions."""
    return sorted(time_zones().values())


def _reader(form: Mapping[str, str]) -> Callable[[str], str]:
    return lambda name: form.get(name, "").strip()


def _has_control(value: str) -> bool:
    # Tabs, line breaks and other control characters have no place in a one-line field:
    # they would break the tables the value is shown in and the CSV exports.
    return any(unicodedata.category(char) == "Cc" for char in value)


def _text(value: str, label: str, maximum: int, *, required: bool) -> str | None:
    """The error for a one-line text field, or None when it is fine."""
    if not value:
        return f"Enter the {label}." if required else None
    if len(value) > maximum:
        return f"The {label} is at most {maximum} characters (this one has {len(value)})."
    if _has_control(value):
        return f"The {label} cannot contain control characters such as tabs or line breaks."
    return None


def _timezone(value: str) -> tuple[str, str | None]:
    """The zone's canonical name and its error (None when it is a known IANA zone)."""
    if not value:
        return value, "Choose a time zone, e.g. Europe/Berlin or UTC."
    canonical = time_zones().get(value.lower()) if len(value) <= TIMEZONE_MAX else None
    if canonical is None:
        return value, f"{value[:TIMEZONE_MAX]!r} is not an IANA time zone (e.g. Europe/Berlin)."
    return canonical, None


@dataclass
class CustomerForm:
    """A customer's company details as typed, and the error of each bad field."""

    name: str = ""
    contact_person: str = ""
    email: str = ""
    phone: str = ""
    contract_type: str = ContractType.STANDARD.value
    timezone: str = "UTC"
    errors: dict[str, str] = field(default_factory=dict)

    FIELDS = ("name", "contact_person", "email", "phone", "contract_type", "timezone")

    @classmethod
    def of(cls, customer: Any) -> CustomerForm:
        """The form filled from a stored customer (anything with the fields)."""
        return cls(**{name: getattr(customer, name) for name in cls.FIELDS})

    @classmethod
    def parse(cls, form: Mapping[str, str]) -> CustomerForm:
        value = _reader(form)
        parsed = cls(
            name=value("name"),
            contact_person=value("contact_person"),
            email=value("email"),
            phone=value("phone"),
            contract_type=value("contract_type").lower(),
            timezone=value("timezone"),
        )
        errors = parsed.errors
        for name, label, maximum, required in (
            ("name", "company name", NAME_MAX, True),
            ("contact_person", "contact person", CONTACT_MAX, False),
            ("email", "e-mail address", EMAIL_MAX, False),
            ("phone", "phone number", PHONE_MAX, False),
        ):
            error = _text(getattr(parsed, name), label, maximum, required=required)
            if error:
                errors[name] = error
        if "email" not in errors and parsed.email and not _EMAIL.fullmatch(parsed.email):
            errors["email"] = "Enter an e-mail address like name@example.com, or leave it empty."
        if (
            "phone" not in errors
            and parsed.phone
            and (not _PHONE.fullmatch(parsed.phone) or not any(c.isdigit() for c in parsed.phone))
        ):
            errors["phone"] = "Use digits, spaces and + - ( ) . only, e.g. +49 30 1234567."
        if parsed.contract_type not in CONTRACT_TYPES:
            errors["contract_type"] = "Choose one of: " + ", ".join(CONTRACT_TYPES) + "."
        parsed.timezone, zone_error = _timezone(parsed.timezone)
        if zone_error:
            errors["timezone"] = zone_error
        return parsed

    def values(self) -> dict[str, str]:
        """The fields as they are stored."""
        return {name: getattr(self, name) for name in self.FIELDS}


@dataclass
class StoreForm:
    """A store of a customer as typed, and the error of each bad field.

    ``maintenance_window`` is when a firmware install may begin, in the store's own
    time zone, in the normal form ``rollouts.windows`` writes ("Mon-Fri 02:00-05:00");
    None: at any time. A bad one keeps the text as typed, to be shown beside its error.
    """

    code: str = ""
    name: str = ""
    timezone: str = "UTC"
    maintenance_window: str | None = None
    errors: dict[str, str] = field(default_factory=dict)

    FIELDS = ("code", "name", "timezone", "maintenance_window")

    @classmethod
    def of(cls, store: Any) -> StoreForm:
        return cls(**{name: getattr(store, name) for name in cls.FIELDS})

    @classmethod
    def parse(cls, form: Mapping[str, str]) -> StoreForm:
        value = _reader(form)
        parsed = cls(code=value("code"), name=value("name"), timezone=value("timezone"))
        for name, label, maximum, required in (
            ("code", "store code", STORE_CODE_MAX, True),
            ("name", "store name", STORE_NAME_MAX, False),
        ):
            error = _text(getattr(parsed, name), label, maximum, required=required)
            if error:
                parsed.errors[name] = error
        parsed.timezone, zone_error = _timezone(parsed.timezone)
        if zone_error:
            parsed.errors["timezone"] = zone_error
        parsed.maintenance_window, window_error = _window(value("maintenance_window"))
        if window_error:
            parsed.errors["maintenance_window"] = window_error
        return parsed

    def values(self) -> dict[str, str | None]:
        return {name: getattr(self, name) for name in self.FIELDS}


def _window(value: str) -> tuple[str | None, str | None]:
    """The install window in its normal form (None: any time) and its error."""
    if len(value) > WINDOW_INPUT_MAX:
        return value, f"The install window is at most {WINDOW_INPUT_MAX} characters."
    try:
        window = parse_window(value)
    except WindowError as exc:
        return value, f"{str(exc)[:1].upper()}{str(exc)[1:]}."
    return (str(window) if window is not None else None), None


def same_name(first: str, second: str) -> bool:
    """Names that differ only in letter case (any script) are the same name."""
    return unicodedata.normalize("NFC", first).casefold() == (
        unicodedata.normalize("NFC", second).casefold()
    )
