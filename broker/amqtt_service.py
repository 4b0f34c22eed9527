"""The ``tms broker`` daemon with amqtt embedded: accounts cached in memory, kept in step.

Start-up: LISTEN on ``tms_credentials``, load the accounts into the cache, start
amqtt with the database auth and topic plugins. Every notification reloads the cache
and closes each live session whose account was revoked or whose secret changed, so
revoke, rotate and decommission take effect within a second, not at a reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import psycopg
import sqlalchemy.exc
from sqlalchemy import Engine
from sqlmodel import Session

from broker.amqtt_broker import GuardedBroker, check_amqtt_version
from broker.amqtt_plugins import (
    AUTH_PLUGIN,
    TOPIC_PLUGIN,
    AccountCache,
    DatabaseAuthPlugin,
    DatabaseTopicPlugin,
    secret_still_valid,
)
from broker.certs import TlsFiles
from broker.credential_sync import CHANNEL, COALESCE_MAX_S, COALESCE_S, POLL_S, RETRY_S, SyncTracker
from broker.errors import BrokerError
from broker.login_throttle import LoginThrottle, ThrottlePolicy
from registry.provisioning import BrokerAccount, active_accounts
from shared.db import libpq_url, make_engine
from shared.settings import BrokerSettings

log = logging.getLogger(__name__)

STATS_INTERVAL_S = 60.0


def amqtt_config(settings: BrokerSettings, tls: TlsFiles | None) -> dict[str, Any]:
    listeners: dict[str, Any] = {
        "default": {"type": "tcp", "bind": f"{settings.host}:{settings.port}"},
    }
    if tls is not None:
        listeners["tls"] = {
            "type": "tcp",
            "bind": f"{settings.tls_host}:{settings.tls_port}",
            "ssl": True,
            "certfile": str(tls.server_cert),
            "keyfile": str(tls.server_key),
        }
    # Listing the plugins replaces amqtt's defaults, anonymous login included.
    return {"listeners": listeners, "plugins": {AUTH_PLUGIN: {}, TOPIC_PLUGIN: {}}}


def throttle_for(settings: BrokerSettings) -> LoginThrottle:
    return LoginThrottle(
        ThrottlePolicy(
            delay_after=settings.login_delay_after,
            lockout_after=settings.login_lockout_after,
            lockout_s=float(settings.login_lockout_s),
            window_s=float(settings.login_window_s),
            delay_step_s=settings.login_delay_step_s,
            delay_max_s=settings.login_delay_max_s,
        )
    )


def _load(engine: Engine) -> list[BrokerAccount]:
    with Session(engine) as session:
        return active_accounts(session)


class AmqttService:
    """amqtt plus the cache and the session-closing that follow the credential table."""

    def __init__(self, settings: BrokerSettings, database_url: str, tls: TlsFiles | None):
        self.settings = settings
        self.database_url = database_url
        self.tls = tls
        self.cache = AccountCache()
        self.throttle = throttle_for(settings)
        self.engine = make_engine(database_url, pool_size=1)
        self.broker: GuardedBroker | None = None

    async def start(self) -> None:
        self.cache.replace(await asyncio.to_thread(_load, self.engine))
        self.broker = GuardedBroker(
            amqtt_config(self.settings, self.tls), self.settings.max_packet_bytes
        )
        auth = self.broker.plugins_manager.get_plugin(DatabaseAuthPlugin.__name__)
        topic = self.broker.plugins_manager.get_plugin(DatabaseTopicPlugin.__name__)
        if not isinstance(auth, DatabaseAuthPlugin) or not isinstance(topic, DatabaseTopicPlugin):
            raise BrokerError("amqtt did not load the TMS auth and topic plugins")
        auth.attach(self.cache, self.throttle)
        topic.attach(self.cache)
        await self.broker.start()

    async def sync(self, tracker: SyncTracker | None) -> int:
        """Reload the accounts; close sessions whose login is no longer valid."""
        if tracker is not None:
            tracker.begin()
        try:
            accounts = await asyncio.to_thread(_load, self.engine)
            before = {a.username: a for a in (self.cache.get(n) for n in self._names()) if a}
            self.cache.replace(accounts)
            changed = {name for name, old in before.items() if self.cache.get(name) != old}
            await self._close_invalid_sessions(changed)
            return len(accounts)
        finally:
            if tracker is not None:
                tracker.finish()

    def _names(self) -> set[str]:
        assert self.broker is not None
        return {s.username for s, _ in self.broker.connected_sessions() if s.username}

    async def _close_invalid_sessions(self, changed: set[str]) -> None:
        assert self.broker is not None
        for session, handler in self.broker.connected_sessions():
            if session.username not in changed:
                continue
            password = session.password
            if isinstance(password, bytes | bytearray):
                password = bytes(password).decode("utf-8", errors="replace")
            if not secret_still_valid(self.cache, session.username, password):
                log.info(
                    "closing the session of %s (client %s): its credential was revoked or rotated",
                    session.username,
                    session.client_id,
                )
                await self.broker.disconnect_session(session, handler)

    async def stop(self) -> None:
        if self.broker is not None:
            await self.broker.shutdown()
        self.log_stats()
        self.engine.dispose()

    def log_stats(self) -> None:
        stats = self.throttle.stats
        log.info(
            "logins: %d ok, %d failed, %d delayed, %d refused while locked out, %d lockouts",
            stats.successes,
            stats.failures,
            stats.delayed,
            stats.refused_locked,
            stats.lockouts,
        )


async def _listen(database_url: str) -> psycopg.AsyncConnection[Any]:
    conn = await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True)
    await conn.execute(f"LISTEN {CHANNEL}")
    return conn


async def _changed(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Up to POLL_S for a notification, then drain the burst; True if any arrived."""
    if not [n async for n in conn.notifies(timeout=POLL_S, stop_after=1)]:
        return False
    deadline = asyncio.get_running_loop().time() + COALESCE_MAX_S
    while asyncio.get_running_loop().time() < deadline and [
        n async for n in conn.notifies(timeout=COALESCE_S, stop_after=1)
    ]:
        pass
    return True


