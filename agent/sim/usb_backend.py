"""A simulated TC-200 on a simulated USB bus: a pyusb backend for ``usb.core.find(backend=...)``.

The real driver (agent/usb_driver.py) runs unchanged on top of it, in tests and in the
fleet simulator. It implements ``usb.backend.IBackend`` (the interface pyusb defines for
libusb and friends), so this module imports ``usb.backend`` and ``usb.core`` only for the
base class and the error types a real backend raises. Nothing here blocks: a simulated
timeout is raised at once, which keeps ten thousand simulated terminals cheap.

Faults, injected by hand or at random: unplug and replug (every open handle dies, as
on a real bus), a busy interface, permission denied, timeouts (the answer arrives late,
before the next one), corrupt answers, and firmware that fails to boot.
"""

from __future__ import annotations

import array
import errno
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import usb.backend
import usb.core

from agent.sim.device import SimulatedTC200
from agent.sim.firmware import TC200Firmware
from agent.terminal import UsbTerminal
from agent.usb_driver import (
    CONFIGURATION,
    ENDPOINT_IN,
    ENDPOINT_OUT,
    PRODUCT_ID,
    VENDOR_ID,
    VENDOR_INTERFACE,
)
from shared.messages import DeviceStatus

BULK = 0x02
VENDOR_CLASS = 0xFF
MAX_PACKET = 64
# How long a simulated terminal is off the bus while it restarts.
RESTART_S = 0.5


@dataclass
class _Descriptor:
    """Any USB descriptor: pyusb reads the fields it needs as attributes."""

    fields: dict[str, object] = field(default_factory=dict)
    extra_descriptors: list[int] = field(default_factory=list)

    def __getattr__(self, name: str) -> object:
        try:
            return self.fields[name]
        except KeyError:
            raise AttributeError(name) from None


def _usb_error(message: str, code: int) -> usb.core.USBError:
    return usb.core.USBError(message, errno=code)


