"""The commands a TC-200 agent runs: every one of ``shared.command_catalog.CATALOG``.

ping, diagnostics, fetch_logs, reboot, restart_agent, reset_usb, set_config, resend
(asked by ingest, not by people), and firmware (agent/firmware_update.py). Each handler
takes a parsed ``Command`` and returns the result's output; arguments are checked with the
catalogue's models (a refusal is answered "rejected" with the reason), a terminal that
cannot do it raises ``CommandFailed`` (answered "error"). Driver calls run in a worker
thread when the terminal's reads block, so a slow USB answer never stalls the MQTT
loop. This module gathers the facts a diagnostics report needs (USB, host, DNS, TLS,
broker); agent/diagnostics.py judges them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from cryptography import x509

from agent.agent_log import newest_within
from agent.commands import CommandFailed, CommandHandler, CommandRejected
from agent.diagnostics import (
    DeviceFacts,
    DiagnosticsFacts,
    DnsFacts,
    OutboxFacts,
    RoundTripFacts,
    TlsFacts,
    build_report,
    dns_skip_reason,
)
from agent.errors import AgentError, TerminalFault
from agent.firmware_outcome import Progress, UpdateState, outcome_event, progress_event
from agent.firmware_update import FirmwareOptions, FirmwareUpdateFailed, FirmwareUpdater
from agent.outbox import MessageQueue, OutgoingMessage
from agent.tc200_protocol import DeviceInfo, DeviceMetrics, StatusReport
from agent.terminal import UsbTerminal
from agent.usb_driver import TC200Driver
from shared import topics
from shared.command_catalog import (
    CommandRefused,
    FirmwareArgs,
    ResendArgs,
    TerminalConfig,
    check_args,
)
from shared.messages import MAX_PAYLOAD_BYTES, Command, Event, HostMetrics, utcnow
from shared.settings import MqttClientSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

# A result is one MQTT message of at most MAX_PAYLOAD_BYTES: log lines get most of it.
FETCH_LOGS_BUDGET_BYTES = MAX_PAYLOAD_BYTES - 4096
REPORT_LOG_LINES = 50
REPORT_LOG_BUDGET_BYTES = 16 * 1024
# DNS, the TLS handshake and the broker round trip each get this long.
NETWORK_TIMEOUT_S = 5.0
SECONDS_PER_DAY = 86_400.0

LogTail = Callable[[int], list[str]]


class AgentRuntime(Protocol):
    """What handlers read of the running agent; ``agent.runtime.TerminalAgent`` is one."""

    @property
    def serial(self) -> str: ...

    @property
    def mqtt(self) -> MqttClientSettings: ...

    @property
    def tls_context(self) -> ssl.SSLContext | None: ...

    @property
    def outbox(self) -> MessageQueue: ...

    @property
    def started_at(self) -> datetime: ...

    def request_restart(self) -> None: ...

    async def broker_round_trip_ms(self) -> float: ...


def reset_usb_link(terminal: UsbTerminal) -> None:
    """Release the TC-200's interface and claim it again (a fresh handle), or a fault."""

    def relink(driver: TC200Driver) -> None:
        driver.close()
        driver.claim()

    terminal.call(relink)


def _checked(command: Command) -> dict[str, Any]:
    try:
        return check_args(command.name, command.args)
    except CommandRefused as exc:
        raise CommandRejected(str(exc)) from None


# A driver's (retries, stale frames) at the end of the last diagnostics pass over it.
_Baselines = weakref.WeakKeyDictionary[TC200Driver, tuple[int, int]]


@dataclass
class _UsbPass:
    """What one diagnostics pass over USB got before it ended (or failed).

    Retries and stale frames count since the previous pass over the same link, or
    since the link was opened (the open itself may have needed a retry).
    """

    baselines: _Baselines
    info: DeviceInfo | None = None
    status: StatusReport | None = None
    metrics: DeviceMetrics | None = None
    retries: int = 0
    stale_frames: int = 0
    retries_total: int = 0
    stale_frames_total: int = 0

    def read(self, driver: TC200Driver) -> None:
        retries, stale = self.baselines.get(driver, (0, 0))
        try:
            self.info = driver.device_info()
            self.status = driver.status()
            self.metrics = driver.metrics()
        finally:
            self.retries_total, self.stale_frames_total = driver.retries, driver.stale_frames
            self.retries = driver.retries - retries
            self.stale_frames = driver.stale_frames - stale
            self.baselines[driver] = (driver.retries, driver.stale_frames)


