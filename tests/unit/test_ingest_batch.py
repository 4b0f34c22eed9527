"""ingest.batch and ingest.status: batches bounded by size and age; status rules as a fold."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from ingest.batch import Batch, BatchBuilder, split
from ingest.decode import Decoded, PresenceRecord, Rejection, TelemetryRecord, decode
from ingest.status import (
    REASON_CONNECTED,
    REASON_DEVICE_ERROR,
    REASON_DISCONNECTED,
    REASON_HEARTBEAT,
    REASON_UNPLUGGED,
    StatusTransition,
    TerminalState,
    status_transitions,
)

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def telemetry(serial: str, message_id: str, minute: int, status: str = "ok") -> TelemetryRecord:
    payload = json.dumps(
        {
            "v": 1,
            "id": message_id,
            "status": status,
            "ts": (T0 + timedelta(minutes=minute)).isoformat(),
        }
    ).encode()
    record = decode(f"tms/v1/{serial}/telemetry", payload, T0 + timedelta(minutes=minute))
    assert isinstance(record, TelemetryRecord)
    return record


def presence(serial: str, state: str, reason: str | None = None) -> PresenceRecord:
    body: dict[str, object] = {"v": 1, "state": state}
    if reason is not None:
        body["reason"] = reason
    record = decode(f"tms/v1/{serial}/status", json.dumps(body).encode(), T0)
    assert isinstance(record, PresenceRecord)
    return record


def junk() -> Decoded:
    return decode("tms/v1/A/telemetry", b"junk", T0)


def test_batch_keeps_history_signals_and_receipts() -> None:
    batch: Batch[int] = Batch()
    items: list[Decoded] = [
        telemetry("A", "a1", 1),
        telemetry("A", "a3", 3),
        telemetry("A", "a2", 2),  # older, arrives late
        telemetry("B", "b1", 1),
        presence("B", "offline"),
        junk(),
        telemetry("A", "a1", 1),  # redelivered within the batch
    ]
    for receipt, item in enumerate(items):
        batch.add(item, receipt)
    assert [r.message_id for r in batch.history] == ["a1", "a3", "a2", "b1"]
    assert len(batch.signals) == 5
    assert isinstance(batch.signals[-1], PresenceRecord)
    assert len(batch.rejections) == 1
    assert batch.receipts == list(range(7))
    assert len(batch) == 7
    assert batch.serials() == {"A", "B"}


def test_split_gives_one_batch_per_message() -> None:
    batch: Batch[str] = Batch()
    batch.add(telemetry("A", "a1", 1), "r1")
    batch.add(junk(), "r2")
    singles = split(batch)
    assert [len(single.decoded) for single in singles] == [1, 1]
    assert isinstance(singles[1].decoded[0], Rejection)


def test_builder_is_due_when_full() -> None:
    builder: BatchBuilder[int] = BatchBuilder(max_messages=2, max_age_s=10)
    assert builder.deadline is None and not builder.is_due(1000.0)
    builder.add(junk(), 1, now=0.0)
    assert not builder.is_due(0.0)
    builder.add(junk(), 2, now=0.0)
    assert builder.is_full() and builder.is_due(0.0)
    assert builder.take().receipts == [1, 2]
    assert len(builder) == 0 and builder.deadline is None


def test_builder_is_due_when_oldest_message_is_old_enough() -> None:
    builder: BatchBuilder[int] = BatchBuilder(max_messages=100, max_age_s=0.5)
    builder.add(junk(), 1, now=10.0)
    builder.add(junk(), 2, now=10.4)
    assert builder.deadline == 10.5
    assert not builder.is_due(10.49)
    assert builder.is_due(10.5)


def test_builder_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError):
        BatchBuilder(0, 1.0)
    with pytest.raises(ValueError):
        BatchBuilder(1, 0)


def _fold(status: str, signals: list, last: datetime | None = None) -> list[tuple[str, str, str]]:
    transitions = status_transitions(TerminalState(7, status, last), signals)
    assert all(isinstance(t, StatusTransition) and t.terminal_id == 7 for t in transitions)
    return [(t.old_status, t.new_status, t.reason) for t in transitions]


@pytest.mark.parametrize(
    ("start", "signals", "expected"),
    [
        ("unknown", [presence("A", "online")], [("unknown", "online", REASON_CONNECTED)]),
        ("online", [presence("A", "online")], []),
        ("online", [presence("A", "offline")], [("online", "offline", REASON_DISCONNECTED)]),
        (
            "online",
            [presence("A", "offline", "keepalive timeout")],
            [("online", "offline", "keepalive timeout")],
        ),
        ("offline", [telemetry("A", "m", 1)], [("offline", "online", REASON_HEARTBEAT)]),
        ("unknown", [telemetry("A", "m", 1)], [("unknown", "online", REASON_HEARTBEAT)]),
        ("online", [telemetry("A", "m", 1)], []),
        ("online", [telemetry("A", "m", 1, "error")], [("online", "error", REASON_DEVICE_ERROR)]),
        (
            "online",
            [telemetry("A", "m", 1, "unplugged")],
            [("online", "error", REASON_UNPLUGGED)],
        ),
        ("error", [telemetry("A", "m", 1, "busy")], [("error", "online", REASON_HEARTBEAT)]),
        (
            "offline",
            [presence("A", "online"), telemetry("A", "m", 1), presence("A", "offline")],
            [
                ("offline", "online", REASON_CONNECTED),
                ("online", "offline", REASON_DISCONNECTED),
            ],
        ),
        ("decommissioned", [presence("A", "online"), telemetry("A", "m", 1)], []),
    ],
)
def test_status_rules(start: str, signals: list, expected: list) -> None:
    assert _fold(start, signals) == expected


def test_replayed_heartbeats_do_not_change_status() -> None:
    last = T0 + timedelta(minutes=5)
    assert _fold("offline", [telemetry("A", "old", 1)], last) == []
    # Newer than the stored one: counts; the older one after it in the batch does not.
    signals = [telemetry("A", "new", 6, "error"), telemetry("A", "old", 2)]
    assert _fold("online", signals, last) == [("online", "error", REASON_DEVICE_ERROR)]
