"""Ingest benchmark: Mosquitto on loopback, publishers in separate processes, real PostgreSQL.

Prints, for one run on this machine:
- the raw rate Mosquitto delivers to one plain subscriber (QoS 1, acked at once);
- the sustained rate committed to PostgreSQL at full load, with zero loss, and its
  ratio to the raw rate (``--ingest-processes`` workers on a shared subscription, as
  ``tms ingest --workers`` runs them; default 2);
- publish-to-commit latency p50/p99 at a steady offered rate (default 10,000 msg/s):
  from the message's scheduled send time (its ``ts``) to its batch's commit;
- disconnect-to-offline-alert p50/p99: terminals whose connection dies (the last will)
  to the offline alert row (``alert.raised_at``).

The load generator is cheap on purpose: every PUBLISH frame is encoded before the
clock starts, and each process writes them on raw sockets (one MQTT connection and
login per terminal, as in the field), reading PUBACKs in bulk.

    .venv/bin/python bench/ingest.py --terminals 1000 --duration 30 --rate 10000
"""

from __future__ import annotations

# ruff: noqa: E402  (imports follow the sys.path fix below, on purpose)
import sys
from pathlib import Path

# This file is named like the package it measures: keep bench/ off the import path so
# that ``import ingest`` finds the package (here and in the spawned processes).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse
import asyncio
import json
import multiprocessing as mp
import secrets
import selectors
import shutil
import socket
import statistics
import struct
import tempfile
import threading
import time
from datetime import UTC, datetime
from typing import Any

import psutil
import psycopg
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

# --- MQTT 3.1.1 frames, encoded by hand (the generator must cost next to nothing) ---


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(raw)) + raw


def connect_frame(
    client_id: str, user: str, password: str, will: tuple[str, bytes] | None
) -> bytes:
    flags = 0x80 | 0x40 | 0x02  # username, password, clean session
    payload = _str(client_id)
    if will is not None:
        flags |= 0x04 | 0x08 | 0x20  # will, will QoS 1, will retain
        payload += _str(will[0]) + _str(will[1])
    payload += _str(user) + _str(password)
    body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", 60) + payload
    return b"\x10" + _varint(len(body)) + body


def publish_frame(topic: str, payload: bytes, packet_id: int, retain: bool = False) -> bytes:
    body = _str(topic) + struct.pack("!H", packet_id) + payload
    return bytes([0x32 | int(retain)]) + _varint(len(body)) + body


def subscribe_frame(topic_filter: str) -> bytes:
    body = struct.pack("!H", 1) + _str(topic_filter) + b"\x01"
    return b"\x82" + _varint(len(body)) + body


def open_session(host: str, port: int, frame: bytes) -> socket.socket:
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(frame)
    connack = sock.recv(4)
    if len(connack) < 4 or connack[3] != 0:
        raise SystemExit(f"broker refused the login: {connack!r}")
    return sock


# --- load generator process ---

FULL_LOAD_RATE = 12_500  # per generator process: 25,000 msg/s offered with two


def heartbeat(phase: str, serial: str, n: int, ts: float, host: str, stream: str) -> bytes:
    """One heartbeat numbered as an agent numbers it: ingest tracks every number."""
    stamp = datetime.fromtimestamp(ts, UTC).isoformat()
    return json.dumps(
        {
            "v": 1,
            "seq": n + 1,
            "stream": stream,
            "id": f"{phase}-{serial}-{n}",
            "ts": stamp,
            "status": "ok",
            "firmware": "3.1.4",
            "terminal": {"cpu": 12.5, "memory": 40.1, "disk": 55.0},
            "host": {"name": host, "cpu": 20.0, "memory": 50.0, "disk": 60.0},
        },
        separators=(",", ":"),
    ).encode()


