"""The fleet simulator: many TerminalAgents in one event loop, each over a simulated TC-200.

Every simulated terminal has its own MQTT connection and credentials, exactly like a
real store PC, so the broker, its ACLs and ingest see a real fleet; and its own TC-200
on a simulated USB bus, read by the real driver (agent/usb_driver.py over
agent/sim/usb_backend.py) inline, since the simulated bus never blocks. Queues are in memory
(agent/outbox.py): a SQLite file per simulated terminal would cost ten thousand files
and fsyncs for nothing a demo needs. Connects are spread
over ``connect_spread_s`` and first heartbeats over one interval, so a thousand
terminals neither stampede the broker at start nor heartbeat in lockstep.

Every command of the catalogue works on a simulated terminal. ``restart_agent``
restarts it in place: the MQTT session ends (result sent, presence offline), the TC-200's
USB link is re-opened and the agent connects again, keeping its in-memory outbox and
recent command ids (a real agent keeps both on disk), so a redelivered command id is not
run twice. ``fetch_logs`` reads the fleet process's log lines that name the terminal.
``firmware`` works when the fleet is given ``FleetFirmware`` (the credentials file's
``firmware`` section): each terminal downloads from the URL in the command with its own
login into a directory of its own, verifies with the platform's public key and installs
over its simulated USB; without it, firmware commands are refused as by a real agent
that has no public key.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from agent.agent_log import LogRing, install_log_ring
from agent.commands import CommandHandler
from agent.errors import AgentError, TerminalFault
from agent.firmware_download import Credentials, DownloadOptions
from agent.firmware_update import FirmwareOptions
from agent.handlers import reset_usb_link, terminal_handlers
from agent.outbox import Outbox
from agent.runtime import (
    AgentOptions,
    RunOutcome,
    TerminalAgent,
    cancel_and_wait,
    tls_context_for,
)
from agent.sim.device import SimulatedHostMetrics
from agent.sim.fleet_file import FleetFirmware
from agent.sim.keepalive import KeepaliveWheel, WheeledClient
from agent.sim.usb_backend import SimulatedUsbBackend, SimulatedUsbTerminal
from agent.terminal import UsbTerminal
from agent.usb_driver import open_terminal
from shared.firmware_signature import FirmwareRejected, load_public_key
from shared.messages import Command
from shared.settings import MqttClientSettings

log = logging.getLogger(__name__)

# Simulated terminals keep less telemetry during an outage than a real agent does:
# a thousand of them share one process's memory.
FLEET_OUTBOX_MAX = 100
# Sent messages each keeps to resend (ingest.gap_repair): minutes of heartbeats, enough
# for a broker crash to be found and repaired, and ~30 KB per terminal.
FLEET_KEEP_SENT = 64
DEFAULT_STATUS_POLL_S = 5.0
# The commands that change the terminal itself: a heartbeat follows each.
DEVICE_COMMANDS = frozenset({"firmware", "reboot", "reset_usb", "set_config"})


@dataclass(frozen=True, slots=True)
class FleetSummary:
    terminals: int
    connected: int
    telemetry_sent: int
    telemetry_dropped: int
    commands_answered: int
    refused_logins: int
    connect_failures: int

    def __str__(self) -> str:
        return (
            f"{self.connected}/{self.terminals} connected, {self.telemetry_sent} telemetry sent, "
            f"{self.telemetry_dropped} dropped, {self.commands_answered} commands answered, "
            f"{self.refused_logins} refused logins, {self.connect_failures} connect failures"
        )


def summarise(agents: Sequence[TerminalAgent]) -> FleetSummary:
    return FleetSummary(
        terminals=len(agents),
        connected=sum(agent.stats.connected for agent in agents),
        telemetry_sent=sum(agent.stats.telemetry_sent for agent in agents),
        telemetry_dropped=sum(agent.outbox.dropped for agent in agents),
        commands_answered=sum(agent.stats.commands_answered for agent in agents),
        refused_logins=sum(agent.stats.refused_logins for agent in agents),
        connect_failures=sum(agent.stats.connect_failures for agent in agents),
    )


def build_fleet(
    terminals: Sequence[tuple[str, str]],
    mqtt: MqttClientSettings,
    heartbeat_interval_s: float,
    fault_rate: float = 0.0,
    *,
    status_poll_s: float = DEFAULT_STATUS_POLL_S,
    usb_glitch_rate: float = 0.0,
    rng: random.Random | None = None,
    keep_sent: int = FLEET_KEEP_SENT,
    firmware: FleetFirmware | None = None,
    keepalive: KeepaliveWheel | None = None,
) -> list[TerminalAgent]:
    """One agent per (serial, secret), each over its own simulated terminal and store PC.

    With ``firmware`` every terminal takes firmware commands; its key is checked here,
    so a fleet with an unreadable key does not start. With ``keepalive`` their MQTT
    keepalives share that wheel (which the caller runs) instead of a task each.

    ``status_poll_s`` applies when terminals fault at random (``fault_rate`` or
    ``usb_glitch_rate``). Otherwise only a command changes a simulated terminal between
    heartbeats (firmware, reboot, configuration), so each terminal is read at its
    heartbeats and after each such command (a heartbeat, which shows e.g. the new
    firmware at once), and an idle terminal costs nothing between heartbeats but its keepalive.
    """
    serials = [serial for serial, _ in terminals]
    if len(set(serials)) != len(serials):
        raise AgentError("the fleet lists a terminal serial more than once")
    rng = rng or random.Random()
    tls_context = tls_context_for(mqtt)  # one context shared by every connection
    firmware_of = firmware_options(firmware) if firmware is not None else _no_firmware
    log_ring = install_log_ring()  # one per process, read per terminal
    faults_at_random = fault_rate > 0 or usb_glitch_rate > 0
    poll_s = min(status_poll_s, heartbeat_interval_s) if faults_at_random else heartbeat_interval_s
    return [
        _simulated_agent(
            serial,
            secret,
            mqtt,
            AgentOptions(
                heartbeat_interval_s=heartbeat_interval_s,
                status_poll_interval_s=poll_s,
                first_heartbeat_delay_s=rng.uniform(0, heartbeat_interval_s),
                outbox_max=FLEET_OUTBOX_MAX,
                quiet=True,
            ),
            SimulatedUsbBackend.for_serial(
                serial,
                fault_rate=fault_rate,
                glitch_rate=usb_glitch_rate,
                rng=random.Random(rng.random()),
            ),
            tls_context,
            random.Random(rng.random()),
            log_ring,
            keep_sent,
            firmware_of(serial, secret),
            keepalive,
        )
        for serial, secret in terminals
    ]


def _no_firmware(serial: str, secret: str) -> None:
    return None


def firmware_options(firmware: FleetFirmware) -> Callable[[str, str], FirmwareOptions]:
    """Each terminal's FirmwareOptions from the fleet's: its own directory and login,
    one TLS context for all; AgentError if the public key or the CA cannot be read."""
    firmware = firmware.anchored(Path.cwd())  # absolute paths stay as they are
    try:
        load_public_key(firmware.public_key.read_bytes())
    except (OSError, FirmwareRejected) as exc:
        raise AgentError(
            f"the fleet's firmware public key {firmware.public_key} is unusable: {exc}; "
            "`tms firmware public-key` prints the platform's"
        ) from exc
    context = None
    if firmware.tls_ca is not None:
        try:
            context = ssl.create_default_context(cafile=str(firmware.tls_ca))
        except (OSError, ssl.SSLError) as exc:
            raise AgentError(
                f"cannot load the fleet's firmware CA {firmware.tls_ca}: {exc}"
            ) from exc
    download = DownloadOptions(read_timeout_s=firmware.read_timeout_s, ssl_context=context)
    directory = firmware.directory
    assert directory is not None  # anchored() set it

    def options(serial: str, secret: str) -> FirmwareOptions:
        return FirmwareOptions(
            public_key=firmware.public_key,
            directory=directory / serial,
            credentials=Credentials(serial, secret),
            download=download,
            boot_wait_s=firmware.boot_wait_s,
        )

    return options


def _simulated_agent(
    serial: str,
    secret: str,
    mqtt: MqttClientSettings,
    options: AgentOptions,
    backend: SimulatedUsbBackend,
    tls_context: ssl.SSLContext | None,
    rng: random.Random,
    log_ring: LogRing,
    keep_sent: int,
    firmware: FirmwareOptions | None,
    keepalive: KeepaliveWheel | None,
) -> TerminalAgent:
    terminal = SimulatedUsbTerminal(lambda: open_terminal(backend=backend), rng=rng)
    host_metrics = SimulatedHostMetrics(serial)
    outbox = Outbox(options.outbox_max, keep_sent=keep_sent)

    def log_tail(count: int) -> list[str]:
        return log_ring.tail(count, containing=serial)

    def handlers(agent: TerminalAgent) -> dict[str, CommandHandler]:
        table = terminal_handlers(terminal, agent, host_metrics, log_tail, firmware=firmware)
        return {
            name: _then_heartbeat(handler, agent) if name in DEVICE_COMMANDS else handler
            for name, handler in table.items()
        }

    return TerminalAgent(
        serial,
        secret,
        mqtt,
        terminal,
        options=options,
        host_metrics=host_metrics,
        handlers=handlers,
        tls_context=tls_context,
        rng=rng,
        queue=outbox,
        mqtt_client=(
            aiomqtt.Client
            if keepalive is None
            else functools.partial(WheeledClient, wheel=keepalive)
        ),
    )


def _then_heartbeat(handler: CommandHandler, agent: TerminalAgent) -> CommandHandler:
    """``handler``, followed by a heartbeat: a terminal read only at its heartbeats still
    reports what the command changed before the command's result."""

    async def run(command: Command) -> dict[str, Any]:
        try:
            return await handler(command)
        finally:
            await agent.send_heartbeat_now()

    return run


