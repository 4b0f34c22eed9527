"""CSRF protection for the console's forms: a random token kept in the signed session.

Every form carries ``csrf_token()`` in a hidden field; every POST/PUT/PATCH/DELETE
outside the API must send it back. The API is exempt: it authenticates each request
with a bearer token, which a foreign site cannot make a browser send.
"""

from __future__ import annotations

import hmac
import secrets

from flask import Flask, abort, request, session

SESSION_KEY = "csrf_token"
FORM_FIELD = "csrf_token"
HEADER = "X-CSRF-Token"
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def csrf_token() -> str:
    """This session's token, created on first use (templates call it in every form)."""
    token = session.get(SESSION_KEY)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[SESSION_KEY] = token
    return token


def _check_csrf() -> None:
    if request.method not in _UNSAFE_METHODS or request.path.startswith("/api/"):
        return
    expected = session.get(SESSION_KEY)
    sent = request.form.get(FORM_FIELD) or request.headers.get(HEADER) or ""
    if not isinstance(expected, str) or not hmac.compare_digest(expected, sent):
        abort(400, description="The form has expired. Reload the page and try again.")


def init_app(app: Flask) -> None:
    app.before_request(_check_csrf)
    app.jinja_env.globals["csrf_token"] = csrf_token
