"""The alerts screen in headless Chromium: an operator ticks alerts, acknowledges and
resolves them in bulk; the list keeps itself fresh without a reload."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from pydantic import SecretStr
from sqlalchemy import text

from shared.settings import ConsoleSettings
from tests.fixtures.console import TEST_PASSWORD, Fleet

pytestmark = [pytest.mark.browser, pytest.mark.integration]

# Playwright waits 5 s for an expectation by default: too short on a busy 2-core machine.
expect.set_options(timeout=30_000)
# A refresh slower than any test: the page stays as the test left it.
NO_REFRESH_S = 3600


@pytest.fixture
def console_settings(request: pytest.FixtureRequest) -> ConsoleSettings:
    """The test console, refreshing live parts every second unless a test asks otherwise
    (``@pytest.mark.parametrize("console_settings", [seconds], indirect=True)``)."""
    refresh_s = getattr(request, "param", 1)
    return ConsoleSettings(
        secret_key=SecretStr("test-secret-key-0123456789abcdef"), refresh_s=refresh_s
    )


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    yield page
    context.close()


def add_alert(
    fleet: Fleet, serial: str, kind: str, message: str, minutes_ago: float, **extra: object
) -> int:
    """An alert as ingest raises it, on the terminal ``serial``."""
    columns = {"severity": "critical", "incident_id": None, **extra}
    with fleet.engine.begin() as conn:
        alert_id = conn.execute(
            text(
                "INSERT INTO alert (scope, kind, severity, status, message, count, terminal_id,"
                " customer_id, raised_at, incident_id)"
                " SELECT 'terminal:' || id || ':' || :kind, :kind, :severity, 'open', :message,"
                " 1, id, customer_id, now() - make_interval(secs => :ago), :incident_id"
                " FROM terminal WHERE serial = :serial RETURNING id"
            ),
            {"serial": serial, "kind": kind, "message": message, "ago": minutes_ago * 60,
             **columns},
        ).scalar_one()  # fmt: skip
    return int(alert_id)


def add_storm(fleet: Fleet, serials: list[str]) -> int:
    """A storm incident grouping one offline alert of each terminal."""
    with fleet.engine.begin() as conn:
        incident = conn.execute(
            text(
                "INSERT INTO incident (status, severity, summary, alert_count, opened_at,"
                " last_alert_at) VALUES ('open', 'critical', 'alert storm: more than 50 alerts"
                " within 60 s', :n, now() - interval '25 minutes', now()) RETURNING id"
            ),
            {"n": len(serials)},
        ).scalar_one()
    for n, serial in enumerate(serials):
        add_alert(fleet, serial, "offline", f"{serial} is offline: connection lost",
                  25 - n * 0.01, incident_id=incident)  # fmt: skip
    return int(incident)


def sign_in(page: Page, live_console: str, username: str) -> None:
    page.goto(live_console + "/alerts")
    page.fill("#username", username)
    page.fill("#password", TEST_PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(live_console + "/alerts")


def a_fleet_with_alerts(fleet: Fleet) -> dict[str, int]:
    for n, (customer, store) in enumerate(
        [("Acme Grocers", "S014"), ("Acme Grocers", "S015"), ("Bolt Pharmacy", "S001")] * 4
    ):
        fleet.add_terminal(f"TC-{n + 1:04d}", customer=customer, store=store)
    storm = add_storm(fleet, [f"TC-{n:04d}" for n in range(5, 13)])
    return {
        "storm": storm,
        "pinpad": add_alert(fleet, "TC-0001", "error", "TC-0001: PIN pad not responding", 3),
        "disk": add_alert(
            fleet, "TC-0002", "disk", "TC-0002: disk 93% full", 7, severity="warning"
        ),  # fmt: skip
        "offline": add_alert(
            fleet, "TC-0003", "offline", "TC-0003 is offline: heartbeat missed", 12
        ),  # fmt: skip
        "printer": add_alert(
            fleet, "TC-0004", "error", "TC-0004: receipt printer out of paper", 40, severity="major"
        ),  # fmt: skip
    }


@pytest.mark.parametrize("console_settings", [NO_REFRESH_S], indirect=True)
def test_an_operator_acknowledges_two_alerts_then_resolves_them_with_a_note(
    page: Page,
    live_console: str,
    fleet: Fleet,
    make_user: Callable[..., str],
    screenshots: Path,
) -> None:
    alerts = a_fleet_with_alerts(fleet)
    make_user("olga", "operator")
    sign_in(page, live_console, "olga")
    main = page.locator("main")
    pinpad, disk = alerts["pinpad"], alerts["disk"]
    expect(main.locator(f"#alert-{pinpad}")).to_contain_text("PIN pad not responding")
    expect(main.locator(f"#incident-row-{alerts['storm']}")).to_contain_text("8 alerts")

    main.locator(f"#pick-{pinpad}").check()
    main.locator(f"#pick-{disk}").check()
    main.locator("#bulk-acknowledge").click()
    expect(main.locator(".flash")).to_have_text("2 alerts acknowledged.")
    expect(main.locator(f"#alert-{pinpad}")).to_contain_text("acknowledged")
    expect(main.locator(f"#alert-{disk}")).to_contain_text("by olga")
    expect(main.locator("#count-acknowledged")).to_have_text("2")

    # Resolve without a note: refused beside the field, the selection kept.
    main.locator(f"#pick-{pinpad}").check()
    main.locator(f"#pick-{disk}").check()
    main.locator("#bulk-resolve").click()
    expect(main.locator("#bulk-note-error")).to_contain_text("a note is required")
    expect(main.locator("#bulk-note")).to_have_attribute("aria-invalid", "true")
    expect(main.locator(f"#pick-{pinpad}")).to_be_checked()
    expect(main.locator(f"#pick-{disk}")).to_be_checked()

    main.locator("#bulk-note").fill("Store staff reseated the PIN pad and cleared the disk")
    main.locator("#bulk-resolve").click()
    expect(main.locator(".flash")).to_have_text("2 alerts resolved.")
    expect(main.locator(f"#alert-{pinpad}")).to_have_count(0)
    expect(main.locator(f"#alert-{disk}")).to_have_count(0)
    expect(main.locator(f"#alert-{alerts['offline']}")).to_be_visible()
    expect(main.locator("#count-acknowledged")).to_have_text("0")

    # The resolved list shows them with the note.
    page.select_option("#alert-filters select[name=status]", "resolved")
    main.locator("#alert-filters button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/alerts\?status=resolved&"))
    expect(main.locator(f"#alert-{pinpad}")).to_contain_text("Store staff reseated")

    # Back to the active list, the storm opened, for the picture.
    page.goto(live_console + "/alerts")
    main.locator(f"#incident-{alerts['storm']} summary").click()
    expect(main.locator(f"#incident-{alerts['storm']} .incident-members tr")).to_have_count(8)
    page.screenshot(path=screenshots / "alerts.png", full_page=True)


def test_the_list_refreshes_itself_and_keeps_an_open_incident_open(
    page: Page, live_console: str, fleet: Fleet, make_user: Callable[..., str]
) -> None:
    alerts = a_fleet_with_alerts(fleet)
    make_user("vera", "viewer")
    sign_in(page, live_console, "vera")
    main = page.locator("main")
    expect(main.locator('input[type="checkbox"]')).to_have_count(0)
    main.locator(f"#incident-{alerts['storm']} summary").click()
    page.evaluate("window.tmsNoReload = true")

    raised = add_alert(fleet, "TC-0001", "offline", "TC-0001 is offline: heartbeat missed", 0)
    expect(main.locator(f"#alert-{raised}")).to_be_visible()
    expect(main.locator("#count-open")).to_have_text("13")
    expect(main.locator("#live-status")).to_contain_text("updated")
    expect(main.locator(f"#incident-{alerts['storm']}")).to_have_attribute("open", "")
    assert page.evaluate("window.tmsNoReload") is True


def test_a_ticked_alert_stays_ticked_across_a_refresh(
    page: Page, live_console: str, fleet: Fleet, make_user: Callable[..., str]
) -> None:
    alerts = a_fleet_with_alerts(fleet)
    make_user("olga", "operator")
    sign_in(page, live_console, "olga")
    main = page.locator("main")
    main.locator(f"#pick-{alerts['pinpad']}").check()
    raised = add_alert(fleet, "TC-0001", "offline", "TC-0001 is offline", 0)
    expect(main.locator(f"#alert-{raised}")).to_be_visible()  # a refresh happened
    expect(main.locator(f"#pick-{alerts['pinpad']}")).to_be_checked(timeout=3_000)
