"""The console's readers for values Python cannot hold, and its strict JSON (pure)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from psycopg.pq import Format

from console.formatting import json_preview, utc_text
from console.stored_values import (
    CUT_JSON,
    UNREADABLE_JSON,
    _timestamp_before_year_1,
    cut_deep_json,
    load_json,
)
from console.strict_json import finite


@pytest.mark.parametrize(
    ("text", "early"),
    [
        (b"-infinity", True),
        (b"0001-12-31 23:59:59+00 BC", True),
        (b"4713-01-01 00:00:00+00 BC", True),
        (b"infinity", False),
        (b"10000-01-01 00:00:00+00", False),
        (b"294276-12-31 23:59:59.999999+00", False),
    ],
)
def test_a_refused_timestamp_goes_to_the_nearest_end(text: bytes, early: bool) -> None:
    assert _timestamp_before_year_1(text, Format.TEXT) is early


def test_a_refused_binary_timestamp_goes_by_its_sign() -> None:
    assert _timestamp_before_year_1((-(2**63)).to_bytes(8, "big", signed=True), Format.BINARY)
    assert not _timestamp_before_year_1((2**63 - 1).to_bytes(8, "big", signed=True), Format.BINARY)


def test_json_reads_as_before_when_python_can_hold_it() -> None:
    assert load_json(b'{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}
    assert load_json(b"[]") == [] and load_json(b"null") is None


def test_json_too_deep_to_parse_is_a_note_and_a_long_integer_its_digits() -> None:
    assert load_json(b"[" * 5000 + b"]" * 5000) == UNREADABLE_JSON
    assert load_json(b'{"n": ' + b"7" * 5000 + b"}") == {"n": "7" * 5000}


def test_deep_json_is_cut_at_the_limit_without_recursion() -> None:
    value: list = []
    for _ in range(5000):
        value = [value]
    cut = cut_deep_json(value, limit=3)
    assert cut == [[[CUT_JSON]]]
    assert cut_deep_json({"a": {"b": 1}}, limit=3) == {"a": {"b": 1}}


def test_non_finite_floats_become_null_everywhere() -> None:
    value = {"a": math.nan, "b": [math.inf, 1.5, (-math.inf,)], "c": "NaN"}
    assert json.dumps(finite(value), allow_nan=False) == (
        '{"a": null, "b": [null, 1.5, [null]], "c": "NaN"}'
    )


def test_utc_text_at_and_past_the_ends_of_python_years() -> None:
    assert utc_text(datetime.min.replace(tzinfo=UTC)) == "0001-01-01 00:00:00 UTC"
    assert utc_text(datetime.max.replace(tzinfo=UTC)) == "9999-12-31 23:59:59 UTC"
    plus = timezone(timedelta(hours=23, minutes=59))
    assert utc_text(datetime(1, 1, 1, tzinfo=plus)) == "before 0001-01-01 UTC"
    minus = timezone(-timedelta(hours=23, minutes=59))
    assert utc_text(datetime(9999, 12, 31, 23, tzinfo=minus)) == "after 9999-12-31 UTC"


def test_json_preview_is_cut() -> None:
    assert json_preview({"a": 1}) == '{"a": 1}'
    assert json_preview({"a": "x" * 1000}, limit=10) == '{"a": "xxx…'
