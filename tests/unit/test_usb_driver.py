"""The real TC-200 driver over the simulated pyusb backend, including every USB fault."""

from __future__ import annotations

import random

import pytest

from agent.errors import (
    TerminalBusy,
    TerminalPermissionDenied,
    TerminalProtocolError,
    TerminalRefused,
    TerminalTimeout,
    TerminalUnplugged,
)
from agent.sim.firmware import firmware_image
from agent.sim.usb_backend import RESTART_S, SimulatedUsbBackend, SimulatedUsbTerminal
from agent.tc200_protocol import (
    InfoFlags,
    Opcode,
    TC200State,
    encode_firmware_begin,
    encode_firmware_chunk,
)
from agent.usb_driver import TC200Driver, open_terminal
from shared.messages import DeviceStatus, EventSeverity


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def backend_for(serial: str = "TC200-U1", clock: FakeClock | None = None) -> SimulatedUsbBackend:
    return SimulatedUsbBackend.for_serial(serial, clock=clock or FakeClock())


def test_reads_info_status_and_metrics() -> None:
    driver = open_terminal(backend=backend_for())
    info = driver.device_info()
    assert (info.serial, info.model, info.flags) == ("TC200-U1", "TC-200", InfoFlags.NONE)
    assert driver.status().state is TC200State.OK
    metrics = driver.metrics()
    assert metrics.uptime_s > 0 and 0 <= metrics.cpu <= 100


def test_not_plugged_in_and_other_ids_are_unplugged() -> None:
    backend = backend_for()
    with pytest.raises(TerminalUnplugged, match="1209:beef"):
        open_terminal(0x1209, 0xBEEF, backend=backend)
    backend.unplug()
    with pytest.raises(TerminalUnplugged, match="check the cable"):
        open_terminal(backend=backend)


def test_unplug_kills_the_handle_and_replug_needs_a_new_one() -> None:
    backend = backend_for()
    driver = open_terminal(backend=backend)
    backend.unplug()
    with pytest.raises(TerminalUnplugged):
        driver.status()
    backend.replug()
    with pytest.raises(TerminalUnplugged):
        driver.status()  # the old handle belongs to the old arrival on the bus
    assert open_terminal(backend=backend).status().state is TC200State.OK


def test_busy_interface() -> None:
    backend = backend_for()
    backend.busy = True
    with pytest.raises(TerminalBusy, match="another program"):
        open_terminal(backend=backend)


def test_permission_denied_names_the_udev_rule() -> None:
    backend = backend_for()
    backend.access_denied = True
    with pytest.raises(TerminalPermissionDenied) as caught:
        open_terminal(backend=backend)
    assert "deploy/udev/99-tc200.rules" in str(caught.value)
    assert "plugdev" in str(caught.value)


def test_a_timeout_is_retried_and_the_late_answer_skipped() -> None:
    backend = backend_for()
    driver = open_terminal(backend=backend)
    backend.pending_timeouts = 1
    assert driver.status().state is TC200State.OK
    assert driver.retries == 1
    assert driver.stale_frames == 1  # the late answer to the first try came first


def test_repeated_timeouts_raise() -> None:
    backend = backend_for()
    driver = open_terminal(backend=backend)
    backend.pending_timeouts = 2
    with pytest.raises(TerminalTimeout):
        driver.status()


def test_a_corrupt_answer_is_retried_then_refused() -> None:
    backend = backend_for()
    driver = open_terminal(backend=backend)
    backend.pending_corruptions = 1
    assert driver.metrics().uptime_s > 0
    assert driver.retries == 1
    backend.pending_corruptions = 2
    with pytest.raises(TerminalProtocolError, match="bad answer to GET_METRICS"):
        driver.metrics()


def test_non_idempotent_requests_are_not_retried() -> None:
    backend = backend_for()
    driver = open_terminal(backend=backend)
    backend.pending_timeouts = 1
    with pytest.raises(TerminalTimeout):
        driver.reboot()
    assert driver.retries == 0


def test_write_config_is_checked_by_the_terminal() -> None:
    backend = backend_for()
    driver = open_terminal(backend=backend)
    driver.write_config({"beep_volume": "30"})
    assert backend.firmware.config == {"beep_volume": "30"}
    with pytest.raises(TerminalRefused, match="BAD_REQUEST"):
        driver.write_config({"self_destruct": "now"})


def update(backend: SimulatedUsbBackend, clock: FakeClock, image: bytes) -> TC200Driver:
    driver = open_terminal(backend=backend)
    driver.transfer_firmware(image, chunk_size=1000)
    assert driver.status().state is TC200State.UPDATING
    driver.boot_firmware()
    with pytest.raises(TerminalUnplugged):
        driver.status()  # restarting: off the bus
    clock.now += RESTART_S
    return open_terminal(backend=backend)


def test_firmware_update_boots_the_new_image() -> None:
    clock = FakeClock()
    backend = backend_for(clock=clock)
    driver = update(backend, clock, firmware_image("3.0.0", b"\x01" * 5000))
    info = driver.device_info()
    assert info.firmware == "3.0.0" and info.flags is InfoFlags.NONE
    assert driver.metrics().uptime_s == 0 and backend.firmware.boots == 1


def test_firmware_that_fails_to_boot_is_rolled_back() -> None:
    clock = FakeClock()
    backend = backend_for(clock=clock)
    old = open_terminal(backend=backend).device_info().firmware
    backend.firmware.fail_next_boot()
    info = update(backend, clock, firmware_image("3.0.1")).device_info()
    assert info.firmware == old and info.flags is InfoFlags.ROLLED_BACK


