"""The errors blueprint: HTML pages for people, JSON bodies for the API."""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify, render_template
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.wrappers import Response

from console.access import is_api_request

bp = Blueprint("errors", __name__)
log = logging.getLogger(__name__)

_TITLES = {
    400: "Bad request",
    401: "Sign-in required",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    500: "Something went wrong",
}


def _body(error: HTTPException) -> tuple[int, str]:
    code = error.code or 500
    if code >= 500:
        # Never show internals to the user; the log has the traceback.
        return code, "The console hit an unexpected error. It has been logged; try again."
    return code, error.description or _TITLES.get(code, "Error")


@bp.app_errorhandler(HTTPException)
def http_error(error: HTTPException) -> Response | tuple[str, int]:
    code, message = _body(error)
    if is_api_request():
        slug = (error.name or "error").lower().replace(" ", "_")
        response = jsonify(error=slug, message=message)
        response.status_code = code
        if code == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="tms"'
        return response
    title = _TITLES.get(code, error.name or "Error")
    return render_template("error.html", code=code, title=title, message=message), code


@bp.app_errorhandler(InternalServerError)
def internal_error(error: InternalServerError) -> Response | tuple[str, int]:
    original = error.original_exception
    if original is not None:
        log.error("unhandled error", exc_info=original)
    return http_error(error)
