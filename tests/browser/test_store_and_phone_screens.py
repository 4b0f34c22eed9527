"""A customer's stores with their firmware install windows, and the customer's and a
terminal's pages on a phone, in headless Chromium: each store's window shows in the
customer's list in the store's own time, a window across midnight says it ends the next
day (list, store page, store form), and on a phone the wide tables scroll inside their
panels instead of widening the page. Screenshots for people to look at."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect
from sqlalchemy import text

from tests.fixtures.console import TEST_PASSWORD, Fleet

pytestmark = [pytest.mark.browser, pytest.mark.integration]

expect.set_options(timeout=30_000)

SIZES: dict[str, ViewportSize] = {
    "laptop": {"width": 1366, "height": 768},
    "phone": {"width": 390, "height": 844},
}
# Store code -> (time zone, install window as typed; None: any time).
STORES = {
    "BER-NIGHT": ("Europe/Berlin", "22:00-04:00"),
    "NYC-WEEK": ("America/New_York", "Mon-Fri 02:00-05:00"),
    "LIS-ANY": ("Europe/Lisbon", None),
}
LONG_MESSAGE = (
    "PIN pad not responding after the firmware install; the terminal rebooted three times "
    "and reports a tamper check failure on the card reader"
)


@pytest.fixture
def stores(fleet: Fleet) -> Fleet:
    for n, code in enumerate(STORES):
        fleet.add_terminal(
            f"TC-{n:04d}-LONG-SERIAL",
            customer="Acme Grocers",
            store=code,
            status="error" if n == 0 else "online",
            reason=LONG_MESSAGE if n == 0 else None,
        )
    with fleet.engine.begin() as conn:
        for code, (zone, window) in STORES.items():
            conn.execute(
                text("UPDATE store SET timezone = :zone, maintenance_window = :window"
                     " WHERE code = :code"),
                {"zone": zone, "window": window, "code": code},
            )  # fmt: skip
        conn.execute(text("UPDATE terminal SET host_name = 'POS-BACKOFFICE-' || right(serial, 6)"))
        conn.execute(
            text(
                "INSERT INTO alert (terminal_id, customer_id, scope, kind, severity, status,"
                " message, count) SELECT id, customer_id, 'terminal:' || id, 'device_error',"
                " 'critical', 'open', :message, 1 FROM terminal"
                " WHERE serial = 'TC-0000-LONG-SERIAL'"
            ),
            {"message": LONG_MESSAGE},
        )
    return fleet


def open_as(chromium: Browser, base: str, size: str, username: str) -> Page:
    page = chromium.new_context(viewport=SIZES[size]).new_page()
    page.goto(base + "/login")
    page.fill("#username", username)
    page.fill("#password", TEST_PASSWORD)
    page.click("main button[type=submit]")
    expect(page.locator(".who-name")).to_have_text(username)
    return page


def open_customer(page: Page) -> None:
    page.click("nav >> text=Customers")
    page.click("main >> text=Acme Grocers")
    expect(page.locator("h1")).to_have_text("Acme Grocers")


def row_of(page: Page, code: str) -> str:
    return page.locator("#stores-table tbody tr", has_text=code).inner_text()


@pytest.fixture
def operator(make_user: Callable[..., str]) -> Iterator[str]:
    make_user("otto", "operator")
    yield "otto"


def test_the_customer_lists_each_stores_install_window_in_its_own_time(
    chromium: Browser, live_console: str, stores: Fleet, operator: str, screenshots: Path
) -> None:
    page = open_as(chromium, live_console, "laptop", operator)
    try:
        open_customer(page)
        expect(page.locator("#stores-table thead")).to_contain_text("Install window")
        berlin = row_of(page, "BER-NIGHT")
        assert "22:00-04:00" in berlin and "ends the next day" in berlin
        assert "Europe/Berlin" in berlin
        new_york = row_of(page, "NYC-WEEK")
        assert "Mon-Fri 02:00-05:00" in new_york and "America/New_York" in new_york
        assert "next day" not in new_york
        assert "any time" in row_of(page, "LIS-ANY")
        page.screenshot(path=screenshots / "console-customer-stores-laptop.png", full_page=True)

        page.click("#stores-table >> text=BER-NIGHT")
        window = page.locator("#maintenance-window")
        expect(window).to_contain_text("22:00-04:00")
        expect(window).to_contain_text("ends the next day")
        page.screenshot(path=screenshots / "console-store-window-laptop.png", full_page=True)

        page.click("#edit-store")
        expect(page.locator("#maintenance_window")).to_have_value("22:00-04:00")
        expect(page.locator("#maintenance-window-next-day")).to_contain_text("ends the next day")
        page.screenshot(path=screenshots / "console-store-form-laptop.png", full_page=True)

        # A window within one day says nothing of the next.
        page.goto(live_console + "/customers")
        open_customer(page)
        page.click("#stores-table >> text=NYC-WEEK")
        expect(page.locator("#maintenance-window")).to_contain_text("Mon-Fri 02:00-05:00")
        expect(page.locator("#maintenance-window")).not_to_contain_text("next day")
        page.click("#edit-store")
        expect(page.locator("#maintenance-window-next-day")).to_have_count(0)
    finally:
        page.context.close()


def test_on_a_phone_the_customer_and_terminal_pages_do_not_widen(
    chromium: Browser, live_console: str, stores: Fleet, operator: str, screenshots: Path
) -> None:
    width = SIZES["phone"]["width"]
    page = open_as(chromium, live_console, "phone", operator)
    try:
        open_customer(page)
        expect(page.locator("#alerts-table")).to_contain_text("tamper check")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        page.screenshot(path=screenshots / "console-customer-phone.png", full_page=True)

        page.goto(live_console + "/terminals/TC-0000-LONG-SERIAL")
        expect(page.locator("h1")).to_have_text("TC-0000-LONG-SERIAL")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        page.screenshot(path=screenshots / "console-terminal-phone.png", full_page=True)
    finally:
        page.context.close()