async def run_fleet(
    terminals: list[tuple[str, str]],
    mqtt: MqttClientSettings,
    heartbeat_interval_s: float,
    stop: asyncio.Event,
    fault_rate: float = 0.0,
    *,
    connect_spread_s: float = 2.0,
    summary_interval_s: float = 60.0,
    status_poll_s: float = DEFAULT_STATUS_POLL_S,
    usb_glitch_rate: float = 0.0,
    agents_out: list[TerminalAgent] | None = None,
    firmware: FleetFirmware | None = None,
) -> FleetSummary:
    """Run the fleet until ``stop`` is set; every terminal goes offline cleanly.

    ``agents_out``, when given, receives the agents as soon as they exist (tests and
    callers that want live counters read them through ``summarise``). ``firmware``: see
    ``build_fleet``.
    """
    keepalive = KeepaliveWheel.for_keepalive(mqtt.keepalive_s)
    agents = build_fleet(
        terminals,
        mqtt,
        heartbeat_interval_s,
        fault_rate,
        status_poll_s=status_poll_s,
        usb_glitch_rate=usb_glitch_rate,
        firmware=firmware,
        keepalive=keepalive,
    )
    if agents_out is not None:
        agents_out.extend(agents)
    log.info(
        "simulating %d terminals against %s:%s (heartbeat %.1f s, fault rate %g/s)",
        len(agents),
        mqtt.host,
        mqtt.port,
        heartbeat_interval_s,
        fault_rate,
    )
    step = connect_spread_s / len(agents) if agents else 0.0
    tasks = [
        asyncio.create_task(_run_agent(agent, stop, index * step), name=f"agent-{agent.serial}")
        for index, agent in enumerate(agents)
    ]
    reporter = asyncio.create_task(_report(agents, summary_interval_s))
    keepalives = asyncio.create_task(keepalive.run(), name="keepalive-wheel")
    try:
        await asyncio.gather(*tasks)
    finally:
        await cancel_and_wait([reporter, *tasks])
        await cancel_and_wait([keepalives])
    summary = summarise(agents)
    log.info("fleet stopped: %s", summary)
    return summary


async def _run_agent(agent: TerminalAgent, stop: asyncio.Event, start_delay_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), start_delay_s)
    if stop.is_set():
        return
    try:
        while await agent.run(stop) is RunOutcome.RESTART:
            _reopen_device(agent)
            log.info("%s: agent restarted (simulated: reconnecting)", agent.serial)
    except Exception:
        # The per-terminal guard: one broken simulated terminal must not end the fleet.
        log.exception("%s: simulated terminal stopped with an error", agent.serial)


def _reopen_device(agent: TerminalAgent) -> None:
    """What a restarted agent does first: open the TC-200 afresh."""
    if isinstance(agent.device, UsbTerminal):
        try:
            reset_usb_link(agent.device)
        except TerminalFault as fault:
            # Reported as usual: the terminal's status and events, and its reopen backoff.
            log.info("%s: the TC-200 did not reopen after the restart: %s", agent.serial, fault)


async def _report(agents: Sequence[TerminalAgent], interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        log.info("fleet: %s", summarise(agents))
