"""The errors blueprint: HTML pages for people, JSON bodies for the API."""

from __future__ import annotations

import logging

from flask import Blueprint, g, jsonify, render_template
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.wrappers import Response

from console.access import is_api_request, login_manager

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


DATABASE_DOWN = (
    "The console cannot reach its database just now. Nothing you did was lost; TMS keeps "
    "trying, and this page works again as soon as the database answers. Reload in a minute."
)


@bp.app_errorhandler(OperationalError)
@bp.app_errorhandler(InterfaceError)
def database_unavailable(error: DBAPIError) -> Response | tuple[str, int]:
    """A lost database is a 503 with what to do, not a 500 and not a trace."""
    log.warning("database unavailable: %s", str(error.orig or error).strip()[:300])
    if is_api_request():
        response = jsonify(error="database_unavailable", message=DATABASE_DOWN)
        response.status_code = 503
        response.headers["Retry-After"] = "30"
        return response
    # Rendering asks flask-login for the user, which needs the database: this page is
    # shown as to an anonymous visitor.
    g._login_user = login_manager.anonymous_user()
    page = render_template("database_down.html", message=DATABASE_DOWN)
    return page, 503
