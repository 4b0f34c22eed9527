"""``tms ingest`` (run the daemon until SIGTERM or Ctrl-C) and ``tms db retention``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from multiprocessing.process import BaseProcess

import click
import psycopg

from ingest.alerts.config import load_alert_config
from ingest.background import retention_job
from ingest.errors import IngestConfigError
from ingest.service import run_ingest, tune_gc
from ingest.workers import fork_context, supervise, worker_settings
from shared.cli_support import configure_logging, database_url_of, settings_of, signals_set
from shared.db import libpq_url
from shared.lifetime import die_with_parent
from shared.settings import IngestSettings, Settings

log = logging.getLogger(__name__)


def check_credentials(settings: IngestSettings) -> None:
    """Refuse to start without a broker account: there is no anonymous or default one."""
    if not settings.mqtt.username or settings.mqtt.password is None:
        raise IngestConfigError(
            "ingest needs its own MQTT account: set TMS_INGEST_MQTT_USERNAME and "
            "TMS_INGEST_MQTT_PASSWORD (or [ingest.mqtt] username/password in the config file); "
            "create the account with the broker's service-account command"
        )


async def _serve(settings: Settings, database_url: str, index: int = 0) -> None:
    tune_gc()
    async with signals_set(asyncio.Event()) as stop:
        await run_ingest(
            worker_settings(settings.ingest, index),
            database_url,
            stop,
            alert_settings=settings.alerts,
            notify_settings=settings.notify,
            primary=index == 0,
        )


def _worker_main(settings: Settings, database_url: str, index: int, parent_pid: int) -> None:
    # The supervisor's handlers came along with fork; until _serve installs its own, a
    # SIGTERM must still end this process.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # A worker whose supervisor was killed with SIGKILL commits its batch and stops,
    # instead of holding the metrics port and its session with nobody to restart it.
    die_with_parent(parent_pid)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(settings, database_url, index))


@click.command()
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Processes on one shared subscription (default: [ingest] workers, 1).",
)
@click.pass_context
def ingest(ctx: click.Context, workers: int | None) -> None:
    """Run the ingest daemon: broker messages into PostgreSQL."""
    configure_logging()
    every = settings_of(ctx)
    if workers is not None:
        every = every.model_copy(
            update={"ingest": every.ingest.model_copy(update={"workers": workers})}
        )
    settings = every.ingest
    check_credentials(settings)
    load_alert_config(every.alerts.rules_file)  # a bad rules file stops us here, clearly
    database_url = database_url_of(ctx, open_stopped=False)
    # A wrong URL, password or database name is one line now; once running, ingest
    # rides out a PostgreSQL outage by retrying.
    psycopg.connect(libpq_url(database_url), connect_timeout=10).close()
    log.info(
        "ingest starting: broker %s:%s as %r, client id %r, %d worker(s)",
        settings.mqtt.host,
        settings.mqtt.port,
        settings.mqtt.username,
        settings.client_id,
        settings.workers,
    )
    if settings.workers == 1:
        asyncio.run(_serve(every, database_url))
        return
    context = fork_context()

    def start(index: int) -> BaseProcess:
        process = context.Process(
            target=_worker_main,
            args=(every, database_url, index, os.getpid()),
            name=f"ingest-{index}",
        )
        process.start()
        return process

    ctx.exit(supervise(settings.workers, start))


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
