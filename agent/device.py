"""What the agent runtime reads from a TC-200: the ``TerminalDevice`` protocol and its state.

The runtime only calls ``read_state()`` and ``take_events()``; ``agent.terminal.UsbTerminal``
implements them over the pyusb driver (on a real or a simulated USB bus), and
``agent.sim.device.SimulatedTC200`` in memory for runtime tests that do not need USB. A
driver whose reads block on I/O sets ``reads_block = True`` and the runtime calls it from
a worker thread, so the event loop (and every other terminal in a simulated fleet) never
waits on USB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

from shared.messages import DeviceError, DeviceStatus, Event


@dataclass(frozen=True, slots=True)
class DeviceState:
    """One reading of the terminal; fields the device could not report are None."""

    status: DeviceStatus
    model: str | None = None
    firmware: str | None = None
    uptime_s: int | None = None
    cpu: float | None = None
    memory: float | None = None
    disk: float | None = None
    errors: tuple[DeviceError, ...] = ()

    def __post_init__(self) -> None:
        for name in ("cpu", "memory", "disk"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 100:
                raise ValueError(f"{name} must be a percentage in 0..100, not {value!r}")
        if self.uptime_s is not None and self.uptime_s < 0:
            raise ValueError(f"uptime_s must not be negative, not {self.uptime_s!r}")


class TerminalDevice(Protocol):
    """A TC-200 as the agent sees it.

    ``read_state`` never raises for an absent or failing terminal: it reports
    ``DeviceStatus.UNPLUGGED`` or ``DeviceStatus.ERROR`` instead, because those are
    facts to publish, not reasons to stop the agent.
    """

    reads_block: ClassVar[bool]

    def read_state(self, metrics: bool = True) -> DeviceState:
        """The status, plus model, firmware and metrics when ``metrics`` (heartbeats)."""
        ...

    def take_events(self) -> list[Event]:
        """Events (faults, recoveries) since the last call, oldest first."""
        ...
