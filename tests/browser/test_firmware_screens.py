"""The firmware library screen in headless Chromium, on a laptop and on a phone, with a
library long enough to push the upload form below the fold and values as long as the
rules allow: an upload refused for its version comes back with the reason beside the
field and in view, what was typed kept, and nothing spills out sideways (the page, the
navigation bar)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Browser, Page, ViewportSize, expect
from sqlmodel import Session

from console.db import engine_of
from console.server import ConsoleServer
from rollouts import library
from shared.models import FirmwareState
from shared.ports import free_port
from tests.fixtures.console import TEST_PASSWORD
from tests.fixtures.firmware import firmware_image

pytestmark = [pytest.mark.browser, pytest.mark.integration]

expect.set_options(timeout=30_000)

NOTES = (
    "Fixes the contactless timeout on cold mornings; adds PIN-pad backlight control; updates "
    "the EMV kernel to 4.3.1 with the new CVM list; cuts boot time by 2 s; logs USB resets "
    "with their cause."
)
# Ten images: with the counts above them, the upload form starts below a laptop's fold.
VERSIONS = ("1.2.3-rc.1+build.9999", "10.20.30-beta.12345+build.abcde") + tuple(
    f"2.{n}.0" for n in range(8)
)
SIZES: dict[str, ViewportSize] = {
    "laptop": {"width": 1366, "height": 768},
    "phone": {"width": 390, "height": 844},
}


@pytest.fixture
def console_url(firmware_app: Flask, firmware_library: library.Library) -> Iterator[str]:
    with Session(engine_of(firmware_app)) as session:
        for n, version in enumerate(VERSIONS):
            notes = NOTES if n == 0 else "x" * 200 if n == 1 else ""  # 200 characters, no space
            library.add_image(
                session, firmware_library, image=firmware_image(version), filename="tc200.img",
                version=version, models=("TC-200",), notes=notes, actor="rita",
            )  # fmt: skip
        library.change_state(session, VERSIONS[1], FirmwareState.RELEASED, "rita")
        library.change_state(session, "2.0.0", FirmwareState.DEPRECATED, "rita")
        session.commit()
    server = ConsoleServer(firmware_app, "127.0.0.1", free_port(), threads=4)
    thread = threading.Thread(target=server.serve, name="console-server", daemon=True)
    thread.start()
    yield server.url
    server.stop()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the console server did not stop"


def assert_nothing_spills(page: Page, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    bar = page.locator("header.topbar").bounding_box()
    nav = page.locator("nav.mainnav").bounding_box()
    assert bar is not None and nav is not None
    assert nav["y"] + nav["height"] <= bar["y"] + bar["height"] + 0.5  # not over the page


@pytest.mark.parametrize("size", SIZES)
def test_a_refused_upload_shows_its_reason_in_view_and_nothing_spills_sideways(
    chromium: Browser,
    console_url: str,
    make_user: Callable[..., str],
    screenshots: Path,
    size: str,
) -> None:
    context = chromium.new_context(viewport=SIZES[size])
    page = context.new_page()
    try:
        make_user("ada", "admin")
        page.goto(console_url + "/login")
        page.fill("#username", "ada")
        page.fill("#password", TEST_PASSWORD)
        page.click("main button[type=submit]")
        expect(page.locator(".who-name")).to_have_text("ada")
        page.goto(console_url + "/firmware")
        expect(page.locator("#firmware-table tbody tr")).to_have_count(len(VERSIONS))
        expect(page.locator("#version-error")).to_have_count(0)
        assert_nothing_spills(page, SIZES[size]["width"])

        # The header of the file announces 9.9.9; the admin typed another version.
        page.set_input_files(
            "#file",
            {"name": "tc200.img", "mimeType": "application/octet-stream",
             "buffer": firmware_image("9.9.9")},
        )  # fmt: skip
        page.fill("#version", "1.2.3-rc.2")
        page.fill("#notes", NOTES)
        page.click("#upload button[type=submit]")

        reason = page.locator("#version-error")
        expect(reason).to_contain_text("announces version '9.9.9', not '1.2.3-rc.2'")
        expect(reason).to_be_in_viewport()  # no scrolling to find out why
        expect(page.locator("#version")).to_have_attribute("aria-invalid", "true")
        expect(page.locator("#version")).to_have_value("1.2.3-rc.2")
        expect(page.locator("#notes")).to_have_value(NOTES)
        expect(page.locator("#file-again")).to_be_visible()  # the file is not kept
        assert_nothing_spills(page, SIZES[size]["width"])
        page.screenshot(path=screenshots / f"console-firmware-refused-{size}.png")
    finally:
        context.close()
