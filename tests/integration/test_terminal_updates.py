"""A terminal's firmware update history on its page and in the API, from rollout and
update_task rows written straight into real PostgreSQL: newest first, at most twenty,
each with its rollout (linked), versions, state, failure reason, attempts and times."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlmodel import Session

from console import users
from console.db import engine_of
from tests.fixtures.console import Fleet, sign_in

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)


def sql(app: Flask, statement: str, **params: Any) -> list[Any]:
    with Session(engine_of(app)) as session:
        result: Any = session.execute(text(statement), params)
        rows = list(result) if result.returns_rows else []
        session.commit()
        return rows


def add_firmware(app: Flask, version: str) -> int:
    return int(
        sql(
            app,
            "INSERT INTO firmware (version, filename, size, sha256, notes, models, state)"
            " VALUES (:v, 'fw.bin', 10, :sha, '', '[\"TC-200\"]', 'released') RETURNING id",
            v=version,
            sha="0" * 64,
        )[0][0]
    )


def add_rollout(app: Flask, name: str, firmware_id: int) -> int:
    return int(
        sql(
            app,
            "INSERT INTO rollout (name, firmware_id, state, target, policy, wave_spec, seed,"
            " created_by) VALUES (:n, :f, 'running', '{}', '{}', '100', 1, 'admin')"
            " RETURNING id",
            n=name,
            f=firmware_id,
        )[0][0]
    )


def add_task(app: Flask, rollout_id: int, firmware_id: int, serial: str, **values: Any) -> None:
    row = {
        "wave": 1, "state": "queued", "attempts": 0, "from_version": None,
        "version_after": None, "failure": None, "reason": None, "percent": None,
        "started_at": None, "finished_at": None, "created_at": T0,
    } | values  # fmt: skip
    sql(
        app,
        "INSERT INTO update_task (rollout_id, firmware_id, terminal_id, wave, state, attempts,"
        " from_version, version_after, failure, reason, percent, started_at, finished_at,"
        " created_at) SELECT :rollout, :firmware, id, :wave, :state, :attempts, :from_version,"
        " :version_after, :failure, :reason, :percent, :started_at, :finished_at, :created_at"
        " FROM terminal WHERE serial = :serial",
        rollout=rollout_id,
        firmware=firmware_id,
        serial=serial,
        **row,
    )


@pytest.fixture
def viewer(client: FlaskClient, make_user: Callable[..., str]) -> FlaskClient:
    sign_in(client, make_user("viewer-user", "viewer"))
    return client


def history_table(client: FlaskClient, serial: str) -> str:
    response = client.get(f"/terminals/{serial}")
    assert response.status_code == 200
    return (
        response.get_data(as_text=True).split('id="update-history-table"')[1].split("</table>")[0]
    )


def test_the_terminal_page_lists_its_updates_newest_first(
    viewer: FlaskClient, console_app: Flask, fleet: Fleet
) -> None:
    fleet.add_terminal("TC-1")
    fleet.add_terminal("TC-2")
    sql(console_app, "UPDATE store SET timezone = 'Europe/Berlin'")
    old, new = add_firmware(console_app, "3.0.0"), add_firmware(console_app, "3.1.0")
    first = add_rollout(console_app, "November pilot", old)
    second = add_rollout(console_app, "December <all>", new)
    add_task(
        console_app, first, old, "TC-1", state="succeeded", attempts=1, from_version="2.4.1",
        version_after="3.0.0", started_at=T0, finished_at=T0 + timedelta(minutes=7),
    )  # fmt: skip
    add_task(
        console_app, second, new, "TC-1", wave=2, state="rolled_back", attempts=1,
        from_version="3.0.0", version_after="3.0.0", failure="rolled_back",
        reason="firmware 3.1.0 failed its boot self-test; the TC-200 went back to 3.0.0",
        started_at=T0 + timedelta(days=1), finished_at=T0 + timedelta(days=1, minutes=9),
        created_at=T0 + timedelta(days=1),
    )  # fmt: skip
    add_task(console_app, second, new, "TC-2", state="downloading", percent=42.0, attempts=2)
    table = history_table(viewer, "TC-1")
    rows = re.findall(r'<tr id="update-(\d+)">(.*?)</tr>', table, re.S)
    assert [int(rollout) for rollout, _ in rows] == [second, first]
    newest, oldest = rows[0][1], rows[1][1]
    assert f'href="/rollouts/{second}">December &lt;all&gt;</a>' in newest
    assert "wave 2" in newest and "3.0.0 → 3.1.0" in newest and "rolled back" in newest
    assert "failed its boot self-test" in newest and ">rolled_back<" in newest
    assert 'class="num">1<' in newest
    # Times in the store's zone: 01:00 UTC is 02:00 in Berlin in winter.
    assert "2026-12-01 02:00 CET" in newest and "2026-12-01 02:09 CET" in newest
    assert f'href="/rollouts/{first}">November pilot</a>' in oldest
    assert "2.4.1 → 3.0.0" in oldest and "succeeded" in oldest and "—" in oldest
    # Another terminal's update is not this one's; a download shows how far it got.
    other = history_table(viewer, "TC-2")
    assert "downloading" in other and "42%" in other and 'class="num">2<' in other
    assert "?" in other  # its version before is not known yet


def test_a_terminal_without_updates_says_so_and_at_most_twenty_are_shown(
    viewer: FlaskClient, console_app: Flask, fleet: Fleet
) -> None:
    fleet.add_terminal("TC-1")
    fleet.add_terminal("TC-0")
    assert "No firmware update has been rolled out" in history_table(viewer, "TC-1")
    firmware = add_firmware(console_app, "4.0.0")
    for n in range(25):
        rollout = add_rollout(console_app, f"rollout {n:02d}", firmware)
        add_task(console_app, rollout, firmware, "TC-1", created_at=T0 + timedelta(hours=n))
    table = history_table(viewer, "TC-1")
    names = re.findall(r">rollout (\d\d)</a>", table)
    assert names == [f"{n:02d}" for n in range(24, 4, -1)]
    assert "No firmware update" in history_table(viewer, "TC-0")


def test_the_apis_terminal_has_its_updates(
    client: FlaskClient, console_app: Flask, fleet: Fleet, make_user: Callable[..., str]
) -> None:
    fleet.add_terminal("TC-1")
    firmware = add_firmware(console_app, "5.0.0")
    rollout = add_rollout(console_app, "API", firmware)
    add_task(
        console_app, rollout, firmware, "TC-1", state="failed", attempts=3,
        from_version="4.0.0", failure="download", reason="the download broke off three times",
        started_at=T0,
    )  # fmt: skip
    make_user("script-owner", "support")
    with Session(engine_of(console_app)) as session:
        account = users.get_user_by_name(session, "script-owner")
        assert account is not None
        token = users.create_api_token(session, account, "updates")
    body = client.get("/api/v1/terminals/TC-1", headers={"Authorization": f"Bearer {token}"})
    assert body.get_json()["updates"] == [
        {
            "rollout_id": rollout, "rollout": "API", "wave": 1, "from_version": "4.0.0",
            "to_version": "5.0.0", "version_after": None, "state": "failed", "percent": None,
            "failure": "download", "reason": "the download broke off three times",
            "attempts": 3, "started_at": "2026-11-30T01:00:00+00:00", "finished_at": None,
        }
    ]  # fmt: skip
