"""The ingest daemon: a thin asyncio shell around decode, batch and the batch writer.

The message handler (called by PublishTap, or by paho on TLS) decodes each message (a
guarded handler: one bad message never stops it) and appends it to a deque; the writer
task builds batches, commits each in one transaction and only then acknowledges its
messages. The deque holds what the broker has sent unacknowledged (docs/ingest.md:
Mosquitto 2.0.11 was seen to send a whole backlog, whatever max_inflight_messages
says). Nothing is acknowledged before it is committed, so a crash, a lost broker
connection or a PostgreSQL outage never loses a message: the broker keeps it
(persistent session) and sends it again, and the unique message id keeps the history
free of duplicates. ``ingest.service`` builds and runs it with its side tasks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

import aiomqtt

from ingest.batch import Batch, BatchBuilder
from ingest.counters import IngestCounters
from ingest.decode import Decoded, Envelope, Rejection, decode, safe_text
from ingest.errors import BatchRefusedError, DatabaseUnavailableError
from ingest.metrics import Health
from ingest.mqtt import (
    PublishHandler,
    Receipt,
    TapSwitch,
    acknowledge,
    make_client,
    set_message_handler,
    tap_publishes,
)
from ingest.workers import DEFAULT_SHARED_GROUP
from ingest.writer import BatchWriter, CommitStep
from shared.backoff import Backoff
from shared.settings import IngestSettings
from shared.topics import INGEST_FILTERS

log = logging.getLogger(__name__)

REASON_INTERNAL_ERROR = "internal-error"
# The SUBACK of a resumed session comes after its backlog, which is read only as fast
# as it is written once reading pauses: ~10 minutes of writing, not aiomqtt's 10 s.
SUBSCRIBE_TIMEOUT_S = 600.0
_END: Final = None  # queued by the daemon to tell the writer that reading has stopped

QueueItem = tuple[Decoded, Receipt] | None


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep, but wake at once when ``stop`` is set; True if it was."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


class IngestDaemon:
    """One running ingest: the broker connection, the queue and the batch writer."""

    def __init__(
        self,
        settings: IngestSettings,
        writer: BatchWriter,
        counters: IngestCounters,
        on_commit: OnCommit | None = None,
        *,
        alert_step: CommitStep | None = None,
        retiring_session: bool = False,
    ) -> None:
        self.settings = settings
        # Part of every batch's transaction: alerts commit with the batch that raised them.
        self._alert_step = alert_step
        # A retired worker's session (ingest.sessions): subscribe to nothing, drop every
        # filter, and only write what the broker still holds for it.
        self._retiring = retiring_session
        self._on_commit = on_commit
        self.writer = writer
        self.counters = counters
        # Filled by the message handler, emptied by the writer; it holds what the broker
        # has sent unacknowledged, since nothing is acknowledged before its commit.
        self._pending: deque[QueueItem] = deque()
        self._wake = asyncio.Event()
        self._client: aiomqtt.Client | None = None  # set while connected
        self._subscribed = False
        self._max_future = timedelta(seconds=settings.max_future_s)
        self._connection = 0
        self._tap: TapSwitch | None = None
        self._writer_locking = False  # told by the writer (on_locking)

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None) -> None:
        writer = asyncio.create_task(self._write_loop(stop), name="ingest-writer")
        summary = asyncio.create_task(self._summary_loop(stop), name="ingest-summary")
        try:
            await self._connection_loop(stop, ready, writer)
            await self._finish(writer)
        finally:
            # On cancellation (a crash, as far as the broker can tell) nothing more is
            # committed or acknowledged: the broker redelivers what was in flight.
            for task in (writer, summary):
                task.cancel()
            await asyncio.gather(writer, summary, return_exceptions=True)
            log.info("ingest stopped: %s", self.counters.summary())

    async def _finish(self, writer: asyncio.Task[None]) -> None:
        """Let the writer commit what is queued, then wait for it (idempotent)."""
        if not writer.done():
            self._pending.append(_END)
            self._wake.set()
            await writer

    async def _connection_loop(
        self, stop: asyncio.Event, ready: asyncio.Event | None, writer: asyncio.Task[None]
    ) -> None:
        backoff = Backoff(0.5, self.settings.retry_max_s, min_fraction=0.5)
        mqtt = self.settings.mqtt
        while not stop.is_set():
            # A new client per connection: messages still queued inside an old one get
            # no acknowledgement on the new connection, whose message ids differ.
            client = make_client(self.settings)
            # Before connecting: a resumed session's messages arrive with the CONNACK.
            self._connection += 1
            handler = self._message_handler(self._connection)
            set_message_handler(client, handler)
            self._tap = tap_publishes(client, handler, self._holding_enough)
            try:
                async with client:
                    # Acknowledge from the CONNACK on: a resumed session's backlog comes
                    # first, and the SUBACK only after all of it that the broker has
                    # sent, read at the writer's pace once reading pauses (max_pending).
                    self._client = client
                    timeout = SUBSCRIBE_TIMEOUT_S
                    if self._retiring:
                        await client.unsubscribe(every_filter(self.settings), timeout=timeout)
                    else:
                        filters = subscription_filters(self.settings)
                        await client.subscribe([(t, 1) for t in filters], timeout=timeout)
                        # A persistent session keeps the other form of the filters from
                        # an earlier run (workers changed): it would deliver every
                        # message twice.
                        await client.unsubscribe(stale_filters(self.settings), timeout=timeout)
                    self._subscribed = True  # healthy from here
                    log.info("connected to MQTT broker %s:%s", mqtt.host, mqtt.port)
                    backoff.reset()
                    if ready is not None:
                        ready.set()
                    await self._read_until_stop(client, stop, writer)
                    if stop.is_set():
                        # Still connected: commit and acknowledge the last batch first.
                        await self._finish(writer)
            except aiomqtt.MqttError as exc:
                self.counters.broker_reconnects += 1
                delay = backoff.next_delay()
                log.warning(
                    "MQTT broker %s:%s: %s; retrying in %.1f s", mqtt.host, mqtt.port, exc, delay
                )
                await _sleep_unless(stop, delay)
            finally:
                self._client = None
                self._subscribed = False

    async def _read_until_stop(
        self, client: aiomqtt.Client, stop: asyncio.Event, writer: asyncio.Task[None]
    ) -> None:
        """Read until stop is set or the connection is lost (MqttError)."""
        reader = asyncio.create_task(self._read(client), name="ingest-reader")
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({reader, stopped, writer}, return_when=asyncio.FIRST_COMPLETED)
            if writer.done():
                writer.result()  # the writer never ends on its own: surface its error
        finally:
            for task in (reader, stopped):
                task.cancel()
            await asyncio.gather(stopped, return_exceptions=True)
        if reader.done() and not reader.cancelled():
            reader.result()  # a lost connection raises MqttError here -> reconnect
        else:
            await asyncio.gather(reader, return_exceptions=True)

    def _holding_enough(self) -> bool:
        """Stop reading the broker while this many messages wait for the writer.

        Mosquitto 2.0.11 sends a resumed session's whole backlog regardless of its
        in-flight limit; unread, the rest stays at the broker (in TCP buffers and its
        queue) instead of in this process's memory. Not before the CONNACK is read.
        The writer resumes reading after each commit, once below half of max_pending.
        """
        if self._client is None:
            return False
        if len(self._pending) >= self.settings.max_pending:
            self.counters.read_pauses += 1  # the tap stops asking until it is resumed
            return True
        # Also while the writer holds its terminals' row locks (a few milliseconds of
        # round trips): a chunk decoded in between would make the other workers wait.
        return self._writer_locking

    def _locking_changed(self, locking: bool) -> None:
        """The writer's ``on_locking``: the batch holds its terminals' row locks, or not."""
        self._writer_locking = locking

    def _message_handler(self, connection: int) -> PublishHandler:
        """The callback for every PUBLISH: decode, and hand it to the writer.

        It runs on this loop's thread, called by PublishTap (or by paho on TLS);
        skipping aiomqtt's per-message async iterator saves a task and two queue hops
        per message.
        """

        def on_message(topic: str, payload: bytes, mid: int, qos: int, retain: bool) -> None:
            receipt = Receipt(connection, mid, qos)
            decoded = self.handle(topic, payload, retain)
            self.counters.received += 1
            self._pending.append((decoded, receipt))
            self._wake.set()

        return on_message

    @staticmethod
    async def _read(client: aiomqtt.Client) -> None:
        """Return (with MqttError) when the connection is lost; messages go to the handler."""
        async for _ in client.messages:  # never yields: the handler takes every message
            pass

    def handle(self, topic: str, payload: bytes, retained: bool = False) -> Decoded:
        """Decode one message; whatever happens, the result can be queued and acknowledged."""
        received_at = datetime.now(UTC)
        try:
            decoded = decode(topic, payload, received_at, self._max_future, retained=retained)
        except Exception as exc:  # the guard: one bad message never stops the loop
            log.exception("could not decode a message on %r", topic[:200])
            envelope = Envelope(topic, payload, received_at)
            decoded = Rejection(envelope, REASON_INTERNAL_ERROR, safe_text(repr(exc), 2000))
        if isinstance(decoded, Rejection):
            log.warning(
                "rejected message on %r: %s: %s", topic[:200], decoded.reason, decoded.detail
            )
        return decoded

    async def _write_loop(self, stop: asyncio.Event) -> None:
        builder: BatchBuilder[Receipt] = BatchBuilder(
            self.settings.batch_max, self.settings.batch_interval_ms / 1000
        )
        reading = True
        while reading:
            if not self._pending:
                deadline = builder.deadline
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:  # only with a batch pending: its time is up
                    await self._commit(builder.take(), stop)
                    continue
            # Take everything that has arrived: one wake-up per batch, not per message.
            while self._pending:
                item = self._pending.popleft()
                if item is _END:
                    reading = False
                    break
                builder.add(item[0], item[1], time.monotonic())
                if builder.is_full():
                    await self._commit(builder.take(), stop)
            if len(builder) and builder.is_due(time.monotonic()):
                await self._commit(builder.take(), stop)
        if len(builder):
            await self._commit(builder.take(), stop)

    async def _commit(self, batch: Batch[Receipt], stop: asyncio.Event) -> None:
        """Write one batch until it is committed, then acknowledge its messages."""
        backoff = Backoff(0.2, self.settings.retry_max_s, min_fraction=0.5)
        while True:
            started = time.monotonic()
            try:
                try:
                    result = await self.writer.write(batch, self._alert_step, self._locking_changed)
                except BatchRefusedError as exc:
                    log.error("%s; writing the batch message by message", exc)
                    result = await self.writer.write_isolated(
                        batch, self._alert_step, self._locking_changed
                    )
                break
            except DatabaseUnavailableError as exc:
                self._resume_reading()  # paused for the terminal locks, which are gone
                self.counters.database_retries += 1
                self.counters.database_ok = False
                if stop.is_set():
                    # Stopping: not acknowledged, so the broker sends these again later.
                    log.warning("%s; left %d messages to the broker", exc, len(batch))
                    return
                delay = backoff.next_delay()
                log.warning("%s; retrying the batch in %.1f s", exc, delay)
                await _sleep_unless(stop, delay)
        committed_at = time.monotonic()
        self.counters.database_ok = True
        self.counters.add_batch(len(batch), result, committed_at - started)
        self._acknowledge(batch.receipts)
        self._resume_reading()
        if self._on_commit is not None:
            self._on_commit(batch, committed_at)

    def _resume_reading(self) -> None:
        if self._tap is not None and len(self._pending) <= self.settings.max_pending // 2:
            self._tap.resume()

    def health(self) -> Health:
        return Health(self._subscribed, self.counters.database_ok, len(self._pending))

    def _acknowledge(self, receipts: list[Receipt]) -> None:
        # Receipts of an earlier connection cannot be acknowledged on this one (message
        # ids are per connection): the broker has sent those messages again.
        client, connection = self._client, self._connection
        current = [(r.mid, r.qos) for r in receipts if r.connection == connection]
        if client is None or not acknowledge(client, current):
            current = []
        self.counters.acks_dropped += len(receipts) - len(current)

    async def _summary_loop(self, stop: asyncio.Event) -> None:
        while not await _sleep_unless(stop, self.settings.summary_interval_s):
            log.info("ingest: %s", self.counters.summary())


OnCommit = Callable[[Batch[Receipt], float], None]


def subscription_filters(settings: IngestSettings) -> list[str]:
    """INGEST_FILTERS, under ``$share/<group>/`` when shared subscriptions are switched on."""
    if settings.shared_group is None:
        return list(INGEST_FILTERS)
    return [f"$share/{settings.shared_group}/{topic}" for topic in INGEST_FILTERS]


def stale_filters(settings: IngestSettings) -> list[str]:
    """The filters of the other mode (plain, or the default shared group), to drop."""
    if settings.shared_group is None:
        return [f"$share/{DEFAULT_SHARED_GROUP}/{topic}" for topic in INGEST_FILTERS]
    return list(INGEST_FILTERS)


def every_filter(settings: IngestSettings) -> list[str]:
    """Both forms of the filters, plain and shared: all a worker's session may hold."""
    group = settings.shared_group or DEFAULT_SHARED_GROUP
    return [*INGEST_FILTERS, *(f"$share/{group}/{topic}" for topic in INGEST_FILTERS)]