def generator(
    host: str,
    port: int,
    accounts: list[tuple[str, str]],
    phase: str,
    rate: float | None,
    duration: float,
    start_at: float,
    results: Any,
) -> None:
    """Publish for ``duration`` s from ``start_at`` (wall clock), paced at ``rate`` msg/s in
    total for this process, or as fast as the broker takes them when ``rate`` is None."""
    socks = [open_session(host, port, connect_frame(s, s, pw, None)) for s, pw in accounts]
    # Unpaced: a budget of FULL_LOAD_RATE msg/s for the phase, sent as fast as the
    # broker reads them (sendall blocks when it does not).
    per_terminal = int((rate or FULL_LOAD_RATE) * duration / len(accounts)) + 1
    frames: list[tuple[int, bytes]] = []  # (socket index, frame), in send order
    step = 1.0 / (rate or FULL_LOAD_RATE)
    n_total = per_terminal * len(accounts)
    # A stream per phase, later phases sorting after earlier ones (agent.outbox.new_stream).
    stream = f"{int(start_at * 1000):014x}"
    for i in range(n_total):
        index = i % len(accounts)
        serial = accounts[index][0]
        n = i // len(accounts)
        ts = start_at + i * step
        frames.append(
            (
                index,
                publish_frame(
                    f"tms/v1/{serial}/telemetry",
                    heartbeat(phase, serial, n, ts, f"pc-{serial}", stream),
                    n % 65535 + 1,
                ),
            )
        )
    # Sockets stay blocking for sendall; PUBACKs are read only from the sockets the
    # selector reports readable, at most every 50 ms: a recv on each of 500 sockets
    # every loop cost the generator more CPU than the publishing.
    for sock in socks:
        sock.setblocking(True)
    acked_bytes = 0  # PUBACKs are 4 bytes; a recv may end inside one
    sent = 0
    selector = selectors.DefaultSelector()
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)

    def read_acks(timeout: float) -> int:
        got = 0
        for key, _ in selector.select(timeout=timeout):
            got += len(key.fileobj.recv(1 << 20))  # type: ignore[union-attr]
        return got

    time.sleep(max(0.0, start_at - time.time()))
    t0 = time.time()
    end = t0 + duration
    acks_read_at = t0
    gaps: list[float] = []
    last_tick = t0
    while sent < n_total and time.time() < end:
        due = n_total if rate is None else min(n_total, int((time.time() - t0) * rate) + 1)
        if rate is None:
            due = min(n_total, sent + 2000)
        chunks: dict[int, list[bytes]] = {}
        for index, frame in frames[sent:due]:
            chunks.setdefault(index, []).append(frame)
        for index, parts in chunks.items():
            socks[index].sendall(b"".join(parts))
        sent = due
        if time.time() - acks_read_at >= 0.5:
            acked_bytes += read_acks(0)
            acks_read_at = time.time()
        if rate is not None:
            time.sleep(0.002)
        now = time.time()
        gaps.append(now - last_tick)
        last_tick = now
    elapsed = time.time() - t0
    # Collect the remaining PUBACKs (an acked message is the broker's).
    deadline = time.time() + 60
    while acked_bytes < 4 * sent and time.time() < deadline:
        acked_bytes += read_acks(0.5)
    selector.close()
    for sock in socks:
        sock.close()
    gaps.sort()
    results.put(
        {
            "sent": sent,
            "acked": acked_bytes // 4,
            "elapsed": elapsed,
            "late_start": t0 - start_at,
            "gap_p99": gaps[int(len(gaps) * 0.99)] if gaps else 0.0,
            "gap_max": gaps[-1] if gaps else 0.0,
        }
    )


def run_generators(
    host: str,
    port: int,
    accounts: list[tuple[str, str]],
    processes: int,
    phase: str,
    rate: float | None,
    duration: float,
) -> dict[str, float]:
    results: Any = mp.Queue()
    budget = (rate or FULL_LOAD_RATE * processes) * duration
    # Time to connect and pre-encode (~100k frames/s per process) before the clock starts.
    start_at = time.time() + 3 + len(accounts) / 2000 + budget / processes / 60_000
    procs = [
        mp.Process(
            target=generator,
            args=(
                host,
                port,
                accounts[i::processes],
                phase,
                None if rate is None else rate / processes,
                duration,
                start_at,
                results,
            ),
        )
        for i in range(processes)
    ]
    for proc in procs:
        proc.start()
    reports = [results.get(timeout=duration + 120) for _ in procs]
    for proc in procs:
        proc.join()
    sent = sum(r["sent"] for r in reports)
    elapsed = max(r["elapsed"] for r in reports)
    return {
        "sent": sent,
        "late_start": max(r["late_start"] for r in reports),
        "gap_p99": max(r["gap_p99"] for r in reports),
        "gap_max": max(r["gap_max"] for r in reports),
        "acked": sum(r["acked"] for r in reports),
        "elapsed": elapsed,
        "start_at": start_at,
    }


