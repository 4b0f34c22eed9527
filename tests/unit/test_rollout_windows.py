"""Maintenance windows in a store's own time zone, across midnight and daylight saving."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollouts.errors import WindowError
from rollouts.windows import (
    ALL_DAYS,
    MaintenanceWindow,
    in_window,
    is_known_zone,
    next_window_start,
    parse_window,
    store_zone,
    window_closes_at,
)

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def utc(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def window(text: str) -> MaintenanceWindow:
    parsed = parse_window(text)
    assert parsed is not None
    return parsed


# --- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical", "days"),
    [
        ("02:00-05:00", "02:00-05:00", ALL_DAYS),
        (" 2:00 - 5:30 ", "02:00-05:30", ALL_DAYS),
        ("22:00-04:00", "22:00-04:00", ALL_DAYS),
        ("00:00-24:00", "00:00-24:00", ALL_DAYS),
        ("Mon-Fri 02:00-05:00", "Mon-Fri 02:00-05:00", {0, 1, 2, 3, 4}),
        ("sat, Sunday 22:00-04:00", "Sat,Sun 22:00-04:00", {5, 6}),
        ("Fri-Mon 01:00-03:00", "Mon,Fri-Sun 01:00-03:00", {4, 5, 6, 0}),
        ("Mon,Wed 01:00-03:00", "Mon,Wed 01:00-03:00", {0, 2}),
        ("Mon-Sun 01:00-03:00", "01:00-03:00", ALL_DAYS),
    ],
)
def test_windows_that_parse(text: str, canonical: str, days: set[int]) -> None:
    parsed = window(text)
    assert str(parsed) == canonical
    assert parsed.days == days
    assert parse_window(str(parsed)) == parsed


def test_a_blank_window_is_none_meaning_any_time() -> None:
    assert parse_window("") is None
    assert parse_window("   ") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("02:00", "is not a window"),
        ("2-5", "is not a window"),
        ("02:00-02:00", "empty"),
        ("24:00-02:00", "not a time of day \\(00:00 to 23:59\\)"),
        ("02:00-24:30", "not a time of day"),
        ("02:60-05:00", "not a time of day"),
        ("25:00-05:00", "not a time of day"),
        ("Mo 02:00-05:00", "'Mo' is not a day"),
        ("Funday 02:00-05:00", "'Funday' is not a day"),
        ("Mon,,Tue 02:00-05:00", "'' is not a day"),
    ],
)
def test_windows_refused_with_a_message_for_the_form(text: str, message: str) -> None:
    with pytest.raises(WindowError, match=message):
        parse_window(text)


def test_a_window_checks_itself() -> None:
    with pytest.raises(WindowError, match="at least one day"):
        MaintenanceWindow(60, 120, frozenset())
    with pytest.raises(WindowError):
        MaintenanceWindow(1440, 60)


# --- no window, plain windows ----------------------------------------------------------


def test_no_window_allows_installs_at_any_time() -> None:
    now = utc(2026, 1, 14, 12, 0)
    assert in_window(now, BERLIN, None)
    assert next_window_start(now, BERLIN, None) == now
    assert window_closes_at(now, BERLIN, None) is None


@pytest.mark.parametrize(
    ("now", "inside"),
    [
        (utc(2026, 1, 14, 0, 59), False),  # 01:59 in Berlin (UTC+1 in winter)
        (utc(2026, 1, 14, 1, 0), True),  # 02:00: the start is included
        (utc(2026, 1, 14, 3, 59), True),
        (utc(2026, 1, 14, 4, 0), False),  # 05:00: the end is not
        (utc(2026, 7, 14, 0, 0), True),  # 02:00 in summer (UTC+2)
        (utc(2026, 7, 14, 3, 0), False),  # 05:00 in summer
    ],
)
def test_a_window_is_in_the_stores_own_time(now: datetime, inside: bool) -> None:
    assert in_window(now, BERLIN, window("02:00-05:00")) is inside


def test_next_window_start_and_close() -> None:
    w = window("02:00-05:00")
    assert next_window_start(utc(2026, 1, 14, 12, 0), BERLIN, w) == utc(2026, 1, 15, 1, 0)
    assert next_window_start(utc(2026, 1, 14, 0, 30), BERLIN, w) == utc(2026, 1, 14, 1, 0)
    inside = utc(2026, 1, 14, 2, 0)
    assert next_window_start(inside, BERLIN, w) == inside
    assert window_closes_at(inside, BERLIN, w) == utc(2026, 1, 14, 4, 0)
    assert window_closes_at(utc(2026, 1, 14, 12, 0), BERLIN, w) is None


def test_the_same_window_opens_at_different_instants_in_different_zones() -> None:
    w = window("02:00-05:00")
    now = utc(2026, 1, 14, 12, 0)
    assert next_window_start(now, BERLIN, w) == utc(2026, 1, 15, 1, 0)
    assert next_window_start(now, NEW_YORK, w) == utc(2026, 1, 15, 7, 0)  # UTC-5


# --- across midnight ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local_hm", "inside"),
    [((21, 59), False), ((22, 0), True), ((23, 30), True), ((0, 0), True), ((3, 59), True)]
    + [((4, 0), False), ((12, 0), False)],
)
def test_a_window_across_midnight(local_hm: tuple[int, int], inside: bool) -> None:
    hour, minute = local_hm
    day = 14 if hour >= 12 else 15
    now = utc(2026, 1, day, hour, minute) - timedelta(hours=1)  # Berlin is UTC+1
    assert in_window(now, BERLIN, window("22:00-04:00")) is inside


def test_a_window_across_midnight_belongs_to_the_day_it_opens() -> None:
    w = window("Fri 22:00-04:00")
    # 2026-01-16 is a Friday; Saturday 03:00 local is inside, Friday 03:00 is not.
    assert in_window(utc(2026, 1, 17, 2, 0), BERLIN, w)
    assert not in_window(utc(2026, 1, 16, 2, 0), BERLIN, w)
    assert window_closes_at(utc(2026, 1, 16, 23, 0), BERLIN, w) == utc(2026, 1, 17, 3, 0)
    assert next_window_start(utc(2026, 1, 17, 3, 0), BERLIN, w) == utc(2026, 1, 23, 21, 0)


def test_weekdays_skip_to_the_next_allowed_day() -> None:
    w = window("Mon-Fri 02:00-05:00")
    saturday_noon = utc(2026, 1, 17, 11, 0)
    assert next_window_start(saturday_noon, BERLIN, w) == utc(2026, 1, 19, 1, 0)  # Monday


def test_a_whole_day_window() -> None:
    w = window("Mon 00:00-24:00")
    # Monday 2026-01-19 in Berlin runs from 2026-01-18 23:00 to 2026-01-19 23:00 UTC.
    assert in_window(utc(2026, 1, 18, 23, 0), BERLIN, w)
    assert in_window(utc(2026, 1, 19, 22, 59), BERLIN, w)
    assert not in_window(utc(2026, 1, 19, 23, 0), BERLIN, w)
    assert window_closes_at(utc(2026, 1, 19, 12, 0), BERLIN, w) == utc(2026, 1, 19, 23, 0)


# --- daylight saving ---------------------------------------------------------------------
# Berlin 2026: 29 March 02:00 CET -> 03:00 CEST (01:00 UTC); 25 October 03:00 CEST ->
# 02:00 CET (01:00 UTC). New York 2026: 8 March 02:00 EST -> 03:00 EDT (07:00 UTC);
# 1 November 02:00 EDT -> 01:00 EST (06:00 UTC).


def test_spring_forward_in_berlin_opens_when_the_clock_jumps_past_the_start() -> None:
    w = window("02:00-05:00")
    before = utc(2026, 3, 28, 12, 0)
    assert next_window_start(before, BERLIN, w) == utc(2026, 3, 29, 1, 0)  # 03:00 CEST
    assert not in_window(utc(2026, 3, 29, 0, 59), BERLIN, w)  # 01:59 CET
    assert in_window(utc(2026, 3, 29, 1, 0), BERLIN, w)
    # It closes at 05:00 CEST: two hours long that night.
    assert window_closes_at(utc(2026, 3, 29, 1, 0), BERLIN, w) == utc(2026, 3, 29, 3, 0)


def test_spring_forward_a_window_starting_inside_the_skipped_hour() -> None:
    w = window("02:30-03:30")
    assert next_window_start(utc(2026, 3, 28, 12, 0), BERLIN, w) == utc(2026, 3, 29, 1, 0)
    assert window_closes_at(utc(2026, 3, 29, 1, 0), BERLIN, w) == utc(2026, 3, 29, 1, 30)


def test_spring_forward_a_window_wholly_inside_the_skipped_hour_does_not_open() -> None:
    w = window("02:00-02:30")
    # Not that night: the next night, 02:00 CEST.
    assert next_window_start(utc(2026, 3, 28, 12, 0), BERLIN, w) == utc(2026, 3, 30, 0, 0)
    for minute in range(0, 120, 5):
        assert not in_window(utc(2026, 3, 29, 0, 0) + timedelta(minutes=minute), BERLIN, w)


def test_fall_back_in_berlin_makes_the_window_an_hour_longer() -> None:
    w = window("02:00-05:00")
    assert next_window_start(utc(2026, 10, 24, 12, 0), BERLIN, w) == utc(2026, 10, 25, 0, 0)
    # From 02:00 CEST to 05:00 CET: four hours, through both 02:00-03:00 hours.
    assert window_closes_at(utc(2026, 10, 25, 0, 0), BERLIN, w) == utc(2026, 10, 25, 4, 0)
    assert in_window(utc(2026, 10, 25, 1, 30), BERLIN, w)  # 02:30 CET, the second time


def test_fall_back_a_window_inside_the_repeated_hour_opens_once() -> None:
    w = window("02:00-02:30")
    assert in_window(utc(2026, 10, 25, 0, 15), BERLIN, w)  # 02:15 CEST
    assert not in_window(utc(2026, 10, 25, 1, 15), BERLIN, w)  # 02:15 CET
    after_first = utc(2026, 10, 25, 0, 45)
    assert next_window_start(after_first, BERLIN, w) == utc(2026, 10, 26, 1, 0)


def test_new_york_spring_forward() -> None:
    w = window("02:00-04:00")
    assert next_window_start(utc(2026, 3, 7, 18, 0), NEW_YORK, w) == utc(2026, 3, 8, 7, 0)
    assert window_closes_at(utc(2026, 3, 8, 7, 0), NEW_YORK, w) == utc(2026, 3, 8, 8, 0)
    # The day before and after: two hours, at the old and the new offset.
    assert window_closes_at(utc(2026, 3, 7, 7, 0), NEW_YORK, w) == utc(2026, 3, 7, 9, 0)
    assert next_window_start(utc(2026, 3, 8, 12, 0), NEW_YORK, w) == utc(2026, 3, 9, 6, 0)


def test_new_york_fall_back() -> None:
    w = window("01:00-03:00")
    opens = next_window_start(utc(2026, 10, 31, 18, 0), NEW_YORK, w)
    assert opens == utc(2026, 11, 1, 5, 0)  # 01:00 EDT
    assert window_closes_at(opens, NEW_YORK, w) == utc(2026, 11, 1, 8, 0)  # 03:00 EST
    assert in_window(utc(2026, 11, 1, 6, 30), NEW_YORK, w)  # 01:30 EST, the second time


def test_a_window_across_midnight_over_a_dst_night() -> None:
    w = window("22:00-04:00")
    # Saturday 28 March 22:00 CET to Sunday 04:00 CEST: five hours.
    opens = next_window_start(utc(2026, 3, 28, 12, 0), BERLIN, w)
    assert opens == utc(2026, 3, 28, 21, 0)
    assert window_closes_at(opens, BERLIN, w) == utc(2026, 3, 29, 2, 0)


def test_a_zone_that_skipped_midnight() -> None:
    # Sao Paulo, 4 November 2018: 00:00 -03 became 01:00 -02 (03:00 UTC).
    zone = "America/Sao_Paulo"
    before = utc(2018, 11, 3, 12, 0)
    opens = next_window_start(before, zone, window("00:00-02:00"))
    assert opens == utc(2018, 11, 4, 3, 0)
    assert window_closes_at(opens, zone, window("00:00-02:00")) == utc(2018, 11, 4, 4, 0)
    # A window across that midnight ends when the clock jumps past its end.
    late = window("23:00-00:30")
    assert window_closes_at(utc(2018, 11, 4, 2, 30), zone, late) == utc(2018, 11, 4, 3, 0)


# --- unknown zones, bad input ------------------------------------------------------------


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "", "../../etc/passwd", "Europe/"])
def test_an_unknown_zone_is_treated_as_utc(name: str) -> None:
    assert store_zone(name) is UTC
    assert not is_known_zone(name)
    w = window("02:00-05:00")
    assert in_window(utc(2026, 1, 14, 2, 0), name, w)
    assert not in_window(utc(2026, 1, 14, 5, 0), name, w)
    assert next_window_start(utc(2026, 1, 14, 12, 0), name, w) == utc(2026, 1, 15, 2, 0)


def test_known_zones() -> None:
    assert is_known_zone(BERLIN)
    assert is_known_zone("UTC")


def test_now_must_be_aware() -> None:
    naive = datetime(2026, 1, 14, 2, 0)
    for call in (in_window, window_closes_at, next_window_start):
        with pytest.raises(ValueError, match="timezone-aware"):
            call(naive, BERLIN, window("02:00-05:00"))
    with pytest.raises(ValueError, match="timezone-aware"):
        in_window(naive, BERLIN, None)


# --- properties --------------------------------------------------------------------------

ZONES = st.sampled_from(
    [BERLIN, NEW_YORK, "UTC", "Australia/Lord_Howe", "Asia/Kolkata", "America/Sao_Paulo"]
)
INSTANTS = st.datetimes(
    min_value=datetime(2016, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
)


def _window_or_skip(start: int, end: int, days: frozenset[int]) -> MaintenanceWindow | None:
    return None if start == end else MaintenanceWindow(start, end, days)


@given(
    INSTANTS,
    ZONES,
    st.integers(0, 1439),
    st.integers(1, 1440),
    st.frozensets(st.integers(0, 6), min_size=1),
)
@settings(max_examples=300)
def test_next_window_start_is_the_first_moment_installs_are_allowed(
    now: datetime, zone: str, start: int, end: int, days: frozenset[int]
) -> None:
    w = _window_or_skip(start, end, days)
    if w is None:
        return
    opens = next_window_start(now, zone, w)
    assert opens >= now
    assert in_window(now, zone, w) == (opens == now) == (window_closes_at(now, zone, w) is not None)
    assert in_window(opens, zone, w)
    assert opens - now < timedelta(days=9)
    if opens > now:
        # Closed just before it opens (windows open on whole seconds).
        assert not in_window(max(now, opens - timedelta(seconds=1)), zone, w)
    closes = window_closes_at(opens, zone, w)
    assert closes is not None
    # At most a day, and the hour a clock goes back.
    assert timedelta(0) < closes - opens <= timedelta(hours=25)
