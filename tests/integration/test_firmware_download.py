"""Agents fetch firmware from the console with their own broker credentials: the signed
manifest, and the image in ranges (an interrupted download resumes); drafts, unknown
terminals, wrong secrets, revoked and decommissioned terminals get nothing; the console's
address allowlist does not apply to them."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlmodel import Session, select

from console.db import engine_of
from registry import provisioning
from rollouts import library
from shared.firmware_signature import (
    FirmwareManifest,
    generate_key,
    load_public_key,
    private_key_pem,
    public_key_pem,
    verify_image,
)
from shared.models import FirmwareState, Terminal
from shared.settings import ConsoleSettings
from tests.fixtures.console import build_app, scratch_firmware_library

pytestmark = pytest.mark.integration

IMAGE = b"TC200FW:2.5.0\n" + hashlib.sha256(b"seed").digest() * 4096  # 128 KiB + header


@pytest.fixture
def lib(tmp_path: Path) -> library.Library:
    found = scratch_firmware_library(tmp_path)
    library.write_signing_key(found.signing_key, private_key_pem(generate_key()))
    return found


def _app(settings: ConsoleSettings, database_url: str, lib: library.Library) -> Iterator[Flask]:
    app = build_app(settings, database_url, lib)
    app.config["TESTING"] = True
    yield app
    engine_of(app).dispose()


@pytest.fixture
def app(
    console_settings: ConsoleSettings, database_url: str, lib: library.Library
) -> Iterator[Flask]:
    yield from _app(console_settings, database_url, lib)


@pytest.fixture
def secrets(app: Flask, lib: library.Library) -> dict[str, str]:
    """Terminal T-1 (its secret), T-2 (revoked later by a test), and firmware 2.5.0
    released, 2.6.0 a draft."""
    with Session(engine_of(app)) as session:
        made = {
            serial: provisioning.provision_terminal(session, serial, "Acme", "S1")
            for serial in ("T-1", "T-2")
        }
        library.add_image(
            session, lib, image=IMAGE, filename="fw.img", version="2.5.0",
            models=("TC-200",), notes="", actor="ann",
        )  # fmt: skip
        library.add_image(
            session, lib, image=b"TC200FW:2.6.0\n" + bytes(100), filename="fw.img",
            version="2.6.0", models=("TC-200",), notes="", actor="ann",
        )  # fmt: skip
        library.change_state(session, "2.5.0", FirmwareState.RELEASED, "ann")
        session.commit()
    return made


def basic(username: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{username}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def test_the_manifest_and_the_image_verify_with_the_public_key(
    app: Flask, lib: library.Library, secrets: dict[str, str]
) -> None:
    client = app.test_client()
    auth = basic("T-1", secrets["T-1"])
    manifest = client.get("/agent/v1/firmware/2.5.0", headers=auth)
    assert manifest.status_code == 200, manifest.get_data(as_text=True)
    body = manifest.get_json()
    assert (body["version"], body["size"], body["models"]) == ("2.5.0", len(IMAGE), ["TC-200"])
    image = client.get("/agent/v1/firmware/2.5.0/image", headers=auth)
    assert image.status_code == 200 and image.get_data() == IMAGE
    assert image.headers["X-Firmware-SHA256"] == hashlib.sha256(IMAGE).hexdigest()
    assert image.headers["Accept-Ranges"] == "bytes"
    public = load_public_key(public_key_pem(library.read_signing_key(lib.signing_key)))
    signed = FirmwareManifest(body["version"], tuple(body["models"]), body["size"], body["sha256"])
    verify_image(signed, body["signature"], public, image.get_data())


def test_a_download_cut_short_resumes_with_a_range(app: Flask, secrets: dict[str, str]) -> None:
    client = app.test_client()
    auth = basic("T-1", secrets["T-1"])
    half = len(IMAGE) // 2
    first = client.get(
        "/agent/v1/firmware/2.5.0/image", headers={**auth, "Range": f"bytes=0-{half - 1}"}
    )
    assert first.status_code == 206 and first.get_data() == IMAGE[:half]
    etag = first.headers["ETag"]
    rest = client.get(
        "/agent/v1/firmware/2.5.0/image",
        headers={**auth, "Range": f"bytes={half}-", "If-Range": etag},
    )
    assert rest.status_code == 206
    assert rest.headers["Content-Range"] == f"bytes {half}-{len(IMAGE) - 1}/{len(IMAGE)}"
    assert first.get_data() + rest.get_data() == IMAGE
    # A stale validator (another image) gets the whole current image, not a splice.
    whole = client.get(
        "/agent/v1/firmware/2.5.0/image",
        headers={**auth, "Range": f"bytes={half}-", "If-Range": '"not-this-image"'},
    )
    assert whole.status_code == 200 and whole.get_data() == IMAGE
    past = client.get(
        "/agent/v1/firmware/2.5.0/image", headers={**auth, "Range": f"bytes={len(IMAGE)}-"}
    )
    assert past.status_code == 416


def test_who_gets_nothing(app: Flask, secrets: dict[str, str]) -> None:
    client = app.test_client()
    path = "/agent/v1/firmware/2.5.0/image"
    for headers in (
        {},
        {"Authorization": "Bearer some-api-token"},
        basic("T-1", "wrong"),
        basic("NOBODY", secrets["T-1"]),
        basic("T-1", ""),
    ):
        refused = client.get(path, headers=headers)
        assert refused.status_code == 401, headers
        assert refused.headers["WWW-Authenticate"].startswith("Basic")
        assert refused.is_json and "error" in refused.get_json()
    auth = basic("T-1", secrets["T-1"])
    draft = client.get("/agent/v1/firmware/2.6.0/image", headers=auth)
    assert draft.status_code == 404 and "no released firmware 2.6.0" in draft.get_json()["message"]
    assert client.get("/agent/v1/firmware/9.9.9", headers=auth).status_code == 404
    with Session(engine_of(app)) as session:
        provisioning.revoke(session, "T-2")
        terminal = session.exec(select(Terminal).where(Terminal.serial == "T-1")).one()
        terminal.status, terminal.decommissioned_at = "decommissioned", datetime.now(UTC)
        session.add(terminal)
        session.commit()
    assert client.get(path, headers=basic("T-2", secrets["T-2"])).status_code == 401
    gone = client.get(path, headers=auth)
    assert gone.status_code == 403 and "decommissioned" in gone.get_json()["message"]


def test_an_image_missing_from_the_store_is_a_clear_404(
    app: Flask, lib: library.Library, secrets: dict[str, str]
) -> None:
    for stored in lib.store_dir.glob("*.img"):
        stored.unlink()
    missing = app.test_client().get(
        "/agent/v1/firmware/2.5.0/image", headers=basic("T-1", secrets["T-1"])
    )
    assert missing.status_code == 404
    assert "missing from the firmware store" in missing.get_json()["message"]


def test_the_allowlist_does_not_stop_terminals(
    database_url: str, lib: library.Library, secrets: dict[str, str]
) -> None:
    closed = ConsoleSettings(
        secret_key="test-secret-key-0123456789abcdef",  # type: ignore[arg-type]
        allowed_networks=("192.0.2.0/24",),  # type: ignore[arg-type]
    )
    for app in _app(closed, database_url, lib):
        client: FlaskClient = app.test_client()
        assert client.get("/login").status_code == 403
        got = client.get("/agent/v1/firmware/2.5.0", headers=basic("T-1", secrets["T-1"]))
        assert got.status_code == 200
        assert client.get("/agent/v1/firmware/2.5.0").status_code == 401
