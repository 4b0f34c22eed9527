"""Child processes of the `tms up` supervisor: start, wait until ready, stop in order."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shared.errors import TMSError
from shared.lifetime import preexec_die_with_parent


class ChildFailed(TMSError):
    pass


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (loopback only)
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class Child:
    """One ``tms <subcommand>`` run by the supervisor, logging to its own file."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    ready: Callable[[], bool] = field(default=lambda: True)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
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

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise ChildFailed(f"{self.name} exited during start-up:\n{self.log_tail()}")
            if self.ready():
                return
            time.sleep(0.1)
        raise ChildFailed(f"{self.name} was not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

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

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join("    " + line for line in text.splitlines()[-lines:])


def child_env(overrides: dict[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()}
    env.update(overrides)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
