"""Drives a real `tms up` in a subprocess for end-to-end tests."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.ports import free_port
from tests.waiting import wait_until

SECRET_RE = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{40,}(?![A-Za-z0-9_-])")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMS_")}
    env.update(extra)
    return env


def tms(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tms", *args],
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input_text,
    )


def wait_for(predicate: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    """The old signature, kept for callers not yet moved to ``tests.waiting.wait_until``."""
    return wait_until(predicate, what, timeout)


def make_data_dir() -> Path:
    # Under /tmp and world-searchable: PostgreSQL runs as an unprivileged user.
    path = Path(tempfile.mkdtemp(prefix="tms-e2e-"))
    path.chmod(0o755)
    return path


@dataclass
class Platform:
    data_dir: Path
    simulate: int = 0
    db_port: int = field(default_factory=free_port)
    broker_port: int = field(default_factory=free_port)
    console_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    output: list[str] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None
    pump: threading.Thread | None = None

    def start(self, timeout: float = 90) -> None:
        # This start's own list: a pump left from a killed run must not append to it.
        output: list[str] = []
        self.output = output
        args = [
            sys.executable,
            "-m",
            "tms",
            "up",
            "--data-dir",
            str(self.data_dir),
            "--db-port",
            str(self.db_port),
            "--broker-port",
            str(self.broker_port),
            "--console-port",
            str(self.console_port),
            "--metrics-port",
            str(self.metrics_port),
        ]
        if self.simulate:
            args += ["--simulate", str(self.simulate), "--heartbeat", "0.5"]
        self.process = subprocess.Popen(
            args,
            env=clean_env(**self.extra_env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()

        def pump() -> None:
            assert self.process is not None and self.process.stdout is not None
            for line in self.process.stdout:
                output.append(line)
                if "Press Ctrl-C" in line:
                    ready.set()
            ready.set()

        self.pump = threading.Thread(target=pump, daemon=True)
        self.pump.start()
        ready.wait(timeout)
        started = any("Press Ctrl-C" in line for line in self.output)
        if self.process.poll() is not None or not started:
            self.stop()
            raise AssertionError("tms up did not start:\n" + "".join(self.output))

    def stop(self, timeout: float = 60) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        if self.pump is not None:
            self.pump.join(timeout)  # it has read the last lines once the pipe is closed
        return code

    @property
    def text(self) -> str:
        return "".join(self.output)

    @property
    def database_url(self) -> str:
        password = json.loads((self.data_dir / "secrets.json").read_text())["database_password"]
        return f"postgresql://tms:{password}@127.0.0.1:{self.db_port}/tms"

    def env(self) -> dict[str, str]:
        return clean_env(TMS_DATABASE_URL=self.database_url)

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.console_port}"


@contextmanager
def running_platform(**options: Any) -> Iterator[Platform]:
    """A started `tms up` in a data directory of its own, stopped and removed after."""
    data_dir = make_data_dir()
    running = Platform(data_dir, **options)
    running.start()
    try:
        yield running
    finally:
        if running.process is not None and running.process.poll() is None:
            running.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
