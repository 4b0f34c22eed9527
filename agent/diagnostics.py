"""The diagnostics report from collected facts: thresholds, outcomes and wording, no I/O.

The ``diagnostics`` handler (agent/handlers.py) gathers facts: one pass over USB, the
host's load, the broker round trip, DNS, TLS, the outbox. Everything here turns those
facts into ``shared.diagnostics`` checks, in the order an operator reads them: the
device first (is it there, is it healthy), then the store PC, then the way to the
platform. A fact that could not be gathered makes its check fail with the reason; it
never stops the report from being built.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent.tc200_protocol import DeviceInfo, DeviceMetrics, InfoFlags, StatusReport, TC200State
from shared.diagnostics import Check, DiagnosticsReport, Outcome
from shared.messages import HostMetrics

HOST_WARN_PERCENT = 90.0
CLOCK_WARN_S = 5.0
CLOCK_FAIL_S = 60.0
ROUND_TRIP_WARN_MS = 2000.0
DNS_WARN_MS = 1000.0
CERT_WARN_DAYS = 30.0
# The outbox warns at this depth, or at half its capacity if that is smaller.
OUTBOX_WARN_DEPTH = 100
# Device errors listed in a report; the TC-200 may report 255, a result holds 64 KiB.
DEVICE_ERRORS_MAX = 20
# Host names that never reach DNS (resolved from /etc/hosts or built in).
LOCAL_HOST_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """One pass over USB: what the TC-200 answered, and why the pass stopped if it did."""

    info: DeviceInfo | None = None
    status: StatusReport | None = None
    metrics: DeviceMetrics | None = None
    error: str | None = None
    duration_ms: float | None = None
    # Retries and stale frames during this pass, and since the driver was opened.
    retries: int = 0
    stale_frames: int = 0
    retries_total: int = 0
    stale_frames_total: int = 0
    faults_seen: int = 0
    # The TC-200 has no read-config request: what this agent wrote since it started.
    config_written: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DnsFacts:
    host: str
    addresses: tuple[str, ...] = ()
    error: str | None = None
    duration_ms: float | None = None


@dataclass(frozen=True, slots=True)
class TlsFacts:
    """``enabled`` False: the agent connects without TLS and nothing else is set."""

    enabled: bool
    ca_path: str | None = None
    ca_days_left: float | None = None
    ca_error: str | None = None
    handshake_error: str | None = None
    protocol: str | None = None
    cipher: str | None = None
    server_days_left: float | None = None
    duration_ms: float | None = None


@dataclass(frozen=True, slots=True)
class RoundTripFacts:
    milliseconds: float | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxFacts:
    depth: int
    capacity: int
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class DiagnosticsFacts:
    """Everything one diagnostics run gathered, ready to be judged."""

    serial: str
    broker_host: str
    device: DeviceFacts
    host: HostMetrics | None
    issued_at: datetime | None  # None: the command did not say when it was sent
    received_at: datetime
    round_trip: RoundTripFacts
    dns: DnsFacts | None  # None: skipped, see dns_skip_reason
    tls: TlsFacts
    outbox: OutboxFacts


def _check(
    id: str,
    title: str,
    outcome: Outcome,
    summary: str,
    data: Mapping[str, Any] | None = None,
    *,
    duration_ms: float | None = None,
) -> Check:
    return Check(
        id=id,
        title=title,
        outcome=outcome,
        summary=summary[:1000],
        data=dict(data or {}),
        duration_ms=None if duration_ms is None else round(duration_ms, 2),
    )


def _no_answer(device: DeviceFacts) -> str:
    return f"the TC-200 did not answer: {device.error or 'no reason given'}"


# The device.


def usb_link_check(device: DeviceFacts) -> Check:
    title = "USB link to the TC-200"
    data: dict[str, Any] = {
        "retries": device.retries,
        "stale_frames": device.stale_frames,
        "retries_total": device.retries_total,
        "stale_frames_total": device.stale_frames_total,
        "faults_seen": device.faults_seen,
    }
    took = device.duration_ms
    if device.error is not None:
        data["error"] = device.error
        return _check("usb_link", title, Outcome.FAILED, _no_answer(device), data, duration_ms=took)
    if device.retries or device.stale_frames:
        summary = (
            f"the TC-200 answers, after {device.retries} retries and "
            f"{device.stale_frames} late answers: a cable or port may be failing"
        )
        return _check("usb_link", title, Outcome.WARNING, summary, data, duration_ms=took)
    summary = "the TC-200 answers every request"
    return _check("usb_link", title, Outcome.PASSED, summary, data, duration_ms=took)


def _flag_names(flags: InfoFlags) -> list[str]:
    return [flag.name.lower() for flag in InfoFlags if flag and flag in flags and flag.name]


def device_self_test_check(device: DeviceFacts) -> Check:
    title = "TC-200 self-test"
    if device.status is None:
        return _check("device_self_test", title, Outcome.FAILED, _no_answer(device))
    state = device.status.state
    data: dict[str, Any] = {"state": state.name.lower()}
    if device.info is not None:
        data["flags"] = _flag_names(device.info.flags)
    if device.metrics is not None:
        metrics = device.metrics
        data |= {
            "uptime_s": metrics.uptime_s,
            "cpu": metrics.cpu,
            "memory": metrics.memory,
            "disk": metrics.disk,
        }
    rolled_back = device.info is not None and InfoFlags.ROLLED_BACK in device.info.flags
    if state is TC200State.ERROR:
        outcome, summary = Outcome.FAILED, "the TC-200 reports an error state"
    elif state is TC200State.BUSY:
        outcome, summary = Outcome.WARNING, "the TC-200 is busy with a transaction"
    elif state is TC200State.UPDATING:
        outcome, summary = Outcome.WARNING, "the TC-200 is staging a firmware update"
    elif rolled_back:
        outcome, summary = Outcome.WARNING, "the TC-200 is ok, but its last update rolled back"
    else:
        outcome, summary = Outcome.PASSED, "the TC-200 reports itself ok"
    return _check("device_self_test", title, outcome, summary, data)


def device_errors_check(device: DeviceFacts) -> Check:
    title = "TC-200 error log"
    if device.status is None:
        return _check("device_errors", title, Outcome.FAILED, _no_answer(device))
    errors = device.status.errors
    listed = [{"code": code, "message": message} for code, message in errors[:DEVICE_ERRORS_MAX]]
    data = {"count": len(errors), "errors": listed}
    if not errors:
        return _check("device_errors", title, Outcome.PASSED, "no errors", data)
    first_code, first_message = errors[0]
    summary = f"{len(errors)} error(s), first {first_code}: {first_message}"
    # Errors while the terminal says it is in error are the failure; otherwise a warning.
    outcome = Outcome.FAILED if device.status.state is TC200State.ERROR else Outcome.WARNING
    return _check("device_errors", title, outcome, summary, data)


def firmware_config_check(serial: str, device: DeviceFacts) -> Check:
    title = "Firmware and configuration"
    if device.info is None:
        return _check("firmware_config", title, Outcome.FAILED, _no_answer(device))
    info = device.info
    rolled_back = InfoFlags.ROLLED_BACK in info.flags
    data = {
        "model": info.model,
        "firmware": info.firmware,
        "device_serial": info.serial,
        "rolled_back": rolled_back,
        "config_written": dict(device.config_written),
    }
    if info.serial != serial:
        summary = (
            f"the TC-200 reports serial {info.serial}, but this agent is configured for "
            f"{serial}: the terminal may have been swapped"
        )
        return _check("firmware_config", title, Outcome.WARNING, summary, data)
    if rolled_back:
        summary = f"firmware {info.firmware}: the last update failed to boot and rolled back"
        return _check("firmware_config", title, Outcome.WARNING, summary, data)
    summary = f"{info.model} firmware {info.firmware}"
    return _check("firmware_config", title, Outcome.PASSED, summary, data)


# The store PC.


def host_resources_check(host: HostMetrics | None) -> Check:
    title = "Store PC CPU, memory and disk"
    if host is None:
        return _check("host_resources", title, Outcome.FAILED, "the host's load could not be read")
    readings = {
        key: value
        for key, value in (("cpu", host.cpu), ("memory", host.memory), ("disk", host.disk))
        if value is not None
    }
    data: dict[str, Any] = dict(readings)
    if host.name:
        data["name"] = host.name
    shown = ", ".join(f"{key} {value:g}%" for key, value in readings.items())
    high = [key for key, value in readings.items() if value > HOST_WARN_PERCENT]
    if high:
        summary = f"above {HOST_WARN_PERCENT:g}% ({', '.join(high)}): {shown}"
        return _check("host_resources", title, Outcome.WARNING, summary, data)
    return _check("host_resources", title, Outcome.PASSED, shown or "no readings", data)


def clock_offset_check(issued_at: datetime | None, received_at: datetime) -> Check:
    title = "Clock offset from the server"
    if issued_at is None:
        summary = "the command carries no issued_at to compare the agent's clock with"
        return _check("clock_offset", title, Outcome.SKIPPED, summary)
    offset = (received_at - issued_at).total_seconds()
    data = {
        "offset_s": round(offset, 3),
        "issued_at": issued_at.isoformat(),
        "received_at": received_at.isoformat(),
        "includes_transit": True,
    }
    # The server stamps the command when it sends it, so transit adds to the offset.
    direction = "ahead of" if offset >= 0 else "behind"
    summary = (
        f"the agent's clock is {abs(offset):.1f} s {direction} the server's "
        "(includes the command's transit time)"
    )
    if abs(offset) > CLOCK_FAIL_S:
        outcome = Outcome.FAILED
    elif abs(offset) > CLOCK_WARN_S:
        outcome = Outcome.WARNING
    else:
        outcome = Outcome.PASSED
    return _check("clock_offset", title, outcome, summary, data)


# The way to the platform.


def broker_round_trip_check(facts: RoundTripFacts) -> Check:
    title = "Round trip to the broker"
    if facts.milliseconds is None:
        reason = facts.error or "no round trip measured"
        return _check("broker_round_trip", title, Outcome.FAILED, reason, {"error": reason})
    ms = round(facts.milliseconds, 2)
    summary = f"the broker acknowledged in {ms:g} ms"
    outcome = Outcome.WARNING if ms > ROUND_TRIP_WARN_MS else Outcome.PASSED
    return _check(
        "broker_round_trip", title, outcome, summary, {"round_trip_ms": ms}, duration_ms=ms
    )


def dns_skip_reason(host: str) -> str | None:
    """Why the broker's host needs no DNS lookup (an IP literal, localhost), or None."""
    if host.lower() in LOCAL_HOST_NAMES:
        return f"{host} is not looked up in DNS"
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return f"the broker is an IP address ({host}): no DNS lookup"


