"""The firmware library screen and its REST API on real PostgreSQL: an admin uploads an
image (signed, listed as a draft, audited), every bad upload is refused with its reason
(on the form, and as JSON 400/409/413), the other roles may look but not change, states
only move forward, and only an admin's upload may be larger than the console's usual
1 MiB body limit, up to the library's image limit."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from markupsafe import escape
from sqlalchemy import text as sql_text
from sqlmodel import Session, col, select

from console import users
from console.db import engine_of
from console.firmware import FORM_OVERHEAD
from rollouts import library
from shared.models import AuditEvent, Firmware
from tests.fixtures.console import Fleet, csrf_of, sign_in
from tests.fixtures.firmware import firmware_image

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
MAX_IMAGE = 2 * MiB  # more than the console's usual 1 MiB body limit
ROLES = ("viewer", "support", "operator", "admin")


@pytest.fixture
def firmware_library(firmware_library: library.Library) -> library.Library:
    """Two models, and an image limit above the console's usual 1 MiB body limit."""
    return replace(firmware_library, models=("TC-200", "TC-200L"), max_image_bytes=MAX_IMAGE)


@pytest.fixture
def as_role(firmware_app: Flask, make_user: Callable[..., str]) -> Callable[[str], FlaskClient]:
    """A test client signed in as a new user of ``role``."""

    def sign(role: str) -> FlaskClient:
        client = firmware_app.test_client()
        sign_in(client, make_user(f"{role}-user", role))
        return client

    return sign


@pytest.fixture
def admin(as_role: Callable[[str], FlaskClient]) -> FlaskClient:
    return as_role("admin")


@pytest.fixture
def token_of(firmware_app: Flask, make_user: Callable[..., str]) -> Callable[[str], str]:
    """An API token of a new user of ``role``."""

    def token(role: str) -> str:
        name = make_user(f"{role}-script", role)
        with Session(engine_of(firmware_app)) as session:
            account = users.get_user_by_name(session, name)
            assert account is not None
            return users.create_api_token(session, account, "firmware-script")

    return token


def upload_form(
    data: bytes | None, version: str, models: tuple[str, ...] = ("TC-200",), notes: str = ""
) -> dict[str, Any]:
    form: dict[str, Any] = {"version": version, "models": list(models), "notes": notes}
    if data is not None:
        form["file"] = (io.BytesIO(data), "fw.img")
    return form


def upload(client: FlaskClient, data: bytes | None, version: str, **kw: Any) -> Any:
    form = upload_form(data, version, **kw) | {"csrf_token": csrf_of(client)}
    return client.post("/firmware", data=form, content_type="multipart/form-data")


def post(client: FlaskClient, path: str, **form: str) -> Any:
    return client.post(path, data={**form, "csrf_token": csrf_of(client)})


def api(client: FlaskClient, token: str, method: str, path: str, **kw: Any) -> Any:
    return client.open(path, method=method, headers={"Authorization": f"Bearer {token}"}, **kw)


def api_upload(client: FlaskClient, token: str, data: bytes | None, version: str, **kw: Any) -> Any:
    form = upload_form(data, version, **kw)
    return api(
        client, token, "POST", "/api/v1/firmware", data=form, content_type="multipart/form-data"
    )


def rows(firmware_app: Flask) -> dict[str, Firmware]:
    with Session(engine_of(firmware_app)) as session:
        found = session.exec(select(Firmware)).all()
        for row in found:
            session.expunge(row)
        return {row.version: row for row in found}


def audit(firmware_app: Flask) -> list[tuple[str, str, str]]:
    with Session(engine_of(firmware_app)) as session:
        events = session.exec(
            select(AuditEvent)
            .where(col(AuditEvent.action).startswith("firmware."))
            .order_by(col(AuditEvent.id))
        ).all()
        return [(event.actor, event.action, event.target) for event in events]


def text(response: Any) -> str:
    return str(response.get_data(as_text=True))


# -- the screen ----------------------------------------------------------------------


