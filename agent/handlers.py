"""The commands a TC-200 agent runs: ping, reboot, diagnostics, set_config, firmware (stub).

Each handler takes a parsed ``Command`` and returns the result's output; bad arguments
raise ``CommandRejected`` (answered "rejected" with the reason), a terminal that cannot
do it raises ``CommandFailed`` (answered "error"). Driver calls run in a worker thread
when the terminal's reads block, so a slow USB answer never stalls the MQTT loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any, TypeVar

from pydantic import ValidationError

from agent.commands import CommandFailed, CommandHandler, CommandRejected, ping
from agent.errors import TerminalFault
from agent.terminal import UsbTerminal
from agent.usb_driver import TC200Driver
from shared.command_catalog import TerminalConfig
from shared.messages import Command, HostMetrics

T = TypeVar("T")


def parse_terminal_config(args: Mapping[str, Any]) -> dict[str, str]:
    """The key/value pairs to write, or CommandRejected naming the bad argument."""
    try:
        config = TerminalConfig.model_validate(args).as_device_config()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "args"
        allowed = ", ".join(TerminalConfig.model_fields)
        raise CommandRejected(
            f"bad argument {where}: {first['msg']} (allowed: {allowed})"
        ) from None
    if not config:
        raise CommandRejected(
            f"set_config needs at least one of: {', '.join(TerminalConfig.model_fields)}"
        )
    return config


def terminal_handlers(
    terminal: UsbTerminal,
    host_metrics: Callable[[], HostMetrics],
    queue_depth: Callable[[], int],
) -> dict[str, CommandHandler]:
    async def on_device(operation: Callable[[], T]) -> T:
        try:
            if terminal.reads_block:
                return await asyncio.to_thread(operation)
            return operation()
        except TerminalFault as fault:
            raise CommandFailed(str(fault)) from fault

    async def reboot(command: Command) -> dict[str, Any]:
        if command.args:
            raise CommandRejected("reboot takes no arguments")
        await on_device(terminal.reboot)
        return {"rebooting": True}

    async def diagnostics(command: Command) -> dict[str, Any]:
        if command.args:
            raise CommandRejected("diagnostics takes no arguments")

        def read() -> dict[str, Any]:
            def collect(driver: TC200Driver) -> dict[str, Any]:
                info, status, metrics = driver.device_info(), driver.status(), driver.metrics()
                return {
                    "info": asdict(info) | {"flags": int(info.flags)},
                    "status": {
                        "state": status.state.name.lower(),
                        "errors": [{"code": c, "message": m} for c, m in status.errors],
                    },
                    "metrics": asdict(metrics),
                    "usb": {"retries": driver.retries, "stale_frames": driver.stale_frames},
                }

            return terminal.call(collect)

        output = await on_device(read)
        output["host"] = host_metrics().model_dump(exclude_none=True)
        output["queue_depth"] = queue_depth()
        output["faults_seen"] = terminal.faults
        return output

    async def set_config(command: Command) -> dict[str, Any]:
        config = parse_terminal_config(command.args)
        await on_device(lambda: terminal.call(lambda driver: driver.write_config(config)))
        return {"written": config}

    async def firmware(command: Command) -> dict[str, Any]:
        raise CommandFailed(
            "firmware update over MQTT is not supported yet; the driver can transfer, "
            "verify and boot an image, the command comes in a later release"
        )

    return {
        "ping": ping,
        "reboot": reboot,
        "diagnostics": diagnostics,
        "set_config": set_config,
        "firmware": firmware,
    }
