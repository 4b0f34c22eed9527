"""`tms commands` as a process, through a broker outage, a PostgreSQL outage and its own
SIGKILL: every command reaches its terminal, and each is recorded sent once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlmodel import Session

from commands import queue
from commands.queue import Requester
from shared import topics
from shared.db import libpq_url
from shared.messages import Command, parse_message
from shared.models import AccountKind
from tests.fixtures.broker import MqttProbe, RunningBroker
from tests.integration.platform import clean_env
from tests.integration.tcp_cutter import TcpCutter
from tests.integration.test_ingest_daemon import scalar
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

SERIAL = "TC-FAULTS-1"
OPERATOR = Requester("olga", "operator", "user")
WAIT_S = 90.0
PER_PHASE = 60


class SenderProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        start = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tms", "commands"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(
            lambda: b"connected to the broker" in self.log.read_bytes()[start:] or self._died(),
            lambda: f"the sender to connect:\n{self.text()}",
            WAIT_S,
        )
        assert not self._died(), self.text()

    def _died(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(WAIT_S)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            assert self.process.wait(WAIT_S) == 0, self.text()


@pytest.fixture
def terminal(mosquitto_broker: RunningBroker, database_url: str) -> Iterator[MqttProbe]:
    secret = mosquitto_broker.provision_terminal(SERIAL, customer="Faults")
    probe = MqttProbe(mosquitto_broker, SERIAL, secret, client_id=SERIAL)
    assert probe.connect()
    assert probe.subscribe(topics.command_filter(SERIAL))
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute("UPDATE terminal SET status = 'online' WHERE serial = %s", (SERIAL,))
    yield probe
    probe.close()


def test_outages_and_a_sigkill_lose_no_command_and_record_none_twice(
    mosquitto_broker: RunningBroker,
    database_url: str,
    terminal: MqttProbe,
    tmp_path: Path,
) -> None:
    secret = mosquitto_broker.service_account(AccountKind.CONSOLE, "tms-console")
    cutter = TcpCutter((mosquitto_broker.host, mosquitto_broker.port))
    sender = SenderProcess(
        clean_env(
            TMS_DATABASE_URL=database_url,
            TMS_CONSOLE_MQTT_HOST="127.0.0.1",
            TMS_CONSOLE_MQTT_PORT=str(cutter.port),
            TMS_CONSOLE_MQTT_USERNAME="tms-console",
            TMS_CONSOLE_MQTT_PASSWORD=secret,
            TMS_CONSOLE_MQTT_KEEPALIVE_S="5",
            TMS_COMMANDS_IDLE_CHECK_S="1",
        ),
        tmp_path / "commands.log",
    )
    delivered: list[str] = []
    queued: list[str] = []
    name = database_url.rsplit("/", 1)[1]
    admin_url = libpq_url(database_url.rsplit("/", 1)[0] + "/postgres")

    def queue_some(session: Session) -> None:
        # diagnostics: a 60 s result timeout, so nothing here is a resend.
        for _ in range(PER_PHASE):
            queued.append(queue.queue_command(session, OPERATOR, SERIAL, "diagnostics").id)

    def all_delivered() -> bool:
        delivered.extend(parse_message(Command, m.payload).id for m in terminal.drain())
        return set(queued) <= set(delivered)

    sender.start()
    try:
        with Session(mosquitto_broker.engine) as session:
            queue_some(session)
            wait_until(all_delivered, "the first commands", WAIT_S)

            # The broker away: commands wait, then go once it is back.
            cutter.cut(refuse=True)
            queue_some(session)
            wait_until(lambda: b"lost the broker" in sender.log.read_bytes(), "the cut", WAIT_S)
            cutter.refusing = False
            wait_until(
                all_delivered, lambda: f"after the broker's outage:\n{sender.text()}", WAIT_S
            )

            # PostgreSQL away: no new sessions, the sender's cut (the test's own and the
            # broker service's sessions are left alone).
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND application_name = 'tms-commands'",
                    (name,),
                )
                wait_until(
                    lambda: b"PostgreSQL unavailable" in sender.log.read_bytes(),
                    "the sender to notice the outage",
                    WAIT_S,
                )
                queue_some(session)  # on the test's session, opened before the outage
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            wait_until(
                all_delivered, lambda: f"after PostgreSQL's outage:\n{sender.text()}", WAIT_S
            )

            # Killed mid-stream, then started again.
            queue_some(session)
            sender.kill()
            sender.start()
            wait_until(all_delivered, lambda: f"after the SIGKILL:\n{sender.text()}", WAIT_S)
    finally:
        sender.stop()
    assert len(queued) == 4 * PER_PHASE
    # Each row went out once as far as the queue knows; the terminal saw each at least once
    # (a PUBACK lost to a cut may mean a second delivery, which the agent answers once).
    # On a slow machine the test can outlast a result timeout (60 s): a resend then is
    # the rule at work, recorded no sooner than the timeout after the first send.
    assert scalar(
        database_url,
        "SELECT count(*) FROM command WHERE status = 'sent' AND (attempts = 1"
        " OR last_sent_at >= sent_at + make_interval(secs => timeout_s))",
    ) == len(queued)
    assert set(delivered) == set(queued)
