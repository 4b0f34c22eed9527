"""The firmware screens: the library (counts per state, a filter by state, the upload
form for admins) and one image (its manifest, signature key, notes, the terminals
running it, release and deprecate for admins, each asked for once more)."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Response

from console import error_pages
from console import firmware as repository
from console.access import acting_user, client_address, requires_role
from console.db import request_session
from console.firmware import FirmwareRefused, FirmwareView, Upload
from shared.models import FirmwareState, Role

bp = Blueprint("firmware", __name__)

# The agents' download route takes the same: a version is at most 64 characters.
VERSION = "string(maxlength=64)"
# What each action asks before it is done, and what it says after.
QUESTIONS = {
    "release": "Release firmware {version}? Rollouts may then install it on terminals.",
    "deprecate": "Deprecate firmware {version}? No new rollout may use it; terminals "
    "running it keep it.",
}
DONE = {"release": "Firmware {version} released.", "deprecate": "Firmware {version} deprecated."}
TARGETS = {"release": FirmwareState.RELEASED, "deprecate": FirmwareState.DEPRECATED}


def _actor() -> str:
    user = acting_user()
    assert user is not None  # requires_role let the request through
    return user.username


def _library_page(
    upload: Upload | None = None, refused: FirmwareRefused | None = None, status: int = 200
) -> tuple[str, int]:
    db = request_session()
    wanted = request.args.get("state") or None
    # As on the other lists, a state the filter does not know shows every image.
    state = wanted if wanted in repository.STATES else None
    page = render_template(
        "firmware.html",
        images=repository.listing(db, state),
        counts=repository.counts(db),
        states=repository.STATES,
        state=state,
        models=repository.library_of().models,
        max_image_bytes=repository.library_of().max_image_bytes,
        upload=upload or Upload(models=_default_models()),
        errors={refused.field: refused.sentence()} if refused is not None else {},
    )
    return page, status


def _default_models() -> tuple[str, ...]:
    models = repository.library_of().models
    return models if len(models) == 1 else ()


@bp.get("/firmware")
@requires_role(Role.VIEWER)
def index() -> tuple[str, int]:
    return _library_page()


@bp.post("/firmware")
@requires_role(Role.ADMIN)
def upload() -> Response | tuple[str, int]:
    sent = Upload.parse(request.form, request.files)
    try:
        added = repository.add(
            request_session(), repository.library_of(), sent, _actor(), client_address()
        )
    except FirmwareRefused as exc:
        return _library_page(Upload(sent.version, sent.models, sent.notes), exc, exc.status)
    flash(
        f"Firmware {added.version} added as a draft ({added.size:,} bytes, signed by key "
        f"{added.key_id}). Release it when it may go to terminals.",
        "info",
    )
    return redirect(url_for("firmware.detail", version=added.version))


@bp.errorhandler(RequestEntityTooLarge)
def too_large(error: RequestEntityTooLarge) -> Response | tuple[str, int]:
    """An upload over the limit, refused before its form was read: the library page
    with the reason beside the file field, for an admin; the error page otherwise."""
    user = acting_user()
    if request.endpoint != "firmware.upload" or user is None or not user.can("admin"):
        return error_pages.http_error(error)
    default = RequestEntityTooLarge.description
    message = error.description if error.description != default else None
    found = repository.library_of()
    refused = FirmwareRefused("image", message or repository.too_large_message(found), 413)
    return _library_page(refused=refused, status=413)


def _image_or_404(version: str) -> FirmwareView:
    found = repository.get(request_session(), version)
    if found is None:
        abort(404, description=f"There is no firmware {version} in the library.")
    return found


def _detail_page(
    image: FirmwareView,
    *,
    asking: str | None = None,
    refused: FirmwareRefused | None = None,
    status: int = 200,
) -> tuple[str, int]:
    page = render_template(
        "firmware_detail.html",
        image=image,
        running=repository.terminals_running(request_session(), image.version),
        asking=asking,
        question=QUESTIONS[asking].format(version=image.version) if asking else None,
        error=refused.sentence() if refused is not None else None,
    )
    return page, status


@bp.get(f"/firmware/<{VERSION}:version>")
@requires_role(Role.VIEWER)
def detail(version: str) -> tuple[str, int]:
    return _detail_page(_image_or_404(version))


def _change(version: str, action: str) -> Response | tuple[str, int]:
    image = _image_or_404(version)
    # Without the page's script the question is asked on a page of its own.
    if request.form.get("confirmed") != "yes":
        return _detail_page(image, asking=action)
    db = request_session()
    try:
        changed = repository.change(db, version, TARGETS[action], _actor(), client_address())
    except FirmwareRefused as exc:
        return _detail_page(repository.get(db, version) or image, refused=exc, status=exc.status)
    flash(DONE[action].format(version=changed.version), "info")
    return redirect(url_for("firmware.detail", version=changed.version))


@bp.post(f"/firmware/<{VERSION}:version>/release")
@requires_role(Role.ADMIN)
def release(version: str) -> Response | tuple[str, int]:
    return _change(version, "release")


@bp.post(f"/firmware/<{VERSION}:version>/deprecate")
@requires_role(Role.ADMIN)
def deprecate(version: str) -> Response | tuple[str, int]:
    return _change(version, "deprecate")
