"""Partition arithmetic of the retention job (pure), for telemetry and the terminal log."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from ingest.retention import (
    PARTITIONED,
    TELEMETRY,
    TERMINAL_LOG,
    PartitionedTable,
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


@pytest.mark.parametrize(
    ("table", "name", "month"),
    [
        (TERMINAL_LOG, "terminal_log_y2026m02", date(2026, 2, 1)),
        (TERMINAL_LOG, "terminal_log_default", None),
        (TERMINAL_LOG, "telemetry_y2026m02", None),  # another table's partition
        (TELEMETRY, "terminal_log_y2026m02", None),
        (TELEMETRY, "telemetry_y2026m02_old", None),
        (TELEMETRY, "telemetry_y26m2", None),
    ],
)
def test_each_table_reads_only_its_own_partition_names(
    table: PartitionedTable, name: str, month: date | None
) -> None:
    assert partition_month(name, table) == month


def test_the_terminal_log_is_partitioned_like_telemetry_on_its_own_column() -> None:
    assert PARTITIONED == (TELEMETRY, TERMINAL_LOG)
    assert partition_name(date(2026, 12, 1), TERMINAL_LOG) == "terminal_log_y2026m12"
    assert (TERMINAL_LOG.default, TERMINAL_LOG.column) == ("terminal_log_default", "at")
    assert (TELEMETRY.default, TELEMETRY.column) == ("telemetry_default", "ts")


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
