"""The ``tms broker`` daemon: Mosquitto kept in step with the credential table.

Start-up: LISTEN on ``tms_credentials`` first (so no change is missed), write the
password and ACL files from the database, start Mosquitto. Then every notification
(bursts coalesced) rewrites the files and reloads Mosquitto. A lost database
connection is retried, and a full resync follows, while Mosquitto keeps serving.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import psycopg
import sqlalchemy.exc
from sqlalchemy import Engine
from sqlmodel import Session

from broker.auth_plugin import PluginOptions
from broker.certs import TlsFiles
from broker.credential_sync import CHANNEL, COALESCE_MAX_S, COALESCE_S, POLL_S, RETRY_S, SyncTracker
from broker.errors import BrokerError, MosquittoError
from broker.mosquitto import MosquittoFiles, MosquittoProcess, TlsListener
from registry.provisioning import active_accounts
from shared.db import libpq_url, make_engine
from shared.settings import BrokerSettings

log = logging.getLogger(__name__)


def _sync(engine: Engine, mosquitto: MosquittoProcess, tracker: SyncTracker | None) -> int:
    if tracker is not None:
        tracker.begin()
    try:
        with Session(engine) as session:
            accounts = active_accounts(session)
        mosquitto.write_accounts(accounts)
        if mosquitto.exit_code() is None and mosquitto.process is not None:
            mosquitto.reload()
        return len(accounts)
    finally:
        if tracker is not None:
            tracker.finish()


class _Listener:
    """The LISTEN connection on ``tms_credentials``, reopened after a database outage."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.conn: psycopg.Connection | None = None

    def open(self) -> None:
        self.close()
        self.conn = psycopg.connect(libpq_url(self.database_url), autocommit=True)
        self.conn.execute(f"LISTEN {CHANNEL}")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def wait_for_change(self) -> bool:
        """Up to POLL_S for a notification, then drain the burst; True if any arrived."""
        assert self.conn is not None
        if not any(True for _ in self.conn.notifies(timeout=POLL_S, stop_after=1)):
            return False
        # A steady stream (bulk provisioning) must not postpone the reload for ever.
        deadline = time.monotonic() + COALESCE_MAX_S
        while time.monotonic() < deadline and any(
            True for _ in self.conn.notifies(timeout=COALESCE_S, stop_after=1)
        ):
            pass
        return True


def _check_alive(mosquitto: MosquittoProcess) -> None:
    code = mosquitto.exit_code()
    if code is not None:
        raise MosquittoError(
            f"Mosquitto stopped unexpectedly with code {code}:\n{mosquitto.log_tail()}"
        )


def _reconnect(
    listener: _Listener,
    engine: Engine,
    mosquitto: MosquittoProcess,
    stop: threading.Event,
    tracker: SyncTracker | None,
) -> None:
    """Retry until the database is back, then resync: changes may have been missed."""
    listener.close()
    while not stop.wait(RETRY_S):
        _check_alive(mosquitto)
        try:
            listener.open()
            _sync(engine, mosquitto, tracker)
        except (psycopg.OperationalError, sqlalchemy.exc.OperationalError) as exc:
            log.warning("database still unreachable: %s", exc)
            continue
        log.info("database connection restored; credentials resynced")
        return


def _follow_changes(
    listener: _Listener,
    engine: Engine,
    mosquitto: MosquittoProcess,
    stop: threading.Event,
    tracker: SyncTracker | None,
) -> None:
    while not stop.is_set():
        _check_alive(mosquitto)
        try:
            if listener.wait_for_change():
                count = _sync(engine, mosquitto, tracker)
                log.info("credentials changed: reloaded Mosquitto with %d accounts", count)
        except (psycopg.OperationalError, sqlalchemy.exc.OperationalError) as exc:
            log.error("lost the database connection (%s); Mosquitto keeps running", exc)
            _reconnect(listener, engine, mosquitto, stop, tracker)


def run_broker_service(
    settings: BrokerSettings,
    database_url: str,
    broker_dir: Path,
    stop: threading.Event,
    ready: threading.Event | None = None,
    tracker: SyncTracker | None = None,
    tls: TlsFiles | None = None,
) -> None:
    """Run the broker for ``settings`` until ``stop`` is set; raise if it dies on its own.

    With ``tls`` (certificates from ``tms certs init``) it also listens with TLS on
    ``settings.tls_host:tls_port``.
    """
    if settings.kind == "amqtt":
        if settings.bridge.address:
            raise BrokerError(
                'a bridge to the core broker needs Mosquitto ([broker] kind = "mosquitto"):'
                " amqtt has no bridge"
            )
        from broker.amqtt_service import run_amqtt_service

        run_amqtt_service(settings, database_url, tls, stop, ready, tracker)
        return
    if settings.kind != "mosquitto":
        raise BrokerError(f"unknown broker kind {settings.kind!r}: use mosquitto or amqtt")
    tls_listener = TlsListener(settings.tls_host, settings.tls_port, tls) if tls else None
    mosquitto = MosquittoProcess(
        settings.mosquitto_binary,
        MosquittoFiles(broker_dir),
        settings.host,
        settings.port,
        tls_listener,
        PluginOptions.from_settings(settings),
        settings.mosquitto_plugin_dir,
        settings.max_queued_messages,
        settings.max_packet_bytes,
        settings.autosave_s,
        settings.bridge,
    )
    mosquitto.prepare()
    engine = make_engine(database_url, pool_size=1)
    listener = _Listener(database_url)
    try:
        listener.open()
        count = _sync(engine, mosquitto, tracker)
        mosquitto.start()
        log.info("Mosquitto serving %d accounts on %s:%d", count, settings.host, settings.port)
        if ready is not None:
            ready.set()
        _follow_changes(listener, engine, mosquitto, stop, tracker)
    finally:
        listener.close()
        started = time.monotonic()
        code = mosquitto.stop()
        if code is not None:
            log.info("Mosquitto stopped (code %d) in %.1f s", code, time.monotonic() - started)
        engine.dispose()
