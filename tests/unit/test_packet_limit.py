"""The packet size limit amqtt is given: MQTT framing followed byte by byte."""

from __future__ import annotations

import asyncio

import pytest
from amqtt.adapters import ReaderAdapter

from broker.packet_limit import LimitedReader, PacketFraming


def _length(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _packet(body_size: int, kind: int = 0x30) -> bytes:
    return bytes([kind]) + _length(body_size) + b"b" * body_size


@pytest.mark.parametrize("split", [1, 2, 7, 1000, 10**6])
def test_packets_within_the_limit_pass_however_the_reads_are_split(split: int) -> None:
    stream = _packet(0, 0xC0) + _packet(126) + _packet(127) + _packet(16_000) + _packet(3)
    framing = PacketFraming(limit=16_003)  # the biggest: 1 + 2 length bytes + 16,000
    chunks = [stream[i : i + split] for i in range(0, len(stream), split)]
    assert [framing.take(chunk) for chunk in chunks] == [None] * len(chunks)


def test_a_packet_one_byte_over_is_refused_at_its_length() -> None:
    framing = PacketFraming(limit=16_002)
    header = _packet(16_000)[:3]
    assert framing.take(header[:2]) is None
    assert framing.take(header[2:]) == "a packet of 16003 bytes, over the limit of 16002"


def test_the_limit_counts_the_whole_packet_not_the_body() -> None:
    assert PacketFraming(limit=100).take(_packet(98)) is None  # 1 + 1 + 98
    assert PacketFraming(limit=100).take(_packet(99)) is not None


def test_a_fifth_length_byte_is_malformed() -> None:
    assert (
        PacketFraming(limit=10**9).take(b"\x30\xff\xff\xff\xff") == "a malformed remaining length"
    )


class _Bytes(ReaderAdapter):
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.asked: list[int] = []

    async def read(self, n: int = -1) -> bytes:
        self.asked.append(n)
        out, self.data = self.data[:n], self.data[n:]
        return out

    def feed_eof(self) -> None:
        pass


def test_the_reader_ends_the_stream_before_the_body_of_an_oversize_packet() -> None:
    inner = _Bytes(_packet(10) + _packet(1_000_000))
    reader = LimitedReader(inner, limit=1_000, peer="127.0.0.1:5")

    async def read_all() -> list[bytes]:
        # As amqtt reads: the header a byte at a time, then the body in one read.
        got = [await reader.read(1), await reader.read(1), await reader.read(10)]
        got += [await reader.read(1) for _ in range(4)]
        got.append(await reader.read(1_000_000))
        return got

    got = asyncio.run(read_all())
    assert got[:3] == [b"\x30", b"\x0a", b"b" * 10]
    assert got[3:6] == [b"\x30", b"\xc0", b"\x84"]  # 1,000,000 takes three length bytes
    assert got[6:] == [b"", b""]  # refused at its last length byte; the body never read
    assert reader.refused is not None and "over the limit of 1000" in reader.refused
    assert 1_000_000 not in inner.asked
