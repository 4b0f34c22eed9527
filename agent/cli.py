"""``tms agent`` and ``tms simulate``: the store-PC agent and the fleet simulator."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import NoReturn, TypeVar

import click

from agent.agent_log import LOG_FORMAT, install_log_ring
from agent.errors import AgentError
from agent.firmware_update import FirmwareOptions
from agent.handlers import terminal_handlers
from agent.host_metrics import read_host_metrics
from agent.runtime import AgentOptions, RunOutcome, TerminalAgent
from agent.sim.fleet import FleetSummary, run_fleet
from agent.sim.fleet_file import load_fleet_file
from agent.sim.fleet_processes import run_in_processes, worker_count
from agent.sim.usb_backend import SimulatedUsbBackend, SimulatedUsbTerminal
from agent.state_file import StateFile
from agent.terminal import UsbTerminal
from agent.usb_driver import open_terminal
from shared import topics
from shared.cli_support import run_until_signalled
from shared.settings import AgentSettings, Settings, load_settings

log = logging.getLogger(__name__)

T = TypeVar("T")
# EX_TEMPFAIL: the agent asked to be restarted but could not re-exec itself; systemd's
# Restart=always (deploy/systemd/tms-agent.service) starts it again.
EXIT_RESTART = 75


def agent_credentials(settings: AgentSettings) -> tuple[str, str]:
    """The terminal's (serial, secret), or AgentError saying which setting is missing."""
    if not settings.serial:
        raise AgentError(
            "no terminal serial: set [agent] serial in the config file or TMS_AGENT_SERIAL"
        )
    serial = topics.check_serial(settings.serial)
    username = settings.mqtt.username
    if username is not None and username != serial:
        raise AgentError(
            f"[agent.mqtt] username {username!r} must equal [agent] serial {serial!r}: "
            "a terminal logs in to the broker as its serial"
        )
    if settings.mqtt.password is None or not settings.mqtt.password.get_secret_value():
        raise AgentError(
            f"no MQTT secret for terminal {serial}: set TMS_AGENT_MQTT_PASSWORD (or "
            "[agent.mqtt] password) to the secret `tms terminal add` printed"
        )
    return serial, settings.mqtt.password.get_secret_value()


def _settings(ctx: click.Context, config_file: Path | None) -> Settings:
    from shared.cli_support import settings_of

    return load_settings(config_file) if config_file is not None else settings_of(ctx)


def _configure_logging() -> None:
    from shared.cli_support import configure_logging

    configure_logging()


def state_dir_of(settings: AgentSettings, data_dir: Path) -> Path:
    """Where the agent keeps its files: the setting, systemd's StateDirectory, or data_dir."""
    if settings.state_dir is not None:
        return settings.state_dir
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    return data_dir / "agent"


def add_log_file(settings: AgentSettings) -> None:
    """Also log to ``[agent] log_path``, rotated, for a PC nobody watches."""
    if settings.log_path is None:
        return
    try:
        settings.log_path.parent.mkdir(parents=True, exist_ok=True)
        handler = RotatingFileHandler(
            settings.log_path,
            maxBytes=settings.log_max_bytes,
            backupCount=settings.log_backups,
            encoding="utf-8",
        )
    except OSError as exc:
        raise AgentError(
            f"cannot write the agent log {settings.log_path}: {exc.strerror}; "
            "check [agent] log_path (TMS_AGENT_LOG_PATH)"
        ) from exc
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)


def restart_process() -> NoReturn:
    """Replace this process with a fresh agent, same pid and arguments (restart_agent).

    A re-exec restarts the agent wherever it runs (systemd, a shell, a test) at once; if
    it fails, exiting with EXIT_RESTART leaves it to systemd.
    """
    log.info("re-executing the agent: %s", " ".join(sys.orig_argv))
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    for handler in logging.getLogger().handlers:
        handler.flush()
    try:
        os.execv(sys.executable, sys.orig_argv)
    except OSError as exc:
        log.error("cannot re-execute the agent (%s); exiting for systemd to restart it", exc)
    raise SystemExit(EXIT_RESTART)


def build_terminal(settings: AgentSettings, serial: str) -> UsbTerminal:
    """The TC-200 on USB, or with ``simulated_device`` one on a simulated bus."""
    vendor_id, product_id = settings.usb_vendor_id, settings.usb_product_id
    timeout_ms = settings.usb_timeout_ms
    if settings.simulated_device:
        backend = SimulatedUsbBackend.for_serial(serial, vendor_id=vendor_id, product_id=product_id)
        return SimulatedUsbTerminal(
            lambda: open_terminal(vendor_id, product_id, backend=backend, timeout_ms=timeout_ms),
            reopen_max_s=settings.usb_retry_max_s,
        )
    return UsbTerminal(
        lambda: open_terminal(vendor_id, product_id, timeout_ms=timeout_ms),
        reopen_max_s=settings.usb_retry_max_s,
    )


