"""The firmware library: images added (checked, stored by SHA-256, signed), released and
deprecated, each step audited. Used by ``tms firmware`` and the console.

An image is a file in the store directory named ``<sha256>.img``, written whole before
its row commits (a crash leaves at most an unreferenced file, never a row without its
image). The row keeps the manifest and its Ed25519 signature; the signing key is read
from a file by the caller and never stored.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func
from sqlmodel import Session, col, select

from rollouts.errors import FirmwareError
from shared import audit_trail
from shared.firmware_signature import (
    FirmwareManifest,
    FirmwareRejected,
    key_id,
    load_private_key,
    sign,
)
from shared.models import Firmware, FirmwareState
from shared.settings import Settings

# A TC-200 image starts with this header and its version on the first line
# (agent/PROTOCOL.md); anything else would fail the terminal's boot self-test.
IMAGE_MAGIC = b"TC200FW:"
NOTES_MAX = 4000
FILENAME_MAX = 255


@dataclass(frozen=True)
class Library:
    """Where the library's images are and the key that signs them."""

    store_dir: Path
    signing_key: Path
    models: tuple[str, ...]
    max_image_bytes: int


def firmware_library_of(settings: Settings) -> Library:
    data_dir = settings.paths.data_dir
    return Library(
        store_dir=settings.firmware.store_dir_in(data_dir),
        signing_key=settings.firmware.signing_key_in(data_dir),
        models=settings.firmware.models,
        max_image_bytes=settings.firmware.max_image_bytes,
    )


def image_version(image: bytes) -> str | None:
    """The version an image's header announces, or None for no TC-200 image."""
    if not image.startswith(IMAGE_MAGIC):
        return None
    line, newline, _ = image[len(IMAGE_MAGIC) : len(IMAGE_MAGIC) + 64].partition(b"\n")
    if not newline:
        return None
    try:
        return line.decode("ascii") or None
    except UnicodeDecodeError:
        return None


def read_signing_key(path: Path) -> Ed25519PrivateKey:
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise FirmwareError(
            "key", f"no firmware signing key at {path}: run `tms firmware keygen` first"
        ) from None
    except OSError as exc:
        raise FirmwareError("key", f"cannot read the signing key {path}: {exc.strerror}") from None
    try:
        return load_private_key(pem)
    except FirmwareRejected as exc:
        raise FirmwareError("key", f"{path}: {exc}") from None


