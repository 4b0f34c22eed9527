"""What ``tms check`` looks at: files and directories, PostgreSQL, the broker's TCP port and
MQTT logins, and who listens on a port. Each probe returns facts for the rules in
``tms/check_*_rules.py`` and never raises for what it was asked to find out.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import stat
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.reasoncodes import ReasonCode

from shared.db import libpq_url
from shared.settings import MqttClientSettings
from tms.check_file_rules import DirFacts, FileFacts
from tms.check_service_rules import (
    Listener,
    LoginOutcome,
    LoginResult,
    PortState,
    listening_inodes,
    parent_pid,
)

# Files TMS reads whole (certificates, keys): anything larger is not one of them.
MAX_FILE_BYTES = 1_000_000
# Ancestors followed from a listening process up (pid 1 is never TMS).
MAX_ANCESTORS = 16


def _problem(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "missing"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return exc.strerror or str(exc)


def file_mode(path: Path) -> int | None:
    """The permission bits of ``path``, or None when there is no such file."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None


def read_file(path: Path) -> FileFacts:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        return FileFacts(path, problem=_problem(exc))
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return FileFacts(path, mode=mode, problem=_problem(exc))
    if len(data) > MAX_FILE_BYTES:
        return FileFacts(path, mode=mode, problem=f"larger than {MAX_FILE_BYTES} bytes")
    return FileFacts(path, data, mode)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def dir_facts(path: Path) -> DirFacts:
    path = path.expanduser().absolute()
    nearest = path
    while _stat(nearest) is None and nearest != nearest.parent:
        nearest = nearest.parent
    modes = {p: _stat(p) for p in reversed([nearest, *nearest.parents])}
    unsearchable = next(
        (p for p, found in modes.items() if found and not found.st_mode & stat.S_IXOTH), None
    )
    found = _stat(path)
    return DirFacts(
        path=path,
        exists=found is not None,
        is_dir=found is not None and stat.S_ISDIR(found.st_mode),
        writable=nearest.is_dir() and os.access(nearest, os.W_OK | os.X_OK),
        nearest=nearest,
        unsearchable=unsearchable,
    )


def database_connect_error(url: str, timeout: float) -> str | None:
    """None when a session opens on ``url``, else libpq's message."""
    try:
        with psycopg.connect(libpq_url(url), connect_timeout=max(1, round(timeout))):
            return None
    except psycopg.Error as exc:
        return str(exc) or type(exc).__name__


def tcp_error(host: str, port: int, timeout: float) -> str | None:
    """None when ``host:port`` accepts a TCP connection, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as exc:
        return exc.strerror or str(exc)


def mqtt_login(settings: MqttClientSettings, client_id: str, timeout: float) -> LoginResult:
    """Log in once with ``settings``' account (MQTT 3.1.1, a clean session, under a client
    id of our own so that the service's own session is never taken over)."""
    assert settings.username and settings.password is not None
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTProtocolVersion.MQTTv311,
        clean_session=True,
    )
    client.username_pw_set(settings.username, settings.password.get_secret_value())
    client.connect_timeout = timeout
    answers: list[ReasonCode] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: answers.append(reason)
    try:
        if settings.tls_ca is not None:
            client.tls_set(ca_certs=str(settings.tls_ca))
        client.connect(settings.host, settings.port, keepalive=max(10, round(timeout) * 2))
    except (OSError, ssl.SSLError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return LoginResult(LoginOutcome.UNREACHABLE, reason or type(exc).__name__)
    deadline = time.monotonic() + timeout
    try:
        while not answers and time.monotonic() < deadline:
            if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS and not answers:
                return LoginResult(LoginOutcome.REFUSED, "it closed the connection unanswered")
    finally:
        client.disconnect()  # written at once, and paho closes the socket after it
    if not answers:
        return LoginResult(LoginOutcome.NO_ANSWER, f"no CONNACK within {timeout:g} s")
    if answers[0].is_failure:
        return LoginResult(LoginOutcome.REFUSED, str(answers[0]))
    return LoginResult(LoginOutcome.ACCEPTED)


def port_state(host: str, port: int) -> tuple[PortState, str]:
    """Whether a server could listen on ``host:port`` now, by trying (as `tms up` does)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        return PortState.UNAVAILABLE, exc.strerror or str(exc)
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return PortState.IN_USE, ""
            return PortState.UNAVAILABLE, exc.strerror or str(exc)
    return PortState.FREE, ""


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def _command_line(pid: int) -> tuple[str, ...]:
    raw = _read(f"/proc/{pid}/cmdline")
    return tuple(part for part in (raw or "").split("\0") if part)


def _chain(pid: int) -> tuple[tuple[str, ...], ...]:
    """The command lines of ``pid`` and its ancestors, below pid 1."""
    chain: list[tuple[str, ...]] = []
    current: int | None = pid
    while current is not None and current > 1 and len(chain) < MAX_ANCESTORS:
        chain.append(_command_line(current))
        line = _read(f"/proc/{current}/stat")
        current = parent_pid(line) if line else None
    return tuple(chain)


def listeners_on(port: int) -> list[Listener]:
    """The processes listening on ``port`` that this user may see (all of them as root)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        inodes |= listening_inodes(_read(table) or "", port)
    sockets = {f"socket:[{inode}]" for inode in inodes}
    found: list[Listener] = []
    if not sockets:
        return found
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            descriptors = list((entry / "fd").iterdir())
        except OSError:
            continue  # another user's process, or gone
        for descriptor in descriptors:
            try:
                target = os.readlink(descriptor)
            except OSError:
                continue
            if target in sockets:
                found.append(Listener(int(entry.name), _chain(int(entry.name))))
                break
    return found
