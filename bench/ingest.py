"""Ingest benchmark: Mosquitto on loopback, publishers in separate processes, real PostgreSQL.

Prints, for one run on this machine:
- the raw rate Mosquitto delivers to one plain subscriber (QoS 1, acked at once);
- a table with one full-load phase per ingest worker count (``--workers 1,2,3``; by
  default the one count of ``--ingest-processes``, 2): workers on one shared
  subscription, as ``tms ingest --workers`` runs them. Each row: the sustained rate
  committed to PostgreSQL, its ratio to the raw rate, published (acknowledged) against
  committed, rows written twice (rows against distinct message ids), messages that
  went through a commit twice (redelivered), and each worker's share. Every count
  starts afresh: new ingest processes under client ids of their own, the history
  table emptied; their broker sessions are removed after it, so that no offline
  member of the shared group holds back a share of the next count's messages;
- publish-to-commit latency p50/p99 at a steady offered rate (default 10,000 msg/s),
  with ``--ingest-processes`` workers: from the message's scheduled send time (its
  ``ts``) to its batch's commit;
- disconnect-to-offline-alert p50/p99: terminals whose connection dies (the last will)
  to the offline alert row (``alert.raised_at``);
- the same ingest against the embedded amqtt broker.

``--only throughput`` stops after the full-load table (no latency, alert or amqtt
phase).

The load generator is cheap on purpose: every PUBLISH frame is encoded before the
clock starts, and each process writes them on raw sockets (one MQTT connection and
login per terminal, as in the field), reading PUBACKs in bulk.

    .venv/bin/python bench/ingest.py --terminals 1000 --duration 30 --rate 10000
    .venv/bin/python bench/ingest.py --terminals 1000 --duration 30 --workers 1,2,3 \
        --only throughput
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
from dataclasses import dataclass
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


PHASES = ("raw", "steady", "amqtt")  # and full<N>, one full-load phase per worker count


def full_phase(workers: int) -> str:
    """The full-load phase of ``workers`` workers: its message ids start ``full<N>-``."""
    return f"full{workers}"


def commit_counters(worker_counts: list[int]) -> dict[str, Any]:
    """Per phase, the telemetry rows every ingest process has committed (shared memory).

    The benchmark waits on these, not on ``count(*)`` over the growing history: that
    query, run every fraction of a second, took a core from the processes measured.
    They are made before any ingest process starts, which inherits them.
    """
    phases = [*PHASES, *(full_phase(n) for n in worker_counts)]
    return {phase: mp.Value("q", 0) for phase in phases}


def ingest_process(
    settings: IngestSettings, url: str, stop: Any, ready: Any, out: Any, committed: Any
) -> None:
    from ingest.service import run_ingest, tune_gc

    tune_gc()  # as tms ingest does
    stats: dict[str, list[float]] = {}  # latencies of the steady phase, the one that uses them
    last_commit: dict[str, float] = {}
    own: dict[str, int] = {}  # this worker's commits per phase: its share

    def on_commit(batch: Any, _monotonic: float) -> None:
        now = time.time()
        counts: dict[str, int] = {}
        for record in batch.history:
            phase = record.message_id.split("-", 1)[0]
            if phase == "steady":
                stats.setdefault(phase, []).append(now - record.ts.timestamp())
            last_commit[phase] = now
            counts[phase] = counts.get(phase, 0) + 1
        for phase, n in counts.items():
            own[phase] = own.get(phase, 0) + n
            if phase in committed:
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
    out.put(
        {
            "client_id": settings.client_id,
            "latency": stats,
            "last_commit": last_commit,
            "committed": own,
        }
    )


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
        stop = mp.Event()
        results: Any = mp.Queue()
        (ingest,) = start_ingest(amqtt_settings, url, stop, results, commit_counters([]))
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
    that every acknowledged message is there. After ``timeout`` it gives up: the
    caller counts the rows and reports what is missing.
    """
    deadline = time.time() + timeout
    while committed[phase].value < expected:
        if time.time() > deadline:
            break
        time.sleep(0.02)
    done = time.time()
    while db_count(url, phase) < expected and time.time() < deadline:
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

    def usage(self) -> tuple[float, float]:
        """(% of the machine busy, CPU-seconds stolen by the host) since construction."""
        end = psutil.cpu_times()
        spent = {field: getattr(end, field) - getattr(self._start, field) for field in end._fields}
        total = sum(spent.values()) - spent.get("guest", 0) - spent.get("guest_nice", 0)
        idle = spent["idle"] + spent.get("iowait", 0)
        busy = (total - idle) / total * 100 if total else 0.0
        return busy, spent.get("steal", 0.0)

    def report(self) -> str:
        busy, stolen = self.usage()
        return f"machine {busy:.0f}% busy, {stolen:.1f} CPU-s stolen by the host"


