"""Console benchmark: server time of every console view at 100,000 terminals (issue 15).

Seeds a private PostgreSQL (or an empty one given with --database-url) with a fleet the
size of issue 15's target, in SQL (``INSERT ... SELECT ... FROM generate_series``):
500 customers, 10,000 stores, 100,000 terminals (~92% online, 5% offline, 2% error,
1% unknown, some decommissioned, some under maintenance), a month of status changes,
hourly rollups and a day of raw heartbeats for 1,000 of them, 2,000 open and 20,000
resolved alerts, a month of 5-minute fleet samples for every customer (4.3M rows) and
200,000 audit events; then VACUUM ANALYZE, as autovacuum would have left a live
database.

Then it signs in as a viewer and times each view through the real app
(``console.app.create_app``) and Flask's test client: the time around ``client.get``
is the SERVER time (routing, sessions, queries, templates: the whole WSGI stack,
in-process), without the network or the browser. Each view gets two warm-up requests,
then --requests timed ones. Prints p50/p95/max per view, marks those over the target
(p95 under 150 ms), and for each of those EXPLAIN ANALYZE of the slowest SQL statement
of its slowest request.

    nice -n 10 .venv/bin/python bench/console.py --terminals 100000
"""

from __future__ import annotations

# ruff: noqa: E402  (imports follow the sys.path fix below, on purpose)
import sys
from pathlib import Path

# This file is named like the package it measures: keep bench/ off the import path so
# that ``import console`` finds the package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import psycopg
from flask import Flask
from flask.testing import FlaskClient
from pydantic import SecretStr
from sqlalchemy import Engine, event
from sqlmodel import Session, select
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.security import generate_password_hash

from console import dashboard_repository, users
from console.app import create_app
from console.db import engine_of
from ingest import retention
from shared import schema
from shared.db import make_engine
from shared.models import UserAccount
from shared.ports import free_port
from shared.settings import ConsoleSettings
from tms.postgres import EmbeddedPostgres

TARGET_MS = 150.0
VIEWER = "bench-viewer"
ADMIN = "bench-admin"
PASSWORD = secrets.token_urlsafe(18)
FIRMWARE = ("3.2.0", "3.1.4", "3.1.2", "3.0.9", "2.9.7")
ACTORS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy")

# --- seeding: plain SQL, each step timed -----------------------------------------------
# Ids are explicit (base + n) so that stores, terminals and alerts can name their
# parents arithmetically; the sequences are moved past them afterwards. %(x)s are the
# sizes and bases; everything random comes from setseed() so that runs compare.

