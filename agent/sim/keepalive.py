"""One MQTT keepalive timer for every simulated terminal in an event loop.

aiomqtt gives each client a task that wakes every second to call paho's ``loop_misc``,
which sends a PINGREQ once the keepalive is due and drops a connection whose PINGRESP
never came. A store PC has one client and does not notice; a simulator process with ten
thousand terminals wakes ten thousand tasks a second for it, most of its CPU while the
fleet is idle. ``KeepaliveWheel`` is one task that visits the clients in turn, each once
per ``period_s``, and ``WheeledClient`` is the aiomqtt client that joins it instead of
starting its own loop.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt

# A visit this late after the keepalive fell due still pings before a broker gives up
# (it waits 1.5 keepalives), and notices a missing PINGRESP at most this late.
PERIOD_SHARE_OF_KEEPALIVE = 0.25
TICK_S = 0.5


class KeepaliveWheel:
    """Calls ``loop_misc`` of each watched paho client about once per ``period_s``."""

    def __init__(self, period_s: float, tick_s: float = TICK_S) -> None:
        if period_s <= 0 or tick_s <= 0:
            raise ValueError("a keepalive wheel needs period_s > 0 and tick_s > 0")
        self.period_s = period_s
        self.tick_s = min(tick_s, period_s)
        self._clients: deque[tuple[mqtt.Client, asyncio.Future[None]]] = deque()

    @classmethod
    def for_keepalive(cls, keepalive_s: float) -> KeepaliveWheel:
        return cls(keepalive_s * PERIOD_SHARE_OF_KEEPALIVE)

    def __len__(self) -> int:
        return len(self._clients)

    def watch(self, client: mqtt.Client) -> asyncio.Future[None]:
        """Visit ``client`` until the returned future is done: by the wheel when the
        connection is gone, or cancelled by the caller to stop watching."""
        ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._clients.append((client, ended))
        return ended

    def turn(self) -> None:
        """One tick: visit the share of the clients that keeps each to one visit a period."""
        visits = math.ceil(len(self._clients) * self.tick_s / self.period_s)
        for _ in range(min(visits, len(self._clients))):
            client, ended = self._clients.popleft()
            if ended.done():
                continue  # its connection closed: forgotten
            if client.loop_misc() != mqtt.MQTT_ERR_SUCCESS:
                ended.set_result(None)
                continue
            self._clients.append((client, ended))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            self.turn()


class WheeledClient(aiomqtt.Client):  # type: ignore[misc]
    """An aiomqtt client whose keepalive runs on a shared ``KeepaliveWheel``."""

    def __init__(self, *args: Any, wheel: KeepaliveWheel, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keepalive_wheel = wheel

    async def _misc_loop(self) -> None:
        # aiomqtt starts this when the socket opens and cancels it when the socket closes;
        # the cancellation reaches the awaited future, and the wheel then forgets it.
        if self._client.loop_misc() == mqtt.MQTT_ERR_SUCCESS:
            await self._keepalive_wheel.watch(self._client)