def test_an_admin_uploads_on_the_screen_and_sees_it_listed(
    firmware_app: Flask, admin: FlaskClient, firmware_library: library.Library
) -> None:
    empty = text(admin.get("/firmware"))
    assert 'id="upload"' in empty and 'enctype="multipart/form-data"' in empty
    assert 'value="TC-200"' in empty and 'value="TC-200L"' in empty
    assert "The library is empty" in empty
    data = firmware_image("2.5.0")
    added = upload(admin, data, "2.5.0", models=("TC-200", "TC-200L"), notes="Faster NFC.")
    assert added.status_code == 302, text(added)
    assert added.headers["Location"].endswith("/firmware/2.5.0")
    digest = hashlib.sha256(data).hexdigest()
    detail = text(admin.get("/firmware/2.5.0"))
    assert "added as a draft" in detail and digest in detail and "Faster NFC." in detail
    row = rows(firmware_app)["2.5.0"]
    assert (row.state, row.created_by, row.sha256) == ("draft", "admin-user", digest)
    assert row.key_id and row.key_id in detail
    assert (firmware_library.store_dir / f"{digest}.img").read_bytes() == data
    listing = text(admin.get("/firmware"))
    assert 'data-version="2.5.0"' in listing and digest[:12] in listing
    assert "TC-200, TC-200L" in listing and "draft" in listing and "Faster NFC." in listing
    assert 'id="count-draft">1<' in listing and 'id="count-released">0<' in listing
    assert audit(firmware_app) == [("admin-user", "firmware.add", "firmware:2.5.0")]


BAD_UPLOADS = [
    pytest.param(firmware_image("2.5.0"), "2.5.0", ("TC-999",), "unknown model TC-999", 400,
                 id="model"),
    pytest.param(firmware_image("2.5.0"), "2.5.0", (), "name at least one terminal model", 400,
                 id="no-model"),
    pytest.param(b"", "2.5.0", ("TC-200",), "the file is empty", 400, id="empty"),
    pytest.param(None, "2.5.0", ("TC-200",), "choose the firmware image file", 400,
                 id="no-file"),
    pytest.param(b"MZ\x90\x00 a program\n", "2.5.0", ("TC-200",), "not a TC-200 firmware image",
                 400, id="not-an-image"),
    pytest.param(firmware_image("2.4.0"), "2.5.0", ("TC-200",), "announces version '2.4.0'", 400,
                 id="other-version"),
    pytest.param(firmware_image("2.5.0"), "", ("TC-200",), "give the version", 400,
                 id="no-version"),
    pytest.param(firmware_image("2.5.0", MAX_IMAGE + 1), "2.5.0", ("TC-200",),
                 f"a firmware image may be at most {MAX_IMAGE:,} bytes", 413, id="oversize"),
    pytest.param(firmware_image("1.0.0"), "1.0.0", ("TC-200",),
                 "version 1.0.0 is already in the library", 409, id="duplicate-version"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "version", "models", "reason", "status"), BAD_UPLOADS)
def test_each_bad_upload_is_refused_on_the_form_with_its_reason(
    firmware_app: Flask,
    admin: FlaskClient,
    data: bytes | None,
    version: str,
    models: tuple[str, ...],
    reason: str,
    status: int,
) -> None:
    # 1.0.0 is in the library already, for the duplicates.
    assert upload(admin, firmware_image("1.0.0"), "1.0.0").status_code == 302
    refused = upload(admin, data, version, models=models, notes="kept on the form")
    assert refused.status_code == status
    page = text(refused)
    # On the page the reason is a sentence: its first letter a capital.
    assert 'class="field-error"' in page and str(escape(reason)).lower() in page.lower()
    assert "kept on the form" in page  # what was typed is shown again
    assert set(rows(firmware_app)) == {"1.0.0"}
    assert [action for _, action, _ in audit(firmware_app)] == ["firmware.add"]


