"""``tms broker`` and ``tms terminal``: run the MQTT broker, provision terminals."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click
from sqlmodel import Session

from shared.db import make_engine

T = TypeVar("T")


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Data directory; the broker keeps its files in <data-dir>/broker.",
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="MQTT port (overrides settings)."
)
@click.pass_context
def broker(ctx: click.Context, data_dir: Path | None, port: int | None) -> None:
    """Run the MQTT broker (Mosquitto) with the accounts stored in the database.

    Credential changes in the database take effect within a second, without a restart.
    """
    from broker.service import run_broker_service
    from tms.cli import configure_logging, database_url_of, settings_of
    from tms.ports import ensure_port_free

    configure_logging()
    settings = settings_of(ctx)
    broker_settings = settings.broker
    if port is not None:
        broker_settings = broker_settings.model_copy(update={"port": port})
    database_url = database_url_of(ctx)
    broker_dir = (data_dir or settings.paths.data_dir).resolve() / "broker"
    ensure_port_free(
        broker_settings.host, broker_settings.port, "MQTT broker", "--port or TMS_BROKER_PORT"
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    run_broker_service(broker_settings, database_url, broker_dir, stop)


def _in_session(ctx: click.Context, work: Callable[[Session], T]) -> T:
    """Run ``work`` in one transaction against the configured database and commit it."""
    from tms.cli import database_url_of

    engine = make_engine(database_url_of(ctx), pool_size=1)
    try:
        with Session(engine) as session:
            result = work(session)
            session.commit()
            return result
    finally:
        engine.dispose()


def _show_secret(username: str, secret: str) -> None:
    click.echo(f"MQTT username: {username}")
    click.echo(f"MQTT secret:   {secret}")
    click.echo(
        "Put the secret in the terminal's agent configuration now "
        "(TMS_AGENT_MQTT_PASSWORD): it is not stored and will not be shown again.",
        err=True,
    )


@click.group()
def terminal() -> None:
    """Provision and manage terminals."""


@terminal.command("add")
@click.argument("serial")
@click.option("--customer", required=True, help="Customer name (created if new).")
@click.option("--store", "store_code", default=None, help="Store code (created if new).")
@click.pass_context
def add_terminal(ctx: click.Context, serial: str, customer: str, store_code: str | None) -> None:
    """Register terminal SERIAL and print its broker secret (shown only once)."""
    from broker.provisioning import provision_terminal

    secret = _in_session(ctx, lambda s: provision_terminal(s, serial, customer, store_code))
    click.echo(f"Terminal {serial} added for customer {customer!r}.")
    _show_secret(serial, secret)


@terminal.command("rotate")
@click.argument("serial")
@click.pass_context
def rotate_terminal(ctx: click.Context, serial: str) -> None:
    """Give terminal SERIAL a new broker secret; the old one stops working."""
    from broker.provisioning import rotate_secret

    secret = _in_session(ctx, lambda s: rotate_secret(s, serial))
    click.echo(f"New secret for {serial}.")
    _show_secret(serial, secret)


@terminal.command("revoke")
@click.argument("serial")
@click.pass_context
def revoke_terminal(ctx: click.Context, serial: str) -> None:
    """Refuse terminal SERIAL at the broker; a live session is dropped within seconds."""
    from broker.provisioning import revoke

    _in_session(ctx, lambda s: revoke(s, serial))
    click.echo(f"Broker access of {serial} revoked.")
