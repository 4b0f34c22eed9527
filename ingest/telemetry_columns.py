"""The telemetry columns, written once: name, PostgreSQL type, and where a record holds it.

A heartbeat is written twice: every one into the history (``telemetry``) and each
terminal's newest into its row (``terminal``, through a staging table and one
``UPDATE``). Both COPY column lists, their binary types, the staging tables' DDL, the
UPDATE's ``SET`` list and the tuples of each row are built from ``COLUMNS`` below, so
a new heartbeat field is one line here (plus its migration and model, and its field
in ``ingest.decode.TelemetryRecord``).

Every row starts with the terminal's id, which comes from its serial through the
store's cache rather than from the record, so it is not a line of the table.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ingest.decode import TelemetryRecord

NEW = "{new}"  # in ``latest``: the heartbeat's value (``v.<name>``)
HELD = "{held}"  # in ``latest``: the terminal row's value now (``t.<terminal column>``)
KEEP_KNOWN = f"COALESCE({NEW}, {HELD})"  # a heartbeat without it keeps the known one


@dataclass(frozen=True)
class TelemetryColumn:
    """One column of a heartbeat, in the history, the terminal row, or both."""

    name: str  # the column in ``telemetry`` and in the staging tables
    pg_type: str  # as binary COPY names it; also the staging tables' column type
    source: str  # the attribute path on a TelemetryRecord (``envelope.received_at``)
    history: bool = True  # a column of ``telemetry``
    # How the terminal row takes it (``NEW``, ``HELD``), or None: history only.
    latest: str | None = NEW
    terminal_column: str | None = None  # the terminal row's column, when named otherwise

    @property
    def assignment(self) -> str:
        """Its item of the UPDATE's ``SET`` list."""
        assert self.latest is not None
        target = self.terminal_column or self.name
        value = self.latest.format(new=f"v.{self.name}", held=f"t.{target}")
        return f"{target} = {value}"


# The last time ingest heard of a terminal never goes back (presence sets it too);
# uptime is a reading like the metrics.
COLUMNS = (
    TelemetryColumn("message_id", "text", "message_id", latest=None),
    TelemetryColumn("ts", "timestamptz", "ts", terminal_column="last_heartbeat_at"),
    TelemetryColumn(
        "received_at",
        "timestamptz",
        "envelope.received_at",
        latest=f"GREATEST({HELD}, {NEW})",
        terminal_column="last_seen_at",
    ),
    TelemetryColumn("device_status", "text", "device_status.value"),
    TelemetryColumn("firmware_version", "text", "firmware_version", latest=KEEP_KNOWN),
    TelemetryColumn("cpu_pct", "float8", "cpu_pct"),
    TelemetryColumn("memory_pct", "float8", "memory_pct"),
    TelemetryColumn("disk_pct", "float8", "disk_pct"),
    TelemetryColumn("host_name", "text", "host_name", history=False, latest=KEEP_KNOWN),
    TelemetryColumn("host_cpu_pct", "float8", "host_cpu_pct"),
    TelemetryColumn("host_memory_pct", "float8", "host_memory_pct"),
    TelemetryColumn("host_disk_pct", "float8", "host_disk_pct"),
    TelemetryColumn("errors", "jsonb", "errors_json", latest=None),
    TelemetryColumn("model", "text", "model", history=False, latest=KEEP_KNOWN),
    TelemetryColumn("uptime_s", "int8", "uptime_s", history=False),
)

HISTORY = tuple(column for column in COLUMNS if column.history)
LATEST = tuple(column for column in COLUMNS if column.latest is not None)


def column_list(columns: Iterable[TelemetryColumn]) -> str:
    """``terminal_id, a, b, ...``: a COPY's, INSERT's or SELECT's column list."""
    return ", ".join(["terminal_id", *(column.name for column in columns)])


def copy_types(columns: Iterable[TelemetryColumn]) -> list[str]:
    """The binary COPY's types, in the order of ``column_list``."""
    return ["int4", *(column.pg_type for column in columns)]


def staging_columns(columns: Iterable[TelemetryColumn]) -> str:
    """The body of a staging table's CREATE TABLE."""
    return ", ".join(
        ["terminal_id integer", *(f"{column.name} {column.pg_type}" for column in columns)]
    )


def set_list(columns: Iterable[TelemetryColumn]) -> str:
    """The UPDATE's ``SET`` items for the terminal row."""
    return ",\n    ".join(column.assignment for column in columns)


_SOURCE = re.compile(r"[a-z_]+(\.[a-z_]+)*")


def _values(columns: Iterable[TelemetryColumn]) -> str:
    paths = [column.source for column in columns]
    assert all(_SOURCE.fullmatch(path) for path in paths), paths  # names, never code
    return ", ".join(f"r.{path}" for path in paths)


# The row builders are compiled once from the table into the list comprehensions one
# would write by hand. A tuple per row from operator.attrgetter plus the terminal's id
# cost 20 % more than that (950 against 790 us for 2,000 rows, measured), a third of it
# again with ``*`` unpacking; the history rows are ingest's hottest Python loop.
HistoryRows = Callable[[Iterable[TelemetryRecord], Mapping[str, int]], list[tuple[Any, ...]]]
LatestRows = Callable[[Mapping[int, TelemetryRecord]], list[tuple[Any, ...]]]

history_rows: HistoryRows = eval(  # source built from the constant table above, never from input
    f"lambda records, ids: [(ids[r.serial], {_values(HISTORY)})"
    " for r in records if r.serial in ids]",
    {},
)
history_rows.__doc__ = "The history's COPY rows of the known terminals' records."

latest_rows: LatestRows = eval(  # source built from the constant table above, never from input
    f"lambda newest: [(terminal_id, {_values(LATEST)}) for terminal_id, r in newest.items()]",
    {},
)
latest_rows.__doc__ = "The latest-state staging rows: each terminal's newest record."
