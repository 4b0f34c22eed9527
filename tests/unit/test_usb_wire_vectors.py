"""The TC-200 wire bytes as agent/PROTOCOL.md writes them, against the driver and the simulator.

The other driver tests run the driver over the simulated terminal, and both sides build
their frames with the same codec (agent/frame.py, agent/tc200_protocol.py): a mistake
made the same way on both sides would pass them. Here every frame is written by hand
from the document (start byte, little-endian length, opcode, sequence, payload) and its
CRC-16/CCITT-FALSE computed by the bitwise definition below, checked against the
catalogue's check value; none of it comes from the codec. The driver must write exactly
these requests and read these responses; the simulated terminal must answer these
requests with frames that parse by the same hand-written rules.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable

import pytest

from agent.errors import TerminalBusy, TerminalProtocolError, TerminalRefused
from agent.sim.device import SimulatedTC200
from agent.sim.firmware import TC200Firmware
from agent.tc200_protocol import (
    DeviceInfo,
    DeviceMetrics,
    InfoFlags,
    Opcode,
    Result,
    StatusReport,
    TC200State,
)
from agent.usb_driver import ENDPOINT_IN, ENDPOINT_OUT, TC200Driver

# PROTOCOL.md, "Frames".
START = 0xA5
RESPONSE = 0x80


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE by its definition: poly 0x1021, init 0xFFFF, no reflection, no xor."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def test_the_reference_crc_has_the_catalogue_check_value() -> None:
    # The check value every CRC catalogue gives for CRC-16/CCITT-FALSE over "123456789".
    assert crc16_ccitt_false(b"123456789") == 0x29B1


def hx(text: str) -> bytes:
    """Bytes written as hex pairs, spaces allowed, so vectors read like a bus trace."""
    return bytes.fromhex(text)


def s(text: str) -> bytes:
    """A protocol string: one length byte, then UTF-8."""
    raw = text.encode()
    return bytes([len(raw)]) + raw


def framed(opcode: int, sequence: int, payload: bytes = b"") -> bytes:
    """One frame by PROTOCOL.md: A5, length LE, opcode, sequence, payload, CRC LE of 1..4+N."""
    body = len(payload).to_bytes(2, "little") + bytes([opcode, sequence]) + payload
    return bytes([START]) + body + crc16_ccitt_false(body).to_bytes(2, "little")


def parse(frame: bytes) -> tuple[int, int, bytes]:
    """(opcode, sequence, payload) of one frame, checked by the document's rules."""
    assert len(frame) >= 7
    assert frame[0] == START
    length = int.from_bytes(frame[1:3], "little")
    assert length <= 1024
    assert len(frame) == 5 + length + 2
    assert int.from_bytes(frame[-2:], "little") == crc16_ccitt_false(frame[1:-2])
    return frame[3], frame[4], frame[5:-2]


def test_a_frame_with_no_payload_byte_for_byte() -> None:
    # GET_INFO, sequence 1: the bytes a bus analyser would show, CRC included.
    crc = crc16_ccitt_false(hx("00 00 01 01"))
    assert framed(0x01, 1) == hx("A5 00 00 01 01") + bytes([crc & 0xFF, crc >> 8])


class ScriptedDevice:
    """A pyusb device that records what the driver writes and answers from a script."""

    def __init__(self, answers: Iterable[bytes] = ()) -> None:
        self.written: list[bytes] = []
        self.answers: deque[bytes] = deque(answers)

    def write(self, endpoint: int, data: bytes, timeout: int) -> int:
        assert endpoint == ENDPOINT_OUT
        self.written.append(bytes(data))
        return len(data)

    def read(self, endpoint: int, size: int, timeout: int) -> bytes:
        assert endpoint == ENDPOINT_IN
        assert self.answers, "the driver read more answers than the script holds"
        # A bulk read delivers at most the buffer's size, as on a real bus.
        return self.answers.popleft()[:size]


def driver_answered_by(*answers: bytes) -> tuple[TC200Driver, ScriptedDevice]:
    device = ScriptedDevice(answers)
    return TC200Driver(device), device


# PROTOCOL.md, "Operations" and the result table: the numbers as the document gives them.
DOCUMENTED_OPCODES = {
    "GET_INFO": 0x01,
    "GET_STATUS": 0x02,
    "GET_METRICS": 0x03,
    "REBOOT": 0x04,
    "WRITE_CONFIG": 0x05,
    "FIRMWARE_BEGIN": 0x10,
    "FIRMWARE_CHUNK": 0x11,
    "FIRMWARE_COMMIT": 0x12,
    "FIRMWARE_BOOT": 0x13,
    "FIRMWARE_ABORT": 0x14,
}
DOCUMENTED_RESULTS = {
    "OK": 0x00,
    "BAD_REQUEST": 0x01,
    "BUSY": 0x02,
    "BAD_STATE": 0x03,
    "CHECKSUM_MISMATCH": 0x04,
    "BAD_OFFSET": 0x05,
    "UNKNOWN_OPCODE": 0x06,
    "INTERNAL_ERROR": 0x07,
}
DOCUMENTED_STATES = {"OK": 0, "ERROR": 1, "BUSY": 2, "UPDATING": 3}


