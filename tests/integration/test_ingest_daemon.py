"""The ingest daemon end to end: a real Mosquitto, a real PostgreSQL, a terminal publishing."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from ingest.counters import IngestCounters
from ingest.service import run_ingest
from shared import topics
from shared.models import AccountKind
from shared.ports import free_port
from shared.settings import IngestSettings, MqttClientSettings
from tests.fixtures.broker import MqttProbe, RunningBroker
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

SERIAL = "TC-DAEMON-1"
WAIT_S = 60.0  # generous: a busy 2-core machine; only a failing test waits this long


class IngestThread:
    """run_ingest in its own event loop and thread, stopped cleanly or killed by cancel."""

    def __init__(self, settings: IngestSettings, database_url: str) -> None:
        self.counters = IngestCounters()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._settings = settings
        self._database_url = database_url
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            ready = asyncio.Event()
            self._task = asyncio.current_task()
            self._started.set()
            watcher = asyncio.create_task(ready.wait())

            def subscribed(task: asyncio.Task[bool]) -> None:
                if not task.cancelled():  # cancelled: run_ingest failed; _run sets `error` first
                    self.ready.set()

            watcher.add_done_callback(subscribed)
            try:
                await run_ingest(
                    self._settings, self._database_url, self._stop, ready, counters=self.counters
                )
            finally:
                watcher.cancel()

        try:
            asyncio.run(main())
        except asyncio.CancelledError:
            pass  # killed on purpose
        except BaseException as exc:
            self.error = exc
        finally:
            self.ready.set()

    def start(self) -> IngestThread:
        self._thread.start()
        assert self._started.wait(WAIT_S)
        assert self.ready.wait(WAIT_S), "ingest did not subscribe in time"
        assert self.error is None, self.error
        return self

    def stop(self) -> None:
        """SIGTERM's path: set the stop event, let the daemon flush and exit."""
        assert self._loop is not None and self._stop is not None
        with suppress(RuntimeError):  # the loop is closed if ingest ended on its own
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(WAIT_S)
        assert not self._thread.is_alive()
        assert self.error is None, self.error

    def settled(self) -> IngestCounters:
        """The counters between two steps of the loop, where no batch is half counted.

        The loop thread updates ``committed`` before the rest of a batch's counters, so a
        wait for ``committed`` can wake before, say, ``dead_lettered`` has the batch.
        """
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self._loop).result(WAIT_S)
        return self.counters

    def kill(self) -> None:
        """A crash as the broker sees it: nothing more is committed or acknowledged."""
        assert self._loop is not None and self._task is not None
        self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(WAIT_S)
        assert not self._thread.is_alive()


def scalar(database_url: str, sql: str, *params: Any) -> Any:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(sql, params).fetchone()
    return None if row is None else row[0]


@pytest.fixture
def terminal_probe(mosquitto_broker: RunningBroker) -> Iterator[MqttProbe]:
    secret = mosquitto_broker.provision_terminal(SERIAL, customer="Daemon Test")
    probe = MqttProbe(mosquitto_broker, SERIAL, secret, client_id=SERIAL)
    assert probe.connect()
    yield probe
    probe.close()


@pytest.fixture
def ingest_settings(mosquitto_broker: RunningBroker) -> Callable[..., IngestSettings]:
    secret = mosquitto_broker.service_account(AccountKind.INGEST, "tms-ingest")

    def make(**overrides: Any) -> IngestSettings:
        mqtt = MqttClientSettings(
            host=mosquitto_broker.host,
            port=mosquitto_broker.port,
            username="tms-ingest",
            password=SecretStr(secret),
        )
        fields: dict[str, Any] = {
            "mqtt": mqtt,
            "client_id": "tms-ingest-test",
            "batch_interval_ms": 50,
            "metrics_port": free_port(),
            **overrides,
        }
        return IngestSettings(**fields)

    return make


def heartbeat(message_id: str, status: str = "ok") -> bytes:
    body = {
        "v": 1,
        "id": message_id,
        "status": status,
        "ts": datetime.now(UTC).isoformat(),
        "firmware": "3.1.4",
        "terminal": {"cpu": 12.5},
    }
    return json.dumps(body).encode()


