"""Listening ports: a clash reported by name, not a traceback; free ports for servers."""

from __future__ import annotations

import errno
import random
import socket
from pathlib import Path

from shared.errors import TMSError


class PortInUseError(TMSError):
    pass


def ensure_port_free(host: str, port: int, what: str, setting: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"{what} port {host}:{port} is already in use by another program; "
                    f"stop it or choose another port with {setting}"
                ) from None
            raise PortInUseError(f"cannot listen on {host}:{port} for {what}: {exc}") from exc


# Ports handed out for servers start here, below the kernel's ephemeral range.
_LOWEST_PORT = 10_000


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def port_accepts(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port`` right now."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now for a server to listen on (tests, benchmarks, a temporary cluster).

    Not the kernel's pick (port 0): that comes from the ephemeral range, which is also
    where every outgoing connection gets its local port, so in the seconds before the
    server binds it any connection on the machine may take it. Below that range only
    a listener can hold a port.
    """
    high = _ephemeral_low()
    if high - _LOWEST_PORT >= 1_000:
        for _ in range(100):
            port = random.randrange(_LOWEST_PORT, high)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                try:
                    probe.bind((host, port))
                except OSError:
                    continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
