"""The REST API of the firmware library (v1, JSON, bearer tokens): list and read for
every role; upload (multipart), release and deprecate for admins. Refusals are JSON
errors with the reason: 400 a bad upload, 403 a role that may not, 404 no such
version, 409 a duplicate or a state that cannot follow, 413 an image too large."""

from __future__ import annotations

from typing import Any, NoReturn

from flask import Blueprint, abort, g, request, url_for
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Response

from console import error_pages
from console import firmware as repository
from console.access import acting_user, authenticate_bearer, client_address, requires_role
from console.db import request_session
from console.firmware import FirmwareRefused, FirmwareView, Upload
from shared.models import FirmwareState, Role

bp = Blueprint("api_firmware", __name__, url_prefix="/api/v1")

VERSION = "string(maxlength=64)"
_FIELDS = frozenset({"version", "models", "notes"})
_FILES = frozenset({"file"})
_MULTIPART = (
    "send multipart/form-data with the fields file, version, models (one per model) and notes"
)


@bp.before_request
def authenticate() -> None:
    # An upload was authenticated already, before its body was read
    # (console.firmware.allow_image_uploads): once is enough.
    if g.get("api_user") is None:
        authenticate_bearer()


def _actor() -> str:
    user = acting_user()
    assert user is not None  # requires_role let the request through
    return user.username


def _refuse(exc: FirmwareRefused) -> NoReturn:
    abort(exc.status, description=str(exc))


def _image_or_404(version: str) -> FirmwareView:
    found = repository.get(request_session(), version)
    if found is None:
        abort(404, description=f"no firmware {version} in the library")
    return found


@bp.get("/firmware")
@requires_role(Role.VIEWER)
def list_firmware() -> dict[str, Any]:
    try:
        state = repository.parse_state(request.args.get("state"))
    except FirmwareRefused as exc:
        _refuse(exc)
    db = request_session()
    images = repository.listing(db, state)
    return {
        "firmware": [image.to_json() for image in images],
        "count": len(images),
        "counts": repository.counts(db),
    }


@bp.get(f"/firmware/<{VERSION}:version>")
@requires_role(Role.VIEWER)
def get_firmware(version: str) -> dict[str, Any]:
    image = _image_or_404(version)
    return image.to_json() | {
        "terminals_running": repository.terminals_running(request_session(), version)
    }


@bp.post("/firmware")
@requires_role(Role.ADMIN)
def upload() -> tuple[dict[str, Any], int, dict[str, str]]:
    if request.mimetype != "multipart/form-data":
        abort(400, description=f"the image is a file upload: {_MULTIPART}")
    unknown = sorted((set(request.form) - _FIELDS) | (set(request.files) - _FILES))
    if unknown:
        abort(400, description=f"unknown field {unknown[0]!r}: {_MULTIPART}")
    try:
        added = repository.add(
            request_session(),
            repository.library_of(),
            Upload.parse(request.form, request.files),
            _actor(),
            client_address(),
        )
    except FirmwareRefused as exc:
        _refuse(exc)
    location = url_for("api_firmware.get_firmware", version=added.version)
    return added.to_json(), 201, {"Location": location}


def _change(version: str, to: FirmwareState) -> dict[str, Any]:
    _image_or_404(version)
    try:
        changed = repository.change(request_session(), version, to, _actor(), client_address())
    except FirmwareRefused as exc:
        _refuse(exc)
    return changed.to_json()


@bp.post(f"/firmware/<{VERSION}:version>/release")
@requires_role(Role.ADMIN)
def release(version: str) -> dict[str, Any]:
    return _change(version, FirmwareState.RELEASED)


@bp.post(f"/firmware/<{VERSION}:version>/deprecate")
@requires_role(Role.ADMIN)
def deprecate(version: str) -> dict[str, Any]:
    return _change(version, FirmwareState.DEPRECATED)


@bp.errorhandler(RequestEntityTooLarge)
def too_large(error: RequestEntityTooLarge) -> Response | tuple[Any, int]:
    """An admin's upload refused before its body was read, with the limit in the reason."""
    user = acting_user()
    if request.endpoint != "api_firmware.upload" or user is None or not user.can("admin"):
        return error_pages.http_error(error)
    default = RequestEntityTooLarge.description
    message = error.description if error.description != default else None
    found = repository.library_of()
    return {
        "error": "request_entity_too_large",
        "message": message or repository.too_large_message(found),
    }, 413