# --- full load, once per worker count ---


@dataclass(frozen=True)
class Rig:
    """What every phase runs against: the broker, the database, the terminals that publish."""

    host: str
    port: int
    url: str
    ingest_secret: str
    load: list[tuple[str, str]]


@dataclass(frozen=True)
class FullLoad:
    """One full-load phase: what was published, what PostgreSQL holds, who wrote it."""

    workers: int
    committed_rate: float  # msg/s, from the first publish to the last acknowledged one committed
    published: int  # publishes the broker acknowledged
    rows: int
    distinct_ids: int
    handled: int  # messages through a commit, counting a redelivered one each time
    shares: tuple[int, ...]  # each worker's commits, in worker order
    offered_rate: float
    busy_pct: float
    stolen_s: float

    @property
    def lost(self) -> int:
        return max(0, self.published - self.distinct_ids)

    @property
    def written_twice(self) -> int:
        return self.rows - self.distinct_ids

    @property
    def redelivered(self) -> int:
        # The unique (message_id, ts) keeps one row; this says the broker sent it again.
        return self.handled - self.distinct_ids

    @property
    def sound(self) -> bool:
        """Nothing lost, nothing written twice, and every worker took a share."""
        return self.lost == 0 and self.written_twice == 0 and all(self.shares)


def reset_history(url: str) -> None:
    """An empty history and a vacuumed terminal table, flushed to disk.

    Each measured phase then starts on the same database, not on the rows, dead tuples
    and pending checkpoint of the phases before it (so a later worker count is not
    slower for coming later).
    """
    with psycopg.connect(url, autocommit=True) as conn:  # VACUUM runs outside a transaction
        conn.execute("TRUNCATE telemetry")
        conn.execute("VACUUM (ANALYZE) terminal")
        conn.execute("CHECKPOINT")


