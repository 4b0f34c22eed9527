"""Idle benchmark: what ingest and PostgreSQL cost with a big fleet and no traffic at all.

Seeds a private PostgreSQL with ``--terminals`` terminals in SQL (``generate_series``):
200 per customer, 10 per store, two store PCs per store (so five terminals per PC), and
~91.5% online (last heard from within the last minute, as between two heartbeats),
5% offline for an hour or more, 2% in error, 1% never seen, 0.5% decommissioned; then
VACUUM ANALYZE. No alert is seeded: ingest's first pass raises what the rules say.

Then it starts Mosquitto and one ingest process (``ingest.service.run_ingest`` with the
shipped rules plus a webhook route, so that every per-second check runs), sends
nothing, waits until the start-up work is done (ingest's and PostgreSQL's CPU each
under ``--settled-pct`` over 10 s, at most ``--settle-max-s``), and measures for
``--duration`` seconds from /proc: ingest's CPU, PostgreSQL's (the postmaster, its live
children, and the children it reaped in the window), and the broker's, each in % of
one core. The targets of issue 17: ingest
under 2% of a core at 100,000 terminals and under 5% at 1,000,000.

    nice -n 19 .venv/bin/python bench/idle.py --terminals 100000 --duration 60
"""

from __future__ import annotations

# ruff: noqa: E402  (imports follow the sys.path fix below, on purpose)
import sys
from pathlib import Path

# Keep bench/ off the import path so that ``import ingest`` finds the package (here and
# in the spawned process).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psutil
import psycopg
from pydantic import SecretStr
from sqlmodel import Session

from broker.credential_sync import SyncTracker
from broker.service import run_broker_service
from registry import provisioning
from shared import schema
from shared.db import make_engine
from shared.models import AccountKind
from shared.ports import free_port
from shared.settings import AlertSettings, BrokerSettings, IngestSettings, MqttClientSettings
from tms.postgres import EmbeddedPostgres

TARGETS = {100_000: 2.0, 1_000_000: 5.0}  # % of one core for ingest (issue 17)
HOOK_SECRET_ENV = "TMS_BENCH_IDLE_HOOK"