def test_without_a_signing_key_the_upload_says_how_to_make_one(
    firmware_app: Flask,
    admin: FlaskClient,
    firmware_library: library.Library,
    token_of: Callable[[str], str],
) -> None:
    firmware_library.signing_key.unlink()
    refused = upload(admin, firmware_image("2.5.0"), "2.5.0")
    assert refused.status_code == 409
    assert "tms firmware keygen" in text(refused)
    by_api = api_upload(
        firmware_app.test_client(), token_of("admin"), firmware_image("2.5.0"), "2.5.0"
    )
    assert by_api.status_code == 409 and "tms firmware keygen" in by_api.get_json()["message"]
    assert rows(firmware_app) == {} and not list(firmware_library.store_dir.glob("*.img"))


@pytest.mark.parametrize("role", ["viewer", "support", "operator"])
def test_other_roles_may_look_but_not_change(
    firmware_app: Flask, admin: FlaskClient, as_role: Callable[[str], FlaskClient], role: str
) -> None:
    assert upload(admin, firmware_image("2.5.0"), "2.5.0").status_code == 302
    client = as_role(role)
    listing = text(client.get("/firmware"))
    assert 'data-version="2.5.0"' in listing and ">Firmware</a>" in listing
    assert 'id="upload"' not in listing
    detail = client.get("/firmware/2.5.0")
    assert detail.status_code == 200 and "release-button" not in text(detail)
    assert upload(client, firmware_image("2.6.0"), "2.6.0").status_code == 403
    for action in ("release", "deprecate"):
        assert post(client, f"/firmware/2.5.0/{action}", confirmed="yes").status_code == 403
    assert rows(firmware_app)["2.5.0"].state == "draft" and set(rows(firmware_app)) == {"2.5.0"}


def test_signed_out_visitors_are_sent_to_sign_in(firmware_app: Flask) -> None:
    client = firmware_app.test_client()
    for path in ("/firmware", "/firmware/2.5.0"):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_release_then_deprecate_each_asked_once_and_audited(
    firmware_app: Flask, admin: FlaskClient, fleet: Fleet
) -> None:
    assert upload(admin, firmware_image("2.5.0"), "2.5.0").status_code == 302
    fleet.add_terminal("T-1", firmware="2.5.0")
    fleet.add_terminal("T-2", firmware="2.5.0")
    fleet.add_terminal("T-3", firmware="2.5.0", status="decommissioned")
    fleet.add_terminal("T-4", firmware="2.4.1")
    detail = text(admin.get("/firmware/2.5.0"))
    assert "release-button" in detail and "deprecate-button" in detail
    assert "2 terminals" in detail  # the decommissioned one runs nothing
    # Without the page's script the question comes on a page of its own.
    asked = post(admin, "/firmware/2.5.0/release")
    assert asked.status_code == 200 and "Release firmware 2.5.0?" in text(asked)
    assert rows(firmware_app)["2.5.0"].state == "draft"
    released = post(admin, "/firmware/2.5.0/release", confirmed="yes")
    assert released.status_code == 302
    row = rows(firmware_app)["2.5.0"]
    assert (row.state, row.released_by) == ("released", "admin-user") and row.released_at
    page = text(admin.get("/firmware/2.5.0"))
    assert "Firmware 2.5.0 released." in page and "release-button" not in page
    assert post(admin, "/firmware/2.5.0/deprecate", confirmed="yes").status_code == 302
    assert (
        rows(firmware_app)["2.5.0"].state == "deprecated"
        and rows(firmware_app)["2.5.0"].deprecated_at
    )
    # Never back: a deprecated image is not released again.
    again = post(admin, "/firmware/2.5.0/release", confirmed="yes")
    assert again.status_code == 409
    assert "Firmware 2.5.0 is deprecated; it cannot become released." in text(again)
    assert rows(firmware_app)["2.5.0"].state == "deprecated"
    assert [action for _, action, _ in audit(firmware_app)] == [
        "firmware.add", "firmware.release", "firmware.deprecate",
    ]  # fmt: skip
    assert post(admin, "/firmware/9.9.9/release", confirmed="yes").status_code == 404


