"""The firmware library as the console's screen and API see it: a row as a value
(``FirmwareView``), an upload as the request sent it (``Upload``), the library's
refusals as HTTP statuses (``FirmwareRefused``), and the larger body limit that only an
admin's upload gets.

Changes go through ``rollouts.library``, which checks, stores, signs and audits them;
this module commits or rolls back around each, so the views run no SQL of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import abort, current_app, request
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session
from werkzeug.datastructures import FileStorage, MultiDict

from console import fleet
from console.access import acting_user, authenticate_bearer, is_api_request
from console.errors import ConsoleError
from console.firmware_download import LIBRARY_KEY
from console.roles import role_at_least
from rollouts import library
from rollouts.errors import FirmwareError
from rollouts.library import Library
from shared.models import Firmware, FirmwareState, Role, TerminalStatus

STATES = tuple(state.value for state in FirmwareState)
# Room for the form's other fields (4,000 characters of notes, up to 4 bytes each) and
# the multipart headers around the image: an image of exactly the maximum still fits.
FORM_OVERHEAD = 64 * 1024
UPLOAD_ENDPOINTS = frozenset({"firmware.upload", "api_firmware.upload"})
SHORT_SHA = 12


class FirmwareRefused(ConsoleError, ValueError):
    """A refused upload or state change: ``field`` names the form field it belongs
    beside (``key`` for the platform's signing key), ``status`` the HTTP answer."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.status = status

    @classmethod
    def of(cls, exc: FirmwareError) -> FirmwareRefused:
        return cls(exc.field, str(exc), refusal_status(exc))

    def sentence(self) -> str:
        """The message as a sentence for a page: capital first letter, final stop."""
        text = str(self)
        return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def refusal_status(exc: FirmwareError) -> int:
    """409 when the library's present state refuses (a version or image already in it,
    a state that cannot follow, no signing key yet), 404 for no such version, else 400."""
    message = str(exc)
    # The library raises one error class; these are the words of its duplicate and
    # missing-version messages (tests/integration/test_console_firmware.py holds them).
    if message.startswith("there is no firmware"):
        return 404
    if exc.field in ("state", "key") or "already in the library" in message:
        return 409
    return 400


def library_of() -> Library:
    """The app's firmware library (console.app builds it, firmware_download keeps it)."""
    found = current_app.extensions[LIBRARY_KEY]
    assert isinstance(found, Library)
    return found


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


@dataclass(frozen=True)
class FirmwareView:
    """One image of the library as the pages and the API show it."""

    version: str
    state: str
    models: tuple[str, ...]
    size: int
    sha256: str
    filename: str
    notes: str
    signature: str
    key_id: str
    created_by: str
    created_at: datetime | None
    released_at: datetime | None
    released_by: str | None
    deprecated_at: datetime | None

    @property
    def short_sha(self) -> str:
        return self.sha256[:SHORT_SHA]

    @property
    def may_release(self) -> bool:
        return self.state == FirmwareState.DRAFT.value

    @property
    def may_deprecate(self) -> bool:
        return self.state in (FirmwareState.DRAFT.value, FirmwareState.RELEASED.value)

    @classmethod
    def of(cls, row: Firmware) -> FirmwareView:
        # The models column is JSON: only its names are shown, whatever else it holds.
        models = row.models if isinstance(row.models, list) else []
        return cls(
            version=row.version,
            state=row.state,
            models=tuple(model for model in models if isinstance(model, str)),
            size=row.size,
            sha256=row.sha256,
            filename=row.filename,
            notes=row.notes,
            signature=row.signature,
            key_id=row.key_id,
            created_by=row.created_by,
            created_at=row.created_at,
            released_at=row.released_at,
            released_by=row.released_by,
            deprecated_at=row.deprecated_at,
        )

    def to_json(self) -> dict[str, Any]:
        """The API form, timestamps in ISO 8601."""
        return {
            "version": self.version,
            "state": self.state,
            "models": list(self.models),
            "size": self.size,
            "sha256": self.sha256,
            "filename": self.filename,
            "notes": self.notes,
            "signature": self.signature,
            "key_id": self.key_id,
            "created_by": self.created_by,
            "created_at": _iso(self.created_at),
            "released_at": _iso(self.released_at),
            "released_by": self.released_by,
            "deprecated_at": _iso(self.deprecated_at),
        }


@dataclass(frozen=True)
class Upload:
    """An upload as sent (form fields ``version``, ``models``, ``notes``, file ``file``);
    the library checks it. Also what the form shows again after a refusal."""

    version: str = ""
    models: tuple[str, ...] = ()
    notes: str = ""
    filename: str = ""
    image: bytes = b""

    @classmethod
    def parse(cls, form: MultiDict[str, str], files: MultiDict[str, FileStorage]) -> Upload:
        sent = files.get("file")
        return cls(
            version=form.get("version", "").strip(),
            models=tuple(dict.fromkeys(name.strip() for name in form.getlist("models"))),
            notes=form.get("notes", "").replace("\r\n", "\n"),
            filename=(sent.filename or "") if sent is not None else "",
            image=sent.read() if sent is not None else b"",
        )


def too_large_message(found: Library, size: int | None = None) -> str:
    sent = f"the upload is {size:,} bytes; " if size is not None else "the upload is too large: "
    return f"{sent}a firmware image may be at most {found.max_image_bytes:,} bytes"


def parse_state(value: str | None) -> str | None:
    """The ``state`` filter: None for every state, else one of STATES."""
    if not value:
        return None
    if value not in STATES:
        raise FirmwareRefused("state", f"state must be one of {', '.join(STATES)}")
    return value


# -- reading -------------------------------------------------------------------------


def listing(db: Session, state: str | None = None) -> list[FirmwareView]:
    """The library, newest first; only ``state``'s images when given (a library holds
    tens of images, not thousands: filtered here)."""
    rows = library.listing(db)
    return [FirmwareView.of(row) for row in rows if state is None or row.state == state]


def counts(db: Session) -> dict[str, int]:
    """Images per state, every state present."""
    found = library.counts_by_state(db)
    return {state: found.get(state, 0) for state in STATES}


def get(db: Session, version: str) -> FirmwareView | None:
    row = library.get(db, version)
    return FirmwareView.of(row) if row is not None else None


def terminals_running(db: Session, version: str) -> int:
    """Terminals whose last heartbeat reported ``version``, decommissioned ones not counted."""
    every = fleet.count_terminals(db, fleet.TerminalFilter(firmware=version))
    gone = fleet.count_terminals(
        db,
        fleet.TerminalFilter(firmware=version, status=TerminalStatus.DECOMMISSIONED.value),
    )
    return every - gone


# -- changing ------------------------------------------------------------------------


def add(
    db: Session, found: Library, upload: Upload, actor: str, remote_addr: str | None
) -> FirmwareView:
    """Check, sign, store and record ``upload`` as a draft, committed; FirmwareRefused."""
    if not upload.image and not upload.filename:
        raise FirmwareRefused("image", "choose the firmware image file to upload")
    if len(upload.image) > found.max_image_bytes:
        raise FirmwareRefused("image", too_large_message(found, len(upload.image)), 413)
    if not upload.version:
        raise FirmwareRefused("version", "give the version the image announces (e.g. 2.5.0)")
    try:
        row = library.add_image(
            db, found, image=upload.image, filename=upload.filename, version=upload.version,
            models=upload.models, notes=upload.notes, actor=actor, remote_addr=remote_addr,
        )  # fmt: skip
        view = FirmwareView.of(row)
        db.commit()
    except FirmwareError as exc:
        db.rollback()
        raise FirmwareRefused.of(exc) from exc
    except IntegrityError as exc:
        # The same version added at the same moment by someone else: the unique index.
        db.rollback()
        raise FirmwareRefused(
            "version", f"version {upload.version} is already in the library", 409
        ) from exc
    return view


def change(
    db: Session, version: str, to: FirmwareState, actor: str, remote_addr: str | None
) -> FirmwareView:
    """Release or deprecate ``version``, committed; FirmwareRefused (404, 409)."""
    try:
        row = library.change_state(db, version, to, actor, remote_addr)
        view = FirmwareView.of(row)
        db.commit()
    except FirmwareError as exc:
        db.rollback()
        raise FirmwareRefused.of(exc) from exc
    return view


# -- the upload's body limit ---------------------------------------------------------


def allow_image_uploads() -> None:
    """before_request, ahead of every hook that reads a body: an admin's upload may be
    as large as an image (plus its form); every other request keeps the app's limit
    (MAX_CONTENT_LENGTH), so nobody else can make the console read megabytes."""
    if request.endpoint not in UPLOAD_ENDPOINTS:
        return
    if is_api_request():
        authenticate_bearer()  # 401 here, before the body: the API's own check would be later
    user = acting_user()
    if user is None or not role_at_least(user.role, Role.ADMIN):
        return  # the view refuses them (401, 403); their body stays within the usual limit
    found = library_of()
    limit = found.max_image_bytes + FORM_OVERHEAD
    if request.content_length is not None and request.content_length > limit:
        abort(413, description=too_large_message(found, request.content_length))
    request.max_content_length = limit
