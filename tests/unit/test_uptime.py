"""console.uptime: in-service windows and online seconds from a status history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from console.uptime import UptimeSeconds, in_service_window, uptime_seconds

START = datetime(2026, 3, 1, tzinfo=UTC)
END = datetime(2026, 4, 1, tzinfo=UTC)  # March: 31 days
MONTH_S = 31 * 86_400.0
LATER = datetime(2026, 6, 15, tzinfo=UTC)  # "now", well after March
DAY = timedelta(days=1)


def window(
    *,
    installed: datetime | None = None,
    decommissioned: datetime | None = None,
    now: datetime = LATER,
) -> tuple[datetime, datetime] | None:
    return in_service_window(
        START, END, in_service_from=installed, decommissioned_at=decommissioned, now=now
    )


def test_a_whole_month_online_without_changes_in_it() -> None:
    before = [(START - 10 * DAY, "online")]
    assert uptime_seconds(window(), before) == UptimeSeconds(MONTH_S, MONTH_S)


def test_no_changes_at_all_is_unknown_and_never_online() -> None:
    result = uptime_seconds(window(), [])
    assert result == UptimeSeconds(0.0, MONTH_S)
    assert result.share == 0.0


def test_the_status_before_the_first_change_is_the_callers() -> None:
    assert uptime_seconds(window(), [], status_before="online").online == MONTH_S
    assert uptime_seconds(window(), [], status_before="offline").online == 0.0


def test_offline_for_a_day_in_the_middle() -> None:
    changes = [
        (START - DAY, "online"),
        (START + 10 * DAY, "offline"),
        (START + 11 * DAY, "online"),
    ]
    result = uptime_seconds(window(), changes)
    assert result == UptimeSeconds(MONTH_S - 86_400, MONTH_S)
    assert result.share == pytest.approx(30 / 31)


def test_every_status_but_online_counts_as_down() -> None:
    changes = [
        (START, "online"),
        (START + DAY, "error"),
        (START + 2 * DAY, "unknown"),
        (START + 3 * DAY, "offline"),
        (START + 4 * DAY, "online"),
    ]
    assert uptime_seconds(window(), changes).online == MONTH_S - 3 * 86_400


def test_a_change_exactly_at_the_start_counts_from_the_start() -> None:
    assert uptime_seconds(window(), [(START, "online")]).online == MONTH_S
    # ... and overrides what it was before.
    changes = [(START - DAY, "online"), (START, "offline")]
    assert uptime_seconds(window(), changes).online == 0.0


def test_a_change_exactly_at_the_end_belongs_to_the_next_month() -> None:
    changes = [(START - DAY, "online"), (END, "offline")]
    assert uptime_seconds(window(), changes).online == MONTH_S
    assert uptime_seconds(window(), [(END, "online")]).online == 0.0


def test_changes_after_the_end_are_ignored() -> None:
    changes = [(START, "online"), (END + DAY, "offline"), (END + 2 * DAY, "online")]
    assert uptime_seconds(window(), changes) == UptimeSeconds(MONTH_S, MONTH_S)


def test_changes_arrive_in_any_order() -> None:
    changes = [(START + 11 * DAY, "online"), (START - DAY, "online"), (START + 10 * DAY, "error")]
    assert uptime_seconds(window(), changes).online == MONTH_S - 86_400


def test_two_changes_at_one_instant_the_last_given_wins() -> None:
    changes = [(START + DAY, "online"), (START + DAY, "offline")]
    assert uptime_seconds(window(), changes).online == 0.0
    changes = [(START + DAY, "offline"), (START + DAY, "online")]
    assert uptime_seconds(window(), changes).online == MONTH_S - 86_400


def test_decommissioned_mid_month_ends_the_window() -> None:
    gone = START + 20 * DAY
    span = window(decommissioned=gone)
    assert span == (START, gone)
    changes = [(START - DAY, "online"), (START + 5 * DAY, "offline"), (START + 6 * DAY, "online")]
    # The decommissioning's own change (to 'decommissioned') changes nothing inside.
    changes.append((gone, "decommissioned"))
    assert uptime_seconds(span, changes) == UptimeSeconds(19 * 86_400, 20 * 86_400)


def test_installed_mid_month_starts_the_window_and_earlier_changes_settle_the_status() -> None:
    installed = START + 15 * DAY
    span = window(installed=installed)
    assert span == (installed, END)
    # Provisioned and tested online before going to the store; offline on the way.
    changes = [(START + 2 * DAY, "online"), (START + 3 * DAY, "offline")]
    assert uptime_seconds(span, changes) == UptimeSeconds(0.0, 16 * 86_400)
    changes.append((installed + DAY, "online"))
    assert uptime_seconds(span, changes) == UptimeSeconds(15 * 86_400, 16 * 86_400)


def test_installed_before_the_month_is_the_whole_month() -> None:
    assert window(installed=START - 100 * DAY) == (START, END)


def test_installed_after_or_decommissioned_before_the_month_is_not_in_service() -> None:
    assert window(installed=END) is None
    assert window(installed=END + DAY) is None
    assert window(decommissioned=START) is None
    assert window(decommissioned=START - DAY) is None
    assert uptime_seconds(None, [(START, "online")]) == UptimeSeconds(0.0, 0.0)
    assert UptimeSeconds().share is None


def test_a_future_month_is_not_in_service() -> None:
    assert window(now=START - DAY) is None
    assert window(now=START) is None


def test_the_month_in_progress_ends_now() -> None:
    now = START + 10 * DAY + timedelta(hours=6)
    span = window(now=now)
    assert span == (START, now)
    changes = [(START, "online"), (START + 10 * DAY, "offline")]
    result = uptime_seconds(span, changes)
    assert result == UptimeSeconds(10 * 86_400, 10.25 * 86_400)
    # A change "in the future" (a clock ahead) is beyond the window's end.
    assert uptime_seconds(span, [(START, "online"), (now + DAY, "offline")]).online == (
        10.25 * 86_400
    )


def test_installed_and_decommissioned_in_the_same_month() -> None:
    span = window(installed=START + DAY, decommissioned=START + 3 * DAY)
    assert uptime_seconds(span, [(START + 2 * DAY, "online")]) == UptimeSeconds(86_400, 2 * 86_400)


def test_decommissioned_before_installed_is_not_in_service() -> None:
    assert window(installed=START + 5 * DAY, decommissioned=START + 4 * DAY) is None


def test_extreme_stored_times_do_not_break_the_arithmetic() -> None:
    # What the console reads for -infinity and infinity (console.stored_values).
    earliest, latest = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
    span = window(installed=earliest, decommissioned=latest)
    assert span == (START, END)
    result = uptime_seconds(span, [(earliest, "online"), (latest, "offline")])
    assert result == UptimeSeconds(MONTH_S, MONTH_S)


def test_seconds_add_up_across_terminals() -> None:
    total = UptimeSeconds(10, 20) + UptimeSeconds(5, 20)
    assert total == UptimeSeconds(15, 40)
    assert total.share == 0.375
