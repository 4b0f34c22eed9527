"""``tms broker`` and ``tms terminal``: run the MQTT broker, provision terminals."""

from __future__ import annotations

import getpass
from collections.abc import Callable
from pathlib import Path
from typing import TextIO, TypeVar

import click
from sqlmodel import Session

from broker.certs import TlsFiles
from registry.lifecycle import SERVICE_KINDS, Actor
from shared.db import make_engine
from shared.models import AccountKind
from shared.settings import BrokerSettings

T = TypeVar("T")


@click.group(invoke_without_command=True)
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
    """Run the MQTT broker (Mosquitto or amqtt) with the accounts stored in the database.

    Credential changes in the database take effect within a second, without a restart.
    With certificates from `tms certs init` it also listens with TLS (tls_port, 8883).
    """
    if ctx.invoked_subcommand is not None:
        return
    from broker.service import run_broker_service
    from shared.cli_support import (
        configure_logging,
        database_url_of,
        replace_settings,
        settings_of,
        stop_on_signals,
    )
    from shared.ports import ensure_port_free

    configure_logging()
    settings = settings_of(ctx)
    if data_dir is not None:
        # The same directory holds the platform's database: look for it there too.
        paths = settings.paths.model_copy(update={"data_dir": data_dir.absolute()})
        settings = settings.model_copy(update={"paths": paths})
        replace_settings(ctx, settings)
    broker_settings = settings.broker
    if port is not None:
        broker_settings = broker_settings.model_copy(update={"port": port})
    database_url = database_url_of(ctx, open_stopped=False)
    root = (data_dir or settings.paths.data_dir).resolve()
    ensure_port_free(
        broker_settings.host, broker_settings.port, "MQTT broker", "--port or TMS_BROKER_PORT"
    )
    tls = _tls_files(broker_settings, root)
    if tls is None:
        click.echo(
            "No certificates (run `tms certs init`): plain MQTT only, for loopback development.",
            err=True,
        )
    else:
        ensure_port_free(
            broker_settings.tls_host, broker_settings.tls_port, "MQTT TLS", "TMS_BROKER_TLS_PORT"
        )
    stop = stop_on_signals()
    run_broker_service(broker_settings, database_url, root / "broker", stop, tls=tls)


def _tls_files(settings: BrokerSettings, data_dir: Path) -> TlsFiles | None:
    files = TlsFiles(settings.certs_dir or data_dir / "certs")
    return files if files.server_ready() else None


@broker.command("mosquitto-config")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for mosquitto.conf, passwords and acl (created if needed).",
)
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Plain MQTT port.")
@click.option(
    "--certs-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Certificates from `tms certs init` (default: <data-dir>/certs, if present).",
)
@click.pass_context
def mosquitto_config(
    ctx: click.Context, out_dir: Path, port: int | None, certs_dir: Path | None
) -> None:
    """Write a Mosquitto configuration with the password, accounts and ACL files and the TMS
    plugin, for an operator-run Mosquitto. Run it again after credential changes, then
    reload Mosquitto (SIGHUP)."""
    from broker.mosquitto import MosquittoFiles, write_operator_config
    from registry.provisioning import active_accounts
    from shared.cli_support import settings_of

    settings = settings_of(ctx)
    broker_settings = settings.broker
    if port is not None:
        broker_settings = broker_settings.model_copy(update={"port": port})
    tls = TlsFiles(certs_dir) if certs_dir else _tls_files(broker_settings, settings.paths.data_dir)
    if tls is not None and not tls.server_ready():
        raise click.ClickException(
            f"no server certificate in {tls.directory}: run `tms certs init`"
        )
    accounts = _in_session(ctx, active_accounts)
    files = MosquittoFiles(out_dir.resolve())
    write_operator_config(files, broker_settings, accounts, tls)
    click.echo(
        f"Wrote {files.config}, {files.passwords}, {files.accounts} and {files.acl} "
        f"({len(accounts)} accounts), and built the TMS plugin in {files.directory / 'plugin'}."
    )
    click.echo(f"Start it with: mosquitto -c {files.config}")


