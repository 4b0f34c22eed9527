"""`tms db upgrade`: a database made by the first migration, with data in every table of
that schema, reaches the newest revision with nothing lost; and on a live database an
upgrade waits only so long for a lock, while writers carry on."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from shared import schema
from tests.integration.platform import clean_env, tms
from tms.postgres import EmbeddedPostgres
from tms.restore import known_revisions

pytestmark = pytest.mark.integration

T0 = datetime(2026, 9, 14, 8, 30, tzinfo=UTC)

# Rows as the schema of revision 0001 had them (its columns only). Not update_task: 0014
# deletes its rows on purpose (nothing wrote that table before rollouts).
ROWS_0001: dict[str, list[dict[str, Any]]] = {
    "customer": [
        {"id": 1, "name": "Acme Stores", "created_at": T0},
        {"id": 2, "name": "Café Ünïcode", "created_at": T0},
    ],
    "store": [
        {
            "id": 1,
            "customer_id": 1,
            "code": "LON-1",
            "name": "London",
            "timezone": "Europe/London",
            "created_at": T0,
        },
        {
            "id": 2,
            "customer_id": 2,
            "code": "PAR-1",
            "name": "Paris",
            "timezone": "Europe/Paris",
            "created_at": T0,
        },
    ],  # fmt: skip
    "terminal": [
        {
            "id": n,
            "serial": f"UP-{n:04d}",
            "customer_id": 1 + n % 2,
            "store_id": 1 + n % 2,
            "model": "TC-200",
            "status": ("online", "offline", "error")[n % 3],
            "status_reason": "missed heartbeats" if n % 3 == 1 else None,
            "status_changed_at": T0 + timedelta(minutes=n),
            "device_status": "ok",
            "firmware_version": "2.4.1",
            "last_heartbeat_at": T0 + timedelta(minutes=n),
            "last_seen_at": T0 + timedelta(minutes=n),
            "cpu_pct": 10.5 + n,
            "memory_pct": 40.25,
            "disk_pct": 55.0,
            "host_name": f"pc-{n}",
            "host_cpu_pct": 3.5,
            "host_memory_pct": 61.0,
            "host_disk_pct": 70.0,
            "created_at": T0,
            "decommissioned_at": None,
        }
        for n in range(1, 7)
    ],  # fmt: skip
    "user_account": [
        {
            "id": 1,
            "username": "admin",
            "password_hash": "scrypt:32768:8:1$salt$hash",
            "role": "admin",
            "active": True,
            "created_at": T0,
            "last_login_at": T0,
        },
        {
            "id": 2,
            "username": "viewer",
            "password_hash": "scrypt:32768:8:1$salt$hash2",
            "role": "viewer",
            "active": False,
            "created_at": T0,
            "last_login_at": None,
        },
    ],  # fmt: skip
    "api_token": [
        {
            "id": 1,
            "user_id": 1,
            "name": "nightly",
            "token_hash": "a" * 64,
            "created_at": T0,
            "last_used_at": T0,
            "revoked_at": None,
        },
    ],  # fmt: skip
    "credential": [
        {
            "id": n,
            "username": f"UP-{n:04d}",
            "kind": "terminal",
            "terminal_id": n,
            "salt": f"salt{n}",
            "secret_hash": f"{n:0128d}",
            "created_at": T0,
            "revoked_at": T0 if n == 6 else None,
        }
        for n in range(1, 7)
    ],  # fmt: skip
    "alert": [
        {
            "id": 1,
            "terminal_id": 2,
            "customer_id": 1,
            "kind": "offline",
            "severity": "critical",
            "status": "open",
            "message": "UP-0002 is offline",
            "count": 3,
            "first_seen_at": T0,
            "last_seen_at": T0 + timedelta(minutes=9),
            "acknowledged_by": None,
            "assignee_id": 1,
            "resolved_at": None,
            "resolution_note": None,
        },
        {
            "id": 2,
            "terminal_id": 3,
            "customer_id": 2,
            "kind": "device_error",
            "severity": "warning",
            "status": "resolved",
            "message": "UP-0003: E42",
            "count": 1,
            "first_seen_at": T0,
            "last_seen_at": T0,
            "acknowledged_by": 1,
            "assignee_id": None,
            "resolved_at": T0 + timedelta(hours=1),
            "resolution_note": "paper replaced",
        },
    ],  # fmt: skip
    "command": [
        {
            "id": "cmd-1",
            "terminal_id": 1,
            "name": "reboot",
            "args": None,
            "status": "pending",
            "created_by": 1,
            "created_at": T0,
            "sent_at": None,
            "expires_at": T0 + timedelta(days=1),
            "finished_at": None,
            "result": None,
            "error": None,
        },
        {
            "id": "cmd-2",
            "terminal_id": 4,
            "name": "diagnostics",
            "args": {"depth": "full"},
            "status": "succeeded",
            "created_by": 1,
            "created_at": T0,
            "sent_at": T0,
            "expires_at": None,
            "finished_at": T0 + timedelta(seconds=3),
            "result": {"checks": [{"id": "usb_link", "outcome": "passed"}]},
            "error": None,
        },
    ],  # fmt: skip
    "status_change": [
        {
            "id": n,
            "terminal_id": n,
            "at": T0 + timedelta(minutes=n),
            "old_status": "provisioned",
            "new_status": "online",
            "reason": "first heartbeat",
        }
        for n in range(1, 7)
    ],  # fmt: skip
    "audit_event": [
        {
            "id": 1,
            "at": T0,
            "actor": "cli:root",
            "action": "terminal.add",
            "target": "UP-0001",
            "detail": {"customer": "Acme Stores"},
            "remote_addr": None,
        },
    ],  # fmt: skip
    "dead_letter": [
        {
            "id": 1,
            "received_at": T0,
            "topic": "tms/v1/UP-0001/telemetry",
            "payload": bytes(range(256)),
            "reason": "bad_json",
            "detail": "not JSON",
        },
    ],  # fmt: skip
    "firmware": [
        {
            "id": 1,
            "version": "2.4.1",
            "filename": "tc200-2.4.1.img",
            "size": 4096,
            "sha256": "b" * 64,
            "notes": "first",
            "created_at": T0,
        },
    ],  # fmt: skip
    "telemetry": [
        {
            "id": n,
            "terminal_id": 1 + n % 6,
            "message_id": f"msg-{n}",
            # Three months, one of them years back: 0002 partitions them by month.
            "ts": (T0, T0 - timedelta(days=40), T0 - timedelta(days=1000))[n % 3]
            + timedelta(seconds=n),
            "received_at": T0,
            "device_status": "ok",
            "firmware_version": "2.4.1",
            "cpu_pct": n / 7,
            "memory_pct": 40.0,
            "disk_pct": None,
            "host_cpu_pct": 1.5,
            "host_memory_pct": 2.5,
            "host_disk_pct": 3.5,
            "errors": [{"code": "E42", "n": n}] if n % 5 == 0 else None,
        }
        for n in range(1, 61)
    ],  # fmt: skip
}

# What later migrations change on purpose, and nothing else: (table, column) -> {old: new}.
CONVERTED = {("command", "status"): {"pending": "queued"}}
# Columns of 0001 that later revisions dropped, for what they held went elsewhere.
DROPPED: dict[str, set[str]] = {}


def _admin_url(server: EmbeddedPostgres, database: str = "postgres") -> str:
    return server.url.rsplit("/", 1)[0] + "/" + database


@pytest.fixture
def scratch_url(postgres_server: EmbeddedPostgres) -> Iterator[str]:
    """A database of its own with no schema at all."""
    name = f"upgrade_{secrets.token_hex(4)}"
    with psycopg.connect(_admin_url(postgres_server), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield _admin_url(postgres_server, name)
    with psycopg.connect(_admin_url(postgres_server), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _value(value: Any) -> Any:
    return Jsonb(value) if isinstance(value, dict | list) else value


def _insert(conn: psycopg.Connection[Any], table: str, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        query = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, row)),
            sql.SQL(", ").join(sql.Placeholder() * len(row)),
        )
        conn.execute(query, [_value(value) for value in row.values()])


def _read(conn: psycopg.Connection[Any], table: str, columns: list[str]) -> list[dict[str, Any]]:
    query = sql.SQL("SELECT {} FROM {} ORDER BY id").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(table)
    )
    cursor = conn.execute(query)
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def _columns(conn: psycopg.Connection[Any], table: str) -> set[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,)
    ).fetchall()
    return {row[0] for row in rows}


def _expected(table: str, row: dict[str, Any], kept: list[str]) -> dict[str, Any]:
    expected = {column: row[column] for column in kept}
    for (where, column), mapping in CONVERTED.items():
        if where == table and column in expected:
            expected[column] = mapping.get(expected[column], expected[column])
    return expected


def test_a_database_of_the_first_migration_upgrades_with_nothing_lost(scratch_url: str) -> None:
    schema.upgrade(scratch_url, "0001")
    with psycopg.connect(scratch_url, autocommit=True) as conn:
        for table, rows in ROWS_0001.items():
            _insert(conn, table, rows)
        sequences = {
            table: conn.execute(
                sql.SQL("SELECT setval(pg_get_serial_sequence({}, 'id'), 1000)").format(
                    sql.Literal(table)
                )
            ).fetchone()
            for table, rows in ROWS_0001.items()
            if isinstance(rows[0]["id"], int)
        }
    assert sequences

    result = tms("db", "upgrade", env=clean_env(TMS_DATABASE_URL=scratch_url), timeout=300)
    assert result.returncode == 0, result.stderr
    head = known_revisions()[-1]
    assert result.stdout.strip() == f"database at revision {head} (was 0001)"

    with psycopg.connect(scratch_url) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        for table, rows in ROWS_0001.items():
            now_columns = _columns(conn, table)
            gone = set(rows[0]) - now_columns
            assert gone == DROPPED.get(table, set()), (table, gone)
            kept = [column for column in rows[0] if column in now_columns]
            after = _read(conn, table, kept)
            assert after == [_expected(table, row, kept) for row in rows], table
        # History is now partitioned by month, the rows spread over the partitions.
        partitions = conn.execute("SELECT count(DISTINCT tableoid) FROM telemetry").fetchone()
        assert partitions is not None and partitions[0] == 3
        # New rows do not collide with the old ones' ids.
        conn.execute("INSERT INTO customer (name) VALUES ('After the upgrade')")
        made = conn.execute("SELECT max(id) FROM customer").fetchone()
        assert made is not None and made[0] > 1000
        # The broker's trigger survived: a credential change still wakes it.
        triggers = conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'credential'::regclass"
            " AND NOT tgisinternal"
        ).fetchall()
        assert ("credential_changed",) in triggers

    again = tms("db", "upgrade", env=clean_env(TMS_DATABASE_URL=scratch_url))
    assert again.stdout.strip() == f"database at revision {head} (already the newest)"


# -- a live database ------------------------------------------------------------------------


# From here on, the migrations alter tables in use (0014 adds terminal.tags).
LIVE_FROM = "0013"


def _at_previous_revision_with_a_terminal(url: str) -> str:
    previous = LIVE_FROM
    schema.upgrade(url, previous)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO customer (name) VALUES ('Live Ltd')")
        conn.execute(
            "INSERT INTO terminal (serial, customer_id, model, status)"
            " SELECT 'LIVE-1', id, 'TC-200', 'online' FROM customer"
        )
    return previous


def test_an_upgrade_behind_a_long_transaction_gives_up_without_a_change(scratch_url: str) -> None:
    previous = _at_previous_revision_with_a_terminal(scratch_url)
    env = clean_env(TMS_DATABASE_URL=scratch_url)
    with psycopg.connect(scratch_url) as blocker:
        # A long read of every table (as pg_dump takes): the migration must not queue
        # every writer behind its own wait.
        blocker.execute("LOCK TABLE terminal, store, update_task IN ACCESS SHARE MODE")
        result = tms("db", "upgrade", "--lock-timeout", "1", env=env)
        assert result.returncode == 1
        assert result.stderr.startswith("Error: the upgrade waited more than 1 s for a table")
        assert "nothing was changed" in result.stderr and result.stderr.count("\n") == 1
        assert schema.current_revision(scratch_url) == previous
        blocker.rollback()
    result = tms("db", "upgrade", env=env)
    assert result.returncode == 0, result.stderr
    assert schema.current_revision(scratch_url) == known_revisions()[-1]


def test_an_upgrade_while_writers_run_loses_none_of_their_writes(scratch_url: str) -> None:
    _at_previous_revision_with_a_terminal(scratch_url)
    stop = threading.Event()
    errors: list[BaseException] = []
    written = [0]

    def write() -> None:
        # What ingest does, over and over: a heartbeat's row in the history and the
        # terminal's newest values, in one transaction.
        try:
            with psycopg.connect(scratch_url) as conn:
                while not stop.is_set():
                    with conn.transaction():
                        conn.execute(
                            "INSERT INTO telemetry (terminal_id, message_id, ts, device_status)"
                            " SELECT id, %s, now(), 'ok' FROM terminal WHERE serial = 'LIVE-1'",
                            (f"live-{written[0]}",),
                        )
                        conn.execute(
                            "UPDATE terminal SET last_seen_at = now() WHERE serial = 'LIVE-1'"
                        )
                    written[0] += 1
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        result = tms("db", "upgrade", env=clean_env(TMS_DATABASE_URL=scratch_url), timeout=300)
    finally:
        stop.set()
        writer.join(60)
    assert result.returncode == 0, result.stderr
    assert errors == []
    with psycopg.connect(scratch_url) as conn:
        row = conn.execute("SELECT count(*) FROM telemetry").fetchone()
    assert row is not None and row[0] == written[0] > 0
