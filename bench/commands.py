"""Command benchmark: diagnostics to N simulated terminals at once, through the real loop.

Starts `tms up` with N simulated terminals (the sender, ingest, Mosquitto and
PostgreSQL as in production), waits until all are online, then queues one
``diagnostics`` command per terminal in a single transaction and waits for every
result. Prints the time until all results are in, and per command the time from queued
to sent and the round trip from its send to its result (p50/p99/max). Loopback only;
bounded by --timeout.

    .venv/bin/python bench/commands.py --terminals 1000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shared.ports import free_port  # noqa: E402

QUEUE_ALL = """
INSERT INTO command (id, terminal_id, name, args, status, requested_by, requester_kind,
    max_attempts, timeout_s, due_at, expires_at)
SELECT md5(random()::text || id::text), id, 'diagnostics', '{}'::jsonb, 'queued', 'bench',
    'system', 2, 60, now(), now() + interval '1 hour'
FROM terminal WHERE status = 'online'
RETURNING created_at
"""

FIGURES = """
WITH c AS (
    SELECT extract(epoch FROM last_sent_at - created_at) AS to_send,
           extract(epoch FROM finished_at - last_sent_at) AS round_trip
    FROM command WHERE requested_by = 'bench'
)
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY to_send),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY to_send), max(to_send),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY round_trip),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY round_trip), max(round_trip)
FROM c
"""


# Where the agents spent the time: each check's mean duration as the report gives it.
CHECK_TIMES = """
SELECT c->>'id', round(avg((c->>'duration_ms')::float)::numeric, 1),
       round(max((c->>'duration_ms')::float)::numeric, 1)
FROM command, jsonb_array_elements(result->'checks') AS c
WHERE requested_by = 'bench' AND c->>'duration_ms' IS NOT NULL
GROUP BY 1 ORDER BY 2 DESC LIMIT 5
"""


def _database_url(data_dir: Path, port: int) -> str:
    password = json.loads((data_dir / "secrets.json").read_text())["database_password"]
    return f"postgresql://tms:{password}@127.0.0.1:{port}/tms"


def _scalar(url: str, sql: str) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
    return None if row is None else row[0]


def _wait(url: str, sql: str, target: int, timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            found = _scalar(url, sql)
            if isinstance(found, int) and found >= target:
                return time.monotonic() - start
        except psycopg.Error:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{what}: not reached within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terminals", type=int, default=1000)
    parser.add_argument("--heartbeat", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="tms-bench-commands-"))
    data_dir.chmod(0o755)
    db_port = free_port()
    command = [
        sys.executable,
        "-m",
        "tms",
        "up",
        "--simulate",
        str(args.terminals),
        "--heartbeat",
        str(args.heartbeat),
        "--data-dir",
        str(data_dir),
        "--db-port",
        str(db_port),
        "--broker-port",
        str(free_port()),
        "--console-port",
        str(free_port()),
        "--metrics-port",
        str(free_port()),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMS_")}
    print(f"starting tms up with {args.terminals} simulated terminals", flush=True)
    up = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert up.stdout is not None
        for line in up.stdout:
            if "Press Ctrl-C" in line:
                break
        if up.poll() is not None:
            raise SystemExit("tms up failed")
        url = _database_url(data_dir, db_port)
        took = _wait(
            url,
            "SELECT count(*) FROM terminal WHERE status = 'online'",
            args.terminals,
            args.timeout,
            "all terminals online",
        )
        print(f"all {args.terminals} terminals online after {took:.1f} s", flush=True)
        started = time.monotonic()
        with psycopg.connect(url) as conn:
            queued = len(conn.execute(QUEUE_ALL).fetchall())
        print(f"queued {queued} diagnostics commands in one transaction", flush=True)
        _wait(
            url,
            "SELECT count(*) FROM command WHERE requested_by = 'bench'"
            " AND status NOT IN ('queued', 'sent')",
            queued,
            args.timeout,
            "every result",
        )
        elapsed = time.monotonic() - started
        with psycopg.connect(url) as conn:
            states = dict(
                conn.execute(
                    "SELECT status, count(*) FROM command WHERE requested_by = 'bench'"
                    " GROUP BY status"
                ).fetchall()
            )
            row = conn.execute(FIGURES).fetchone()
            checks = conn.execute(CHECK_TIMES).fetchall()
        assert row is not None
        send50, send99, send_max, rt50, rt99, rt_max = (float(v) for v in row)
        print(f"all {queued} results in after {elapsed:.2f} s; states: {states}")
        print(
            f"queued -> sent:   p50 {send50 * 1000:.0f} ms, p99 {send99 * 1000:.0f} ms, "
            f"max {send_max * 1000:.0f} ms"
        )
        print(
            f"sent -> result:   p50 {rt50 * 1000:.0f} ms, p99 {rt99 * 1000:.0f} ms, "
            f"max {rt_max * 1000:.0f} ms"
        )
        if checks:
            slowest = ", ".join(f"{name} {mean} ms (max {top})" for name, mean, top in checks)
            print(f"slowest checks on the agents (mean): {slowest}")
    finally:
        up.terminate()
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()


if __name__ == "__main__":
    main()
