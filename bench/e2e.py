"""End-to-end benchmark: `tms up` with N simulated terminals, measured at PostgreSQL.

Prints the telemetry rate committed to PostgreSQL, publish-to-commit latency p50/p99
(the agent's reading timestamp to the writing transaction's time), and the peak
memory of each part. Loopback only; bounded by --duration.

    .venv/bin/python bench/e2e.py --terminals 1000 --rate 1000 --duration 60
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import psycopg

from shared.ports import free_port


def _database_url(data_dir: Path, port: int) -> str:
    password = json.loads((data_dir / "secrets.json").read_text())["database_password"]
    return f"postgresql://tms:{password}@127.0.0.1:{port}/tms"


def _wait_online(url: str, terminals: int, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            with psycopg.connect(url) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM terminal WHERE status = 'online'"
                ).fetchone()
                if row and row[0] >= terminals:
                    return time.monotonic() - start
        except psycopg.Error:
            pass
        time.sleep(1)
    raise SystemExit(f"not all {terminals} terminals came online within {timeout:.0f} s")


def _sample_memory(root: psutil.Process, peaks: dict[str, int]) -> None:
    for proc in [root, *root.children(recursive=True)]:
        try:
            cmd = proc.cmdline()
            name = next((a for a in cmd if a in {"broker", "ingest", "console", "simulate"}), None)
            name = name or (
                "mosquitto"
                if "mosquitto" in " ".join(cmd[:1])
                else "postgres"
                if "postgres" in " ".join(cmd[:1])
                else "up"
            )
            peaks[name] = max(peaks.get(name, 0), proc.memory_info().rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terminals", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=1000.0, help="fleet total messages/s")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=10.0)
    args = parser.parse_args()

    heartbeat = args.terminals / args.rate
    data_dir = Path(tempfile.mkdtemp(prefix="tms-bench-"))
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
        str(heartbeat),
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
    print(
        f"starting: {args.terminals} terminals, heartbeat {heartbeat:.3f} s "
        f"(offered {args.rate:.0f} msg/s)",
        flush=True,
    )
    up = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peaks: dict[str, int] = {}
    try:
        assert up.stdout is not None
        for line in up.stdout:
            if "Press Ctrl-C" in line:
                break
            if up.poll() is not None:
                raise SystemExit("tms up failed:\n" + line)
        url = _database_url(data_dir, db_port)
        took = _wait_online(url, args.terminals, timeout=120)
        print(
            f"all terminals online after {took:.1f} s; warming up {args.warmup:.0f} s", flush=True
        )
        time.sleep(args.warmup)
        root = psutil.Process(up.pid)
        with psycopg.connect(url, autocommit=True) as conn:
            (t0,) = conn.execute("SELECT clock_timestamp()").fetchone()  # type: ignore[misc]
            end = time.monotonic() + args.duration
            while time.monotonic() < end:
                _sample_memory(root, peaks)
                time.sleep(1)
            (t1,) = conn.execute("SELECT clock_timestamp()").fetchone()  # type: ignore[misc]
            # Let the last batch land before counting what was received in the window.
            time.sleep(2)
            row = conn.execute(
                """
                WITH lag AS (
                    SELECT extract(epoch FROM received_at - ts) AS s FROM telemetry
                    WHERE received_at >= %s AND received_at < %s
                )
                SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY s),
                       percentile_cont(0.99) WITHIN GROUP (ORDER BY s), max(s)
                FROM lag
                """,
                (t0, t1),
            ).fetchone()
            dead = conn.execute("SELECT count(*) FROM dead_letter").fetchone()
        assert row is not None and dead is not None
        count, p50, p99, worst = row
        seconds = (t1 - t0).total_seconds()
        print()
        print(f"terminals            {args.terminals}")
        print(f"offered rate         {args.rate:.0f} msg/s")
        print(f"committed rate       {count / seconds:.0f} msg/s ({count} rows in {seconds:.1f} s)")
        print(
            f"latency p50 / p99    {1000 * (p50 or 0):.0f} ms / {1000 * (p99 or 0):.0f} ms"
            f" (max {1000 * (worst or 0):.0f} ms)"
        )
        print(f"dead letters         {dead[0]}")
        for name, rss in sorted(peaks.items()):
            print(f"peak RSS {name:<11} {rss / 2**20:.0f} MiB")
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()


if __name__ == "__main__":
    main()
