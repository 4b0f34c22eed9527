"""ingest.telemetry_columns: the table of heartbeat columns, against the schema and the record."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import sqlmodel

import shared.models  # noqa: F401 - registers the tables in SQLModel's metadata
from ingest.decode import TelemetryRecord, decode
from ingest.telemetry_columns import COLUMNS, HISTORY, LATEST, history_rows, latest_rows

TABLES = sqlmodel.SQLModel.metadata.tables
T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def record(serial: str = "TC-1") -> TelemetryRecord:
    body = {
        "v": 1,
        "id": "m1",
        "ts": T0.isoformat(),
        "status": "ok",
        "firmware": "3.2.1",
        "model": "TC-200",
        "uptime_s": 42,
        "terminal": {"cpu": 1.5, "memory": 2.5, "disk": 3.5},
        "host": {"name": "pc-1", "cpu": 4.5, "memory": 5.5, "disk": 6.5},
        "errors": [{"code": "E1", "message": "paper"}],
    }
    decoded = decode(f"tms/v1/{serial}/telemetry", json.dumps(body).encode(), T0)
    assert isinstance(decoded, TelemetryRecord)
    return decoded


def test_every_column_is_one_of_its_tables() -> None:
    assert {c.name for c in HISTORY} | {"terminal_id"} <= set(TABLES["telemetry"].columns.keys())
    terminal = set(TABLES["terminal"].columns.keys())
    assert {c.terminal_column or c.name for c in LATEST} <= terminal
    assert len({c.name for c in COLUMNS}) == len(COLUMNS)


def test_the_rows_hold_the_record_in_the_columns_order() -> None:
    r = record()
    (history,) = history_rows([r, record("TC-UNKNOWN")], {"TC-1": 7})
    assert history == (
        7, "m1", T0, T0, "ok", "3.2.1", 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, r.errors_json,
    )  # fmt: skip
    assert latest_rows({7: r}) == [
        (7, T0, T0, "ok", "3.2.1", 1.5, 2.5, 3.5, "pc-1", 4.5, 5.5, 6.5, "TC-200", 42)
    ]