def _in_session(ctx: click.Context, work: Callable[[Session], T]) -> T:
    """Run ``work`` in one transaction against the configured database and commit it."""
    from shared.cli_support import database_url_of

    engine = make_engine(database_url_of(ctx), pool_size=1)
    try:
        with Session(engine) as session:
            result = work(session)
            session.commit()
            return result
    finally:
        engine.dispose()


def _show_secret(username: str, secret: str, *, terminal: bool = True) -> None:
    click.echo(f"MQTT username: {username}")
    click.echo(f"MQTT secret:   {secret}")
    where = (
        "the terminal's agent configuration (TMS_AGENT_MQTT_PASSWORD)"
        if terminal
        else "the configuration of the service or script that uses this account"
    )
    click.echo(
        f"Put the secret in {where} now: it is not stored and will not be shown again.",
        err=True,
    )


@click.group()
def terminal() -> None:
    """Provision and manage terminals."""


def _actor() -> Actor:
    return Actor(f"cli:{getpass.getuser()}")


@terminal.command("add")
@click.argument("serial")
@click.option("--customer", required=True, help="Customer name (created if new).")
@click.option("--store", "store_code", default=None, help="Store code (created if new).")
@click.pass_context
def add_terminal(ctx: click.Context, serial: str, customer: str, store_code: str | None) -> None:
    """Register terminal SERIAL and print its broker secret (shown only once)."""
    from registry.lifecycle import add_terminal as add

    secret = _in_session(ctx, lambda s: add(s, _actor(), serial, customer, store_code))
    click.echo(f"Terminal {serial} added for customer {customer!r}.")
    _show_secret(serial, secret)


@terminal.command("import")
@click.argument("csv_file", type=click.File("r", encoding="utf-8-sig"))
@click.pass_context
def import_terminals(ctx: click.Context, csv_file: TextIO) -> None:
    """Register every terminal in CSV_FILE (columns serial,customer,store), or none.

    The whole file is checked first; every bad row is reported with its line number.
    Prints serial,secret for each terminal as CSV: the secrets are shown only once.
    """
    from registry.lifecycle import import_terminals as run_import

    text = csv_file.read()
    created = _in_session(ctx, lambda s: run_import(s, _actor(), text))
    click.echo("serial,secret")
    for serial, secret in created:
        click.echo(f"{serial},{secret}")
    click.echo(
        f"Imported {len(created)} terminals. Give each its secret now "
        "(TMS_AGENT_MQTT_PASSWORD): they are not stored and will not be shown again.",
        err=True,
    )


@terminal.command("rotate")
@click.argument("serial")
@click.pass_context
def rotate_terminal(ctx: click.Context, serial: str) -> None:
    """Give terminal SERIAL a new broker secret; the old one stops working at once."""
    from registry.lifecycle import rotate_terminal as rotate

    secret = _in_session(ctx, lambda s: rotate(s, _actor(), serial))
    click.echo(f"New secret for {serial}; a session using the old one is closed.")
    _show_secret(serial, secret)


@terminal.command("revoke")
@click.argument("serial")
@click.pass_context
def revoke_terminal(ctx: click.Context, serial: str) -> None:
    """Refuse terminal SERIAL at the broker; a live session is dropped within seconds."""
    from registry.lifecycle import revoke_terminal as revoke

    _in_session(ctx, lambda s: revoke(s, _actor(), serial))
    click.echo(f"Broker access of {serial} revoked (`tms terminal rotate {serial}` re-admits it).")


@terminal.command("decommission")
@click.argument("serial")
@click.option("--reason", default="decommissioned", help="Recorded in the status history.")
@click.pass_context
def decommission_terminal(ctx: click.Context, serial: str, reason: str) -> None:
    """Take terminal SERIAL out of service for good; its live session is dropped."""
    from registry.lifecycle import decommission_terminal as decommission

    _in_session(ctx, lambda s: decommission(s, _actor(), serial, reason))
    click.echo(f"Terminal {serial} decommissioned.")


