"""The command sender against real Mosquitto and PostgreSQL: offline waits, expiry,
resends with a limit, two senders, a broker away, and the wake-ups of ``serve``."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr
from sqlmodel import Session

from commands import queue
from commands.mqtt_link import MqttLink
from commands.queue import Requester
from commands.sender import SendCycle, serve
from shared import topics
from shared.db import libpq_url
from shared.messages import Command, parse_message
from shared.models import AccountKind
from shared.settings import MqttClientSettings
from tests.fixtures.broker import MqttProbe, RunningBroker
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

SERIAL = "TC-SEND-1"
OPERATOR = Requester("olga", "operator", "user", origin="127.0.0.1")
WAIT_S = 60.0


@pytest.fixture
def console_mqtt(mosquitto_broker: RunningBroker) -> MqttClientSettings:
    secret = mosquitto_broker.service_account(AccountKind.CONSOLE, "tms-console")
    return MqttClientSettings(
        host=mosquitto_broker.host,
        port=mosquitto_broker.port,
        username="tms-console",
        password=SecretStr(secret),
    )


@pytest.fixture
def link(console_mqtt: MqttClientSettings) -> Iterator[MqttLink]:
    link = MqttLink(console_mqtt)
    link.start()
    assert link.wait_connected(WAIT_S), "the sender did not connect"
    yield link
    link.stop()


@pytest.fixture
def terminal(mosquitto_broker: RunningBroker) -> Iterator[MqttProbe]:
    secret = mosquitto_broker.provision_terminal(SERIAL, customer="Sender Test")
    probe = MqttProbe(mosquitto_broker, SERIAL, secret, client_id=SERIAL)
    assert probe.connect()
    assert probe.subscribe(topics.command_filter(SERIAL))
    yield probe
    probe.close()


@pytest.fixture
def session(mosquitto_broker: RunningBroker) -> Iterator[Session]:
    with Session(mosquitto_broker.engine, expire_on_commit=False) as session:
        yield session


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(libpq_url(database_url)) as conn:
        yield conn


def sql(database_url: str, statement: str, *params: Any) -> Any:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        row = cursor.fetchone() if cursor.description is not None else None
    return None if row is None else row[0] if len(row) == 1 else row


def set_status(database_url: str, status: str) -> None:
    sql(database_url, "UPDATE terminal SET status = %s WHERE serial = %s", status, SERIAL)


def received(probe: MqttProbe, count: int) -> list[Command]:
    probe.wait_for(count, WAIT_S)
    return [parse_message(Command, m.payload) for m in probe.drain()]


def test_offline_terminal_waits_then_gets_its_command(
    database_url: str,
    session: Session,
    link: MqttLink,
    terminal: MqttProbe,
    conn: psycopg.Connection[Any],
) -> None:
    set_status(database_url, "offline")
    command = queue.queue_command(session, OPERATOR, SERIAL, "set_config", {"beep_volume": 5})
    cycle = SendCycle(conn, link)
    assert cycle.run_once().sent == 0
    assert sql(database_url, "SELECT status FROM command WHERE id = %s", command.id) == "queued"
    set_status(database_url, "online")
    assert cycle.run_once().sent == 1
    [delivered] = received(terminal, 1)
    assert (delivered.id, delivered.name, delivered.args) == (
        command.id,
        "set_config",
        {"beep_volume": 5},
    )
    assert delivered.expires_at == command.expires_at
    row = sql(
        database_url,
        "SELECT status, attempts, sent_at IS NOT NULL,"
        " round(extract(epoch FROM due_at - last_sent_at)) FROM command WHERE id = %s",
        command.id,
    )
    assert row == ("sent", 1, True, 30)  # set_config's result timeout


def test_a_command_not_taken_in_time_expires(
    database_url: str, session: Session, link: MqttLink, conn: psycopg.Connection[Any]
) -> None:
    sql(database_url, "INSERT INTO customer (name) VALUES ('x') RETURNING id")
    sql(
        database_url,
        "INSERT INTO terminal (serial, customer_id, status, model)"
        " SELECT %s, id, 'offline', 'TC-200'"
        " FROM customer WHERE name = 'x' RETURNING id",
        "TC-LATE",
    )
    command = queue.queue_command(session, OPERATOR, "TC-LATE", "ping", expires_in_s=1)
    wait_until(
        lambda: sql(
            database_url, "SELECT now() > expires_at FROM command WHERE id = %s", command.id
        ),
        "the command's expiry to pass",
        WAIT_S,
    )
    result = SendCycle(conn, link).run_once()
    assert result.expired == 1 and result.finished == [command.id]
    state, error = sql(database_url, "SELECT status, error FROM command WHERE id = %s", command.id)
    assert state == "expired" and error.startswith("not delivered before it expired at")
    logged = sql(
        database_url,
        "SELECT severity, message FROM terminal_log WHERE kind = 'command' AND source_id = %s",
        command.id,
    )
    assert logged[0] == "warning" and logged[1].startswith("ping expired: not delivered")


def test_expiry_skips_a_command_whose_result_ingest_is_writing(
    database_url: str, session: Session, link: MqttLink, conn: psycopg.Connection[Any]
) -> None:
    # The expiry's UPDATE locked rows in scan order while ingest locks the commands of
    # a batch's results in id order: the two could deadlock. It now claims in id order
    # and skips a locked row, which its result finishes or the next cycle expires.
    sql(database_url, "INSERT INTO customer (name) VALUES ('y')")
    sql(
        database_url,
        "INSERT INTO terminal (serial, customer_id, status, model)"
        " SELECT 'TC-LATE2', id, 'offline', 'TC-200' FROM customer WHERE name = 'y'",
    )
    held, free = (
        queue.queue_command(session, OPERATOR, "TC-LATE2", "ping", expires_in_s=1) for _ in range(2)
    )
    wait_until(
        lambda: sql(
            database_url, "SELECT bool_and(now() > expires_at) FROM command WHERE id IN (%s, %s)",
            held.id, free.id,
        ),
        "both commands' expiry to pass",
        WAIT_S,
    )  # fmt: skip
    conn.execute("SET lock_timeout = '3s'")  # the old statement waited, now it fails
    conn.commit()
    cycle = SendCycle(conn, link)
    with psycopg.connect(libpq_url(database_url)) as ingest:
        ingest.execute("SELECT id FROM command WHERE id = %s FOR NO KEY UPDATE", (held.id,))
        result = cycle.run_once()
        assert (result.expired, result.finished) == (1, [free.id])
        ingest.rollback()
    assert sql(database_url, "SELECT status FROM command WHERE id = %s", held.id) == "queued"
    assert cycle.run_once().finished == [held.id]
    assert sql(database_url, "SELECT status FROM command WHERE id = %s", held.id) == "expired"


def test_a_lost_result_is_resent_with_backoff_then_failed(
    database_url: str,
    session: Session,
    link: MqttLink,
    terminal: MqttProbe,
    conn: psycopg.Connection[Any],
) -> None:
    set_status(database_url, "online")
    command = queue.queue_command(session, OPERATOR, SERIAL, "ping")
    cycle = SendCycle(conn, link)
    waits = []
    for attempt in (1, 2, 3):
        assert cycle.run_once().sent == 1, f"send {attempt}"
        waits.append(
            sql(
                database_url,
                "SELECT round(extract(epoch FROM due_at - last_sent_at)) FROM command"
                " WHERE id = %s",
                command.id,
            )
        )
        # The result did not come: its timeout is over.
        sql(database_url, "UPDATE command SET due_at = now() WHERE id = %s", command.id)
    assert waits == [15, 30, 60]  # ping's 15 s, doubled per send
    assert [c.id for c in received(terminal, 3)] == [command.id] * 3
    result = cycle.run_once()
    assert result.failed == 1 and result.sent == 0
    state, error, attempts = sql(
        database_url, "SELECT status, error, attempts FROM command WHERE id = %s", command.id
    )
    assert (state, error, attempts) == ("failed", "no result after 3 attempt(s)", 3)
    logged = sql(
        database_url,
        "SELECT severity, message FROM terminal_log WHERE kind = 'command' AND source_id = %s",
        command.id,
    )
    assert logged == ("error", "ping failed: no result after 3 attempt(s)")


def test_two_senders_never_send_one_command_twice(
    database_url: str,
    session: Session,
    link: MqttLink,
    console_mqtt: MqttClientSettings,
    terminal: MqttProbe,
) -> None:
    set_status(database_url, "online")
    ids = {queue.queue_command(session, OPERATOR, SERIAL, "ping").id for _ in range(300)}
    second = MqttLink(console_mqtt)
    second.start()
    assert second.wait_connected(WAIT_S)
    sent: list[int] = []
    start = threading.Barrier(2)

    def sender(publisher: MqttLink) -> None:
        with psycopg.connect(libpq_url(database_url)) as conn:
            cycle = SendCycle(conn, publisher, batch_size=20)
            start.wait()
            while (result := cycle.run_once()).sent:
                sent.append(result.sent)

    try:
        threads = [threading.Thread(target=sender, args=(p,)) for p in (link, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT_S)
    finally:
        second.stop()
    assert sum(sent) == 300
    delivered = Counter(c.id for c in received(terminal, 300))
    terminal.barrier(f"tms/v1/{SERIAL}/cmd/barrier")
    delivered.update(parse_message(Command, m.payload).id for m in terminal.drain())
    assert set(delivered) == ids and set(delivered.values()) == {1}


def test_with_the_broker_away_nothing_is_claimed(
    database_url: str,
    session: Session,
    console_mqtt: MqttClientSettings,
    conn: psycopg.Connection[Any],
) -> None:
    sql(database_url, "INSERT INTO customer (name) VALUES ('y')")
    sql(
        database_url,
        "INSERT INTO terminal (serial, customer_id, status, model)"
        " SELECT 'TC-AWAY', id, 'online', 'TC-200'"
        " FROM customer WHERE name = 'y'",
    )
    command = queue.queue_command(session, OPERATOR, "TC-AWAY", "ping")
    unreachable = MqttLink(console_mqtt.model_copy(update={"port": 1}))
    assert SendCycle(conn, unreachable).run_once().sent == 0
    assert sql(database_url, "SELECT status FROM command WHERE id = %s", command.id) == "queued"


def test_serve_sends_at_once_on_a_new_row_and_on_a_terminal_back_online(
    database_url: str, session: Session, link: MqttLink, terminal: MqttProbe
) -> None:
    stop = threading.Event()
    finished: list[str] = []
    thread = threading.Thread(
        target=serve,
        args=(libpq_url(database_url), link, stop),
        # An idle check far beyond the test's deadline: only a NOTIFY can wake it.
        kwargs={"idle_check_s": 300.0, "on_finished": finished.extend},
        daemon=True,
    )
    set_status(database_url, "online")
    thread.start()
    try:
        first = queue.queue_command(session, OPERATOR, SERIAL, "ping")
        assert [c.id for c in received(terminal, 1)] == [first.id]
        set_status(database_url, "offline")
        second = queue.queue_command(session, OPERATOR, SERIAL, "ping")
        waiting = queue.queue_command(session, OPERATOR, SERIAL, "ping")
        queue.cancel_command(session, OPERATOR, waiting.id)
        wait_until(lambda: waiting.id in finished, "the cancel's NOTIFY", WAIT_S)
        set_status(database_url, "online")
        assert [c.id for c in received(terminal, 1)] == [second.id]
    finally:
        stop.set()
        thread.join(WAIT_S)
    assert not thread.is_alive()


def test_a_bulk_goes_out_at_its_rate_per_customer(
    database_url: str, session: Session, link: MqttLink, mosquitto_broker: RunningBroker
) -> None:
    serials = [f"TC-BULK-{n}" for n in range(4)]
    for serial in serials:
        mosquitto_broker.provision_terminal(serial, customer="Bulk Test")
    sql(database_url, "UPDATE terminal SET status = 'online' WHERE serial LIKE 'TC-BULK-%%'")
    with psycopg.connect(libpq_url(database_url)) as conn:
        ids = [t for (t,) in conn.execute("SELECT id FROM terminal WHERE serial LIKE 'TC-BULK-%'")]
    bulk = queue.queue_bulk(
        session, OPERATOR, "ping", None, queue.bulk_targets(session, ids), rate_per_s=4
    )
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(libpq_url(database_url), link, stop), daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: (
                sql(
                    database_url,
                    "SELECT count(*) FROM command WHERE bulk_id = %s AND status = 'sent'",
                    bulk.id,
                )
                == 4
            ),
            "the bulk to be sent",
            WAIT_S,
        )
    finally:
        stop.set()
        thread.join(WAIT_S)
    with psycopg.connect(libpq_url(database_url)) as conn:
        sent = [
            row[0]
            for row in conn.execute(
                "SELECT extract(epoch FROM last_sent_at - created_at)::float8"
                " FROM command WHERE bulk_id = %s ORDER BY last_sent_at",
                (bulk.id,),
            )
        ]
    # One terminal of the customer every 1/4 s: the k-th went out no sooner than k/4 s.
    assert all(at >= turn * 0.25 for turn, at in enumerate(sent)), sent


def test_a_row_no_message_can_be_made_of_fails_and_the_rest_go(
    database_url: str,
    session: Session,
    link: MqttLink,
    terminal: MqttProbe,
    conn: psycopg.Connection[Any],
) -> None:
    set_status(database_url, "online")
    good = queue.queue_command(session, OPERATOR, SERIAL, "ping")
    # Written around the queue's checks: an id no topic can carry.
    sql(
        database_url,
        "INSERT INTO command (id, terminal_id, name, status, expires_at)"
        " SELECT 'not a topic id!', id, 'ping', 'queued', now() + interval '1 hour'"
        " FROM terminal WHERE serial = %s",
        SERIAL,
    )
    result = SendCycle(conn, link).run_once()
    assert (result.sent, result.failed) == (1, 1)
    assert result.finished == ["not a topic id!"]
    assert [c.id for c in received(terminal, 1)] == [good.id]
    state, error = sql(
        database_url, "SELECT status, error FROM command WHERE id = 'not a topic id!'"
    )
    assert state == "failed" and error.startswith("cannot be sent: invalid command id")