def dns_check(host: str, facts: DnsFacts | None) -> Check:
    title = "DNS lookup of the broker"
    if facts is None:
        reason = dns_skip_reason(host) or "not run"
        return _check("dns", title, Outcome.SKIPPED, reason, {"host": host})
    data: dict[str, Any] = {"host": facts.host, "addresses": list(facts.addresses)}
    took = facts.duration_ms
    if facts.error is not None:
        data["error"] = facts.error
        summary = f"cannot resolve {facts.host}: {facts.error}"
        return _check("dns", title, Outcome.FAILED, summary, data, duration_ms=took)
    summary = f"{facts.host} resolves to {', '.join(facts.addresses)} in {took or 0:.0f} ms"
    outcome = Outcome.WARNING if (took or 0) > DNS_WARN_MS else Outcome.PASSED
    return _check("dns", title, outcome, summary, data, duration_ms=took)


def _tls_problems(facts: TlsFacts) -> list[tuple[Outcome, str]]:
    problems: list[tuple[Outcome, str]] = []
    if facts.handshake_error is not None:
        problems.append((Outcome.FAILED, f"handshake failed: {facts.handshake_error}"))
    if facts.ca_error is not None:
        problems.append((Outcome.FAILED, f"CA certificate: {facts.ca_error}"))
    for name, days in (("CA", facts.ca_days_left), ("broker", facts.server_days_left)):
        if days is None:
            continue
        if days < 0:
            problems.append(
                (Outcome.FAILED, f"the {name} certificate expired {-days:.0f} days ago")
            )
        elif days < CERT_WARN_DAYS:
            problems.append((Outcome.WARNING, f"the {name} certificate expires in {days:.0f} days"))
    return problems


