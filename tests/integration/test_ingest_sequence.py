"""Message numbers in PostgreSQL: gaps found, filled, asked for again, and given up on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from ingest.batch import Batch
from ingest.decode import decode
from ingest.gap_repair import repair_once
from ingest.writer import BatchWriter, WriteResult
from shared.messages import stamp_sequence
from shared.settings import IngestSettings

pytestmark = pytest.mark.integration

STREAM = "0000000001abcdef"
NOW = datetime.now(UTC)


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        customer = conn.execute("INSERT INTO customer (name) VALUES ('C') RETURNING id").fetchone()
        assert customer is not None
        conn.execute(
            "INSERT INTO terminal (serial, customer_id, model, status)"
            " VALUES ('TC-1', %s, 'TC-200', 'unknown')",
            (customer[0],),
        )
        yield conn


def heartbeat(seq: int, *, stream: str = STREAM, ts: datetime | None = None) -> tuple[str, bytes]:
    body = {"v": 1, "id": f"{stream}-{seq}", "status": "ok", "ts": (ts or NOW).isoformat()}
    payload = json.dumps(body, separators=(",", ":")).encode()
    return ("tms/v1/TC-1/telemetry", stamp_sequence(payload, stream, seq))


def batch_of(*messages: tuple[str, bytes]) -> Batch[int]:
    batch: Batch[int] = Batch()
    for index, (topic, payload) in enumerate(messages):
        batch.add(decode(topic, payload, datetime.now(UTC)), index)
    return batch


async def _write(database_url: str, batches: list[Batch[int]]) -> list[WriteResult]:
    store = BatchWriter.create(database_url)
    await store.open()
    try:
        return [await store.write(batch) for batch in batches]
    finally:
        await store.close()


def write(database_url: str, *seqs: int, stream: str = STREAM) -> WriteResult:
    batch = batch_of(*(heartbeat(n, stream=stream) for n in seqs))
    return asyncio.run(_write(database_url, [batch]))[0]


def gaps(db: psycopg.Connection[Any]) -> list[tuple[str, int, int]]:
    rows = db.execute("SELECT stream, first_seq, last_seq FROM seq_gap ORDER BY stream, first_seq")
    return [tuple(row) for row in rows.fetchall()]  # type: ignore[misc]


def counts(db: psycopg.Connection[Any]) -> dict[str, Any]:
    row = db.execute(
        "SELECT seq_stream, seq_high, seq_gaps_found, seq_missing, seq_recovered, seq_lost"
        " FROM terminal WHERE serial = 'TC-1'"
    ).fetchone()
    assert row is not None
    keys = ("stream", "high", "gaps_found", "missing", "recovered", "lost")
    return dict(zip(keys, row, strict=True))


def test_a_jump_is_a_gap_that_shrinks_as_its_numbers_arrive(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    result = write(database_url, 1, 2, 6)
    assert (result.sequence.gaps_found, result.sequence.missing) == (1, 3)
    assert gaps(db) == [(STREAM, 3, 5)]
    assert counts(db) | {} == {
        "stream": STREAM, "high": 6, "gaps_found": 1, "missing": 3, "recovered": 0, "lost": 0
    }  # fmt: skip
    assert write(database_url, 4).sequence.recovered == 1
    assert gaps(db) == [(STREAM, 3, 3), (STREAM, 5, 5)]  # split around the fill
    closing = write(database_url, 3, 5, 7)
    assert (closing.sequence.recovered, closing.sequence.gaps_closed) == (2, 2)
    assert gaps(db) == []
    assert counts(db)["recovered"] == 3 and counts(db)["high"] == 7
    # A redelivery of a number that was never missing changes nothing.
    assert write(database_url, 2).sequence.recovered == 0
    assert counts(db)["recovered"] == 3


def test_a_dead_lettered_number_arrived_and_is_no_gap(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    stale = heartbeat(2, ts=datetime(1970, 1, 1, tzinfo=UTC))
    batch = batch_of(heartbeat(1), stale, heartbeat(3))
    (result,) = asyncio.run(_write(database_url, [batch]))
    assert result.dead_letters["past-timestamp"] == 1
    assert gaps(db) == []
    assert counts(db)["high"] == 3


def test_a_newer_stream_starts_over_and_the_old_gaps_stay_to_repair(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    write(database_url, 1, 4)
    newer = "0000000002abcdef"
    write(database_url, 1, 2, stream=newer)
    assert counts(db)["stream"] == newer and counts(db)["high"] == 2
    assert gaps(db) == [(STREAM, 2, 3)]
    assert write(database_url, 2, 3).sequence.recovered == 2  # the old stream's resend
    assert gaps(db) == [] and counts(db)["stream"] == newer


def test_two_workers_committing_one_terminal_in_turn_leave_no_gap(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    odd = [batch_of(*(heartbeat(n) for n in range(k, k + 10, 2))) for k in range(1, 200, 10)]
    even = [batch_of(*(heartbeat(n) for n in range(k, k + 10, 2))) for k in range(2, 200, 10)]

    async def both() -> None:
        await asyncio.gather(_write(database_url, odd), _write(database_url, even))

    asyncio.run(both())
    assert gaps(db) == []
    state = counts(db)
    assert state["high"] == 200
    assert state["missing"] == state["recovered"]  # whatever was missing a moment came back


def repair(database_url: str, settings: IngestSettings, now: datetime) -> tuple[int, int]:
    async def go() -> tuple[int, int]:
        pool = AsyncConnectionPool(database_url, open=False, kwargs={"autocommit": True})
        await pool.open()
        try:
            done = await repair_once(pool, settings, now)
            return done.requested, done.lost
        finally:
            await pool.close()

    return asyncio.run(go())


def resend_commands(db: psycopg.Connection[Any]) -> list[tuple[str, dict[str, Any], str]]:
    rows = db.execute(
        "SELECT id, args, status FROM command WHERE name = 'resend' ORDER BY created_at, id"
    ).fetchall()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def finish(
    db: psycopg.Connection[Any], command_id: str, status: str, result: Any, at: datetime
) -> None:
    db.execute(
        "UPDATE command SET status = %s, result = %s, finished_at = %s WHERE id = %s",
        (status, json.dumps(result), at, command_id),
    )


def test_a_gap_is_asked_for_after_its_grace_and_what_the_agent_lacks_is_lost(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    settings = IngestSettings(gap_grace_s=10, resend_attempts=2)
    write(database_url, 1, 3, 10)  # gaps 2 and 4-9
    found = datetime.now(UTC)
    assert repair(database_url, settings, found + timedelta(seconds=5)) == (0, 0)  # in grace
    later = found + timedelta(seconds=30)
    assert repair(database_url, settings, later) == (1, 0)
    ((command_id, args, status),) = resend_commands(db)
    assert status == "queued"
    assert args == {"stream": STREAM, "ranges": [[2, 2], [4, 9]]}
    assert repair(database_url, settings, later + timedelta(seconds=60)) == (0, 0)  # in flight

    # The agent resent 2 and 4-6 (they arrive), and no longer holds 7-8.
    write(database_url, 2, 4, 5, 6)
    finish(db, command_id, "succeeded", {"stream": STREAM, "resent": 4, "missing": [[7, 8]]}, later)
    assert gaps(db) == [(STREAM, 7, 9)]
    requested, lost = repair(database_url, settings, later + timedelta(seconds=60))
    assert (requested, lost) == (0, 2)  # 9 is left as its own row, asked for next pass
    assert gaps(db) == [(STREAM, 9, 9)]
    log = db.execute("SELECT kind, message FROM terminal_log WHERE kind = 'gap'").fetchall()
    assert len(log) == 1 and "7-8" in log[0][1]
    assert counts(db)["lost"] == 2

    assert repair(database_url, settings, later + timedelta(seconds=90)) == (1, 0)
    last = resend_commands(db)[-1]
    assert last[1] == {"stream": STREAM, "ranges": [[9, 9]]}
    finish(db, last[0], "expired", None, later + timedelta(seconds=90))
    # Two answered requests and 9 never came: given up.
    assert repair(database_url, settings, later + timedelta(seconds=200)) == (0, 1)
    assert gaps(db) == [] and counts(db)["lost"] == 3


def test_a_decommissioned_terminal_is_sent_no_resend(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    write(database_url, 1, 5)
    db.execute("UPDATE terminal SET decommissioned_at = now()")
    settings = IngestSettings(gap_grace_s=1)
    assert repair(database_url, settings, datetime.now(UTC) + timedelta(seconds=5)) == (0, 0)
    assert resend_commands(db) == []