def write_signing_key(path: Path, pem: bytes, *, replace: bool = False) -> None:
    """Write a new key readable by its owner only; never over an existing one unless
    ``replace`` (images signed with the old key would then fail on every terminal
    that was given the new public key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise FirmwareError(
            "key", f"{path} exists: keep it, or pass --replace to make a new one"
        ) from None
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
    os.chmod(path, 0o600)


def _check(library: Library, image: bytes, version: str, models: tuple[str, ...]) -> None:
    if not image:
        raise FirmwareError("image", "the file is empty")
    if len(image) > library.max_image_bytes:
        raise FirmwareError(
            "image",
            f"the image is {len(image):,} bytes; a TC-200 takes at most "
            f"{library.max_image_bytes:,}",
        )
    announced = image_version(image)
    if announced is None:
        raise FirmwareError("image", "not a TC-200 firmware image (no TC200FW: header)")
    if announced != version:
        raise FirmwareError(
            "version", f"the image announces version {announced!r}, not {version!r}"
        )
    unknown = sorted(set(models) - set(library.models))
    if unknown:
        raise FirmwareError(
            "models",
            f"unknown model {', '.join(unknown)}: known are {', '.join(library.models)}",
        )


def _store(store_dir: Path, sha256: str, image: bytes) -> Path:
    store_dir.mkdir(parents=True, exist_ok=True)
    final = store_dir / f"{sha256}.img"
    if final.exists() and final.stat().st_size == len(image):
        return final
    fd, temporary = tempfile.mkstemp(dir=store_dir, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(image)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, final)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return final


def image_path(library: Library, firmware: Firmware) -> Path:
    return library.store_dir / f"{firmware.sha256}.img"


def get(session: Session, version: str) -> Firmware | None:
    return session.exec(select(Firmware).where(Firmware.version == version)).first()


def listing(session: Session) -> list[Firmware]:
    return list(session.exec(select(Firmware).order_by(col(Firmware.created_at).desc())).all())


def add_image(
    session: Session,
    library: Library,
    *,
    image: bytes,
    filename: str,
    version: str,
    models: tuple[str, ...],
    notes: str,
    actor: str,
    remote_addr: str | None = None,
) -> Firmware:
    """Check, store, sign and record an image as a draft; the caller commits."""
    version = version.strip()
    # The library's own checks first: they say what is wrong in the terms of an upload.
    _check(library, image, version, models)
    try:
        manifest = FirmwareManifest.of_image(version, models, image)
    except FirmwareRejected as exc:
        field = {"sha256": "image", "size": "image"}.get(exc.reason, exc.reason)
        raise FirmwareError(field, str(exc)) from None
    if len(notes) > NOTES_MAX:
        raise FirmwareError("notes", f"release notes of at most {NOTES_MAX} characters")
    if get(session, version) is not None:
        raise FirmwareError("version", f"version {version} is already in the library")
    same = session.exec(select(Firmware).where(Firmware.sha256 == manifest.sha256)).first()
    if same is not None:
        raise FirmwareError(
            "image", f"this image is already in the library as version {same.version}"
        )
    key = read_signing_key(library.signing_key)
    _store(library.store_dir, manifest.sha256, image)
    firmware = Firmware(
        version=version,
        filename=(Path(filename).name or f"{version}.img")[:FILENAME_MAX],
        size=manifest.size,
        sha256=manifest.sha256,
        notes=notes,
        models=list(manifest.models),
        signature=sign(manifest, key),
        key_id=key_id(key),
        state=FirmwareState.DRAFT.value,
        created_by=actor,
    )
    session.add(firmware)
    audit_trail.record(
        session,
        actor,
        "firmware.add",
        f"firmware:{version}",
        {"sha256": manifest.sha256, "size": manifest.size, "models": list(manifest.models)},
        remote_addr,
    )
    return firmware


def manifest_of(firmware: Firmware) -> FirmwareManifest:
    return FirmwareManifest(
        firmware.version, tuple(firmware.models or ()), firmware.size, firmware.sha256
    )


_NEXT = {
    FirmwareState.RELEASED: {FirmwareState.DRAFT.value},
    FirmwareState.DEPRECATED: {FirmwareState.DRAFT.value, FirmwareState.RELEASED.value},
}


def change_state(
    session: Session,
    version: str,
    to: FirmwareState,
    actor: str,
    remote_addr: str | None = None,
) -> Firmware:
    """draft -> released -> deprecated (a draft may be deprecated unreleased); never back."""
    firmware = session.exec(
        select(Firmware).where(Firmware.version == version).with_for_update()
    ).first()
    if firmware is None:
        raise FirmwareError("version", f"there is no firmware {version} in the library")
    if firmware.state not in _NEXT[to]:
        raise FirmwareError(
            "state", f"firmware {version} is {firmware.state}; it cannot become {to.value}"
        )
    now = datetime.now(UTC)
    before = firmware.state
    firmware.state = to.value
    if to is FirmwareState.RELEASED:
        firmware.released_at, firmware.released_by = now, actor
    else:
        firmware.deprecated_at = now
    session.add(firmware)
    audit_trail.record(
        session,
        actor,
        f"firmware.{'release' if to is FirmwareState.RELEASED else 'deprecate'}",
        f"firmware:{version}",
        {"from": before, "to": to.value},
        remote_addr,
    )
    return firmware


def counts_by_state(session: Session) -> dict[str, int]:
    rows = session.exec(
        select(Firmware.state, func.count()).group_by(col(Firmware.state))  # type: ignore[call-overload]
    ).all()
    return {state: int(count) for state, count in rows}
