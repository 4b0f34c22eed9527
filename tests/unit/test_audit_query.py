"""The audit screen's query string: dates, cut values, the page, links (console.audit_query)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from werkzeug.datastructures import MultiDict

from console.audit_query import BIGINT_MAX, AuditQuery, action_choices, parse_moment


def parse(**args: str) -> AuditQuery:
    return AuditQuery.parse(MultiDict(args))


def test_no_arguments_is_no_filter_and_the_newest_page() -> None:
    query = parse()
    assert query == AuditQuery()
    assert query.valid and not query.filtered and query.args() == {}


def test_a_date_is_midnight_utc_and_until_includes_the_whole_day() -> None:
    query = parse(since="2024-05-01", until="2024-05-02")
    assert query.valid
    assert query.since == datetime(2024, 5, 1, tzinfo=UTC)
    assert query.until_end == datetime(2024, 5, 3, tzinfo=UTC)


def test_a_minute_is_utc_and_until_includes_that_minute() -> None:
    query = parse(since="2024-05-01T10:30", until="2024-05-01T11:45")
    assert query.since == datetime(2024, 5, 1, 10, 30, tzinfo=UTC)
    assert query.until_end == datetime(2024, 5, 1, 11, 46, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    ["yesterday", "2024-5-1", "2024-05-01 10:30", "2024-05-01T10:30:00", "01/05/2024",
     "2024-05-01T10", "２０２４-05-01"],
)  # fmt: skip
def test_a_date_in_another_form_is_an_error_naming_the_forms(text: str) -> None:
    query = parse(since=text)
    assert not query.valid
    assert query.errors == {"since": "Write the time as YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)."}
    assert query.since is None
    assert query.since_text == text  # shown again as typed


@pytest.mark.parametrize("text", ["2024-02-30", "2023-13-01", "0000-01-01", "2024-05-01T24:00"])
def test_a_date_that_does_not_exist_is_an_error(text: str) -> None:
    query = parse(until=text)
    assert query.errors == {"until": f"{text} is not a date and time that exists."}


def test_until_before_since_is_an_error_on_until() -> None:
    query = parse(since="2024-05-02", until="2024-05-01")
    assert query.errors == {"until": "Until is before since: nothing could match."}
    assert parse(since="2024-05-01", until="2024-05-01").valid  # the same day is that day


def test_the_last_day_python_holds_has_no_end() -> None:
    assert parse_moment("9999-12-31", end=True) is None
    assert parse(until="9999-12-31").valid


def test_a_long_date_is_cut_then_refused() -> None:
    query = parse(since="2024-05-01" * 100)
    assert query.since_text == ("2024-05-01" * 4)[:32]
    assert "since" in query.errors


def test_values_are_trimmed_and_cut_to_the_column_widths() -> None:
    query = parse(actor=" Ann ", action="a" * 100, target="t" * 500, remote_addr="1" * 100)
    assert query.actor == "Ann"
    assert query.action == "a" * 64
    assert query.target == "t" * 200
    assert query.remote_addr == "1" * 64


def test_nul_characters_are_dropped_and_blank_values_are_no_filter() -> None:
    query = parse(actor="an\x00n", target="   ", action="\x00")
    assert query.actor == "ann"
    assert query.target is None and query.action is None


@pytest.mark.parametrize(
    ("text", "before_id"),
    [("120", 120), (" 7 ", 7), ("abc", None), ("1.5", None), ("", None), ("9" * 30, None),
     ("9" * 5000, None), (str(BIGINT_MAX), BIGINT_MAX), ("0", 0), ("-" + "9" * 30, -(2**63))],
)  # fmt: skip
def test_before_id_is_an_integer_in_bigint_range_or_ignored(
    text: str, before_id: int | None
) -> None:
    assert parse(before_id=text).before_id == before_id


@pytest.mark.parametrize(
    ("action", "match"),
    [("login", ("exact", "login")), ("user.", ("family", "user")),
     ("login.", ("family", "login")), ("log*", ("prefix", "log")), ("*", None), (".", None),
     ("", None)],
)  # fmt: skip
def test_the_action_matches_exactly_by_family_or_by_prefix(
    action: str, match: tuple[str, str] | None
) -> None:
    assert parse(action=action).action_match() == match


def test_args_rebuild_the_query_and_apply_changes() -> None:
    query = parse(actor="ann", action="user.", target="TC-1", since="2024-05-01",
                  until="2024-05-02T10:00", remote_addr="10.0.0.8", before_id="500")  # fmt: skip
    args = {"actor": "ann", "action": "user.", "target": "TC-1", "since": "2024-05-01",
            "until": "2024-05-02T10:00", "remote_addr": "10.0.0.8", "before_id": 500}  # fmt: skip
    assert query.args() == args
    assert AuditQuery.parse(MultiDict({k: str(v) for k, v in args.items()})) == query
    assert query.args(before_id=120)["before_id"] == 120
    assert "before_id" not in query.args(before_id=None)
    assert query.filtered
    assert not parse(before_id="5").filtered


def test_a_bad_date_stays_in_the_links_as_typed() -> None:
    assert parse(since="soon").args() == {"since": "soon"}


def test_the_action_choices_are_the_families_then_every_action() -> None:
    actions = ["user.created", "login", "login.failed", "user.disabled", ".odd", "login"]
    assert action_choices(actions) == [
        ("login.", "login.… (all)"),
        ("user.", "user.… (all)"),
        (".odd", ".odd"),
        ("login", "login"),
        ("login.failed", "login.failed"),
        ("user.created", "user.created"),
        ("user.disabled", "user.disabled"),
    ]
