"""What runs inside a simulated TC-200: it answers request frames from ``SimulatedTC200`` state.

No USB here: ``agent.sim.usb_backend`` carries these frames over a pyusb backend. The firmware
update path is complete: an image is staged (size and SHA-256 announced first, chunks at
offsets), verified on commit, and booted; an image whose header is not a TC-200 image,
or any image after ``fail_next_boot()``, fails to boot and the terminal rolls back.

A simulated image (``make_image``) is ``TC200FW:<version>\n``, optionally a second line
``sim-fail-boot-percent=<p>\n``, then padding. That line makes the image fail its boot
self-test on p % of the terminals, chosen by a stable hash of (serial, version): the
same terminals on every run and in every process, so a test or a bench knows the share.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

from agent.frame import Frame, FrameError, decode_frame, encode_frame, response_opcode
from agent.sim.device import MODEL, SimulatedTC200
from agent.tc200_protocol import (
    DeviceInfo,
    DeviceMetrics,
    InfoFlags,
    MalformedPayload,
    Opcode,
    Result,
    StatusReport,
    TC200State,
    decode_config,
    decode_firmware_begin,
    decode_firmware_chunk,
    encode_info,
    encode_metrics,
    encode_status,
    response_payload,
)
from shared.messages import DeviceStatus

FIRMWARE_MAGIC = b"TC200FW:"
MAX_FIRMWARE_SIZE = 16 * 1024 * 1024
VERSION_MAX = 32
# The simulator's own header line; a real TC-200 image has none, so it boots everywhere.
FAIL_BOOT_FIELD = b"sim-fail-boot-percent="
# How much of an image its header may take: rollouts.library reads the version in the
# first 64 bytes after the magic, and a header must not reach into the padding.
HEADER_MAX = 128
DEFAULT_BODY_BYTES = 4096
# Settings the terminal accepts in WRITE_CONFIG; anything else is a BAD_REQUEST.
CONFIG_KEYS = frozenset({"display_brightness", "beep_volume", "timezone", "receipt_header"})


@dataclass(frozen=True, slots=True)
class ImageHeader:
    """What a simulated image's header says: its version, and on what share of
    terminals (percent, 0..100) it fails the boot self-test."""

    version: str
    fail_boot_percent: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < len(self.version) <= VERSION_MAX or not self.version.isascii():
            raise ValueError(f"version {self.version!r}: 1-{VERSION_MAX} ASCII characters")
        if "\n" in self.version:
            raise ValueError("a version is one line")
        if not (math.isfinite(self.fail_boot_percent) and 0 <= self.fail_boot_percent <= 100):
            raise ValueError(f"fail_boot_percent {self.fail_boot_percent}: 0 to 100")

    def encode(self) -> bytes:
        header = FIRMWARE_MAGIC + self.version.encode("ascii") + b"\n"
        if self.fail_boot_percent:
            # repr: the exact float comes back when the header is read.
            header += FAIL_BOOT_FIELD + repr(self.fail_boot_percent).encode() + b"\n"
        return header

    def fails_on(self, serial: str) -> bool:
        """Whether this image fails its boot self-test on the terminal ``serial``."""
        return boot_draw(serial, self.version) < self.fail_boot_percent


def boot_draw(serial: str, version: str) -> float:
    """A number in [0, 100) fixed by (serial, version): a terminal fails an image's boot
    when it falls below the image's fail-boot percent. SHA-256, not hash(): it must not
    change between processes (the fleet runs in several)."""
    digest = hashlib.sha256(f"{serial}\0{version}".encode()).digest()
    return int.from_bytes(digest[:8], "big") * 100 / 2**64


def make_image(version: str, *, fail_boot_percent: float = 0, size: int | None = None) -> bytes:
    """A simulated image announcing ``version``, failing its boot on ``fail_boot_percent``
    % of terminals (by serial), padded with zeros to ``size`` bytes (default: 4 KiB of
    padding). rollouts.library accepts it: the magic and the version on the first line."""
    header = ImageHeader(version, float(fail_boot_percent)).encode()
    if size is None:
        size = len(header) + DEFAULT_BODY_BYTES
    if not len(header) <= size <= MAX_FIRMWARE_SIZE:
        raise ValueError(
            f"an image of {size} bytes: it holds its {len(header)}-byte header and a "
            f"TC-200 takes at most {MAX_FIRMWARE_SIZE}"
        )
    return header + bytes(size - len(header))


def firmware_image(version: str, body: bytes = b"\x00" * DEFAULT_BODY_BYTES) -> bytes:
    """A bootable simulated image announcing ``version``, with ``body`` after its header."""
    return FIRMWARE_MAGIC + version.encode() + b"\n" + body


def parse_image_header(image: bytes) -> ImageHeader | None:
    """The header of a simulated image, or None for bytes that are no TC-200 image (or
    carry a fail-boot line that does not parse): the bootloader refuses those."""
    head = image[:HEADER_MAX]
    if not head.startswith(FIRMWARE_MAGIC):
        return None
    first, newline, rest = head[len(FIRMWARE_MAGIC) :].partition(b"\n")
    if not newline:
        return None
    percent = 0.0
    if rest.startswith(FAIL_BOOT_FIELD):
        raw, newline, _ = rest[len(FAIL_BOOT_FIELD) :].partition(b"\n")
        if not newline:
            return None
        try:
            percent = float(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return None
    try:
        return ImageHeader(first.decode("ascii"), percent)
    except (UnicodeDecodeError, ValueError):
        return None


class _Staging:
    def __init__(self, size: int, digest: bytes) -> None:
        self.size = size
        self.digest = digest
        self.image = bytearray(size)
        self.received = 0
        self.committed = False


class TC200Firmware:
    """Request bytes in, response bytes out; ``restarting`` asks the bus to re-enumerate it."""

    def __init__(self, serial: str, hardware: SimulatedTC200) -> None:
        self.serial = serial
        self.hardware = hardware
        self.config: dict[str, str] = {}
        self.flags = InfoFlags.NONE
        self.restart_requested = False
        self.boots = 0
        self._staging: _Staging | None = None
        self._fail_next_boot = False
        self._handlers: dict[int, Callable[[bytes], bytes]] = {
            Opcode.GET_INFO: self._info,
            Opcode.GET_STATUS: self._status,
            Opcode.GET_METRICS: self._metrics,
            Opcode.REBOOT: self._reboot,
            Opcode.WRITE_CONFIG: self._write_config,
            Opcode.FIRMWARE_BEGIN: self._firmware_begin,
            Opcode.FIRMWARE_CHUNK: self._firmware_chunk,
            Opcode.FIRMWARE_COMMIT: self._firmware_commit,
            Opcode.FIRMWARE_BOOT: self._firmware_boot,
            Opcode.FIRMWARE_ABORT: self._firmware_abort,
        }

    def fail_next_boot(self) -> None:
        """The next image booted fails its self-test, and the terminal rolls back."""
        self._fail_next_boot = True

    def handle(self, request: bytes) -> bytes | None:
        """The response frame, or None for bytes that are not a frame (a device drops them)."""
        try:
            frame = decode_frame(request)
        except FrameError:
            return None
        handler = self._handlers.get(frame.opcode)
        if handler is None:
            payload = response_payload(Result.UNKNOWN_OPCODE)
        else:
            try:
                payload = handler(frame.payload)
            except MalformedPayload:
                payload = response_payload(Result.BAD_REQUEST)
        return encode_frame(Frame(response_opcode(frame.opcode), frame.sequence, payload))

    def after_restart(self) -> None:
        self.restart_requested = False
        self.boots += 1
        self.hardware.restart()

    # Handlers: each returns a response payload (result byte first).

    def _info(self, body: bytes) -> bytes:
        info = DeviceInfo(self.serial, MODEL, self.hardware.firmware, self.flags)
        return response_payload(Result.OK, encode_info(info))

    def _status(self, body: bytes) -> bytes:
        # The status alone: drawing metrics here would cost every status poll for nothing.
        self.hardware.advance()
        error = self.hardware.fault_error
        if self._staging is not None:
            report = StatusReport(TC200State.UPDATING)
        elif self.hardware.status is DeviceStatus.ERROR and error is not None:
            report = StatusReport(TC200State.ERROR, ((error.code, error.message),))
        else:
            report = StatusReport(TC200State.OK)
        return response_payload(Result.OK, encode_status(report))

    def _metrics(self, body: bytes) -> bytes:
        state = self.hardware.read_state()
        metrics = DeviceMetrics(
            uptime_s=state.uptime_s or 0,
            cpu=state.cpu or 0.0,
            memory=state.memory or 0.0,
            disk=state.disk or 0.0,
        )
        return response_payload(Result.OK, encode_metrics(metrics))

    def _reboot(self, body: bytes) -> bytes:
        self.restart_requested = True
        return response_payload(Result.OK)

    def _write_config(self, body: bytes) -> bytes:
        config = decode_config(body)
        if not config or not set(config) <= CONFIG_KEYS:
            return response_payload(Result.BAD_REQUEST)
        self.config.update(config)
        return response_payload(Result.OK)

    def _firmware_begin(self, body: bytes) -> bytes:
        size, digest = decode_firmware_begin(body)
        if not 0 < size <= MAX_FIRMWARE_SIZE:
            return response_payload(Result.BAD_REQUEST)
        self._staging = _Staging(size, digest)
        return response_payload(Result.OK)

    def _firmware_chunk(self, body: bytes) -> bytes:
        offset, data = decode_firmware_chunk(body)
        staging = self._staging
        if staging is None or staging.committed:
            return response_payload(Result.BAD_STATE)
        if offset + len(data) > staging.size:
            return response_payload(Result.BAD_OFFSET)
        staging.image[offset : offset + len(data)] = data
        staging.received = max(staging.received, offset + len(data))
        return response_payload(Result.OK)

    def _firmware_commit(self, body: bytes) -> bytes:
        staging = self._staging
        if staging is None:
            return response_payload(Result.BAD_STATE)
        if hashlib.sha256(staging.image).digest() != staging.digest:
            self._staging = None
            return response_payload(Result.CHECKSUM_MISMATCH)
        staging.committed = True
        return response_payload(Result.OK)

    def _firmware_boot(self, body: bytes) -> bytes:
        staging = self._staging
        if staging is None or not staging.committed:
            return response_payload(Result.BAD_STATE)
        self._staging = None
        header = parse_image_header(bytes(staging.image[:HEADER_MAX]))
        if header is None or self._fail_next_boot or header.fails_on(self.serial):
            # The bootloader's self-test failed: the old image runs on.
            self._fail_next_boot = False
            self.flags = InfoFlags.ROLLED_BACK
        else:
            self.hardware.firmware = header.version
            self.flags = InfoFlags.NONE
        self.restart_requested = True
        return response_payload(Result.OK)

    def _firmware_abort(self, body: bytes) -> bytes:
        self._staging = None
        return response_payload(Result.OK)
