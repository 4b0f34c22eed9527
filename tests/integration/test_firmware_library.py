"""The firmware library on real PostgreSQL: an image is checked, stored by its SHA-256,
signed with the platform key and recorded as a draft; every bad upload is refused with
its reason and writes nothing; states only move forward; every change is audited; and
``tms firmware`` does the same from a shell."""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, col, select

from rollouts import library
from shared.db import make_engine
from shared.firmware_signature import (
    generate_key,
    load_public_key,
    private_key_pem,
    verify_image,
)
from shared.models import AuditEvent, Firmware, FirmwareState
from tests.integration.platform import clean_env, tms

pytestmark = pytest.mark.integration


def image(version: str, size: int = 4096) -> bytes:
    return f"TC200FW:{version}\n".encode() + bytes(range(256)) * (size // 256)


@pytest.fixture
def lib(tmp_path: Path) -> library.Library:
    key_path = tmp_path / "keys" / "firmware-signing.key"
    library.write_signing_key(key_path, private_key_pem(generate_key()))
    return library.Library(
        store_dir=tmp_path / "store",
        signing_key=key_path,
        models=("TC-200", "TC-200L"),
        max_image_bytes=64 * 1024,
    )


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    engine = make_engine(database_url, pool_size=1)
    with Session(engine) as session:
        yield session
    engine.dispose()


def add(
    session: Session, lib: library.Library, data: bytes, version: str, **kw: object
) -> Firmware:
    fields: dict[str, object] = {"models": ("TC-200",), "notes": "", "filename": "fw.img"}
    fields.update(kw)
    added = library.add_image(
        session,
        lib,
        image=data,
        version=version,
        actor="ann",
        **fields,  # type: ignore[arg-type]
    )
    session.commit()
    return added


def test_an_added_image_is_stored_by_hash_signed_and_a_draft(
    session: Session, lib: library.Library
) -> None:
    data = image("2.5.0")
    added = add(session, lib, data, "2.5.0", notes="Faster contactless.", filename="../x/fw.img")
    assert added.state == FirmwareState.DRAFT and added.created_by == "ann"
    assert added.sha256 == hashlib.sha256(data).hexdigest() and added.size == len(data)
    assert added.filename == "fw.img" and added.models == ["TC-200"]
    stored = lib.store_dir / f"{added.sha256}.img"
    assert stored.read_bytes() == data
    # The signature verifies with the public half alone, against the stored bytes.
    public = library.read_signing_key(lib.signing_key).public_key()
    verify_image(library.manifest_of(added), added.signature, public, stored.read_bytes())
    assert len(added.key_id) == 16
    [event] = session.exec(select(AuditEvent).where(AuditEvent.action == "firmware.add")).all()
    assert (event.actor, event.target) == ("ann", "firmware:2.5.0")
    assert event.detail is not None and event.detail["sha256"] == added.sha256


@pytest.mark.parametrize(
    ("data", "version", "models", "field", "says"),
    [
        (b"", "2.5.0", ("TC-200",), "image", "the file is empty"),
        (image("2.5.0", 128 * 1024), "2.5.0", ("TC-200",), "image", "at most 65,536"),
        (b"MZ\x90\x00" + bytes(100), "2.5.0", ("TC-200",), "image", "not a TC-200 firmware"),
        (image("2.4.9"), "2.5.0", ("TC-200",), "version", "announces version '2.4.9'"),
        (image("2.5.0"), "2.5.0", ("TC-900",), "models", "unknown model TC-900"),
        (image("2.5.0"), "2.5.0", (), "models", "at least one terminal model"),
        (image("2.5.0\x00"), "2.5.0\x00", ("TC-200",), "version", "letters, digits"),
    ],
)
def test_a_bad_upload_is_refused_with_its_reason_and_writes_nothing(
    session: Session,
    lib: library.Library,
    data: bytes,
    version: str,
    models: tuple[str, ...],
    field: str,
    says: str,
) -> None:
    with pytest.raises(library.FirmwareError) as refused:
        add(session, lib, data, version, models=models)
    assert refused.value.field == field and says in str(refused.value)
    session.rollback()
    assert session.exec(select(Firmware)).all() == []
    assert not lib.store_dir.exists() or list(lib.store_dir.iterdir()) == []


def test_a_version_already_in_the_library_is_refused(
    session: Session, lib: library.Library
) -> None:
    add(session, lib, image("2.5.0"), "2.5.0")
    with pytest.raises(library.FirmwareError, match="version 2.5.0 is already in the library"):
        add(session, lib, image("2.5.0", 8192), "2.5.0")
    session.rollback()
    assert len(session.exec(select(Firmware)).all()) == 1


def test_no_signing_key_is_one_clear_error(session: Session, lib: library.Library) -> None:
    lib.signing_key.unlink()
    with pytest.raises(library.FirmwareError, match="run `tms firmware keygen` first"):
        add(session, lib, image("2.5.0"), "2.5.0")


def test_states_only_move_forward_and_each_step_is_audited(
    session: Session, lib: library.Library
) -> None:
    add(session, lib, image("2.5.0"), "2.5.0")
    released = library.change_state(session, "2.5.0", FirmwareState.RELEASED, "bob")
    session.commit()
    assert released.state == "released" and released.released_by == "bob"
    assert released.released_at is not None
    with pytest.raises(library.FirmwareError, match="is released; it cannot become released"):
        library.change_state(session, "2.5.0", FirmwareState.RELEASED, "bob")
    session.rollback()
    library.change_state(session, "2.5.0", FirmwareState.DEPRECATED, "bob")
    session.commit()
    with pytest.raises(library.FirmwareError, match="is deprecated; it cannot become released"):
        library.change_state(session, "2.5.0", FirmwareState.RELEASED, "bob")
    session.rollback()
    with pytest.raises(library.FirmwareError, match="there is no firmware 9.9"):
        library.change_state(session, "9.9", FirmwareState.RELEASED, "bob")
    session.rollback()
    actions = session.exec(
        select(AuditEvent.action).where(col(AuditEvent.action).startswith("firmware."))
        .order_by(col(AuditEvent.id))
    ).all()  # fmt: skip
    assert list(actions) == ["firmware.add", "firmware.release", "firmware.deprecate"]
    assert library.counts_by_state(session) == {"deprecated": 1}


def test_tms_firmware_from_a_shell(database_url: str, tmp_path: Path) -> None:
    env = clean_env(TMS_DATABASE_URL=database_url, TMS_DATA_DIR=str(tmp_path / "data"))
    made = tms("firmware", "keygen", env=env)
    assert made.returncode == 0, made.stderr
    key_file = tmp_path / "data" / "firmware-signing.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    public = load_public_key(made.stdout.encode())
    again = tms("firmware", "keygen", env=env)
    assert again.returncode == 1 and "exists: keep it, or pass --replace" in again.stderr
    assert "Traceback" not in again.stderr
    assert tms("firmware", "public-key", env=env).stdout == made.stdout

    image_file = tmp_path / "tc200-2.5.0.img"
    image_file.write_bytes(image("2.5.0"))
    added = tms("firmware", "add", str(image_file), "--version", "2.5.0", env=env)
    assert added.returncode == 0, added.stderr
    assert "added as a draft" in added.stdout
    wrong = tms("firmware", "add", str(image_file), "--version", "2.6.0", env=env)
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    assert wrong.stderr.strip().splitlines() == [
        "Error: the image announces version '2.5.0', not '2.6.0'"
    ]
    assert tms("firmware", "release", "2.5.0", env=env).returncode == 0
    listed = tms("firmware", "list", env=env).stdout
    assert "2.5.0" in listed and "released" in listed
    back = tms("firmware", "release", "2.5.0", env=env)
    assert back.returncode == 1 and "cannot become released" in back.stderr

    engine = make_engine(database_url, pool_size=1)
    try:
        with Session(engine) as session:
            firmware = session.exec(select(Firmware)).one()
            stored = (tmp_path / "data" / "firmware" / f"{firmware.sha256}.img").read_bytes()
            verify_image(library.manifest_of(firmware), firmware.signature, public, stored)
            actors = {event.actor for event in session.exec(select(AuditEvent)).all()}
            assert all(actor.startswith("cli:") for actor in actors)
    finally:
        engine.dispose()