def db_rows(url: str, phase: str) -> tuple[int, int]:
    """The phase's rows and its distinct message ids."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT message_id) FROM telemetry WHERE message_id LIKE %s",
            (phase + "-%",),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


DISCONNECT = b"\xe0\x00"


def remove_sessions(rig: Rig, client_ids: list[str]) -> None:
    """Drop the workers' persistent sessions at the broker, and their records.

    Mosquitto keeps routing a share of the messages to an offline member of a shared
    group: left in place, these sessions would hold back part of the next phase's.
    """
    for client_id in client_ids:
        # A clean-session login discards the stored session; DISCONNECT ends this one.
        frame = connect_frame(client_id, "tms-ingest", rig.ingest_secret, None)
        sock = open_session(rig.host, rig.port, frame)
        sock.sendall(DISCONNECT)
        sock.close()
    with psycopg.connect(rig.url) as conn:
        conn.execute("DELETE FROM ingest_session WHERE client_id = ANY(%s)", (client_ids,))


def full_load(
    rig: Rig, settings: IngestSettings, workers: int, args: Any, committed: dict[str, Any]
) -> FullLoad:
    """Publish as fast as the broker takes it to ``workers`` new ingest processes."""
    from ingest.workers import worker_settings

    phase = full_phase(workers)
    # Client ids of this count's own: no session of another count is resumed or retired.
    settings = settings.model_copy(
        update={"workers": workers, "client_id": f"{settings.client_id}-w{workers}"}
    )
    client_ids = [worker_settings(settings, index).client_id for index in range(workers)]
    reset_history(rig.url)
    stop = mp.Event()
    results: Any = mp.Queue()
    ingests = start_ingest(settings, rig.url, stop, results, committed)
    clock = MachineClock()
    gen = run_generators(rig.host, rig.port, rig.load, args.processes, phase, None, args.duration)
    done = wait_committed(rig.url, phase, int(gen["acked"]), 600, committed)
    busy, stolen = clock.usage()
    stop.set()  # each worker commits what it still holds, then reports
    reports = {r["client_id"]: r for r in (results.get(timeout=60) for _ in ingests)}
    for ingest in ingests:
        ingest.join(30)
    rows, distinct = db_rows(rig.url, phase)
    remove_sessions(rig, client_ids)
    return FullLoad(
        workers=workers,
        committed_rate=distinct / max(done - gen["start_at"], 1e-9),
        published=int(gen["acked"]),
        rows=rows,
        distinct_ids=distinct,
        handled=committed[phase].value,
        shares=tuple(
            reports[c]["committed"].get(phase, 0) if c in reports else 0 for c in client_ids
        ),
        offered_rate=gen["sent"] / gen["elapsed"],
        busy_pct=busy,
        stolen_s=stolen,
    )


FULL_LOAD_HEADER = (
    "workers",
    "committed/s",
    "x raw",
    "published",
    "rows",
    "lost",
    "twice",
    "redelivered",
    "shares %",
    "offered/s",
    "busy",
    "stolen s",
)


def full_load_table(phases: list[FullLoad], raw_rate: float) -> list[str]:
    """The full-load phases as right-aligned text lines, the header first (pure)."""
    body = [
        (
            str(p.workers),
            f"{p.committed_rate:,.0f}",
            f"{p.committed_rate / raw_rate:.2f}" if raw_rate else "-",
            f"{p.published:,}",
            f"{p.rows:,}",
            f"{p.lost:,}",
            f"{p.written_twice:,}",
            f"{p.redelivered:,}",
            "/".join(f"{100 * share / max(sum(p.shares), 1):.0f}" for share in p.shares),
            f"{p.offered_rate:,.0f}",
            f"{p.busy_pct:.0f}%",
            f"{p.stolen_s:.1f}",
        )
        for p in phases
    ]
    rows = [FULL_LOAD_HEADER, *body]
    widths = [max(len(row[i]) for row in rows) for i in range(len(FULL_LOAD_HEADER))]
    return ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]


def print_full_load(phases: list[FullLoad], raw_rate: float) -> None:
    print("ingest at full load, one shared subscription (a new start for each worker count):")
    for line in full_load_table(phases, raw_rate):
        print("  " + line)
    print(
        "  (published: acknowledged publishes; twice: rows minus distinct message ids;"
        " redelivered: messages the broker sent again, one row kept; busy, stolen s: the"
        " machine, the CPU-seconds its host took)"
    )
    unsound = [p.workers for p in phases if not p.sound]
    if unsound:
        print(f"  FAILED for {unsound} workers: a loss, a row written twice, or an idle worker")
    else:
        print("  every count: 0 lost, nothing written twice, every worker took a share")


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


def raw_phase(rig: Rig, args: Any) -> float:
    """What the broker delivers to one subscriber that acknowledges at once (msg/s)."""
    out: Any = mp.Queue()
    sub = mp.Process(
        target=raw_subscriber,
        args=(rig.host, rig.port, "tms-ingest", rig.ingest_secret, args.duration + 15, out),
    )
    sub.start()
    time.sleep(1)
    gen = run_generators(rig.host, rig.port, rig.load, args.processes, "raw", None, args.duration)
    raw = out.get(timeout=args.duration + 60)
    sub.join()
    raw_rate: float = raw["received"] / max(raw["last"] - raw["first"], 1e-9)
    print(
        f"raw broker -> 1 subscriber: {raw_rate:,.0f} msg/s delivered"
        f" ({raw['received']:,} of {gen['acked']:,} acked publishes;"
        f" publishers offered {gen['sent'] / gen['elapsed']:,.0f} msg/s)"
    )
    return raw_rate


def latency_and_alerts(
    rig: Rig,
    settings: IngestSettings,
    alerting: list[tuple[str, str]],
    args: Any,
    committed: dict[str, Any],
) -> None:
    """Steady offered rate (publish-to-commit latency), then disconnects (offline alerts)."""
    reset_history(rig.url)
    stop = mp.Event()
    results: Any = mp.Queue()
    ingests = start_ingest(settings, rig.url, stop, results, committed)
    clock = MachineClock()
    gen = run_generators(
        rig.host, rig.port, rig.load, args.processes, "steady", args.rate, args.duration
    )
    wait_committed(rig.url, "steady", int(gen["acked"]), 600, committed)
    steady_machine = clock.report()
    print(
        f"ingest ({settings.workers} workers), offered {gen['sent'] / gen['elapsed']:,.0f} msg/s"
        f" for {args.duration:g} s: {db_count(rig.url, 'steady'):,} committed of"
        f" {gen['acked']:,} acked (publishers on time: started {gen['late_start'] * 1000:.0f} ms"
        f" late, longest pause between sends {gen['gap_max'] * 1000:.0f} ms; {steady_machine})"
    )
    delays = offline_alerts(rig.host, rig.port, rig.url, alerting)
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


def worker_counts(text: str) -> list[int]:
    """``1,2,3`` -> [1, 2, 3], the value of ``--workers``."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of counts: {text!r}") from exc
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"worker counts are 1 or more: {text!r}")
    return counts