def test_opcodes_results_and_states_are_the_documented_numbers() -> None:
    assert {op.name: op.value for op in Opcode} == DOCUMENTED_OPCODES
    assert {result.name: result.value for result in Result} == DOCUMENTED_RESULTS
    assert {state.name: state.value for state in TC200State} == DOCUMENTED_STATES


# Driver: each operation's request bytes, and what it reads from the response bytes.

INFO_ANSWER = hx("00") + s("TC200-000123") + s("TC-200") + s("2.4.1") + hx("01")


def test_get_info() -> None:
    driver, device = driver_answered_by(framed(0x81, 1, INFO_ANSWER))
    assert driver.device_info() == DeviceInfo(
        "TC200-000123", "TC-200", "2.4.1", InfoFlags.ROLLED_BACK
    )
    assert device.written == [framed(0x01, 1)]


def test_get_status_with_two_errors() -> None:
    answer = (
        hx("00 01 02")  # OK, state error, two errors
        + s("E101")
        + s("card reader not responding")
        + s("E204")
        + s("receipt printer out of paper")
    )
    driver, device = driver_answered_by(framed(0x82, 1, answer))
    assert driver.status() == StatusReport(
        TC200State.ERROR,
        (("E101", "card reader not responding"), ("E204", "receipt printer out of paper")),
    )
    assert device.written == [framed(0x02, 1)]


def test_get_status_ok_without_errors() -> None:
    driver, _ = driver_answered_by(framed(0x82, 1, hx("00 00 00")))
    assert driver.status() == StatusReport(TC200State.OK, ())


def test_get_metrics_in_tenths_of_a_percent() -> None:
    # uptime 86,400 s (u32 LE), cpu 12.5 %, memory 50.0 %, disk 100.0 % (u16 LE tenths).
    answer = hx("00" + "80 51 01 00" + "7D 00" + "F4 01" + "E8 03")
    driver, device = driver_answered_by(framed(0x83, 1, answer))
    assert driver.metrics() == DeviceMetrics(86_400, 12.5, 50.0, 100.0)
    assert device.written == [framed(0x03, 1)]


def test_reboot() -> None:
    driver, device = driver_answered_by(framed(0x84, 1, hx("00")))
    driver.reboot()
    assert device.written == [framed(0x04, 1)]


def test_write_config_keys_and_values_as_strings() -> None:
    driver, device = driver_answered_by(framed(0x85, 1, hx("00")))
    driver.write_config({"beep_volume": "30", "timezone": "Europe/London"})
    request = hx("02") + s("beep_volume") + s("30") + s("timezone") + s("Europe/London")
    assert device.written == [framed(0x05, 1, request)]


def test_firmware_transfer_begin_chunks_at_offsets_commit() -> None:
    image = b"TC200FW:2.5.0\n" + bytes(range(10))  # 24 bytes, sent in chunks of 16
    digest = hashlib.sha256(image).digest()
    ok = hx("00")
    driver, device = driver_answered_by(
        framed(0x90, 1, ok), framed(0x91, 2, ok), framed(0x91, 3, ok), framed(0x92, 4, ok)
    )
    driver.transfer_firmware(image, chunk_size=16)
    assert (
        device.written
        == [
            framed(0x10, 1, hx("18 00 00 00") + digest),  # size 24 u32 LE, SHA-256
            framed(0x11, 2, hx("00 00 00 00") + image[:16]),  # offset 0
            framed(0x11, 3, hx("10 00 00 00") + image[16:]),  # offset 16
            framed(0x12, 4),
        ]
    )


def test_firmware_boot_and_abort() -> None:
    driver, device = driver_answered_by(framed(0x93, 1, hx("00")), framed(0x94, 2, hx("00")))
    driver.boot_firmware()
    driver.abort_firmware()
    assert device.written == [framed(0x13, 1), framed(0x14, 2)]


def test_the_sequence_wraps_from_255_to_0() -> None:
    answers = [framed(0x84, n % 256, hx("00")) for n in range(1, 258)]
    driver, device = driver_answered_by(*answers)
    for _ in range(257):
        driver.reboot()
    assert [frame[4] for frame in device.written[253:]] == [254, 255, 0, 1]


@pytest.mark.parametrize(
    ("result", "refusal"),
    [
        (0x01, "BAD_REQUEST"),
        (0x03, "BAD_STATE"),
        (0x04, "CHECKSUM_MISMATCH"),
        (0x05, "BAD_OFFSET"),
        (0x06, "UNKNOWN_OPCODE"),
        (0x07, "INTERNAL_ERROR"),
    ],
)
def test_a_refusal_names_its_result(result: int, refusal: str) -> None:
    driver, _ = driver_answered_by(framed(0x84, 1, bytes([result])))
    with pytest.raises(TerminalRefused, match=refusal):
        driver.reboot()


def test_busy_is_its_own_fault() -> None:
    driver, _ = driver_answered_by(framed(0x84, 1, hx("02")))
    with pytest.raises(TerminalBusy):
        driver.reboot()


