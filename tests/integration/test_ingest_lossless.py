"""Nothing lost or doubled: ingest killed with SIGKILL, PostgreSQL restarted, mid-stream."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
import psycopg
import pytest

from shared import schema, topics
from shared.models import AccountKind
from shared.ports import free_port
from tests.fixtures.broker import MqttProbe, RunningBroker
from tests.waiting import wait_until
from tms.postgres import EmbeddedPostgres

pytestmark = pytest.mark.integration

SERIAL = "TC-LOSSLESS"
TOTAL = 3000


def count(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT message_id) FROM telemetry").fetchone()
    assert row is not None
    return row[0], row[1]


class IngestProcess:
    """``tms ingest`` as a real process, so that SIGKILL is a real crash."""

    def __init__(
        self, broker: RunningBroker, secret: str, database_url: str, workers: int = 1
    ) -> None:
        self.metrics_port = free_port()
        self.workers = workers
        env = {
            **os.environ,
            "TMS_DATABASE_URL": database_url,
            "TMS_INGEST_MQTT_HOST": broker.host,
            "TMS_INGEST_MQTT_PORT": str(broker.port),
            "TMS_INGEST_MQTT_USERNAME": "tms-ingest",
            "TMS_INGEST_MQTT_PASSWORD": secret,
            "TMS_INGEST_CLIENT_ID": "tms-ingest-lossless",
            "TMS_INGEST_BATCH_MAX": "200",
            "TMS_INGEST_BATCH_INTERVAL_MS": "50",
            "TMS_INGEST_RETRY_MAX_S": "1",
            "TMS_INGEST_METRICS_PORT": str(self.metrics_port),
            "TMS_INGEST_WORKERS": str(workers),
        }
        # Kept open for the process's whole life, read back by output().
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="ingest-", suffix=".log", delete=False
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from tms.cli import main; main()", "ingest"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def healthy(self) -> bool:
        """Every worker subscribed with PostgreSQL reachable (worker i serves port + i)."""
        return all(self._get(i, "healthz") is not None for i in range(self.workers))

    def committed(self, worker: int) -> int:
        """The worker's tms_ingest_messages_committed, from its /metrics."""
        body = self._get(worker, "metrics") or ""
        for line in body.splitlines():
            if line.startswith("tms_ingest_messages_committed_total "):
                return int(float(line.split()[1]))
        raise AssertionError(f"worker {worker} reports no commits: {body[:500]}")

    def _get(self, worker: int, path: str) -> str | None:
        url = f"http://127.0.0.1:{self.metrics_port + worker}/{path}"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return str(response.read().decode()) if response.status == 200 else None
        except OSError:
            return None

    def wait_healthy(self) -> IngestProcess:
        """Until /healthz says subscribed and PostgreSQL reachable: no message goes unseen."""
        wait_until(self.healthy, lambda: f"ingest to be healthy: {self.output()}", timeout=60)
        return self

    def stop(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)
        self.process.wait(30)

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-3000:]


def heartbeat(n: int) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "id": f"loss-{n}",
            "status": "ok",
            "ts": datetime.now(UTC).isoformat(),
            "terminal": {"cpu": n % 100},
        }
    ).encode()


class Publisher(threading.Thread):
    """Publishes ``total`` heartbeats at a steady rate (QoS 1, each acknowledged)."""

    def __init__(self, probe: MqttProbe, total: int, per_second: int, first: int = 0) -> None:
        super().__init__(daemon=True)
        self.probe, self.total, self.per_second = probe, total, per_second
        self.first = first  # message ids loss-<first> onwards
        self.published = 0
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            for n in range(self.total):
                payload = heartbeat(self.first + n)
                info = self.probe.client.publish(topics.telemetry(SERIAL), payload, 1)
                info.wait_for_publish(60)
                self.published += 1
                if n % 50 == 49:
                    time.sleep(50 / self.per_second)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def finish(self) -> None:
        self.join(120)
        assert self.error is None, f"publisher failed after {self.published}: {self.error!r}"
        assert self.published == self.total


