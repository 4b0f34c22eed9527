"""``UsbTerminal``: the TC-200 as the runtime sees it, over the USB driver, never raising.

It opens the terminal on first use, reads status and metrics, and turns every
``TerminalFault`` (unplugged, busy, permission denied, timeout, corrupt frame) into a
published status plus one event per change of fault, then retries opening it with
exponential backoff and full jitter. Commands borrow the open driver through ``call``.

The real agent reads a USB terminal from a worker thread (``reads_block``); the fleet
simulator's subclass (``agent.sim.usb_backend.SimulatedUsbTerminal``), whose backend never
blocks, is read inline, because ten thousand terminals cannot each have a thread.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import ClassVar, TypeVar

from agent.device import DeviceState
from agent.errors import TerminalFault, TerminalUnplugged
from agent.tc200_protocol import DeviceInfo, InfoFlags, TC200State
from agent.usb_driver import TC200Driver
from shared.backoff import Backoff
from shared.messages import DeviceError, DeviceStatus, Event, EventSeverity

log = logging.getLogger(__name__)

T = TypeVar("T")

_STATUS_OF_STATE = {
    TC200State.OK: DeviceStatus.OK,
    TC200State.ERROR: DeviceStatus.ERROR,
    TC200State.BUSY: DeviceStatus.BUSY,
    TC200State.UPDATING: DeviceStatus.UPDATING,
}
RESTART_WAIT_S = 30.0
RESTART_POLL_S = 0.1


class UsbTerminal:
    """A TC-200 behind ``opener`` (which finds, opens and claims it, or raises a fault)."""

    reads_block: ClassVar[bool] = True

    def __init__(
        self,
        opener: Callable[[], TC200Driver],
        *,
        reopen_base_s: float = 1.0,
        reopen_max_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._opener = opener
        self._clock = clock
        self._sleep = sleep
        self._backoff = Backoff(reopen_base_s, reopen_max_s, rng)
        self._lock = threading.Lock()
        self._driver: TC200Driver | None = None
        self.info: DeviceInfo | None = None
        self.fault: TerminalFault | None = None
        self._retry_at = 0.0
        self._events: list[Event] = []
        self.faults = 0

    # TerminalDevice.

    def read_state(self, metrics: bool = True) -> DeviceState:
        with self._lock:
            try:
                driver = self._open()
                report = driver.status()
                reading = driver.metrics() if metrics else None
            except TerminalFault as fault:
                return self._faulted(fault)
            self._recovered()
        info = self.info
        return DeviceState(
            status=_STATUS_OF_STATE[report.state],
            model=info.model if info else None,
            firmware=info.firmware if info else None,
            uptime_s=reading.uptime_s if reading else None,
            cpu=reading.cpu if reading else None,
            memory=reading.memory if reading else None,
            disk=reading.disk if reading else None,
            errors=tuple(DeviceError(code=c, message=m) for c, m in report.errors),
        )

    def take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    # Commands.

    def call(self, operation: Callable[[TC200Driver], T]) -> T:
        """Run ``operation`` on the open driver; a fault is recorded, then raised."""
        with self._lock:
            try:
                return operation(self._open(force=True))
            except TerminalFault as fault:
                self._faulted(fault)
                raise

    def reboot(self) -> None:
        self.call(lambda driver: driver.reboot())
        self._forget_driver()

    def update_firmware(self, image: bytes) -> DeviceInfo:
        """Stage, verify and boot ``image``; the returned info says if it rolled back."""
        self.call(lambda driver: driver.transfer_firmware(image))
        self.call(lambda driver: driver.boot_firmware())
        self._forget_driver()
        deadline = self._clock() + RESTART_WAIT_S
        while True:
            try:
                info = self.call(lambda driver: driver.device_info())
            except TerminalUnplugged:
                if self._clock() >= deadline:
                    raise
                self._sleep(RESTART_POLL_S)
                continue
            if info.flags & InfoFlags.ROLLED_BACK:
                self._event(
                    "device.firmware_rolled_back",
                    EventSeverity.ERROR,
                    "TC200-ROLLBACK",
                    f"the new firmware failed to boot; the terminal runs {info.firmware} again",
                )
            return info

    # Internals.

    def _open(self, force: bool = False) -> TC200Driver:
        if self._driver is not None:
            return self._driver
        if not force and self.fault is not None and self._clock() < self._retry_at:
            raise self.fault
        driver = self._opener()
        try:
            self.info = driver.device_info()
        except TerminalFault:
            driver.close()
            raise
        self._driver = driver
        return driver

    def _forget_driver(self) -> None:
        with self._lock:
            if self._driver is not None:
                self._driver.close()
                self._driver = None

    def _faulted(self, fault: TerminalFault) -> DeviceState:
        if self._driver is not None:
            # Reopened from scratch next time: after any fault the handle may be dead.
            self._driver.close()
            self._driver = None
        if self.fault is None or self._clock() >= self._retry_at:
            self._retry_at = self._clock() + self._backoff.next_delay()
        if self.fault is None or type(self.fault) is not type(fault):
            self.faults += 1
            severity = EventSeverity.ERROR
            if fault.status is DeviceStatus.UNPLUGGED:
                severity = EventSeverity.WARNING
            log.warning("terminal fault: %s", fault)
            self._event("device.fault", severity, fault.code, str(fault))
        self.fault = fault
        return DeviceState(
            status=fault.status,
            errors=(DeviceError(code=fault.code, message=str(fault)[:1000]),),
        )

    def _recovered(self) -> None:
        if self.fault is None:
            return
        log.info("terminal recovered from: %s", self.fault)
        self._event(
            "device.recovered",
            EventSeverity.INFO,
            self.fault.code,
            f"the terminal answers again after: {self.fault}",
        )
        self.fault = None
        self._backoff.reset()

    def _event(self, kind: str, severity: EventSeverity, code: str, message: str) -> None:
        self._events.append(Event(kind=kind, severity=severity, code=code, message=message[:2000]))
