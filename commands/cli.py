"""``tms commands``: run the command sender until SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import click
import psycopg

from commands.mqtt_link import MqttLink
from commands.sender import serve
from shared.db import libpq_url
from tms.cli import configure_logging, database_url_of, settings_of

log = logging.getLogger(__name__)


@click.command()
@click.pass_context
def commands(ctx: click.Context) -> None:
    """Run the command sender: queued commands out to the terminals."""
    configure_logging()
    settings = settings_of(ctx)
    database_url = libpq_url(database_url_of(ctx, open_stopped=False))
    # A wrong URL or password is one line now; once running, outages are retried.
    psycopg.connect(database_url, connect_timeout=10).close()
    link = MqttLink(settings.console.mqtt)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    log.info(
        "command sender starting: broker %s:%s as %r",
        settings.console.mqtt.host,
        settings.console.mqtt.port,
        settings.console.mqtt.username,
    )
    link.start()
    try:
        serve(
            database_url,
            link,
            stop,
            batch_size=settings.commands.batch_size,
            publish_timeout_s=settings.commands.publish_timeout_s,
            idle_check_s=settings.commands.idle_check_s,
        )
    finally:
        link.stop()
        log.info("command sender stopped")