SEED_STEPS: list[tuple[str, str]] = [
    (
        "customers",
        """
        INSERT INTO customer (id, name, contact_person, email, phone, contract_type, timezone,
                              created_at)
        SELECT %(c0)s + n, format('Customer %%s', lpad(n::text, 3, '0')),
               format('Contact %%s', n), format('ops%%s@customer%%s.example', n, n),
               format('+49 30 %%s', 1000000 + n),
               (ARRAY['basic', 'standard', 'standard', 'premium'])[1 + n %% 4],
               (ARRAY['UTC', 'Europe/Berlin', 'Europe/London', 'America/New_York',
                      'Asia/Tokyo'])[1 + n %% 5],
               now() - interval '3 years' + n * interval '1 day'
        FROM generate_series(1, %(customers)s) n
        """,
    ),
    (
        "stores",
        """
        INSERT INTO store (id, customer_id, code, name, timezone, created_at)
        SELECT %(s0)s + n, %(c0)s + 1 + (n - 1) %% %(customers)s,
               format('S%%s', lpad(((n - 1) / %(customers)s + 1)::text, 4, '0')),
               format('Store %%s', n), 'Europe/Berlin', now() - interval '2 years'
        FROM generate_series(1, %(stores)s) n
        """,
    ),
    (
        "terminals",
        """
        INSERT INTO terminal (id, serial, customer_id, store_id, model, status, status_reason,
            status_changed_at, device_status, firmware_version, last_heartbeat_at, last_seen_at,
            cpu_pct, memory_pct, disk_pct, host_name, host_cpu_pct, host_memory_pct,
            host_disk_pct, uptime_s, created_at, decommissioned_at, installed_at, maintenance,
            maintenance_note, seq_stream, seq_high)
        SELECT %(t0)s + n, format('TC%%s', lpad(n::text, 7, '0')),
               %(c0)s + 1 + (store - 1) %% %(customers)s, %(s0)s + store,
               CASE WHEN n %% 10 = 0 THEN 'TC-300' ELSE 'TC-200' END,
               status,
               CASE status WHEN 'offline' THEN 'heartbeat missed'
                           WHEN 'error' THEN 'printer: paper jam' END,
               now() - r2 * interval '20 days',
               CASE status WHEN 'online' THEN 'ok' WHEN 'error' THEN 'error' END,
               CASE WHEN status = 'unknown' THEN NULL
                    WHEN r3 < 0.50 THEN '3.2.0' WHEN r3 < 0.80 THEN '3.1.4'
                    WHEN r3 < 0.92 THEN '3.1.2' WHEN r3 < 0.98 THEN '3.0.9' ELSE '2.9.7' END,
               CASE status WHEN 'unknown' THEN NULL
                           WHEN 'offline' THEN now() - interval '1 hour' - r2 * interval '3 days'
                           WHEN 'decommissioned' THEN now() - interval '60 days'
                           ELSE now() - r2 * interval '60 seconds' END,
               CASE status WHEN 'unknown' THEN NULL
                           WHEN 'offline' THEN now() - interval '1 hour' - r2 * interval '3 days'
                           WHEN 'decommissioned' THEN now() - interval '60 days'
                           ELSE now() - r2 * interval '60 seconds' END,
               CASE WHEN status <> 'unknown' THEN round((5 + r3 * 90)::numeric, 1) END,
               CASE WHEN status <> 'unknown' THEN round((20 + r2 * 70)::numeric, 1) END,
               CASE WHEN status <> 'unknown' THEN round((30 + r4 * 65)::numeric, 1) END,
               format('store%%s-pc%%s', lpad(store::text, 5, '0'), 1 + n / %(stores)s %% 2),
               round((10 + r4 * 60)::numeric, 1), round((30 + r3 * 50)::numeric, 1),
               round((40 + r2 * 50)::numeric, 1),
               CASE WHEN status IN ('online', 'error') THEN (r2 * 3000000)::bigint END,
               installed, CASE WHEN status = 'decommissioned' THEN now() - interval '60 days' END,
               installed, maintenance,
               CASE WHEN maintenance THEN 'swap card reader' END,
               CASE WHEN status <> 'unknown' THEN '0000018c2f3a1b00' END,
               CASE WHEN status <> 'unknown' THEN (r2 * 100000)::bigint END
        FROM (
            SELECT n, store, r2, r3, r4, installed,
                   CASE WHEN r1 < 0.915 THEN 'online' WHEN r1 < 0.965 THEN 'offline'
                        WHEN r1 < 0.985 THEN 'error' WHEN r1 < 0.995 THEN 'unknown'
                        ELSE 'decommissioned' END AS status,
                   r4 < 0.01 AS maintenance
            FROM (
                SELECT n, 1 + (n - 1) %% %(stores)s AS store, random() AS r1, random() AS r2,
                       random() AS r3, random() AS r4,
                       now() - interval '30 days' - random() * interval '700 days' AS installed
                FROM generate_series(1, %(terminals)s) n
            ) draws
        ) t
        """,
    ),
    (
        "status changes",
        # Every history terminal: one change before the window (the state it entered it
        # in), then about three a day, online and offline or error in turn.
        """
        INSERT INTO status_change (terminal_id, at, old_status, new_status, reason)
        SELECT h.id, now() - interval '31 days' + k * interval '8 hours'
                     + random() * interval '7 hours',
               CASE WHEN k = 0 THEN 'unknown' WHEN k %% 2 = 1 THEN 'online'
                    WHEN k %% 6 = 0 THEN 'error' ELSE 'offline' END,
               CASE WHEN k %% 2 = 0 THEN 'online' WHEN k %% 6 = 5 THEN 'error'
                    ELSE 'offline' END,
               CASE WHEN k %% 2 = 0 THEN 'heartbeat' WHEN k %% 6 = 5 THEN 'printer: paper jam'
                    ELSE 'heartbeat missed' END
        FROM history_terminal h, generate_series(0, 92) k
        """,
    ),
    (
        "hourly rollups",
        """
        INSERT INTO telemetry_hourly (terminal_id, hour, samples, error_samples, cpu_avg,
            cpu_max, memory_avg, memory_max, disk_avg, disk_max, host_cpu_avg,
            host_memory_avg, host_disk_avg)
        SELECT h.id, hour, 60, (random() < 0.02)::int * 3, 10 + random() * 40,
               50 + random() * 50, 30 + random() * 30, 60 + random() * 30, 40 + random() * 5,
               45 + random() * 5, 20 + random() * 30, 40 + random() * 30, 50 + random() * 10
        FROM history_terminal h,
             generate_series(date_trunc('hour', now()) - interval '30 days',
                             date_trunc('hour', now()) - interval '1 hour',
                             interval '1 hour') hour
        """,
    ),
    (
        "raw heartbeats (24 h, 5 min)",
        """
        INSERT INTO telemetry (terminal_id, message_id, ts, received_at, device_status,
            firmware_version, cpu_pct, memory_pct, disk_pct, host_cpu_pct, host_memory_pct,
            host_disk_pct)
        SELECT h.id, format('bench-%%s-%%s', h.id, extract(epoch FROM ts)::bigint), ts, ts,
               'ok', '3.2.0', 10 + random() * 40, 30 + random() * 30, 40 + random() * 5,
               20 + random() * 30, 40 + random() * 30, 50 + random() * 10
        FROM history_terminal h,
             generate_series(now() - interval '24 hours', now(), interval '5 minutes') ts
        """,
    ),
    (
        "terminal log",
        """
        INSERT INTO terminal_log (terminal_id, at, received_at, kind, severity, code, message,
                                  source_id)
        SELECT h.id, now() - k * interval '41 minutes', now() - k * interval '41 minutes',
               'event', CASE WHEN k %% 7 = 0 THEN 'error' ELSE 'info' END,
               CASE WHEN k %% 7 = 0 THEN 'printer.jam' ELSE 'card.read' END,
               'bench event', format('ev-%%s-%%s', h.id, k)
        FROM history_terminal h, generate_series(1, 60) k
        """,
    ),
    (
        "incidents",
        """
        INSERT INTO incident (id, status, severity, summary, alert_count, opened_at,
                              last_alert_at)
        SELECT %(i0)s + n, 'open', 'critical', format('Store outage %%s', n), 15,
               now() - n * interval '2 hours', now() - n * interval '1 hour'
        FROM generate_series(1, 20) n
        """,
    ),
    (
        "open alerts",
        # On offline and error terminals, one open alert each (the open-alert indexes
        # allow one per terminal and kind); a tenth acknowledged, 300 in incidents.
        """
        INSERT INTO alert (terminal_id, customer_id, scope, kind, severity, status, message,
            count, first_seen_at, last_seen_at, raised_at, acknowledged_at, incident_id)
        SELECT id, customer_id, format('terminal:%%s', id), status,
               CASE WHEN status = 'error' OR rn %% 5 = 0 THEN 'critical' ELSE 'major' END,
               CASE WHEN rn %% 10 = 0 THEN 'acknowledged' ELSE 'open' END,
               CASE status WHEN 'error' THEN 'printer: paper jam' ELSE 'heartbeat missed' END,
               1 + rn %% 7, raised, now() - interval '1 minute', raised,
               CASE WHEN rn %% 10 = 0 THEN raised + interval '10 minutes' END,
               CASE WHEN rn <= 300 THEN %(i0)s + 1 + rn %% 20 END
        FROM (
            SELECT id, customer_id, status, row_number() OVER (ORDER BY md5(id::text)) AS rn,
                   now() - random() * interval '3 days' AS raised
            FROM terminal WHERE status IN ('offline', 'error') AND id > %(t0)s
        ) t
        WHERE rn <= %(open_alerts)s
        """,
    ),
    (
        "resolved alerts",
        """
        INSERT INTO alert (terminal_id, customer_id, scope, kind, severity, status, message,
            count, first_seen_at, last_seen_at, raised_at, acknowledged_at, resolved_at,
            resolution_note)
        SELECT t.id, t.customer_id, format('terminal:%%s', t.id), a.kind,
               CASE WHEN a.kind = 'error' THEN 'critical' ELSE 'major' END, 'resolved',
               'bench', 1, a.raised, a.raised + a.lasted, a.raised, a.raised + interval '5 min',
               a.raised + a.lasted, 'cleared'
        FROM (
            SELECT %(t0)s + 1 + (random() * (%(terminals)s - 1))::int AS terminal,
                   CASE WHEN random() < 0.7 THEN 'offline' ELSE 'error' END AS kind,
                   now() - random() * interval '30 days' AS raised,
                   random() * interval '4 hours' AS lasted
            FROM generate_series(1, %(resolved_alerts)s)
        ) a JOIN terminal t ON t.id = a.terminal
        """,
    ),
    (
        "fleet samples",
        # What ingest.fleet_samples writes every bucket: each customer's terminals per
        # status, here its current counts with a little noise.
        """
        INSERT INTO fleet_sample (bucket, customer_id, in_service, online, offline, error,
                                  unknown, maintenance)
        SELECT b, c.customer_id, c.in_service, greatest(0, c.online - (random() * 3)::int),
               c.offline + (random() * 2)::int, c.error, c.unknown, c.maintenance
        FROM generate_series(date_bin(%(step)s::interval, now(), 'epoch') - interval '30 days',
                             now(), %(step)s::interval) b,
             (SELECT customer_id,
                     count(*) FILTER (WHERE status <> 'decommissioned') AS in_service,
                     count(*) FILTER (WHERE status = 'online') AS online,
                     count(*) FILTER (WHERE status = 'offline') AS offline,
                     count(*) FILTER (WHERE status = 'error') AS error,
                     count(*) FILTER (WHERE status = 'unknown') AS unknown,
                     count(*) FILTER (WHERE maintenance) AS maintenance
              FROM terminal GROUP BY customer_id) c
        """,
    ),
    (
        "fleet totals",
        # What the sampler adds with each sample: the fleet per bucket...
        "INSERT INTO fleet_sample_total SELECT bucket, sum(in_service), sum(online)"
        " FROM fleet_sample GROUP BY bucket",
    ),
    (
        "fleet daily sums",
        # ...and each customer's sums per day.
        "INSERT INTO fleet_sample_daily SELECT date_trunc('day', bucket, 'UTC'), customer_id,"
        " count(*), sum(in_service), sum(online) FROM fleet_sample GROUP BY 1, 2",
    ),
    (
        "audit events",
        # login.failed rows are old and from other addresses: the sign-in throttle
        # counts recent failures, and the benchmark's viewer must still get in.
        """
        INSERT INTO audit_event (at, actor, action, target, detail, remote_addr)
        SELECT now() - interval '2 days' - random() * interval '90 days',
               (%(actors)s::text[])[1 + n %% array_length(%(actors)s::text[], 1)],
               (ARRAY['login', 'logout', 'terminal.maintenance', 'command.queued',
                      'alert.acknowledged', 'alert.resolved', 'customer.updated',
                      'terminals.exported', 'login.failed', 'user.created'])[1 + n %% 10],
               format('TC%%s', lpad((1 + n %% %(terminals)s)::text, 7, '0')),
               jsonb_build_object('n', n, 'note', 'bench'),
               format('10.0.%%s.%%s', n %% 250, n %% 200)
        FROM generate_series(1, %(audit_events)s) n
        """,
    ),
]


