"""Pure console logic: role order, form and query parsing, formatting, the secret-key rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr
from werkzeug.datastructures import MultiDict

from console.api import ApiInputError, TerminalQuery
from console.app import checked_secret_key
from console.auth import LoginForm, safe_next
from console.errors import ConsoleConfigError, UserError
from console.formatting import ago, load_level, percent, utc_text
from console.roles import parse_role, role_at_least
from console.terminals import ListQuery
from console.users import check_password_policy, hash_token, normalize_username
from shared.models import Role
from shared.settings import ConsoleSettings

ORDER = [Role.VIEWER, Role.SUPPORT, Role.OPERATOR, Role.ADMIN]


@pytest.mark.parametrize("role", ORDER)
@pytest.mark.parametrize("minimum", ORDER)
def test_role_order_is_admin_operator_support_viewer(role: Role, minimum: Role) -> None:
    assert role_at_least(role.value, minimum) is (ORDER.index(role) >= ORDER.index(minimum))


def test_unknown_role_may_do_nothing() -> None:
    assert not role_at_least("root", Role.VIEWER)


def test_parse_role_names_the_valid_roles() -> None:
    assert parse_role(" Operator ") is Role.OPERATOR
    with pytest.raises(UserError, match="admin, operator, support, viewer"):
        parse_role("root")


@pytest.mark.parametrize(
    ("form", "errors"),
    [
        ({"username": "ann", "password": "pw"}, {}),
        ({"username": "  ", "password": "pw"}, {"username": "Enter your username."}),
        ({"username": "ann", "password": ""}, {"password": "Enter your password."}),
        ({}, {"username": "Enter your username.", "password": "Enter your password."}),
    ],
)
def test_login_form_errors(form: dict[str, str], errors: dict[str, str]) -> None:
    assert LoginForm.parse(form).errors == errors


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/terminals/TC1", "/terminals/TC1"),
        ("/?status=error", "/?status=error"),
        ("//evil.example/x", None),
        ("https://evil.example/", None),
        ("/\\evil.example", None),
        ("", None),
        (None, None),
    ],
)
def test_safe_next_only_allows_local_paths(target: str | None, expected: str | None) -> None:
    assert safe_next(target) == expected


def test_api_query_defaults_and_bounds() -> None:
    query = TerminalQuery.parse(MultiDict())
    assert (query.limit, query.offset, query.filter.status) == (100, 0, None)
    query = TerminalQuery.parse(MultiDict({"limit": "1000", "offset": "5", "status": "error"}))
    assert (query.limit, query.offset, query.filter.status) == (1000, 5, "error")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"limit": "1001"}, "limit must be between 1 and 1000"),
        ({"limit": "0"}, "limit must be between 1 and 1000"),
        ({"limit": "ten"}, "limit must be a whole number"),
        ({"offset": "-1"}, "offset must be between"),
        ({"status": "sleeping"}, "status must be one of"),
    ],
)
def test_api_query_rejects_bad_parameters(args: dict[str, str], message: str) -> None:
    with pytest.raises(ApiInputError, match=message):
        TerminalQuery.parse(MultiDict(args))


def test_list_query_drops_unknown_values_and_builds_links() -> None:
    query = ListQuery.parse(MultiDict({"status": "bogus", "page": "x", "customer": "ACME"}))
    assert (query.status, query.page, query.customer) == (None, 1, "ACME")
    assert query.args(status="error") == {"status": "error", "customer": "ACME"}


def test_ago_reads_like_a_person_would_say_it() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert ago(None, now) == "never"
    assert ago(now - timedelta(seconds=2), now) == "just now"
    assert ago(now - timedelta(seconds=42), now) == "42 s ago"
    assert ago(now - timedelta(minutes=5), now) == "5 min ago"
    assert ago(now - timedelta(hours=3), now) == "3 h ago"
    assert ago(now - timedelta(days=2), now) == "2 d ago"
    assert utc_text(now) == "2026-01-01 12:00:00 UTC"


def test_resource_levels() -> None:
    assert [load_level(v) for v in (None, 10, 75, 95)] == [
        "gauge-none",
        "gauge-ok",
        "gauge-warn",
        "gauge-hot",
    ]
    assert percent(None) == "—" and percent(42.4) == "42%"


def test_console_refuses_to_start_without_a_secret_key() -> None:
    with pytest.raises(ConsoleConfigError, match="TMS_CONSOLE_SECRET_KEY"):
        checked_secret_key(ConsoleSettings())
    with pytest.raises(ConsoleConfigError, match="too short"):
        checked_secret_key(ConsoleSettings(secret_key=SecretStr("short")))


def test_usernames_and_passwords() -> None:
    assert normalize_username(" Ann.Smith ") == "ann.smith"
    with pytest.raises(UserError, match="invalid username"):
        normalize_username("ann smith")
    with pytest.raises(UserError, match="at least 10"):
        check_password_policy("short")
    assert len(hash_token("tms_x")) == 64
