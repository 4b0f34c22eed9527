"""amqtt's missing packet size limit: a reader that ends a connection at an over-size packet.

amqtt 0.12.1 has no such setting, and reads every packet whole before any plugin sees
it: ``topic_filtering`` gets only the topic, and ``on_broker_message_received`` runs
after the read and cannot refuse. So the limit sits under amqtt's parser.
``PacketFraming`` follows MQTT's framing (one type byte, a remaining length of one to
four bytes, then the body) through every byte amqtt reads, and ``LimitedReader`` answers
"end of stream" at the length byte announcing a packet bigger than the limit, before its
body is read. amqtt then ends the connection as if the client had gone away, which is
what Mosquitto does with ``max_packet_size``; the client's will is sent, as for any
connection that ends without a DISCONNECT.
"""

from __future__ import annotations

import logging

from amqtt.adapters import ReaderAdapter

log = logging.getLogger(__name__)

_MAX_LENGTH_BYTES = 4  # MQTT 3.1.1 section 2.2.3


class PacketFraming:
    """Where a byte stream stands in MQTT's framing, and whether a packet is too big.

    It parses the stream itself, so it stays right however amqtt splits its reads.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._header_len = 0  # bytes of the current fixed header seen; 0: at a packet's start
        self._length = 0
        self._multiplier = 1
        self._body_left = 0

    def take(self, data: bytes) -> str | None:
        """Account for ``data``, the next bytes read; why the connection must end, or None."""
        index = 0
        while index < len(data):
            if self._body_left:
                step = min(self._body_left, len(data) - index)
                self._body_left -= step
                index += step
                continue
            byte = data[index]
            index += 1
            if self._header_len == 0:  # the packet type: its length follows
                self._header_len, self._length, self._multiplier = 1, 0, 1
                continue
            self._header_len += 1
            self._length += (byte & 0x7F) * self._multiplier
            self._multiplier *= 128
            if byte & 0x80:
                if self._header_len > _MAX_LENGTH_BYTES:
                    return "a malformed remaining length"
                continue
            size = self._header_len + self._length
            self._header_len = 0
            if size > self.limit:
                return f"a packet of {size} bytes, over the limit of {self.limit}"
            self._body_left = self._length
        return None


class LimitedReader(ReaderAdapter):
    """amqtt's reader for one connection, cut at the first packet over the limit."""

    def __init__(self, inner: ReaderAdapter, limit: int, peer: str) -> None:
        self._inner = inner
        self._framing = PacketFraming(limit)
        self._peer = peer
        self.refused: str | None = None

    async def read(self, n: int = -1) -> bytes:
        if self.refused is not None:
            return b""
        data = await self._inner.read(n)
        why = self._framing.take(data)
        if why is not None:
            self.refused = why
            log.warning("closing the connection from %s: it sent %s", self._peer, why)
            return b""  # amqtt reads this as the end of the stream
        return data

    def feed_eof(self) -> None:
        self._inner.feed_eof()
