"""The simulated TC-200: seeded per serial, drifting metrics, faults that start and clear."""

from __future__ import annotations

import pytest

from agent.device import DeviceState
from agent.heartbeat import telemetry_from
from agent.host_metrics import read_host_metrics
from agent.sim.device import SimulatedHostMetrics, SimulatedTC200
from shared.messages import DeviceStatus, Telemetry, parse_message


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_same_serial_same_terminal() -> None:
    a = SimulatedTC200("TC200-1", clock=FakeClock())
    b = SimulatedTC200("TC200-1", clock=FakeClock())
    assert a.read_state() == b.read_state()
    assert SimulatedTC200("TC200-2", clock=FakeClock()).read_state() != a.read_state()


def test_metrics_drift_within_bounds_and_uptime_advances() -> None:
    clock = FakeClock()
    device = SimulatedTC200("TC200-3", clock=clock)
    first = device.read_state()
    readings = []
    for _ in range(500):
        clock.now += 10
        readings.append(device.read_state())
    assert all(r.status is DeviceStatus.OK for r in readings)
    assert all(0 <= (r.cpu or 0) <= 100 and 0 <= (r.memory or 0) <= 100 for r in readings)
    assert len({r.cpu for r in readings}) > 50
    assert readings[-1].uptime_s == (first.uptime_s or 0) + 5000
    assert first.model == "TC-200" and first.firmware


def test_injected_faults_show_and_clear() -> None:
    clock = FakeClock()
    device = SimulatedTC200("TC200-4", clock=clock)
    device.inject_fault(DeviceStatus.ERROR, duration_s=5)
    errored = device.read_state()
    assert errored.status is DeviceStatus.ERROR
    assert errored.errors and errored.errors[0].code.startswith("E")
    clock.now += 6
    assert device.read_state().status is DeviceStatus.OK

    device.inject_fault(DeviceStatus.UNPLUGGED)
    unplugged = device.read_state()
    assert unplugged == DeviceState(status=DeviceStatus.UNPLUGGED)
    clock.now += 100
    device.clear_fault()
    replugged = device.read_state()
    assert replugged.status is DeviceStatus.OK
    assert replugged.uptime_s == 0  # it rebooted when plugged back in


def test_random_faults_follow_the_rate() -> None:
    clock = FakeClock()
    devices = [SimulatedTC200(f"TC200-R{n}", fault_rate=0.01, clock=clock) for n in range(200)]
    clock.now += 10
    faulty = sum(d.read_state().status is not DeviceStatus.OK for d in devices)
    # P(fault in 10 s) = 1 - exp(-0.1) ~ 9.5%: about 19 of 200.
    assert 5 <= faulty <= 40


def test_no_faults_at_rate_zero() -> None:
    clock = FakeClock()
    device = SimulatedTC200("TC200-5", clock=clock)
    for _ in range(1000):
        clock.now += 60
        assert device.read_state().status is DeviceStatus.OK


def test_inject_rejects_non_fault_status() -> None:
    with pytest.raises(ValueError):
        SimulatedTC200("TC200-6").inject_fault(DeviceStatus.OK)


def test_device_state_checks_percentages() -> None:
    with pytest.raises(ValueError):
        DeviceState(status=DeviceStatus.OK, cpu=140.0)


def test_telemetry_from_state_round_trips_through_the_schema() -> None:
    clock = FakeClock()
    device = SimulatedTC200("TC200-7", clock=clock)
    device.inject_fault(DeviceStatus.ERROR)
    host = SimulatedHostMetrics("TC200-7", clock=clock)()
    telemetry = telemetry_from(device.read_state(), host)
    parsed = parse_message(Telemetry, telemetry.to_payload())
    assert parsed.status is DeviceStatus.ERROR
    assert parsed.host.name == "store-pc-TC200-7"
    assert parsed.errors and parsed.terminal.cpu is not None


def test_real_host_metrics_are_percentages() -> None:
    metrics = read_host_metrics()
    for value in (metrics.cpu, metrics.memory, metrics.disk):
        assert value is not None and 0 <= value <= 100
    assert metrics.name