def _months(first: datetime, last: datetime) -> list[date]:
    months, month = [], date(first.year, first.month, 1)
    while month <= date(last.year, last.month, 1):
        months.append(month)
        month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return months


def seed(url: str, args: argparse.Namespace) -> list[tuple[str, int, float]]:
    """Seed the fleet; returns (step, rows, seconds) per step."""
    done: list[tuple[str, int, float]] = []
    with psycopg.connect(url, autocommit=True) as conn:

        def base(table: str) -> int:
            row = conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()
            return int(row[0]) if row else 0

        params: dict[str, Any] = {
            "customers": args.customers,
            "stores": args.stores,
            "terminals": args.terminals,
            "open_alerts": args.open_alerts,
            "resolved_alerts": args.resolved_alerts,
            "audit_events": args.audit_events,
            "actors": list(ACTORS),
            "step": f"{args.sample_minutes} minutes",
            "c0": base("customer"),
            "s0": base("store"),
            "t0": base("terminal"),
            "i0": base("incident"),
        }
        # Month partitions as the retention job keeps them, before the rows arrive.
        now = datetime.now(UTC)
        for table in retention.PARTITIONED:
            for month in _months(now - timedelta(days=3), now):
                name = table.partition_name(month)
                exists = conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()
                if exists is None or exists[0] is None:
                    with conn.transaction():
                        retention.create_partition(conn, month, table)
        conn.execute("SELECT setseed(0.15)")
        for name, statement in SEED_STEPS:
            if name == "status changes":
                # The terminals with history: every hundredth, spread over the customers.
                step = max(1, args.terminals // max(1, args.history_terminals))
                conn.execute(
                    "CREATE TEMP TABLE history_terminal AS SELECT id FROM terminal"
                    " WHERE id > %s AND (id - %s) %% %s = 0 ORDER BY id LIMIT %s",
                    (params["t0"], params["t0"], step, args.history_terminals),
                )
            started = time.monotonic()
            cursor = conn.execute(statement, params)  # type: ignore[arg-type]
            done.append((name, max(cursor.rowcount, 0), time.monotonic() - started))
            print(f"  seeded {name}: {done[-1][1]:,} rows in {done[-1][2]:.1f} s", flush=True)
        for name in ("customer", "store", "terminal", "incident", "alert"):
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{name}', 'id'),"
                f" (SELECT max(id) FROM {name}))"
            )
        started = time.monotonic()
        # Autovacuum would have run on a live database: visibility map and statistics.
        conn.execute("VACUUM (ANALYZE)")
        done.append(("VACUUM ANALYZE", 0, time.monotonic() - started))
        print(f"  VACUUM ANALYZE in {done[-1][2]:.1f} s", flush=True)
    return done


