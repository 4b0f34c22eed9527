"""The agent's command handlers over a simulated TC-200 (the real driver on a simulated
USB bus), with a stand-in for the running agent; and the agent's log file."""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.agent_log import LogRing
from agent.cli import add_log_file, state_dir_of
from agent.commands import CommandProcessor
from agent.errors import AgentError
from agent.handlers import terminal_handlers
from agent.outbox import Outbox, OutgoingMessage
from agent.sim.device import SimulatedHostMetrics
from agent.sim.usb_backend import SimulatedUsbBackend, SimulatedUsbTerminal
from agent.usb_driver import open_terminal
from shared import topics
from shared.command_catalog import CATALOG
from shared.diagnostics import DiagnosticsReport, Outcome
from shared.messages import Command, CommandResult, CommandStatus, DeviceStatus, utcnow
from shared.settings import AgentSettings, MqttClientSettings

SERIAL = "TC200-H1"
CHECK_ORDER = [
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


@dataclass
class FakeRuntime:
    """What the handlers read of a running TerminalAgent, without a broker."""

    serial: str = SERIAL
    mqtt: MqttClientSettings = field(default_factory=lambda: MqttClientSettings(host="127.0.0.1"))
    tls_context: ssl.SSLContext | None = None
    outbox: Outbox = field(default_factory=lambda: Outbox(100))
    started_at: datetime = field(default_factory=utcnow)
    round_trip_ms: float | None = 3.5
    restarts: int = 0

    def request_restart(self) -> None:
        self.restarts += 1

    async def broker_round_trip_ms(self) -> float:
        if self.round_trip_ms is None:
            raise AgentError("not connected to the broker")
        return self.round_trip_ms


class Harness:
    """One simulated TC-200, its terminal, a fake runtime and the command processor."""

    def __init__(self) -> None:
        self.backend = SimulatedUsbBackend.for_serial(SERIAL)
        self.terminal = SimulatedUsbTerminal(lambda: open_terminal(backend=self.backend))
        self.runtime = FakeRuntime()
        self.log = LogRing(capacity=1000)
        handlers = terminal_handlers(
            self.terminal, self.runtime, SimulatedHostMetrics(SERIAL), self.log.tail
        )
        self.processor = CommandProcessor(SERIAL, handlers)
        self._ids = 0

    def log_lines(self, *messages: str) -> None:
        for message in messages:
            self.log.handle(logging.makeLogRecord({"msg": message, "levelname": "INFO"}))

    def run(self, name: str, issued_at: datetime | None = None, **args: Any) -> CommandResult:
        self._ids += 1
        command = Command(
            id=f"c{self._ids}-{name.replace('_', '-')}",
            name=name,
            args=args,
            issued_at=issued_at or utcnow(),
        )
        topic = topics.command(SERIAL, command.id)
        reply = asyncio.run(self.processor.process(topic, command.to_payload()))
        assert reply is not None
        return reply.result

    def report(self, **kwargs: Any) -> DiagnosticsReport:
        result = self.run("diagnostics", **kwargs)
        assert result.status is CommandStatus.OK, result.error
        return DiagnosticsReport.model_validate(result.output)


def test_every_catalogue_command_has_a_handler() -> None:
    harness = Harness()
    for name in CATALOG:
        result = harness.run(name, **({"beep_volume": 5} if name == "set_config" else {}))
        assert "unknown command" not in (result.error or ""), name


@pytest.mark.parametrize("name", ["ping", "diagnostics", "reboot", "restart_agent", "reset_usb"])
def test_commands_without_arguments_refuse_any(name: str) -> None:
    result = Harness().run(name, force=True)
    assert result.status is CommandStatus.REJECTED
    assert "bad argument force" in (result.error or "")


def test_ping_says_when_the_agent_received_it() -> None:
    harness = Harness()
    before = utcnow()
    result = harness.run("ping")
    assert result.status is CommandStatus.OK
    assert result.output["pong"] is True
    received = datetime.fromisoformat(result.output["received_at"])
    assert before <= received <= utcnow()
    assert result.output["agent_started_at"] == harness.runtime.started_at.isoformat()


def test_diagnostics_report_has_every_check_in_order() -> None:
    harness = Harness()
    harness.runtime.outbox.put(OutgoingMessage("t", b"x"))
    harness.log_lines("TC200-H1: connected to the broker", "another line")
    report = harness.report()
    assert [check.id for check in report.checks] == CHECK_ORDER
    outcome = {check.id: check.outcome for check in report.checks}
    assert outcome["usb_link"] is Outcome.PASSED
    assert outcome["device_self_test"] is Outcome.PASSED
    assert outcome["device_errors"] is Outcome.PASSED
    assert outcome["firmware_config"] is Outcome.PASSED
    assert outcome["clock_offset"] is Outcome.PASSED
    assert outcome["broker_round_trip"] is Outcome.PASSED
    assert outcome["dns"] is Outcome.SKIPPED  # 127.0.0.1: no lookup
    assert outcome["tls"] is Outcome.SKIPPED
    assert report.passed
    data = {check.id: check.data for check in report.checks}
    assert data["firmware_config"]["device_serial"] == SERIAL
    assert data["broker_round_trip"]["round_trip_ms"] == 3.5
    assert data["outbox"]["depth"] == 1 and data["outbox"]["capacity"] == 100
    assert data["host_resources"]["name"] == f"store-pc-{SERIAL}"
    assert report.log_tail[-1].endswith("another line") and len(report.log_tail) == 2
    assert report.started_at is not None and report.finished_at is not None


def test_diagnostics_of_an_unplugged_terminal_fails_its_checks_and_runs_the_rest() -> None:
    harness = Harness()
    harness.backend.unplug()
    report = harness.report()
    assert [check.id for check in report.checks] == CHECK_ORDER
    failed = [check.id for check in report.checks if check.outcome is Outcome.FAILED]
    assert failed == ["usb_link", "device_self_test", "device_errors", "firmware_config"]
    assert report.first_failure is not None and report.first_failure.id == "usb_link"
    assert "no TC-200" in report.first_failure.summary
    by_id = {check.id: check for check in report.checks}
    assert by_id["host_resources"].outcome is Outcome.PASSED
    assert by_id["broker_round_trip"].outcome is Outcome.PASSED


def test_diagnostics_lists_the_device_errors() -> None:
    harness = Harness()
    harness.backend.firmware.hardware.inject_fault(DeviceStatus.ERROR)
    by_id = {check.id: check for check in harness.report().checks}
    assert by_id["device_self_test"].outcome is Outcome.FAILED
    assert by_id["device_errors"].outcome is Outcome.FAILED
    assert by_id["device_errors"].data["count"] == 1
    assert by_id["device_errors"].data["errors"][0]["code"].startswith("E")


def test_diagnostics_warns_of_usb_retries() -> None:
    harness = Harness()
    harness.run("ping")
    harness.backend.pending_timeouts = 1  # the answer to GET_INFO comes late, once
    usb = harness.report().checks[0]
    assert usb.outcome is Outcome.WARNING
    assert usb.data["retries"] == 1 and usb.data["stale_frames"] == 1


def test_diagnostics_clock_offset_against_the_command_issued_at() -> None:
    harness = Harness()
    report = harness.report(issued_at=utcnow() - timedelta(seconds=90))
    clock = next(check for check in report.checks if check.id == "clock_offset")
    assert clock.outcome is Outcome.FAILED
    assert 89 < clock.data["offset_s"] < 120
    assert "transit" in clock.summary


def test_diagnostics_without_issued_at_skips_the_clock_check() -> None:
    harness = Harness()
    payload = b'{"v":1,"id":"d-1","name":"diagnostics"}'
    reply = asyncio.run(harness.processor.process(topics.command(SERIAL, "d-1"), payload))
    assert reply is not None and reply.result.status is CommandStatus.OK
    report = DiagnosticsReport.model_validate(reply.result.output)
    clock = next(check for check in report.checks if check.id == "clock_offset")
    assert clock.outcome is Outcome.SKIPPED


def test_diagnostics_without_a_broker_round_trip_fails_that_check() -> None:
    harness = Harness()
    harness.runtime.round_trip_ms = None
    check = next(c for c in harness.report().checks if c.id == "broker_round_trip")
    assert check.outcome is Outcome.FAILED
    assert "not connected" in check.summary


def test_diagnostics_shows_the_config_written() -> None:
    harness = Harness()
    assert harness.run("set_config", beep_volume=20).status is CommandStatus.OK
    check = next(c for c in harness.report().checks if c.id == "firmware_config")
    assert check.data["config_written"] == {"beep_volume": "20"}


def test_diagnostics_output_fits_one_message() -> None:
    harness = Harness()
    harness.log_lines(*(f"line {n} " + 'é"x' * 200 for n in range(100)))
    result = harness.run("diagnostics")
    assert len(result.to_payload()) < 64 * 1024
    assert len(DiagnosticsReport.model_validate(result.output).log_tail) <= 50


def test_fetch_logs_returns_the_last_lines() -> None:
    harness = Harness()
    harness.log_lines(*(f"line {n}" for n in range(10)))
    result = harness.run("fetch_logs", lines=3)
    assert result.status is CommandStatus.OK
    assert [line.rsplit(" ", 2)[-2:] for line in result.output["lines"]] == [
        ["line", "7"],
        ["line", "8"],
        ["line", "9"],
    ]
    assert result.output["count"] == 3 and result.output["truncated"] is False


def test_fetch_logs_defaults_and_cuts_to_one_message() -> None:
    harness = Harness()
    harness.log_lines(*("x" * 490 for _ in range(200)))
    output = harness.run("fetch_logs").output
    assert output["requested"] == 200 and output["truncated"] is True
    assert 0 < output["count"] < 200
    assert len(harness.run("fetch_logs").to_payload()) < 64 * 1024


@pytest.mark.parametrize("lines", [0, 5001, "many"])
def test_fetch_logs_rejects_bad_counts(lines: object) -> None:
    result = Harness().run("fetch_logs", lines=lines)
    assert result.status is CommandStatus.REJECTED
    assert "bad argument lines" in (result.error or "")


def test_restart_agent_answers_then_asks_the_runtime_to_restart() -> None:
    harness = Harness()
    result = harness.run("restart_agent")
    assert result.status is CommandStatus.OK
    assert result.output["restarting"] is True
    assert harness.runtime.restarts == 1


def test_reset_usb_reopens_the_link_and_asks_the_terminal() -> None:
    harness = Harness()
    result = harness.run("reset_usb")
    assert result.status is CommandStatus.OK
    assert result.output["reset"] is True and result.output["answered"] is True
    assert result.output["device"]["serial"] == SERIAL
    assert harness.run("ping").status is CommandStatus.OK
    assert harness.report().passed


def test_reset_usb_reports_a_terminal_that_does_not_answer_afterwards() -> None:
    harness = Harness()
    harness.run("diagnostics")  # the link is open
    harness.backend.pending_timeouts = 2  # GET_INFO and its retry both time out
    output = harness.run("reset_usb").output
    assert output["reset"] is True and output["answered"] is False
    assert "did not answer in time" in output["error"]


def test_reset_usb_of_an_unplugged_terminal_is_an_error() -> None:
    harness = Harness()
    harness.backend.unplug()
    result = harness.run("reset_usb")
    assert result.status is CommandStatus.ERROR
    assert "cannot reset the USB link" in (result.error or "")


def test_set_config_writes_validated_values() -> None:
    harness = Harness()
    result = harness.run("set_config", beep_volume=20, timezone="Europe/Paris")
    assert result.status is CommandStatus.OK
    assert harness.backend.firmware.config == {"beep_volume": "20", "timezone": "Europe/Paris"}


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        ({}, "at least one of"),
        ({"beep_volume": 300}, "bad argument beep_volume"),
        ({"colour": "red"}, "bad argument colour"),
    ],
)
def test_set_config_rejects_bad_arguments(args: dict[str, Any], complaint: str) -> None:
    result = Harness().run("set_config", **args)
    assert result.status is CommandStatus.REJECTED
    assert complaint in (result.error or "")


