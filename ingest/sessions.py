"""Retire the broker sessions of ingest workers that are no longer started.

Every worker has a persistent session (its client id) on the shared subscription,
and Mosquitto keeps routing a share of the messages to a member of the group that is
offline. After ``workers`` is lowered (say 3 -> 2), the third session would hold a
third of the fleet's messages until the broker's queue limit drops them. So each
worker records its client id in ``ingest_session``, and worker 0 drains every
recorded session of the same base id that the current worker count does not use:
it connects as that client, unsubscribes (nothing new is routed there), writes
what was queued like any batch, waits until the session is idle, and removes it
(a clean-session connect) and its record.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable

import psycopg
from psycopg_pool import AsyncConnectionPool

from ingest.counters import IngestCounters
from ingest.daemon import IngestDaemon
from ingest.mqtt import make_client
from ingest.writer import BatchWriter
from shared.settings import IngestSettings

log = logging.getLogger(__name__)

SQL_REGISTER = "INSERT INTO ingest_session (client_id) VALUES (%s) ON CONFLICT DO NOTHING"
SQL_REGISTERED = "SELECT client_id FROM ingest_session"
SQL_FORGET = "DELETE FROM ingest_session WHERE client_id = %s"


def worker_client_ids(settings: IngestSettings) -> set[str]:
    """The client ids of the workers ``settings`` starts (see ingest.workers)."""
    base = settings.client_id
    return {base, *(f"{base}-{index}" for index in range(1, settings.workers))}


def retired_sessions(registered: Iterable[str], base: str, current: set[str]) -> list[str]:
    """Recorded worker sessions of ``base`` that the current worker set does not use (pure).

    Only ``base`` and ``base-<n>`` are ingest workers' ids: another deployment's
    sessions (another base id, recorded in the same database) are left alone.
    """
    pattern = re.compile(rf"{re.escape(base)}(-[0-9]+)?")
    return sorted(
        client_id
        for client_id in registered
        if pattern.fullmatch(client_id) and client_id not in current
    )


async def register_session(pool: AsyncConnectionPool, client_id: str, retry_s: float) -> None:
    """Record this worker's session; retried until PostgreSQL takes it."""
    while True:
        try:
            async with pool.connection() as conn:
                await conn.execute(SQL_REGISTER, (client_id,))
            return
        except psycopg.Error as exc:
            log.warning("could not record ingest session %s (%s); retrying", client_id, exc)
            await asyncio.sleep(retry_s)


async def retire_sessions(
    settings: IngestSettings, database_url: str, pool: AsyncConnectionPool, idle_s: float = 2.0
) -> list[str]:
    """Drain and remove the sessions of retired workers; returns their client ids."""
    async with pool.connection() as conn:
        registered = [row[0] for row in await (await conn.execute(SQL_REGISTERED)).fetchall()]
    retired = retired_sessions(registered, settings.client_id, worker_client_ids(settings))
    for client_id in retired:
        written = await drain_session(settings, database_url, client_id, idle_s)
        await _remove_session(settings, client_id)
        async with pool.connection() as conn:
            await conn.execute(SQL_FORGET, (client_id,))
        log.info("retired ingest session %s: %d queued messages written", client_id, written)
    return retired


async def drain_session(
    settings: IngestSettings, database_url: str, client_id: str, idle_s: float
) -> int:
    """Write what the session ``client_id`` holds; returns the messages committed."""
    retiring = settings.model_copy(update={"client_id": client_id, "metrics_port": 0})
    writer = BatchWriter.create(database_url, connect_timeout_s=min(settings.retry_max_s, 10.0))
    counters = IngestCounters()
    daemon = IngestDaemon(retiring, writer, counters, retiring_session=True)
    stop, subscribed = asyncio.Event(), asyncio.Event()
    await writer.open()
    running = asyncio.create_task(daemon.run(stop, subscribed))
    try:
        waiting = asyncio.create_task(subscribed.wait())  # connected and unsubscribed
        await asyncio.wait({running, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        last, quiet_since = -1, asyncio.get_running_loop().time()
        while not running.done():
            now = asyncio.get_running_loop().time()
            if counters.received != last:
                last, quiet_since = counters.received, now
            elif now - quiet_since >= idle_s:
                break
            await asyncio.sleep(0.1)
        stop.set()  # commits and acknowledges what is still held
        await running
    finally:
        stop.set()
        if not running.done():  # cancelled from outside: nothing more is acknowledged
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        await writer.close()
    return counters.committed


async def _remove_session(settings: IngestSettings, client_id: str) -> None:
    """A clean-session connect: the broker drops the session and its subscriptions."""
    retired = settings.model_copy(update={"client_id": client_id})
    async with make_client(retired, clean_session=True):
        pass
