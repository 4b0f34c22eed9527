"""``tms broker`` (run the MQTT broker), ``mosquitto-config`` and ``tms certs``."""

from __future__ import annotations

from pathlib import Path

import click

from broker.certs import TlsFiles
from shared.settings import BrokerSettings


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
    from shared.cli_support import in_session, settings_of

    settings = settings_of(ctx)
    broker_settings = settings.broker
    if port is not None:
        broker_settings = broker_settings.model_copy(update={"port": port})
    tls = TlsFiles(certs_dir) if certs_dir else _tls_files(broker_settings, settings.paths.data_dir)
    if tls is not None and not tls.server_ready():
        raise click.ClickException(
            f"no server certificate in {tls.directory}: run `tms certs init`"
        )
    accounts = in_session(ctx, active_accounts)
    files = MosquittoFiles(out_dir.resolve())
    write_operator_config(files, broker_settings, accounts, tls)
    click.echo(
        f"Wrote {files.config}, {files.passwords}, {files.accounts} and {files.acl} "
        f"({len(accounts)} accounts), and built the TMS plugin in {files.directory / 'plugin'}."
    )
    click.echo(f"Start it with: mosquitto -c {files.config}")


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
