"""Bounded history against a real PostgreSQL: the partitioning migration, rollups, retention."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

import tms.cli  # noqa: F401  (imports every component's cli, ingest.cli among them)
from ingest.cli import retention
from ingest.retention import (
    TERMINAL_LOG,
    add_months,
    create_partition,
    month_start,
    partition_name,
    run_retention,
)
from shared import schema
from shared.cli_support import CliRoot
from shared.settings import load_settings

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=500)  # beyond the default year


def partitions(conn: psycopg.Connection[Any], parent: str = "telemetry") -> set[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::text::regclass",
        (parent,),
    )
    return {row[0] for row in rows}


def insert(conn: psycopg.Connection[Any], message_id: str, ts: datetime, cpu: float) -> None:
    conn.execute(
        "INSERT INTO telemetry (terminal_id, message_id, ts, received_at, device_status, cpu_pct)"
        " VALUES ((SELECT id FROM terminal LIMIT 1), %s, %s, %s, 'ok', %s)",
        (message_id, ts, ts, cpu),
    )


@pytest.fixture
def unmigrated(postgres_server: Any) -> Any:
    """A database at revision 0001 with telemetry in it, as before this change."""
    admin = postgres_server.url.rsplit("/", 1)[0] + "/postgres"
    name = f"retention_{os.getpid()}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = postgres_server.url.rsplit("/", 1)[0] + "/" + name
    schema.upgrade(url, "0001")
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_migration_partitions_telemetry_and_keeps_every_row(unmigrated: str) -> None:
    with psycopg.connect(unmigrated, autocommit=True) as conn:
        conn.execute("INSERT INTO customer (name) VALUES ('C')")
        conn.execute(
            "INSERT INTO terminal (serial, customer_id, model, status)"
            " SELECT 'TC-1', id, 'TC-200', 'online' FROM customer"
        )
        insert(conn, "old-1", OLD, 10)
        insert(conn, "new-1", NOW - timedelta(hours=2), 20)
    schema.upgrade(unmigrated)
    with psycopg.connect(unmigrated, autocommit=True) as conn:
        assert {r[0] for r in conn.execute("SELECT message_id FROM telemetry")} == {
            "old-1",
            "new-1",
        }
        names = partitions(conn)
        assert f"telemetry_y{OLD.year:04d}m{OLD.month:02d}" in names
        assert "telemetry_default" in names
        ahead = NOW + timedelta(days=62)
        assert f"telemetry_y{ahead.year:04d}m{ahead.month:02d}" in names
        # A redelivery (same id, same ts) is still refused; ids keep counting.
        with pytest.raises(psycopg.errors.UniqueViolation):
            insert(conn, "new-1", NOW - timedelta(hours=2), 20)


def test_retention_rolls_up_then_drops_old_months_and_keeps_status_history(
    database_url: str,
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO customer (name) VALUES ('C')")
        conn.execute(
            "INSERT INTO terminal (serial, customer_id, model, status)"
            " SELECT 'TC-1', id, 'TC-200', 'online' FROM customer"
        )
        conn.execute(
            "INSERT INTO status_change (terminal_id, new_status, reason, at)"
            " SELECT id, 'online', 'agent connected', %s FROM terminal",
            (OLD,),
        )
        hour = OLD.replace(minute=0, second=0, microsecond=0)
        insert(conn, "old-a", hour + timedelta(minutes=5), 10)
        insert(conn, "old-b", hour + timedelta(minutes=35), 30)
        insert(conn, "recent", NOW - timedelta(hours=3), 50)
        # Old rows sit in the default partition until their month gets one of its own.
        assert conn.execute("SELECT count(*) FROM telemetry_default").fetchone() == (2,)
        with conn.transaction():
            create_partition(conn, month_start(OLD))
        assert conn.execute("SELECT count(*) FROM telemetry_default").fetchone() == (0,)
        insert(conn, "stray-old", OLD - timedelta(days=40), 1)  # lands in the default
        report = run_retention(
            conn, NOW, retention_days=365, rollup_retention_days=1825, months_ahead=2
        )
        assert report.dropped == [partition_name(month_start(OLD))]
        assert report.default_rows_deleted == 1
        assert conn.execute("SELECT message_id FROM telemetry").fetchall() == [("recent",)]
        rollup = conn.execute(
            "SELECT samples, cpu_avg, cpu_max FROM telemetry_hourly WHERE hour = %s", (hour,)
        ).fetchone()
        assert rollup == (2, 20.0, 30.0)  # the hours of a dropped month are kept
        assert conn.execute("SELECT count(*) FROM status_change").fetchone() == (1,)
        again = run_retention(
            conn, NOW, retention_days=365, rollup_retention_days=1825, months_ahead=2
        )
        assert again.created == [] and again.dropped == []


def log_event(conn: psycopg.Connection[Any], event_id: str, at: datetime) -> None:
    conn.execute(
        "INSERT INTO terminal_log (terminal_id, at, kind, source_id)"
        " VALUES ((SELECT id FROM terminal LIMIT 1), %s, 'event', %s)",
        (at, event_id),
    )


def test_retention_keeps_the_terminal_log_as_long_as_raw_telemetry(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO customer (name) VALUES ('C')")
        conn.execute(
            "INSERT INTO terminal (serial, customer_id, model, status)"
            " SELECT 'TC-1', id, 'TC-200', 'online' FROM customer"
        )
        log_event(conn, "old", OLD)
        log_event(conn, "recent", NOW - timedelta(hours=3))
        # An old row waits in the default partition until its month gets one.
        assert conn.execute("SELECT count(*) FROM terminal_log_default").fetchone() == (1,)
        with conn.transaction():
            create_partition(conn, month_start(OLD), TERMINAL_LOG)
        assert conn.execute("SELECT count(*) FROM terminal_log_default").fetchone() == (0,)
        log_event(conn, "stray-old", OLD - timedelta(days=40))
        # A month ahead that is missing (say, the migration ran long ago) is made again.
        ahead = TERMINAL_LOG.partition_name(add_months(month_start(NOW), 1))
        conn.execute(f"DROP TABLE {ahead}")
        report = run_retention(
            conn, NOW, retention_days=365, rollup_retention_days=1825, months_ahead=2
        )
        assert ahead in report.created
        assert TERMINAL_LOG.partition_name(month_start(OLD)) in report.dropped
        assert report.default_rows_deleted == 1
        assert conn.execute("SELECT source_id FROM terminal_log").fetchall() == [("recent",)]
        assert ahead in partitions(conn, "terminal_log")
        assert "terminal_log_default" in partitions(conn, "terminal_log")
        again = run_retention(
            conn, NOW, retention_days=365, rollup_retention_days=1825, months_ahead=2
        )
        assert again.created == [] and again.dropped == []


def test_retention_deletes_finished_commands_of_its_age_and_keeps_live_ones(
    database_url: str,
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO customer (name) VALUES ('C')")
        conn.execute(
            "INSERT INTO terminal (serial, customer_id, model, status)"
            " SELECT 'TC-1', id, 'TC-200', 'online' FROM customer"
        )
        conn.execute(
            "INSERT INTO command_bulk (name, rate_per_s, total, requested_by, created_at)"
            " VALUES ('ping', 1, 1, 'ann', %s), ('ping', 1, 1, 'ann', %s)",
            (OLD, OLD),
        )
        rows = [
            ("old-done", "succeeded", OLD, 1),
            ("old-queued", "queued", None, None),  # still waiting: kept, whatever its age
            ("new-done", "failed", NOW - timedelta(days=1), 2),
        ]
        for command_id, status, finished, bulk in rows:
            conn.execute(
                "INSERT INTO command (id, terminal_id, name, status, created_at, finished_at,"
                " bulk_id) SELECT %s, id, 'ping', %s, %s, %s, %s FROM terminal",
                (command_id, status, OLD, finished, bulk),
            )
        report = run_retention(
            conn, NOW, retention_days=365, rollup_retention_days=1825, months_ahead=2
        )
        assert report.commands_deleted == 1
        kept = {row[0] for row in conn.execute("SELECT id FROM command")}
        assert kept == {"old-queued", "new-done"}
        # The first bulk lost its one command and goes; the second still has one.
        assert conn.execute("SELECT id FROM command_bulk").fetchall() == [(2,)]


def test_tms_db_retention_command(database_url: str) -> None:
    settings = load_settings(env={"TMS_DATABASE_URL": database_url})
    root = CliRoot(settings, find_database=lambda _ctx, _open: pytest.fail("URL is set"))
    result = CliRunner().invoke(retention, obj=root)
    assert result.exit_code == 0, result.output
    assert "partitions created=" in result.output
