"""The console's screens in headless Chromium, as an operator works through them: find
a terminal by search and open it, export the list as CSV, create a customer, read a
monthly report and download its PDF. Screenshots of each screen for people to look at."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import text

from console.report_model import ReportMonth
from ingest.uptime_snapshots import refresh_uptime_snapshots
from shared.db import libpq_url
from tests.fixtures.console import TEST_PASSWORD, Fleet
from tests.integration.test_reports import pdf_text

pytestmark = [pytest.mark.browser, pytest.mark.integration]

expect.set_options(timeout=30_000)


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context(viewport={"width": 1366, "height": 900}, accept_downloads=True)
    yield context.new_page()
    context.close()


@pytest.fixture
def stocked(fleet: Fleet) -> Fleet:
    now = datetime.now(UTC)
    for n in range(12):
        fleet.add_terminal(
            f"TC-{n:04d}",
            customer="Acme Grocers" if n < 8 else "Bolt Pharmacy",
            store=f"S{n % 3:02d}",
            status="error" if n == 3 else ("offline" if n == 5 else "online"),
            reason="PIN pad not responding" if n == 3 else None,
            cpu=10.0 + n * 7,
        )
    with fleet.engine.begin() as conn:
        conn.execute(text("UPDATE terminal SET host_name = 'POS-' || right(serial, 2)"))
        conn.execute(text("UPDATE store SET timezone = 'Europe/Berlin'"))
        # A day of heartbeats and a month of hourly rollups for the terminal we open.
        conn.execute(
            text(
                "INSERT INTO telemetry (terminal_id, message_id, ts, device_status, cpu_pct,"
                " memory_pct, disk_pct) SELECT t.id, 'm' || n, now() - make_interval("
                "mins => n * 5), 'ok', 20 + 15 * sin(n / 20.0), 45 + n % 7, 61"
                " FROM terminal t, generate_series(0, 287) n WHERE t.serial = 'TC-0003'"
            )
        )
        conn.execute(
            text(
                "INSERT INTO telemetry_hourly (terminal_id, hour, samples, error_samples,"
                " cpu_avg, memory_avg, disk_avg) SELECT t.id, date_trunc('hour', now())"
                " - make_interval(hours => n), 12 - (n % 50 = 0)::int * 6, 0,"
                " 25 + 10 * sin(n / 30.0), 50, 60 + n / 100.0"
                " FROM terminal t, generate_series(1, 720) n WHERE t.serial = 'TC-0003'"
            )
        )
        # Last month: TC-0005 offline for its last ten days.
        start, end = ReportMonth.last_full(now).bounds(ZoneInfo("UTC"))
        conn.execute(
            text(
                "INSERT INTO status_change (terminal_id, at, old_status, new_status, reason)"
                " SELECT id, :at, 'online', 'offline', 'heartbeat timeout' FROM terminal"
                " WHERE serial = 'TC-0005'"
            ),
            {"at": end - timedelta(days=10)},
        )
        conn.execute(
            text(
                "UPDATE terminal SET created_at = :start - interval '1 day',"
                " installed_at = :start - interval '1 day'"
            ),
            {"start": start},
        )
        # Each came online when it was installed (what ingest records).
        conn.execute(
            text(
                "INSERT INTO status_change (terminal_id, at, old_status, new_status, reason)"
                " SELECT id, installed_at, NULL, 'online', 'first heartbeat' FROM terminal"
            )
        )
    return fleet


def sign_in(page: Page, base: str, username: str) -> None:
    page.goto(base + "/login")
    page.fill("#username", username)
    page.fill("#password", TEST_PASSWORD)
    page.click("main button[type=submit]")
    expect(page.locator(".who-name")).to_have_text(username)


def test_find_a_terminal_open_it_and_export_the_list(
    page: Page, live_console: str, stocked: Fleet, make_user: Callable[..., str],
    screenshots: Path,
) -> None:  # fmt: skip
    make_user("otto", "operator")
    sign_in(page, live_console, "otto")
    page.fill("input[aria-label='Find a terminal by serial']", "0003")
    page.click("main button:has-text('Find')")
    expect(page.locator("#terminal-table tbody tr")).to_have_count(1)
    page.click("nav >> text=Terminals")
    page.fill("#terminal-filters input[name=q]", "pos-0")
    page.select_option("#terminal-filters select[name=customer]", "Acme Grocers")
    page.click("#terminal-filters button[type=submit]")
    expect(page.locator("#terminal-table tbody tr")).to_have_count(8)
    page.click("#terminal-table th >> text=CPU")
    expect(page.locator("#terminal-table tbody tr").first).to_have_attribute(
        "data-serial", "TC-0000"
    )
    page.screenshot(path=screenshots / "console-terminals-search.png", full_page=True)
    with page.expect_download() as download_info:
        page.click("#csv-export")
    csv_text = Path(download_info.value.path()).read_text()
    lines = csv_text.splitlines()
    assert lines[0].startswith("serial,status") and len(lines) == 9
    assert lines[1].startswith("TC-0000,online")  # the view's order: CPU ascending

    page.click("#terminal-table >> text=TC-0003")
    expect(page.locator("h1")).to_have_text("TC-0003")
    expect(page.locator("#chart-cpu path")).to_have_count(2)
    expect(page.locator("main")).to_contain_text("times in Europe/Berlin")
    page.screenshot(path=screenshots / "console-terminal.png", full_page=True)
    page.click(".period-tabs >> text=30d")
    expect(page.locator(".period-tabs a.active")).to_have_text("30d")
    page.fill("#maintenance input[name=note]", "PIN pad swap")
    page.click("#maintenance button[type=submit]")
    expect(page.locator("#maintenance-badge")).to_be_visible()
    expect(page.locator("#terminal-audit")).to_contain_text("terminal.maintenance_on")


def test_create_a_customer_and_read_its_monthly_report(
    page: Page, live_console: str, stocked: Fleet, make_user: Callable[..., str],
    screenshots: Path,
) -> None:  # fmt: skip
    make_user("otto", "operator")
    sign_in(page, live_console, "otto")
    page.click("nav >> text=Customers")
    page.click("#new-customer")
    page.fill("#name", "Corner Café")
    page.fill("#email", "not an address")
    page.click("#customer-form button[type=submit]")
    expect(page.locator("#email-error")).to_be_visible()
    page.screenshot(path=screenshots / "console-customer-form-error.png")
    page.fill("#email", "ops@corner.example")
    page.fill("#contact_person", "Ana Silva")
    page.select_option("#contract_type", "premium")
    page.fill("#timezone", "Europe/Lisbon")
    page.click("#customer-form button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Corner Café")
    page.click("nav >> text=Customers")
    expect(page.locator("main")).to_contain_text("Corner Café")
    page.screenshot(path=screenshots / "console-customers.png", full_page=True)
    page.click("main >> text=Acme Grocers")
    page.screenshot(path=screenshots / "console-customer.png", full_page=True)

    page.click("nav >> text=Reports")
    page.select_option("#report-customer", "Acme Grocers")
    page.click("#report-form button[type=submit]")
    expect(page.locator("#report-title")).to_contain_text("Acme Grocers")
    expect(page.locator("#summary-terminals")).to_have_text("8")
    # Seven terminals online all month, TC-0005 for all but its last ten days.
    start, end = ReportMonth.last_full(datetime.now(UTC)).bounds(ZoneInfo("UTC"))
    days = (end - start).days
    expect(page.locator("#summary-uptime")).to_have_text(f"{(8 * days - 10) / (8 * days):.2%}")
    page.screenshot(path=screenshots / "console-report.png", full_page=True)
    with page.expect_download() as download_info:
        page.click("#report-pdf")
    download = download_info.value
    assert download.suggested_filename.endswith(".pdf")
    data = Path(download.path()).read_bytes()
    assert data.startswith(b"%PDF-")
    text_of_pdf = pdf_text(data)
    assert b"Acme Grocers" in text_of_pdf and b"TC-0005" in text_of_pdf


def test_from_a_customer_to_a_store_and_on_to_its_terminal(
    page: Page, live_console: str, stocked: Fleet, make_user: Callable[..., str],
    screenshots: Path,
) -> None:  # fmt: skip
    make_user("vera", "viewer")
    sign_in(page, live_console, "vera")
    page.click("nav >> text=Customers")
    page.click("main >> text=Acme Grocers")
    page.click("#stores-table >> text=S00")
    expect(page.locator("h1")).to_contain_text("S00")
    # Acme's S00 holds TC-0000, TC-0003 (in error) and TC-0006: Bolt's S00 is another store.
    rows = page.locator("#store-terminals-table tbody tr")
    expect(rows).to_have_count(3)
    expect(page.locator("#count-error")).to_have_text("1")
    expect(page.locator("#store-terminals-table")).to_contain_text("PIN pad not responding")
    expect(page.locator("#store-terminals-table")).not_to_contain_text("TC-0009")
    expect(page.locator("#edit-store")).to_have_count(0)  # a viewer
    page.screenshot(path=screenshots / "console-store.png", full_page=True)
    page.click("#store-terminals-table >> text=TC-0003")
    expect(page.locator("h1")).to_have_text("TC-0003")
    page.click("#terminal-store")
    expect(page.locator("h1")).to_contain_text("S00")


def test_the_fleet_report_of_this_month_says_how_fresh_its_uptime_is(
    page: Page, live_console: str, stocked: Fleet, make_user: Callable[..., str],
    screenshots: Path,
) -> None:  # fmt: skip
    """Ingest keeps the fleet's uptime a few minutes old; the report says up to when."""
    now = datetime.now(UTC)
    url = libpq_url(stocked.engine.url.render_as_string(hide_password=False))

    async def refresh() -> None:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            await refresh_uptime_snapshots(conn, now)

    # Playwright's sync API runs an event loop in this thread: ingest's code runs in another.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, refresh()).result()
    make_user("vera", "viewer")
    sign_in(page, live_console, "vera")
    page.goto(f"{live_console}/reports/{now:%Y-%m}")
    expect(page.locator("#report-title")).to_contain_text("The whole fleet")
    expect(page.locator("#uptime-through")).to_contain_text("uptime counted to")
    expect(page.locator("main")).to_contain_text("Bolt Pharmacy")
    page.screenshot(path=screenshots / "console-report-fleet.png", full_page=True)
