"""``tms up``: the whole platform on one host, in one terminal window."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import click

from shared.errors import TMSError


@click.command()
@click.option(
    "--simulate",
    "simulate",
    type=click.IntRange(0, 100_000),
    default=0,
    help="Also run N simulated TC-200 terminals.",
)
@click.option(
    "--heartbeat",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Heartbeat interval of simulated terminals, seconds (default from settings).",
)
@click.option(
    "--fault-rate",
    type=click.FloatRange(0, 1),
    default=None,
    help="Faults (error or unplugged) per simulated terminal per second (default from settings).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where data lives (default /var/lib/tms as root, else ~/.local/share/tms).",
)
@click.option(
    "--db-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Port of the embedded PostgreSQL.",
)
@click.option("--broker-port", type=click.IntRange(1, 65535), default=None)
@click.option("--console-port", type=click.IntRange(1, 65535), default=None)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port of ingest's /metrics and /healthz (0: off).",
)
@click.pass_context
def up(
    ctx: click.Context,
    simulate: int,
    heartbeat: float | None,
    fault_rate: float | None,
    data_dir: Path | None,
    db_port: int | None,
    broker_port: int | None,
    console_port: int | None,
    metrics_port: int | None,
) -> None:
    """Start PostgreSQL, the broker, ingest, the console and a simulated fleet."""
    from shared.cli_support import configure_logging, remember_database_url, settings_of
    from tms.platform_parts import UpOptions
    from tms.stack import Platform

    configure_logging("WARNING")
    settings = settings_of(ctx)
    changes: dict[str, Any] = {}
    if data_dir is not None:
        changes["paths"] = settings.paths.model_copy(update={"data_dir": data_dir.resolve()})
    if db_port is not None:
        changes["database"] = settings.database.model_copy(update={"port": db_port})
    if broker_port is not None:
        changes["broker"] = settings.broker.model_copy(update={"port": broker_port})
    if console_port is not None:
        changes["console"] = settings.console.model_copy(update={"port": console_port})
    if metrics_port is not None:
        changes["ingest"] = settings.ingest.model_copy(update={"metrics_port": metrics_port})
    settings = settings.model_copy(update=changes)
    if settings.database.url is not None:
        remember_database_url(ctx, settings.database.url.get_secret_value())
    options = UpOptions(
        simulate=simulate,
        heartbeat_s=heartbeat or settings.simulate.heartbeat_interval_s,
        fault_rate=settings.simulate.fault_rate if fault_rate is None else fault_rate,
    )

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    platform = Platform(settings, options, say=click.echo)
    code = 0
    try:
        platform.start()
        code = platform.watch(stop)
    except TMSError as exc:
        click.echo(f"Error: {exc}", err=True)
        code = 1
    finally:
        ran = platform.started_anything()
        platform.shutdown()
    if ran:
        click.echo("TMS stopped.")
    ctx.exit(code)
