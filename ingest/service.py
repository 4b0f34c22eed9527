"""Run ingest: the daemon, its side tasks (sweep, outbox, retention, gaps, sessions), /metrics.

``run_ingest`` wires the parts together for one process (``tms ingest``, the
benchmark, the tests): the batch writer and its alert step, the daemon (``ingest.daemon``),
the side pool and its loops (``ingest.background``), and the retiring of old worker
sessions (``ingest.sessions``).
"""

from __future__ import annotations

import asyncio
import gc
import logging

import aiomqtt
import psycopg
from psycopg_pool import AsyncConnectionPool

from ingest.alerts.config import load_alert_config
from ingest.alerts.rules import BatchAlerts
from ingest.alerts.step import BatchAlertStep
from ingest.background import (
    fleet_sample_loop,
    make_outbox_worker,
    make_side_pool,
    outbox_loop,
    seed_alerts,
    start_retention_schedule,
    sweep_loop,
    uptime_snapshot_loop,
)
from ingest.counters import IngestCounters
from ingest.daemon import IngestDaemon, OnCommit
from ingest.gap_repair import gap_repair_loop
from ingest.metrics import MetricsServer, make_registry
from ingest.sessions import register_session, retire_sessions
from ingest.writer import BatchWriter
from shared.settings import AlertSettings, IngestSettings, NotifySettings

log = logging.getLogger(__name__)


def tune_gc() -> None:
    """Collect garbage less often: ingest allocates ~10 tracked objects per message.

    With CPython's default (a young collection every 700 allocations), messages waiting
    in the deque and the batch survive into the older generations, which are then
    scanned again and again: ~20 % of ingest's CPU at 10,000 msg/s, measured. The
    objects alive after start-up (modules, settings) are frozen out of collection
    altogether. Reference cycles are rare on this path; they still go. It changes the
    whole process, so the process's entry calls it (``tms ingest``, the benchmark), not
    ``run_ingest``, which tests also run inside pytest.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


async def _upkeep_sessions(
    settings: IngestSettings, database_url: str, pool: AsyncConnectionPool, primary: bool
) -> None:
    """Record this worker's session; worker 0 then retires the sessions no worker uses."""
    await register_session(pool, settings.client_id, settings.retry_max_s)
    if not primary:
        return
    try:
        await retire_sessions(settings, database_url, pool)
    except (psycopg.Error, aiomqtt.MqttError, OSError) as exc:
        # The record stays: the next start tries again; nothing was acknowledged unwritten.
        log.warning("could not retire old ingest sessions: %s", exc)


async def _close_on(stop: asyncio.Event, metrics: MetricsServer) -> None:
    await stop.wait()
    await metrics.close()


async def run_ingest(
    settings: IngestSettings,
    database_url: str,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
    *,
    counters: IngestCounters | None = None,
    alert_settings: AlertSettings | None = None,
    notify_settings: NotifySettings | None = None,
    on_commit: OnCommit | None = None,
    primary: bool = True,
) -> None:
    """Run ingest until ``stop`` is set; the last batch is committed before returning.

    Besides the broker-to-PostgreSQL path it runs the alert sweep, the notification
    outbox, the daily retention job and the repair of gaps in terminals' message
    numbers (only when ``primary``: one of several workers runs those) and the
    /metrics endpoint. ``ready`` is set once the first subscription is in place;
    ``counters`` lets the caller watch the totals; ``on_commit(batch, monotonic_time)``
    is called after each commit (the benchmark).
    """
    alert_settings = alert_settings or AlertSettings()
    notify_settings = notify_settings or NotifySettings()
    config = load_alert_config(alert_settings.rules_file)
    counters = counters if counters is not None else IngestCounters()
    alerts = BatchAlerts(config)
    # A write waits for a connection no longer than a retry pause, so that a stop
    # during an outage is noticed within seconds.
    timeout_s = min(settings.retry_max_s, 10.0)
    writer = BatchWriter.create(database_url, connect_timeout_s=timeout_s)
    side_pool = make_side_pool(database_url, timeout_s)
    await writer.open()
    await side_pool.open(wait=False)
    await seed_alerts(side_pool, alerts)
    daemon = IngestDaemon(settings, writer, counters, on_commit, alert_step=BatchAlertStep(alerts))
    worker = make_outbox_worker(notify_settings, config)
    side_stop = asyncio.Event()
    side_tasks = [
        asyncio.create_task(
            sweep_loop(side_pool, config, counters, alert_settings.sweep_interval_s, side_stop),
            name="ingest-sweep",
        ),
        asyncio.create_task(
            outbox_loop(side_pool, worker, counters, notify_settings.poll_interval_s, side_stop),
            name="ingest-outbox",
        ),
    ]
    if primary:
        side_tasks.append(
            asyncio.create_task(
                gap_repair_loop(side_pool, settings, counters, side_stop), name="ingest-gaps"
            )
        )
        side_tasks.append(
            asyncio.create_task(
                fleet_sample_loop(side_pool, settings.fleet_sample_interval_s, side_stop),
                name="ingest-fleet-samples",
            )
        )
        side_tasks.append(
            asyncio.create_task(
                uptime_snapshot_loop(side_pool, settings.uptime_snapshot_interval_s, side_stop),
                name="ingest-uptime-snapshots",
            )
        )
    sessions = asyncio.create_task(
        _upkeep_sessions(settings, database_url, side_pool, primary), name="ingest-sessions"
    )
    scheduler = start_retention_schedule(database_url, settings) if primary else None
    metrics: MetricsServer | None = None
    metrics_closer: asyncio.Task[None] | None = None
    if settings.metrics_port:
        health = daemon.health
        metrics = MetricsServer(
            settings.metrics_host, settings.metrics_port, make_registry(counters, health), health
        )
        await metrics.start()
        # The port goes with the stop, not after the drain: a drain during a database
        # outage takes seconds, and a platform restarted at once needs the port.
        metrics_closer = asyncio.create_task(_close_on(stop, metrics), name="metrics-closer")
    try:
        await daemon.run(stop, ready)
    finally:
        side_stop.set()
        sessions.cancel()  # a drain cut short acknowledges nothing it has not written
        await asyncio.gather(sessions, return_exceptions=True)
        if scheduler is not None:
            scheduler.shutdown(wait=False)
        await asyncio.gather(*side_tasks, return_exceptions=True)
        if metrics_closer is not None:
            metrics_closer.cancel()
            await asyncio.gather(metrics_closer, return_exceptions=True)
        if metrics is not None:
            await metrics.close()
        await side_pool.close()
        await writer.close()
