"""``tms ingest`` (run the daemon until SIGTERM or Ctrl-C) and ``tms db retention``."""

from __future__ import annotations

import asyncio
import logging
import signal

import click

from ingest.alert_config import load_alert_config
from ingest.background import retention_job
from ingest.errors import IngestConfigError
from ingest.service import run_ingest
from shared.settings import IngestSettings, Settings
from tms.cli import configure_logging, database_url_of, settings_of

log = logging.getLogger(__name__)


def check_credentials(settings: IngestSettings) -> None:
    """Refuse to start without a broker account: there is no anonymous or default one."""
    if not settings.mqtt.username or settings.mqtt.password is None:
        raise IngestConfigError(
            "ingest needs its own MQTT account: set TMS_INGEST_MQTT_USERNAME and "
            "TMS_INGEST_MQTT_PASSWORD (or [ingest.mqtt] username/password in the config file); "
            "create the account with the broker's service-account command"
        )


async def _serve(settings: Settings, database_url: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await run_ingest(
            settings.ingest,
            database_url,
            stop,
            alert_settings=settings.alerts,
            notify_settings=settings.notify,
        )
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


@click.command()
@click.pass_context
def ingest(ctx: click.Context) -> None:
    """Run the ingest daemon: broker messages into PostgreSQL."""
    configure_logging()
    every = settings_of(ctx)
    settings = every.ingest
    check_credentials(settings)
    load_alert_config(every.alerts.rules_file)  # a bad rules file stops us here, clearly
    database_url = database_url_of(ctx)
    log.info(
        "ingest starting: broker %s:%s as %r, client id %r",
        settings.mqtt.host,
        settings.mqtt.port,
        settings.mqtt.username,
        settings.client_id,
    )
    asyncio.run(_serve(every, database_url))


@click.command()
@click.pass_context
def retention(ctx: click.Context) -> None:
    """Apply the history policy now: partitions ahead, hourly rollups, drop old months.

    Ingest also runs this daily. Raw telemetry older than [ingest] retention_days is
    dropped (by whole months); hourly rollups are kept rollup_retention_days; status
    changes are kept for good.
    """
    configure_logging()
    settings = settings_of(ctx).ingest
    report = retention_job(database_url_of(ctx), settings)
    click.echo(report.summary())