async def _follow(
    service: AmqttService,
    stop: threading.Event,
    tracker: SyncTracker | None,
    conn: psycopg.AsyncConnection[Any] | None,
) -> None:
    next_stats = asyncio.get_running_loop().time() + STATS_INTERVAL_S
    try:
        while not stop.is_set():
            if asyncio.get_running_loop().time() > next_stats:
                service.log_stats()
                next_stats += STATS_INTERVAL_S
            try:
                if conn is None:
                    await asyncio.sleep(RETRY_S)
                    conn = await _listen(service.database_url)
                    await service.sync(tracker)
                    log.info("database connection restored; credentials resynced")
                elif await _changed(conn):
                    count = await service.sync(tracker)
                    log.info("credentials changed: amqtt now accepts %d accounts", count)
            except (psycopg.OperationalError, sqlalchemy.exc.OperationalError) as exc:
                log.error("database unreachable (%s); amqtt keeps serving known accounts", exc)
                if conn is not None:
                    await conn.close()
                conn = None
    finally:
        if conn is not None:
            await conn.close()


async def _serve(
    settings: BrokerSettings,
    database_url: str,
    tls: TlsFiles | None,
    stop: threading.Event,
    ready: threading.Event | None,
    tracker: SyncTracker | None,
) -> None:
    service = AmqttService(settings, database_url, tls)
    # Listening before the accounts are loaded: a change committed in between would
    # otherwise be missed until the next one (a terminal added at start-up refused).
    conn: psycopg.AsyncConnection[Any] | None = await _listen(database_url)
    try:
        await service.start()
        log.info(
            "amqtt serving %d accounts on %s:%d%s",
            len(service.cache),
            settings.host,
            settings.port,
            f" and TLS on {settings.tls_host}:{settings.tls_port}" if tls else "",
        )
        if ready is not None:
            ready.set()
        await _follow(service, stop, tracker, conn)
        conn = None  # _follow closed it
    finally:
        if conn is not None:
            await conn.close()
        await service.stop()


def run_amqtt_service(
    settings: BrokerSettings,
    database_url: str,
    tls: TlsFiles | None,
    stop: threading.Event,
    ready: threading.Event | None = None,
    tracker: SyncTracker | None = None,
) -> None:
    """Run amqtt in this thread until ``stop`` is set."""
    check_amqtt_version()
    asyncio.run(_serve(settings, database_url, tls, stop, ready, tracker))
