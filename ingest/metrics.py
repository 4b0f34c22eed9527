"""``/metrics`` (Prometheus text format) and ``/healthz`` of the ingest daemon.

A tiny asyncio HTTP server on its own port (``[ingest] metrics_port``, 127.0.0.1 by
default) serves a private prometheus_client registry; the values are read from the
daemon's ``IngestCounters`` at scrape time, so the hot path only adds to plain ints.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ingest.counters import Histogram, IngestCounters

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Health:
    """What /healthz reports; ``ok`` is False while the broker or the database is gone."""

    broker_connected: bool
    database_ok: bool
    queue_depth: int

    @property
    def ok(self) -> bool:
        return self.broker_connected and self.database_ok


def _histogram(name: str, doc: str, histogram: Histogram) -> HistogramMetricFamily:
    buckets = [(str(bound), float(count)) for bound, count in histogram.cumulative()]
    buckets.append(("+Inf", float(histogram.count)))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=histogram.total)


class CountersCollector(Collector):
    def __init__(self, counters: IngestCounters, health: Callable[[], Health]) -> None:
        self.counters = counters
        self.health = health

    def collect(self) -> Iterator[Metric]:
        c = self.counters
        simple = (
            ("tms_ingest_messages_received", "Messages taken from the broker", c.received),
            ("tms_ingest_messages_committed", "Messages in committed batches", c.committed),
            ("tms_ingest_batches", "Committed batches", c.batches),
            ("tms_ingest_telemetry_written", "Telemetry rows written", c.telemetry_written),
            (
                "tms_ingest_telemetry_duplicates",
                "Redelivered telemetry skipped",
                c.telemetry_duplicates,
            ),
            ("tms_ingest_status_changes", "Terminal status changes", c.status_changes),
            ("tms_ingest_commands_finished", "Commands finished by a result", c.commands_finished),
            (
                "tms_ingest_command_duplicates",
                "Results for a command already final",
                c.command_duplicates,
            ),
            ("tms_ingest_seq_gaps_found", "Gaps found in terminals' numbering", c.seq_gaps_found),
            (
                "tms_ingest_seq_gaps_repaired",
                "Gaps whose every message came back",
                c.seq_gaps_repaired,
            ),
            ("tms_ingest_seq_missing", "Messages found missing", c.seq_missing),
            ("tms_ingest_seq_recovered", "Missing messages that came back", c.seq_recovered),
            ("tms_ingest_seq_lost", "Missing messages the agent no longer had", c.seq_lost),
            ("tms_ingest_seq_resend_requests", "Resend commands queued", c.seq_resends),
            ("tms_ingest_database_retries", "Batches retried for PostgreSQL", c.database_retries),
            ("tms_ingest_broker_reconnects", "Broker connections lost", c.broker_reconnects),
            ("tms_ingest_acks_dropped", "Acknowledgements for a gone connection", c.acks_dropped),
            ("tms_ingest_read_pauses", "Reading paused: max_pending messages held", c.read_pauses),
            ("tms_alerts_opened", "Alerts opened", c.alerts_opened),
            ("tms_alerts_resolved", "Alerts resolved automatically", c.alerts_resolved),
            ("tms_notifications_sent", "Notifications delivered", c.notifications_sent),
            (
                "tms_notifications_failed_attempts",
                "Notification attempts that failed",
                c.notification_failures,
            ),
        )
        for name, doc, value in simple:
            yield CounterMetricFamily(name, doc, value=value)
        dead = CounterMetricFamily(
            "tms_ingest_dead_letters", "Messages kept as dead letters", labels=["reason"]
        )
        for reason, value in sorted(c.dead_lettered.items()):
            dead.add_metric([reason], value)
        yield dead
        yield _histogram("tms_ingest_batch_size", "Messages per committed batch", c.batch_sizes)
        yield _histogram(
            "tms_ingest_commit_seconds", "Time to write and commit one batch", c.commit_seconds
        )
        yield GaugeMetricFamily("tms_alerts_open", "Alerts not resolved", value=c.open_alerts)
        health = self.health()
        yield GaugeMetricFamily(
            "tms_ingest_queue_depth", "Messages waiting", value=health.queue_depth
        )
        yield GaugeMetricFamily(
            "tms_ingest_broker_connected", "1 while connected", value=int(health.broker_connected)
        )


def make_registry(counters: IngestCounters, health: Callable[[], Health]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CountersCollector(counters, health))
    return registry


def _response(status: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class MetricsServer:
    """Serves GET /metrics and GET /healthz; everything else is a 404."""

    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, health: Callable[[], Health]
    ) -> None:
        self.host = host
        self.port = port
        self.registry = registry
        self.health = health
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        sockets = self._server.sockets
        if sockets:
            self.port = sockets[0].getsockname()[1]  # port 0 in tests: the one given
        log.info("metrics on http://%s:%s/metrics", self.host, self.port)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    def answer(self, path: str) -> bytes:
        if path == "/metrics":
            return _response("200 OK", CONTENT_TYPE, generate_latest(self.registry))
        if path == "/healthz":
            health = self.health()
            body: dict[str, Any] = {
                "status": "ok" if health.ok else "degraded",
                "broker_connected": health.broker_connected,
                "database_ok": health.database_ok,
                "queue_depth": health.queue_depth,
            }
            status = "200 OK" if health.ok else "503 Service Unavailable"
            return _response(status, "application/json", json.dumps(body).encode())
        return _response("404 Not Found", "text/plain", b"not found\n")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass  # headers are not needed
            parts = request_line.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else "/"
            if parts and parts[0] != "GET":
                writer.write(_response("405 Method Not Allowed", "text/plain", b"GET only\n"))
            else:
                writer.write(self.answer(path))
            await writer.drain()
        except (TimeoutError, ConnectionError) as exc:
            log.debug("metrics client went away: %s", exc)
        finally:
            writer.close()