def test_daemon_writes_telemetry_and_keeps_malformed_messages(
    database_url: str,
    terminal_probe: MqttProbe,
    ingest_settings: Callable[..., IngestSettings],
) -> None:
    ingest = IngestThread(ingest_settings(), database_url).start()
    try:
        assert terminal_probe.publish(topics.status(SERIAL), b'{"v": 1, "state": "online"}')
        assert terminal_probe.publish(topics.telemetry(SERIAL), heartbeat("hb-1"))
        assert terminal_probe.publish(topics.telemetry(SERIAL), b"{this is not json")
        assert terminal_probe.publish(topics.telemetry(SERIAL), heartbeat("hb-2"))

        wait_until(lambda: ingest.counters.committed >= 4, "four committed messages")
        counters = ingest.settled()  # the last batch counted in full, not just `committed`
        assert scalar(database_url, "SELECT count(*) FROM telemetry") == 2
        assert scalar(database_url, "SELECT status FROM terminal WHERE serial = %s", SERIAL) == (
            "online"
        )
        assert (
            scalar(database_url, "SELECT firmware_version FROM terminal WHERE serial = %s", SERIAL)
            == "3.1.4"
        )
        assert scalar(database_url, "SELECT payload FROM dead_letter") == b"{this is not json"
        assert scalar(database_url, "SELECT reason FROM dead_letter") == "bad-payload"
        assert counters.dead_lettered == {"bad-payload": 1}
        assert counters.acks_dropped == 0
    finally:
        ingest.stop()


def test_a_year_one_heartbeat_is_dead_lettered_and_the_terminal_stays_readable(
    database_url: str,
    terminal_probe: MqttProbe,
    ingest_settings: Callable[..., IngestSettings],
) -> None:
    # Year 1 at +23:59 is 1 BC in UTC: stored, psycopg could not read it back.
    crafted = b'{"v":1,"id":"x1","ts":"0001-01-01T00:00:00+23:59","status":"ok"}'
    ingest = IngestThread(ingest_settings(), database_url).start()
    try:
        assert terminal_probe.publish(topics.telemetry(SERIAL), crafted)
        assert terminal_probe.publish(topics.telemetry(SERIAL), heartbeat("hb-after"))
        wait_until(lambda: ingest.counters.committed >= 2, "both messages committed")
        assert ingest.settled().dead_lettered == {"past-timestamp": 1}
        # The next heartbeat is written, and the row reads back.
        assert scalar(database_url, "SELECT message_id FROM telemetry") == "hb-after"
        assert (
            scalar(
                database_url, "SELECT last_heartbeat_at FROM terminal WHERE serial = %s", SERIAL
            ).year
            >= 2020
        )
    finally:
        ingest.stop()


def test_stop_commits_the_last_batch(
    database_url: str,
    terminal_probe: MqttProbe,
    ingest_settings: Callable[..., IngestSettings],
) -> None:
    # A batch that would wait a minute: only the stop can write it.
    ingest = IngestThread(ingest_settings(batch_interval_ms=60_000), database_url).start()
    assert terminal_probe.publish(topics.telemetry(SERIAL), heartbeat("last-1"))
    wait_until(lambda: ingest.counters.received >= 1, "the message to arrive")
    ingest.stop()
    assert scalar(database_url, "SELECT message_id FROM telemetry") == "last-1"
    assert ingest.counters.committed == 1


def test_a_message_not_committed_before_a_crash_is_redelivered_and_written_once(
    database_url: str,
    terminal_probe: MqttProbe,
    ingest_settings: Callable[..., IngestSettings],
) -> None:
    first = IngestThread(ingest_settings(batch_interval_ms=60_000), database_url).start()
    assert terminal_probe.publish(topics.telemetry(SERIAL), heartbeat("crash-1"))
    wait_until(lambda: first.counters.received >= 1, "the message to arrive")
    first.kill()
    assert scalar(database_url, "SELECT count(*) FROM telemetry") == 0

    second = IngestThread(ingest_settings(), database_url).start()
    try:
        wait_until(lambda: second.counters.committed >= 1, "the redelivered message")
        assert scalar(database_url, "SELECT message_id FROM telemetry") == "crash-1"
    finally:
        second.stop()

    # A third run gets nothing again: the second one acknowledged after its commit. A
    # marker published now comes after anything the broker would redeliver.
    third = IngestThread(ingest_settings(), database_url).start()
    assert terminal_probe.publish(topics.telemetry(SERIAL), heartbeat("marker-1"))
    wait_until(lambda: third.counters.committed >= 1, "the marker message")
    third.stop()
    assert third.counters.received == 1
    assert scalar(database_url, "SELECT count(*) FROM telemetry WHERE message_id = 'crash-1'") == 1


def test_a_postgresql_outage_delays_the_batch_but_loses_nothing(
    database_url: str,
    terminal_probe: MqttProbe,
    ingest_settings: Callable[..., IngestSettings],
) -> None:
    name = database_url.rsplit("/", 1)[1]
    admin_url = database_url.rsplit("/", 1)[0] + "/postgres"
    ingest = IngestThread(ingest_settings(retry_max_s=0.5), database_url).start()
    try:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            # The outage: no new sessions, and the pooled one is cut.
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            assert terminal_probe.publish(topics.telemetry(SERIAL), heartbeat("outage-1"))
            wait_until(lambda: ingest.counters.database_retries >= 2, "retries during the outage")
            assert ingest.counters.committed == 0
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        wait_until(lambda: ingest.counters.committed >= 1, "the batch after the outage")
        assert scalar(database_url, "SELECT message_id FROM telemetry") == "outage-1"
    finally:
        ingest.stop()


