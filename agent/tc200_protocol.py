"""TC-200 request/response payloads: opcodes, result codes and pure codecs (no I/O).

Both the USB driver and the simulated terminal speak through these functions, so
what one encodes the other decodes by construction; tests/unit/test_usb_wire_vectors.py
checks both sides against the bytes agent/PROTOCOL.md gives instead. A payload that does not decode
raises ``MalformedPayload``; agent/PROTOCOL.md documents every layout.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from agent.frame import MAX_PAYLOAD, FrameError

SHA256_SIZE = 32
FIRMWARE_CHUNK_HEADER = struct.Struct("<I")  # offset
FIRMWARE_BEGIN = struct.Struct(f"<I{SHA256_SIZE}s")  # size, SHA-256
METRICS = struct.Struct("<IHHH")  # uptime s, cpu, memory, disk in tenths of a percent
FIRMWARE_CHUNK_MAX = MAX_PAYLOAD - FIRMWARE_CHUNK_HEADER.size
TENTHS = 10


class Opcode(IntEnum):
    GET_INFO = 0x01
    GET_STATUS = 0x02
    GET_METRICS = 0x03
    REBOOT = 0x04
    WRITE_CONFIG = 0x05
    FIRMWARE_BEGIN = 0x10
    FIRMWARE_CHUNK = 0x11
    FIRMWARE_COMMIT = 0x12
    FIRMWARE_BOOT = 0x13
    FIRMWARE_ABORT = 0x14


class Result(IntEnum):
    """The first byte of every response payload."""

    OK = 0x00
    BAD_REQUEST = 0x01
    BUSY = 0x02
    BAD_STATE = 0x03
    CHECKSUM_MISMATCH = 0x04
    BAD_OFFSET = 0x05
    UNKNOWN_OPCODE = 0x06
    INTERNAL_ERROR = 0x07


class TC200State(IntEnum):
    """The state byte of GET_STATUS: the terminal's own word, before it becomes a DeviceStatus."""

    OK = 0
    ERROR = 1
    BUSY = 2
    UPDATING = 3


class InfoFlags(IntFlag):
    NONE = 0
    # The last firmware image failed to boot and the terminal went back to the old one.
    ROLLED_BACK = 0x01


class MalformedPayload(FrameError):
    """A well-framed payload whose contents do not decode."""


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    serial: str
    model: str
    firmware: str
    flags: InfoFlags = InfoFlags.NONE


@dataclass(frozen=True, slots=True)
class StatusReport:
    state: TC200State
    errors: tuple[tuple[str, str], ...] = ()  # (code, message)


@dataclass(frozen=True, slots=True)
class DeviceMetrics:
    uptime_s: int
    cpu: float
    memory: float
    disk: float


