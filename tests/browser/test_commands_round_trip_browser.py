"""Diagnostics from the console in Chromium, through the whole platform: `tms up` with a
simulated terminal, the button, the sender, the agent over its faked USB device,
ingest, and the report on the page, updated without a reload."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.integration.platform import Platform, running_platform, tms

pytestmark = [pytest.mark.browser, pytest.mark.integration]

SERIAL = "SIM000001"
PASSWORD = "round-trip-password-1"


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    with running_platform(simulate=1) as running:
        yield running


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context(viewport={"width": 1366, "height": 900})
    yield context.new_page()
    context.close()


def _sign_in(page: Page, platform: Platform, username: str, role: str) -> str:
    added = tms(
        "user", "add", username, "--role", role, "--password-stdin", env=platform.env(),
        input_text=PASSWORD + "\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    base = f"http://127.0.0.1:{platform.console_port}"
    page.goto(base + "/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(base + "/")
    return base


def test_diagnostics_from_the_console_round_trip(
    platform: Platform, page: Page, screenshots: Path
) -> None:
    base = _sign_in(page, platform, "sue", "support")
    page.goto(f"{base}/terminals/{SERIAL}")
    page.click('form[data-command="diagnostics"] button')
    expect(page.locator(".flash-info")).to_contain_text(f"Diagnostics queued for {SERIAL}")
    row = page.locator("#command-table tbody tr").first
    # The history refreshes by itself: queued, then the result from the agent.
    expect(row.locator(".badge")).to_have_text("succeeded", timeout=60_000)
    expect(row.locator(".result")).to_contain_text("checks")
    page.screenshot(path=screenshots / "round-trip-history.png", full_page=True)
    row.locator("a.result-link").click()
    expect(page.locator("#report-summary")).to_be_visible()
    expect(page.locator('.check[data-check="usb_link"] .outcome')).to_have_text("passed")
    expect(page.locator(".check")).to_have_count(11)
    page.screenshot(path=screenshots / "round-trip-report.png", full_page=True)


def test_a_viewer_has_no_buttons_and_the_api_refuses_it(platform: Platform, page: Page) -> None:
    base = _sign_in(page, platform, "val", "viewer")
    page.goto(f"{base}/terminals/{SERIAL}")
    expect(page.locator("#commands")).to_be_visible()
    expect(page.locator("form[data-command]")).to_have_count(0)
