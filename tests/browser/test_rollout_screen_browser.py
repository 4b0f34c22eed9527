"""The rollout screens in headless Chromium, as an admin works through them: fill in a
new rollout, preview it, start it (saying yes to the question), and follow it on its
page while its tasks move. No driver runs: the test moves the tasks in the database as
the driver would, and the page's live part shows them without a reload."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import text
from sqlmodel import Session

from console.db import engine_of
from console.server import ConsoleServer
from rollouts import library
from shared.firmware_signature import generate_key, private_key_pem
from shared.models import FirmwareState
from shared.ports import free_port
from shared.settings import ConsoleSettings
from tests.fixtures.console import TEST_PASSWORD, Fleet, build_app, scratch_firmware_library

pytestmark = [pytest.mark.browser, pytest.mark.integration]

expect.set_options(timeout=30_000)

RELEASE = "2.5.0"


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context(viewport={"width": 1366, "height": 900})
    yield context.new_page()
    context.close()


@pytest.fixture
def app(console_settings: ConsoleSettings, database_url: str, tmp_path: Path) -> Iterator[Flask]:
    lib = scratch_firmware_library(tmp_path / "library")
    library.write_signing_key(lib.signing_key, private_key_pem(generate_key()))
    built = build_app(console_settings, database_url, lib)
    with Session(engine_of(built)) as session:
        for version, notes in ((RELEASE, "Faster contactless."), ("2.6.0-rc1", "")):
            image = f"TC200FW:{version}\n".encode() + bytes(4096)
            library.add_image(
                session, lib, image=image, filename="tc200.img", version=version,
                models=("TC-200",), notes=notes, actor="rita",
            )  # fmt: skip
        library.change_state(session, RELEASE, FirmwareState.RELEASED, "rita")
        session.commit()
    yield built
    engine_of(built).dispose()


@pytest.fixture
def console_url(app: Flask) -> Iterator[str]:
    server = ConsoleServer(app, "127.0.0.1", free_port(), threads=4)
    thread = threading.Thread(target=server.serve, name="console-server", daemon=True)
    thread.start()
    yield server.url
    server.stop()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the console server did not stop"


@pytest.fixture
def stocked(fleet: Fleet) -> Fleet:
    """Three customers' 40 terminals on 2.4.1 (two already on the release), a few tagged."""
    for n in range(24):
        fleet.add_terminal(f"TC-{n:04d}", customer="Acme Grocers", store=f"S{n % 4 + 1:02d}")
    for n in range(24, 36):
        fleet.add_terminal(f"TC-{n:04d}", customer="Bolt Pharmacy", store=f"P{n % 3 + 1:02d}")
    for n in range(36, 40):
        fleet.add_terminal(f"TC-{n:04d}", customer="Corner Café", store="C01", firmware=RELEASE)
    with fleet.engine.begin() as conn:
        conn.execute(text("UPDATE terminal SET tags = '{pilot}' WHERE serial < 'TC-0004'"))
        conn.execute(text("UPDATE terminal SET tags = '{hold}' WHERE serial = 'TC-0030'"))
    return fleet


def sign_in(page: Page, base: str, username: str) -> None:
    page.goto(base + "/login")
    page.fill("#username", username)
    page.fill("#password", TEST_PASSWORD)
    page.click("main button[type=submit]")
    expect(page.locator(".who-name")).to_have_text(username)


def move_tasks(fleet: Fleet, rollout_id: int, statement: str) -> None:
    """What the driver would do: ``statement`` sets columns of the tasks it picks."""
    with fleet.engine.begin() as conn:
        conn.execute(text(statement), {"id": rollout_id})


