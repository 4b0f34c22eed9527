"""Command results in ingest.writer against a real PostgreSQL: state moves, NOTIFY, the log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from ingest.batch import Batch
from ingest.decode import decode
from ingest.errors import BatchRefusedError
from ingest.writer import BatchWriter, WriteResult
from shared.command_states import FINAL
from tests.integration.test_ingest_writer import T0, telemetry, write
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

CHANNEL = "tms_command_done"
NOTIFY_TIMEOUT_S = 30.0  # generous: the machine may be busy; only a failure waits it out


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        customer = conn.execute("INSERT INTO customer (name) VALUES ('C') RETURNING id").fetchone()
        assert customer is not None
        for serial in ("TC-1", "TC-2"):
            conn.execute(
                "INSERT INTO terminal (serial, customer_id, model, status)"
                " VALUES (%s, %s, 'TC-200', 'online')",
                (serial, customer[0]),
            )
        yield conn


def command(db: psycopg.Connection[Any], command_id: str, name: str, status: str) -> None:
    db.execute(
        "INSERT INTO command (id, terminal_id, name, status)"
        " SELECT %s, id, %s, %s FROM terminal WHERE serial = 'TC-1'",
        (command_id, name, status),
    )


def result(
    command_id: str,
    status: str,
    minute: int = 1,
    serial: str = "TC-1",
    error: str | None = None,
    output: dict[str, Any] | None = None,
) -> tuple[str, bytes]:
    body: dict[str, Any] = {
        "v": 1,
        "id": command_id,
        "status": status,
        "output": output or {},
        "finished_at": (T0 + timedelta(minutes=minute)).isoformat(),
    }
    if error is not None:
        body["error"] = error
    return (f"tms/v1/{serial}/cmd-result/{command_id}", json.dumps(body).encode())


def row(db: psycopg.Connection[Any], command_id: str) -> tuple[Any, ...]:
    found = db.execute(
        "SELECT status, result, error, finished_at FROM command WHERE id = %s", (command_id,)
    ).fetchone()
    assert found is not None
    return found


def log_rows(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT l.source_id, t.serial, l.at, l.severity, l.code, l.message, l.data"
        " FROM terminal_log l JOIN terminal t ON t.id = l.terminal_id"
        " WHERE l.kind = 'command' ORDER BY l.source_id, l.at"
    ).fetchall()


def dead_letters(db: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    return db.execute("SELECT reason, topic FROM dead_letter ORDER BY id").fetchall()


def listener(database_url: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(database_url, autocommit=True)
    conn.execute(f"LISTEN {CHANNEL}")
    return conn


def heard(conn: psycopg.Connection[Any], count: int) -> list[str]:
    """The payloads of the next ``count`` notifications, waiting for them up to a deadline."""
    payloads = [n.payload for n in conn.notifies(timeout=NOTIFY_TIMEOUT_S, stop_after=count)]
    assert len(payloads) == count, f"heard {payloads} within {NOTIFY_TIMEOUT_S:g} s"
    return payloads


def waiting_for_a_lock(db: psycopg.Connection[Any]) -> bool:
    found = db.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    ).fetchone()
    return found is not None and found[0] > 0


def test_results_move_queued_and_sent_commands_to_their_final_state(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    command(db, "q1", "diagnostics", "queued")  # sent by a sender that died before recording it
    command(db, "s1", "reboot", "sent")
    command(db, "s2", "set_config", "sent")
    done = write(
        database_url,
        result("q1", "ok", output={"checks": 3}),
        result("s1", "error", 2, error="device busy"),
        result("s2", "rejected", 3, error="unknown key 'x'"),
    )
    assert (done.commands_finished, done.command_duplicates) == (3, 0)
    assert not done.dead_letters
    assert row(db, "q1") == ("succeeded", {"checks": 3}, None, T0 + timedelta(minutes=1))
    assert row(db, "s1") == ("failed", {}, "device busy", T0 + timedelta(minutes=2))
    assert row(db, "s2") == ("rejected", {}, "unknown key 'x'", T0 + timedelta(minutes=3))


@pytest.mark.parametrize("final", sorted(FINAL))
def test_a_command_in_a_final_state_keeps_it_and_the_result_is_no_dead_letter(
    database_url: str, db: psycopg.Connection[Any], final: str
) -> None:
    command(db, "c1", "reboot", final)
    before = row(db, "c1")
    done = write(database_url, result("c1", "ok", output={"late": True}))
    assert (done.commands_finished, done.command_duplicates) == (0, 1)
    assert not done.dead_letters and dead_letters(db) == []
    assert row(db, "c1") == before
    # The terminal said so all the same: its log keeps the answer, marked as not applied.
    ((_, _, _, severity, code, message, data),) = log_rows(db)
    assert (severity, code) == ("info", "reboot")
    assert message == "reboot succeeded (arrived after the command was closed)"
    assert data == {"status": "ok", "command": "reboot", "applied": False}


def test_a_repeated_result_finishes_its_command_once(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    command(db, "c1", "ping", "sent")
    # The same result twice in one batch (QoS 1 redelivery), then once more later.
    first = write(database_url, result("c1", "ok", output={"ms": 12}), result("c1", "ok"))
    again = write(database_url, result("c1", "error", 5, error="second answer"))
    assert (first.commands_finished, first.command_duplicates) == (1, 1)
    assert (again.commands_finished, again.command_duplicates) == (0, 1)
    assert row(db, "c1") == ("succeeded", {"ms": 12}, None, T0 + timedelta(minutes=1))
    assert dead_letters(db) == []


def test_results_for_unknown_or_foreign_commands_are_dead_lettered(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    command(db, "c1", "ping", "sent")
    done = write(
        database_url,
        result("c1", "ok", serial="TC-2"),  # TC-1's command, answered by TC-2
        result("nope", "ok"),
    )
    assert (done.commands_finished, done.command_duplicates) == (0, 0)
    assert dict(done.dead_letters) == {"unknown-command": 2}
    assert dead_letters(db) == [
        ("unknown-command", "tms/v1/TC-2/cmd-result/c1"),
        ("unknown-command", "tms/v1/TC-1/cmd-result/nope"),
    ]
    assert row(db, "c1")[0] == "sent"
    assert log_rows(db) == []


def test_each_result_becomes_one_log_row_whatever_the_redeliveries(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    command(db, "c1", "diagnostics", "sent")
    command(db, "c2", "reboot", "sent")
    command(db, "c3", "set_config", "sent")
    messages = (
        result("c1", "ok", 1, output={"checks": []}),
        result("c2", "error", 2, error="x" * 2000),
        result("c3", "rejected", 3, error="bad args"),
    )
    write(database_url, *messages)
    write(database_url, *messages)  # the broker delivers the batch again
    rows = log_rows(db)
    assert [r[:5] for r in rows] == [
        ("c1", "TC-1", T0 + timedelta(minutes=1), "info", "diagnostics"),
        ("c2", "TC-1", T0 + timedelta(minutes=2), "error", "reboot"),
        ("c3", "TC-1", T0 + timedelta(minutes=3), "warning", "set_config"),
    ]
    assert rows[0][5:] == (
        "diagnostics succeeded",
        {"status": "ok", "command": "diagnostics", "applied": True},
    )
    assert rows[1][5].startswith("reboot failed: xxx") and len(rows[1][5]) == 2000
    assert rows[2][5:] == (
        "set_config rejected: bad args",
        {"status": "rejected", "command": "set_config", "applied": True},
    )


def test_the_sender_hears_each_finished_command_once_committed(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    command(db, "c1", "ping", "sent")
    command(db, "c2", "reboot", "queued")
    command(db, "old", "ping", "expired")
    with listener(database_url) as conn:
        write(
            database_url,
            result("c1", "ok"),
            result("c2", "error", error="no"),
            result("old", "ok"),  # final already: nothing to tell
            result("nope", "ok"),  # unknown: dead-lettered
        )
        assert sorted(heard(conn, 2)) == ["c1", "c2"]

        # A batch that fails after its command statement is rolled back, NOTIFY with
        # it: the next notification is the next committed batch's.
        command(db, "c3", "ping", "sent")
        command(db, "c4", "ping", "sent")
        db.execute("ALTER TABLE terminal ADD CONSTRAINT no_uptime_13 CHECK (uptime_s <> 13)")
        with pytest.raises(BatchRefusedError):
            write(database_url, result("c3", "ok"), telemetry("TC-1", "t1", 1, uptime_s=13))
        assert row(db, "c3")[0] == "sent"
        write(database_url, result("c4", "ok"))
        assert heard(conn, 1) == ["c4"]


def test_results_and_a_sender_racing_for_one_command_end_in_one_final_state(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    # The sender expires the command in an open transaction; the result's batch waits
    # for the row and then finds it final: it changes nothing and is no dead letter.
    command(db, "c1", "ping", "sent")

    async def go() -> WriteResult:
        store = BatchWriter.create(database_url)
        await store.open()
        try:
            async with await psycopg.AsyncConnection.connect(database_url) as sender:
                await sender.execute(
                    "UPDATE command SET status = 'expired', finished_at = %s WHERE id = 'c1'",
                    (T0,),
                )
                batch: Batch[int] = Batch()
                batch.add(decode(*result("c1", "ok"), T0), 0)
                writing = asyncio.create_task(store.write(batch))
                await asyncio.to_thread(
                    wait_until, lambda: waiting_for_a_lock(db), "the batch to wait for the row"
                )
                await sender.commit()
                return await writing
        finally:
            await store.close()

    done = asyncio.run(go())
    assert (done.commands_finished, done.command_duplicates) == (0, 1)
    assert row(db, "c1") == ("expired", None, None, T0)
