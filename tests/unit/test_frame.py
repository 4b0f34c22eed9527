"""TC-200 frames: round trips, and every malformed frame refused with the reason."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.frame import (
    CRC_SIZE,
    HEADER_SIZE,
    MAX_PAYLOAD,
    START_BYTE,
    BadCrc,
    BadStartByte,
    Frame,
    FrameError,
    LengthMismatch,
    OversizeLength,
    ShortFrame,
    UnexpectedOpcode,
    WrongSequence,
    check_response,
    crc16,
    decode_frame,
    encode_frame,
    next_sequence,
    response_opcode,
)
from agent.tc200_protocol import (
    DeviceInfo,
    DeviceMetrics,
    InfoFlags,
    MalformedPayload,
    StatusReport,
    TC200State,
    decode_config,
    decode_info,
    decode_metrics,
    decode_status,
    encode_config,
    encode_info,
    encode_metrics,
    encode_status,
)

frames = st.builds(
    Frame,
    opcode=st.integers(0, 255),
    sequence=st.integers(0, 255),
    payload=st.binary(max_size=MAX_PAYLOAD),
)


def test_known_encoding() -> None:
    raw = encode_frame(Frame(0x02, 7, b"\x01\x02"))
    assert raw[:5] == bytes([START_BYTE, 2, 0, 0x02, 7])
    assert raw[5:7] == b"\x01\x02"
    assert int.from_bytes(raw[7:], "little") == crc16(raw[1:7])
    assert crc16(b"123456789") == 0x29B1  # the CRC-16/CCITT-FALSE check value


@given(frames)
def test_round_trip(frame: Frame) -> None:
    assert decode_frame(encode_frame(frame)) == frame


@given(frames, st.data())
def test_any_single_bit_flip_is_refused(frame: Frame, data: st.DataObject) -> None:
    raw = bytearray(encode_frame(frame))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(FrameError):
        decode_frame(bytes(raw))


@given(st.binary(max_size=64))
def test_random_bytes_never_crash_the_decoder(raw: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode_frame(raw)


def test_short_frame() -> None:
    with pytest.raises(ShortFrame):
        decode_frame(encode_frame(Frame(1, 1))[: HEADER_SIZE + CRC_SIZE - 1])
    with pytest.raises(ShortFrame):
        decode_frame(b"")


def test_truncated_payload_and_trailing_bytes() -> None:
    raw = encode_frame(Frame(1, 1, b"abcdef"))
    with pytest.raises(LengthMismatch, match="6 payload bytes"):
        decode_frame(raw[:-1])
    with pytest.raises(LengthMismatch):
        decode_frame(raw + b"\x00")


def test_bad_start_byte() -> None:
    raw = bytearray(encode_frame(Frame(1, 1)))
    raw[0] = 0x5A
    with pytest.raises(BadStartByte, match="0x5A"):
        decode_frame(bytes(raw))


def test_bad_crc() -> None:
    raw = bytearray(encode_frame(Frame(1, 1, b"x")))
    raw[-1] ^= 0xFF
    with pytest.raises(BadCrc):
        decode_frame(bytes(raw))


def test_oversize_length() -> None:
    raw = bytearray(encode_frame(Frame(1, 1)))
    raw[1:3] = (MAX_PAYLOAD + 1).to_bytes(2, "little")
    with pytest.raises(OversizeLength, match=str(MAX_PAYLOAD)):
        decode_frame(bytes(raw))
    with pytest.raises(ValueError):
        Frame(1, 1, b"x" * (MAX_PAYLOAD + 1))


def test_wrong_sequence_and_opcode_in_a_response() -> None:
    answer = Frame(response_opcode(0x02), 9)
    assert check_response(answer, 0x02, 9) is answer
    with pytest.raises(WrongSequence, match="sequence 9"):
        check_response(answer, 0x02, 10)
    with pytest.raises(UnexpectedOpcode):
        check_response(answer, 0x03, 9)
    with pytest.raises(UnexpectedOpcode):
        check_response(Frame(0x02, 9), 0x02, 9)  # a request is not an answer


def test_sequence_wraps() -> None:
    assert next_sequence(255) == 0 and next_sequence(0) == 1


def test_payload_codecs_round_trip() -> None:
    info = DeviceInfo("TC200-1", "TC-200", "2.5.0", InfoFlags.ROLLED_BACK)
    assert decode_info(encode_info(info)) == info
    status = StatusReport(TC200State.ERROR, (("E101", "card reader not responding"),))
    assert decode_status(encode_status(status)) == status
    metrics = DeviceMetrics(12345, 12.5, 60.1, 33.3)
    assert decode_metrics(encode_metrics(metrics)) == metrics
    config = {"beep_volume": "40", "timezone": "Europe/Berlin"}
    assert decode_config(encode_config(config)) == config


@pytest.mark.parametrize(
    ("decode", "body"),
    [
        (decode_info, b"\x05ab"),
        (decode_status, b"\x09\x00"),
        (decode_status, b"\x01\x01\x04E1"),
        (decode_metrics, b"\x00" * 9),
        (decode_metrics, b"\x00\x00\x00\x00\xff\xff\x00\x00\x00\x00"),
        (decode_config, b"\x01\x01k"),
        (decode_info, encode_info(DeviceInfo("a", "b", "c")) + b"!"),
    ],
)
def test_malformed_payloads_are_refused(decode: object, body: bytes) -> None:
    assert callable(decode)
    with pytest.raises(MalformedPayload):
        decode(body)