@terminal.command("swap")
@click.argument("old_serial")
@click.argument("new_serial")
@click.pass_context
def swap_terminal(ctx: click.Context, old_serial: str, new_serial: str) -> None:
    """Replace OLD_SERIAL by NEW_SERIAL in its customer and store; OLD is decommissioned."""
    from registry.lifecycle import swap_terminal as swap

    secret = _in_session(ctx, lambda s: swap(s, _actor(), old_serial, new_serial))
    click.echo(f"Terminal {new_serial} replaces {old_serial}, which is decommissioned.")
    _show_secret(new_serial, secret)


_ROLES = [kind.value for kind in SERVICE_KINDS]


@click.group()
def account() -> None:
    """Broker accounts of services and support scripts (terminals: `tms terminal`)."""


@account.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(_ROLES), required=True, help="What the account may do.")
@click.pass_context
def add_account(ctx: click.Context, name: str, role: str) -> None:
    """Create broker account NAME with the ACL of ROLE; prints its secret once."""
    from registry.lifecycle import add_account as add

    secret = _in_session(ctx, lambda s: add(s, _actor(), name, AccountKind(role)))
    click.echo(f"Account {name} ({role}) added.")
    _show_secret(name, secret, terminal=False)


@account.command("list")
@click.option("--all", "include_terminals", is_flag=True, help="Include terminals.")
@click.pass_context
def list_accounts(ctx: click.Context, include_terminals: bool) -> None:
    """List broker accounts: name, role, created, revoked."""
    from registry.lifecycle import list_accounts as listing

    rows = _in_session(ctx, lambda s: listing(s, include_terminals))
    for row in rows:
        revoked = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
        created = f"{row.created_at:%Y-%m-%d}" if row.created_at else "-"
        click.echo(f"{row.username:<32} {row.kind:<15} {created:<10} {revoked}")


@account.command("rotate")
@click.argument("name")
@click.pass_context
def rotate_account(ctx: click.Context, name: str) -> None:
    """Give account NAME a new secret; the old one stops working at once."""
    from registry.lifecycle import rotate_account as rotate

    secret = _in_session(ctx, lambda s: rotate(s, _actor(), name))
    _show_secret(name, secret, terminal=False)


@account.command("revoke")
@click.argument("name")
@click.pass_context
def revoke_account(ctx: click.Context, name: str) -> None:
    """Refuse account NAME at the broker; its live sessions are dropped."""
    from registry.lifecycle import revoke_account as revoke

    _in_session(ctx, lambda s: revoke(s, _actor(), name))
    click.echo(f"Account {name} revoked.")


@click.group()
def certs() -> None:
    """TLS certificates for the broker."""


@certs.command("init")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Data directory; certificates go to <data-dir>/certs (or [broker] certs_dir).",
)
@click.option(
    "--host",
    "hosts",
    multiple=True,
    help="Name or IP address terminals use to reach the broker (repeatable; default: "
    "this host's names and loopback).",
)
@click.option("--force", is_flag=True, help="Replace an existing CA (terminals must get it anew).")
@click.pass_context
def init_certs(
    ctx: click.Context, data_dir: Path | None, hosts: tuple[str, ...], force: bool
) -> None:
    """Create a private CA and a server certificate for the broker's TLS listener."""
    from broker.certs import default_names
    from broker.certs import init_certs as create
    from shared.cli_support import settings_of

    settings = settings_of(ctx)
    directory = settings.broker.certs_dir or (data_dir or settings.paths.data_dir) / "certs"
    files = create(TlsFiles(directory.resolve()), list(hosts) or default_names(), force=force)
    click.echo(f"CA certificate:     {files.ca_cert}  (give this to every terminal)")
    click.echo(f"Server certificate: {files.server_cert}")
    click.echo(f"CA key:             {files.ca_key}  (keep it private; back it up)")
    click.echo("Restart `tms broker` to open the TLS listener.")
