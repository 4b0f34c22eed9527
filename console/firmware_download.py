"""Where terminals' agents fetch firmware: ``/agent/v1/firmware/<version>`` (the signed
manifest) and ``.../image`` (the bytes, with HTTP ranges so an interrupted download
resumes), each authenticated with the terminal's own broker credentials (HTTP Basic).

A separate path from the people's ``/api/v1``: agents hold no API token, and the
console's address allowlist is for people, so these paths stay open to it (the
credentials still decide). Only released or deprecated images are served: a draft
has not been released to any terminal.
"""

from __future__ import annotations

import logging
import re

from flask import Blueprint, Flask, Response, abort, current_app, g, jsonify, request, send_file
from sqlmodel import select

from console.db import request_session
from registry.provisioning import find_credential
from rollouts import library
from shared.credentials import StoredSecret, verify_secret
from shared.models import AccountKind, Firmware, FirmwareState, Terminal, TerminalStatus

log = logging.getLogger(__name__)

PREFIX = "/agent/v1/firmware"
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
LIBRARY_KEY = "tms.firmware_library"
SERVED = (FirmwareState.RELEASED.value, FirmwareState.DEPRECATED.value)

bp = Blueprint("firmware_download", __name__, url_prefix=PREFIX)


def init_app(app: Flask, found: library.Library) -> None:
    app.extensions[LIBRARY_KEY] = found
    app.register_blueprint(bp)


def _refuse(description: str) -> None:
    response = jsonify(error="unauthorized", message=description)
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Basic realm="TMS firmware"'
    abort(response)


@bp.before_request
def authenticate_terminal() -> None:
    auth = request.authorization
    if auth is None or auth.type != "basic" or not auth.username or auth.password is None:
        _refuse("send the terminal's broker username and secret (HTTP Basic)")
        return
    db = request_session()
    credential = find_credential(db, auth.username)
    if (
        credential is None
        or credential.kind != AccountKind.TERMINAL.value
        or credential.revoked_at is not None
        or not verify_secret(auth.password, StoredSecret(credential.salt, credential.secret_hash))
    ):
        _refuse("unknown terminal or wrong secret")
        return
    terminal = db.get(Terminal, credential.terminal_id) if credential.terminal_id else None
    if terminal is None or terminal.status == TerminalStatus.DECOMMISSIONED.value:
        abort(403, description="this terminal is decommissioned")
    g.firmware_terminal = terminal


def _served(version: str) -> Firmware:
    firmware = request_session().exec(select(Firmware).where(Firmware.version == version)).first()
    if firmware is None or firmware.state not in SERVED:
        abort(404, description=f"no released firmware {version}")
    return firmware


@bp.get("/<string(maxlength=64):version>")
def manifest(version: str) -> Response:
    firmware = _served(version)
    models = firmware.models if isinstance(firmware.models, list) else []
    return jsonify(
        version=firmware.version,
        models=[model for model in models if isinstance(model, str)],
        size=firmware.size,
        sha256=firmware.sha256,
        signature=firmware.signature,
        key_id=firmware.key_id,
        state=firmware.state,
    )


@bp.get("/<string(maxlength=64):version>/image")
def image(version: str) -> Response:
    firmware = _served(version)
    found: library.Library = current_app.extensions[LIBRARY_KEY]
    # The row names the file: only a real SHA-256 may become a path in the store.
    path = library.image_path(found, firmware) if SHA256_HEX.fullmatch(firmware.sha256) else None
    if path is None or not path.is_file():
        log.error("firmware %s: its image %s is not in the firmware store", version, path)
        # Not a 5xx: an agent would retry it forever; a rollout fails the terminal with
        # this reason, and its error threshold stops it.
        abort(404, description=f"firmware {version}'s image is missing from the firmware store")
    # conditional=True answers Range (206) and If-Range; the ETag is the image's hash,
    # so a resumed download never stitches two different images together.
    response = send_file(
        path,
        mimetype="application/octet-stream",
        as_attachment=True,
        download_name=f"tc200-{firmware.version}.img",
        conditional=True,
        etag=firmware.sha256,
        max_age=0,
    )
    response.headers["X-Firmware-SHA256"] = firmware.sha256
    return response
