"""The TC-200 USB driver: the one module of the agent (the simulator aside) using ``usb.core``.

It finds the terminal by vendor/product id, claims its vendor interface and speaks the
framed request/response protocol (agent/frame.py, agent/tc200_protocol.py) over the two
bulk endpoints. The pyusb device is injected (``open_terminal`` takes a pyusb backend),
so tests and the fleet simulator run this very code over the simulated terminal of
``agent.sim.usb_backend``. Every pyusb error is translated here into a ``TerminalFault``
that carries the status to publish; nothing above this module sees a USB exception.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import usb.core
import usb.util

from agent.errors import (
    UDEV_ADVICE,
    TerminalBusy,
    TerminalFault,
    TerminalPermissionDenied,
    TerminalProtocolError,
    TerminalRefused,
    TerminalTimeout,
    TerminalUnplugged,
    UsbUnavailable,
)
from agent.frame import (
    MAX_FRAME,
    Frame,
    FrameError,
    check_response,
    decode_frame,
    encode_frame,
    next_sequence,
)
from agent.tc200_protocol import (
    FIRMWARE_CHUNK_MAX,
    DeviceInfo,
    DeviceMetrics,
    Opcode,
    Result,
    StatusReport,
    decode_info,
    decode_metrics,
    decode_status,
    encode_config,
    encode_firmware_begin,
    encode_firmware_chunk,
    split_response,
)

# pid.codes test VID/PID until TechCore's own ids are assigned; both are settings.
VENDOR_ID = 0x1209
PRODUCT_ID = 0xC200
CONFIGURATION = 1
VENDOR_INTERFACE = 0
ENDPOINT_OUT = 0x01  # bulk, host to terminal
ENDPOINT_IN = 0x81  # bulk, terminal to host
TRANSFER_TIMEOUT_MS = 1000
# A response that arrives after its request timed out is read before the next one's:
# up to this many such stale frames are skipped per request.
STALE_FRAMES_MAX = 4
# Requests that may be sent again after a timeout or a corrupt answer.
IDEMPOTENT = frozenset(
    {
        Opcode.GET_INFO,
        Opcode.GET_STATUS,
        Opcode.GET_METRICS,
        Opcode.WRITE_CONFIG,
        Opcode.FIRMWARE_CHUNK,
    }
)
RETRIES = 1

_UNPLUGGED_ERRNOS = frozenset({errno.ENODEV, errno.ENOENT, errno.ESHUTDOWN})
_DENIED_ERRNOS = frozenset({errno.EACCES, errno.EPERM})

T = TypeVar("T")


def translate_usb_error(exc: usb.core.USBError, action: str) -> TerminalFault:
    """The TerminalFault (and so the status to publish) for one pyusb error."""
    if isinstance(exc, usb.core.USBTimeoutError) or exc.errno == errno.ETIMEDOUT:
        return TerminalTimeout(f"the TC-200 did not answer in time while {action}")
    if exc.errno in _UNPLUGGED_ERRNOS:
        return TerminalUnplugged(f"the TC-200 was unplugged while {action}")
    if exc.errno == errno.EBUSY:
        return TerminalBusy(
            f"the TC-200 is in use by another program while {action}: stop any other "
            "`tms agent` or vendor tool using it"
        )
    if exc.errno in _DENIED_ERRNOS:
        return TerminalPermissionDenied(
            f"no permission to use the TC-200 while {action}: {UDEV_ADVICE}"
        )
    return TerminalFault(f"USB error while {action}: {exc}")


def _usb_call(action: str, call: Callable[[], T]) -> T:
    try:
        return call()
    except usb.core.USBError as exc:
        raise translate_usb_error(exc, action) from exc


def open_terminal(
    vendor_id: int = VENDOR_ID,
    product_id: int = PRODUCT_ID,
    *,
    backend: Any = None,
    timeout_ms: int = TRANSFER_TIMEOUT_MS,
) -> TC200Driver:
    """Find the first TC-200 and claim its vendor interface, or raise a TerminalFault."""
    try:
        device = usb.core.find(idVendor=vendor_id, idProduct=product_id, backend=backend)
    except usb.core.NoBackendError as exc:
        raise UsbUnavailable(
            "no USB library found: install libusb 1.0 (`apt-get install libusb-1.0-0`)"
        ) from exc
    except usb.core.USBError as exc:
        raise translate_usb_error(exc, "looking for the terminal") from exc
    if device is None:
        raise TerminalUnplugged(
            f"no TC-200 (USB {vendor_id:04x}:{product_id:04x}) is plugged in: check the cable"
        )
    driver = TC200Driver(device, timeout_ms)
    driver.claim()
    return driver


class TC200Driver:
    """One claimed TC-200; every method blocks on USB for at most a few timeouts.

    Thread-safe: a lock keeps one request in flight, because a heartbeat read and a
    command may run in different threads.
    """

    def __init__(self, device: Any, timeout_ms: int = TRANSFER_TIMEOUT_MS) -> None:
        self._device = device
        self.timeout_ms = timeout_ms
        self._sequence = 0
        self._lock = threading.Lock()
        self.stale_frames = 0
        self.retries = 0

    def claim(self) -> None:
        device = self._device

        def configure() -> None:
            try:
                if device.is_kernel_driver_active(VENDOR_INTERFACE):
                    device.detach_kernel_driver(VENDOR_INTERFACE)
            except NotImplementedError:  # backends (and OSes) without kernel drivers
                pass
            if device.get_active_configuration().bConfigurationValue != CONFIGURATION:
                device.set_configuration(CONFIGURATION)
            usb.util.claim_interface(device, VENDOR_INTERFACE)

        _usb_call("claiming the terminal's interface", configure)

    def close(self) -> None:
        """Release the interface; a terminal already gone is not an error here."""
        with contextlib.suppress(usb.core.USBError):
            usb.util.release_interface(self._device, VENDOR_INTERFACE)
        usb.util.dispose_resources(self._device)

    # Requests.

    def request(self, opcode: Opcode, payload: bytes = b"") -> bytes:
        """Send one request and return the body of its OK response."""
        attempts = 1 + (RETRIES if opcode in IDEMPOTENT else 0)
        with self._lock:
            for attempt in range(attempts):
                try:
                    return self._exchange(opcode, payload)
                except (TerminalTimeout, TerminalProtocolError):
                    if attempt + 1 == attempts:
                        raise
                    self.retries += 1
        raise AssertionError("unreachable")

    def _exchange(self, opcode: Opcode, payload: bytes) -> bytes:
        self._sequence = sequence = next_sequence(self._sequence)
        raw = encode_frame(Frame(opcode, sequence, payload))
        action = f"sending {opcode.name}"
        _usb_call(action, lambda: self._device.write(ENDPOINT_OUT, raw, self.timeout_ms))
        for _ in range(STALE_FRAMES_MAX + 1):
            data = _usb_call(
                f"reading the answer to {opcode.name}",
                lambda: self._device.read(ENDPOINT_IN, MAX_FRAME, self.timeout_ms),
            )
            try:
                frame = decode_frame(bytes(data))
            except FrameError as exc:
                raise TerminalProtocolError(f"bad answer to {opcode.name}: {exc}") from exc
            if frame.sequence != sequence:
                self.stale_frames += 1  # the late answer to an earlier, timed-out request
                continue
            try:
                check_response(frame, opcode, sequence)
                result, body = split_response(frame.payload)
            except FrameError as exc:
                raise TerminalProtocolError(f"bad answer to {opcode.name}: {exc}") from exc
            if result is Result.BUSY:
                raise TerminalBusy(f"the TC-200 is busy and refused {opcode.name}")
            if result is not Result.OK:
                raise TerminalRefused(f"the TC-200 refused {opcode.name}: {result.name}")
            return body
        raise TerminalProtocolError(
            f"no answer to {opcode.name} (sequence {sequence}) among {STALE_FRAMES_MAX + 1} frames"
        )

    def _decoded(self, opcode: Opcode, decode: Callable[[bytes], T]) -> T:
        body = self.request(opcode)
        try:
            return decode(body)
        except FrameError as exc:
            raise TerminalProtocolError(f"bad answer to {opcode.name}: {exc}") from exc

    def device_info(self) -> DeviceInfo:
        return self._decoded(Opcode.GET_INFO, decode_info)

    def status(self) -> StatusReport:
        return self._decoded(Opcode.GET_STATUS, decode_status)

    def metrics(self) -> DeviceMetrics:
        return self._decoded(Opcode.GET_METRICS, decode_metrics)

    def reboot(self) -> None:
        """Ask the terminal to restart; it drops off the bus and enumerates again."""
        self.request(Opcode.REBOOT)

    def write_config(self, config: Mapping[str, str]) -> None:
        self.request(Opcode.WRITE_CONFIG, encode_config(config))

    # Firmware: begin, chunks at offsets, commit; then boot (or abort to keep the old one).

    def transfer_firmware(self, image: bytes, chunk_size: int = FIRMWARE_CHUNK_MAX) -> None:
        """Stage ``image`` on the terminal and have it verify size and SHA-256."""
        digest = hashlib.sha256(image).digest()
        self.request(Opcode.FIRMWARE_BEGIN, encode_firmware_begin(len(image), digest))
        for offset in range(0, len(image), chunk_size):
            chunk = image[offset : offset + chunk_size]
            self.request(Opcode.FIRMWARE_CHUNK, encode_firmware_chunk(offset, chunk))
        self.request(Opcode.FIRMWARE_COMMIT)

    def boot_firmware(self) -> None:
        """Restart into the committed image; if it fails to boot the terminal rolls back."""
        self.request(Opcode.FIRMWARE_BOOT)

    def abort_firmware(self) -> None:
        self.request(Opcode.FIRMWARE_ABORT)
