"""`tms up`'s supervisor: starts the parts in order, restarts one that dies, and says so.

One loop in the main thread looks at every part a few times a second. At first the
parts start one after another, each once the one before is ready. After that each
part lives on its own: one that ends is logged (one line), counted and restarted after
the delay tms/supervision_policy.py gives, while the others keep running. Only a part
that keeps failing to start stops the platform, with the reason. Every change of
state is written to the status file (shared/platform_status.py).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.errors import TMSError
from shared.platform_status import (
    LastExit,
    PartState,
    PartStatus,
    PlatformState,
    platform_state,
    status_document,
    utc_text,
    write_status_file,
)
from tms.children import Part
from tms.supervision_policy import GiveUp, RestartPolicy, Run, describe_exit, next_step

TICK_S = 0.2
# Runs remembered per part: enough for the policy (it looks at the latest streak only).
HISTORY = 64


@dataclass
class _Tracked:
    """A part and what the supervisor knows of it."""

    part: Part
    state: PartState = "waiting"
    restarts: int = 0
    ever_ready: bool = False
    started_at: float = 0.0  # monotonic, this run
    started_wall: datetime | None = None
    ready_at: float | None = None
    restart_at: float = 0.0  # monotonic
    restart_wall: datetime | None = None
    last_exit: LastExit | None = None
    runs: deque[Run] = field(default_factory=lambda: deque(maxlen=HISTORY))

    def status(self) -> PartStatus:
        running = self.state in ("starting", "running")
        return PartStatus(
            state=self.state,
            pid=self.part.pid() if running else None,
            restarts=self.restarts,
            started_at=utc_text(self.started_wall) if running and self.started_wall else None,
            next_start_at=(
                utc_text(self.restart_wall)
                if self.state == "restarting" and self.restart_wall
                else None
            ),
            last_exit=self.last_exit,
        )


class Supervisor:
    """Runs ``parts`` (in start-up order) until asked to stop or one cannot start."""

    def __init__(
        self,
        parts: Sequence[Part],
        policy: RestartPolicy,
        start_timeout_s: float,
        status_file: Path,
        say: Callable[[str], None],
    ) -> None:
        self.policy = policy
        self.start_timeout_s = start_timeout_s
        self.status_file = status_file
        self.say = say
        self._tracked = [_Tracked(part) for part in parts]
        self._written: dict[str, object] | None = None
        self._write_failed = False
        self.gave_up: str | None = None

    def adopt(self, part: Part) -> None:
        """Supervise ``part``, already started and ready (PostgreSQL, before migrations)."""
        now = time.monotonic()
        tracked = _Tracked(part, state="running", ever_ready=True, started_at=now, ready_at=now)
        tracked.started_wall = datetime.now(UTC)
        self._tracked.insert(0, tracked)

    # -- the loop --------------------------------------------------------------

    def run(self, stop: threading.Event, on_all_ready: Callable[[], None]) -> int:
        """Until ``stop`` is set (0), or until a part cannot start (1, reason printed)."""
        announced = False
        while True:
            self._step(time.monotonic())
            if self.gave_up is not None:
                self._write_status()
                return 1
            if not announced and all(t.ever_ready for t in self._tracked):
                announced = True
                self._write_status()
                on_all_ready()
            self._write_status()
            if stop.wait(TICK_S):
                return 0

    def _step(self, now: float) -> None:
        previous_ready = True
        for tracked in self._tracked:
            if tracked.state == "waiting" and previous_ready:
                self._start(tracked, now)
            elif tracked.state == "starting":
                self._check_start(tracked, now)
            elif tracked.state == "running" and tracked.part.returncode() is not None:
                self._ended(tracked, now, describe_exit(_code(tracked.part)))
            elif tracked.state == "restarting" and now >= tracked.restart_at:
                tracked.restarts += 1
                self._start(tracked, now)
            if self.gave_up is not None:
                return
            # At first, each part waits for the one before it (ingest needs the broker).
            previous_ready = tracked.ever_ready

    def _start(self, tracked: _Tracked, now: float) -> None:
        tracked.started_at, tracked.ready_at = now, None
        tracked.started_wall = datetime.now(UTC)
        tracked.state = "starting"
        try:
            tracked.part.start()
        except TMSError as exc:
            self._ended(tracked, time.monotonic(), str(exc).splitlines()[0])
            return
        # A part that starts synchronously (PostgreSQL) is ready at once.
        self._check_start(tracked, time.monotonic())

    def _check_start(self, tracked: _Tracked, now: float) -> None:
        part = tracked.part
        if part.returncode() is not None:
            self._ended(tracked, now, describe_exit(_code(part)))
        elif part.is_ready():
            tracked.state, tracked.ready_at = "running", now
            if tracked.ever_ready:
                self.say(
                    f"tms up: {part.name} is running again (pid {part.pid()}, "
                    f"restart {tracked.restarts})"
                )
            tracked.ever_ready = True
        elif now - tracked.started_at > self.start_timeout_s:
            part.stop()
            self._ended(tracked, now, f"not ready after {self.start_timeout_s:g} s")

    def _ended(self, tracked: _Tracked, now: float, ending: str) -> None:
        part = tracked.part
        run = Run(tracked.started_at, now, tracked.ready_at, ending)
        tracked.runs.append(run)
        error = part.error_line()
        tracked.last_exit = LastExit(ending, utc_text(datetime.now(UTC)), error)
        detail = f"{ending}: {error}" if error and error not in ending else ending
        step = next_step(self.policy, tracked.runs)
        if isinstance(step, GiveUp):
            tracked.state = "failed"
            self.gave_up = f"{part.name} cannot start: {step.reason}"
            self.say(
                f"tms up: {self.gave_up}; stopping the platform. "
                f"{part.name}'s last error: {error or '(none logged)'}\n{part.log_tail()}"
            )
            return
        tracked.state = "restarting"
        tracked.restart_at = now + step.delay_s
        tracked.restart_wall = datetime.now(UTC) + timedelta(seconds=step.delay_s)
        what = "ended" if run.ready_at is not None else "failed to start"
        self.say(
            f"tms up: {part.name} {what} ({detail}) after {now - tracked.started_at:.1f} s; "
            f"restart {tracked.restarts + 1} in {step.delay_s:g} s"
        )

    # -- status ------------------------------------------------------------------

    def statuses(self) -> dict[str, PartStatus]:
        return {t.part.name: t.status() for t in self._tracked}

    def _write_status(self, state: PlatformState | None = None) -> None:
        parts = self.statuses()
        if state is None:
            all_started = all(t.ever_ready for t in self._tracked)
            state = platform_state(parts, all_started, self.gave_up is not None)
        key: dict[str, object] = {"state": state, "parts": parts}
        if key == self._written:
            return
        try:
            write_status_file(self.status_file, status_document(state, parts, datetime.now(UTC)))
        except OSError as exc:
            # A full disk must not take the platform down: the parts matter more.
            if not self._write_failed:
                self.say(f"tms up: cannot write {self.status_file}: {exc.strerror}")
            self._write_failed = True
            return
        self._written, self._write_failed = key, False

    def mark(self, state: PlatformState) -> None:
        """Say the platform is stopping or stopped (parts as they are now)."""
        if state == "stopped":
            for tracked in self._tracked:
                if tracked.state != "failed":
                    tracked.state = "stopped"
        self._write_status(state)


def _code(part: Part) -> int:
    code = part.returncode()
    assert code is not None
    return code
