"""Partition arithmetic of the retention job (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from ingest.retention import (
    add_months,
    bounds,
    months_to_create,
    months_to_drop,
    partition_month,
    partition_name,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("month", "count", "expected"),
    [
        (date(2026, 11, 1), 1, date(2026, 12, 1)),
        (date(2026, 12, 1), 1, date(2027, 1, 1)),
        (date(2026, 1, 1), -1, date(2025, 12, 1)),
        (date(2026, 11, 1), -13, date(2025, 10, 1)),
    ],
)
def test_add_months(month: date, count: int, expected: date) -> None:
    assert add_months(month, count) == expected


def test_names_round_trip_and_the_default_is_not_a_month() -> None:
    assert partition_name(date(2026, 2, 1)) == "telemetry_y2026m02"
    assert partition_month("telemetry_y2026m02") == date(2026, 2, 1)
    assert partition_month("telemetry_default") is None


def test_bounds_are_utc_months() -> None:
    assert bounds(date(2026, 12, 1)) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )


def test_partitions_are_created_ahead_and_not_twice() -> None:
    assert months_to_create(NOW, 2, set()) == [
        date(2026, 11, 1),
        date(2026, 12, 1),
        date(2027, 1, 1),
    ]
    assert months_to_create(NOW, 2, {date(2026, 11, 1), date(2026, 12, 1)}) == [date(2027, 1, 1)]


def test_only_months_wholly_older_than_retention_are_dropped() -> None:
    existing = {date(2025, 10, 1), date(2025, 11, 1), date(2025, 12, 1), date(2026, 11, 1)}
    # 365 days before 2026-11-22 is 2025-11-22: October 2025 ends before it, November not.
    assert months_to_drop(NOW, 365, existing) == [date(2025, 10, 1)]
