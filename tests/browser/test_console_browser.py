"""The console in headless Chromium: sign in through the form, watch the list update live."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import text

from tests.fixtures.console import TEST_PASSWORD, Fleet

pytestmark = [pytest.mark.browser, pytest.mark.integration]

# Playwright waits 5 s for an expectation by default: too short on a busy 2-core machine.
expect.set_options(timeout=30_000)


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context(viewport={"width": 1366, "height": 860})
    page = context.new_page()
    yield page
    context.close()


def test_sign_in_and_see_the_list_change_without_reloading(
    page: Page, live_console: str, fleet: Fleet, make_user: Callable[..., str], screenshots: Path
) -> None:
    now = datetime.now(UTC)
    fleet.add_terminal("TC-0001", customer="Acme Grocers", store="S014", status="online")
    fleet.add_terminal(
        "TC-0002",
        customer="Acme Grocers",
        store="S015",
        status="offline",
        reason="heartbeat timeout",
        firmware="2.3.9",
        heartbeat=now - timedelta(minutes=12),
    )
    fleet.add_terminal(
        "TC-0003",
        customer="Bolt Pharmacy",
        status="error",
        reason="PIN pad not responding",
        cpu=96.0,
    )
    fleet.add_terminal("TC-0004", customer="Bolt Pharmacy", status="unknown", heartbeat=None)
    make_user("olga", "admin")
    # A day of fleet samples, as ingest writes them: 3 of 4 online, then 2 of 4.
    with fleet.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO fleet_sample (bucket, customer_id, in_service, online, offline,"
                " error, unknown, maintenance) SELECT b, c.id, 2,"
                " CASE WHEN b < now() - interval '3 hours' THEN 2 ELSE 1 END, 0, 0, 0, 0"
                " FROM customer c, generate_series(now() - interval '24 hours', now(),"
                " interval '5 minutes') b"
            )
        )
        # What the sampler adds with each sample (ingest.fleet_samples).
        conn.execute(
            text(
                "INSERT INTO fleet_sample_total SELECT bucket, sum(in_service), sum(online)"
                " FROM fleet_sample GROUP BY bucket"
            )
        )
        conn.execute(
            text(
                "INSERT INTO fleet_sample_daily SELECT date_trunc('day', bucket, 'UTC'),"
                " customer_id, count(*), sum(in_service), sum(online) FROM fleet_sample"
                " GROUP BY 1, 2"
            )
        )

    page.goto(live_console + "/")
    expect(page).to_have_url(live_console + "/login?next=%2F")

    page.fill("#username", "olga")
    page.fill("#password", "not the password")
    page.click("button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("Wrong username or password.")
    page.screenshot(path=screenshots / "console-login.png")

    page.fill("#password", TEST_PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(live_console + "/")
    expect(page.locator("#total-terminals")).to_have_text("4")
    expect(page.locator("#total-error")).to_have_text("1")
    page.screenshot(path=screenshots / "console-dashboard.png", full_page=True)
    page.click("nav >> text=Terminals")
    expect(page).to_have_url(live_console + "/terminals")
    row = page.locator('tr[data-serial="TC-0001"]')
    expect(row.locator(".badge")).to_have_text("online")
    expect(page.locator('tr[data-serial="TC-0002"] .reason')).to_have_text("heartbeat timeout")
    expect(page.locator("#count-online")).to_have_text("1")
    expect(page.locator("#live-status")).to_contain_text("updated")
    page.screenshot(path=screenshots / "console-terminals.png", full_page=True)

    # A marker on window survives only if the page is never reloaded.
    page.evaluate("window.tmsNoReload = true")
    fleet.set_status(
        "TC-0001", "offline", "last will: connection lost", heartbeat=now - timedelta(hours=3)
    )
    expect(row.locator(".badge")).to_have_text("offline")
    expect(row.locator(".reason")).to_have_text("last will: connection lost")
    expect(row.locator(".heartbeat")).to_have_text("3 h ago")
    expect(page.locator("#count-online")).to_have_text("0")
    expect(page.locator("#count-offline")).to_have_text("2")
    assert page.evaluate("window.tmsNoReload") is True

    page.click('a:has-text("TC-0001")')
    expect(page.locator("h1")).to_have_text("TC-0001")
    expect(page.locator("#status-history")).to_contain_text("last will: connection lost")
