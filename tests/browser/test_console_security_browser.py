"""The console's defences in headless Chromium: an admin adds a user, who must choose a
password; throttled sign-in; a copied session dies with logout; the IP allowlist."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from pydantic import SecretStr

from console.db import engine_of
from console.server import ConsoleServer
from shared.ports import free_port
from shared.settings import ConsoleSettings
from tests.fixtures.console import TEST_PASSWORD, build_app

pytestmark = [pytest.mark.browser, pytest.mark.integration]

expect.set_options(timeout=30_000)


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context(viewport={"width": 1366, "height": 860})
    yield context.new_page()
    context.close()


def sign_in(page: Page, base: str, username: str, password: str) -> None:
    page.goto(base + "/login")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("button[type=submit]")


def test_an_admin_adds_a_user_who_then_chooses_a_password(
    page: Page, chromium: Browser, live_console: str, make_user: Callable[..., str],
    screenshots: Path,
) -> None:  # fmt: skip
    make_user("olga", "admin")
    make_user("ivan", "operator")
    sign_in(page, live_console, "olga", TEST_PASSWORD)
    page.click("nav >> text=Users")
    expect(page.locator("h1")).to_have_text("Users")
    page.fill("#new-user input[name=username]", "dana")
    page.select_option("#new-user select[name=role]", "support")
    page.click("#new-user button[type=submit]")
    one_time = page.locator("#one-time-password").inner_text()
    assert len(one_time) >= 16
    page.screenshot(path=screenshots / "console-user-password.png")

    page.click(".crumbs >> text=Users")
    expect(page.locator("#users-table")).to_contain_text("must change password")
    page.screenshot(path=screenshots / "console-users.png", full_page=True)
    page.click("#users-table >> text=ivan")
    expect(page.locator("#user-tokens")).to_contain_text("No API tokens")
    page.screenshot(path=screenshots / "console-user.png", full_page=True)

    dana = chromium.new_context(viewport={"width": 1366, "height": 860}).new_page()
    sign_in(dana, live_console, "dana", one_time)
    expect(dana.locator("#must-change")).to_be_visible()
    dana.screenshot(path=screenshots / "console-change-password.png")
    dana.fill("#current", one_time)
    dana.fill("#new", "dana's own password")
    dana.fill("#confirm", "dana's own password")
    dana.click("main button[type=submit]")
    expect(dana.locator(".who-name")).to_have_text("dana")
    expect(dana.locator(".flash-info")).to_contain_text("Your password was changed")
    # A support user sees no admin screens.
    expect(dana.locator("nav >> text=Users")).to_have_count(0)
    dana.context.close()


def test_sign_in_is_throttled_after_five_wrong_passwords(
    page: Page, live_console: str, make_user: Callable[..., str], screenshots: Path
) -> None:
    make_user("olga", "admin")
    for _ in range(5):
        sign_in(page, live_console, "olga", "not the password")
        expect(page.locator("#login-error")).to_have_text("Wrong username or password.")
    sign_in(page, live_console, "olga", TEST_PASSWORD)
    expect(page.locator("#login-error")).to_contain_text(
        "Too many failed sign-ins for this username. Try again in 15 minutes."
    )
    page.screenshot(path=screenshots / "console-login-throttled.png")
    page.goto(live_console + "/")
    expect(page).to_have_url(live_console + "/login?next=%2F")


def test_a_copied_session_ends_with_sign_out(
    page: Page, chromium: Browser, live_console: str, make_user: Callable[..., str]
) -> None:
    make_user("olga", "viewer")
    sign_in(page, live_console, "olga", TEST_PASSWORD)
    expect(page.locator(".who-name")).to_have_text("olga")
    copy = chromium.new_context(storage_state=page.context.storage_state())
    other = copy.new_page()
    other.goto(live_console + "/")
    expect(other.locator(".who-name")).to_have_text("olga")
    page.click("text=Sign out")
    expect(page.locator(".flash-info")).to_have_text("You have been signed out.")
    other.goto(live_console + "/")
    expect(other).to_have_url(live_console + "/login?next=%2F")
    copy.close()


@pytest.fixture
def fenced_console(database_url: str) -> Iterator[str]:
    """The console with an allowlist that leaves out this machine's 127.0.0.1."""
    settings = ConsoleSettings(
        secret_key=SecretStr("test-secret-key-0123456789abcdef"),
        allowed_networks="10.0.0.0/8",  # type: ignore[arg-type]  # parsed by the setting
    )
    app = build_app(settings, database_url)
    server = ConsoleServer(app, "127.0.0.1", free_port(), threads=2)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    yield server.url
    server.stop()
    thread.join(timeout=60)
    engine_of(app).dispose()


def test_an_address_outside_the_allowlist_is_refused(
    page: Page, fenced_console: str, screenshots: Path
) -> None:
    response = page.goto(fenced_console + "/login")
    assert response is not None and response.status == 403
    expect(page.locator("body")).to_contain_text("Your address may not use this console.")
    page.screenshot(path=screenshots / "console-address-refused.png")