SEED_CUSTOMERS = """
INSERT INTO customer (name, contact_person, email, contract_type, timezone)
SELECT format('Idle customer %%s', n), 'Ops', format('ops%%s@idle.example', n), 'standard',
       'Europe/Berlin'
FROM generate_series(1, %(customers)s) n
"""
SEED_STORES = """
INSERT INTO store (customer_id, code, name, timezone)
SELECT c.id, format('S%%s', lpad(n::text, 6, '0')), format('Store %%s', n), 'Europe/Berlin'
FROM generate_series(1, %(stores)s) n
JOIN (SELECT id, row_number() OVER (ORDER BY id) AS k FROM customer) c
  ON c.k = 1 + (n - 1) %% %(customers)s
"""
# Terminal n is in store 1 + (n - 1) / 10 and on its PC 1 + (n - 1) %% 2: five per PC.
SEED_TERMINALS = """
INSERT INTO terminal (serial, customer_id, store_id, model, status, status_reason,
    status_changed_at, device_status, firmware_version, last_heartbeat_at, last_seen_at,
    cpu_pct, memory_pct, disk_pct, host_name, created_at, decommissioned_at, installed_at)
SELECT format('TI%%s', lpad(n::text, 8, '0')), s.customer_id, s.id, 'TC-200', status,
       CASE status WHEN 'offline' THEN 'heartbeat missed' WHEN 'error' THEN 'terminal error'
                   WHEN 'online' THEN 'heartbeat received' END,
       CASE WHEN status IN ('online', 'error')
            THEN now() - interval '2 days' - r2 * interval '20 days'
            WHEN status = 'unknown' THEN NULL
            ELSE now() - interval '1 hour' - r2 * interval '3 days' END,
       CASE status WHEN 'online' THEN 'ok' WHEN 'error' THEN 'error' END,
       CASE WHEN status <> 'unknown' THEN '3.2.0' END,
       seen, seen, 12.5, 40.0, 55.0,
       format('store%%s-pc%%s', s.id, 1 + (n - 1) %% 2),
       now() - interval '400 days',
       CASE WHEN status = 'decommissioned' THEN now() - interval '60 days' END,
       now() - interval '400 days'
FROM (
    SELECT n, r2, status,
           CASE WHEN status IN ('online', 'error') THEN now() - r2 * interval '60 seconds'
                WHEN status = 'unknown' THEN NULL
                ELSE now() - interval '1 hour' - r2 * interval '3 days' END AS seen
    FROM (
        SELECT n, random() AS r2,
               CASE WHEN r1 < 0.915 THEN 'online' WHEN r1 < 0.965 THEN 'offline'
                    WHEN r1 < 0.985 THEN 'error' WHEN r1 < 0.995 THEN 'unknown'
                    ELSE 'decommissioned' END AS status
        FROM (SELECT n, random() AS r1 FROM generate_series(1, %(terminals)s) n) d
    ) d2
) t
JOIN (SELECT id, customer_id, row_number() OVER (ORDER BY id) AS k FROM store) s
  ON s.k = 1 + (t.n - 1) / 10
"""
# What a running sweep has left on the terminals: an online one is next due to be
# looked at for missed heartbeats at its deadline (last heard from + 300 s x 3), and
# none waits for the alert rules (the trigger flagged every row seeded; an upgraded
# database has no flag either). Only in a schema that has the columns (migration
# 0015), so that the same run measures the code before.
SEED_DUE = """
UPDATE terminal SET alert_check_at = NULL,
    offline_due_at = CASE WHEN status IN ('online', 'error')
        THEN GREATEST(last_seen_at, status_changed_at) + interval '900 seconds' END
"""

SEED_UPGRADED = "UPDATE terminal SET alert_check_at = NULL, offline_due_at = NULL"

# The shipped rules (config/alerts.toml) and a webhook route to a closed port, so that
# the checks that only run with a route run too; its deliveries fail and back off.
ROUTE = """
[[route]]
name = "bench"
min_severity = "warning"
webhook = "http://127.0.0.1:{port}/hook"
secret_env = "{env}"
"""


