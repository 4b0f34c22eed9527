"""Alerts against a real PostgreSQL: heartbeat sweep, PC grouping, repeats, storms, metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from ingest.alerts.config import AlertConfig, parse_alert_config
from ingest.alerts.rules import BatchAlerts
from ingest.alerts.step import BatchAlertStep
from ingest.batch import Batch
from ingest.decode import decode
from ingest.sweep import SweepResult, sweep_once
from ingest.writer import BatchWriter

pytestmark = pytest.mark.integration

ROUTES = {"route": [{"name": "ops", "min_severity": "warning", "email": ["ops@example.com"]}]}


def config(**extra: Any) -> AlertConfig:
    from ingest.alerts.config import DEFAULT_RULES

    return parse_alert_config({**DEFAULT_RULES, **ROUTES, **extra}, {})


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


def sweep(database_url: str, cfg: AlertConfig) -> SweepResult:
    async def go() -> SweepResult:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            return await sweep_once(conn, cfg, datetime.now(UTC))

    return asyncio.run(go())


def alerts(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return db.execute("SELECT scope, kind, status, count FROM alert ORDER BY id").fetchall()


def test_missed_heartbeats_go_offline_with_a_reason_per_customer_policy(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    fresh = add(db, "TC-FRESH", seen_ago_s=60, changed_ago_s=5000)
    # default: 300 s x 3 missed = 900 s
    stale = add(db, "TC-STALE", seen_ago_s=1000, changed_ago_s=5000)
    strict = add(db, "TC-STRICT", seen_ago_s=130, changed_ago_s=5000, customer="Bolt")
    db.execute(
        "INSERT INTO heartbeat_policy (customer_id, interval_s, missed)"
        " SELECT id, 60, 2 FROM customer WHERE name = 'Bolt'"
    )
    result = sweep(database_url, config())
    assert result.heartbeats_missed == 2
    rows = dict(db.execute("SELECT id, status FROM terminal").fetchall())
    assert (rows[fresh], rows[stale], rows[strict]) == ("online", "offline", "offline")
    changes = db.execute(
        "SELECT terminal_id, old_status, new_status, reason FROM status_change ORDER BY terminal_id"
    ).fetchall()
    assert changes == [
        (stale, "online", "offline", "heartbeat missed"),
        (strict, "online", "offline", "heartbeat missed"),
    ]
    reason = db.execute("SELECT status_reason FROM terminal WHERE id = %s", (stale,)).fetchone()
    assert reason == ("heartbeat missed",)


def test_offline_alert_is_one_per_terminal_bumped_on_repeat_and_resolved_when_back(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    tid = add(db, "TC-1", status="offline", changed_ago_s=5)
    sweep(database_url, config())
    sweep(database_url, config())
    assert alerts(db) == [(f"terminal:{tid}", "offline", "open", 1)]
    # It comes back briefly and drops again: the same alert, counted twice.
    db.execute("UPDATE terminal SET status_changed_at = now() WHERE id = %s", (tid,))
    sweep(database_url, config())
    assert alerts(db) == [(f"terminal:{tid}", "offline", "open", 2)]
    db.execute(
        "UPDATE terminal SET status = 'online', status_changed_at = now() - interval"
        " '2 minutes' WHERE id = %s",
        (tid,),
    )
    sweep(database_url, config())
    assert alerts(db) == [(f"terminal:{tid}", "offline", "resolved", 2)]
    note = db.execute("SELECT resolution_note FROM alert").fetchone()
    assert note == ("resolved automatically",)


def test_store_pc_down_raises_one_alert(database_url: str, db: psycopg.Connection[Any]) -> None:
    for n in range(4):
        add(db, f"TC-PC-{n}", status="offline", host="till-pc-7", changed_ago_s=2)
    add(db, "TC-ELSEWHERE", status="online", host="till-pc-8")
    sweep(database_url, config())
    rows = db.execute("SELECT kind, terminal_id, host_name, message FROM alert").fetchall()
    assert len(rows) == 1
    kind, terminal_id, host, message = rows[0]
    assert (kind, terminal_id, host) == ("pc-offline", None, "till-pc-7")
    assert "4 terminals offline" in message


def test_a_storm_becomes_one_incident_notified_when_it_opens(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    for n in range(30):
        add(db, f"TC-S{n:02d}", status="offline", host=f"pc-{n}", changed_ago_s=1)
    cfg = config(storm={"max_alerts_per_minute": 20, "settle_s": 0})
    sweep(database_url, cfg)
    assert db.execute("SELECT count(*) FROM alert").fetchone() == (30,)
    incidents = db.execute("SELECT id, alert_count, status FROM incident").fetchall()
    assert [(count, status) for _, count, status in incidents] == [(30, "open")]
    # One notification instead of 30, queued by the same sweep (settle_s = 0).
    outbox = db.execute(
        "SELECT alert_id, incident_id, status, payload->>'event', (payload->>'alert_count')::int"
        " FROM notification_outbox"
    ).fetchall()
    assert outbox == [(None, incidents[0][0], "pending", "opened", 30)]
    # A later alert joins it; it is counted in the next summary (summary_interval_s on).
    add(db, "TC-LATE", status="offline", host="pc-late", changed_ago_s=1)
    sweep(database_url, cfg)
    assert db.execute("SELECT alert_count FROM incident").fetchone() == (31,)
    assert db.execute("SELECT count(*) FROM notification_outbox").fetchone() == (1,)


def test_few_alerts_are_notified_each_to_their_routes(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    add(db, "TC-A", status="offline", changed_ago_s=1)
    add(db, "TC-B", status="error", changed_ago_s=1)
    sweep(database_url, config())
    rows = db.execute(
        "SELECT route, channel, target, payload FROM notification_outbox ORDER BY id"
    ).fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [("ops", "email", "ops@example.com")] * 2
    assert {r[3]["kind"] for r in rows} == {"offline", "error"}
    assert {r[3]["serial"] for r in rows} == {"TC-A", "TC-B"}


def _write(
    store: BatchWriter, step: BatchAlertStep | None, *messages: tuple[str, dict[str, Any]]
) -> None:
    batch: Batch[int] = Batch()
    for index, (topic, body) in enumerate(messages):
        batch.add(decode(topic, json.dumps(body).encode(), datetime.now(UTC)), index)

    async def go() -> None:
        await store.open()
        try:
            await store.write(batch, step)
        finally:
            await store.close()

    asyncio.run(go())


def test_metric_and_event_rules_open_bump_and_resolve(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    add(db, "TC-M")
    alerts_engine = BatchAlerts(config())
    t0 = datetime.now(UTC) - timedelta(minutes=3)

    def hb(n: int, disk: float) -> tuple[str, dict[str, Any]]:
        ts = (t0 + timedelta(seconds=n)).isoformat()
        return (
            "tms/v1/TC-M/telemetry",
            {"v": 1, "id": f"m{n}", "ts": ts, "status": "ok", "terminal": {"disk": disk}},
        )

    step = BatchAlertStep(alerts_engine)

    def store() -> BatchWriter:
        return BatchWriter.create(database_url)

    _write(store(), step, hb(1, 95), hb(2, 96))
    assert [(k, s, c) for _, k, s, c in alerts(db)] == [("high-disk", "open", 2)]
    _write(store(), step, hb(3, 50))
    assert [(k, s, c) for _, k, s, c in alerts(db)] == [("high-disk", "resolved", 2)]
    failed = {"v": 1, "kind": "update", "severity": "error", "message": "image did not boot"}
    _write(store(), step, ("tms/v1/TC-M/event", failed))
    row = db.execute(
        "SELECT kind, status, message FROM alert WHERE kind = 'update-failed'"
    ).fetchone()
    assert row is not None and row[1] == "open" and "image did not boot" in row[2]
    ok = {"v": 1, "kind": "update", "severity": "info", "message": "updated to 3.2"}
    _write(store(), step, ("tms/v1/TC-M/event", ok))
    row = db.execute("SELECT status FROM alert WHERE kind = 'update-failed'").fetchone()
    assert row == ("resolved",)
