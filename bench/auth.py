"""Authentication benchmark: a burst of N terminal logins against each real broker.

Provisions N terminals in a private PostgreSQL, starts `tms broker` (Mosquitto, then
amqtt) on a loopback port, and opens N MQTT connections as fast as the broker takes
them (bounded concurrency), each a CONNECT with its own username and secret. Prints
connects/s, the broker's CPU seconds over the burst, and the CPU one login's hash
check costs (SHA-512, as both brokers do it). Loopback only; bounded in count and time.

    .venv/bin/python bench/auth.py --terminals 10000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import psycopg

from shared import schema
from shared.credentials import generate_secret, hash_secret, verify_secret
from shared.ports import free_port
from tms.postgres import EmbeddedPostgres

CONCURRENCY = 500
BURST_TIMEOUT_S = 300.0


def _field(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def connect_packet(username: str, password: str) -> bytes:
    flags = 0x80 | 0x40 | 0x02  # username, password, clean session
    body = _field(b"MQTT") + bytes([4, flags]) + struct.pack("!H", 300)
    body += _field(username.encode()) + _field(username.encode()) + _field(password.encode())
    length = len(body)
    encoded = bytearray()
    while True:
        byte, length = length % 128, length // 128
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            break
    return b"\x10" + bytes(encoded) + body


def provision(url: str, count: int) -> list[tuple[str, str]]:
    """N terminals with fresh secrets, written with plain SQL (much faster than the ORM)."""
    logins = [(f"BENCH{i:06d}", generate_secret()) for i in range(count)]
    with psycopg.connect(url) as conn:
        customer = conn.execute(
            "INSERT INTO customer (name) VALUES ('Bench') RETURNING id"
        ).fetchone()
        assert customer is not None
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO terminal (serial, customer_id, model, status) "
                "VALUES (%s, %s, 'TC-200', 'unknown')",
                [(serial, customer[0]) for serial, _ in logins],
            )
            rows = []
            for serial, secret in logins:
                stored = hash_secret(secret)
                rows.append((serial, stored.salt, stored.secret_hash, serial))
            cur.executemany(
                "INSERT INTO credential (username, kind, salt, secret_hash, terminal_id) "
                "SELECT %s, 'terminal', %s, %s, id FROM terminal WHERE serial = %s",
                rows,
            )
    return logins


async def burst(port: int, logins: list[tuple[str, str]]) -> tuple[float, int, list]:
    """Connect everyone; returns (seconds, accepted, open writers)."""
    limit = asyncio.Semaphore(CONCURRENCY)
    writers: list[asyncio.StreamWriter] = []
    accepted = 0

    async def one(username: str, password: str) -> None:
        nonlocal accepted
        async with limit:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(connect_packet(username, password))
            await writer.drain()
            connack = await reader.readexactly(4)
            writers.append(writer)
            if connack == b"\x20\x02\x00\x00":
                accepted += 1

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(one(u, p) for u, p in logins)), timeout=BURST_TIMEOUT_S)
    return time.perf_counter() - started, accepted, writers


def _cpu(process: psutil.Process) -> float:
    total = 0.0
    for proc in [process, *process.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def _wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the broker exited with code {process.returncode}")
        try:
            with __import__("socket").create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the broker did not listen in time")


def run_kind(kind: str, url: str, logins: list[tuple[str, str]], work: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "TMS_DATABASE_URL": url,
        "TMS_BROKER_KIND": kind,
        "TMS_LOG_LEVEL": "WARNING",
    }
    data_dir = work / kind
    data_dir.mkdir()
    data_dir.chmod(0o755)
    command = [
        sys.executable,
        "-m",
        "tms",
        "broker",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_port(port, process)
        time.sleep(1.0)  # let start-up work finish before measuring
        broker = psutil.Process(process.pid)
        cpu_before = _cpu(broker)

        async def measure() -> tuple[float, int]:
            seconds, accepted, writers = await burst(port, logins)
            for writer in writers:
                writer.close()
            return seconds, accepted

        seconds, accepted = asyncio.run(measure())
        cpu = _cpu(broker) - cpu_before
        print(
            f"{kind:<10} {accepted}/{len(logins)} logins accepted in {seconds:.2f} s: "
            f"{accepted / seconds:,.0f} connects/s; broker CPU {cpu:.2f} s "
            f"({cpu / max(accepted, 1) * 1e6:.0f} us per login, everything included)"
        )
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def hash_cost(logins: list[tuple[str, str]]) -> None:
    stored = [hash_secret(secret) for _, secret in logins]
    started = time.process_time()
    for (_, secret), entry in zip(logins, stored, strict=True):
        assert verify_secret(secret, entry)
    cpu = time.process_time() - started
    print(
        f"hash check: {len(logins)} SHA-512 verifications cost {cpu * 1000:.0f} ms CPU "
        f"({cpu / len(logins) * 1e6:.1f} us each): the authentication itself"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terminals", type=int, default=10_000)
    parser.add_argument("--kinds", default="mosquitto,amqtt")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.terminals + 1000:
        raise SystemExit(f"open-file limit {hard} is too low for {args.terminals} connections")
    work = Path(tempfile.mkdtemp(prefix="tms-bench-auth-"))
    work.chmod(0o755)
    server = EmbeddedPostgres(work / "pg", free_port(), secrets.token_urlsafe(16))
    server.start()
    try:
        schema.upgrade(server.url)
        started = time.monotonic()
        logins = provision(server.url, args.terminals)
        print(f"provisioned {len(logins)} terminals in {time.monotonic() - started:.1f} s")
        hash_cost(logins)
        for kind in args.kinds.split(","):
            run_kind(kind, server.url, logins, work)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