def seed(url: str, terminals: int, upgraded: bool) -> float:
    started = time.monotonic()
    params = {
        "terminals": terminals,
        "stores": max(1, terminals // 10),
        "customers": max(1, terminals // 200),
    }
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT setseed(0.17)")
        for name, sql in (
            ("customers", SEED_CUSTOMERS),
            ("stores", SEED_STORES),
            ("terminals", SEED_TERMINALS),
        ):
            t0 = time.monotonic()
            rows = conn.execute(sql, params).rowcount
            print(f"  seeded {name}: {rows:,} rows in {time.monotonic() - t0:.1f} s", flush=True)
        has_due = conn.execute(
            "SELECT 1 FROM information_schema.columns"
            " WHERE table_name = 'terminal' AND column_name = 'offline_due_at'"
        ).fetchone()
        if has_due:
            # --upgraded: as the first start after migration 0015 finds the fleet.
            conn.execute(SEED_UPGRADED if upgraded else SEED_DUE)
        t0 = time.monotonic()
        conn.execute("VACUUM (ANALYZE)")
        print(f"  VACUUM ANALYZE in {time.monotonic() - t0:.1f} s", flush=True)
    return time.monotonic() - started


def ingest_process(settings: IngestSettings, url: str, rules: Path, stop: Any, ready: Any) -> None:
    from ingest.service import run_ingest, tune_gc

    tune_gc()  # as tms ingest does

    async def main() -> None:
        stopping, started = asyncio.Event(), asyncio.Event()

        async def watch() -> None:
            await started.wait()
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.2)
            stopping.set()

        watcher = asyncio.create_task(watch())
        await run_ingest(
            settings, url, stopping, started, alert_settings=AlertSettings(rules_file=rules)
        )
        watcher.cancel()

    asyncio.run(main())


# --- CPU from /proc ------------------------------------------------------------------

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[float, float]:
    """(own CPU s, reaped children's CPU s) of ``pid`` from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / TICKS, (cutime + cstime) / TICKS


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid``, its live descendants and the children it has reaped.

    A child alive at the first reading and reaped by the second is counted once: its
    part before the window is in the first reading's live sum, its total in the reaped.
    """
    own, reaped = _stat(pid)
    total = own + reaped
    for child in psutil.Process(pid).children(recursive=True):
        try:
            total += sum(_stat(child.pid)[:1])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


@dataclass
class Window:
    seconds: float
    ingest_pct: float
    postgres_pct: float
    broker_pct: float


def measure(seconds: float, ingest_pid: int, pg_pid: int, broker_pids: list[int]) -> Window:
    def read() -> tuple[float, float, float, float]:
        broker = 0.0
        for pid in broker_pids:
            with contextlib.suppress(FileNotFoundError):
                broker += _stat(pid)[0]
        return time.monotonic(), _stat(ingest_pid)[0], tree_cpu(pg_pid), broker

    t0, i0, p0, b0 = read()
    time.sleep(seconds)
    t1, i1, p1, b1 = read()
    span = t1 - t0
    return Window(span, (i1 - i0) / span * 100, (p1 - p0) / span * 100, (b1 - b0) / span * 100)


def settle(ingest_pid: int, pg_pid: int, below_pct: float, min_s: float, max_s: float) -> float:
    """Seconds until ingest's and PostgreSQL's CPU over 10 s are each under
    ``below_pct``, after at least ``min_s`` (the first passes) and at most ``max_s``."""
    started = time.monotonic()
    time.sleep(min_s)
    while time.monotonic() - started < max_s:
        t0, i0, p0 = time.monotonic(), _stat(ingest_pid)[0], tree_cpu(pg_pid)
        time.sleep(10)
        span = time.monotonic() - t0
        ingest = (_stat(ingest_pid)[0] - i0) / span * 100
        postgres = (tree_cpu(pg_pid) - p0) / span * 100
        print(f"  settling: ingest {ingest:.1f}%, PostgreSQL {postgres:.1f}% of a core", flush=True)
        if ingest < below_pct and postgres < below_pct:
            break
    return time.monotonic() - started


def broker_pids() -> list[int]:
    me = psutil.Process()
    return [p.pid for p in me.children(recursive=True) if "mosquitto" in p.name()]


def counts(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM terminal WHERE status = 'online'),"
            " (SELECT count(*) FROM terminal WHERE status = 'offline'),"
            " (SELECT count(*) FROM alert WHERE status <> 'resolved'),"
            " (SELECT count(*) FROM incident)"
        ).fetchone()
    assert row is not None
    return f"online {row[0]:,}, offline {row[1]:,}, open alerts {row[2]:,}, incidents {row[3]}"


