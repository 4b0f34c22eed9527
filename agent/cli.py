"""``tms agent`` and ``tms simulate``: the store-PC agent and the fleet simulator."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click

from agent.errors import AgentError
from agent.fleet_file import load_fleet_file
from agent.runtime import AgentOptions, TerminalAgent
from agent.simulated_device import SimulatedTC200
from agent.simulator import run_fleet
from shared import topics
from shared.settings import AgentSettings, Settings, load_settings

log = logging.getLogger(__name__)

T = TypeVar("T")


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


def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[T]]) -> T:
    """Run ``main(stop)`` in a fresh event loop; SIGTERM and SIGINT set ``stop``."""

    async def runner() -> T:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            return await main(stop)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    return asyncio.run(runner())


def _settings(ctx: click.Context, config_file: Path | None) -> Settings:
    from tms.cli import settings_of  # here, because tms.cli imports this module

    return load_settings(config_file) if config_file is not None else settings_of(ctx)


def _configure_logging() -> None:
    from tms.cli import configure_logging

    configure_logging()


@click.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML configuration file; overrides the one given to `tms --config`.",
)
@click.pass_context
def agent(ctx: click.Context, config_file: Path | None) -> None:
    """Run the store-PC agent for one TC-200 until SIGTERM or Ctrl-C."""
    settings = _settings(ctx, config_file).agent
    serial, secret = agent_credentials(settings)
    _configure_logging()
    # The simulated terminal stands in until the pyusb TC-200 driver lands.
    terminal_agent = TerminalAgent(
        serial,
        secret,
        settings.mqtt,
        SimulatedTC200(serial),
        options=AgentOptions.from_settings(settings),
    )
    log.info(
        "agent for %s starting (broker %s:%s, heartbeat %.0f s)",
        serial,
        settings.mqtt.host,
        settings.mqtt.port,
        settings.heartbeat_interval_s,
    )
    run_until_signalled(terminal_agent.run)


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
    from tms.cli import settings_of

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

    def fleet_main(stop: asyncio.Event) -> Awaitable[object]:
        return run_fleet(
            credentials,
            fleet.mqtt_settings(),
            heartbeat_s if heartbeat_s is not None else settings.heartbeat_interval_s,
            stop,
            fault_rate if fault_rate is not None else settings.fault_rate,
            connect_spread_s=settings.connect_spread_s,
        )

    run_until_signalled(fleet_main)