def tls_check(facts: TlsFacts) -> Check:
    title = "TLS to the broker"
    if not facts.enabled:
        summary = "the agent connects without TLS ([agent.mqtt] tls_ca is not set)"
        return _check("tls", title, Outcome.SKIPPED, summary)
    data = {
        "ca_path": facts.ca_path,
        "ca_days_left": _days(facts.ca_days_left),
        "server_days_left": _days(facts.server_days_left),
        "protocol": facts.protocol,
        "cipher": facts.cipher,
        "handshake_ok": facts.handshake_error is None,
        # Agents log in with their secret: there is no client certificate to expire.
        "client_certificate": False,
    }
    data |= {
        key: value
        for key, value in (("handshake_error", facts.handshake_error), ("ca_error", facts.ca_error))
        if value is not None
    }
    took = facts.duration_ms
    problems = _tls_problems(facts)
    if problems:
        failed = any(outcome is Outcome.FAILED for outcome, _ in problems)
        summary = "; ".join(text for _, text in problems)
        outcome = Outcome.FAILED if failed else Outcome.WARNING
        return _check("tls", title, outcome, summary, data, duration_ms=took)
    summary = f"handshake ok ({facts.protocol or 'TLS'})"
    days = [d for d in (facts.ca_days_left, facts.server_days_left) if d is not None]
    if days:
        summary += f"; certificates valid for {min(days):.0f} more days"
    return _check("tls", title, Outcome.PASSED, summary, data, duration_ms=took)


