"""ingest.mqtt.PublishTap: PUBLISH packets to the handler, every other packet to paho, in order.

The socket is a real socketpair; the broker's byte stream is cut at arbitrary points,
as TCP may deliver it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.mqtt import PublishTap, packet_bounds
from tests.waiting import wait_until_async


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish(
    topic: str, payload: bytes, qos: int, mid: int = 0, dup: bool = False, retain: bool = False
) -> bytes:
    body = struct.pack("!H", len(topic.encode())) + topic.encode()
    if qos:
        body += struct.pack("!H", mid)
    body += payload
    header = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    return bytes([header]) + remaining_length(len(body)) + body


PINGRESP = b"\xd0\x00"
SUBACK = b"\x90\x03\x00\x01\x01"

STREAM = [
    ("tap", publish("tms/v1/A/telemetry", b"{}", 1, 7), ("tms/v1/A/telemetry", b"{}", 7, 1, False)),
    ("paho", SUBACK, None),
    ("tap", publish("tms/v1/B/status", b"", 0, retain=True), ("tms/v1/B/status", b"", 0, 0, True)),
    ("paho", publish("tms/v1/C/telemetry", b"q2", 2, 9), None),  # QoS 2: paho's flow
    ("tap", publish("t", b"x" * 20_000, 1, 65535, dup=True), ("t", b"x" * 20_000, 65535, 1, False)),
    ("paho", PINGRESP, None),
]  # fmt: skip


def run_tap(cuts: list[int]) -> tuple[list[tuple[Any, ...]], bytes, Any]:
    wire = b"".join(frame for _, frame, _ in STREAM)
    broker, ours = socket.socketpair()
    ours.setblocking(False)
    received: list[tuple[Any, ...]] = []
    paho = SimpleNamespace(_last_bytes_received=0.0)
    tap = PublishTap(ours, paho, lambda *message: received.append(message))
    for_paho = bytearray()
    points = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    try:
        for start, end in zip(points, points[1:], strict=False):
            broker.sendall(wire[start:end])
            while True:  # what aiomqtt's read callback does: read while anything is there
                try:
                    for_paho += tap.recv(1)
                except BlockingIOError:
                    break
                while tap.pending():
                    for_paho += tap.recv(1000)
    finally:
        broker.close()
        ours.close()
    return received, bytes(for_paho), paho


@given(cuts=st.lists(st.integers(min_value=0), max_size=12))
def test_publishes_reach_the_handler_and_the_rest_reaches_paho_in_order(cuts: list[int]) -> None:
    received, for_paho, paho = run_tap(cuts)
    assert received == [message for kind, _, message in STREAM if kind == "tap"]
    assert for_paho == b"".join(frame for kind, frame, _ in STREAM if kind == "paho")
    assert paho._last_bytes_received > 0  # paho's keepalive saw the traffic


def test_a_closed_connection_reads_as_end_of_stream() -> None:
    broker, ours = socket.socketpair()
    tap = PublishTap(ours, SimpleNamespace(_last_bytes_received=0.0), lambda *m: None)
    broker.sendall(publish("t", b"p", 1, 1)[:3])  # half a packet, then the broker goes
    broker.close()
    with pytest.raises(BlockingIOError):  # the half packet: nothing for paho, loop's turn
        tap.recv(1)
    assert tap.recv(1) == b""
    ours.close()


def test_one_chunk_per_call_gives_the_event_loop_back() -> None:
    broker, ours = socket.socketpair()
    received: list[tuple[Any, ...]] = []
    tap = PublishTap(ours, SimpleNamespace(_last_bytes_received=0.0), lambda *m: received.append(m))
    tap.CHUNK = 64
    broker.sendall(b"".join(publish("t", b"p" * 20, 1, mid) for mid in range(1, 11)))
    with pytest.raises(BlockingIOError):
        tap.recv(1)
    assert 0 < len(received) < 10  # the rest waits in the socket for the next call
    broker.close()
    ours.close()


def test_packet_bounds() -> None:
    assert packet_bounds(PINGRESP, 0) == (2, 2)
    assert packet_bounds(SUBACK[:3], 0) is None
    assert packet_bounds(b"\x30\x80", 0) is None  # the length goes on in the next read
    assert packet_bounds(b"\x30\x80\x01" + b"z" * 128, 0) == (3, 131)
    with pytest.raises(ValueError, match="four bytes"):
        packet_bounds(b"\x30\xff\xff\xff\xff\x01", 0)


def test_reading_pauses_while_the_consumer_holds_enough_and_resumes_on_request() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        broker, ours = socket.socketpair()
        ours.setblocking(False)
        received: list[tuple[Any, ...]] = []
        holding = True
        calls = 0
        tap = PublishTap(
            ours,
            SimpleNamespace(_last_bytes_received=0.0),
            lambda *m: received.append(m),
            hold=lambda: holding and len(received) >= 5,
        )
        tap.CHUNK = 64  # two packets a read

        def on_readable() -> None:  # what aiomqtt registers: paho's read, which calls recv
            nonlocal calls
            calls += 1
            with contextlib.suppress(BlockingIOError):
                tap.recv(1)

        loop.add_reader(ours.fileno(), on_readable)
        try:
            broker.sendall(b"".join(publish("t", b"p" * 20, 1, mid) for mid in range(1, 21)))
            await wait_until_async(lambda: tap.paused, "the tap to pause")
            held, calls_when_held = len(received), calls
            assert 5 <= held < 20
            # Let the loop run a while: nothing is read while paused, and the readable
            # socket causes no busy loop. (An absence: only time passing can show it.)
            await asyncio.sleep(0.2)
            assert (len(received), calls) == (held, calls_when_held)
            holding = False
            tap.resume()
            await wait_until_async(lambda: len(received) == 20, "every message after resume")
            assert [m[2] for m in received] == list(range(1, 21))  # all, in order
            assert not tap.paused
        finally:
            loop.remove_reader(ours.fileno())
            broker.close()
            ours.close()

    asyncio.run(scenario())


def test_resuming_after_the_connection_closed_does_nothing() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        broker, ours = socket.socketpair()
        ours.setblocking(False)
        tap = PublishTap(
            ours, SimpleNamespace(_last_bytes_received=0.0), lambda *m: None, lambda: True
        )
        loop.add_reader(ours.fileno(), lambda: None)
        broker.sendall(publish("t", b"p", 1, 1))
        with pytest.raises(BlockingIOError):
            tap.recv(1)
        assert tap.paused
        ours.close()
        tap.resume()  # no reader for a closed socket
        assert not tap.paused
        broker.close()

    asyncio.run(scenario())
