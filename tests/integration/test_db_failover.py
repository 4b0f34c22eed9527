"""A PostgreSQL standby promoted while ingest writes and the console serves: both find
the new primary through a list of hosts in their URL (``target_session_attrs=read-write``)
and no message the broker acknowledged to a terminal is lost or written twice.

Two local clusters, the standby made by ``pg_basebackup -R`` and kept synchronous
(``synchronous_standby_names``): with asynchronous streaming a commit ingest has
acknowledged to the broker could be missing on the standby when the primary dies, which
is what docs/operations.md says to configure against.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from flask import Flask
from pydantic import SecretStr
from sqlmodel import Session

from console import users
from console.db import engine_of
from shared import schema
from shared.db import make_engine
from shared.models import AccountKind
from shared.ports import free_port
from shared.settings import ConsoleSettings
from tests.fixtures.broker import MqttProbe, RunningBroker
from tests.fixtures.console import TEST_PASSWORD, build_app, csrf_of, sign_in
from tests.integration.test_ingest_lossless import SERIAL, IngestProcess, Publisher, count
from tests.waiting import wait_until
from tms.postgres import DATABASE, SUPERUSER, EmbeddedPostgres, _run_as

pytestmark = pytest.mark.integration

TOTAL = 3000


@dataclass
class Pair:
    primary: EmbeddedPostgres
    standby: EmbeddedPostgres

    @property
    def url(self) -> str:
        """What ingest and the console are given: both hosts, the writable one wanted."""
        password = self.primary.password
        hosts = f"127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
        return (
            f"postgresql://{SUPERUSER}:{password}@{hosts}/{DATABASE}"
            "?target_session_attrs=read-write&connect_timeout=3"
        )


def _sync_state(primary: EmbeddedPostgres) -> str | None:
    with psycopg.connect(primary.url) as conn:
        row = conn.execute("SELECT sync_state FROM pg_stat_replication").fetchone()
    return None if row is None else str(row[0])


def _make_standby(primary: EmbeddedPostgres, standby: EmbeddedPostgres) -> None:
    user = _run_as()
    standby.root.mkdir(parents=True)
    if user:
        os.chown(standby.root, user.pw_uid, user.pw_gid)
    standby.root.chmod(0o700)
    result = primary._run(  # noqa: SLF001 (runs as the server's user, like initdb)
        [
            "pg_basebackup",
            "-h", "127.0.0.1", "-p", str(primary.port), "-U", SUPERUSER,
            "-D", str(standby.data_dir),
            "-R",  # standby.signal and primary_conninfo
            "-X", "stream",
            "--checkpoint=fast",
        ],
        env={**os.environ, "PGPASSWORD": primary.password},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    standby.start()


@pytest.fixture
def pair() -> Iterator[Pair]:
    root = Path(tempfile.mkdtemp(prefix="tms-test-pg-pair-"))
    root.chmod(0o755)
    password = secrets.token_urlsafe(16)
    primary = EmbeddedPostgres(root / "primary", free_port(), password)
    standby = EmbeddedPostgres(root / "standby", free_port(), password)
    try:
        primary.start()
        schema.upgrade(primary.url)
        with psycopg.connect(primary.url, autocommit=True) as conn:
            conn.execute("INSERT INTO customer (name) VALUES ('C')")
            conn.execute(
                "INSERT INTO terminal (serial, customer_id, model, status)"
                " SELECT %s, id, 'TC-200', 'unknown' FROM customer",
                (SERIAL,),
            )
        _make_standby(primary, standby)
        with psycopg.connect(primary.url, autocommit=True) as conn:
            # Set after the base backup: the standby, once promoted, must not wait for
            # a standby of its own.
            conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
            conn.execute("SELECT pg_reload_conf()")
        wait_until(lambda: _sync_state(primary) == "sync", "the standby to be synchronous")
        yield Pair(primary, standby)
    finally:
        primary.stop()
        standby.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def terminal(mosquitto_broker: RunningBroker) -> Iterator[tuple[RunningBroker, str, MqttProbe]]:
    ingest_secret = mosquitto_broker.service_account(AccountKind.INGEST, "tms-ingest")
    probe = MqttProbe(
        mosquitto_broker, SERIAL, mosquitto_broker.provision_terminal(SERIAL), client_id=SERIAL
    )
    assert probe.connect()
    yield mosquitto_broker, ingest_secret, probe
    probe.close()


def _promote(standby: EmbeddedPostgres) -> None:
    with psycopg.connect(standby.url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_promote(wait => true, wait_seconds => 60)").fetchone()
    assert row == (True,)


def _console(pair: Pair) -> Flask:
    engine = make_engine(pair.url, pool_size=1)
    with Session(engine) as session:
        users.create_user(session, "ops", TEST_PASSWORD, "operator")
    engine.dispose()
    settings = ConsoleSettings(secret_key=SecretStr("test-secret-key-0123456789abcdef"))
    app = build_app(settings, pair.url)
    app.config["TESTING"] = True
    return app


def test_a_standby_promoted_under_ingest_and_the_console_loses_nothing(
    pair: Pair, terminal: tuple[RunningBroker, str, MqttProbe]
) -> None:
    broker, secret, probe = terminal
    app = _console(pair)
    client = app.test_client()
    sign_in(client, "ops")
    assert SERIAL in client.get(f"/terminals?q={SERIAL}").get_data(as_text=True)
    ingest = IngestProcess(broker, secret, pair.url).wait_healthy()
    try:
        publisher = Publisher(probe, TOTAL, per_second=600)
        wait_until(lambda: count(pair.url)[0] >= TOTAL // 4, "a quarter committed", 60)
        pair.primary.process.kill()  # type: ignore[union-attr]  # SIGKILL, mid-stream
        pair.primary.process.wait()  # type: ignore[union-attr]
        # Read-only, the standby still answers: what ingest had committed is there.
        at_kill = count(pair.standby.url)[0]
        assert TOTAL // 4 <= at_kill < TOTAL, "the stream ended before the kill"
        _promote(pair.standby)
        publisher.finish()  # every message acknowledged by the broker to the terminal
        wait_until(lambda: count(pair.url)[0] >= TOTAL, "every message on the new primary", 120)
        # The console's pooled connections went with the old primary; its next
        # requests reconnect, read and write (sign-out and sign-in are audited).
        page = client.get(f"/terminals?q={SERIAL}")
        assert page.status_code == 200 and SERIAL in page.get_data(as_text=True)
        client.post("/logout", data={"csrf_token": csrf_of(client)})
        sign_in(client, "ops")
    finally:
        ingest.stop()
        engine_of(app).dispose()
    assert ingest.process.returncode == 0, ingest.output()
    assert count(pair.standby.url) == (TOTAL, TOTAL)
    with psycopg.connect(pair.standby.url) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        signed_in = conn.execute(
            "SELECT count(*) FROM audit_event WHERE action = 'login' AND actor = 'ops'"
        ).fetchone()
    assert signed_in is not None and signed_in[0] == 2