def test_the_list_filters_by_state_and_counts_each(firmware_app: Flask, admin: FlaskClient) -> None:
    for version in ("1.0.0", "2.0.0", "3.0.0"):
        assert upload(admin, firmware_image(version), version).status_code == 302
    assert post(admin, "/firmware/2.0.0/release", confirmed="yes").status_code == 302
    assert post(admin, "/firmware/3.0.0/deprecate", confirmed="yes").status_code == 302
    released = text(admin.get("/firmware?state=released"))
    assert 'data-version="2.0.0"' in released
    assert 'data-version="1.0.0"' not in released and 'data-version="3.0.0"' not in released
    for state in ("draft", "released", "deprecated"):
        assert f'id="count-{state}">1<' in released
    assert 'id="count-all">3<' in released
    # As on the other lists, an unknown state shows every image.
    every = text(admin.get("/firmware?state=nonsense"))
    assert all(f'data-version="{v}"' in every for v in ("1.0.0", "2.0.0", "3.0.0"))


# -- the body limit ------------------------------------------------------------------


def test_an_admins_upload_may_pass_the_usual_body_limit_up_to_the_image_limit(
    firmware_app: Flask, admin: FlaskClient, token_of: Callable[[str], str]
) -> None:
    big = firmware_image("3.0.0", int(1.5 * MiB))
    assert firmware_app.config["MAX_CONTENT_LENGTH"] < len(big) < MAX_IMAGE
    assert upload(admin, big, "3.0.0").status_code == 302
    assert rows(firmware_app)["3.0.0"].size == len(big)
    token = token_of("admin")
    by_api = api_upload(
        firmware_app.test_client(), token, firmware_image("3.0.1", MAX_IMAGE), "3.0.1"
    )
    assert by_api.status_code == 201, by_api.get_json()
    assert by_api.get_json()["size"] == MAX_IMAGE


def test_an_upload_over_the_image_limit_is_413_with_the_reason(
    firmware_app: Flask, admin: FlaskClient, token_of: Callable[[str], str]
) -> None:
    huge = firmware_image("4.0.0", MAX_IMAGE + FORM_OVERHEAD + 1)  # refused before it is read
    on_screen = upload(admin, huge, "4.0.0")
    assert on_screen.status_code == 413
    page = text(on_screen)
    assert f"a firmware image may be at most {MAX_IMAGE:,} bytes" in page
    assert 'id="image-error"' in page  # beside the file field of the form
    by_api = api_upload(firmware_app.test_client(), token_of("admin"), huge, "4.0.0")
    assert by_api.status_code == 413
    body = by_api.get_json()
    assert body["error"] == "request_entity_too_large"
    assert f"a firmware image may be at most {MAX_IMAGE:,} bytes" in body["message"]
    assert rows(firmware_app) == {}


def test_only_an_admins_upload_gets_the_larger_limit(
    firmware_app: Flask, as_role: Callable[[str], FlaskClient], token_of: Callable[[str], str]
) -> None:
    big = firmware_image("3.0.0", int(1.5 * MiB))
    assert upload(as_role("operator"), big, "3.0.0").status_code == 413
    assert (
        api_upload(firmware_app.test_client(), token_of("operator"), big, "3.0.0").status_code
        == 413
    )
    # Any other route keeps the console's limit, for admins too.
    admin_token = token_of("admin")
    other = api(
        firmware_app.test_client(), admin_token, "POST", "/api/v1/commands/bulk",
        data=b"{" + b" " * int(1.5 * MiB) + b"}", content_type="application/json",
    )  # fmt: skip
    assert other.status_code == 413
    assert rows(firmware_app) == {}


# -- the API -------------------------------------------------------------------------


