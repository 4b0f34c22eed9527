"""``tms ingest``: run the ingest daemon until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import signal

import click

from ingest.errors import IngestConfigError
from ingest.service import run_ingest
from shared.settings import IngestSettings
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


async def _serve(settings: IngestSettings, database_url: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await run_ingest(settings, database_url, stop)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


@click.command()
@click.pass_context
def ingest(ctx: click.Context) -> None:
    """Run the ingest daemon: broker messages into PostgreSQL."""
    configure_logging()
    settings = settings_of(ctx).ingest
    check_credentials(settings)
    database_url = database_url_of(ctx)
    log.info(
        "ingest starting: broker %s:%s as %r, client id %r",
        settings.mqtt.host,
        settings.mqtt.port,
        settings.mqtt.username,
        settings.client_id,
    )
    asyncio.run(_serve(settings, database_url))