def parse_args() -> argparse.Namespace:
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
        help="ingest workers on one shared subscription (tms ingest --workers), for the"
        " latency phase, and for the full-load phase unless --workers is given",
    )
    parser.add_argument(
        "--workers",
        type=worker_counts,
        default=None,
        metavar="LIST",
        help="worker counts, comma-separated (1,2,3): one full-load phase for each",
    )
    parser.add_argument(
        "--only",
        choices=["throughput"],
        default=None,
        help="throughput: the raw and full-load phases alone (no latency, alert, amqtt phase)",
    )
    args = parser.parse_args()
    if args.workers is None:
        args.workers = [args.ingest_processes]
    return args


def main() -> None:
    args = parse_args()
    throughput_only = args.only == "throughput"
    root = Path(tempfile.mkdtemp(prefix="tms-bench-ingest-"))
    root.chmod(0o755)
    pg = EmbeddedPostgres(root / "pg", free_port(), secrets.token_urlsafe(16))
    pg.start()
    stop_broker = threading.Event()
    try:
        url = pg.url
        schema.upgrade(url)
        alert_terminals = 0 if throughput_only else args.alert_terminals
        accounts, ingest_secret = provision(url, args.terminals + alert_terminals)
        load, alerting = accounts[: args.terminals], accounts[args.terminals :]
        broker = BrokerSettings(host="127.0.0.1", port=free_port())
        ready = threading.Event()
        threading.Thread(
            target=run_broker_service,
            args=(broker, url, root / "broker", stop_broker, ready, SyncTracker()),
            daemon=True,
        ).start()
        assert ready.wait(60), "the broker did not start"
        rig = Rig(broker.host, broker.port, url, ingest_secret, load)
        latency_workers = "" if throughput_only else f", latency {args.ingest_processes}"
        print(
            f"terminals={args.terminals} generator processes={args.processes}"
            f" ingest workers: full load {','.join(map(str, args.workers))}{latency_workers}"
            f" phase={args.duration:g}s  (Mosquitto, PostgreSQL 15, loopback)"
        )
        raw_rate = raw_phase(rig, args)
        settings = IngestSettings(
            mqtt=MqttClientSettings(
                host=rig.host,
                port=rig.port,
                username="tms-ingest",
                password=ingest_secret,  # type: ignore[arg-type]
            ),
            client_id="tms-ingest-bench",
            metrics_port=0,
            workers=args.ingest_processes,
        )
        committed = commit_counters(args.workers)
        phases = [full_load(rig, settings, n, args, committed) for n in args.workers]
        print_full_load(phases, raw_rate)
        if not throughput_only:
            latency_and_alerts(rig, settings, alerting, args, committed)
        print(numbering(url))
        if not throughput_only:
            amqtt_phase(url, load, ingest_secret, settings, args)
    finally:
        stop_broker.set()
        time.sleep(1)
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
