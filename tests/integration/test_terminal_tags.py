"""Terminal tags on real PostgreSQL: set on the terminal page by operators and admins
(audited, a bad list shown beside the box), shown as chips, the terminal list and the
API filtered by them through the GIN index, a bulk command's selection keeping them,
and ``tms terminal tag``."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlmodel import Session

from console import users
from console.db import engine_of
from registry.cli import terminal
from tests.fixtures.console import Fleet, csrf_of, sign_in
from tms.cli import main

pytestmark = pytest.mark.integration

# `tms` with the registry's terminal commands, as tms/cli.py registers them.
tms = type(main)(
    name="tms", callback=main.callback, params=main.params, commands={"terminal": terminal}
)


def sql(app: Flask, statement: str, **params: Any) -> list[Any]:
    with Session(engine_of(app)) as session:
        result: Any = session.execute(text(statement), params)
        rows = list(result) if result.returns_rows else []
        session.commit()
        return rows


def tags_of(app: Flask, serial: str) -> list[str]:
    return list(sql(app, "SELECT tags FROM terminal WHERE serial = :s", s=serial)[0][0])


def audits(app: Flask) -> list[tuple[str, str, str, Any]]:
    return [
        tuple(row)
        for row in sql(
            app,
            "SELECT actor, action, target, detail FROM audit_event"
            " WHERE action = 'terminal.tags' ORDER BY id",
        )
    ]


def set_tags(client: FlaskClient, serial: str, typed: str) -> tuple[int, str]:
    response = client.post(
        f"/terminals/{serial}/tags", data={"tags": typed, "csrf_token": csrf_of(client)}
    )
    return response.status_code, response.get_data(as_text=True)


@pytest.fixture
def signed_in(client: FlaskClient, make_user: Callable[..., str]) -> Callable[[str], FlaskClient]:
    def as_role(role: str) -> FlaskClient:
        sign_in(client, make_user(f"{role}-user", role))
        return client

    return as_role


@pytest.mark.parametrize("role", ["operator", "admin"])
def test_operators_and_admins_set_tags_which_are_audited_and_shown_as_chips(
    signed_in: Callable[[str], FlaskClient], console_app: Flask, fleet: Fleet, role: str
) -> None:
    fleet.add_terminal("TC-1")
    client = signed_in(role)
    status, _ = set_tags(client, "TC-1", " pilot, region:north,pilot ")
    assert status == 302
    assert tags_of(console_app, "TC-1") == ["pilot", "region:north"]
    assert audits(console_app) == [
        (f"{role}-user", "terminal.tags", "TC-1", {"from": [], "to": ["pilot", "region:north"]})
    ]
    page = client.get("/terminals/TC-1").get_data(as_text=True)
    chips = page.split('id="tags"')[1].split("</dd>")[0]
    assert re.findall(r'class="tag-chip mono" href="([^"]+)">([^<]+)<', chips) == [
        ("/terminals?tag=pilot", "pilot"),
        ("/terminals?tag=region:north", "region:north"),
    ]
    assert 'value="pilot, region:north"' in chips  # the box holds them for editing
    assert "Tags of TC-1: pilot, region:north." in page
    # The same list again changes nothing and writes no audit row; empty clears them.
    assert set_tags(client, "TC-1", "region:north, pilot")[0] == 302
    assert len(audits(console_app)) == 1
    assert set_tags(client, "TC-1", "")[0] == 302
    assert tags_of(console_app, "TC-1") == []
    assert audits(console_app)[-1][3] == {"from": ["pilot", "region:north"], "to": []}


def test_a_bad_list_is_shown_beside_the_box_and_nothing_is_written(
    signed_in: Callable[[str], FlaskClient], console_app: Flask, fleet: Fleet
) -> None:
    fleet.add_terminal("TC-1")
    client = signed_in("operator")
    assert set_tags(client, "TC-1", "keep")[0] == 302
    for typed, message in [
        ("pilot, two words", "&#39;two words&#39; is not a tag"),
        ("x" * 65, "is not a tag"),
        (",".join(f"t{n}" for n in range(21)), "at most 20 tags, not 21"),
        ("a," * 1001, "at most 2000 characters"),
    ]:
        status, page = set_tags(client, "TC-1", typed)
        assert status == 400, typed
        assert 'aria-invalid="true" aria-describedby="tags-error"' in page
        assert message in page.split('id="tags-error">')[1].split("</p>")[0]
        assert tags_of(console_app, "TC-1") == ["keep"]
    assert len(audits(console_app)) == 1
    assert set_tags(client, "TC-NONE", "pilot")[0] == 404


@pytest.mark.parametrize("role", ["viewer", "support"])
def test_viewers_and_support_see_the_chips_but_may_not_change_them(
    signed_in: Callable[[str], FlaskClient], console_app: Flask, fleet: Fleet, role: str
) -> None:
    fleet.add_terminal("TC-1")
    sql(console_app, "UPDATE terminal SET tags = '{pilot}' WHERE serial = 'TC-1'")
    client = signed_in(role)
    page = client.get("/terminals/TC-1").get_data(as_text=True)
    assert ">pilot</a>" in page and 'id="tags-form"' not in page
    assert set_tags(client, "TC-1", "other")[0] == 403
    assert tags_of(console_app, "TC-1") == ["pilot"]


def test_the_list_filters_by_every_tag_and_a_bulk_command_keeps_the_filter(
    signed_in: Callable[[str], FlaskClient], console_app: Flask, fleet: Fleet
) -> None:
    for serial, tags in [("T-1", "{pilot,north}"), ("T-2", "{pilot}"), ("T-3", "{}")]:
        fleet.add_terminal(serial)
        sql(console_app, "UPDATE terminal SET tags = :t WHERE serial = :s", t=tags, s=serial)
    client = signed_in("operator")

    def listed(query: str) -> list[str]:
        page = client.get(f"/terminals?{query}").get_data(as_text=True)
        return sorted(set(re.findall(r'href="/terminals/(T-\d)"', page)))

    assert listed("tag=pilot") == ["T-1", "T-2"]
    assert listed("tag=pilot&tag=north") == ["T-1"] == listed("tag=north,pilot")
    assert listed("tag=nobody") == []
    # Malformed or too long: matches nothing (never dropped, never cut to a real tag).
    assert listed("tag=pilot,two%20words") == []
    assert listed("tag=" + "pilot" + "x" * 70) == []
    assert 'value="pilot,north"' in client.get("/terminals?tag=pilot,north").get_data(as_text=True)
    # The bulk command's pages carry the tag on, so its selection is what the list showed.
    page = client.get("/commands/bulk/new?tag=pilot").get_data(as_text=True)
    assert 'id="bulk-count">2<' in page and "tagged pilot" in page
    assert '<input type="hidden" name="tag" value="pilot">' in page
    # The filter is the GIN index's operator: with sequential scans off, the plan uses it.
    with Session(engine_of(console_app)) as session:
        session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(
            row[0]
            for row in session.execute(
                text("EXPLAIN SELECT id FROM terminal WHERE tags @> CAST(:t AS varchar(64)[])"),
                {"t": ["pilot"]},
            )
        )
    assert "ix_terminal_tags" in plan


def test_the_api_filters_by_tag_and_shows_a_terminals_tags(
    client: FlaskClient, console_app: Flask, fleet: Fleet, make_user: Callable[..., str]
) -> None:
    fleet.add_terminal("T-1")
    fleet.add_terminal("T-2")
    sql(console_app, "UPDATE terminal SET tags = '{pilot}' WHERE serial = 'T-1'")
    make_user("script-owner", "support")
    with Session(engine_of(console_app)) as session:
        account = users.get_user_by_name(session, "script-owner")
        assert account is not None
        token = users.create_api_token(session, account, "tags")
    headers = {"Authorization": f"Bearer {token}"}
    body = client.get("/api/v1/terminals?tag=pilot", headers=headers).get_json()
    assert [t["serial"] for t in body["terminals"]] == ["T-1"] and body["total"] == 1
    response = client.get("/api/v1/terminals?tag=no%20good", headers=headers)
    assert response.status_code == 400 and "is not a tag" in response.get_json()["message"]
    assert client.get("/api/v1/terminals/T-1", headers=headers).get_json()["tags"] == ["pilot"]
    assert client.get("/api/v1/terminals/T-2", headers=headers).get_json()["tags"] == []


def test_tms_terminal_tag_adds_and_removes(
    database_url: str, console_app: Flask, fleet: Fleet
) -> None:
    fleet.add_terminal("TC-1")

    def run(*args: str) -> Any:
        return CliRunner().invoke(tms, list(args), env={"TMS_DATABASE_URL": database_url})

    result = run("terminal", "tag", "TC-1", "--add", "pilot", "--add", "north")
    assert result.exit_code == 0, result.output
    assert "Tags of TC-1: north, pilot" in result.output
    result = run("terminal", "tag", "TC-1", "--remove", "north", "--add", "south")
    assert result.exit_code == 0 and "Tags of TC-1: pilot, south" in result.output
    assert tags_of(console_app, "TC-1") == ["pilot", "south"]
    assert run("terminal", "tag", "TC-1", "--remove", "absent").output.endswith("(unchanged)\n")
    assert run("terminal", "tag", "TC-1").output == "Tags of TC-1: pilot, south\n"
    bad = run("terminal", "tag", "TC-1", "--add", "two words")
    assert bad.exit_code != 0 and "is not a tag" in bad.output
    missing = run("terminal", "tag", "TC-404", "--add", "pilot")
    assert missing.exit_code != 0 and "no terminal with serial 'TC-404'" in missing.output
    actions = [(a[0].startswith("cli:"), a[3]) for a in audits(console_app)]
    assert actions == [
        (True, {"from": [], "to": ["north", "pilot"]}),
        (True, {"from": ["north", "pilot"], "to": ["pilot", "south"]}),
    ]
