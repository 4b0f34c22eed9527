"""The whole command loop on real parts: queue -> sender -> Mosquitto -> simulated agent
(the real driver over a faked USB device) -> ingest -> the row, and support scripts'
requests over MQTT through the relay."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from paho.mqtt.client import MQTTProtocolVersion
from pydantic import SecretStr
from sqlmodel import Session

from commands import queue
from commands.mqtt_link import MqttLink
from commands.queue import CommandView, Requester
from commands.relay import RequestRelay
from commands.sender import SendCycle, serve
from shared import topics
from shared.db import libpq_url
from shared.diagnostics import report_of
from shared.messages import CommandRequest, CommandRequestReply, parse_message
from shared.models import AccountKind
from shared.ports import free_port
from shared.settings import IngestSettings, MqttClientSettings
from tests.fixtures.broker import MqttProbe, RunningBroker
from tests.integration.agent_harness import FleetThread, mqtt_of
from tests.integration.test_ingest_daemon import IngestThread, scalar
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

SERIAL = "TC-LOOP-1"
SCRIPT = "script-ops"
OPERATOR = Requester("olga", "operator", "user", origin="127.0.0.1")
WAIT_S = 60.0


@dataclass
class Loop:
    broker: RunningBroker
    session: Session
    secret: str
    relay: RequestRelay

    def final(self, command_id: str) -> CommandView:
        return final(self.session, command_id)

    def fleet(self) -> FleetThread:
        return FleetThread([(SERIAL, self.secret)], mqtt_of(self.broker))


def final(session: Session, command_id: str) -> CommandView:
    def done() -> CommandView | None:
        session.rollback()  # a fresh snapshot each poll
        view = queue.get_command(session, command_id)
        return view if view is not None and view.final else None

    return wait_until(done, f"command {command_id} to finish", WAIT_S)


def account(broker: RunningBroker, username: str, secret: str) -> MqttClientSettings:
    return MqttClientSettings(
        host=broker.host, port=broker.port, username=username, password=SecretStr(secret)
    )


def start_ingest(
    broker: RunningBroker, secret: str, client_id: str, database_url: str
) -> IngestThread:
    settings = IngestSettings(
        mqtt=account(broker, "tms-ingest", secret),
        client_id=client_id,
        batch_interval_ms=50,
        metrics_port=free_port(),
    )
    return IngestThread(settings, database_url).start()


@pytest.fixture
def loop(mosquitto_broker: RunningBroker, database_url: str) -> Iterator[Loop]:
    broker = mosquitto_broker
    secret = broker.provision_terminal(SERIAL, customer="Loop Test")
    console_secret = broker.service_account(AccountKind.CONSOLE, "tms-console")
    ingest_secret = broker.service_account(AccountKind.INGEST, "tms-ingest")
    ingest = start_ingest(broker, ingest_secret, "tms-ingest-loop", database_url)
    link = MqttLink(
        account(broker, "tms-console", console_secret),
        subscriptions=[topics.COMMAND_REQUEST_FILTER],
    )
    # A burst of 3 and next to no refill: the rate test's outcome does not depend on speed.
    relay = RequestRelay(broker.engine, link, rate_per_s=0.001, burst=3)
    link.on_message = relay.on_message
    relay.start()
    link.start()
    assert link.wait_connected(WAIT_S)
    stop = threading.Event()
    sender = threading.Thread(
        target=serve,
        args=(libpq_url(database_url), link, stop),
        kwargs={"on_finished": relay.on_finished},
        daemon=True,
    )
    sender.start()
    try:
        with Session(broker.engine, expire_on_commit=False) as session:
            yield Loop(broker, session, secret, relay)
    finally:
        stop.set()
        sender.join(WAIT_S)
        link.stop()
        relay.stop()
        ingest.stop()
    assert not sender.is_alive()


def test_diagnostics_round_trip_and_the_terminal_log(loop: Loop, database_url: str) -> None:
    with loop.fleet():
        wait_until(
            lambda: (
                scalar(database_url, "SELECT status FROM terminal WHERE serial = %s", SERIAL)
                == "online"
            ),
            "the terminal to be online",
            WAIT_S,
        )
        command = queue.queue_command(loop.session, OPERATOR, SERIAL, "diagnostics")
        done = loop.final(command.id)
    assert done.state == "succeeded", done.error
    assert done.attempts == 1 and done.round_trip_ms is not None
    report = report_of(done.result)
    assert report is not None and report.checks[0].id == "usb_link"
    logged = scalar(
        database_url,
        "SELECT message FROM terminal_log WHERE kind = 'command' AND source_id = %s",
        command.id,
    )
    assert logged is not None and "diagnostics" in logged


def test_a_command_for_an_offline_terminal_runs_when_it_connects(
    loop: Loop, database_url: str
) -> None:
    command = queue.queue_command(loop.session, OPERATOR, SERIAL, "set_config", {"beep_volume": 7})
    assert scalar(database_url, "SELECT status FROM command WHERE id = %s", command.id) == "queued"
    with loop.fleet():
        done = loop.final(command.id)
    assert done.state == "succeeded" and done.result == {"written": {"beep_volume": "7"}}


def test_expired_before_the_terminal_came_back(loop: Loop, database_url: str) -> None:
    command = queue.queue_command(loop.session, OPERATOR, SERIAL, "ping", expires_in_s=1)
    done = loop.final(command.id)  # the sender's timer, with nothing else to wake it
    assert done.state == "expired" and done.sent_at is None


def _script(loop: Loop) -> MqttProbe:
    secret = loop.broker.service_account(AccountKind.SUPPORT_SCRIPT, SCRIPT)
    probe = MqttProbe(loop.broker, SCRIPT, secret, protocol=MQTTProtocolVersion.MQTTv311)
    assert probe.connect()
    assert probe.subscribe(topics.command_reply_filter(SCRIPT))
    return probe


def _request(probe: MqttProbe, request_id: str, **fields: Any) -> None:
    payload = CommandRequest(serial=fields.pop("serial", SERIAL), **fields).to_payload()
    assert probe.publish(topics.command_request(SCRIPT, request_id), payload)


def _replies(probe: MqttProbe, count: int) -> list[CommandRequestReply]:
    probe.wait_for(count, WAIT_S)
    return [parse_message(CommandRequestReply, m.payload) for m in probe.drain()]


def test_a_support_script_requests_over_mqtt_and_reads_its_result(
    loop: Loop, database_url: str
) -> None:
    probe = _script(loop)
    try:
        with loop.fleet():
            _request(probe, "req-1", name="ping")
            accepted, finished = _replies(probe, 2)
        # The first reply tells the state when the relay queued it: on a busy machine the
        # sender may have published it to the terminal already.
        assert accepted.request_id == "req-1" and accepted.state in ("queued", "sent")
        assert (finished.state, finished.command_id) == ("succeeded", accepted.command_id)
        assert finished.output["pong"] is True
        row = scalar(
            database_url,
            "SELECT json_build_array(requested_by, requester_kind, request_id) FROM command"
            " WHERE id = %s",
            accepted.command_id,
        )
        assert row == [SCRIPT, "mqtt", "req-1"]
        audit = scalar(
            database_url,
            "SELECT actor FROM audit_event WHERE action = 'command.queued'"
            " AND detail->>'command' = %s",
            accepted.command_id,
        )
        assert audit == SCRIPT

        # The support role's limits: no reboot; a bad argument; an unknown terminal.
        _request(probe, "req-2", name="reboot")
        _request(probe, "req-3", name="fetch_logs", args={"lines": -1})
        [no_reboot, bad_args] = _replies(probe, 2)
        assert no_reboot.state == "refused" and "may not send reboot" in (no_reboot.error or "")
        assert bad_args.state == "refused" and "bad argument lines" in (bad_args.error or "")
        assert scalar(database_url, "SELECT count(*) FROM command") == 1
    finally:
        probe.close()


def test_a_support_script_over_its_rate_is_refused(loop: Loop) -> None:
    probe = _script(loop)
    try:
        # A burst of 3, then (next to) no refill: 3 of 6 are refused.
        for index in range(6):
            assert probe.publish(
                topics.command_request(SCRIPT, f"burst-{index}"),
                json.dumps({"v": 1, "serial": SERIAL, "name": "ping"}).encode(),
            )
        replies = _replies(probe, 6)
        refused = [r for r in replies if r.state == "refused"]
        assert refused and all("too many requests" in (r.error or "") for r in refused)
        assert len(refused) == 3
    finally:
        probe.close()


def test_a_lost_result_is_recovered_by_the_resend_without_a_second_run(
    mosquitto_broker: RunningBroker, database_url: str
) -> None:
    """The agent answers while nothing listens (QoS 1 to no subscriber is dropped), so the
    result is lost; the sender's resend gets the kept result, and the agent runs it once."""
    broker = mosquitto_broker
    secret = broker.provision_terminal(SERIAL, customer="Loop Test")
    console_secret = broker.service_account(AccountKind.CONSOLE, "tms-console")
    ingest_secret = broker.service_account(AccountKind.INGEST, "tms-ingest")
    link = MqttLink(account(broker, "tms-console", console_secret))
    link.start()
    assert link.wait_connected(WAIT_S)
    fleet = FleetThread([(SERIAL, secret)], mqtt_of(broker))
    try:
        with (
            Session(broker.engine, expire_on_commit=False) as session,
            psycopg.connect(libpq_url(database_url)) as conn,
            fleet,
        ):
            wait_until(lambda: fleet.agents and fleet.agents[0].stats.connects, "the agent", WAIT_S)
            # No ingest yet: mark the terminal reachable as ingest would have.
            scalar(database_url, "UPDATE terminal SET status = 'online' RETURNING id")
            command = queue.queue_command(session, OPERATOR, SERIAL, "ping")
            cycle = SendCycle(conn, link)
            assert cycle.run_once().sent == 1
            agent = fleet.agents[0]
            # Answered, and the answer acknowledged by the broker (the outbox is FIFO and
            # empty again), with no subscriber to take it.
            wait_until(
                lambda: agent.stats.commands_answered >= 1 and len(agent.outbox) == 0,
                "the first run's result to be published",
                WAIT_S,
            )
            ingest = start_ingest(broker, ingest_secret, "tms-ingest-lost", database_url)
            try:
                assert queue.get_command(session, command.id).state == "sent"  # type: ignore[union-attr]
                scalar(database_url, "UPDATE command SET due_at = now() RETURNING id")
                assert cycle.run_once().sent == 1  # the resend
                done = final(session, command.id)
            finally:
                ingest.stop()
            assert done.state == "succeeded" and done.attempts == 2
            assert agent.commands.duplicates == 1  # answered again from what it kept, not run
    finally:
        link.stop()


def test_a_malformed_request_is_refused_and_kept_aside(loop: Loop, database_url: str) -> None:
    probe = _script(loop)
    try:
        assert probe.publish(topics.command_request(SCRIPT, "bad-1"), b'{"v": 1, "serial": 5}')
        [refused] = _replies(probe, 1)
        assert refused.state == "refused" and "serial" in (refused.error or "")
        # A request id no reply topic can carry: nothing to answer on, only kept aside.
        assert probe.publish(f"tms/requests/{SCRIPT}/cmd/not valid!", b"{}")
        wait_until(
            lambda: (
                len(scalar(database_url, "SELECT json_agg(reason) FROM dead_letter") or []) == 2
            ),
            "both requests to be kept aside",
            WAIT_S,
        )
        kept = scalar(database_url, "SELECT json_agg(reason ORDER BY reason) FROM dead_letter")
        assert kept == ["bad-request", "bad-request-topic"]
        assert loop.relay.refused == 1 and loop.relay.ignored == 1
    finally:
        probe.close()
