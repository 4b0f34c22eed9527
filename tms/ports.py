"""Checks that a listening port is free, so a clash is reported by name, not a traceback."""

from __future__ import annotations

import errno
import socket

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


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (for tests and benchmarks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