# --- a raw subscriber: what the broker delivers to one consumer that acks at once ---


def raw_subscriber(
    host: str, port: int, user: str, password: str, seconds: float, out: Any
) -> None:
    sock = open_session(host, port, connect_frame("bench-raw-sub", user, password, None))
    sock.sendall(subscribe_frame("tms/v1/+/telemetry"))
    buffer, count, first, last = b"", 0, 0.0, 0.0
    sock.settimeout(1)
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            continue
        buffer += data
        acks, pos = [], 0
        while True:
            if len(buffer) - pos < 2:
                break
            mult, length, i = 1, 0, pos + 1
            while i < len(buffer) and buffer[i] & 0x80:
                length += (buffer[i] & 0x7F) * mult
                mult *= 128
                i += 1
            if i >= len(buffer):
                break
            length += buffer[i] * mult
            end = i + 1 + length
            if end > len(buffer):
                break
            if buffer[pos] & 0xF0 == 0x30:
                topic_len = struct.unpack_from("!H", buffer, i + 1)[0]
                acks.append(b"\x40\x02" + buffer[i + 3 + topic_len : i + 5 + topic_len])
                count += 1
                last = time.time()
                first = first or last
            pos = end
        buffer = buffer[pos:]
        if acks:
            sock.sendall(b"".join(acks))
    out.put({"received": count, "first": first, "last": last})


# --- ingest in a process of its own, reporting commit latencies per phase ---


PHASES = ("raw", "full", "steady", "amqtt")


def commit_counters() -> dict[str, Any]:
    """Per phase, the telemetry rows every ingest process has committed (shared memory).

    The benchmark waits on these, not on ``count(*)`` over the growing history: that
    query, run every fraction of a second, took a core from the processes measured.
    """
    return {phase: mp.Value("q", 0) for phase in PHASES}


def ingest_process(
    settings: IngestSettings, url: str, stop: Any, ready: Any, out: Any, committed: Any
) -> None:
    from ingest.service import run_ingest, tune_gc

    tune_gc()  # as tms ingest does
    stats: dict[str, list[float]] = {}
    last_commit: dict[str, float] = {}

    def on_commit(batch: Any, _monotonic: float) -> None:
        now = time.time()
        counts: dict[str, int] = {}
        for record in batch.history:
            phase = record.message_id.split("-", 1)[0]
            stats.setdefault(phase, []).append(now - record.ts.timestamp())
            last_commit[phase] = now
            counts[phase] = counts.get(phase, 0) + 1
        for phase, n in counts.items():
            with committed[phase].get_lock():
                committed[phase].value += n

    async def main() -> None:
        stopping = asyncio.Event()
        started = asyncio.Event()

        async def watch() -> None:
            await started.wait()
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.1)
            stopping.set()

        watcher = asyncio.create_task(watch())
        await run_ingest(
            settings, url, stopping, started, on_commit=on_commit, alert_settings=AlertSettings()
        )
        watcher.cancel()

    asyncio.run(main())
    out.put({"latency": stats, "last_commit": last_commit})


def start_ingest(
    settings: IngestSettings, url: str, stop: Any, results: Any, committed: dict[str, Any]
) -> list[Any]:
    """``settings.workers`` ingest processes, as ``tms ingest --workers`` runs them."""
    from ingest.workers import worker_settings

    processes = []
    for index in range(settings.workers):
        ready = mp.Event()
        process = mp.Process(
            target=ingest_process,
            args=(worker_settings(settings, index), url, stop, ready, results, committed),
        )
        process.start()
        assert ready.wait(60), f"ingest worker {index} did not start"
        processes.append(process)
    return processes


