"""``TerminalAgent``: one TC-200's MQTT connection, heartbeats and command answers.

The transport is a thin shell (STYLE habit 4): it connects with the terminal's own
credentials, keeps retained presence on ``.../status`` (online on connect, offline as the
last will and on a clean stop), sends telemetry from a bounded outbox, and hands every
command to ``CommandProcessor``. A ``restart_agent`` command ends ``run`` with
``RunOutcome.RESTART`` once its result is out; the caller restarts (cli: re-exec,
simulator: reconnect). What is sent and when lives in pure modules
(heartbeat, outbox, commands, backoff) that are tested without a broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, TypeAlias

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.reasoncodes import ReasonCode

from agent.commands import DEFAULT_HANDLERS, CommandHandler, CommandProcessor
from agent.device import DeviceState, TerminalDevice
from agent.errors import AgentError
from agent.heartbeat import HeartbeatSchedule, telemetry_from
from agent.host_metrics import read_host_metrics
from agent.outbox import MessageQueue, Outbox, OutgoingMessage, RecentCommands
from shared import topics
from shared.backoff import Backoff
from shared.messages import (
    DeviceError,
    DeviceStatus,
    Event,
    HostMetrics,
    Presence,
    PresenceState,
    utcnow,
)
from shared.settings import AgentSettings, MqttClientSettings

log = logging.getLogger(__name__)

WILL_REASON = "agent disconnected"
STOP_REASON = "agent stopped"
RESTART_REASON = "agent restarting"
# CONNACK codes meaning "wrong credentials" (MQTT 3.1.1: 4, 5; MQTT 5: 134, 135).
REFUSED_LOGIN_CODES = frozenset({4, 5, 134, 135})
# A session that lasted this long counts as healthy: the next failure starts backoff afresh.
STABLE_SESSION_S = 30.0
# On a clean stop, queued telemetry gets this long to go out before the offline presence.
STOP_FLUSH_S = 2.0
# Before a restart the queue gets longer: the restart_agent result must go out first.
RESTART_FLUSH_S = 10.0
COMMAND_QOS = 1
CANCEL_RETRY_S = 0.5
INCOMING_QUEUE_MAX = 100


class RunOutcome(Enum):
    """Why ``TerminalAgent.run`` returned."""

    STOPPED = "stopped"  # the stop event was set
    RESTART = "restart"  # a restart_agent command asked for it; its result is sent


@dataclass(frozen=True, slots=True)
class AgentOptions:
    """How one agent paces itself; ``quiet`` logs connection churn at DEBUG (fleets)."""

    heartbeat_interval_s: float = 300.0
    status_poll_interval_s: float = 1.0
    first_heartbeat_delay_s: float = 0.0
    outbox_max: int = 1000
    reconnect_base_s: float = 0.5
    reconnect_max_s: float = 60.0
    # Bounds a CONNACK, SUBACK or PUBACK wait; a broker that accepts TCP but never
    # answers MQTT costs this long per attempt.
    mqtt_timeout_s: float = 10.0
    quiet: bool = False

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> AgentOptions:
        return cls(
            heartbeat_interval_s=settings.heartbeat_interval_s,
            status_poll_interval_s=settings.status_poll_interval_s,
            outbox_max=settings.outbox_max,
            reconnect_max_s=settings.reconnect_max_s,
        )


@dataclass
class AgentStats:
    """Counters an operator (or the simulator's summary) reads; updated as things happen."""

    connected: bool = False
    connects: int = 0
    connect_failures: int = 0
    refused_logins: int = 0
    telemetry_queued: int = 0
    events_queued: int = 0
    # Everything sent from the queue: heartbeats, events and command results.
    telemetry_sent: int = 0
    commands_answered: int = 0
    device_read_failures: int = 0
    last_error: str | None = None


def tls_context_for(mqtt: MqttClientSettings) -> ssl.SSLContext | None:
    """A verifying TLS context when ``tls_ca`` is set; build it once and share it in a fleet."""
    if mqtt.tls_ca is None:
        return None
    try:
        return ssl.create_default_context(cafile=str(mqtt.tls_ca))
    except (OSError, ssl.SSLError) as exc:
        raise AgentError(
            f"cannot load the broker CA certificate {mqtt.tls_ca}: {exc}; "
            "check [agent.mqtt] tls_ca (TMS_AGENT_MQTT_TLS_CA)"
        ) from exc


def is_refused_login(exc: aiomqtt.MqttCodeError) -> bool:
    """True when a CONNACK said the credentials are wrong (not: broker busy or down)."""
    code = exc.rc.value if isinstance(exc.rc, ReasonCode) else exc.rc
    return code in REFUSED_LOGIN_CODES


async def cancel_and_wait(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until every one has ended.

    Cancels again while any is left: on Python 3.11, ``asyncio.wait_for`` (which aiomqtt
    uses for every acknowledgement) swallows a cancellation that lands just as the
    awaited operation completes, and the task would carry on.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=CANCEL_RETRY_S)


def _payload_bytes(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()


# The command table, or a function that builds it from the agent (the handlers that
# restart the agent or measure its broker round trip need the agent itself).
HandlerTable: TypeAlias = Mapping[str, CommandHandler]
HandlersFor: TypeAlias = Callable[["TerminalAgent"], HandlerTable]


class TerminalAgent:
    """Runs one terminal until ``stop`` is set; construct it cheaply, ``run`` does the I/O."""

    def __init__(
        self,
        serial: str,
        secret: str,
        mqtt: MqttClientSettings,
        device: TerminalDevice,
        *,
        options: AgentOptions | None = None,
        host_metrics: Callable[[], HostMetrics] = read_host_metrics,
        handlers: HandlerTable | HandlersFor = DEFAULT_HANDLERS,
        tls_context: ssl.SSLContext | None = None,
        rng: random.Random | None = None,
        queue: MessageQueue | None = None,
        recent_commands: RecentCommands | None = None,
        mqtt_client: Callable[..., aiomqtt.Client] = aiomqtt.Client,
    ) -> None:
        if not secret:
            raise AgentError(f"no MQTT secret for terminal {serial}")
        self.serial = topics.check_serial(serial)
        self.options = options or AgentOptions()
        self.stats = AgentStats()
        # On disk (agent/state_file.py) for the real agent, in memory for the fleet simulator.
        self.outbox: MessageQueue = queue if queue is not None else Outbox(self.options.outbox_max)
        self.started_at: datetime = utcnow()
        self._secret = secret
        self._mqtt = mqtt
        self._device = device
        self._host_metrics = host_metrics
        self._tls_context = tls_context if tls_context is not None else tls_context_for(mqtt)
        self._rng = rng or random.Random()
        self._outbox_ready = asyncio.Event()
        # Set by a flush that emptied the outbox (a restart waits for it).
        self._outbox_empty = asyncio.Event()
        self._status_topic = topics.status(self.serial)
        self._connection_level = logging.DEBUG if self.options.quiet else logging.INFO
        self._client: aiomqtt.Client | None = None
        # The fleet simulator passes a subclass that shares one keepalive timer per loop.
        self._mqtt_client = mqtt_client
        self._restart_pending = False
        # The command being run. It belongs to the agent, not to a session: a broker lost
        # mid-command must not cancel it (its id is remembered, so the sender's resend
        # would be ignored as "still running" and no result would ever come).
        self._answering: asyncio.Task[None] | None = None
        # Last, so a handler factory sees a complete agent.
        table = handlers if isinstance(handlers, Mapping) else handlers(self)
        self.commands = CommandProcessor(self.serial, table, recent=recent_commands)

    # What command handlers read of the running agent (agent.handlers.AgentRuntime).

    @property
    def device(self) -> TerminalDevice:
        return self._device

    @property
    def mqtt(self) -> MqttClientSettings:
        return self._mqtt

    @property
    def tls_context(self) -> ssl.SSLContext | None:
        return self._tls_context

    def request_restart(self) -> None:
        """End ``run`` with RunOutcome.RESTART once the current command's result is sent."""
        self._restart_pending = True

    async def send_heartbeat_now(self) -> None:
        """Queue a heartbeat from a fresh reading now, outside the schedule (the fleet
        simulator, which reads its terminals only at heartbeats, after each command)."""
        self._queue_telemetry(await self._read_device(metrics=True))

    async def broker_round_trip_ms(self) -> float:
        """Milliseconds for the broker to acknowledge a request, or AgentError.

        The request is a SUBSCRIBE of the agent's own command filter: the broker answers
        it like a PUBACK, through its ACL, but, unlike a publish, nobody else receives
        anything (subscribing again to the same filter replaces it, losing nothing).
        """
        client = self._client
        if client is None:
            raise AgentError("not connected to the broker")
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await client.subscribe(
                topics.command_filter(self.serial),
                qos=COMMAND_QOS,
                timeout=self.options.mqtt_timeout_s,
            )
        except aiomqtt.MqttError as exc:
            raise AgentError(f"the broker did not acknowledge a SUBSCRIBE: {exc}") from exc
        return (loop.time() - started) * 1000

    async def run(self, stop: asyncio.Event) -> RunOutcome:
        """Heartbeat and stay connected until ``stop`` is set, then go offline cleanly.

        Returns RunOutcome.RESTART instead when a restart_agent command asked for it;
        ``run`` may then be called again on the same agent.
        """
        self._restart_pending = False
        self.started_at = utcnow()
        producer = asyncio.create_task(self._produce_telemetry(), name=f"telemetry-{self.serial}")
        try:
            await self._stay_connected(stop)
        finally:
            # A command still running when the agent stops is cancelled: the processor
            # keeps an "interrupted" result for the sender's resend to find.
            leftover = [self._answering] if self._answering is not None else []
            self._answering = None
            await cancel_and_wait([producer, *leftover])
        if self._restart_pending and not stop.is_set():
            return RunOutcome.RESTART
        return RunOutcome.STOPPED

    # Telemetry: produced whether or not the broker is reachable.

    async def _produce_telemetry(self) -> None:
        loop = asyncio.get_running_loop()
        options = self.options
        schedule = HeartbeatSchedule(
            options.heartbeat_interval_s, options.first_heartbeat_delay_s, loop.time()
        )
        while True:
            # Status alone on most polls; metrics only when a heartbeat goes out.
            state = await self._read_device(metrics=False)
            now = loop.time()
            if schedule.should_send(state.status, now):
                if state.status is not DeviceStatus.UNPLUGGED:
                    state = await self._read_device(metrics=True)
                self._queue_telemetry(state)
                schedule.sent(state.status, now)
            self._queue_events(self._device.take_events())
            await asyncio.sleep(
                schedule.seconds_until_next_poll(loop.time(), options.status_poll_interval_s)
            )

    async def _read_device(self, metrics: bool) -> DeviceState:
        try:
            if self._device.reads_block:
                return await asyncio.to_thread(self._device.read_state, metrics)
            return self._device.read_state(metrics)
        except Exception as exc:
            # The per-reading guard: a driver fault is reported as a terminal error,
            # never allowed to silence the heartbeat.
            self.stats.device_read_failures += 1
            log.exception("%s: reading the terminal failed", self.serial)
            error = DeviceError(code="AGENT-READ", message=f"cannot read the terminal: {exc}")
            return DeviceState(status=DeviceStatus.ERROR, errors=(error,))

    def _queue_telemetry(self, state: DeviceState) -> None:
        telemetry = telemetry_from(state, self._host_metrics())
        self.outbox.put(OutgoingMessage(topics.telemetry(self.serial), telemetry.to_payload()))
        self.stats.telemetry_queued += 1
        self._outbox_ready.set()

    def _queue_events(self, events: list[Event]) -> None:
        for event in events:
            topic = topics.event(self.serial)
            self.outbox.put(OutgoingMessage(topic, event.to_payload(), droppable=False))
            self.stats.events_queued += 1
        if events:
            self._outbox_ready.set()

    # The connection: connect, serve, reconnect with backoff.

    async def _stay_connected(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        backoff = Backoff(self.options.reconnect_base_s, self.options.reconnect_max_s, self._rng)
        while not stop.is_set():
            started = loop.time()
            try:
                await self._session(stop, backoff)
            except MqttConnectError as exc:
                delay = self._connect_refused(exc, backoff)
            except aiomqtt.MqttError as exc:
                if loop.time() - started >= STABLE_SESSION_S:
                    backoff.reset()
                delay = backoff.next_delay()
                self.stats.connect_failures += 1
                self.stats.last_error = str(exc)
                log.log(
                    self._connection_level,
                    "%s: no connection to the broker at %s:%s (%s); retrying in %.1f s",
                    self.serial,
                    self._mqtt.host,
                    self._mqtt.port,
                    exc,
                    delay,
                )
            else:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    def _connect_refused(self, exc: MqttConnectError, backoff: Backoff) -> float:
        self.stats.last_error = str(exc)
        if not is_refused_login(exc):
            self.stats.connect_failures += 1
            delay = backoff.next_delay()
            log.log(
                self._connection_level,
                "%s: broker refused the connection (%s); retrying in %.1f s",
                self.serial,
                exc,
                delay,
            )
            return delay
        self.stats.refused_logins += 1
        delay = backoff.refused_delay()
        # Loud the first time even in a quiet fleet: bad credentials need a person.
        loud = self.stats.refused_logins == 1 or not self.options.quiet
        level = logging.ERROR if loud else logging.DEBUG
        log.log(
            level,
            "%s: the broker refused the login (%s): check the terminal's serial and secret "
            "(the secret is printed once by `tms terminal add`); retrying in %.0f s",
            self.serial,
            exc,
            delay,
        )
        return delay

    def _new_client(self) -> aiomqtt.Client:
        will = Presence(state=PresenceState.OFFLINE, reason=WILL_REASON).to_payload()
        return self._mqtt_client(
            self._mqtt.host,
            self._mqtt.port,
            username=self.serial,
            password=self._secret,
            identifier=self.serial,
            will=aiomqtt.Will(self._status_topic, will, qos=1, retain=True),
            # A persistent session: QoS 1 commands sent during a short outage are delivered
            # on reconnect (duplicates are answered once; stale ones carry expires_at).
            clean_session=False,
            keepalive=self._mqtt.keepalive_s,
            tls_context=self._tls_context,
            max_queued_incoming_messages=INCOMING_QUEUE_MAX,
            timeout=self.options.mqtt_timeout_s,
        )

    async def _session(self, stop: asyncio.Event, backoff: Backoff) -> None:
        async with self._new_client() as client:
            self.stats.connected = True
            self.stats.connects += 1
            self._client = client
            try:
                log.log(self._connection_level, "%s: connected to the broker", self.serial)
                # Subscribed before announcing online, so "online" means commands reach it.
                await client.subscribe(topics.command_filter(self.serial), qos=COMMAND_QOS)
                online = Presence(state=PresenceState.ONLINE, ts=utcnow())
                await client.publish(self._status_topic, online.to_payload(), qos=1, retain=True)
                if backoff.attempt:
                    backoff.reset()
                # A restart asked for in an earlier session only needs its result sent.
                if not self._restart_pending:
                    await self._serve(client, stop)
                await self._leave(client)
            finally:
                self.stats.connected = False
                self._client = None

    async def _leave(self, client: aiomqtt.Client) -> None:
        """Send what is queued (briefly), then say offline: stopped, or restarting."""
        loop = asyncio.get_running_loop()
        restarting = self._restart_pending
        flush_s = RESTART_FLUSH_S if restarting else STOP_FLUSH_S
        await self._flush(client, deadline=loop.time() + flush_s)
        reason = RESTART_REASON if restarting else STOP_REASON
        offline = Presence(state=PresenceState.OFFLINE, ts=utcnow(), reason=reason)
        await client.publish(self._status_topic, offline.to_payload(), qos=1, retain=True)
        log.log(self._connection_level, "%s: %s, presence offline", self.serial, reason)

    async def _serve(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        """Answer commands and send telemetry until stop or a restart (returns) or
        disconnect (raises)."""
        tasks = [
            asyncio.create_task(self._answer_commands(client)),
            asyncio.create_task(self._send_telemetry(client)),
            asyncio.create_task(stop.wait()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(tasks)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _answer_commands(self, client: aiomqtt.Client) -> None:
        if self._answering is not None:
            # The last session ended mid-command: its result goes out through the outbox
            # before the next command starts, so commands still run one at a time.
            await self._finish_command(self._answering)
            if self._restart_pending:
                await self._settle_before_restart(client)
                return
        async for message in client.messages:
            await self._finish_command(asyncio.create_task(self._answer(message)))
            if self._restart_pending:
                await self._settle_before_restart(client)
                return  # the session ends: offline presence, then the restart

    async def _finish_command(self, task: asyncio.Task[None]) -> None:
        """Wait for a command's task; a cancelled session leaves it running."""
        self._answering = task
        try:
            await asyncio.shield(task)
        finally:
            if task.done():
                self._answering = None

    async def _answer(self, message: aiomqtt.Message) -> None:
        reply = await self.commands.process(str(message.topic), _payload_bytes(message.payload))
        if reply is None:
            return
        # Through the queue: in order, and kept on disk until the broker has it.
        result = OutgoingMessage(reply.topic, reply.result.to_payload(), droppable=False)
        self.outbox.put(result)
        self._outbox_ready.set()
        self.stats.commands_answered += 1

    async def _settle_before_restart(self, client: aiomqtt.Client) -> None:
        """Answer the commands already received and send every result, within a deadline.

        paho acknowledges a QoS 1 command as it arrives, so the broker never delivers a
        command waiting in the client's queue again: it is answered now or it is lost
        (to come back only as the sender's retry). Waiting here for the sender task to
        empty the outbox, rather than cancelling it, also keeps a result that is being
        published from being published twice.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RESTART_FLUSH_S
        while True:
            while len(client.messages):
                await self._answer(await anext(client.messages))
            self._outbox_empty.clear()
            self._outbox_ready.set()
            try:
                await asyncio.wait_for(self._outbox_empty.wait(), deadline - loop.time())
            except TimeoutError:
                return  # what is left stays queued and is sent after the restart
            if not len(client.messages):
                return

    async def _send_telemetry(self, client: aiomqtt.Client) -> None:
        while True:
            await self._flush(client)
            await self._outbox_ready.wait()

    async def _flush(self, client: aiomqtt.Client, deadline: float | None = None) -> None:
        """Publish the outbox oldest first; each message leaves it only once acknowledged.

        With ``deadline`` (loop time), no new message is started after it.
        """
        loop = asyncio.get_running_loop()
        self._outbox_ready.clear()
        while (queued := self.outbox.peek()) is not None:
            if deadline is not None and loop.time() >= deadline:
                return
            message = queued.message
            await client.publish(
                message.topic, message.payload, qos=message.qos, retain=message.retain
            )
            self.outbox.done(queued)
            self.stats.telemetry_sent += 1
        self._outbox_empty.set()
