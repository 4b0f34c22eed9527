"""The agent's command handlers over a simulated TC-200, and the agent's log file."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from agent.cli import add_log_file, state_dir_of
from agent.commands import CommandProcessor
from agent.handlers import terminal_handlers
from agent.simulated_device import SimulatedHostMetrics
from agent.terminal import SimulatedUsbTerminal
from agent.usb_driver import open_terminal
from agent.usb_sim import SimulatedUsbBackend
from shared import topics
from shared.messages import Command, CommandResult, CommandStatus
from shared.settings import AgentSettings

SERIAL = "TC200-H1"


def processor_over(backend: SimulatedUsbBackend) -> CommandProcessor:
    terminal = SimulatedUsbTerminal(lambda: open_terminal(backend=backend))
    return CommandProcessor(
        SERIAL, terminal_handlers(terminal, SimulatedHostMetrics(SERIAL), lambda: 7)
    )


def run(processor: CommandProcessor, name: str, **args: Any) -> CommandResult:
    command = Command(id=f"c-{name}", name=name, args=args)
    reply = asyncio.run(processor.process(topics.command(SERIAL, command.id), command.to_payload()))
    assert reply is not None
    return reply.result


def test_diagnostics_reports_terminal_host_and_queue() -> None:
    result = run(processor_over(SimulatedUsbBackend.for_serial(SERIAL)), "diagnostics")
    assert result.status is CommandStatus.OK
    output = result.output
    assert output["info"]["serial"] == SERIAL and output["status"]["state"] == "ok"
    assert output["metrics"]["uptime_s"] > 0 and output["host"]["name"]
    assert output["queue_depth"] == 7


def test_set_config_writes_validated_values() -> None:
    backend = SimulatedUsbBackend.for_serial(SERIAL)
    result = run(processor_over(backend), "set_config", beep_volume=20, timezone="Europe/Paris")
    assert result.status is CommandStatus.OK
    assert backend.firmware.config == {"beep_volume": "20", "timezone": "Europe/Paris"}


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        ({}, "at least one of"),
        ({"beep_volume": 300}, "bad argument beep_volume"),
        ({"colour": "red"}, "bad argument colour"),
    ],
)
def test_set_config_rejects_bad_arguments(args: dict[str, Any], complaint: str) -> None:
    result = run(processor_over(SimulatedUsbBackend.for_serial(SERIAL)), "set_config", **args)
    assert result.status is CommandStatus.REJECTED
    assert complaint in (result.error or "")


def test_reboot_restarts_the_terminal() -> None:
    backend = SimulatedUsbBackend.for_serial(SERIAL)
    result = run(processor_over(backend), "reboot")
    assert result.status is CommandStatus.OK
    assert backend.firmware.boots == 1 or backend.firmware.restart_requested


def test_reboot_of_an_unplugged_terminal_is_an_error_not_a_crash() -> None:
    backend = SimulatedUsbBackend.for_serial(SERIAL)
    backend.unplug()
    result = run(processor_over(backend), "reboot")
    assert result.status is CommandStatus.ERROR
    assert "no TC-200" in (result.error or "")


def test_firmware_is_not_supported_yet() -> None:
    result = run(processor_over(SimulatedUsbBackend.for_serial(SERIAL)), "firmware")
    assert result.status is CommandStatus.ERROR
    assert "not supported yet" in (result.error or "")


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
