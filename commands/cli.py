"""``tms commands``: run the command sender until SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging

import click
import psycopg

from commands.mqtt_link import MqttLink
from commands.relay import RequestRelay
from commands.sender import serve
from shared import topics
from shared.cli_support import (
    configure_logging,
    database_url_of,
    settings_of,
    stop_on_signals,
)
from shared.db import libpq_url, make_engine

log = logging.getLogger(__name__)


@click.command()
@click.pass_context
def commands(ctx: click.Context) -> None:
    """Run the command sender: queued commands out to the terminals."""
    configure_logging()
    settings = settings_of(ctx)
    url = database_url_of(ctx, open_stopped=False)
    database_url = libpq_url(url)
    # A wrong URL or password is one line now; once running, outages are retried.
    psycopg.connect(database_url, connect_timeout=10).close()
    engine = make_engine(url, pool_size=2)
    link = MqttLink(settings.console.mqtt, subscriptions=[topics.COMMAND_REQUEST_FILTER])
    relay = RequestRelay(
        engine,
        link,
        rate_per_s=settings.commands.request_rate_per_s,
        burst=settings.commands.request_burst,
    )
    link.on_message = relay.on_message

    stop = stop_on_signals()
    log.info(
        "command sender starting: broker %s:%s as %r",
        settings.console.mqtt.host,
        settings.console.mqtt.port,
        settings.console.mqtt.username,
    )
    relay.start()
    link.start()
    try:
        serve(
            database_url,
            link,
            stop,
            batch_size=settings.commands.batch_size,
            publish_timeout_s=settings.commands.publish_timeout_s,
            idle_check_s=settings.commands.idle_check_s,
            on_finished=relay.on_finished,
        )
    finally:
        link.stop()
        relay.stop()
        engine.dispose()
        log.info("command sender stopped")