def test_an_admin_previews_starts_and_follows_a_rollout(
    page: Page,
    console_url: str,
    stocked: Fleet,
    make_user: Callable[..., str],
    screenshots: Path,
    tmp_path: Path,
) -> None:
    make_user("ada", "admin")
    sign_in(page, console_url, "ada")
    page.click("nav >> text=Rollouts")
    expect(page.locator("#rollouts-table")).to_contain_text("No rollout yet")
    page.click("#new-rollout")
    expect(page.locator("h1")).to_have_text("New rollout")
    # Only released firmware is offered.
    assert page.locator("#version option").all_inner_texts() == [
        "Choose a released version…",
        f"{RELEASE} · TC-200",
    ]

    page.fill("#name", "2.5.0 for Acme and Bolt")
    page.select_option("#version", RELEASE)
    page.select_option("#customers", label=["Acme Grocers", "Bolt Pharmacy"])
    page.check("input[name=exclude_tags][value=hold]")
    page.fill("#waves", "5%,25%,100%")
    page.fill("#success_threshold_pct", "80")
    page.fill("#error_threshold_pct", "20")
    page.fill("#max_failures", "4")
    page.fill("#window", "Mon-Fri 02:00-05:00")
    page.click("#preview-button")

    expect(page.locator("#preview-total")).to_have_text("35")
    sizes = page.locator("#preview-waves td[data-size]").all_inner_texts()
    assert sizes == ["2", "7", "26"]  # 5% of 35 rounded up, then up to 25% (9), the rest
    expect(page.locator("#preview-excluded")).to_contain_text("Not in target")
    expect(page.locator("#name")).to_have_value("2.5.0 for Acme and Bolt")  # kept
    page.screenshot(path=screenshots / "console-rollout-new.png", full_page=True)

    # Saying no to the question starts nothing.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#start-button")
    expect(page.locator("#rollout-preview")).to_be_visible()
    questions: list[str] = []

    def accept(dialog: object) -> None:
        questions.append(dialog.message)  # type: ignore[attr-defined]
        dialog.accept()  # type: ignore[attr-defined]

    page.once("dialog", accept)
    page.click("#start-button")
    expect(page).to_have_url(re.compile(r"/rollouts/\d+$"))
    assert questions == [
        "Start rollout “2.5.0 for Acme and Bolt”: firmware 2.5.0 to 35 terminals in 3 waves?"
    ]
    rollout_id = int(page.url.rsplit("/", 1)[1])
    expect(page.locator(".flash-info")).to_contain_text("to 35 terminals in 3 waves")
    expect(page.locator("#rollout-waves tbody tr")).to_have_count(3)
    expect(page.locator("#tasks-queued")).to_have_text("35")
    expect(page.locator("#rollout-state")).to_have_text("running")
    expect(page.locator("#rollout-target")).to_contain_text("Acme Grocers, Bolt Pharmacy")

    # The driver's work, seen by the live part without a reload: wave 1 done, wave 2
    # under way with a failure, a download at 64%, one waiting for its store's window.
    move_tasks(
        stocked, rollout_id,
        "UPDATE rollout_wave SET started_at = now() - (4 - number) * interval '20 min'"
        " WHERE rollout_id = :id AND number <= 2",
    )  # fmt: skip
    move_tasks(
        stocked, rollout_id,
        "UPDATE update_task SET state = 'succeeded', attempts = 1, finished_at = now(),"
        " version_after = '2.5.0' WHERE rollout_id = :id AND (wave = 1 OR id IN ("
        " SELECT id FROM update_task WHERE rollout_id = :id AND wave = 2 ORDER BY id LIMIT 3))",
    )  # fmt: skip
    move_tasks(
        stocked, rollout_id,
        "WITH picked AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM update_task"
        " WHERE rollout_id = :id AND wave = 2 AND state = 'queued')"
        " UPDATE update_task AS u SET attempts = 1, started_at = now() - interval '3 min',"
        " state = CASE p.n WHEN 1 THEN 'downloading' WHEN 2 THEN 'waiting_window'"
        "  WHEN 3 THEN 'installing' ELSE 'rolled_back' END,"
        " percent = CASE p.n WHEN 1 THEN 64 END, download_only = (p.n = 2),"
        " failure = CASE WHEN p.n = 4 THEN 'boot' END,"
        " reason = CASE WHEN p.n = 4 THEN 'the new image did not come up after the reboot;"
        " 2.4.1 runs again' END, finished_at = CASE WHEN p.n = 4 THEN now() END"
        " FROM picked AS p WHERE u.id = p.id AND p.n <= 4",
    )  # fmt: skip
    move_tasks(
        stocked, rollout_id,
        "UPDATE rollout SET note = 'wave 2: 3 of 7 succeeded, 6 needed (3 in flight, 0 queued)'"
        " WHERE id = :id",
    )  # fmt: skip
    expect(page.locator("#tasks-succeeded")).to_have_text("5")
    expect(page.locator("#tasks-rolled_back")).to_have_text("1")
    expect(page.locator("#rollout-note")).to_contain_text("wave 2: 3 of 7 succeeded")
    expect(page.locator("#rollout-in-flight")).to_contain_text("64%")
    failure = page.locator("#rollout-failures tbody tr")
    expect(failure).to_have_count(1)
    expect(failure).to_contain_text("did not come up")
    expect(page.locator("#rollout-live")).to_contain_text("updated")
    page.screenshot(path=screenshots / "console-rollout.png", full_page=True)

    # The driver halts it: the page says why, in red, without a reload, and offers to
    # resume with other thresholds.
    move_tasks(
        stocked, rollout_id,
        "UPDATE rollout SET state = 'halted', halt_reason = 'wave 2: 2 of 7 terminals failed,"
        " 1 of them rolled back (28.6% > error threshold 20%)' WHERE id = :id",
    )  # fmt: skip
    expect(page.locator("#halt-reason")).to_contain_text("28.6% > error threshold 20%")
    expect(page.locator("#rollout-state")).to_have_text("halted")
    expect(page.locator("#pause-button")).to_have_count(0)
    page.screenshot(path=screenshots / "console-rollout-halted.png", full_page=True)
    page.click("#resume-button")
    expect(page.locator("#resume-halt-reason")).to_contain_text("28.6%")
    expect(page.locator("#error_threshold_pct")).to_have_value("20")
    page.goto(console_url + "/rollouts")
    expect(page.locator(f"#rollout-{rollout_id}")).to_contain_text("28.6% > error threshold")
    page.screenshot(path=tmp_path / "rollouts.png", full_page=True)

    # A failed terminal's row leads to its page.
    page.goto(console_url + f"/rollouts/{rollout_id}")
    page.locator("#rollout-failures tbody tr a").click()
    expect(page).to_have_url(re.compile(r"/terminals/TC-\d{4}$"))