class TerminalCommands:
    """The handlers of one terminal's agent; ``handlers()`` is the table to run them by."""

    def __init__(
        self,
        terminal: UsbTerminal,
        runtime: AgentRuntime,
        host_metrics: Callable[[], HostMetrics],
        log_tail: LogTail,
        clock: Callable[[], datetime] = utcnow,
        *,
        firmware: FirmwareOptions | None = None,
    ) -> None:
        self._terminal = terminal
        # None: no [agent] firmware_public_key, and firmware commands fail saying so.
        self._firmware = firmware
        self._runtime = runtime
        self._host_metrics = host_metrics
        self._log_tail = log_tail
        self._clock = clock
        # The TC-200 cannot be asked for its settings: diagnostics shows what was written.
        self._config_written: dict[str, str] = {}
        self._usb_baselines: _Baselines = weakref.WeakKeyDictionary()

    def handlers(self) -> dict[str, CommandHandler]:
        return {
            "ping": self.ping,
            "diagnostics": self.diagnostics,
            "fetch_logs": self.fetch_logs,
            "reboot": self.reboot,
            "restart_agent": self.restart_agent,
            "reset_usb": self.reset_usb,
            "set_config": self.set_config,
            "firmware": self.firmware,
            "resend": self.resend,
        }

    async def _blocking(self, operation: Callable[[], T]) -> T:
        if self._terminal.reads_block:
            return await asyncio.to_thread(operation)
        return operation()

    async def _on_device(self, operation: Callable[[], T]) -> T:
        try:
            return await self._blocking(operation)
        except TerminalFault as fault:
            raise CommandFailed(str(fault)) from fault

    # The commands.

    async def ping(self, command: Command) -> dict[str, Any]:
        received_at = self._clock()
        _checked(command)
        # The console computes the round trip; received_at splits it (clocks permitting).
        return {
            "pong": True,
            "received_at": received_at.isoformat(),
            "agent_started_at": self._runtime.started_at.isoformat(),
        }

    async def fetch_logs(self, command: Command) -> dict[str, Any]:
        wanted = int(_checked(command)["lines"])
        lines, cut = newest_within(self._log_tail(wanted), FETCH_LOGS_BUDGET_BYTES)
        return {"lines": lines, "count": len(lines), "requested": wanted, "truncated": cut}

    async def reboot(self, command: Command) -> dict[str, Any]:
        _checked(command)
        await self._on_device(self._terminal.reboot)
        log.info("%s: TC-200 rebooting (command %s)", self._runtime.serial, command.id)
        return {"rebooting": True}

    async def restart_agent(self, command: Command) -> dict[str, Any]:
        _checked(command)
        log.info(
            "%s: restarting the agent (command %s) once this result is sent",
            self._runtime.serial,
            command.id,
        )
        started_at = self._runtime.started_at
        self._runtime.request_restart()
        return {"restarting": True, "agent_started_at": started_at.isoformat()}

    async def reset_usb(self, command: Command) -> dict[str, Any]:
        _checked(command)
        started = time.perf_counter()
        try:
            await self._blocking(lambda: reset_usb_link(self._terminal))
        except TerminalFault as fault:
            raise CommandFailed(f"cannot reset the USB link: {fault}") from fault
        output: dict[str, Any] = {"reset": True}
        try:
            info = await self._blocking(lambda: self._terminal.call(TC200Driver.device_info))
        except TerminalFault as fault:
            output |= {"answered": False, "error": str(fault)}
        else:
            output |= {
                "answered": True,
                "device": {"serial": info.serial, "model": info.model, "firmware": info.firmware},
            }
        output["took_ms"] = round((time.perf_counter() - started) * 1000, 2)
        log.info(
            "%s: USB link reset (command %s); the TC-200 %s",
            self._runtime.serial,
            command.id,
            "answered" if output["answered"] else f"did not answer: {output.get('error')}",
        )
        return output

    async def set_config(self, command: Command) -> dict[str, Any]:
        config = TerminalConfig.model_validate(_checked(command)).as_device_config()
        await self._on_device(lambda: self._terminal.call(lambda d: d.write_config(config)))
        self._config_written.update(config)
        return {"written": config}

    async def resend(self, command: Command) -> dict[str, Any]:
        """Queue again the numbered messages ingest never received (ingest.gap_repair).

        They go out with their first number, id and time, before this result (the queue
        is FIFO), so ingest has them when it reads which numbers are gone.
        """
        args = ResendArgs.model_validate(_checked(command))
        # On the loop, not in a thread: the queue's SQLite connection is the loop's.
        outcome = self._runtime.outbox.resend(args.stream, args.ranges)
        log.info(
            "%s: resending %d message(s) of stream %s; %d range(s) no longer held (command %s)",
            self._runtime.serial,
            outcome.resent,
            args.stream,
            len(outcome.missing),
            command.id,
        )
        return {
            "stream": outcome.stream,
            "resent": outcome.resent,
            "missing": [list(r) for r in outcome.missing],
        }

    async def firmware(self, command: Command) -> dict[str, Any]:
        """Download, verify and install an image; a redelivered id is answered, not run
        again (agent/commands.py), and a terminal already on the version is not touched.

        Progress events go into the outbox as the update moves on; they leave with the
        next message the agent sends (at the latest this command's result).
        """
        args = FirmwareArgs.model_validate(_checked(command))
        if self._firmware is None:
            raise CommandFailed(
                "this agent takes no firmware: set [agent] firmware_public_key "
                "(TMS_AGENT_FIRMWARE_PUBLIC_KEY) to the platform's public key file"
            )
        updater = FirmwareUpdater(
            self._terminal, self._firmware, run=self._blocking, on_progress=self._progress
        )
        report = await updater.update(args)
        ended = outcome_event(args.version, report.verdict)
        if ended is not None:
            self._queue_event(ended)
        log.info(
            "%s: firmware %s (command %s): %s%s",
            self._runtime.serial,
            args.version,
            command.id,
            report.verdict.state.value,
            f": {report.verdict.reason}" if report.verdict.reason else "",
        )
        if report.verdict.state in (UpdateState.SUCCEEDED, UpdateState.VERIFIED):
            return report.output()
        raise FirmwareUpdateFailed(report)

    def _progress(self, progress: Progress) -> None:
        event = progress_event(progress)
        if event is not None:
            log.info("%s: %s", self._runtime.serial, event.message)
            self._queue_event(event)

    def _queue_event(self, event: Event) -> None:
        topic = topics.event(self._runtime.serial)
        self._runtime.outbox.put(OutgoingMessage(topic, event.to_payload(), droppable=False))

    # Diagnostics: gather facts (here), judge them (agent/diagnostics.py).

    async def diagnostics(self, command: Command) -> dict[str, Any]:
        received_at = self._clock()
        _checked(command)
        device = await self._blocking(self._usb_pass)
        host = self._host_metrics()
        round_trip, dns, tls = await asyncio.gather(self._round_trip(), self._dns(), self._tls())
        outbox = self._runtime.outbox
        facts = DiagnosticsFacts(
            serial=self._runtime.serial,
            broker_host=self._runtime.mqtt.host,
            device=device,
            host=host,
            # Without one in the payload, the model's default is the agent's own clock.
            issued_at=command.issued_at if "issued_at" in command.model_fields_set else None,
            received_at=received_at,
            round_trip=round_trip,
            dns=dns,
            tls=tls,
            outbox=OutboxFacts(len(outbox), outbox.max_messages, outbox.dropped),
        )
        tail, _ = newest_within(self._log_tail(REPORT_LOG_LINES), REPORT_LOG_BUDGET_BYTES)
        report = build_report(
            facts, started_at=received_at, finished_at=self._clock(), log_tail=tail
        )
        return report.model_dump(mode="json")

    def _usb_pass(self) -> DeviceFacts:
        """One GET_INFO, GET_STATUS, GET_METRICS; a fault ends it and is its error."""
        got = _UsbPass(self._usb_baselines)
        started = time.perf_counter()
        error = None
        try:
            self._terminal.call(got.read)
        except TerminalFault as fault:
            error = str(fault)
        return DeviceFacts(
            info=got.info,
            status=got.status,
            metrics=got.metrics,
            error=error,
            duration_ms=(time.perf_counter() - started) * 1000,
            retries=got.retries,
            stale_frames=got.stale_frames,
            retries_total=got.retries_total,
            stale_frames_total=got.stale_frames_total,
            faults_seen=self._terminal.faults,
            config_written=dict(self._config_written),
        )

    async def _round_trip(self) -> RoundTripFacts:
        try:
            milliseconds = await self._runtime.broker_round_trip_ms()
        except AgentError as exc:
            return RoundTripFacts(error=str(exc))
        return RoundTripFacts(milliseconds=milliseconds)

    async def _dns(self) -> DnsFacts | None:
        host, port = self._runtime.mqtt.host, self._runtime.mqtt.port
        if dns_skip_reason(host) is not None:
            return None  # an IP literal or localhost: a fleet of them costs no lookups
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            found = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), NETWORK_TIMEOUT_S
            )
        except (OSError, TimeoutError) as exc:
            took = (loop.time() - started) * 1000
            return DnsFacts(host, error=_describe(exc), duration_ms=took)
        addresses = tuple(dict.fromkeys(str(entry[4][0]) for entry in found))
        return DnsFacts(host, addresses, duration_ms=(loop.time() - started) * 1000)

    async def _tls(self) -> TlsFacts:
        mqtt, context = self._runtime.mqtt, self._runtime.tls_context
        if context is None:
            return TlsFacts(enabled=False)
        ca_days, ca_error = _ca_days_left(mqtt.tls_ca, self._clock())
        handshake = await _tls_handshake(mqtt.host, mqtt.port, context)
        return TlsFacts(
            enabled=True,
            ca_path=None if mqtt.tls_ca is None else str(mqtt.tls_ca),
            ca_days_left=ca_days,
            ca_error=ca_error,
            handshake_error=handshake.error,
            protocol=handshake.protocol,
            cipher=handshake.cipher,
            server_days_left=handshake.server_days_left,
            duration_ms=handshake.duration_ms,
        )


