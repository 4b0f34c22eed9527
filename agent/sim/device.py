"""The physics of a simulated TC-200 (and its store PC): drifting metrics and random faults.

``agent.sim.firmware`` answers USB frames from this state, and ``agent.sim.usb_backend``
serves those frames through a pyusb backend, so the real driver reads it. It also still
implements ``TerminalDevice`` directly, for tests of the runtime that do not need USB.
Each simulated terminal is seeded from its serial, so a fleet
looks the same on every run; metrics drift slowly, and faults (error, unplugged) start
at random at ``fault_rate`` per second and clear after a while, or are injected by hand.
"""

from __future__ import annotations

import math
import random
import time
import zlib
from collections.abc import Callable
from typing import ClassVar

from agent.device import DeviceState
from shared.messages import DeviceError, DeviceStatus, Event, HostMetrics

MODEL = "TC-200"
FIRMWARE_VERSIONS = ("2.3.9", "2.4.1", "2.4.3", "2.5.0")
ERROR_CODES = (
    ("E101", "card reader not responding"),
    ("E204", "receipt printer out of paper"),
    ("E310", "PIN pad tamper check failed"),
    ("E402", "secure element busy"),
)
# Of the faults that start at random, this share are errors; the rest are unplugs.
ERROR_SHARE = 0.7
MIN_FAULT_S = 2.0
MAX_DRIFT_STEP_S = 60.0


def seed_of(serial: str, salt: str = "") -> int:
    # crc32 rather than hash(): str hashes change between processes, seeds must not.
    return zlib.crc32(f"{salt}{serial}".encode())


class _Drift:
    """A value that wanders around a base, pulled back to it, within 0..100."""

    def __init__(self, rng: random.Random, base: float, noise: float) -> None:
        self.base = base
        self.value = base
        self.noise = noise
        self._rng = rng

    def step(self, dt: float) -> float:
        dt = min(dt, MAX_DRIFT_STEP_S)
        pull = (self.base - self.value) * min(1.0, 0.05 * dt)
        self.value += pull + self._rng.gauss(0, self.noise * math.sqrt(dt))
        self.value = min(100.0, max(0.0, self.value))
        return round(self.value, 1)


class SimulatedTC200:
    """A TC-200 in memory; ``read_state`` advances it to the current time."""

    reads_block: ClassVar[bool] = False

    def take_events(self) -> list[Event]:
        return []

    def __init__(
        self,
        serial: str,
        *,
        fault_rate: float = 0.0,
        mean_fault_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if fault_rate < 0 or mean_fault_s <= 0:
            raise ValueError("fault_rate must be >= 0 and mean_fault_s > 0")
        self.serial = serial
        self.fault_rate = fault_rate
        self.mean_fault_s = mean_fault_s
        self._clock = clock
        self._rng = random.Random(seed_of(serial))
        self.firmware = self._rng.choice(FIRMWARE_VERSIONS)
        now = clock()
        # Booted some time in the last month, so uptimes in a fleet differ.
        self._booted_at = now - self._rng.uniform(3600, 30 * 86400)
        self._cpu = _Drift(self._rng, self._rng.uniform(5, 30), 2.0)
        self._memory = _Drift(self._rng, self._rng.uniform(30, 65), 0.5)
        self._disk = self._rng.uniform(20, 60)
        self._last_step = now
        self._last_fault_step = now
        self._fault: DeviceStatus | None = None
        self._fault_error: DeviceError | None = None
        self._fault_ends_at = 0.0

    @property
    def status(self) -> DeviceStatus:
        return self._fault or DeviceStatus.OK

    def inject_fault(self, status: DeviceStatus, duration_s: float = math.inf) -> None:
        """Make the terminal fail now (ERROR or UNPLUGGED) for ``duration_s`` seconds."""
        if status not in (DeviceStatus.ERROR, DeviceStatus.UNPLUGGED):
            raise ValueError(f"a fault is ERROR or UNPLUGGED, not {status}")
        self._start_fault(status, self._clock(), duration_s)

    def clear_fault(self) -> None:
        self._end_fault(self._clock())

    def restart(self) -> None:
        """Power-cycle: uptime starts again from zero."""
        self._booted_at = self._clock()

    @property
    def fault_error(self) -> DeviceError | None:
        return self._fault_error

    def advance(self) -> None:
        """Move the faults (not the metrics) to now: what every simulated USB transfer
        needs, so it skips drawing metrics that nobody reads."""
        now = self._clock()
        dt = max(0.0, now - self._last_fault_step)
        self._last_fault_step = now
        self._advance_faults(now, dt)

    def read_state(self, metrics: bool = True) -> DeviceState:
        self.advance()
        now = self._clock()
        dt = max(0.0, now - self._last_step)
        self._last_step = now
        cpu = self._cpu.step(dt)
        memory = self._memory.step(dt)
        # Logs and transaction journals fill the disk slowly; maintenance is not simulated.
        self._disk = min(99.0, self._disk + dt * 1e-6)
        if self._fault is DeviceStatus.UNPLUGGED:
            return DeviceState(status=DeviceStatus.UNPLUGGED)
        errors = (self._fault_error,) if self._fault_error is not None else ()
        return DeviceState(
            status=self.status,
            model=MODEL,
            firmware=self.firmware,
            uptime_s=int(now - self._booted_at),
            cpu=cpu,
            memory=memory,
            disk=round(self._disk, 1),
            errors=errors,
        )

    def _advance_faults(self, now: float, dt: float) -> None:
        if self._fault is not None:
            if now >= self._fault_ends_at:
                self._end_fault(now)
            return
        if self.fault_rate <= 0 or dt <= 0:
            return
        # Faults start as a Poisson process, so the rate holds whatever the poll interval.
        if self._rng.random() < 1 - math.exp(-self.fault_rate * dt):
            status = (
                DeviceStatus.ERROR if self._rng.random() < ERROR_SHARE else DeviceStatus.UNPLUGGED
            )
            duration = max(MIN_FAULT_S, self._rng.expovariate(1 / self.mean_fault_s))
            self._start_fault(status, now, duration)

    def _start_fault(self, status: DeviceStatus, now: float, duration_s: float) -> None:
        self._fault = status
        self._fault_ends_at = now + duration_s
        if status is DeviceStatus.ERROR:
            code, message = self._rng.choice(ERROR_CODES)
            self._fault_error = DeviceError(code=code, message=message)
        else:
            self._fault_error = None

    def _end_fault(self, now: float) -> None:
        if self._fault is DeviceStatus.UNPLUGGED:
            # Plugged back in: the terminal powers up again.
            self._booted_at = now
        self._fault = None
        self._fault_error = None


class SimulatedHostMetrics:
    """The store PC of one simulated terminal: a callable returning drifting HostMetrics."""

    def __init__(self, serial: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        rng = random.Random(seed_of(serial, "host:"))
        self.name = f"store-pc-{serial}"[:200]
        self._clock = clock
        self._cpu = _Drift(rng, rng.uniform(5, 40), 3.0)
        self._memory = _Drift(rng, rng.uniform(35, 80), 0.5)
        self._disk = _Drift(rng, rng.uniform(30, 85), 0.01)
        self._last_step = clock()

    def __call__(self) -> HostMetrics:
        now = self._clock()
        dt = max(0.0, now - self._last_step)
        self._last_step = now
        return HostMetrics(
            cpu=self._cpu.step(dt),
            memory=self._memory.step(dt),
            disk=self._disk.step(dt),
            name=self.name,
        )
