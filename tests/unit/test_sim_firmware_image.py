"""Simulated firmware images: the header (version, fail-boot share), padding, and the
share of terminals that fail the boot self-test, chosen by serial the same way every run."""

from __future__ import annotations

import pytest

from agent.sim.firmware import (
    FAIL_BOOT_FIELD,
    MAX_FIRMWARE_SIZE,
    ImageHeader,
    boot_draw,
    firmware_image,
    make_image,
    parse_image_header,
)
from agent.sim.usb_backend import RESTART_S, SimulatedUsbBackend
from agent.tc200_protocol import InfoFlags
from agent.usb_driver import open_terminal
from rollouts.library import image_version

SERIALS = [f"SIM{n:06d}" for n in range(1, 1001)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_image_announces_its_version_and_share_and_the_library_takes_it() -> None:
    image = make_image("3.1.0", fail_boot_percent=20)
    assert image.startswith(b"TC200FW:3.1.0\n" + FAIL_BOOT_FIELD)
    assert parse_image_header(image) == ImageHeader("3.1.0", 20.0)
    assert image_version(image) == "3.1.0"  # rollouts.library reads the first line only
    plain = make_image("3.1.0")
    assert plain.startswith(b"TC200FW:3.1.0\n\x00") and FAIL_BOOT_FIELD not in plain
    assert parse_image_header(plain) == ImageHeader("3.1.0", 0.0)
    assert parse_image_header(make_image("3.1.1", fail_boot_percent=12.5)) == ImageHeader(
        "3.1.1", 12.5
    )


def test_images_made_before_the_share_existed_read_as_booting_everywhere() -> None:
    assert parse_image_header(firmware_image("2.9.0")) == ImageHeader("2.9.0", 0.0)
    odd_body = firmware_image("2.9.1", bytes(range(256)) * 4)
    assert parse_image_header(odd_body) == ImageHeader("2.9.1", 0.0)


@pytest.mark.parametrize(
    "image",
    [
        b"",
        b"NOTANIMAGE\n" + bytes(100),
        b"TC200FW:" + b"9" * 200,  # no end to the version line
        b"TC200FW:\n" + bytes(10),  # no version
        b"TC200FW:" + b"1" * 33 + b"\n",  # a version too long
        b"TC200FW:\xff\n",
        b"TC200FW:1.0\n" + FAIL_BOOT_FIELD + b"lots\n",
        b"TC200FW:1.0\n" + FAIL_BOOT_FIELD + b"150\n",
        b"TC200FW:1.0\n" + FAIL_BOOT_FIELD + b"nan\n",
        b"TC200FW:1.0\n" + FAIL_BOOT_FIELD + b"20",  # the line never ends
    ],
)
def test_what_is_no_bootable_image(image: bytes) -> None:
    assert parse_image_header(image) is None


def test_an_image_is_padded_to_the_size_asked() -> None:
    eight_mb = 8 * 1024 * 1024
    image = make_image("4.0.0", fail_boot_percent=20, size=eight_mb)
    assert len(image) == eight_mb
    assert parse_image_header(image) == ImageHeader("4.0.0", 20.0)
    header = ImageHeader("4.0.0").encode()
    assert make_image("4.0.0", size=len(header)) == header
    with pytest.raises(ValueError, match="holds its"):
        make_image("4.0.0", size=len(header) - 1)
    with pytest.raises(ValueError, match="at most"):
        make_image("4.0.0", size=MAX_FIRMWARE_SIZE + 1)


@pytest.mark.parametrize(
    ("version", "percent"), [("", 0), ("1" * 33, 0), ("1.0\n2", 0), ("1.0", -1), ("1.0", 100.5)]
)
def test_a_bad_header_is_refused_when_made(version: str, percent: float) -> None:
    with pytest.raises(ValueError):
        make_image(version, fail_boot_percent=percent)


def test_a_fifth_of_a_thousand_terminals_fail_a_twenty_percent_image() -> None:
    header = ImageHeader("5.0.0", 20)
    failing = {serial for serial in SERIALS if header.fails_on(serial)}
    assert 150 <= len(failing) <= 250
    # The same terminals on every call (and in every process: no salted hash()).
    assert failing == {serial for serial in SERIALS if ImageHeader("5.0.0", 20).fails_on(serial)}
    assert all(boot_draw(serial, "5.0.0") == boot_draw(serial, "5.0.0") for serial in SERIALS)
    # Another release fails on other terminals, not always the same unlucky ones.
    other = {serial for serial in SERIALS if ImageHeader("5.0.1", 20).fails_on(serial)}
    assert other != failing and 150 <= len(other) <= 250
    # A larger share holds the smaller one's terminals: the share is a threshold.
    assert failing <= {serial for serial in SERIALS if ImageHeader("5.0.0", 50).fails_on(serial)}
    assert not any(ImageHeader("5.0.0", 0).fails_on(serial) for serial in SERIALS)
    assert all(ImageHeader("5.0.0", 100).fails_on(serial) for serial in SERIALS)


def test_boot_draws_spread_over_the_range() -> None:
    draws = [boot_draw(serial, "6.0.0") for serial in SERIALS]
    assert all(0 <= draw < 100 for draw in draws)
    assert sum(draw < 50 for draw in draws) in range(450, 551)


def _install(serial: str, image: bytes) -> tuple[str, str, InfoFlags]:
    """(firmware before, firmware after, flags after) of a terminal given ``image``."""
    clock = FakeClock()
    backend = SimulatedUsbBackend.for_serial(serial, clock=clock)
    driver = open_terminal(backend=backend)
    before = driver.device_info().firmware
    driver.transfer_firmware(image)
    driver.boot_firmware()
    assert list(backend.enumerate_devices()) == []  # answered: it left the bus to restart
    clock.now += RESTART_S
    after = open_terminal(backend=backend).device_info()
    return before, after.firmware, after.flags


def test_the_terminals_the_share_picks_roll_back_and_the_others_boot() -> None:
    image = make_image("7.0.0", fail_boot_percent=20)
    header = parse_image_header(image)
    assert header is not None
    unlucky = next(serial for serial in SERIALS if header.fails_on(serial))
    lucky = next(serial for serial in SERIALS if not header.fails_on(serial))
    before, after, flags = _install(unlucky, image)
    assert (after, flags) == (before, InfoFlags.ROLLED_BACK)
    _, after, flags = _install(lucky, image)
    assert (after, flags) == ("7.0.0", InfoFlags.NONE)