@click.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML configuration file; overrides the one given to `tms --config`.",
)
@click.option(
    "--simulated-device",
    is_flag=True,
    default=None,
    help="Use a simulated TC-200 (demos); same as [agent] simulated_device = true.",
)
@click.pass_context
def agent(ctx: click.Context, config_file: Path | None, simulated_device: bool | None) -> None:
    """Run the store-PC agent for one TC-200 until SIGTERM or Ctrl-C."""
    all_settings = _settings(ctx, config_file)
    settings = all_settings.agent
    if simulated_device:
        settings = settings.model_copy(update={"simulated_device": True})
    serial, secret = agent_credentials(settings)
    _configure_logging()
    add_log_file(settings)
    log_ring = install_log_ring()
    state_dir = state_dir_of(settings, all_settings.paths.data_dir)
    queue_path = settings.queue_path or (state_dir / "queue.sqlite3")
    firmware = FirmwareOptions.from_settings(settings, state_dir, serial, secret)
    state_file = StateFile(queue_path, settings.outbox_max, keep_sent=settings.resend_keep)
    terminal = build_terminal(settings, serial)
    terminal_agent = TerminalAgent(
        serial,
        secret,
        settings.mqtt,
        terminal,
        options=AgentOptions.from_settings(settings),
        handlers=lambda runtime: terminal_handlers(
            terminal, runtime, read_host_metrics, log_ring.tail, firmware=firmware
        ),
        queue=state_file,
        recent_commands=state_file,
    )
    log.info(
        "agent for %s starting (broker %s:%s, heartbeat %.0f s, %s terminal, queue %s "
        "holding %d messages)",
        serial,
        settings.mqtt.host,
        settings.mqtt.port,
        settings.heartbeat_interval_s,
        "simulated" if settings.simulated_device else "USB",
        queue_path,
        len(state_file),
    )
    try:
        outcome = run_until_signalled(terminal_agent.run)
    finally:
        state_file.close()
    if outcome is RunOutcome.RESTART:
        restart_process()


@click.command()
@click.option(
    "--terminals",
    "terminal_count",
    type=click.IntRange(min=1),
    default=None,
    help="How many terminals of the credentials file to simulate (default: all of them).",
)
@click.option(
    "--credentials-file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help='JSON {"terminals": [{"serial", "secret"}], "mqtt": {"host", "port"}}.',
)
@click.option(
    "--heartbeat",
    "heartbeat_s",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds between heartbeats (default: [simulate] heartbeat_interval_s).",
)
@click.option(
    "--fault-rate",
    type=click.FloatRange(min=0, max=1),
    default=None,
    help="Faults per terminal per second (default: [simulate] fault_rate).",
)
@click.pass_context
def simulate(
    ctx: click.Context,
    terminal_count: int | None,
    credentials_file: Path,
    heartbeat_s: float | None,
    fault_rate: float | None,
) -> None:
    """Run a simulated fleet of TC-200 agents, each with its own broker login."""
    from shared.cli_support import settings_of

    settings = settings_of(ctx).simulate
    fleet = load_fleet_file(credentials_file)
    credentials = fleet.credentials()
    if terminal_count is not None:
        if terminal_count > len(credentials):
            raise AgentError(
                f"{credentials_file} holds {len(credentials)} terminals, fewer than "
                f"--terminals {terminal_count}; provision more or ask for fewer"
            )
        credentials = credentials[:terminal_count]
    if not credentials:
        raise AgentError(f"{credentials_file} holds no terminals to simulate")
    _configure_logging()

    heartbeat = heartbeat_s if heartbeat_s is not None else settings.heartbeat_interval_s
    faults = fault_rate if fault_rate is not None else settings.fault_rate
    mqtt = fleet.mqtt_settings()

    def run_slice(terminals: list[tuple[str, str]]) -> FleetSummary:
        def fleet_main(stop: asyncio.Event) -> Awaitable[FleetSummary]:
            return run_fleet(
                terminals,
                mqtt,
                heartbeat,
                stop,
                faults,
                connect_spread_s=settings.connect_spread_s,
                status_poll_s=settings.status_poll_interval_s,
                usb_glitch_rate=settings.usb_glitch_rate,
                firmware=fleet.firmware,
            )

        return run_until_signalled(fleet_main)

    processes = worker_count(len(credentials), settings.processes)
    if processes == 1:
        run_slice(credentials)
    else:
        log.info("splitting %d terminals over %d processes", len(credentials), processes)
        run_in_processes(credentials, processes, run_slice)
