"""The alerts screen's query string: filters, the keyset cursor, links, bulk ids
(console.alert_query)."""

from __future__ import annotations

import pytest
from werkzeug.datastructures import MultiDict

from console.alert_query import ID_MAX, AlertQuery, parse_id, parse_ids


def parse(**args: str) -> AlertQuery:
    return AlertQuery.parse(MultiDict(args))


def test_no_arguments_is_the_active_list_newest_first() -> None:
    query = parse()
    assert query == AlertQuery(status="active")
    assert not query.filtered and query.grouped and query.args() == {}


@pytest.mark.parametrize("status", ["active", "open", "acknowledged", "resolved", "all"])
def test_each_status_is_kept(status: str) -> None:
    assert parse(status=status).status == status
    assert parse(status=status.upper() + " ").status == status


@pytest.mark.parametrize("status", ["", "closed", "open' OR 1=1", "x" * 1000])
def test_an_unknown_status_is_the_active_list(status: str) -> None:
    assert parse(status=status).status == "active"


def test_the_default_status_is_left_out_of_links() -> None:
    assert parse(status="active").args() == {}
    assert parse(status="open").args() == {"status": "open"}
    assert parse(status="open").args(status="active") == {}


def test_severity_is_one_of_the_four_or_none() -> None:
    assert parse(severity="Critical").severity == "critical"
    assert parse(severity="info").severity == "info"
    assert parse(severity="urgent").severity is None


def test_texts_are_trimmed_cut_to_their_column_and_lose_nul() -> None:
    query = parse(kind=" offline\x00 ", customer="C" * 300, q="tc-00" + "9" * 100)
    assert query.kind == "offline"
    assert query.customer == "C" * 200
    assert query.serial is not None and len(query.serial) == 64
    assert parse(kind="   ").kind is None


@pytest.mark.parametrize(
    ("given", "expected"), [("me", "me"), ("ME", "me"), ("none", "none"), (" Sam ", "sam")]
)
def test_assignee_is_a_lower_case_name_or_a_keyword(given: str, expected: str) -> None:
    assert parse(assignee=given).assignee == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("12", 12), (" 7 ", 7), (str(ID_MAX), ID_MAX), ("0", None), ("-3", None),
     (str(ID_MAX + 1), None), ("9" * 400, None), ("1e3", None), ("1_000", None),
     ("١٢", None), ("+5", None), ("", None), ("abc", None)],
)  # fmt: skip
def test_an_id_is_a_positive_postgresql_integer(text: str, expected: int | None) -> None:
    assert parse_id(text) == expected
    assert parse(incident=text).incident == expected
    assert parse(before=text).before == expected


def test_one_incident_lists_its_alerts_one_row_each() -> None:
    query = parse(incident="42")
    assert query.incident == 42 and not query.grouped and query.filtered


def test_args_keep_every_filter_and_apply_changes() -> None:
    query = parse(status="all", severity="major", kind="offline", customer="Acme",
                  assignee="me", incident="3", q="TC-1", before="99")  # fmt: skip
    assert query.args() == {
        "status": "all", "severity": "major", "kind": "offline", "customer": "Acme",
        "assignee": "me", "incident": 3, "q": "TC-1", "before": 99,
    }  # fmt: skip
    assert query.args(before=None, severity=None) == {
        "status": "all", "kind": "offline", "customer": "Acme", "assignee": "me",
        "incident": 3, "q": "TC-1",
    }  # fmt: skip
    link = {key: str(value) for key, value in query.args().items()}
    assert AlertQuery.parse(MultiDict(link)) == query  # a link reads back the same


def test_the_page_alone_is_not_a_filter() -> None:
    query = parse(before="500")
    assert query.before == 500 and not query.filtered


def test_bulk_ids_keep_order_drop_repeats_and_report_what_is_not_an_id() -> None:
    ids, bad = parse_ids(["3", "1", "3", "x", "", "-1", str(ID_MAX + 1), "2", "y" * 100])
    assert ids == (3, 1, 2)
    assert bad == ("x", "", "-1", str(ID_MAX + 1), "y" * 40)