def test_reboot_restarts_the_terminal() -> None:
    harness = Harness()
    result = harness.run("reboot")
    assert result.status is CommandStatus.OK
    assert harness.backend.firmware.boots == 1 or harness.backend.firmware.restart_requested


def test_reboot_of_an_unplugged_terminal_is_an_error_not_a_crash() -> None:
    harness = Harness()
    harness.backend.unplug()
    result = harness.run("reboot")
    assert result.status is CommandStatus.ERROR
    assert "no TC-200" in (result.error or "")


def test_an_agent_without_the_platform_key_refuses_firmware() -> None:
    result = Harness().run(
        "firmware",
        version="2.5.0",
        models=["TC-200"],
        size=4110,
        sha256="0" * 64,
        signature="c2lnbmF0dXJl",
        url="https://console.example/agent/v1/firmware/2.5.0/image",
    )
    assert result.status is not CommandStatus.OK
    assert "firmware_public_key" in (result.error or "")


def test_log_file_rotates(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "agent.log"
    settings = AgentSettings(log_path=path, log_max_bytes=10_000, log_backups=2)
    root = logging.getLogger()
    before = list(root.handlers)
    add_log_file(settings)
    added = [h for h in root.handlers if h not in before]
    try:
        old_level = root.level
        root.setLevel(logging.INFO)
        for n in range(400):
            logging.getLogger("agent.test").info("line %d %s", n, "x" * 60)
        root.setLevel(old_level)
    finally:
        for handler in added:
            root.removeHandler(handler)
            handler.close()
    assert path.exists() and (tmp_path / "logs" / "agent.log.1").exists()
    assert not (tmp_path / "logs" / "agent.log.3").exists()
    assert path.stat().st_size <= 10_000


def test_state_dir_prefers_setting_then_systemd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/tms-agent")
    assert state_dir_of(AgentSettings(state_dir=tmp_path), Path("/d")) == tmp_path
    assert state_dir_of(AgentSettings(), Path("/d")) == Path("/var/lib/tms-agent")
    monkeypatch.delenv("STATE_DIRECTORY")
    assert state_dir_of(AgentSettings(), Path("/d")) == Path("/d/agent")