class _Reader:
    """Walks a payload; every short read is a MalformedPayload naming the field."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.offset = 0
        self.what = what

    def take(self, size: int, field: str) -> bytes:
        if self.offset + size > len(self.data):
            raise MalformedPayload(f"{self.what}: payload ends inside {field}")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def byte(self, field: str) -> int:
        return self.take(1, field)[0]

    def text(self, field: str) -> str:
        raw = self.take(self.byte(field), field)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedPayload(f"{self.what}: {field} is not UTF-8") from exc

    def end(self) -> None:
        if self.offset != len(self.data):
            raise MalformedPayload(
                f"{self.what}: {len(self.data) - self.offset} unexpected trailing bytes"
            )


def _text(value: str, field: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 255:
        raise ValueError(f"{field} is longer than 255 bytes")
    return bytes([len(raw)]) + raw


def response_payload(result: Result, body: bytes = b"") -> bytes:
    return bytes([result]) + body


def split_response(payload: bytes) -> tuple[Result, bytes]:
    if not payload:
        raise MalformedPayload("response has no result byte")
    try:
        return Result(payload[0]), payload[1:]
    except ValueError:
        raise MalformedPayload(f"unknown result code 0x{payload[0]:02X}") from None


def encode_info(info: DeviceInfo) -> bytes:
    return (
        _text(info.serial, "serial")
        + _text(info.model, "model")
        + _text(info.firmware, "firmware")
        + bytes([info.flags])
    )


def decode_info(body: bytes) -> DeviceInfo:
    reader = _Reader(body, "device info")
    info = DeviceInfo(
        serial=reader.text("serial"),
        model=reader.text("model"),
        firmware=reader.text("firmware"),
        flags=InfoFlags(reader.byte("flags") & InfoFlags.ROLLED_BACK),
    )
    reader.end()
    return info


def encode_status(status: StatusReport) -> bytes:
    body = bytes([status.state, len(status.errors)])
    for code, message in status.errors:
        body += _text(code, "error code") + _text(message[:255], "error message")
    return body


def decode_status(body: bytes) -> StatusReport:
    reader = _Reader(body, "status")
    raw_state = reader.byte("state")
    try:
        state = TC200State(raw_state)
    except ValueError:
        raise MalformedPayload(f"status: unknown terminal state {raw_state}") from None
    errors = tuple(
        (reader.text("error code"), reader.text("error message"))
        for _ in range(reader.byte("error count"))
    )
    reader.end()
    return StatusReport(state, errors)


def encode_metrics(metrics: DeviceMetrics) -> bytes:
    return METRICS.pack(
        metrics.uptime_s,
        round(metrics.cpu * TENTHS),
        round(metrics.memory * TENTHS),
        round(metrics.disk * TENTHS),
    )


def decode_metrics(body: bytes) -> DeviceMetrics:
    if len(body) != METRICS.size:
        raise MalformedPayload(f"metrics: {len(body)} bytes, expected {METRICS.size}")
    uptime, cpu, memory, disk = METRICS.unpack(body)
    values = [cpu / TENTHS, memory / TENTHS, disk / TENTHS]
    if any(value > 100 for value in values):
        raise MalformedPayload(f"metrics: a percentage above 100 in {values}")
    return DeviceMetrics(uptime, *values)


def encode_config(config: Mapping[str, str]) -> bytes:
    if len(config) > 255:
        raise ValueError("at most 255 configuration keys per write")
    body = bytes([len(config)])
    for key, value in config.items():
        body += _text(key, "config key") + _text(value, "config value")
    if len(body) > MAX_PAYLOAD:
        raise ValueError(f"configuration of {len(body)} bytes exceeds one frame")
    return body


def decode_config(body: bytes) -> dict[str, str]:
    reader = _Reader(body, "config")
    count = reader.byte("key count")
    config = {reader.text("config key"): reader.text("config value") for _ in range(count)}
    reader.end()
    return config


def encode_firmware_begin(size: int, sha256: bytes) -> bytes:
    if len(sha256) != SHA256_SIZE:
        raise ValueError("a SHA-256 digest is 32 bytes")
    return FIRMWARE_BEGIN.pack(size, sha256)


def decode_firmware_begin(body: bytes) -> tuple[int, bytes]:
    if len(body) != FIRMWARE_BEGIN.size:
        raise MalformedPayload(f"firmware begin: {len(body)} bytes, expected {FIRMWARE_BEGIN.size}")
    size, digest = FIRMWARE_BEGIN.unpack(body)
    return size, digest


def encode_firmware_chunk(offset: int, data: bytes) -> bytes:
    if len(data) > FIRMWARE_CHUNK_MAX:
        raise ValueError(f"a firmware chunk holds at most {FIRMWARE_CHUNK_MAX} bytes")
    return FIRMWARE_CHUNK_HEADER.pack(offset) + data


def decode_firmware_chunk(body: bytes) -> tuple[int, bytes]:
    if len(body) < FIRMWARE_CHUNK_HEADER.size:
        raise MalformedPayload("firmware chunk: payload ends inside the offset")
    (offset,) = FIRMWARE_CHUNK_HEADER.unpack_from(body)
    return offset, body[FIRMWARE_CHUNK_HEADER.size :]