# --- timing the views ----------------------------------------------------------------


@dataclass
class Statement:
    sql: str
    params: Any
    ms: float


@dataclass
class SqlLog:
    """The SQL statements the app's engine ran during the current request, timed."""

    statements: list[Statement] = field(default_factory=list)

    def attach(self, engine: Engine) -> None:
        def before(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
            conn.info.setdefault("bench_started", []).append(time.perf_counter())

        def after(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
            started = conn.info["bench_started"].pop()
            self.statements.append(Statement(sql, params, (time.perf_counter() - started) * 1e3))

        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)


@dataclass
class Result:
    view: str
    path: str
    status: int | None = None  # None: the route does not exist yet
    times_ms: list[float] = field(default_factory=list)
    sql_ms: list[float] = field(default_factory=list)  # SQL time of each timed request
    queries: int = 0
    role: str = "viewer"
    slowest: list[Statement] = field(default_factory=list)  # of the slowest request

    def pct(self, q: float, values: list[float] | None = None) -> float:
        ordered = sorted(self.times_ms if values is None else values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def route_exists(app: Flask, path: str) -> bool:
    adapter = app.url_map.bind("localhost")
    try:
        adapter.match(urlsplit(path).path, method="GET")
    except NotFound:
        return False
    except MethodNotAllowed:
        return True
    return True


def time_view(
    clients: dict[str, FlaskClient],
    app: Flask,
    log: SqlLog,
    view: str,
    path: str,
    args: argparse.Namespace,
    before_each: Callable[[], None] | None = None,
) -> Result:
    result = Result(view, path)
    if not route_exists(app, path):
        return result
    client = clients[VIEWER]
    if client.get(path).status_code == 403:
        result.role = "admin"
        client = clients[ADMIN]
    budget_end = time.monotonic() + args.view_budget
    slowest = -1.0
    for n in range(2 + args.requests):
        if before_each is not None:
            before_each()
        log.statements = []
        started = time.perf_counter()
        response = client.get(path)
        response.get_data()  # a streamed body is produced here, inside the timing
        elapsed = (time.perf_counter() - started) * 1e3
        result.status = response.status_code
        if n < 2:
            continue  # warm-ups: connections, template compilation, caches
        result.times_ms.append(elapsed)
        result.sql_ms.append(sum(s.ms for s in log.statements))
        result.queries = len(log.statements)
        if elapsed > slowest:
            slowest, result.slowest = elapsed, list(log.statements)
        if time.monotonic() > budget_end and len(result.times_ms) >= 5:
            break
    return result


def explain(engine: Engine, statement: Statement) -> str:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "EXPLAIN (ANALYZE, BUFFERS) " + statement.sql, statement.params
        ).all()
        conn.rollback()
    return "\n".join(row[0] for row in rows)


@dataclass(frozen=True)
class Samples:
    """Values of the seeded data that the views are asked about."""

    serial_with_history: str
    serial_part: str
    host_part: str
    customer_id: int
    customer_name: str
    firmware: str
    actor: str
    last_month: str
    store_path: str  # the customer and store of serial_with_history


def samples(url: str) -> Samples:
    with psycopg.connect(url) as conn:

        def one(sql: str) -> Any:
            row = conn.execute(sql).fetchone()
            if row is None or row[0] is None:
                raise SystemExit(f"the database has nothing for: {sql}")
            return row[0]

        serial = one(
            "SELECT t.serial FROM terminal t WHERE EXISTS"
            " (SELECT 1 FROM status_change s WHERE s.terminal_id = t.id)"
            " ORDER BY t.id LIMIT 1 OFFSET 10"
        )
        host = one("SELECT host_name FROM terminal WHERE host_name IS NOT NULL LIMIT 1 OFFSET 777")
        customer_id, customer_name = conn.execute(
            "SELECT c.id, c.name FROM customer c JOIN terminal t ON t.customer_id = c.id"
            " GROUP BY c.id ORDER BY count(*) DESC, c.id LIMIT 1"
        ).fetchone() or (0, "")
        firmware = one(
            "SELECT firmware_version FROM terminal WHERE firmware_version IS NOT NULL"
            " GROUP BY 1 ORDER BY count(*) DESC LIMIT 1 OFFSET 1"
        )
        actor = one("SELECT actor FROM audit_event GROUP BY 1 ORDER BY count(*) LIMIT 1")
        store = conn.execute(
            "SELECT customer_id, store_id FROM terminal WHERE serial = %s", (serial,)
        ).fetchone()
        store_path = f"/customers/{store[0]}/stores/{store[1]}" if store and store[1] else ""
    now = datetime.now(UTC)
    last = date(now.year - (now.month == 1), (now.month - 2) % 12 + 1, 1)
    # A part of a serial and of a host name as a person types it: 5 characters from the
    # middle (matches a few dozen terminals), the store part of a PC's name.
    return Samples(
        serial, serial[4:9], host.split("-")[0], customer_id, customer_name, firmware, actor,
        f"{last.year:04d}-{last.month:02d}", store_path,
    )  # fmt: skip


def views(s: Samples) -> list[tuple[str, str]]:
    q = quote
    return [
        ("dashboard", "/"),
        ("dashboard partial", "/dashboard/live"),
        ("terminals", "/terminals"),
        ("terminals partial", "/terminals/fleet"),
        ("search serial", f"/terminals?q={q(s.serial_part)}"),
        ("search host", f"/terminals?q={q(s.host_part)}"),
        ("status=error", "/terminals?status=error"),
        ("status=maintenance", "/terminals?status=maintenance"),
        ("customer filter", f"/terminals?customer={q(s.customer_name)}"),
        ("firmware filter", f"/terminals?firmware={q(s.firmware)}"),
        ("sort cpu desc", "/terminals?sort=cpu&dir=desc"),
        ("sort heartbeat p500", "/terminals?sort=heartbeat&page=500"),
        ("terminal detail", f"/terminals/{q(s.serial_with_history)}"),
        ("terminal activity", f"/terminals/{q(s.serial_with_history)}/activity"),
        ("customers", "/customers"),
        ("customer detail", f"/customers/{s.customer_id}"),
        ("store detail", s.store_path),
        ("firmware library", "/firmware"),
        ("rollouts", "/rollouts"),
        ("users", "/users"),
        ("alerts", "/alerts"),
        ("alerts critical", "/alerts?severity=critical"),
        ("audit", "/audit"),
        ("audit actor", f"/audit?actor={q(s.actor)}"),
        ("reports", "/reports"),
        ("report customer", f"/reports/{s.last_month}?customer={q(s.customer_name)}"),
        ("report fleet", f"/reports/{s.last_month}"),
        ("report fleet this month", f"/reports/{datetime.now(UTC):%Y-%m}"),
        ("api terminals", "/api/v1/terminals?limit=100"),
        ("api terminal", f"/api/v1/terminals/{q(s.serial_with_history)}"),
    ]


def sign_in(client: FlaskClient, username: str) -> None:
    client.get("/login")
    with client.session_transaction() as session:
        token = session["csrf_token"]
    response = client.post(
        "/login", data={"username": username, "password": PASSWORD, "csrf_token": token}
    )
    if response.status_code != 302:
        raise SystemExit(f"sign-in failed ({response.status_code}): {response.get_data()[:300]!r}")


def api_token(url: str) -> str:
    engine = make_engine(url, pool_size=1)
    try:
        with Session(engine) as session:
            account = session.exec(select(UserAccount).where(UserAccount.username == VIEWER)).one()
            return users.create_api_token(session, account, f"bench {secrets.token_hex(4)}")
    finally:
        engine.dispose()


def create_user(url: str, username: str, role: str) -> None:
    engine = make_engine(url, pool_size=1)
    try:
        with Session(engine) as session:
            existing = session.exec(
                select(UserAccount).where(UserAccount.username == username)
            ).first()
            if existing is not None:  # a given database, benchmarked before: new password
                existing.password_hash = generate_password_hash(PASSWORD)
                existing.role, existing.active, existing.must_change_password = role, True, False
                session.add(existing)
                session.commit()
                return
            users.create_user(session, username, PASSWORD, role)
    finally:
        engine.dispose()


def forget_uptime_snapshots(url: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM fleet_uptime_snapshot")


def figures(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        out = {}
        for table in ("terminal", "status_change", "alert", "fleet_sample", "audit_event"):
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            out[table] = int(row[0]) if row else 0
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        out["bytes"] = int(row[0]) if row else 0
    return out


def run(url: str, args: argparse.Namespace, seeded: list[tuple[str, int, float]]) -> None:
    s = samples(url)
    create_user(url, VIEWER, "viewer")
    create_user(url, ADMIN, "admin")
    token = api_token(url)
    settings = ConsoleSettings(secret_key=SecretStr(secrets.token_urlsafe(32)))
    app = create_app(settings, url)
    app.config["TESTING"] = True
    engine = engine_of(app)
    log = SqlLog()
    log.attach(engine)
    # The viewer for every view; the admin only for views that refuse a viewer (audit).
    clients = {}
    for name in (VIEWER, ADMIN):
        client = app.test_client()
        sign_in(client, name)
        clients[name] = client
    clients[VIEWER].environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    counts = figures(url)
    print(
        f"\nfleet: {counts['terminal']:,} terminals, {counts['status_change']:,} status changes,"
        f" {counts['alert']:,} alerts, {counts['fleet_sample']:,} fleet samples,"
        f" {counts['audit_event']:,} audit events; database {counts['bytes'] / 2**20:,.0f} MiB"
    )
    if seeded:
        print(f"seeding took {sum(t for _, _, t in seeded):.0f} s (VACUUM ANALYZE included)")
    print(
        f"SERVER time: around Flask's test client.get, the whole WSGI stack in-process"
        f" (no network, no browser); {args.requests} timed requests per view after 2"
        f" warm-ups; load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    results = []
    for view, path in views(s):
        if args.only and not any(word in view for word in args.only.split(",")):
            continue
        result = time_view(clients, app, log, view, path, args)
        results.append(result)
        print_row(result)
        if view.startswith("dashboard") and result.times_ms:
            # The dashboard keeps its month sums for a minute (dashboard_repository):
            # this is the request that recomputes them, once a minute per process.
            cold = time_view(
                clients, app, log, view + " (cache cold)", path, args,
                before_each=dashboard_repository.clear_cache,
            )  # fmt: skip
            results.append(cold)
            print_row(cold)
        if view.startswith("report fleet") and result.times_ms:
            # Ingest keeps the fleet's uptime (shared.uptime_snapshot); without a fresh
            # snapshot the console works it out: what a view costs with ingest stopped.
            cold = time_view(
                clients, app, log, view + " (no snapshot)", path, args,
                before_each=lambda: forget_uptime_snapshots(url),
            )  # fmt: skip
            results.append(cold)
            print_row(cold)
    over = [r for r in results if r.times_ms and r.pct(0.95) > TARGET_MS]
    built = [r for r in results if r.times_ms]
    print(
        f"\n{len(built)} views timed, {len(results) - len(built)} not built;"
        f" over the {TARGET_MS:.0f} ms p95 target: {', '.join(r.view for r in over) or 'none'}"
    )
    slowest = sorted(built, key=lambda r: r.pct(0.95), reverse=True)[:5]
    print("slowest by p95: " + ", ".join(f"{r.view} {r.pct(0.95):.0f} ms" for r in slowest))
    for r in over if args.explain else []:
        worst = max(r.slowest, key=lambda st: st.ms, default=None)
        if worst is None:
            continue
        print(f"\n=== {r.view} ({r.path}): slowest statement, {worst.ms:.0f} ms ===")
        print(" ".join(worst.sql.split()))
        print(f"params: {worst.params}")
        print(explain(engine, worst))
    engine.dispose()


HEADER = (
    f"{'view':<34} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'sql p50':>8} {'queries':>7}"
    f" {'status':>6} {'as':>6}"
)


def print_row(r: Result) -> None:
    if not print_row.header_done:  # type: ignore[attr-defined]
        print(HEADER)
        print_row.header_done = True  # type: ignore[attr-defined]
    if not r.times_ms:
        print(f"{r.view:<34} {'not built':>8}   ({r.path})", flush=True)
        return
    mark = "  OVER" if r.pct(0.95) > TARGET_MS else ""
    print(
        f"{r.view:<34} {r.pct(0.5):>8.1f} {r.pct(0.95):>8.1f} {max(r.times_ms):>8.1f}"
        f" {r.pct(0.5, r.sql_ms):>8.1f} {r.queries:>7} {r.status:>6} {r.role:>6}{mark}",
        flush=True,
    )


print_row.header_done = False  # type: ignore[attr-defined]


@contextmanager
def database(args: argparse.Namespace) -> Iterator[tuple[str, bool]]:
    """(url, whether to seed): the given database, or a private cluster seeded here."""
    if args.database_url:
        with psycopg.connect(args.database_url) as conn:
            row = conn.execute("SELECT count(*) FROM terminal").fetchone()
        yield args.database_url, not (row and row[0])
        return
    root = Path(tempfile.mkdtemp(prefix="tms-bench-console-"))
    root.chmod(0o755)
    pg = EmbeddedPostgres(root / "pg", free_port(), secrets.token_urlsafe(16))
    pg.start()
    try:
        schema.upgrade(pg.url)
        yield pg.url, True
    finally:
        pg.stop()
        if args.keep:
            print(
                f"\ncluster kept in {root / 'pg'} (password-protected; start it with postgres -D)"
            )
        else:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terminals", type=int, default=100_000)
    parser.add_argument("--history-terminals", type=int, default=1000)
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--stores", type=int, default=10_000)
    parser.add_argument("--open-alerts", type=int, default=2000)
    parser.add_argument("--resolved-alerts", type=int, default=20_000)
    parser.add_argument("--audit-events", type=int, default=200_000)
    parser.add_argument(
        "--sample-minutes", type=int, default=5, help="fleet_sample bucket (ingest writes 5)"
    )
    parser.add_argument("--requests", type=int, default=20, help="timed requests per view")
    parser.add_argument(
        "--view-budget", type=float, default=60, help="seconds per view (at least 5 requests)"
    )
    parser.add_argument("--no-explain", dest="explain", action="store_false")
    parser.add_argument(
        "--only", help="time only the views whose name contains one of these (comma-separated)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the cluster directory")
    parser.add_argument(
        "--database-url", help="use this database (seeded only if it has no terminals)"
    )
    args = parser.parse_args()
    args.stores = min(args.stores, max(1, args.terminals))
    args.customers = min(args.customers, args.stores)

    with database(args) as (url, empty):
        seeded: list[tuple[str, int, float]] = []
        if empty:
            print(
                f"seeding {args.terminals:,} terminals, {args.history_terminals:,} with history,"
                f" {args.customers} customers, {args.stores:,} stores", flush=True
            )  # fmt: skip
            seeded = seed(url, args)
        else:
            print("the database has terminals: not seeded")
        run(url, args, seeded)


if __name__ == "__main__":
    main()