def explain(url: str) -> None:
    """The plans of the sweep's per-second statements (plain EXPLAIN: some write)."""
    try:
        from ingest.alerts.status_checks import SQL_FLAGGED, SQL_RESOLVED_SINCE
        from ingest.alerts.store import SQL_UNTOLD
        from ingest.missed_heartbeats import SQL_DUE_HEARTBEATS
    except ImportError:  # the code before migration 0015
        return
    now = datetime.now(UTC)
    statements: list[tuple[str, str, Any]] = [
        (
            "missed heartbeats",
            SQL_DUE_HEARTBEATS,
            {"interval_s": 300.0, "missed": 3, "reason": "x", "limit": 10_000},
        ),
        ("alert checks", SQL_FLAGGED, {"now": now, "limit": 10_000}),
        ("resolved", SQL_RESOLVED_SINCE, (now, ["offline"], ["x"])),
        ("raised elsewhere", SQL_UNTOLD, (["rollout_halted"],)),
    ]
    with psycopg.connect(url) as conn:
        for name, sql, params in statements:
            plan = conn.execute("EXPLAIN " + sql, params).fetchall()  # type: ignore[arg-type]
            print(f"  plan of {name}:")
            for (line,) in plan:
                print(f"    {line}")
        conn.rollback()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terminals", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=60, help="seconds measured")
    parser.add_argument("--settled-pct", type=float, default=10.0)
    parser.add_argument("--settle-min-s", type=float, default=30)
    parser.add_argument("--explain", action="store_true", help="print the sweep's plans")
    parser.add_argument(
        "--upgraded",
        action="store_true",
        help="no due time worked out yet, as just after migration 0015 (the first start)",
    )
    parser.add_argument("--settle-max-s", type=float, default=300)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="tms-bench-idle-"))
    root.chmod(0o755)
    pg = EmbeddedPostgres(root / "pg", free_port(), secrets.token_urlsafe(16))
    pg.start()
    stop_broker = threading.Event()
    stop = mp.Event()
    ingest: Any = None
    try:
        url = pg.url
        schema.upgrade(url)
        print(f"terminals={args.terminals:,} (PostgreSQL 15, Mosquitto, loopback)", flush=True)
        seeded_s = seed(url, args.terminals, args.upgraded)
        engine = make_engine(url, pool_size=1)
        with Session(engine) as session:
            secret = provisioning.ensure_service_account(session, AccountKind.INGEST, "tms-ingest")
            session.commit()
        engine.dispose()
        broker = BrokerSettings(host="127.0.0.1", port=free_port())
        ready = threading.Event()
        threading.Thread(
            target=run_broker_service,
            args=(broker, url, root / "broker", stop_broker, ready, SyncTracker()),
            daemon=True,
        ).start()
        assert ready.wait(60), "the broker did not start"
        rules = root / "alerts.toml"
        shipped = (_HERE.parent / "config" / "alerts.toml").read_text()
        rules.write_text(shipped + ROUTE.format(port=free_port(), env=HOOK_SECRET_ENV))
        os.environ[HOOK_SECRET_ENV] = secrets.token_urlsafe(24)
        settings = IngestSettings(
            mqtt=MqttClientSettings(
                host=broker.host,
                port=broker.port,
                username="tms-ingest",
                password=SecretStr(secret),
            ),
            client_id="tms-ingest-idle",
            metrics_port=0,
        )
        postmaster = pg.process.pid if pg.process is not None else 0
        started = mp.Event()
        ingest = mp.Process(target=ingest_process, args=(settings, url, rules, stop, started))
        ingest.start()
        assert started.wait(120), "ingest did not start"
        settled_s = settle(
            ingest.pid, postmaster, args.settled_pct, args.settle_min_s, args.settle_max_s
        )
        print(f"  after start-up: {counts(url)}", flush=True)
        window = measure(args.duration, ingest.pid, postmaster, broker_pids())
        target = TARGETS.get(args.terminals)
        verdict = ""
        if target is not None:
            met = "met" if window.ingest_pct < target else "MISSED"
            verdict = f" (target < {target:g}%: {met})"
        print(
            f"seeded in {seeded_s:.0f} s; ingest settled {settled_s:.0f} s after start\n"
            f"idle {window.seconds:.0f} s at {args.terminals:,} terminals:"
            f" ingest {window.ingest_pct:.2f}% of a core{verdict},"
            f" PostgreSQL {window.postgres_pct:.2f}%, Mosquitto {window.broker_pct:.2f}%",
            flush=True,
        )
        print(f"  at the end: {counts(url)}")
        if args.explain:
            explain(url)
    finally:
        stop.set()
        if ingest is not None:
            ingest.join(60)
        stop_broker.set()
        time.sleep(1)
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
