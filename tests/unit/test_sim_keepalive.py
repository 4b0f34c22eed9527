"""The simulator's shared keepalive wheel: each client visited once a period, the closed
ones forgotten, and nothing visited between its visits."""

from __future__ import annotations

import asyncio

import paho.mqtt.client as mqtt
import pytest

from agent.sim.keepalive import KeepaliveWheel


class FakePaho:
    """What the wheel calls on a paho client: ``loop_misc``, counted."""

    def __init__(self, result: mqtt.MQTTErrorCode = mqtt.MQTT_ERR_SUCCESS) -> None:
        self.calls = 0
        self.result = result

    def loop_misc(self) -> mqtt.MQTTErrorCode:
        self.calls += 1
        return self.result


def test_each_client_is_visited_once_per_period() -> None:
    async def main() -> list[int]:
        wheel = KeepaliveWheel(period_s=5.0, tick_s=0.5)
        clients = [FakePaho() for _ in range(100)]
        for client in clients:
            wheel.watch(client)  # type: ignore[arg-type]
        for _ in range(10):  # one period of ticks
            wheel.turn()
        return [client.calls for client in clients]

    assert asyncio.run(main()) == [1] * 100


def test_a_lost_connection_ends_the_watch_and_a_cancelled_one_is_forgotten() -> None:
    async def main() -> None:
        wheel = KeepaliveWheel(period_s=1.0, tick_s=1.0)
        lost = FakePaho(mqtt.MQTT_ERR_CONN_LOST)
        closed, alive = FakePaho(), FakePaho()
        lost_watch = wheel.watch(lost)  # type: ignore[arg-type]
        wheel.watch(closed).cancel()  # type: ignore[arg-type]
        wheel.watch(alive)  # type: ignore[arg-type]
        wheel.turn()
        assert lost_watch.done() and lost.calls == 1
        assert closed.calls == 0
        assert len(wheel) == 1
        wheel.turn()
        assert (lost.calls, closed.calls, alive.calls) == (1, 0, 2)

    asyncio.run(main())


def test_the_period_leaves_a_ping_time_before_the_broker_gives_up() -> None:
    # A broker drops a client silent for 1.5 keepalives; a ping is at most a period late.
    wheel = KeepaliveWheel.for_keepalive(30)
    assert wheel.period_s + 30 < 1.5 * 30
    with pytest.raises(ValueError):
        KeepaliveWheel(0)