def test_a_late_answer_to_an_earlier_sequence_is_skipped() -> None:
    late = framed(0x82, 0, hx("00 00 00"))  # answers a request before this one
    driver, _ = driver_answered_by(late, framed(0x84, 1, hx("00")))
    driver.reboot()
    assert driver.stale_frames == 1


def corrupt_crc(frame: bytes) -> bytes:
    return frame[:-2] + bytes([frame[-2] ^ 0x01, frame[-1]])


@pytest.mark.parametrize(
    ("answer", "complaint"),
    [
        (corrupt_crc(framed(0x84, 1, hx("00"))), "CRC"),
        (hx("5A") + framed(0x84, 1, hx("00"))[1:], "starts with 0x5A"),
        (framed(0x84, 1, hx("00"))[:-1], "shorter|arrived"),
        (framed(0x84, 1, hx("00")) + hx("00"), "arrived"),
        (framed(0x04, 1, hx("00")), "does not answer"),  # bit 7 not set: not a response
        (framed(0x83, 1, hx("00")), "does not answer"),  # another request's response
        (framed(0x84, 1), "no result byte"),
        (framed(0x84, 1, hx("09")), "unknown result code 0x09"),
    ],
)
def test_a_reboot_answer_the_document_refuses(answer: bytes, complaint: str) -> None:
    # REBOOT is not idempotent, so the driver does not ask again: one answer is read.
    driver, _ = driver_answered_by(answer)
    with pytest.raises(TerminalProtocolError, match=complaint):
        driver.reboot()


def test_a_length_over_1024_is_refused() -> None:
    # The driver reads at most one largest frame (1031 bytes): the length field says why.
    body = (1025).to_bytes(2, "little") + hx("84 01") + bytes(1025)
    answer = bytes([START]) + body + crc16_ccitt_false(body).to_bytes(2, "little")
    driver, _ = driver_answered_by(answer)
    with pytest.raises(TerminalProtocolError, match="limit is 1024"):
        driver.reboot()


# The simulated terminal, the other side: hand-written requests in, documented frames out.


def terminal() -> TC200Firmware:
    # A stopped clock: the metrics it answers are the ones read_state() reads after.
    return TC200Firmware("TC200-000123", SimulatedTC200("TC200-000123", clock=lambda: 1000.0))


def answer_of(firmware: TC200Firmware, request: bytes) -> tuple[int, int, bytes]:
    response = firmware.handle(request)
    assert response is not None, "the terminal dropped a well-formed request"
    return parse(response)


def test_the_terminal_answers_get_info_as_documented() -> None:
    firmware = terminal()
    opcode, sequence, payload = answer_of(firmware, framed(0x01, 7))
    assert (opcode, sequence) == (0x81, 7)
    assert payload[0] == 0x00
    firmware_version = firmware.hardware.firmware
    assert payload[1:] == s("TC200-000123") + s("TC-200") + s(firmware_version) + hx("00")


def test_the_terminal_answers_get_metrics_in_tenths() -> None:
    firmware = terminal()
    opcode, sequence, payload = answer_of(firmware, framed(0x03, 200))
    assert (opcode, sequence, payload[0], len(payload)) == (0x83, 200, 0x00, 1 + 4 + 2 * 3)
    state = firmware.hardware.read_state()
    uptime = int.from_bytes(payload[1:5], "little")
    cpu, memory, disk = (int.from_bytes(payload[n : n + 2], "little") for n in (5, 7, 9))
    assert uptime == state.uptime_s
    assert (cpu, memory, disk) == (
        round((state.cpu or 0) * 10),
        round((state.memory or 0) * 10),
        round((state.disk or 0) * 10),
    )


def test_the_terminal_takes_a_hand_written_config_write() -> None:
    firmware = terminal()
    request = hx("02") + s("beep_volume") + s("30") + s("timezone") + s("Europe/London")
    assert answer_of(firmware, framed(0x05, 3, request)) == (0x85, 3, hx("00"))
    assert firmware.config == {"beep_volume": "30", "timezone": "Europe/London"}
    unknown = hx("01") + s("volume") + s("30")
    assert answer_of(firmware, framed(0x05, 4, unknown)) == (0x85, 4, hx("01"))


def test_the_terminal_stages_a_hand_framed_image() -> None:
    firmware = terminal()
    image = b"TC200FW:2.5.0\n" + bytes(range(10))
    digest = hashlib.sha256(image).digest()
    assert answer_of(firmware, framed(0x10, 1, hx("18 00 00 00") + digest))[2] == hx("00")
    assert answer_of(firmware, framed(0x11, 2, hx("00 00 00 00") + image[:16]))[2] == hx("00")
    assert answer_of(firmware, framed(0x11, 3, hx("10 00 00 00") + image[16:]))[2] == hx("00")
    assert answer_of(firmware, framed(0x12, 4)) == (0x92, 4, hx("00"))


def test_the_terminal_answers_an_unknown_opcode_and_drops_a_bad_crc() -> None:
    firmware = terminal()
    assert answer_of(firmware, framed(0x7F, 9)) == (0xFF, 9, hx("06"))
    assert firmware.handle(corrupt_crc(framed(0x01, 10))) is None