@pytest.fixture
def setup(mosquitto_broker: RunningBroker) -> Iterator[tuple[RunningBroker, str, MqttProbe]]:
    ingest_secret = mosquitto_broker.service_account(AccountKind.INGEST, "tms-ingest")
    terminal_secret = mosquitto_broker.provision_terminal(SERIAL)
    probe = MqttProbe(mosquitto_broker, SERIAL, terminal_secret, client_id=SERIAL)
    assert probe.connect()
    yield mosquitto_broker, ingest_secret, probe
    probe.close()


def test_sigkill_mid_stream_loses_and_doubles_nothing(
    setup: tuple[RunningBroker, str, MqttProbe], database_url: str
) -> None:
    broker, secret, probe = setup
    first = IngestProcess(broker, secret, database_url).wait_healthy()
    try:
        publisher = Publisher(probe, TOTAL, per_second=1500)
        wait_until(lambda: count(database_url)[0] >= TOTAL // 4, "a quarter committed", 60)
        first.stop(signal.SIGKILL)
        at_kill = count(database_url)[0]
        assert at_kill < TOTAL, "the stream ended before the kill: nothing was tested"
        second = IngestProcess(broker, secret, database_url)
        try:
            publisher.finish()
            wait_until(lambda: count(database_url)[0] >= TOTAL, "every message", timeout=120)
            # No wait for doubles: a redelivery comes first in the resumed session, and
            # the clean stop below commits everything received.
        finally:
            second.stop()
        assert second.process.returncode == 0, second.output()
    finally:
        if first.process.poll() is None:
            first.stop(signal.SIGKILL)
    assert count(database_url) == (TOTAL, TOTAL)


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_share_the_stream_and_a_killed_worker_loses_nothing(
    setup: tuple[RunningBroker, str, MqttProbe], database_url: str, workers: int
) -> None:
    broker, secret, probe = setup
    ingest = IngestProcess(broker, secret, database_url, workers=workers).wait_healthy()
    try:
        publisher = Publisher(probe, TOTAL, per_second=1500)
        wait_until(lambda: count(database_url)[0] >= TOTAL // 4, "a quarter committed", 60)
        # Every worker takes a share (the broker deals the messages round the group).
        wait_until(
            lambda: all(ingest.committed(i) > 0 for i in range(workers)),
            "a commit from every worker",
            timeout=10,
        )
        supervisor = psutil.Process(ingest.process.pid)
        children = supervisor.children()
        assert len(children) == workers, children
        children[1].kill()  # SIGKILL: its unacknowledged messages wait in its session
        assert count(database_url)[0] < TOTAL, "the stream ended before the kill"
        publisher.finish()
        wait_until(lambda: count(database_url)[0] >= TOTAL, "every message", timeout=120)
        # Its redeliveries come first in its resumed session, before the SUBACK that
        # makes it healthy; the clean stop below commits everything received.
        wait_until(ingest.healthy, "the killed worker back and subscribed", timeout=60)
        assert len(supervisor.children()) == workers
        assert children[1].pid not in {child.pid for child in supervisor.children()}
        # The workers never killed shared the stream: none committed it all, nor did
        # they together (worker 1 wrote the rest, before its death or after).
        survivors = [ingest.committed(i) for i in range(workers) if i != 1]
        assert all(0 < committed < TOTAL for committed in survivors), survivors
        assert sum(survivors) < TOTAL, survivors
    finally:
        ingest.stop()
    assert ingest.process.returncode == 0, ingest.output()
    # Nothing lost and nothing written twice: as many rows as distinct ids as published.
    assert count(database_url) == (TOTAL, TOTAL)
    assert "ingest worker 1 exited with code -9" in ingest.output()


def session_present(broker: RunningBroker, secret: str, client_id: str) -> bool:
    """Whether the broker still keeps a persistent session for ``client_id``."""
    found: list[bool] = []
    refused: list[object] = []
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=False,
        protocol=mqtt.MQTTv311,
    )
    client.username_pw_set("tms-ingest", secret)

    def on_connect(_c: object, _u: object, flags: Any, reason: Any, _p: object) -> None:
        if reason.is_failure:
            refused.append(reason)  # before `found`: the waiter reads both once it sees that
        found.append(flags.session_present)

    client.on_connect = on_connect
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        wait_until(lambda: bool(found), f"a CONNACK for {client_id}")
    finally:
        client.disconnect()
        client.loop_stop()
    # A refused login would say "no session" too, and prove nothing.
    assert not refused, f"{client_id} could not log in: {refused}"
    return found[0]


def registered_sessions(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {row[0] for row in conn.execute("SELECT client_id FROM ingest_session")}


def test_lowering_the_worker_count_drains_the_retired_workers_sessions(
    setup: tuple[RunningBroker, str, MqttProbe], database_url: str
) -> None:
    broker, secret, probe = setup
    two = IngestProcess(broker, secret, database_url, workers=2).wait_healthy()
    try:
        Publisher(probe, 100, per_second=1500).finish()
        wait_until(lambda: count(database_url)[0] >= 100, "the first messages", 60)
    finally:
        two.stop()
    assert registered_sessions(database_url) == {"tms-ingest-lossless", "tms-ingest-lossless-1"}
    # Both workers away: Mosquitto queues each message for one of the two sessions.
    Publisher(probe, 600, per_second=1500, first=100).finish()
    one = IngestProcess(broker, secret, database_url, workers=1).wait_healthy()
    try:
        # Worker 1's share reaches PostgreSQL only through the retirement of its session.
        wait_until(lambda: count(database_url)[0] >= 700, "the retired worker's share", 60)
        wait_until(
            lambda: registered_sessions(database_url) == {"tms-ingest-lossless"},
            "the retired session's record to go",
            60,
        )
        Publisher(probe, 300, per_second=1500, first=700).finish()
        wait_until(lambda: count(database_url)[0] >= 1000, "the messages after the change", 60)
        assert 0 < one.committed(0) < 1000  # worker 0 alone did not get the queued share
    finally:
        one.stop()
    assert one.process.returncode == 0, one.output()
    assert count(database_url) == (1000, 1000)
    assert "retired ingest session tms-ingest-lossless-1" in one.output()
    assert not session_present(broker, secret, "tms-ingest-lossless-1")


@pytest.fixture
def own_postgres() -> Iterator[EmbeddedPostgres]:
    """A cluster of its own, so that restarting it disturbs no other fixture."""
    root = Path(tempfile.mkdtemp(prefix="tms-test-pg-restart-"))
    root.chmod(0o755)
    server = EmbeddedPostgres(root / "pg", free_port(), secrets.token_urlsafe(16))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_postgresql_restart_mid_stream_loses_and_doubles_nothing(
    setup: tuple[RunningBroker, str, MqttProbe], own_postgres: EmbeddedPostgres
) -> None:
    broker, secret, probe = setup
    url = own_postgres.url
    schema.upgrade(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO customer (name) VALUES ('C')")
        conn.execute(
            "INSERT INTO terminal (serial, customer_id, model, status)"
            " SELECT %s, id, 'TC-200', 'unknown' FROM customer",
            (SERIAL,),
        )
    ingest = IngestProcess(broker, secret, url).wait_healthy()
    try:
        publisher = Publisher(probe, TOTAL, per_second=1000)
        wait_until(lambda: count(url)[0] >= TOTAL // 4, "a quarter committed", 60)
        own_postgres.stop()
        # Messages keep coming and wait, unacknowledged, at the broker.
        wait_until(lambda: "retrying the batch" in ingest.output(), "ingest to see the outage")
        own_postgres.start()
        publisher.finish()
        wait_until(lambda: count(url)[0] >= TOTAL, "every message", timeout=120)
    finally:
        ingest.stop()
    assert ingest.process.returncode == 0, ingest.output()
    assert count(url) == (TOTAL, TOTAL)
    assert "retrying the batch" in ingest.output()