def _describe(exc: BaseException) -> str:
    return str(exc) or exc.__class__.__name__


def _ca_days_left(path: Path | None, now: datetime) -> tuple[float | None, str | None]:
    """Days until the first certificate of the CA file expires, or why it cannot be read."""
    if path is None:
        return None, None  # a context given in code (tests): no file to look at
    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        return None, f"cannot read {path}: {_describe(exc)}"
    expires = min(certificate.not_valid_after_utc for certificate in certificates)
    return (expires - now).total_seconds() / SECONDS_PER_DAY, None


@dataclass(frozen=True, slots=True)
class _Handshake:
    error: str | None = None
    protocol: str | None = None
    cipher: str | None = None
    server_days_left: float | None = None
    duration_ms: float | None = None


async def _tls_handshake(host: str, port: int, context: ssl.SSLContext) -> _Handshake:
    """A fresh TLS handshake with the broker, as the agent's own connection makes it.

    Closed straight after the handshake, before any MQTT: it tests that a reconnect
    would be trusted now, not only the connection made when the agent started.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=host),
            NETWORK_TIMEOUT_S,
        )
    except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
        return _Handshake(error=_describe(exc), duration_ms=(loop.time() - started) * 1000)
    took = (loop.time() - started) * 1000
    ssl_object = writer.get_extra_info("ssl_object")
    peer = writer.get_extra_info("peercert") or {}
    writer.close()
    # The handshake is what was tested; a broker that drops us at once is fine.
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), NETWORK_TIMEOUT_S)
    days = None
    if "notAfter" in peer:
        days = (ssl.cert_time_to_seconds(peer["notAfter"]) - time.time()) / SECONDS_PER_DAY
    cipher = ssl_object.cipher() if ssl_object is not None else None
    return _Handshake(
        protocol=ssl_object.version() if ssl_object is not None else None,
        cipher=cipher[0] if cipher else None,
        server_days_left=days,
        duration_ms=took,
    )


def terminal_handlers(
    terminal: UsbTerminal,
    runtime: AgentRuntime,
    host_metrics: Callable[[], HostMetrics],
    log_tail: LogTail,
    *,
    firmware: FirmwareOptions | None = None,
) -> dict[str, CommandHandler]:
    """The command table for one agent (pass it to TerminalAgent as a factory of runtime);
    without ``firmware`` (FirmwareOptions.from_settings) the agent refuses firmware."""
    return TerminalCommands(terminal, runtime, host_metrics, log_tail, firmware=firmware).handlers()
