"""When the fleet report may use the uptime snapshot, and which months ingest keeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from shared.uptime_snapshot import MAX_AGE, SETTLE, UtcMonth, months_to_refresh, usable


def test_a_utc_month_and_the_one_before_across_a_year() -> None:
    january = UtcMonth.of(datetime(2027, 1, 31, 23, 59, tzinfo=UTC))
    assert january == UtcMonth(
        "2027-01", datetime(2027, 1, 1, tzinfo=UTC), datetime(2027, 2, 1, tzinfo=UTC)
    )
    december = january.previous()
    assert (december.key, december.end) == ("2026-12", datetime(2027, 1, 1, tzinfo=UTC))
    # An instant given in another zone counts in UTC.
    eastern = datetime(2027, 1, 1, 1, tzinfo=UTC).astimezone(ZoneInfo("America/New_York"))
    assert UtcMonth.of(eastern).key == "2027-01"


def test_a_month_in_progress_uses_a_snapshot_only_while_it_is_fresh() -> None:
    month = UtcMonth.of(datetime(2026, 12, 10, tzinfo=UTC))
    computed = datetime(2026, 12, 10, 12, tzinfo=UTC)
    assert usable(month.end, computed, computed, computed + MAX_AGE - timedelta(seconds=1))
    assert not usable(month.end, computed, computed, computed + MAX_AGE)


def test_a_settled_month_is_final_but_not_before() -> None:
    month = UtcMonth.of(datetime(2026, 11, 10, tzinfo=UTC))
    late = month.end + SETTLE
    years_later = late + timedelta(days=900)
    assert usable(month.end, month.end, late, years_later)
    # Worked out before late replays stopped coming: only while fresh.
    early = late - timedelta(seconds=1)
    assert not usable(month.end, month.end, early, years_later)
    # Worked out after the month, but only up to a moment inside it: never final.
    assert not usable(month.end, month.end - timedelta(hours=1), late, years_later)


def test_ingest_keeps_the_last_month_until_it_settles() -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    assert [m.key for m in months_to_refresh(start)] == ["2026-12", "2026-11"]
    assert [m.key for m in months_to_refresh(start + SETTLE - timedelta(seconds=1))] == [
        "2026-12",
        "2026-11",
    ]
    assert [m.key for m in months_to_refresh(start + SETTLE)] == ["2026-12"]
