"""The diagnostics report's pure rules (facts -> checks) and the agent's in-memory log."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from agent.agent_log import LINE_MAX_CHARS, LogRing, install_log_ring, newest_within
from agent.diagnostics import (
    DeviceFacts,
    DiagnosticsFacts,
    DnsFacts,
    OutboxFacts,
    RoundTripFacts,
    TlsFacts,
    broker_round_trip_check,
    build_report,
    clock_offset_check,
    device_errors_check,
    device_self_test_check,
    dns_check,
    dns_skip_reason,
    firmware_config_check,
    host_resources_check,
    log_tail_check,
    outbox_check,
    tls_check,
    usb_link_check,
)
from agent.tc200_protocol import DeviceInfo, DeviceMetrics, InfoFlags, StatusReport, TC200State
from shared.diagnostics import DiagnosticsReport, Outcome, report_of
from shared.messages import HostMetrics

SERIAL = "TC200-D1"
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
INFO = DeviceInfo(SERIAL, "TC-200", "2.4.3")
HEALTHY = DeviceFacts(
    info=INFO,
    status=StatusReport(TC200State.OK),
    metrics=DeviceMetrics(uptime_s=3600, cpu=12.5, memory=40.0, disk=30.0),
    duration_ms=0.4,
)
UNPLUGGED = DeviceFacts(error="no TC-200 (USB 1209:c200) is plugged in: check the cable")


def facts(**changes: object) -> DiagnosticsFacts:
    base: dict[str, object] = {
        "serial": SERIAL,
        "broker_host": "127.0.0.1",
        "device": HEALTHY,
        "host": HostMetrics(cpu=10, memory=50, disk=60, name="pc"),
        "issued_at": NOW,
        "received_at": NOW + timedelta(seconds=0.2),
        "round_trip": RoundTripFacts(milliseconds=4.2),
        "dns": None,
        "tls": TlsFacts(enabled=False),
        "outbox": OutboxFacts(depth=0, capacity=100),
    }
    return DiagnosticsFacts(**(base | changes))  # type: ignore[arg-type]


def test_a_healthy_report_passes_in_the_operators_order() -> None:
    report = build_report(facts(), started_at=NOW, finished_at=NOW, log_tail=["a INFO b: c"])
    assert [c.id for c in report.checks] == [
        "usb_link",
        "device_self_test",
        "device_errors",
        "firmware_config",
        "host_resources",
        "clock_offset",
        "broker_round_trip",
        "dns",
        "tls",
        "outbox",
        "log_tail",
    ]
    assert report.passed and report.first_failure is None
    assert report.counts()[Outcome.SKIPPED] == 2  # dns (an IP literal) and tls (off)
    # What the console reads back from the stored result.
    assert report_of(json.loads(report.model_dump_json())) == report


def test_a_silent_device_fails_its_four_checks_and_the_rest_still_run() -> None:
    report = build_report(facts(device=UNPLUGGED), started_at=NOW, finished_at=NOW, log_tail=[])
    outcomes = [c.outcome for c in report.checks]
    assert outcomes[:4] == [Outcome.FAILED] * 4
    assert all("no TC-200" in c.summary for c in report.checks[:4])
    assert outcomes[4:7] == [Outcome.PASSED] * 3
    assert report.first_failure is not None and report.first_failure.id == "usb_link"


def test_usb_link_warns_of_retries_in_the_pass() -> None:
    check = usb_link_check(DeviceFacts(info=INFO, retries=1, stale_frames=1, retries_total=3))
    assert check.outcome is Outcome.WARNING
    assert check.data["retries_total"] == 3


@pytest.mark.parametrize(
    ("state", "flags", "outcome"),
    [
        (TC200State.OK, InfoFlags.NONE, Outcome.PASSED),
        (TC200State.OK, InfoFlags.ROLLED_BACK, Outcome.WARNING),
        (TC200State.BUSY, InfoFlags.NONE, Outcome.WARNING),
        (TC200State.UPDATING, InfoFlags.NONE, Outcome.WARNING),
        (TC200State.ERROR, InfoFlags.NONE, Outcome.FAILED),
    ],
)
def test_self_test_outcome_follows_state_and_flags(
    state: TC200State, flags: InfoFlags, outcome: Outcome
) -> None:
    device = DeviceFacts(
        info=DeviceInfo(SERIAL, "TC-200", "2.4.3", flags), status=StatusReport(state)
    )
    check = device_self_test_check(device)
    assert check.outcome is outcome
    assert check.data["state"] == state.name.lower()
    assert check.data["flags"] == (["rolled_back"] if flags else [])


def test_device_errors_fail_in_error_state_and_warn_otherwise() -> None:
    errors = tuple((f"E{n}", "card reader not responding") for n in range(30))
    failed = device_errors_check(DeviceFacts(status=StatusReport(TC200State.ERROR, errors)))
    assert failed.outcome is Outcome.FAILED
    assert failed.data["count"] == 30 and len(failed.data["errors"]) == 20  # bounded
    assert failed.summary.startswith("30 error(s), first E0")
    warned = device_errors_check(DeviceFacts(status=StatusReport(TC200State.BUSY, errors[:1])))
    assert warned.outcome is Outcome.WARNING


def test_firmware_check_notices_a_swapped_terminal_and_a_rollback() -> None:
    assert firmware_config_check(SERIAL, HEALTHY).outcome is Outcome.PASSED
    swapped = firmware_config_check("TC200-OTHER", HEALTHY)
    assert swapped.outcome is Outcome.WARNING and "swapped" in swapped.summary
    rolled = DeviceFacts(info=DeviceInfo(SERIAL, "TC-200", "2.5.0", InfoFlags.ROLLED_BACK))
    assert firmware_config_check(SERIAL, rolled).data["rolled_back"] is True
    assert firmware_config_check(SERIAL, rolled).outcome is Outcome.WARNING


@pytest.mark.parametrize(
    ("cpu", "memory", "disk", "outcome"),
    [(10, 50, 60, Outcome.PASSED), (90, 90, 90, Outcome.PASSED), (10, 50, 90.5, Outcome.WARNING)],
)
def test_host_resources_warn_above_90_percent(
    cpu: float, memory: float, disk: float, outcome: Outcome
) -> None:
    check = host_resources_check(HostMetrics(cpu=cpu, memory=memory, disk=disk))
    assert check.outcome is outcome
    assert host_resources_check(None).outcome is Outcome.FAILED


@pytest.mark.parametrize(
    ("offset_s", "outcome"),
    [
        (0.3, Outcome.PASSED),
        (-4.9, Outcome.PASSED),
        (5.5, Outcome.WARNING),
        (-30, Outcome.WARNING),
        (61, Outcome.FAILED),
        (-3600, Outcome.FAILED),
    ],
)
def test_clock_offset_thresholds(offset_s: float, outcome: Outcome) -> None:
    check = clock_offset_check(NOW, NOW + timedelta(seconds=offset_s))
    assert check.outcome is outcome
    assert check.data["offset_s"] == pytest.approx(offset_s)
    assert "transit" in check.summary
    assert ("behind" in check.summary) == (offset_s < 0)


def test_clock_offset_is_skipped_without_issued_at() -> None:
    check = clock_offset_check(None, NOW)
    assert check.outcome is Outcome.SKIPPED and "issued_at" in check.summary


@pytest.mark.parametrize(
    ("host", "skipped"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("mqtt.tms.example", False),
        ("10.0.0.300", False),
    ],
)
def test_dns_is_skipped_for_ip_literals_and_localhost(host: str, skipped: bool) -> None:
    assert (dns_skip_reason(host) is not None) is skipped


def test_dns_check_outcomes() -> None:
    assert dns_check("127.0.0.1", None).outcome is Outcome.SKIPPED
    ok = dns_check("b", DnsFacts("b", ("10.0.0.1",), duration_ms=3))
    assert ok.outcome is Outcome.PASSED and ok.data["addresses"] == ["10.0.0.1"]
    slow = dns_check("b", DnsFacts("b", ("10.0.0.1",), duration_ms=1500))
    assert slow.outcome is Outcome.WARNING
    failed = dns_check("b", DnsFacts("b", error="Name or service not known", duration_ms=3))
    assert failed.outcome is Outcome.FAILED and "Name or service" in failed.summary


@pytest.mark.parametrize(
    ("tls", "outcome", "words"),
    [
        (TlsFacts(enabled=False), Outcome.SKIPPED, "without TLS"),
        (TlsFacts(True, "/ca.pem", 3000, None, None, "TLSv1.3", "X", 700), Outcome.PASSED, "ok"),
        (TlsFacts(True, "/ca.pem", 12, None, None, "TLSv1.3", "X", 700), Outcome.WARNING, "CA"),
        (TlsFacts(True, None, None, None, None, "TLSv1.3", "X", -2), Outcome.FAILED, "expired"),
        (TlsFacts(True, "/ca.pem", None, "no such file"), Outcome.FAILED, "no such file"),
        (TlsFacts(True, handshake_error="certificate verify failed"), Outcome.FAILED, "verify"),
    ],
)
def test_tls_check_outcomes(tls: TlsFacts, outcome: Outcome, words: str) -> None:
    check = tls_check(tls)
    assert check.outcome is outcome
    assert words in check.summary


def test_broker_round_trip_outcomes() -> None:
    assert broker_round_trip_check(RoundTripFacts(4.0)).outcome is Outcome.PASSED
    assert broker_round_trip_check(RoundTripFacts(2500.0)).outcome is Outcome.WARNING
    failed = broker_round_trip_check(RoundTripFacts(error="not connected to the broker"))
    assert failed.outcome is Outcome.FAILED and failed.summary == "not connected to the broker"


@pytest.mark.parametrize(
    ("depth", "capacity", "outcome"),
    [
        (0, 100, Outcome.PASSED),
        (49, 100, Outcome.PASSED),
        (50, 100, Outcome.WARNING),
        (99, 10_000, Outcome.PASSED),
        (100, 10_000, Outcome.WARNING),
    ],
)
def test_outbox_warns_when_large(depth: int, capacity: int, outcome: Outcome) -> None:
    assert outbox_check(OutboxFacts(depth, capacity)).outcome is outcome


def test_log_tail_check_counts_error_lines() -> None:
    lines = ["2025-03-01 12:00:00,000 INFO agent: ok", "2025-03-01 12:00:01,000 ERROR agent: bad"]
    check = log_tail_check(lines)
    assert check.outcome is Outcome.WARNING and check.data["errors"] == 1
    assert log_tail_check(lines[:1]).outcome is Outcome.PASSED
    assert log_tail_check([]).outcome is Outcome.SKIPPED


def test_report_rejects_nothing_the_schema_bounds() -> None:
    long = "x" * 5000
    device = DeviceFacts(error=long)
    report = build_report(facts(device=device), started_at=NOW, finished_at=NOW, log_tail=[])
    assert DiagnosticsReport.model_validate(report.model_dump(mode="json")) == report
    assert len(report.checks[0].summary) <= 1000


# The in-memory log.


def record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("agent.test", level, __file__, 1, message, None, None)


def test_log_ring_keeps_the_last_lines_oldest_first() -> None:
    ring = LogRing(capacity=3)
    for n in range(5):
        ring.handle(record(f"line {n}"))
    assert len(ring) == 3
    assert [line.rsplit(": ", 1)[1] for line in ring.tail(10)] == ["line 2", "line 3", "line 4"]
    assert [line.rsplit(": ", 1)[1] for line in ring.tail(1)] == ["line 4"]
    assert ring.tail(0) == []


def test_log_ring_splits_multiline_records_and_cuts_long_lines() -> None:
    ring = LogRing()
    ring.handle(record("first\nsecond"))
    ring.handle(record("y" * 2000))
    lines = ring.tail(10)
    assert len(lines) == 3 and lines[1] == "second"
    assert len(lines[2]) == LINE_MAX_CHARS


def test_log_ring_tail_filtered_by_serial() -> None:
    ring = LogRing()
    for n in range(6):
        ring.handle(record(f"TC200-{n % 2}: line {n}"))
    assert [line.split(": ", 2)[2] for line in ring.tail(2, containing="TC200-1")] == [
        "line 3",
        "line 5",
    ]


def test_install_log_ring_is_idempotent() -> None:
    root = logging.getLogger("agent.test.isolated-root")
    first = install_log_ring(root, capacity=10)
    assert install_log_ring(root) is first
    assert [h for h in root.handlers if isinstance(h, LogRing)] == [first]
    root.removeHandler(first)


def test_newest_within_keeps_the_newest_lines_that_fit() -> None:
    lines = [f"{n:02d}" + "z" * 8 for n in range(10)]  # 10 characters, 13 bytes as JSON + comma
    kept, cut = newest_within(lines, 40)
    assert kept == lines[-3:] and cut is True
    assert newest_within(lines, 10_000) == (lines, False)
    assert newest_within([], 10) == ([], False)