def _days(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def outbox_check(facts: OutboxFacts) -> Check:
    title = "Store-and-forward outbox"
    data = {"depth": facts.depth, "capacity": facts.capacity, "dropped": facts.dropped}
    threshold = min(OUTBOX_WARN_DEPTH, max(1, facts.capacity // 2))
    if facts.depth >= threshold:
        summary = (
            f"{facts.depth} messages waiting for the broker (of {facts.capacity}): "
            "the agent is sending slower than it queues, or was offline"
        )
        return _check("outbox", title, Outcome.WARNING, summary, data)
    return _check("outbox", title, Outcome.PASSED, f"{facts.depth} messages waiting", data)


def _level_count(lines: Sequence[str], *levels: str) -> int:
    # LOG_FORMAT puts the level name between the time and the logger name.
    return sum(1 for line in lines if any(f" {level} " in line for level in levels))


def log_tail_check(lines: Sequence[str]) -> Check:
    title = "Recent agent log"
    if not lines:
        return _check(
            "log_tail", title, Outcome.SKIPPED, "no log lines were captured", {"lines": 0}
        )
    errors = _level_count(lines, "ERROR", "CRITICAL")
    warnings = _level_count(lines, "WARNING")
    data = {"lines": len(lines), "errors": errors, "warnings": warnings}
    if errors:
        summary = f"{errors} error line(s) among the last {len(lines)}; see the log tail"
        return _check("log_tail", title, Outcome.WARNING, summary, data)
    summary = f"the last {len(lines)} lines are in the report, {warnings} warning(s)"
    return _check("log_tail", title, Outcome.PASSED, summary, data)


def build_report(
    facts: DiagnosticsFacts,
    *,
    started_at: datetime,
    finished_at: datetime,
    log_tail: Sequence[str],
) -> DiagnosticsReport:
    """Every check, in the order an operator reads them, and the log tail."""
    checks = [
        usb_link_check(facts.device),
        device_self_test_check(facts.device),
        device_errors_check(facts.device),
        firmware_config_check(facts.serial, facts.device),
        host_resources_check(facts.host),
        clock_offset_check(facts.issued_at, facts.received_at),
        broker_round_trip_check(facts.round_trip),
        dns_check(facts.broker_host, facts.dns),
        tls_check(facts.tls),
        outbox_check(facts.outbox),
        log_tail_check(log_tail),
    ]
    return DiagnosticsReport(
        checks=checks, started_at=started_at, finished_at=finished_at, log_tail=list(log_tail)
    )
