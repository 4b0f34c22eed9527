"""Notifications against real servers: aiosmtpd for e-mail, a local HTTP server for webhooks."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import psycopg
import pytest
from aiosmtpd.controller import Controller

from ingest.alerts.config import DEFAULT_RULES, AlertConfig, parse_alert_config
from ingest.alerts.notify import SIGNATURE_HEADER, TIMESTAMP_HEADER, OutboxWorker, verify
from ingest.sweep import SweepResult, sweep_once
from rollouts.driver import _RAISE_HALT_ALERT
from shared.ports import free_port
from shared.settings import NotifySettings
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

SECRET = "webhook-test-secret-value"


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(envelope)
        return "250 OK"


class Hook(BaseHTTPRequestHandler):
    received: list[tuple[Any, bytes]] = []
    fail_first = 0

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.headers, body))
        failing = type(self).fail_first > 0
        type(self).fail_first -= 1
        self.send_response(500 if failing else 204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def mail_server() -> Iterator[tuple[int, Inbox]]:
    """A real SMTP server (aiosmtpd) on a free port, and what it received."""
    port, inbox = free_port(), Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield port, inbox
    controller.stop()


@pytest.fixture
def hook_server() -> Iterator[str]:
    Hook.received, Hook.fail_first = [], 1
    server = HTTPServer(("127.0.0.1", free_port()), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()
    server.server_close()


def rules(extra_routes: list[dict[str, Any]]) -> AlertConfig:
    return parse_alert_config({**DEFAULT_RULES, "route": extra_routes}, {"TMS_HOOK": SECRET})


def sweep(database_url: str, config: AlertConfig) -> SweepResult:
    async def go() -> SweepResult:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            return await sweep_once(conn, config, datetime.now(UTC))

    return asyncio.run(go())


def raise_alert(database_url: str, config: AlertConfig, *serials: str) -> None:
    """Terminals that went offline (TC-N1 unless named), and the sweep that alerts."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO customer (name) VALUES ('Acme') ON CONFLICT DO NOTHING")
        for serial in serials or ("TC-N1",):
            conn.execute(
                "INSERT INTO terminal (serial, customer_id, model, status, status_reason,"
                " status_changed_at) SELECT %s, id, 'TC-200', 'offline', 'agent disconnected',"
                " now() FROM customer WHERE name = 'Acme'",
                (serial,),
            )
    sweep(database_url, config)


def deliver(database_url: str, worker: OutboxWorker) -> int:
    async def go() -> int:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            return await worker.deliver_due(conn)

    return asyncio.run(go())


def outbox(database_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT channel, status, attempts FROM notification_outbox ORDER BY id"
        ).fetchall()


def test_mail_server_down_then_up_delivers_once(database_url: str) -> None:
    port = free_port()
    config = rules([{"name": "ops", "email": ["ops@example.com"]}])
    settings = NotifySettings(
        smtp_host="127.0.0.1",
        smtp_port=port,
        retry_first_s=0.05,
        timeout_s=30,
        smtp_from="tms@example.com",
    )
    worker = OutboxWorker(settings, config, {})
    raise_alert(database_url, config)
    assert deliver(database_url, worker) == 0  # nothing listens on the port yet
    assert outbox(database_url) == [("email", "pending", 1)]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        time.sleep(0.1)  # past the backoff
        assert deliver(database_url, worker) == 1
        assert deliver(database_url, worker) == 0
    finally:
        controller.stop()
    assert outbox(database_url) == [("email", "sent", 2)]
    assert len(inbox.messages) == 1
    mail = inbox.messages[0]
    assert mail.rcpt_tos == ["ops@example.com"]
    text = mail.content.decode()
    assert "Subject: [TMS critical] offline: TC-N1 (Acme)" in text
    assert "agent disconnected" in text


