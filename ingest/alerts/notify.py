"""Deliver the notification outbox: e-mail over SMTP and HMAC-signed webhooks, retried.

Rows wait in ``notification_outbox`` until delivered, so nothing is lost while the
mail server or a webhook receiver is down: each failure schedules the next attempt
with exponential backoff, and after ``max_attempts`` the row is marked failed (and
stays visible). Due rows are claimed with ``FOR UPDATE SKIP LOCKED``, so several
ingest processes never send one twice. Delivery is at least once: a crash between
a successful send and the commit sends that one row again.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import smtplib
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import psycopg

from ingest.alerts.config import AlertConfig
from ingest.alerts.storm import DIMENSIONS, top
from shared.settings import NotifySettings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-TMS-Signature"
TIMESTAMP_HEADER = "X-TMS-Timestamp"

SQL_DUE = """
SELECT id, alert_id, incident_id, route, channel, target, payload, attempts
FROM notification_outbox
WHERE status = 'pending' AND next_attempt_at <= now()
ORDER BY id LIMIT %s FOR NO KEY UPDATE SKIP LOCKED
"""
SQL_SENT = """
UPDATE notification_outbox SET status = 'sent', sent_at = now(), attempts = attempts + 1
WHERE id = %s
"""
SQL_RETRY = """
UPDATE notification_outbox SET attempts = attempts + 1, last_error = %s, next_attempt_at = %s,
    status = CASE WHEN attempts + 1 >= %s THEN 'failed' ELSE 'pending' END
WHERE id = %s
"""
SQL_INCIDENT = "SELECT alert_count, summary, severity, opened_at FROM incident WHERE id = %s"


class DeliveryError(Exception):
    """One attempt failed; the row is retried later (not a TMSError: never leaves here)."""


@dataclass(frozen=True, slots=True)
class Notification:
    subject: str
    text: str
    body: dict[str, Any]


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The webhook signature: HMAC-SHA256 over "<timestamp>.<body>", hex, "sha256=" prefix."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver runs (and the tests do): constant-time comparison."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def retry_delay(attempts: int, first_s: float, max_s: float) -> float:
    """Seconds before the next attempt after ``attempts`` failures (1, 2, 4, ... x first)."""
    return min(max_s, first_s * 2 ** max(attempts - 1, 0))


def _breakdown_lines(counts: Mapping[str, Mapping[str, int]]) -> list[str]:
    lines = []
    for dimension in DIMENSIONS:
        shown, left_out = top(counts.get(dimension, {}))
        if shown:
            more = f" (+{left_out} more)" if left_out else ""
            entries = ", ".join(f"{value} {count}" for value, count in shown)
            lines.append(f"  by {dimension}: {entries}{more}")
    return lines


def _when(iso: str) -> str:
    """A payload's ISO time for people: to the second, in UTC (lines stay short)."""
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_incident(payload: Mapping[str, Any]) -> Notification:
    """An incident's notification: what joined since the previous one, and the totals."""
    event, total, new = payload["event"], payload["alert_count"], payload["new_count"]
    head = f"[TMS {payload['severity']}] incident #{payload['id']}"
    subject = {
        "opened": f"{head} opened: {total} alerts",
        "summary": f"{head}: {new} more alerts, {total} in all",
    }.get(event, f"{head} closed: {total} alerts in all")
    lines = [
        payload["summary"],
        f"Opened {_when(payload['opened_at'])}; last alert {_when(payload['last_alert_at'])}.",
    ]
    if event == "closed":
        if payload.get("close_reason") == "max-length":
            lines.append(f"Closed {_when(payload['at'])}: it reached its maximum length.")
            lines.append("If the storm goes on, the next alerts open a new incident.")
        else:
            lines.append(f"Closed {_when(payload['at'])}: quiet since its last alert.")
    if payload.get("previous_at"):
        previous = _when(payload["previous_at"])
        lines.append(f"Since the previous notification ({previous}): {new} alerts")
        lines.extend(_breakdown_lines(payload.get("new", {})))
    lines.append(f"In all: {total} alerts")
    lines.extend(_breakdown_lines(payload.get("totals", {})))
    lines.append("Every alert is on the console's Alerts page.")
    return Notification(subject, "\n".join(lines), dict(payload))