def test_the_api_uploads_lists_reads_releases_and_deprecates(
    firmware_app: Flask, token_of: Callable[[str], str], fleet: Fleet
) -> None:
    client = firmware_app.test_client()
    token = token_of("admin")
    data = firmware_image("2.5.0")
    added = api_upload(client, token, data, "2.5.0", models=("TC-200L",), notes="Notes.")
    assert added.status_code == 201, added.get_json()
    body = added.get_json()
    assert added.headers["Location"].endswith("/api/v1/firmware/2.5.0")
    assert (body["version"], body["state"], body["models"], body["size"]) == (
        "2.5.0", "draft", ["TC-200L"], len(data),
    )  # fmt: skip
    assert body["sha256"] == hashlib.sha256(data).hexdigest() and body["signature"]
    assert body["created_by"] == "admin-script" and body["notes"] == "Notes."
    assert api_upload(client, token, firmware_image("2.6.0"), "2.6.0").status_code == 201
    fleet.add_terminal("T-1", firmware="2.5.0")
    one = api(client, token, "GET", "/api/v1/firmware/2.5.0").get_json()
    assert one["terminals_running"] == 1 and one["state"] == "draft"
    released = api(client, token, "POST", "/api/v1/firmware/2.5.0/release")
    assert released.status_code == 200 and released.get_json()["state"] == "released"
    assert released.get_json()["released_by"] == "admin-script"
    listed = api(client, token, "GET", "/api/v1/firmware?state=released").get_json()
    assert [image["version"] for image in listed["firmware"]] == ["2.5.0"]
    assert listed["counts"] == {"draft": 1, "released": 1, "deprecated": 0}
    every = api(client, token, "GET", "/api/v1/firmware").get_json()
    assert every["count"] == 2 and {i["version"] for i in every["firmware"]} == {"2.5.0", "2.6.0"}
    gone = api(client, token, "POST", "/api/v1/firmware/2.5.0/deprecate")
    assert gone.status_code == 200 and gone.get_json()["state"] == "deprecated"
    back = api(client, token, "POST", "/api/v1/firmware/2.5.0/release")
    assert back.status_code == 409 and "cannot become released" in back.get_json()["message"]
    assert [action for actor, action, _ in audit(firmware_app) if actor == "admin-script"] == [
        "firmware.add", "firmware.add", "firmware.release", "firmware.deprecate",
    ]  # fmt: skip


@pytest.mark.parametrize(("data", "version", "models", "reason", "status"), BAD_UPLOADS)
def test_each_bad_api_upload_is_a_json_error_with_its_reason(
    firmware_app: Flask,
    token_of: Callable[[str], str],
    data: bytes | None,
    version: str,
    models: tuple[str, ...],
    reason: str,
    status: int,
) -> None:
    client = firmware_app.test_client()
    token = token_of("admin")
    assert api_upload(client, token, firmware_image("1.0.0"), "1.0.0").status_code == 201
    refused = api_upload(client, token, data, version, models=models)
    assert refused.status_code == status
    assert refused.is_json and reason in refused.get_json()["message"]
    assert set(rows(firmware_app)) == {"1.0.0"}


def test_the_api_refuses_what_is_not_an_upload_and_what_is_not_there(
    firmware_app: Flask, token_of: Callable[[str], str]
) -> None:
    client = firmware_app.test_client()
    token = token_of("admin")
    as_json = api(client, token, "POST", "/api/v1/firmware", json={"version": "2.5.0"})
    assert as_json.status_code == 400 and "multipart/form-data" in as_json.get_json()["message"]
    form = upload_form(firmware_image("2.5.0"), "2.5.0") | {"colour": "blue"}
    odd = api(client, token, "POST", "/api/v1/firmware", data=form,
              content_type="multipart/form-data")  # fmt: skip
    assert odd.status_code == 400 and "unknown field 'colour'" in odd.get_json()["message"]
    bad_state = api(client, token, "GET", "/api/v1/firmware?state=gone")
    assert (
        bad_state.status_code == 400 and "state must be one of" in bad_state.get_json()["message"]
    )
    for method, path in [
        ("GET", "/api/v1/firmware/9.9.9"),
        ("POST", "/api/v1/firmware/9.9.9/release"),
        ("POST", "/api/v1/firmware/9.9.9/deprecate"),
    ]:
        missing = api(client, token, method, path)
        assert missing.status_code == 404 and "no firmware 9.9.9" in missing.get_json()["message"]
    assert client.get("/api/v1/firmware").status_code == 401
    assert rows(firmware_app) == {}