def test_webhook_is_signed_and_retried(database_url: str, hook_server: str) -> None:
    config = rules([{"name": "hook", "webhook": hook_server, "secret_env": "TMS_HOOK"}])
    settings = NotifySettings(retry_first_s=0.05, timeout_s=30)
    worker = OutboxWorker(settings, config, {"TMS_HOOK": SECRET})
    raise_alert(database_url, config)
    assert deliver(database_url, worker) == 0  # the receiver answers 500 once
    time.sleep(0.1)  # past the backoff (a lower bound: a busy machine only lengthens it)
    assert deliver(database_url, worker) == 1
    assert outbox(database_url) == [("webhook", "sent", 2)]
    headers, body = Hook.received[-1]
    assert verify(SECRET, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
    assert not verify("another-secret", headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
    assert json.loads(body)["serial"] == "TC-N1"


def test_a_notification_that_keeps_failing_is_marked_failed(database_url: str) -> None:
    config = rules([{"name": "ops", "email": ["ops@example.com"]}])
    settings = NotifySettings(
        smtp_host="127.0.0.1",
        smtp_port=free_port(),
        retry_first_s=0.01,
        max_attempts=2,
        timeout_s=1,
    )
    worker = OutboxWorker(settings, config, {})
    raise_alert(database_url, config)
    deliver(database_url, worker)
    time.sleep(0.05)  # past the backoff (a lower bound: a busy machine only lengthens it)
    deliver(database_url, worker)
    assert outbox(database_url) == [("email", "failed", 2)]


def test_a_storm_incident_is_mailed_when_it_opens_and_when_it_closes_with_its_counts(
    database_url: str, mail_server: tuple[int, Inbox]
) -> None:
    port, inbox = mail_server
    storm = {"settle_s": 0, "quiet_s": 2, "summary_interval_s": 300}
    raw = {**DEFAULT_RULES, "storm": storm, "route": [{"name": "ops", "email": ["ops@x.org"]}]}
    config = parse_alert_config(raw, {})
    settings = NotifySettings(
        smtp_host="127.0.0.1", smtp_port=port, timeout_s=30, smtp_from="tms@example.com"
    )
    worker = OutboxWorker(settings, config, {})
    raise_alert(database_url, config, *(f"TC-N{n:02d}" for n in range(25)))
    raise_alert(database_url, config, "TC-LATE1", "TC-LATE2", "TC-LATE3")
    # The sweep, as the daemon runs it, closes the incident once it has been quiet.
    wait_until(
        lambda: (told := sweep(database_url, config).incidents) and told.closed,
        "the quiet incident's close",
    )
    assert deliver(database_url, worker) == 2
    subjects = [m.content.decode() for m in inbox.messages]
    opened, closed = subjects
    assert "Subject: [TMS critical] incident #" in opened
    assert " opened: 25 alerts" in opened
    assert "by kind: offline 25" in opened
    assert " closed: 28 alerts in all" in closed
    assert "): 3 alerts" in closed  # since the opening notification
    assert "by customer: Acme 28" in closed
    assert all(m.rcpt_tos == ["ops@x.org"] for m in inbox.messages)
    assert deliver(database_url, worker) == 0


def halt(database_url: str, rollout_id: int) -> int:
    """The alert row the rollout driver writes when it halts a rollout (its own SQL)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            _RAISE_HALT_ALERT,
            {
                "scope": f"rollout:{rollout_id}",
                "message": f"rollout {rollout_id} (pilot) halted: wave 1: 2 of 10 failed",
            },
        )
        row = conn.execute(
            "SELECT id FROM alert WHERE scope = %s AND status = 'open'", (f"rollout:{rollout_id}",)
        ).fetchone()
        assert row is not None
        return int(row[0])


def test_a_halted_rollout_is_mailed_once_through_the_routes_without_a_customer(
    database_url: str, mail_server: tuple[int, Inbox]
) -> None:
    port, inbox = mail_server
    config = rules(
        [
            {"name": "ops", "min_severity": "critical", "email": ["ops@example.com"]},
            {"name": "acme", "customer": "Acme", "email": ["it@acme.example"]},
        ]
    )
    settings = NotifySettings(
        smtp_host="127.0.0.1", smtp_port=port, timeout_s=30, smtp_from="tms@example.com"
    )
    worker = OutboxWorker(settings, config, {})
    alert_id = halt(database_url, 12)
    assert sweep(database_url, config).raised_elsewhere_notifications == 1
    # Told once: the next sweeps, and the driver halting it again (a count bump), add none.
    assert sweep(database_url, config).raised_elsewhere_notifications == 0
    assert halt(database_url, 12) == alert_id
    assert sweep(database_url, config).raised_elsewhere_notifications == 0
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT alert_id, route, channel, target FROM notification_outbox"
        ).fetchall()
    assert rows == [(alert_id, "ops", "email", "ops@example.com")]
    assert deliver(database_url, worker) == 1
    (message,) = inbox.messages
    assert message.rcpt_tos == ["ops@example.com"]
    mail = message.content.decode()
    assert "Subject: [TMS critical] rollout_halted: rollout:12" in mail
    assert "rollout 12 (pilot) halted: wave 1: 2 of 10 failed" in mail
    # Resolved by a person, then halted again after a resume: a new alert, told again.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE alert SET status = 'resolved' WHERE id = %s", (alert_id,))
    assert halt(database_url, 12) != alert_id
    assert sweep(database_url, config).raised_elsewhere_notifications == 1


def test_a_halt_no_route_takes_or_a_storm_already_tells_is_not_sent_alone(
    database_url: str, hook_server: str
) -> None:
    only_acme = rules([{"name": "acme", "customer": "Acme", "email": ["it@acme.example"]}])
    halt(database_url, 1)
    assert sweep(database_url, only_acme).raised_elsewhere_notifications == 0
    assert sweep(database_url, rules([])).raised_elsewhere_notifications == 0
    assert outbox(database_url) == []
    # Gathered into a storm incident: told there on the routes that take incidents, and
    # alone only on a route that does not.
    with psycopg.connect(database_url, autocommit=True) as conn:
        incident = conn.execute(
            "INSERT INTO incident (status, severity, summary, alert_count)"
            " VALUES ('open', 'critical', 'a storm', 1)"
            " RETURNING id"
        ).fetchone()
        assert incident is not None
        conn.execute("UPDATE alert SET incident_id = %s", (incident[0],))
    config = rules(
        [
            {"name": "ops", "email": ["ops@example.com"]},
            {"name": "hook", "webhook": hook_server, "secret_env": "TMS_HOOK", "incidents": False},
        ]
    )
    assert sweep(database_url, config).raised_elsewhere_notifications == 1
    assert outbox(database_url) == [("webhook", "pending", 0)]
    worker = OutboxWorker(
        NotifySettings(retry_first_s=0.05, timeout_s=30), config, {"TMS_HOOK": SECRET}
    )
    assert deliver(database_url, worker) == 0  # the receiver answers 500 once
    time.sleep(0.1)
    assert deliver(database_url, worker) == 1
    body = json.loads(Hook.received[-1][1])
    assert (body["kind"], body["scope"], body["serial"], body["customer"]) == (
        "rollout_halted", "rollout:1", None, None,
    )  # fmt: skip
