"""Backoff and heartbeat schedule: the agent's pacing, pure (queues: test_agent_queue.py)."""

from __future__ import annotations

import random

import pytest
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.reasoncodes import ReasonCode

from agent.heartbeat import HeartbeatSchedule
from agent.runtime import is_refused_login
from shared.backoff import Backoff
from shared.messages import DeviceStatus


def test_backoff_grows_exponentially_with_full_jitter_and_caps() -> None:
    backoff = Backoff(base_s=1.0, cap_s=8.0, rng=random.Random(1))
    bounds = []
    for _ in range(6):
        bounds.append(backoff.bound_s())
        assert 0 <= backoff.next_delay() <= bounds[-1]
    assert bounds == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    backoff.reset()
    assert backoff.bound_s() == 1.0


def test_backoff_jitter_spreads_delays() -> None:
    delays = {round(Backoff(1.0, 60.0, random.Random(seed)).next_delay(), 3) for seed in range(50)}
    assert len(delays) > 40


def test_refused_login_waits_long() -> None:
    backoff = Backoff(base_s=0.5, cap_s=60.0, rng=random.Random(2))
    for _ in range(20):
        assert 30.0 <= backoff.refused_delay() <= 60.0


def test_backoff_survives_many_attempts() -> None:
    backoff = Backoff(0.5, 60.0)
    for _ in range(5000):
        assert backoff.next_delay() <= 60.0


def test_heartbeat_first_delay_then_every_interval() -> None:
    schedule = HeartbeatSchedule(interval_s=10.0, first_delay_s=3.0, now=100.0)
    assert not schedule.should_send(DeviceStatus.OK, 102.9)
    assert schedule.should_send(DeviceStatus.OK, 103.0)
    schedule.sent(DeviceStatus.OK, 103.0)
    assert not schedule.should_send(DeviceStatus.OK, 112.0)
    assert schedule.should_send(DeviceStatus.OK, 113.0)


def test_heartbeat_sent_at_once_on_status_change() -> None:
    schedule = HeartbeatSchedule(interval_s=300.0, first_delay_s=0.0, now=0.0)
    schedule.sent(DeviceStatus.OK, 0.0)
    assert schedule.should_send(DeviceStatus.ERROR, 1.0)
    schedule.sent(DeviceStatus.ERROR, 1.0)
    assert not schedule.should_send(DeviceStatus.ERROR, 2.0)
    assert schedule.should_send(DeviceStatus.OK, 2.0)


def test_heartbeat_poll_wait_never_overshoots_due_time() -> None:
    schedule = HeartbeatSchedule(interval_s=0.2, first_delay_s=0.0, now=0.0)
    schedule.sent(DeviceStatus.OK, 0.0)
    assert schedule.seconds_until_next_poll(0.05, poll_interval_s=1.0) == pytest.approx(0.15)
    assert schedule.seconds_until_next_poll(0.5, poll_interval_s=1.0) == 0.0


@pytest.mark.parametrize(
    ("rc", "refused"),
    [(4, True), (5, True), (3, False), (ReasonCode(2, identifier=134), True),
     (ReasonCode(2, identifier=135), True), (ReasonCode(2, identifier=136), False)],
)  # fmt: skip
def test_refused_login_is_told_from_other_connack_failures(
    rc: int | ReasonCode, refused: bool
) -> None:
    assert is_refused_login(MqttConnectError(rc)) is refused


def test_a_floor_keeps_delays_in_the_upper_part_of_the_bound() -> None:
    backoff = Backoff(1.0, 60.0, random.Random(3), min_fraction=0.5)
    for attempt in range(8):
        bound = min(60.0, 2.0**attempt)
        assert bound / 2 <= backoff.next_delay() <= bound
    with pytest.raises(ValueError):
        Backoff(1.0, 60.0, min_fraction=1.5)