def test_a_burst_beyond_mosquittos_default_queue_is_not_lost(
    database_url: str,
    terminal_probe: MqttProbe,
    ingest_settings: Callable[..., IngestSettings],
) -> None:
    burst = 2500
    ingest = IngestThread(ingest_settings(), database_url).start()
    try:
        infos = [
            terminal_probe.client.publish(topics.telemetry(SERIAL), heartbeat(f"burst-{i}"), 1)
            for i in range(burst)
        ]
        for info in infos:
            info.wait_for_publish(WAIT_S)
        wait_until(lambda: ingest.counters.committed >= burst, "the whole burst", timeout=WAIT_S)
    finally:
        ingest.stop()
    assert scalar(database_url, "SELECT count(*) FROM telemetry") == burst


def test_a_backlog_beyond_max_pending_waits_at_the_broker_and_is_all_written(
    database_url: str,
    terminal_probe: MqttProbe,
    ingest_settings: Callable[..., IngestSettings],
) -> None:
    backlog, max_pending = 6000, 300
    # Small batches: the writer is slower than the reader, as under a real backlog.
    settings = ingest_settings(max_pending=max_pending, batch_max=50)
    IngestThread(settings, database_url).start().stop()  # the session exists from now on
    infos = [
        terminal_probe.client.publish(topics.telemetry(SERIAL), heartbeat(f"backlog-{i}"), 1)
        for i in range(backlog)
    ]
    for info in infos:
        info.wait_for_publish(WAIT_S)
    depths: list[int] = []
    ingest = IngestThread(settings, database_url).start()

    def written() -> bool:
        _, body = _get(settings.metrics_port, "/healthz")
        depths.append(json.loads(body)["queue_depth"])
        return ingest.counters.committed >= backlog

    try:
        wait_until(written, "the backlog to be written", timeout=2 * WAIT_S)
    finally:
        ingest.stop()
    # A paused read stops at the end of its chunk (256 KB, ~1,400 of these messages).
    assert max(depths) < max_pending + 1500 < backlog
    assert scalar(database_url, "SELECT count(*) FROM telemetry") == backlog
    assert scalar(database_url, "SELECT count(DISTINCT message_id) FROM telemetry") == backlog
    assert ingest.counters.read_pauses > 0


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=WAIT_S) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_bad_input_is_counted_by_reason_and_served_as_metrics(
    database_url: str,
    terminal_probe: MqttProbe,
    ingest_settings: Callable[..., IngestSettings],
) -> None:
    settings = ingest_settings()
    ingest = IngestThread(settings, database_url).start()
    future = json.dumps({"v": 1, "id": "f1", "status": "ok", "ts": "2099-01-01T00:00:00+00:00"})
    try:
        assert terminal_probe.publish(topics.telemetry(SERIAL), heartbeat("m-1"))
        assert terminal_probe.publish(topics.telemetry(SERIAL), b"{not json")
        assert terminal_probe.publish(topics.telemetry(SERIAL), b'{"v": 7, "status": "ok"}')
        absurd = json.dumps({"v": 1, "status": "ok", "terminal": {"cpu": 900}}).encode()
        assert terminal_probe.publish(topics.telemetry(SERIAL), absurd)
        assert terminal_probe.publish(topics.telemetry(SERIAL), future.encode())
        wait_until(lambda: ingest.counters.committed >= 5, "five committed messages")
        status, text = _get(settings.metrics_port, "/metrics")
        assert status == 200
        assert "tms_ingest_messages_committed_total 5.0" in text
        for reason in ("bad-payload", "unsupported-version", "future-timestamp"):
            assert f'tms_ingest_dead_letters_total{{reason="{reason}"}}' in text
        assert 'tms_ingest_dead_letters_total{reason="bad-payload"} 2.0' in text  # JSON, CPU 900
        assert "tms_ingest_batch_size_bucket" in text and "tms_ingest_commit_seconds_count" in text
        assert "tms_alerts_open" in text
        status, body = _get(settings.metrics_port, "/healthz")
        assert status == 200 and json.loads(body)["broker_connected"] is True
        reasons = scalar(database_url, "SELECT array_agg(reason ORDER BY id) FROM dead_letter")
        assert reasons == ["bad-payload", "unsupported-version", "bad-payload", "future-timestamp"]
    finally:
        ingest.stop()
