"""The store PC's own load (CPU, memory, disk) via psutil, sent with every heartbeat."""

from __future__ import annotations

import socket

import psutil

from shared.messages import HostMetrics

DEFAULT_DISK_PATH = "/"


def read_host_metrics(disk_path: str = DEFAULT_DISK_PATH) -> HostMetrics:
    """One reading of this host; CPU is the load since the previous call (0 on the first)."""
    # interval=None never blocks: psutil compares with the times of the previous call.
    cpu = psutil.cpu_percent(interval=None)
    memory = psutil.virtual_memory().percent
    try:
        disk: float | None = psutil.disk_usage(disk_path).percent
    except OSError:
        disk = None
    return HostMetrics(
        cpu=_percent(cpu), memory=_percent(memory), disk=_percent(disk), name=_host_name()
    )


def _percent(value: float | None) -> float | None:
    # psutil can report a hair above 100 on busy multi-core hosts; the schema caps at 100.
    return None if value is None else min(100.0, max(0.0, float(value)))


def _host_name() -> str:
    return socket.gethostname()[:200]