@pytest.mark.parametrize("role", ["viewer", "support", "operator"])
def test_other_roles_read_the_api_but_may_not_change(
    firmware_app: Flask, token_of: Callable[[str], str], role: str
) -> None:
    client = firmware_app.test_client()
    assert (
        api_upload(client, token_of("admin"), firmware_image("2.5.0"), "2.5.0").status_code == 201
    )
    token = token_of(role)
    assert api(client, token, "GET", "/api/v1/firmware").get_json()["count"] == 1
    assert api(client, token, "GET", "/api/v1/firmware/2.5.0").status_code == 200
    refused = api_upload(client, token, firmware_image("2.6.0"), "2.6.0")
    assert refused.status_code == 403 and "admin" in refused.get_json()["message"]
    for action in ("release", "deprecate"):
        assert api(client, token, "POST", f"/api/v1/firmware/2.5.0/{action}").status_code == 403
    assert set(rows(firmware_app)) == {"2.5.0"} and rows(firmware_app)["2.5.0"].state == "draft"


# -- what the database may hold ------------------------------------------------------

HOSTILE = '<script>alert("fw")</script> \u202e 👩‍👩‍👧 {{ 7*7 }} &amp;'


def test_odd_stored_rows_show_escaped_and_never_fail(
    firmware_app: Flask, admin: FlaskClient, token_of: Callable[[str], str]
) -> None:
    """Rows written past the library's checks: every column at its worst."""
    version = ("V" + HOSTILE.replace("/", "\u2215"))[:64]
    with Session(engine_of(firmware_app)) as session:
        session.execute(
            sql_text(
                "INSERT INTO firmware (version, filename, size, sha256, notes, created_at,"
                " models, signature, key_id, state, created_by, released_at, released_by,"
                " deprecated_at) VALUES (:version, :long, :size, :long64, :notes,"
                " '294276-12-31 23:59:59+00', CAST(:models AS jsonb), :long, :long32,"
                " 'released', :long, '4713-01-01 00:00:00+00 BC', :long, 'infinity')"
            ),
            {
                "version": version,
                "long": (HOSTILE * 20)[:200],
                "long64": (HOSTILE * 5)[:64],
                "long32": HOSTILE[:32],
                "size": 2**63 - 1,
                "notes": (HOSTILE * 200)[:4000],
                "models": "[" * 3000 + "]" * 3000,  # deeper than Python reads
            },
        )
        session.execute(
            sql_text(
                "INSERT INTO firmware (version, filename, size, sha256, notes, models, state)"
                " VALUES ('0', '', :size, :sha, '', CAST(:models AS jsonb), 'deprecated')"
            ),
            {"size": -(2**63) + 1, "sha": "0" * 64, "models": '[1, null, "TC-200", {"a": []}]'},
        )
        session.commit()
    token = token_of("admin")
    for path in ("/firmware", "/firmware?state=released", f"/firmware/{version}", "/firmware/0"):
        page = admin.get(path)
        assert page.status_code == 200, path
        assert "<script>alert" not in text(page), path
    assert "&lt;script&gt;" in text(admin.get(f"/firmware/{version}"))
    client = firmware_app.test_client()
    for path in ("/api/v1/firmware", f"/api/v1/firmware/{version}", "/api/v1/firmware/0"):
        answer = api(client, token, "GET", path)
        assert answer.status_code == 200 and answer.is_json, path
    odd = api(client, token, "GET", "/api/v1/firmware/0").get_json()
    assert odd["models"] == ["TC-200"] and odd["size"] == -(2**63) + 1
    assert api(client, token, "GET", f"/api/v1/firmware/{version}").get_json()["models"] == []
    # A deprecated row is not released again; the released one may be deprecated.
    assert api(client, token, "POST", "/api/v1/firmware/0/release").status_code == 409
    assert post(admin, f"/firmware/{version}/deprecate", confirmed="yes").status_code == 302
