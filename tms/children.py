"""The parts `tms up` runs as child processes: each `tms <subcommand>`, and its PostgreSQL.

A part is started without waiting, asked whether it is ready and whether it has ended,
and stopped; tms/supervision.py decides when. Every part is started from the main
thread: the parent-death signal that stops it when `tms up` is killed is tied to the
thread that forked it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from shared.lifetime import preexec_die_with_parent
from tms.postgres import EmbeddedPostgres

# A part with no readiness probe counts as ready once it has stayed up this long, so
# that one which exits at once (a bad option) is a failed start, not a crash loop.
SETTLE_S = 1.0
_ERROR = re.compile(r"[\w.]*Error: ")


class Part(Protocol):
    """What the supervisor needs of a part of the platform."""

    name: str

    def start(self) -> None:
        """Start it without waiting for it to be ready; a TMSError is a failed start."""

    def returncode(self) -> int | None:
        """How its process ended (``Popen.returncode``), or None while it runs."""

    def is_ready(self) -> bool: ...

    def pid(self) -> int | None: ...

    def stop(self) -> None: ...

    def error_line(self) -> str | None:
        """The last error it wrote since its start, in one line, if any."""

    def log_tail(self) -> str: ...


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (loopback only)
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class Child:
    """One ``tms <subcommand>`` run by the supervisor, logging to its own file.

    Ready when ``ready`` says so and, with ``ready_log_line``, once that line is
    written to the log after this start; with neither, after SETTLE_S alive.
    """

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    ready: Callable[[], bool] | None = None
    ready_log_line: str | None = None
    process: subprocess.Popen[bytes] | None = None
    _log_start: int = field(default=0, repr=False)
    _started_at: float = field(default=0.0, repr=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._log_start = log.tell()
            self._started_at = time.monotonic()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tms", *self.args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: Ctrl-C reaches only the supervisor, which stops
                # the parts in order instead of all at once.
                start_new_session=True,
                # A child must not outlive a supervisor killed with SIGKILL.
                preexec_fn=preexec_die_with_parent(signal.SIGTERM),
            )

    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def is_ready(self) -> bool:
        if not self.alive():
            return False
        if self.ready_log_line is not None and self.ready_log_line not in self._log_since_start():
            return False
        if self.ready is not None:
            return self.ready()
        if self.ready_log_line is not None:
            return True
        return time.monotonic() - self._started_at >= SETTLE_S

    def stop(self, timeout: float = 15) -> None:
        if not self.alive():
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _log_since_start(self) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_start)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def error_line(self) -> str | None:
        # `tms` commands report a failure as one "Error: ..." line (tms/cli.py); a bug
        # ends its traceback with "SomeError: ...".
        errors = [line for line in self._log_since_start().splitlines() if _ERROR.match(line)]
        return errors[-1].strip().rstrip(":")[:300] if errors else None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join("    " + line for line in text.splitlines()[-lines:])


@dataclass
class PostgresPart:
    """The embedded PostgreSQL as a part: ``server`` holds no lock (the platform's
    cluster object keeps the data directory's lock while servers come and go)."""

    server: EmbeddedPostgres
    name: str = "postgres"
    _log_start: int = field(default=0, repr=False)

    def start(self) -> None:
        try:
            self._log_start = self.server.log_file.stat().st_size
        except FileNotFoundError:
            self._log_start = 0
        # Blocks until it accepts connections (about a second after a crash, for
        # recovery); a server that cannot start raises PostgresError with its reason.
        self.server.start()

    def returncode(self) -> int | None:
        process = self.server.process
        return None if process is None else process.poll()

    def is_ready(self) -> bool:
        return self.server.process is not None and self.returncode() is None

    def pid(self) -> int | None:
        process = self.server.process
        return None if process is None else process.pid

    def stop(self) -> None:
        self.server.stop()

    def error_line(self) -> str | None:
        # Only a PANIC explains a running server's end: its FATAL lines are about
        # clients (refused while starting up, cut off when it died).
        try:
            with self.server.log_file.open("rb") as log:
                log.seek(self._log_start)
                text = log.read().decode(errors="replace")
        except OSError:
            return None
        panics = [line.split("PANIC:", 1)[1] for line in text.splitlines() if "PANIC:" in line]
        return "PANIC: " + " ".join(panics[-1].split())[:300] if panics else None

    def log_tail(self) -> str:
        return "\n".join("    " + line for line in self.server.log_tail(20).splitlines())


def child_env(overrides: dict[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()}
    env.update(overrides)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
