"""The daemon's sweep against a real PostgreSQL: after its first pass it looks only at
terminals that are due (migration 0015), with the results of a whole-fleet sweep."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from ingest.alerts.config import AlertConfig, load_alert_config
from ingest.batch import Batch
from ingest.decode import decode
from ingest.sweep import FleetSweep, SweepResult
from ingest.writer import BatchWriter

pytestmark = pytest.mark.integration

CONFIG = load_alert_config(None, env={})


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO customer (name) VALUES ('Acme'), ('Bolt')")
        yield conn


def add(
    db: psycopg.Connection[Any],
    serial: str,
    *,
    status: str = "online",
    host: str | None = None,
    seen_ago_s: float = 0,
    changed_ago_s: float = 0,
    customer: str = "Acme",
) -> int:
    now = datetime.now(UTC)
    row = db.execute(
        "INSERT INTO terminal (serial, customer_id, model, status, host_name, last_seen_at,"
        " status_changed_at) VALUES (%s, (SELECT id FROM customer WHERE name = %s), 'TC-200',"
        " %s, %s, %s, %s) RETURNING id",
        (
            serial,
            customer,
            status,
            host,
            now - timedelta(seconds=seen_ago_s),
            now - timedelta(seconds=changed_ago_s),
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


class Daemon:
    """One FleetSweep kept across sweeps, as ``ingest.background.sweep_loop`` keeps it."""

    def __init__(self, database_url: str, config: AlertConfig = CONFIG) -> None:
        self.url = database_url
        self.sweep = FleetSweep(config)

    def once(self, later_s: float = 0.0) -> SweepResult:
        """One sweep, ``later_s`` seconds from now as the alert rules see the time."""

        async def go() -> SweepResult:
            async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                now = datetime.now(UTC) + timedelta(seconds=later_s)
                return await self.sweep.once(conn, now)

        return asyncio.run(go())


def alerts(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return db.execute("SELECT scope, kind, status, count FROM alert ORDER BY id").fetchall()


def test_an_idle_fleet_is_looked_at_once_then_not_at_all(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    for n in range(6):
        add(db, f"TC-ON{n}", seen_ago_s=30, changed_ago_s=5000, host=f"pc-{n % 3}")
    down = add(db, "TC-DOWN", status="offline", changed_ago_s=600, host="pc-9")
    add(db, "TC-SIB", status="online", changed_ago_s=600, host="pc-9")
    daemon = Daemon(database_url)
    first = daemon.once()
    assert first.alerts is not None and first.alerts.opened == 1
    assert first.terminals_checked > 0
    assert alerts(db) == [(f"terminal:{down}", "offline", "open", 1)]
    # Due again only at their deadline (last message + 300 s x 3), and no rule is waiting.
    dues = db.execute(
        "SELECT offline_due_at - last_seen_at, alert_check_at FROM terminal WHERE status = 'online'"
    ).fetchall()
    assert {due for due, _ in dues} == {timedelta(seconds=900)}
    assert {check for _, check in dues} == {None}
    for _ in range(3):
        idle = daemon.once()
        assert (idle.heartbeats_missed, idle.terminals_checked) == (0, 0)
        assert idle.alerts is not None and idle.alerts.opened == idle.alerts.resolved == 0
    assert alerts(db) == [(f"terminal:{down}", "offline", "open", 1)]


def test_a_change_of_status_is_checked_by_the_next_sweep_and_resolves_after_clear_for_s(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    tid = add(db, "TC-1", seen_ago_s=10, changed_ago_s=5000)
    daemon = Daemon(database_url)
    daemon.once()
    # What the batch writer does when the agent's last will arrives.
    db.execute(
        "UPDATE terminal SET status = 'offline', status_changed_at = now() WHERE id = %s", (tid,)
    )
    result = daemon.once()
    assert result.terminals_checked == 1
    assert alerts(db) == [(f"terminal:{tid}", "offline", "open", 1)]
    db.execute(
        "UPDATE terminal SET status = 'online', status_changed_at = now() WHERE id = %s", (tid,)
    )
    daemon.once(later_s=30)  # back for 30 s: the alert waits out clear_for_s (60 s)
    assert alerts(db) == [(f"terminal:{tid}", "offline", "open", 1)]
    assert daemon.once(later_s=61).terminals_checked == 1  # due at the change + 60 s
    assert alerts(db) == [(f"terminal:{tid}", "offline", "resolved", 1)]
    assert daemon.once(later_s=120).terminals_checked == 0  # nothing ahead for it


def test_a_terminal_on_a_shared_pc_alerts_alone_after_group_wait_s(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    add(db, "TC-A", host="pc-1", seen_ago_s=10, changed_ago_s=5000)
    lone = add(db, "TC-B", host="pc-1", seen_ago_s=10, changed_ago_s=5000)
    daemon = Daemon(database_url)
    daemon.once()
    db.execute(
        "UPDATE terminal SET status = 'offline', status_changed_at = now() WHERE id = %s", (lone,)
    )
    daemon.once(later_s=2)  # its sibling may still follow (group_wait_s = 5)
    assert alerts(db) == []
    daemon.once(later_s=6)
    assert alerts(db) == [(f"terminal:{lone}", "offline", "open", 1)]


def test_a_store_pc_down_is_one_alert_when_its_last_terminal_drops(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    ids = [add(db, f"TC-P{n}", host="till-7", seen_ago_s=10, changed_ago_s=5000) for n in range(3)]
    daemon = Daemon(database_url)
    daemon.once()
    for tid in ids:
        db.execute(
            "UPDATE terminal SET status = 'offline', status_changed_at = now() WHERE id = %s",
            (tid,),
        )
    daemon.once(later_s=1)
    rows = db.execute("SELECT kind, host_name, status FROM alert").fetchall()
    assert rows == [("pc-offline", "till-7", "open")]


def test_missed_heartbeats_are_found_by_their_due_time_and_a_shorter_policy_counts(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    stale = add(db, "TC-STALE", seen_ago_s=1000, changed_ago_s=5000)
    fresh = add(db, "TC-FRESH", seen_ago_s=100, changed_ago_s=5000, customer="Bolt")
    daemon = Daemon(database_url)
    first = daemon.once()
    assert first.heartbeats_missed == 1
    status = dict(db.execute("SELECT id, status FROM terminal").fetchall())
    assert (status[stale], status[fresh]) == ("offline", "online")
    assert daemon.once().heartbeats_missed == 0
    # Bolt's terminals now owe a heartbeat every 30 s, two missed at most: 60 s.
    db.execute(
        "INSERT INTO heartbeat_policy (customer_id, interval_s, missed)"
        " SELECT id, 30, 2 FROM customer WHERE name = 'Bolt'"
    )
    assert daemon.once().heartbeats_missed == 1
    changes = db.execute(
        "SELECT terminal_id, old_status, new_status, reason FROM status_change ORDER BY id"
    ).fetchall()
    assert changes == [
        (stale, "online", "offline", "heartbeat missed"),
        (fresh, "online", "offline", "heartbeat missed"),
    ]
    # Its alert follows in the next sweep (the change is stamped after the sweep's
    # ``now``), as it did when every sweep read the whole fleet.
    daemon.once()
    assert [(scope, kind) for scope, kind, _, _ in alerts(db)] == [
        (f"terminal:{stale}", "offline"),
        (f"terminal:{fresh}", "offline"),
    ]


def test_an_alert_resolved_by_a_person_while_the_terminal_is_down_is_raised_again(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    tid = add(db, "TC-1", status="offline", changed_ago_s=600)
    daemon = Daemon(database_url)
    daemon.once()
    db.execute(
        "UPDATE alert SET status = 'resolved', resolved_at = now(), resolution_note = 'by hand'"
    )
    daemon.once()
    assert alerts(db) == [
        (f"terminal:{tid}", "offline", "resolved", 1),
        (f"terminal:{tid}", "offline", "open", 1),
    ]


def _write(database_url: str, *messages: tuple[str, dict[str, Any]]) -> None:
    batch: Batch[int] = Batch()
    for index, (topic, body) in enumerate(messages):
        batch.add(decode(topic, json.dumps(body).encode(), datetime.now(UTC)), index)

    async def go() -> None:
        writer = BatchWriter.create(database_url)
        await writer.open()
        try:
            await writer.write(batch)
        finally:
            await writer.close()  # its backend exits: its statistics are flushed

    asyncio.run(go())


def _row_version(db: psycopg.Connection[Any], terminal_id: int) -> tuple[str, bool]:
    """(xmin, heap-only) of the terminal's current row version, read off its heap page.

    A heap-only tuple is what a HOT update makes: no index entry was written for it.
    Read from the page itself (pageinspect), not from pg_stat counters, which a backend
    that has already left pg_stat_activity may still be about to flush.
    """
    db.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
    row = db.execute(
        "SELECT t.xmin::text, (p.t_infomask2 & 32768) <> 0"  # HEAP_ONLY_TUPLE
        " FROM terminal t CROSS JOIN LATERAL heap_page_items(get_raw_page("
        "  'terminal', CAST((CAST(CAST(t.ctid AS text) AS point))[0] AS integer))) p"
        " WHERE t.id = %s AND p.lp = CAST((CAST(CAST(t.ctid AS text) AS point))[1] AS integer)",
        (terminal_id,),
    ).fetchone()
    assert row is not None
    return str(row[0]), bool(row[1])


def test_a_heartbeat_update_stays_hot_and_leaves_the_due_times_alone(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    tid = add(db, "TC-HB", seen_ago_s=10, changed_ago_s=5000)
    Daemon(database_url).once()
    before = db.execute(
        "SELECT offline_due_at, alert_check_at FROM terminal WHERE id = %s", (tid,)
    ).fetchone()

    def heartbeat(n: int) -> tuple[str, dict[str, Any]]:
        ts = (datetime.now(UTC) - timedelta(seconds=10 - n)).isoformat()
        return ("tms/v1/TC-HB/telemetry", {"v": 1, "id": f"hb{n}", "ts": ts, "status": "ok"})

    _write(database_url, heartbeat(1))  # the first may also set what was unknown
    _write(database_url, heartbeat(2))
    for n in (3, 4):
        before_xmin, _ = _row_version(db, tid)
        _write(database_url, heartbeat(n))
        xmin, heap_only = _row_version(db, tid)
        assert xmin != before_xmin, f"heartbeat {n} did not update the terminal"
        assert heap_only, f"heartbeat {n}'s update was not HOT: it wrote index entries"
    after = db.execute(
        "SELECT offline_due_at, alert_check_at FROM terminal WHERE id = %s", (tid,)
    ).fetchone()
    assert after == before