class SimulatedUsbBackend(usb.backend.IBackend):  # type: ignore[misc]
    """One simulated bus with one TC-200 on it."""

    def __init__(
        self,
        firmware: TC200Firmware,
        *,
        vendor_id: int = VENDOR_ID,
        product_id: int = PRODUCT_ID,
        glitch_rate: float = 0.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.firmware = firmware
        self.vendor_id = vendor_id
        self.product_id = product_id
        self.glitch_rate = glitch_rate
        self.busy = False
        self.access_denied = False
        self.pending_timeouts = 0
        self.pending_corruptions = 0
        self._rng = rng or random.Random()
        self._clock = clock
        self._unplugged_by_hand = False
        self._off_bus_until = 0.0
        self._generation = 1
        self._was_present = True
        self._answers: deque[bytes] = deque()
        self.requests = 0

    @classmethod
    def for_serial(
        cls, serial: str, *, fault_rate: float = 0.0, glitch_rate: float = 0.0, **kwargs: object
    ) -> SimulatedUsbBackend:
        hardware = SimulatedTC200(serial, fault_rate=fault_rate)
        return cls(TC200Firmware(serial, hardware), glitch_rate=glitch_rate, **kwargs)  # type: ignore[arg-type]

    # Faults.

    def unplug(self) -> None:
        self._unplugged_by_hand = True
        self._present()

    def replug(self) -> None:
        self._unplugged_by_hand = False
        self._present()

    def _present(self) -> bool:
        """Whether the terminal is on the bus now; a new arrival gets a new address."""
        physics_unplugged = self.firmware.hardware.status is DeviceStatus.UNPLUGGED
        # A restart takes the terminal off the bus once its last answer has been read.
        if self.firmware.restart_requested and not self._answers:
            self.firmware.after_restart()
            self._off_bus_until = self._clock() + RESTART_S
        present = (
            not self._unplugged_by_hand
            and not physics_unplugged
            and self._clock() >= self._off_bus_until
        )
        if present and not self._was_present:
            self._generation += 1
            self._answers.clear()
        self._was_present = present
        return present

    def _check_handle(self, handle: int) -> None:
        # Advancing the physics first lets a random unplug start or end on this transfer.
        self.firmware.hardware.advance()
        if not self._present() or handle != self._generation:
            raise _usb_error("No such device (it may have been disconnected)", errno.ENODEV)

    # Enumeration and descriptors.

    def enumerate_devices(self) -> Iterator[int]:
        self.firmware.hardware.advance()
        if self._present():
            yield self._generation

    def get_device_descriptor(self, dev: int) -> _Descriptor:
        return _Descriptor(
            {
                "bLength": 18, "bDescriptorType": 1, "bcdUSB": 0x0200,
                "bDeviceClass": 0, "bDeviceSubClass": 0, "bDeviceProtocol": 0,
                "bMaxPacketSize0": MAX_PACKET, "idVendor": self.vendor_id,
                "idProduct": self.product_id, "bcdDevice": 0x0100, "iManufacturer": 0,
                "iProduct": 0, "iSerialNumber": 0, "bNumConfigurations": 1,
                "address": dev % 128, "bus": 1, "port_number": 1, "port_numbers": (1,),
                "speed": 3,
            }
        )  # fmt: skip

    def get_configuration_descriptor(self, dev: int, config: int) -> _Descriptor:
        return _Descriptor(
            {
                "bLength": 9, "bDescriptorType": 2, "wTotalLength": 32, "bNumInterfaces": 1,
                "bConfigurationValue": CONFIGURATION, "iConfiguration": 0,
                "bmAttributes": 0x80, "bMaxPower": 50,
            }
        )  # fmt: skip

    def get_interface_descriptor(self, dev: int, intf: int, alt: int, config: int) -> _Descriptor:
        if intf != 0 or alt != 0:
            raise IndexError("the TC-200 has one interface with one setting")
        return _Descriptor(
            {
                "bLength": 9, "bDescriptorType": 4, "bInterfaceNumber": VENDOR_INTERFACE,
                "bAlternateSetting": 0, "bNumEndpoints": 2, "bInterfaceClass": VENDOR_CLASS,
                "bInterfaceSubClass": 0, "bInterfaceProtocol": 0, "iInterface": 0,
            }
        )  # fmt: skip

    def get_endpoint_descriptor(
        self, dev: int, ep: int, intf: int, alt: int, config: int
    ) -> _Descriptor:
        address = (ENDPOINT_OUT, ENDPOINT_IN)[ep]
        return _Descriptor(
            {
                "bLength": 7, "bDescriptorType": 5, "bEndpointAddress": address,
                "bmAttributes": BULK, "wMaxPacketSize": MAX_PACKET, "bInterval": 0,
                "bRefresh": 0, "bSynchAddress": 0,
            }
        )  # fmt: skip

    # Handles.

    def open_device(self, dev: int) -> int:
        if self.access_denied:
            raise _usb_error("Access denied (insufficient permissions)", errno.EACCES)
        self._check_handle(dev)
        return dev

    def close_device(self, dev_handle: int) -> None:
        pass

    def get_configuration(self, dev_handle: int) -> int:
        self._check_handle(dev_handle)
        return CONFIGURATION

    def set_configuration(self, dev_handle: int, config_value: int) -> None:
        self._check_handle(dev_handle)

    def claim_interface(self, dev_handle: int, intf: int) -> None:
        self._check_handle(dev_handle)
        if self.busy:
            raise _usb_error("Resource busy", errno.EBUSY)

    def release_interface(self, dev_handle: int, intf: int) -> None:
        self._check_handle(dev_handle)

    def is_kernel_driver_active(self, dev_handle: int, intf: int) -> bool:
        return False

    # Transfers.

    def bulk_write(
        self, dev_handle: int, ep: int, intf: int, data: array.array, timeout: int
    ) -> int:  # type: ignore[type-arg]  # noqa: E501
        self._check_handle(dev_handle)
        if ep != ENDPOINT_OUT:
            raise _usb_error("Pipe error", errno.EPIPE)
        self.requests += 1
        answer = self.firmware.handle(data.tobytes())
        if answer is not None:
            self._answers.append(answer)
        if self.glitch_rate and self._rng.random() < self.glitch_rate:
            if self._rng.random() < 0.5:
                self.pending_timeouts += 1
            else:
                self.pending_corruptions += 1
        return len(data)

    def bulk_read(
        self, dev_handle: int, ep: int, intf: int, buff: array.array, timeout: int
    ) -> int:  # type: ignore[type-arg]  # noqa: E501
        self._check_handle(dev_handle)
        if ep != ENDPOINT_IN:
            raise _usb_error("Pipe error", errno.EPIPE)
        if self.pending_timeouts:
            # The answer is late, not lost: it is read before the next request's.
            self.pending_timeouts -= 1
            raise usb.core.USBTimeoutError("Operation timed out", errno=errno.ETIMEDOUT)
        if not self._answers:
            raise usb.core.USBTimeoutError("Operation timed out", errno=errno.ETIMEDOUT)
        answer = self._answers.popleft()
        if self.pending_corruptions:
            self.pending_corruptions -= 1
            corrupt = bytearray(answer)
            corrupt[self._rng.randrange(1, len(corrupt))] ^= 1 << self._rng.randrange(8)
            answer = bytes(corrupt)
        size = min(len(answer), len(buff))
        # Straight into the caller's buffer: no intermediate copies per transfer.
        memoryview(buff)[:size] = answer[:size]
        return size


class SimulatedUsbTerminal(UsbTerminal):
    """Over ``SimulatedUsbBackend``: every call returns at once, so the runtime reads it inline."""

    reads_block: ClassVar[bool] = False