def test_firmware_with_a_wrong_checksum_is_refused_at_commit() -> None:
    backend = backend_for()
    driver = open_terminal(backend=backend)
    image = firmware_image("3.0.2")
    driver.request(Opcode.FIRMWARE_BEGIN, encode_firmware_begin(len(image), b"\x00" * 32))
    driver.request(Opcode.FIRMWARE_CHUNK, encode_firmware_chunk(0, image[:1000]))
    with pytest.raises(TerminalRefused, match="CHECKSUM_MISMATCH"):
        driver.request(Opcode.FIRMWARE_COMMIT)
    with pytest.raises(TerminalRefused, match="BAD_STATE"):
        driver.boot_firmware()  # nothing committed: the old image stays
    with pytest.raises(TerminalRefused, match="BAD_OFFSET"):
        driver.request(Opcode.FIRMWARE_BEGIN, encode_firmware_begin(10, b"\x00" * 32))
        driver.request(Opcode.FIRMWARE_CHUNK, encode_firmware_chunk(8, b"abcd"))


# UsbTerminal: faults become statuses and events, retried with backoff, never raised.


def terminal_over(backend: SimulatedUsbBackend, clock: FakeClock) -> SimulatedUsbTerminal:
    return SimulatedUsbTerminal(
        lambda: open_terminal(backend=backend),
        reopen_base_s=1.0,
        reopen_max_s=8.0,
        clock=clock,
        rng=random.Random(3),
        sleep=clock.sleep,
    )


def test_terminal_reports_unplug_as_status_and_event_then_recovers() -> None:
    clock = FakeClock()
    backend = backend_for(clock=clock)
    terminal = terminal_over(backend, clock)
    state = terminal.read_state()
    assert state.status is DeviceStatus.OK and state.model == "TC-200" and state.cpu is not None
    assert terminal.take_events() == []

    backend.unplug()
    for _ in range(5):
        state = terminal.read_state()
        assert state.status is DeviceStatus.UNPLUGGED
        clock.now += 0.2
    events = terminal.take_events()
    assert [(e.kind, e.code, e.severity) for e in events] == [
        ("device.fault", "USB-UNPLUGGED", EventSeverity.WARNING)
    ]  # one event per change of fault, not one per poll

    backend.replug()
    clock.now += 8.0  # past the longest backoff
    assert terminal.read_state().status is DeviceStatus.OK
    assert [e.kind for e in terminal.take_events()] == ["device.recovered"]


def test_terminal_reopens_with_backoff_not_on_every_poll() -> None:
    clock = FakeClock()
    backend = backend_for(clock=clock)
    terminal = terminal_over(backend, clock)
    backend.busy = True
    opens_before = backend.requests
    for _ in range(50):
        assert terminal.read_state().status is DeviceStatus.BUSY
        clock.now += 0.01
    # 50 polls in half a second: at most a couple of attempts, each failing at claim.
    assert backend.requests == opens_before
    assert [e.code for e in terminal.take_events()] == ["USB-BUSY"]


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("access_denied", DeviceStatus.ERROR, "USB-PERMISSION"),
        ("pending_timeouts", DeviceStatus.ERROR, "USB-TIMEOUT"),
        ("pending_corruptions", DeviceStatus.ERROR, "USB-PROTOCOL"),
    ],
)
def test_terminal_faults_are_statuses(fault: str, status: DeviceStatus, code: str) -> None:
    clock = FakeClock()
    backend = backend_for(clock=clock)
    terminal = terminal_over(backend, clock)
    assert terminal.read_state().status is DeviceStatus.OK
    if fault == "access_denied":
        backend.unplug()
        backend.replug()  # a new arrival the agent may not open
        backend.access_denied = True
        assert terminal.read_state().status is DeviceStatus.UNPLUGGED  # the old handle died
        terminal.take_events()
        clock.now += 8.0  # the reopen after the backoff is refused
    else:
        setattr(backend, fault, 10)
    state = terminal.read_state()
    assert state.status is status and state.errors[0].code == code
    assert [e.code for e in terminal.take_events()] == [code]


def test_device_error_codes_reach_the_state() -> None:
    clock = FakeClock()
    backend = backend_for(clock=clock)
    backend.firmware.hardware.inject_fault(DeviceStatus.ERROR)
    state = terminal_over(backend, clock).read_state()
    assert state.status is DeviceStatus.ERROR
    assert state.errors and state.errors[0].code.startswith("E")


def test_terminal_firmware_update_reports_a_rollback_event() -> None:
    clock = FakeClock()
    backend = backend_for(clock=clock)
    terminal = terminal_over(backend, clock)
    backend.firmware.fail_next_boot()
    info = terminal.update_firmware(firmware_image("9.9.9"))
    assert info.flags is InfoFlags.ROLLED_BACK
    assert "device.firmware_rolled_back" in [e.kind for e in terminal.take_events()]
    good = terminal.update_firmware(firmware_image("9.9.10"))
    assert good.firmware == "9.9.10" and good.flags is InfoFlags.NONE


def test_random_faults_and_glitches_never_raise() -> None:
    clock = FakeClock()
    backend = SimulatedUsbBackend.for_serial(
        "TC200-CHAOS", fault_rate=0.05, glitch_rate=0.2, clock=clock, rng=random.Random(5)
    )
    backend.firmware.hardware._clock = clock  # the physics follow the test clock too
    terminal = terminal_over(backend, clock)
    statuses = set()
    for _ in range(2000):
        statuses.add(terminal.read_state().status)
        clock.now += 0.5
    assert DeviceStatus.OK in statuses and len(statuses) >= 2
