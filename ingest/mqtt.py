"""The broker side of ingest: the aiomqtt client it uses and manual acknowledgement.

aiomqtt 2.x has no public API for manual acknowledgement (empicano/aiomqtt#345), so the
two calls on its private paho client live here and nowhere else. Both run on the event
loop thread, where aiomqtt drives paho's socket.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiomqtt
from paho.mqtt.client import MQTTv311

from shared.settings import IngestSettings


@dataclass(frozen=True, slots=True)
class Receipt:
    """What acknowledging one message needs: the connection it came on, its id and QoS."""

    connection: int
    mid: int
    qos: int


def make_client(settings: IngestSettings, *, clean_session: bool = False) -> aiomqtt.Client:
    """A persistent-session client with manual acknowledgement switched on.

    clean_session=False and a fixed client id make the broker keep the subscription and
    every unacknowledged message while ingest is away, and send them again on return.
    clean_session=True is only for removing a retired worker's session (ingest.sessions).
    """
    mqtt = settings.mqtt
    tls = aiomqtt.TLSParameters(ca_certs=str(mqtt.tls_ca)) if mqtt.tls_ca is not None else None
    client = aiomqtt.Client(
        mqtt.host,
        mqtt.port,
        username=mqtt.username,
        password=mqtt.password.get_secret_value() if mqtt.password is not None else None,
        identifier=settings.client_id,
        clean_session=clean_session,
        keepalive=mqtt.keepalive_s,
        tls_params=tls,
    )
    enable_manual_ack(client)
    return client


def enable_manual_ack(client: aiomqtt.Client) -> None:
    """Stop paho from acknowledging on receipt; must run before connecting.

    Private API: aiomqtt has no manual-ack option yet (empicano/aiomqtt#345).
    """
    client._client.manual_ack_set(True)  # noqa: SLF001


# handler(topic, payload, mid, qos) for each PUBLISH; runs on the event loop thread.
# (topic, payload, packet id, QoS, retain flag)
PublishHandler = Callable[[str, bytes, int, int, bool], None]

PUBLISH = 0x30


class PublishTap:
    """A plain socket that hands QoS 0/1 PUBLISH packets straight to a handler.

    paho parses every packet in Python with three or four small reads, a dict per
    packet and a message object; at 10,000 messages/s that cost as much as decoding
    and writing them. This wrapper reads large chunks, splits them into packets, and
    passes each QoS 0/1 PUBLISH (MQTT 3.1.1) to the handler; paho reads every other
    packet (CONNACK, SUBACK, PINGRESP, QoS 2 PUBLISH) from ``recv`` as before, and
    ``pending()`` tells aiomqtt's read callback (written for SSL sockets, which have the
    same method) to keep calling paho until they are served. paho's receive clock is
    kept current so that its keepalive sees the traffic. Every other attribute is the
    socket's own. Nothing is acknowledged here: with manual acknowledgement paho would
    not either.
    """

    CHUNK = 256 * 1024

    def __init__(
        self,
        sock: socket.socket,
        paho: Any,
        handler: PublishHandler,
        hold: Callable[[], bool] | None = None,
    ) -> None:
        self._sock = sock
        self._paho = paho
        self._handler = handler
        self._hold = hold  # True while the consumer holds enough: stop reading
        # While paused: the loop and the reader (callback, args) to register again.
        self._paused: (
            tuple[asyncio.AbstractEventLoop, Callable[..., Any], tuple[Any, ...]] | None
        ) = None
        self._raw = b""  # received, not yet a whole packet
        self._for_paho = b""
        self._position = 0

    def recv(self, size: int) -> bytes:
        if self._position >= len(self._for_paho):
            if self._hold is not None and self._hold():
                self._pause()
                raise BlockingIOError
            data = self._sock.recv(self.CHUNK)  # BlockingIOError and OSError pass to paho
            if not data:
                return b""  # the broker closed the connection: paho sees it
            self._for_paho, self._position = self._split(self._raw + data), 0
            self._paho._last_bytes_received = time.monotonic()  # noqa: SLF001
            if not self._for_paho:
                # One chunk per call: reading on while the socket has data kept the
                # event loop (and the writer) away for seconds under a backlog. The
                # loop calls again while the socket is readable.
                raise BlockingIOError
        start = self._position
        self._position = min(len(self._for_paho), start + size)
        return self._for_paho[start : self._position]

    def pending(self) -> int:
        return len(self._for_paho) - self._position

    @property
    def paused(self) -> bool:
        return self._paused is not None

    def _pause(self) -> None:
        """Take the socket off the event loop; what the broker sends waits in TCP buffers.

        The loop watches the socket level-triggered: a reader that returned without
        reading would be called again at once, a busy loop. So the reader registered
        for the socket (aiomqtt's, which calls paho, which calls ``recv``) is taken off
        and kept for ``resume``. Private API: asyncio has no public way to read back
        a registered reader (selector event loops keep it in the selector key).
        """
        loop = asyncio.get_running_loop()
        key = loop._selector.get_key(self._sock.fileno())  # type: ignore[attr-defined]  # noqa: SLF001
        handle = key.data[0]
        # Read before remove_reader, which cancels the handle and so clears them.
        self._paused = (loop, handle._callback, handle._args)  # noqa: SLF001
        loop.remove_reader(self._sock.fileno())

    def resume(self) -> None:
        """Read again (no-op unless paused, or once the connection is closed)."""
        if self._paused is None:
            return
        loop, callback, args = self._paused
        self._paused = None
        if self._sock.fileno() >= 0:
            loop.add_reader(self._sock.fileno(), callback, *args)

    def _split(self, data: bytes) -> bytes:
        """Dispatch the whole PUBLISH packets in ``data``; return the other whole packets."""
        for_paho: list[bytes] = []
        position = 0
        while True:
            try:
                bounds = packet_bounds(data, position)
            except ValueError:  # not MQTT: paho reads it, fails, and drops the connection
                for_paho.append(data[position:])
                position = len(data)
                break
            if bounds is None:
                break
            body, packet_end = bounds
            header = data[position]
            if header & 0xF0 == PUBLISH and header & 0x06 in (0x00, 0x02):  # QoS 0 or 1
                self._dispatch(header, data, body, packet_end)
            else:
                for_paho.append(data[position:packet_end])
            position = packet_end
        self._raw = data[position:]
        return b"".join(for_paho)

    def _dispatch(self, header: int, data: bytes, start: int, end: int) -> None:
        topic_length = int.from_bytes(data[start : start + 2], "big")
        topic_end = start + 2 + topic_length
        topic = data[start + 2 : topic_end].decode("utf-8", "replace")
        qos = (header >> 1) & 0x03
        if qos:
            mid = int.from_bytes(data[topic_end : topic_end + 2], "big")
            payload_start = topic_end + 2
        else:
            mid, payload_start = 0, topic_end
        self._handler(topic, data[payload_start:end], mid, qos, bool(header & 0x01))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def packet_bounds(data: bytes, start: int) -> tuple[int, int] | None:
    """(body start, end) of the MQTT packet at ``start``, or None while it is incomplete.

    Raises ValueError for a remaining length longer than the four bytes MQTT allows.
    """
    length, shift = 0, 0
    for index in range(start + 1, min(start + 5, len(data))):
        byte = data[index]
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            end = index + 1 + length
            return (index + 1, end) if end <= len(data) else None
        shift += 7
    if len(data) >= start + 5:
        raise ValueError("an MQTT remaining length has at most four bytes")
    return None


class TapSwitch:
    """The connection's ``PublishTap`` once its socket opens: lets the consumer resume it."""

    def __init__(self) -> None:
        self.tap: PublishTap | None = None

    def resume(self) -> None:
        if self.tap is not None:
            self.tap.resume()


def tap_publishes(
    client: aiomqtt.Client, handler: PublishHandler, hold: Callable[[], bool] | None = None
) -> TapSwitch:
    """Deliver PUBLISH packets through ``PublishTap``; call before connecting.

    ``hold()`` is asked before each read: while it is True the tap stops reading, and
    the returned switch's ``resume()`` starts it again. Private API: paho's socket is
    swapped in its on_socket_open callback (chained to aiomqtt's), before the CONNECT
    is sent, so no packet is ever half read by paho. TLS sockets and MQTT 5 (whose
    PUBLISH carries properties) keep paho's own reading, with the same handler through
    ``set_message_handler``, and are not paused.
    """
    paho = client._client  # noqa: SLF001
    aiomqtt_on_socket_open = paho.on_socket_open
    switch = TapSwitch()

    def on_socket_open(paho_client: Any, userdata: Any, sock: Any) -> None:
        if type(sock) is socket.socket and paho._protocol == MQTTv311:  # noqa: SLF001
            switch.tap = PublishTap(sock, paho, handler, hold)
            paho._sock = switch.tap  # noqa: SLF001
        if aiomqtt_on_socket_open is not None:
            aiomqtt_on_socket_open(paho_client, userdata, sock)

    paho.on_socket_open = on_socket_open
    return switch


def set_message_handler(client: aiomqtt.Client, handler: PublishHandler) -> None:
    """Have paho call ``handler`` for each PUBLISH it reads, instead of aiomqtt's queue.

    Private API: replaces the on_message aiomqtt installs. ``handler`` runs on the event
    loop thread (aiomqtt drives paho's socket from the loop) and must not raise.
    """

    def on_message(_client: Any, _userdata: Any, message: Any) -> None:
        payload = _payload_bytes(message.payload)
        handler(message.topic, payload, message.mid, message.qos, bool(message.retain))

    client._client.on_message = on_message  # noqa: SLF001


def _payload_bytes(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return str(payload).encode("utf-8", "backslashreplace")


_PUBACK = struct.Struct("!BBH")  # fixed header (PUBACK, remaining length 2), message id
PUBACK = 0x40


def acknowledge(client: aiomqtt.Client, receipts: Iterable[tuple[int, int]]) -> bool:
    """Send the PUBACKs of a committed batch, given as ``(mid, qos)``, in one write.

    paho queues and sends each ``ack(mid, qos)`` as a packet of its own, one system call
    per message; the batch's PUBACKs are bytes in a row on the wire, so they go to
    paho's out queue as one packet. QoS 2 (ingest subscribes at 1, so never in
    practice) still goes through ``ack``. Returns False when the connection is gone
    (the broker then redelivers the messages).

    Private API: aiomqtt has no public ack yet (empicano/aiomqtt#345), and paho none
    for several at once (``_packet_queue`` is the method its own ``ack`` ends in).
    """
    paho = client._client  # noqa: SLF001
    if not paho.is_connected():
        return False
    pubacks = bytearray()
    for mid, qos in receipts:
        if qos == 1:
            pubacks += _PUBACK.pack(PUBACK, 2, mid)
        elif qos == 2 and paho.ack(mid, qos) != 0:
            return False
    if not pubacks:
        return True
    return paho._packet_queue(PUBACK, bytes(pubacks), 0, 0) == 0  # noqa: SLF001
