"""The broker side of ingest: the aiomqtt client it uses and manual acknowledgement.

aiomqtt 2.x has no public API for manual acknowledgement (empicano/aiomqtt#345), so the
two calls on its private paho client live here and nowhere else. Both run on the event
loop thread, where aiomqtt drives paho's socket.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiomqtt

from shared.settings import IngestSettings


@dataclass(frozen=True, slots=True)
class Receipt:
    """What acknowledging one message needs: the connection it came on, its id and QoS."""

    connection: int
    mid: int
    qos: int


def make_client(settings: IngestSettings) -> aiomqtt.Client:
    """A persistent-session client with manual acknowledgement switched on.

    clean_session=False and a fixed client id make the broker keep the subscription and
    every unacknowledged message while ingest is away, and send them again on return.
    """
    mqtt = settings.mqtt
    tls = aiomqtt.TLSParameters(ca_certs=str(mqtt.tls_ca)) if mqtt.tls_ca is not None else None
    client = aiomqtt.Client(
        mqtt.host,
        mqtt.port,
        username=mqtt.username,
        password=mqtt.password.get_secret_value() if mqtt.password is not None else None,
        identifier=settings.client_id,
        clean_session=False,
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


class BufferedReads:
    """A plain socket whose reads come from one large recv at a time.

    paho reads each packet with three or four tiny ``recv`` calls (command byte, length
    bytes, body); at 10,000 messages/s those system calls cost more than decoding.
    This wrapper fills a buffer with one ``recv`` and serves paho from it; ``pending()``
    tells aiomqtt's read callback (written for SSL sockets, which have the same method)
    to keep calling paho until the buffer is empty. Every other attribute is the
    socket's own.
    """

    CHUNK = 256 * 1024

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""
        self._position = 0

    def recv(self, size: int) -> bytes:
        if self._position >= len(self._buffer):
            self._buffer = self._sock.recv(max(size, self.CHUNK))  # BlockingIOError passes
            self._position = 0
        start = self._position
        self._position = min(len(self._buffer), start + size)
        return self._buffer[start : self._position]

    def pending(self) -> int:
        return len(self._buffer) - self._position

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def buffer_reads(client: aiomqtt.Client) -> None:
    """Serve paho's reads from BufferedReads; call once connected. Plain TCP only.

    Private API: swaps paho's socket attribute for the wrapper (TLS sockets keep
    their own buffering and are left alone).
    """
    paho = client._client  # noqa: SLF001
    sock = paho._sock  # noqa: SLF001
    if type(sock) is socket.socket:
        paho._sock = BufferedReads(sock)  # type: ignore[assignment]  # noqa: SLF001


def set_message_handler(client: aiomqtt.Client, handler: Callable[[Any], None]) -> None:
    """Have paho call ``handler(message)`` for each PUBLISH, instead of aiomqtt's queue.

    Private API: replaces the on_message aiomqtt installs. ``handler`` runs on the event
    loop thread (aiomqtt drives paho's socket from the loop) and must not raise.
    """
    client._client.on_message = lambda _client, _userdata, message: handler(message)  # noqa: SLF001


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
