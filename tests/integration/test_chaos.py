"""Chaos under load: the broker, ingest and PostgreSQL killed in turn, nothing lost or doubled.

A real `tms up` (its own PostgreSQL, Mosquitto under `tms broker`, ingest, the command
sender, the console) supervises its parts; simulated terminals run in this process
over the faked USB device, each recording every message the broker acknowledged.
Then, while they stream:

1. with `tms up` held (SIGSTOP) so that it restarts nothing yet, ingest is killed and
   the broker queues for its sessions until the fleet has had 50 more messages
   acknowledged; then Mosquitto is killed with SIGKILL. Its state is saved only hourly
   here, so what it acknowledged and queued is gone, and ingest's sessions with it.
   (Stalling ingest instead loses nothing for sure: the broker writes a short backlog
   into the socket, where the kernel keeps it for ingest to read after the crash.)
2. ingest is killed with SIGKILL;
3. PostgreSQL is killed with SIGKILL.

`tms up` restarts each. At the end every acknowledged message is in PostgreSQL exactly
once: what the broker lost came back through the gap repair (resend commands).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil
import psycopg
import pytest

from agent.outbox import Outbox, QueuedMessage
from agent.runtime import TerminalAgent
from agent.sim.fleet import build_fleet
from shared import topics
from shared.settings import MqttClientSettings
from tests.integration.platform import Platform, running_platform, tms
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

TERMINALS = 24
HEARTBEAT_S = 0.25  # ~100 messages/s from the fleet
PLATFORM_ENV = {
    "TMS_SUPERVISION_RESTART_DELAY_S": "0.2",
    "TMS_SUPERVISION_RESTART_DELAY_MAX_S": "1",
    # Only the sender can give back what a crashed broker acknowledged: make the
    # broker's snapshots useless here, so that the repair has to do all of it.
    "TMS_BROKER_AUTOSAVE_S": "3600",
    "TMS_INGEST_GAP_GRACE_S": "1",
    "TMS_INGEST_GAP_CHECK_INTERVAL_S": "0.5",
}


class RecordingOutbox(Outbox):
    """The simulator's queue, noting each message the broker acknowledged (by id)."""

    def __init__(self) -> None:
        super().__init__(max_messages=100_000, keep_sent=100_000)
        self.acknowledged: list[tuple[str, str]] = []  # (topic kind, message id)

    def done(self, queued: QueuedMessage) -> None:
        message = queued.message
        body = json.loads(message.payload)
        self.acknowledged.append((topics.parse(message.topic).kind.value, str(body["id"])))
        super().done(queued)


