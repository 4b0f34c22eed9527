"""TC-200 wire frames: pure encode and decode, every malformed frame a ``FrameError``.

One frame, both directions (agent/PROTOCOL.md has the full description)::

    offset  size  field
    0       1     START_BYTE (0xA5)
    1       2     payload length N, little-endian, at most MAX_PAYLOAD
    3       1     opcode (a response sets RESPONSE_FLAG on the request's opcode)
    4       1     sequence number, echoed by the response, wraps at 256
    5       N     payload
    5+N     2     CRC-16/CCITT-FALSE of bytes 1..5+N-1, little-endian

The CRC covers the length, so a corrupted length is caught even when the corrupted
value still fits the bytes received.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass

from agent.errors import AgentError

START_BYTE = 0xA5
RESPONSE_FLAG = 0x80
HEADER = struct.Struct("<BHBB")  # start, length, opcode, sequence
CRC = struct.Struct("<H")
HEADER_SIZE = HEADER.size
CRC_SIZE = CRC.size
MAX_PAYLOAD = 1024
MAX_FRAME = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE
SEQUENCE_MODULO = 256
CRC_INIT = 0xFFFF


class FrameError(AgentError):
    """Bytes that are not one well-formed TC-200 frame; the message says what is wrong."""


class ShortFrame(FrameError):
    pass


class BadStartByte(FrameError):
    pass


class OversizeLength(FrameError):
    pass


class LengthMismatch(FrameError):
    pass


class BadCrc(FrameError):
    pass


class WrongSequence(FrameError):
    pass


class UnexpectedOpcode(FrameError):
    pass


@dataclass(frozen=True, slots=True)
class Frame:
    opcode: int
    sequence: int
    payload: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.opcode <= 0xFF:
            raise ValueError(f"opcode must fit one byte, not {self.opcode!r}")
        if not 0 <= self.sequence < SEQUENCE_MODULO:
            raise ValueError(f"sequence must be 0..255, not {self.sequence!r}")
        if len(self.payload) > MAX_PAYLOAD:
            raise ValueError(f"payload of {len(self.payload)} bytes exceeds {MAX_PAYLOAD}")


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF), what binascii.crc_hqx computes."""
    return binascii.crc_hqx(data, CRC_INIT)


def encode_frame(frame: Frame) -> bytes:
    body = HEADER.pack(START_BYTE, len(frame.payload), frame.opcode, frame.sequence)[1:]
    body += frame.payload
    return bytes([START_BYTE]) + body + CRC.pack(crc16(body))


def decode_frame(data: bytes) -> Frame:
    """Exactly one frame from ``data``, or the FrameError that says why not."""
    if len(data) < HEADER_SIZE + CRC_SIZE:
        raise ShortFrame(
            f"frame of {len(data)} bytes is shorter than the {HEADER_SIZE + CRC_SIZE}-byte minimum"
        )
    start, length, opcode, sequence = HEADER.unpack_from(data)
    if start != START_BYTE:
        raise BadStartByte(f"frame starts with 0x{start:02X}, not 0x{START_BYTE:02X}")
    if length > MAX_PAYLOAD:
        raise OversizeLength(f"frame claims {length} payload bytes; the limit is {MAX_PAYLOAD}")
    expected = HEADER_SIZE + length + CRC_SIZE
    if len(data) != expected:
        raise LengthMismatch(
            f"frame claims {length} payload bytes ({expected} in all) but {len(data)} arrived"
        )
    (received_crc,) = CRC.unpack_from(data, expected - CRC_SIZE)
    computed = crc16(bytes(data[1 : expected - CRC_SIZE]))
    if received_crc != computed:
        raise BadCrc(f"frame CRC 0x{received_crc:04X} does not match 0x{computed:04X}")
    return Frame(opcode, sequence, bytes(data[HEADER_SIZE : HEADER_SIZE + length]))


def response_opcode(request_opcode: int) -> int:
    return request_opcode | RESPONSE_FLAG


def check_response(frame: Frame, request_opcode: int, sequence: int) -> Frame:
    """``frame`` if it answers the request (opcode, sequence); else the FrameError saying why."""
    if frame.sequence != sequence:
        raise WrongSequence(f"response has sequence {frame.sequence}, the request had {sequence}")
    if frame.opcode != response_opcode(request_opcode):
        raise UnexpectedOpcode(
            f"response opcode 0x{frame.opcode:02X} does not answer request 0x{request_opcode:02X}"
        )
    return frame


def next_sequence(sequence: int) -> int:
    return (sequence + 1) % SEQUENCE_MODULO
