"""The daemon's side tasks: the sweep, the outbox, the retention schedule, and their pool.

Each loop wakes on its interval, does one pass in its own transaction and logs (never
raises) a PostgreSQL outage, so a database that is away for a minute pauses them
instead of stopping ingest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from psycopg_pool import AsyncConnectionPool

from ingest.alerts.config import AlertConfig
from ingest.alerts.notify import OutboxWorker
from ingest.alerts.rules import BatchAlerts
from ingest.counters import IngestCounters
from ingest.fleet_samples import bucket_of, fold_terminal_counts, sample_fleet
from ingest.retention import RetentionReport, run_retention
from ingest.sweep import FleetSweep
from ingest.uptime_snapshots import refresh_uptime_snapshots
from shared.db import libpq_url
from shared.settings import IngestSettings, NotifySettings

log = logging.getLogger(__name__)

SQL_OPEN_TERMINAL_ALERTS = (
    "SELECT terminal_id, kind FROM alert WHERE status <> 'resolved' AND terminal_id IS NOT NULL"
)


def make_side_pool(database_url: str, timeout_s: float) -> AsyncConnectionPool:
    """Connections for the sweep and the outbox, apart from the batch writer's."""
    return AsyncConnectionPool(
        libpq_url(database_url),
        min_size=1,
        max_size=2,
        open=False,
        timeout=timeout_s,
        kwargs={"autocommit": True},
        check=AsyncConnectionPool.check_connection,
        name="ingest-side",
    )


async def seed_alerts(pool: AsyncConnectionPool, alerts: BatchAlerts) -> None:
    """Metric alerts still open from an earlier run resume as firing."""
    try:
        async with pool.connection() as conn:
            rows = await (await conn.execute(SQL_OPEN_TERMINAL_ALERTS)).fetchall()
    except psycopg.Error as exc:
        log.warning("could not read open alerts at start (%s); thresholds start at rest", exc)
        return
    alerts.seed_firing((row[0], row[1]) for row in rows)


async def _every(
    stop: asyncio.Event, interval_s: float, name: str, work: Callable[[], Awaitable[None]]
) -> None:
    while not stop.is_set():
        try:
            await work()
        except (psycopg.Error, OSError) as exc:
            log.warning("%s: PostgreSQL unavailable (%s); trying again", name, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


async def sweep_loop(
    pool: AsyncConnectionPool,
    config: AlertConfig,
    counters: IngestCounters,
    interval_s: float,
    stop: asyncio.Event,
) -> None:
    sweep = FleetSweep(config)  # the whole fleet once, then only what is due

    async def once() -> None:
        async with pool.connection() as conn:
            result = await sweep.once(conn, datetime.now(UTC))
        counters.heartbeats_missed += result.heartbeats_missed
        counters.status_changes += result.heartbeats_missed
        counters.open_alerts = result.open_alerts
        if result.alerts is not None:
            counters.alerts_opened += result.alerts.opened
            counters.alerts_resolved += result.alerts.resolved
        told = result.incidents
        if told is not None and (told.notices or told.closed):
            log.info("storm incidents: %d notified, %d closed", told.notices, told.closed)

    await _every(stop, interval_s, "alert sweep", once)


async def outbox_loop(
    pool: AsyncConnectionPool,
    worker: OutboxWorker,
    counters: IngestCounters,
    interval_s: float,
    stop: asyncio.Event,
) -> None:
    async def once() -> None:
        failures_before = worker.failed_attempts
        async with pool.connection() as conn:
            counters.notifications_sent += await worker.deliver_due(conn)
        counters.notification_failures += worker.failed_attempts - failures_before

    await _every(stop, interval_s, "notification outbox", once)


async def fleet_sample_loop(
    pool: AsyncConnectionPool, interval_s: int, stop: asyncio.Event
) -> None:
    """One fleet sample per bucket (ingest.fleet_samples); checked a few times a
    bucket, so that a bucket missed while PostgreSQL was away is written when it is back."""

    written: datetime | None = None

    async def once() -> None:
        nonlocal written
        now = datetime.now(UTC)
        if bucket_of(now, interval_s) == written:
            return  # this bucket is done: no scan of the terminal table until the next
        async with pool.connection() as conn:
            await sample_fleet(conn, now, interval_s)
            await fold_terminal_counts(conn)
        written = bucket_of(now, interval_s)

    await _every(stop, max(1.0, interval_s / 5), "fleet sample", once)


async def uptime_snapshot_loop(
    pool: AsyncConnectionPool, interval_s: float, stop: asyncio.Event
) -> None:
    """The fleet report's uptime, worked out every interval so no view waits for it."""

    async def once() -> None:
        async with pool.connection() as conn:
            await refresh_uptime_snapshots(conn, datetime.now(UTC))

    await _every(stop, interval_s, "uptime snapshot", once)


def retention_job(database_url: str, settings: IngestSettings) -> RetentionReport:
    """One run of the retention policy (``tms db retention`` and the daily job)."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        return run_retention(
            conn,
            datetime.now(UTC),
            retention_days=settings.retention_days,
            rollup_retention_days=settings.rollup_retention_days,
            months_ahead=settings.partitions_ahead_months,
        )


def _retention_guarded(database_url: str, settings: IngestSettings) -> None:
    try:
        retention_job(database_url, settings)
    except psycopg.Error as exc:  # the next run tries again; partitions exist months ahead
        log.error("retention job failed: %s", exc)


def start_retention_schedule(database_url: str, settings: IngestSettings) -> AsyncIOScheduler:
    """Run the retention job now (partitions ahead) and then every retention_interval_h."""
    # In a thread pool of its own, not the event loop's executor: a stop while the
    # job runs would cancel its future and log a traceback, though the job goes on.
    scheduler = AsyncIOScheduler(timezone=UTC, executors={"default": ThreadPoolExecutor(1)})
    scheduler.add_job(
        _retention_guarded,
        "interval",
        hours=settings.retention_interval_h,
        args=(database_url, settings),
        next_run_time=datetime.now(UTC),
        id="retention",
        max_instances=1,
        coalesce=True,
    )
    scheduler.start()
    return scheduler


def make_outbox_worker(settings: NotifySettings, config: AlertConfig) -> OutboxWorker:
    if not config.routes:
        # Said once at start: otherwise an empty outbox looks like alerts that were lost.
        log.warning(
            "no notification routes in the alert rules: alerts and storm incidents are"
            " raised and shown in the console, but nobody is notified; add [[route]]"
            " entries (config/alerts.toml)"
        )
    return OutboxWorker(settings, config, dict(os.environ))


def cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
