"""Remote commands in headless Chromium: buttons per role, send and cancel, a diagnostics
report, a bulk command from the list. Results are written to the database directly, as
ingest would: the sender is not part of these tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlmodel import Session, col, select

from shared.db import make_engine
from shared.models import CommandRow
from tests.fixtures.console import TEST_PASSWORD, Fleet, diagnostics_result

pytestmark = [pytest.mark.browser, pytest.mark.integration]

expect.set_options(timeout=30_000)

ALL_COMMANDS = {
    "ping", "diagnostics", "fetch_logs", "reboot", "restart_agent", "reset_usb", "set_config",
}  # fmt: skip


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def sign_in_as(
    page: Page, live_console: str, make_user: Callable[..., str]
) -> Callable[[str, str], Page]:
    def sign_in(username: str, role: str) -> Page:
        make_user(username, role)
        page.goto(live_console + "/login")
        page.fill("#username", username)
        page.fill("#password", TEST_PASSWORD)
        page.click("button[type=submit]")
        expect(page).to_have_url(live_console + "/")
        return page

    return sign_in


@pytest.fixture
def commands_in(database_url: str) -> Iterator[Callable[[], list[CommandRow]]]:
    engine = make_engine(database_url, pool_size=1)

    def rows() -> list[CommandRow]:
        with Session(engine) as session:
            return list(session.exec(select(CommandRow).order_by(col(CommandRow.created_at))).all())

    yield rows
    engine.dispose()


def _buttons(page: Page) -> set[str]:
    return set(page.locator("#commands form[data-command]").evaluate_all(
        "forms => forms.map(f => f.dataset.command)"
    ))  # fmt: skip


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("viewer", set()),
        ("support", {"ping", "diagnostics", "fetch_logs"}),
        ("operator", ALL_COMMANDS),
    ],
)
def test_buttons_per_role(
    sign_in_as: Callable[[str, str], Page],
    live_console: str,
    fleet: Fleet,
    role: str,
    expected: set[str],
) -> None:
    fleet.add_terminal("TC-0001")
    page = sign_in_as(f"{role}-user", role)
    page.goto(live_console + "/terminals/TC-0001")
    expect(page.locator("#commands h2")).to_have_text("Commands")
    if not expected:
        expect(page.locator("#commands-none")).to_be_visible()
    assert _buttons(page) == expected


def test_send_then_cancel_a_queued_command_without_reloading(
    sign_in_as: Callable[[str, str], Page],
    live_console: str,
    fleet: Fleet,
    commands_in: Callable[[], list[CommandRow]],
    screenshots: Path,
) -> None:
    fleet.add_terminal("TC-0001", customer="Acme Grocers", status="offline", reason="last will")
    fleet.set_facts("TC-0001", model="TC-200", uptime_s=93_784)
    fleet.add_log("TC-0001", "receipt paper low", severity="warning", code="printer.paper_low")
    page = sign_in_as("olga", "operator")
    page.goto(live_console + "/terminals/TC-0001")

    # A risky command asks first; saying no sends nothing.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click('form[data-command="reboot"] button')
    expect(page.locator("#commands")).to_be_visible()
    assert commands_in() == []

    page.fill("#arg-fetch_logs-lines", "50")
    page.click('form[data-command="fetch_logs"] button')
    expect(page.locator(".flash-info")).to_contain_text("queued for TC-0001")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click('form[data-command="reboot"] button')
    expect(page.locator("#command-table tbody tr")).to_have_count(2)
    [logs, reboot] = commands_in()
    assert (logs.name, logs.args, reboot.name) == ("fetch_logs", {"lines": 50}, "reboot")

    page.evaluate("window.tmsNoReload = true")
    row = page.locator(f"#command-{reboot.id}")
    expect(row.locator(".badge")).to_have_text("queued")
    # The history follows the database without a reload: the log arrives.
    fleet.finish_command(logs.id, "succeeded", {"lines": ["one", "two", "three"]})
    expect(page.locator(f"#command-{logs.id} .badge")).to_have_text("succeeded")
    expect(page.locator(f"#command-{logs.id} .result")).to_contain_text("3 log lines")
    assert page.evaluate("window.tmsNoReload") is True
    page.screenshot(path=screenshots / "terminal-commands.png", full_page=True)

    row.locator("button", has_text="Cancel").click()
    expect(page.locator(f"#command-{reboot.id} .badge")).to_have_text("cancelled")
    expect(page.locator(f"#command-{reboot.id} button")).to_have_count(0)
    assert commands_in()[1].cancelled_by == "olga"

    page.click(f"#command-{logs.id} a.result-link")
    expect(page.locator("#log-output pre")).to_have_text("one\ntwo\nthree")


def test_a_set_config_field_error_is_shown_on_the_page(
    sign_in_as: Callable[[str, str], Page],
    live_console: str,
    fleet: Fleet,
    commands_in: Callable[[], list[CommandRow]],
    screenshots: Path,
) -> None:
    fleet.add_terminal("TC-0001")
    page = sign_in_as("olga", "operator")
    page.goto(live_console + "/terminals/TC-0001")
    page.fill("#arg-set_config-display_brightness", "150")
    page.fill("#arg-set_config-timezone", "Europe/Berlin")
    page.click('form[data-command="set_config"] button')
    expect(page.locator("#command-error")).to_contain_text("Display brightness")
    expect(page.locator("#arg-set_config-display_brightness")).to_have_attribute(
        "aria-invalid", "true"
    )
    expect(page.locator("#arg-set_config-timezone")).to_have_value("Europe/Berlin")
    page.locator("#commands").screenshot(path=screenshots / "terminal-field-error.png")
    assert commands_in() == []


def test_diagnostics_report_from_a_stored_result(
    sign_in_as: Callable[[str, str], Page],
    live_console: str,
    fleet: Fleet,
    commands_in: Callable[[], list[CommandRow]],
    screenshots: Path,
) -> None:
    fleet.add_terminal("TC-0001", customer="Acme Grocers")
    page = sign_in_as("sam", "support")
    page.goto(live_console + "/terminals/TC-0001")
    page.click('form[data-command="diagnostics"] button')
    expect(page.locator(".flash-info")).to_contain_text("Diagnostics queued for TC-0001")
    [command] = commands_in()
    expect(page.locator(f"#command-{command.id} .badge")).to_have_text("queued")
    fleet.finish_command(command.id, "succeeded", diagnostics_result())
    summary = "3 of 11 checks failed; first: USB link — device does not answer; 1 warning"
    expect(page.locator(f"#command-{command.id} .result")).to_contain_text(summary)

    page.click(f"#command-{command.id} a.result-link")
    expect(page.locator("#report-summary")).to_have_text(summary)
    first = page.locator(".check").first
    expect(first).to_have_attribute("data-check", "usb_link")
    expect(first.locator(".outcome")).to_have_text("failed")
    expect(first.locator(".first-failure")).to_be_visible()
    expect(page.locator(".check-failed")).to_have_count(3)
    expect(page.locator('.check[data-check="clock_offset"] .check-data')).to_contain_text(
        "offset_s"
    )
    tail = page.locator("#log-tail pre")
    expect(tail).to_be_hidden()
    page.click("#log-tail summary")
    expect(tail).to_contain_text("line 39")
    page.screenshot(path=screenshots / "diagnostics-report.png", full_page=True)


def test_bulk_command_from_the_list(
    sign_in_as: Callable[[str, str], Page],
    live_console: str,
    fleet: Fleet,
    commands_in: Callable[[], list[CommandRow]],
    screenshots: Path,
) -> None:
    for number in range(5):
        fleet.add_terminal(f"AG-{number:04d}", customer="Acme Grocers", store=f"S0{number % 2}")
    fleet.add_terminal("BP-0001", customer="Bolt Pharmacy")
    page = sign_in_as("olga", "operator")
    page.goto(live_console + "/terminals?customer=Acme+Grocers")
    expect(page.locator("#bulk-link")).to_contain_text("these 5 terminals")
    page.click("#bulk-link")
    expect(page.locator("#bulk-count")).to_have_text("5")
    expect(page.locator("#bulk-selection")).to_contain_text("customer Acme Grocers")
    page.check('input[name=name][value="fetch_logs"]')
    expect(page.locator('fieldset[data-for="fetch_logs"]')).to_be_visible()
    expect(page.locator('fieldset[data-for="set_config"]')).to_be_hidden()
    page.screenshot(path=screenshots / "bulk-choose.png", full_page=True)
    page.check('input[name=name][value="reboot"]')
    expect(page.locator('fieldset[data-for="fetch_logs"]')).to_be_hidden()
    page.fill("#rate", "0.5")
    page.click("button:has-text('Review')")
    expect(page.locator("#bulk-confirm")).to_contain_text("5 terminals of 1 customer")
    expect(page.locator("#bulk-sample")).to_have_text("AG-0000, AG-0001, AG-0002, AG-0003, AG-0004")
    expect(page.locator("#bulk-send")).to_have_text("Reboot terminal on 5 terminals")
    page.screenshot(path=screenshots / "bulk-confirm.png", full_page=True)
    assert commands_in() == []

    page.click("#bulk-send")
    expect(page.locator("#bulk-queued")).to_have_text("5")
    page.evaluate("window.tmsNoReload = true")
    first, second = commands_in()[:2]
    fleet.finish_command(first.id, "succeeded", {"rebooting": True})
    fleet.finish_command(second.id, "failed", None, error="device does not answer")
    expect(page.locator("#bulk-succeeded")).to_have_text("1")
    expect(page.locator("#bulk-failed")).to_have_text("1")
    expect(page.locator("#bulk-done")).to_contain_text("2 of 5 finished")
    expect(page.locator("#bulk-problems")).to_contain_text("device does not answer")
    assert page.evaluate("window.tmsNoReload") is True
    page.screenshot(path=screenshots / "bulk-progress.png", full_page=True)

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#bulk-cancel")
    expect(page.locator("#bulk-cancelled")).to_have_text("3")
    expect(page.locator("#bulk-cancel")).to_have_count(0)
    page.screenshot(path=screenshots / "bulk-stopped.png", full_page=True)