def render(payload: Mapping[str, Any], incident: tuple[Any, ...] | None) -> Notification:
    """The text of one notification (an incident's is what was counted when it was queued)."""
    if payload.get("type") == "incident" and "event" in payload:
        return render_incident(payload)
    # A row queued before incidents had summaries: its count is read at send time.
    if payload.get("type") == "incident" and incident is not None:
        count, summary, severity, opened_at = incident
        body = {**payload, "alert_count": count, "opened_at": opened_at.isoformat()}
        subject = f"[TMS {severity}] incident #{payload['id']}: {count} alerts"
        text = f"{summary}\n{count} alerts since {opened_at.isoformat()}; see the console."
        return Notification(subject, text, body)
    who = payload.get("serial") or payload.get("scope")
    customer = f" ({payload['customer']})" if payload.get("customer") else ""
    subject = f"[TMS {payload.get('severity')}] {payload.get('kind')}: {who}{customer}"
    text = f"{payload.get('message')}\nsince {payload.get('first_seen_at')}"
    return Notification(subject, text, dict(payload))


def send_email(settings: NotifySettings, to: list[str], note: Notification) -> None:
    if settings.smtp_host is None:
        raise DeliveryError("no mail server configured: set TMS_NOTIFY_SMTP_HOST")
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = ", ".join(to)
    message["Subject"] = note.subject
    message.set_content(note.text)
    try:
        with smtplib.SMTP(
            settings.smtp_host, settings.smtp_port, timeout=settings.timeout_s
        ) as smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            if settings.smtp_username and settings.smtp_password is not None:
                smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(f"SMTP {settings.smtp_host}:{settings.smtp_port}: {exc}") from exc


def send_webhook(url: str, secret: str, note: Notification, timeout_s: float) -> None:
    body = json.dumps(note.body, sort_keys=True).encode()
    timestamp = str(int(time.time()))
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(secret, timestamp, body),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            status = response.status
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"webhook {url}: HTTP {exc.code}") from exc
    except (OSError, urllib.error.URLError) as exc:
        raise DeliveryError(f"webhook {url}: {exc}") from exc
    if not 200 <= status < 300:
        raise DeliveryError(f"webhook {url}: HTTP {status}")


class OutboxWorker:
    """Sends due outbox rows; ``deliver_due`` is one pass, ``run`` loops until stopped."""

    def __init__(
        self, settings: NotifySettings, config: AlertConfig, env: Mapping[str, str]
    ) -> None:
        self.settings = settings
        self.config = config
        self._env = env
        self.sent = 0
        self.failed_attempts = 0

    def _deliver(self, row: tuple[Any, ...], incident: tuple[Any, ...] | None) -> None:
        _id, _alert, _incident, route_name, channel, target, payload, _attempts = row
        note = render(payload, incident)
        if channel == "email":
            send_email(self.settings, target.split(","), note)
            return
        route = self.config.route(route_name)
        secret = self._env.get(route.secret_env or "") if route is not None else None
        if not secret:
            raise DeliveryError(f"route {route_name!r} or its webhook secret is gone")
        send_webhook(target, secret, note, self.settings.timeout_s)

    async def deliver_due(self, conn: psycopg.AsyncConnection[Any], limit: int = 20) -> int:
        """Send what is due now; returns how many were delivered."""
        delivered = 0
        async with conn.transaction():
            rows = await (await conn.execute(SQL_DUE, (limit,))).fetchall()
            for row in rows:
                incident = None
                if row[2] is not None and "event" not in (row[6] or {}):
                    incident = await (await conn.execute(SQL_INCIDENT, (row[2],))).fetchone()
                try:
                    await asyncio.to_thread(self._deliver, row, incident)
                except DeliveryError as exc:
                    self.failed_attempts += 1
                    attempts = row[7] + 1
                    delay = retry_delay(
                        attempts, self.settings.retry_first_s, self.settings.retry_max_s
                    )
                    due = datetime.now(UTC) + timedelta(seconds=delay)
                    log.warning("notification %s failed (attempt %d): %s", row[0], attempts, exc)
                    await conn.execute(
                        SQL_RETRY, (str(exc)[:2000], due, self.settings.max_attempts, row[0])
                    )
                    continue
                await conn.execute(SQL_SENT, (row[0],))
                delivered += 1
        self.sent += delivered
        return delivered