def wait_settled(url: str, phase: str, quiet_s: float = 5.0, timeout: float = 300) -> int:
    """Rows of the phase once the count has not moved for ``quiet_s`` seconds."""
    count, changed = db_count(url, phase), time.time()
    deadline = time.time() + timeout
    while time.time() - changed < quiet_s and time.time() < deadline:
        time.sleep(0.5)
        if (now := db_count(url, phase)) != count:
            count, changed = now, time.time()
    return count


def amqtt_phase(
    url: str, load: list[tuple[str, str]], ingest_secret: str, settings: IngestSettings, args: Any
) -> None:
    """The same ingest against the embedded amqtt broker, at a rate amqtt can take.

    amqtt 0.12.1 may lose acknowledged messages (MEASURED.md), so this waits for the
    count to settle instead of for every acknowledged message, and reports the loss.
    """
    root = Path(tempfile.mkdtemp(prefix="tms-bench-amqtt-"))
    root.chmod(0o755)
    broker = BrokerSettings(kind="amqtt", host="127.0.0.1", port=free_port())
    stop_broker, ready = threading.Event(), threading.Event()
    threading.Thread(
        target=run_broker_service,
        args=(broker, url, root / "broker", stop_broker, ready, SyncTracker()),
        daemon=True,
    ).start()
    try:
        assert ready.wait(60), "the amqtt broker did not start"
        mqtt = settings.mqtt.model_copy(update={"port": broker.port})
        amqtt_settings = settings.model_copy(update={"mqtt": mqtt, "client_id": "tms-ingest-amqtt"})
        # amqtt 0.12.1 has no shared subscriptions: one ingest process.
        amqtt_settings = amqtt_settings.model_copy(update={"workers": 1})
        stop, results = mp.Event(), mp.Queue()
        (ingest,) = start_ingest(amqtt_settings, url, stop, results, commit_counters())
        duration = max(10.0, args.duration / 2)
        gen = run_generators(
            broker.host, broker.port, load, args.processes, "amqtt", args.amqtt_rate, duration
        )
        rows = wait_settled(url, "amqtt")
        stop.set()
        # The time ingest committed the phase's last row, not when the count was read.
        last = results.get(timeout=60)["last_commit"].get("amqtt", gen["start_at"])
        ingest.join(30)
        print(
            f"amqtt 0.12.1, offered {gen['sent'] / gen['elapsed']:,.0f} msg/s for {duration:g} s:"
            f" {rows / max(last - gen['start_at'], 1e-9):,.0f} msg/s committed"
            f" ({rows:,} rows of {gen['acked']:,} acked publishes,"
            f" {gen['acked'] - rows:,} lost by the broker)"
        )
    finally:
        stop_broker.set()
        time.sleep(1)
        shutil.rmtree(root, ignore_errors=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def db_count(url: str, phase: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM telemetry WHERE message_id LIKE %s", (phase + "-%",)
        ).fetchone()
    return int(row[0]) if row else 0


def numbering(url: str) -> str:
    """What ingest's tracking of the heartbeats' numbers found (every one is numbered)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE seq_high IS NOT NULL), sum(seq_high),"
            " sum(seq_gaps_found), sum(seq_missing), sum(seq_recovered),"
            " (SELECT count(*) FROM seq_gap) FROM terminal"
        ).fetchone()
    assert row is not None
    tracked, high, gaps, missing, recovered, still_open = row
    return (
        f"message numbers: {tracked} terminals tracked up to {high or 0:,} in all;"
        f" gaps found {gaps or 0} ({missing or 0} numbers, {recovered or 0} came back),"
        f" {still_open} open"
    )


def wait_committed(
    url: str, phase: str, expected: int, timeout: float, committed: dict[str, Any]
) -> float:
    """Until ``expected`` rows of the phase are committed; returns the wall time they were.

    The ingest processes' counters say when; PostgreSQL, asked once at the end, says
    that every acknowledged message is there.
    """
    deadline = time.time() + timeout
    while committed[phase].value < expected:
        if time.time() > deadline:
            break
        time.sleep(0.02)
    done = time.time()
    while (n := db_count(url, phase)) < expected:
        if time.time() > deadline:
            raise SystemExit(f"{phase}: only {n} of {expected} acknowledged messages committed")
        time.sleep(1)
        done = time.time()
    return done


# --- disconnect-to-offline-alert ---


def offline_alerts(host: str, port: int, url: str, accounts: list[tuple[str, str]]) -> list[float]:
    """Connect terminals with a last will, drop their connections in waves, time the alerts."""
    socks = {}
    for serial, password in accounts:
        will = (
            f"tms/v1/{serial}/status",
            b'{"v":1,"state":"offline","reason":"agent disconnected"}',
        )
        sock = open_session(host, port, connect_frame(serial, serial, password, will))
        sock.sendall(publish_frame(f"tms/v1/{serial}/status", b'{"v":1,"state":"online"}', 1, True))
        socks[serial] = sock
    time.sleep(3)  # online everywhere
    killed: dict[str, float] = {}
    for index, (serial, sock) in enumerate(socks.items()):
        # RST, not FIN: what a crashed agent or a dead PC looks like to the broker.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        killed[serial] = time.time()
        if index % 10 == 9:
            time.sleep(0.5)
    time.sleep(5)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT t.serial, a.raised_at FROM alert a JOIN terminal t ON t.id = a.terminal_id"
            " WHERE a.kind = 'offline' AND t.serial = ANY(%s)",
            (list(killed),),
        ).fetchall()
    if len(rows) < len(killed):
        print(f"  WARNING: {len(killed) - len(rows)} terminals got no offline alert")
    return [raised.timestamp() - killed[serial] for serial, raised in rows]


# --- the machine under the run ---


class MachineClock:
    """CPU the whole machine spent, and what the hypervisor took, over one phase.

    On a shared VM the host can take ("steal") a third of both cores for seconds at a
    time; a latency figure means little without the CPU the machine really had.
    """

    def __init__(self) -> None:
        self._start = psutil.cpu_times()

    def report(self) -> str:
        end = psutil.cpu_times()
        spent = {field: getattr(end, field) - getattr(self._start, field) for field in end._fields}
        total = sum(spent.values()) - spent.get("guest", 0) - spent.get("guest_nice", 0)
        idle = spent["idle"] + spent.get("iowait", 0)
        busy = (total - idle) / total * 100 if total else 0.0
        return f"machine {busy:.0f}% busy, {spent.get('steal', 0.0):.1f} CPU-s stolen by the host"


# --- the run ---


def provision(url: str, count: int) -> tuple[list[tuple[str, str]], str]:
    engine = make_engine(url, pool_size=1)
    with Session(engine) as session:
        accounts = [
            (f"B{n:05d}", provisioning.provision_terminal(session, f"B{n:05d}", "Bench"))
            for n in range(count)
        ]
        ingest_secret = provisioning.ensure_service_account(
            session, AccountKind.INGEST, "tms-ingest"
        )
        session.commit()
    engine.dispose()
    return accounts, ingest_secret


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terminals", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument("--duration", type=float, default=30, help="seconds per phase")
    parser.add_argument("--rate", type=float, default=10_000, help="offered msg/s, latency phase")
    parser.add_argument("--alert-terminals", type=int, default=200)
    parser.add_argument("--amqtt-rate", type=float, default=2000, help="offered msg/s, amqtt phase")
    parser.add_argument(
        "--ingest-processes",
        type=int,
        default=2,
        help="ingest workers on one shared subscription (tms ingest --workers)",
    )
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="tms-bench-ingest-"))
    root.chmod(0o755)
    pg = EmbeddedPostgres(root / "pg", free_port(), secrets.token_urlsafe(16))
    pg.start()
    stop_broker = threading.Event()
    try:
        url = pg.url
        schema.upgrade(url)
        total_accounts = args.terminals + args.alert_terminals
        accounts, ingest_secret = provision(url, total_accounts)
        load, alerting = accounts[: args.terminals], accounts[args.terminals :]
        broker = BrokerSettings(host="127.0.0.1", port=free_port())
        ready = threading.Event()
        threading.Thread(
            target=run_broker_service,
            args=(broker, url, root / "broker", stop_broker, ready, SyncTracker()),
            daemon=True,
        ).start()
        assert ready.wait(60), "the broker did not start"
        host, port = broker.host, broker.port
        print(
            f"terminals={args.terminals} generator processes={args.processes}"
            f" ingest processes={args.ingest_processes}"
            f" phase={args.duration:g}s  (Mosquitto, PostgreSQL 15, loopback)"
        )

        # 1. Raw: what the broker delivers to one subscriber that acknowledges at once.
        out: Any = mp.Queue()
        sub = mp.Process(
            target=raw_subscriber,
            args=(host, port, "tms-ingest", ingest_secret, args.duration + 15, out),
        )
        sub.start()
        time.sleep(1)
        gen = run_generators(host, port, load, args.processes, "raw", None, args.duration)
        raw = out.get(timeout=args.duration + 60)
        sub.join()
        raw_rate = raw["received"] / max(raw["last"] - raw["first"], 1e-9)
        print(
            f"raw broker -> 1 subscriber: {raw_rate:,.0f} msg/s delivered"
            f" ({raw['received']:,} of {gen['acked']:,} acked publishes;"
            f" publishers offered {gen['sent'] / gen['elapsed']:,.0f} msg/s)"
        )

        # 2. Ingest in its own process.
        settings = IngestSettings(
            mqtt=MqttClientSettings(
                host=host, port=port, username="tms-ingest", password=ingest_secret
            ),  # type: ignore[arg-type]
            client_id="tms-ingest-bench",
            metrics_port=0,
            workers=args.ingest_processes,
        )
        stop, results = mp.Event(), mp.Queue()
        committed = commit_counters()
        ingests = start_ingest(settings, url, stop, results, committed)

        # 3. Full load: sustained committed rate, zero loss.
        clock = MachineClock()
        gen = run_generators(host, port, load, args.processes, "full", None, args.duration)
        done = wait_committed(url, "full", gen["acked"], 600, committed)
        rows = db_count(url, "full")
        sustained = rows / (done - gen["start_at"])
        print(
            f"ingest, full load: {sustained:,.0f} msg/s committed, sustained"
            f" ({rows:,} rows = {gen['acked']:,} acked publishes, lost 0;"
            f" offered {gen['sent'] / gen['elapsed']:,.0f} msg/s; {clock.report()})"
        )
        print(f"ratio ingest / raw broker delivery: {sustained / raw_rate:.2f}")

        # 4. Steady offered rate: latency.
        clock = MachineClock()
        gen = run_generators(host, port, load, args.processes, "steady", args.rate, args.duration)
        wait_committed(url, "steady", gen["acked"], 600, committed)
        steady_machine = clock.report()
        print(
            f"ingest, offered {gen['sent'] / gen['elapsed']:,.0f} msg/s for {args.duration:g} s:"
            f" {db_count(url, 'steady'):,} committed of {gen['acked']:,} acked"
            f" (publishers on time: started {gen['late_start'] * 1000:.0f} ms late,"
            f" longest pause between sends {gen['gap_max'] * 1000:.0f} ms; {steady_machine})"
        )

        # 5. Disconnect to offline alert.
        delays = offline_alerts(host, port, url, alerting)
        stop.set()
        reports = [results.get(timeout=60) for _ in ingests]
        for ingest in ingests:
            ingest.join(30)
        latency = [x for report in reports for x in report["latency"].get("steady", [])]
        if latency:
            print(
                "publish-to-commit latency at that rate:"
                f" p50 {percentile(latency, 0.5) * 1000:.0f} ms,"
                f" p99 {percentile(latency, 0.99) * 1000:.0f} ms,"
                f" max {max(latency) * 1000:.0f} ms"
            )
        if delays:
            print(
                f"disconnect -> offline alert ({len(delays)} terminals, waves of 10 per 0.5 s):"
                f" p50 {statistics.median(delays) * 1000:.0f} ms,"
                f" p99 {percentile(delays, 0.99) * 1000:.0f} ms"
            )
        print(numbering(url))
        amqtt_phase(url, load, ingest_secret, settings, args)
    finally:
        stop_broker.set()
        time.sleep(1)
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