@dataclass
class Fleet:
    """Simulated terminals on a thread of their own, stopped cleanly at the end."""

    agents: list[TerminalAgent]
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    stop_event: asyncio.Event | None = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        ready = threading.Event()

        async def main() -> None:
            self.stop_event = asyncio.Event()
            ready.set()
            await asyncio.gather(*(agent.run(self.stop_event) for agent in self.agents))

        self.thread = threading.Thread(target=lambda: self.loop.run_until_complete(main()))
        self.thread.start()
        ready.wait(10)

    def stop(self) -> None:
        if self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        if self.thread is not None:
            self.thread.join(60)
        self.loop.close()

    def acknowledged(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for agent in self.agents:
            assert isinstance(agent.outbox, RecordingOutbox)
            found.extend(agent.outbox.acknowledged)
        return found


def provision(platform: Platform, count: int) -> list[tuple[str, str]]:
    csv = platform.data_dir / "chaos.csv"
    csv.write_text(
        "serial,customer,store\n" + "".join(f"CHAOS-{n:03d},Chaos,S{n % 3}\n" for n in range(count))
    )
    done = tms("terminal", "import", str(csv), env=platform.env(), timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [line.split(",") for line in done.stdout.splitlines() if line.startswith("CHAOS-")]
    assert len(rows) == count, done.stdout
    return [(serial, secret) for serial, secret in rows]


def children(platform: Platform) -> dict[str, psutil.Process]:
    """The platform's processes by role: the `tms` children, Mosquitto and PostgreSQL."""
    assert platform.process is not None
    found: dict[str, psutil.Process] = {}
    for child in psutil.Process(platform.process.pid).children():
        with contextlib.suppress(psutil.NoSuchProcess):
            command = child.cmdline()
            if command[1:3] == ["-m", "tms"] and len(command) > 3:
                found[command[3]] = child
            elif child.name() == "postgres":
                found["postgres"] = child
    if "broker" in found:
        with contextlib.suppress(psutil.NoSuchProcess):
            for grandchild in found["broker"].children():
                if "mosquitto" in grandchild.name():
                    found["mosquitto"] = grandchild
    return found


def replaced(platform: Platform, role: str, old_pid: int) -> bool:
    process = children(platform).get(role)
    return process is not None and process.pid != old_pid


def rows_for(database_url: str, acknowledged: list[tuple[str, str]]) -> dict[str, int]:
    """How many rows PostgreSQL holds for each acknowledged message id (0 while missing)."""
    heartbeats = [mid for kind, mid in acknowledged if kind == "telemetry"]
    events = [mid for kind, mid in acknowledged if kind == "event"]
    found = dict.fromkeys([mid for _, mid in acknowledged], 0)
    try:
        with psycopg.connect(database_url, connect_timeout=5) as conn:
            for mid, n in conn.execute(
                "SELECT message_id, count(*) FROM telemetry WHERE message_id = ANY(%s)"
                " GROUP BY message_id",
                (heartbeats,),
            ):
                found[mid] = n
            for mid, n in conn.execute(
                "SELECT source_id, count(*) FROM terminal_log WHERE kind = 'event'"
                " AND source_id = ANY(%s) GROUP BY source_id",
                (events,),
            ):
                found[mid] = n
            for mid, n in conn.execute(
                "SELECT id, 1 FROM command WHERE id = ANY(%s) AND finished_at IS NOT NULL",
                ([mid for kind, mid in acknowledged if kind not in ("telemetry", "event")],),
            ):
                found[mid] = n
    except psycopg.OperationalError:
        return {}
    return found


def streaming(database_url: str, minimum: int) -> bool:
    try:
        with psycopg.connect(database_url, connect_timeout=5) as conn:
            row = conn.execute("SELECT count(*) FROM telemetry").fetchone()
    except psycopg.OperationalError:
        return False
    return row is not None and row[0] >= minimum


def state(database_url: str) -> str:
    """What the numbering looks like, for a failure's message."""
    try:
        with psycopg.connect(database_url, connect_timeout=5) as conn:
            terminals = conn.execute(
                "SELECT sum(seq_missing), sum(seq_recovered), sum(seq_lost)"
                " FROM terminal WHERE serial LIKE 'CHAOS-%'"
            ).fetchone()
            gaps = conn.execute(
                "SELECT count(*), sum(last_seq - first_seq + 1), max(attempts) FROM seq_gap"
            ).fetchone()
            resends = conn.execute(
                "SELECT status, count(*) FROM command WHERE name = 'resend' GROUP BY status"
            ).fetchall()
    except psycopg.OperationalError as exc:
        return f"(database: {exc})"
    return f"missing/recovered/lost {terminals}, gaps {gaps}, resends {resends}"


def gaps_closed(database_url: str) -> bool:
    try:
        with psycopg.connect(database_url, connect_timeout=5) as conn:
            row = conn.execute("SELECT count(*) FROM seq_gap").fetchone()
    except psycopg.OperationalError:
        return False
    return row is not None and row[0] == 0


@pytest.fixture
def platform() -> Iterator[Platform]:
    with running_platform(extra_env=PLATFORM_ENV) as running:
        yield running


def test_killing_broker_ingest_and_postgresql_loses_and_doubles_nothing(
    platform: Platform,
) -> None:
    terminals = provision(platform, TERMINALS)
    mqtt = MqttClientSettings(host="127.0.0.1", port=platform.broker_port)
    agents = build_fleet(terminals, mqtt, HEARTBEAT_S)
    for agent in agents:
        agent.outbox = RecordingOutbox()
    fleet = Fleet(agents)
    fleet.start()
    url = platform.database_url
    try:
        wait_until(lambda: streaming(url, 200), "the fleet's heartbeats in PostgreSQL", 90)

        # 1. The broker dies holding what it acknowledged while ingest was gone.
        parts = children(platform)
        assert platform.process is not None
        supervisor = psutil.Process(platform.process.pid)
        supervisor.send_signal(signal.SIGSTOP)
        try:
            for process in [parts["ingest"], *parts["ingest"].children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.send_signal(signal.SIGKILL)
            mark = len(fleet.acknowledged())
            wait_until(
                lambda: len(fleet.acknowledged()) >= mark + 50,
                "the broker acknowledging messages with ingest gone",
                60,
            )
            os.kill(parts["mosquitto"].pid, signal.SIGKILL)
        finally:
            supervisor.send_signal(signal.SIGCONT)
        wait_until(
            lambda: replaced(platform, "mosquitto", parts["mosquitto"].pid),
            "Mosquitto restarted",
            60,
        )
        wait_until(lambda: replaced(platform, "ingest", parts["ingest"].pid), "ingest back", 60)
        mark = len(fleet.acknowledged())
        wait_until(lambda: len(fleet.acknowledged()) > mark + 100, "the fleet back online", 90)

        # 2. ingest dies with batches in flight.
        parts = children(platform)
        os.kill(parts["ingest"].pid, signal.SIGKILL)
        wait_until(lambda: replaced(platform, "ingest", parts["ingest"].pid), "ingest back", 60)

        # 3. PostgreSQL dies under ingest's writes.
        mark = len(fleet.acknowledged())
        wait_until(lambda: len(fleet.acknowledged()) > mark + 100, "more traffic", 60)
        parts = children(platform)
        os.kill(parts["postgres"].pid, signal.SIGKILL)
        wait_until(
            lambda: replaced(platform, "postgres", parts["postgres"].pid), "PostgreSQL back", 90
        )
        wait_until(lambda: streaming(url, 1), "PostgreSQL answering", 60)
        mark = len(fleet.acknowledged())
        wait_until(lambda: len(fleet.acknowledged()) > mark + 100, "traffic after it all", 90)
        # What the broker had acknowledged by now; the fleet runs on, since only a live
        # agent can send again what the broker lost.
        # (A message resent on ingest's request is acknowledged again, with its id.)
        acknowledged = sorted(set(fleet.acknowledged()))

        def missing() -> list[str]:
            counts = rows_for(url, acknowledged)
            return [mid for mid, n in counts.items() if n == 0] if counts else ["(no database)"]

        wait_until(
            lambda: not missing(),
            lambda: (
                f"every acknowledged message in PostgreSQL; missing {len(missing())}: "
                + state(url)
                + "\n"
                + platform.text[-3000:]
            ),
            180,
        )
        wait_until(lambda: gaps_closed(url), lambda: "no open gap: " + state(url), 60)
    finally:
        fleet.stop()

    counts = rows_for(url, acknowledged)
    doubled = {mid: n for mid, n in counts.items() if n != 1}
    assert not doubled, f"written more than once: {list(doubled.items())[:10]}"
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT sum(seq_missing), sum(seq_recovered), sum(seq_lost),"
            " (SELECT count(*) FROM seq_gap) FROM terminal WHERE serial LIKE 'CHAOS-%'"
        ).fetchone()
        resends = conn.execute("SELECT count(*) FROM command WHERE name = 'resend'").fetchone()
    assert row is not None and resends is not None
    found, recovered, lost, open_gaps = row
    # The broker's loss was real, and the repair gave all of it back.
    assert found > 0 and recovered == found, row
    assert lost == 0 and open_gaps == 0, row
    assert resends[0] > 0
    summary: dict[str, Any] = {"acknowledged": len(acknowledged), "recovered": recovered}
    print("chaos:", summary)
