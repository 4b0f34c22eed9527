"""The console's app factory: settings in, a configured Flask app with every screen out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask, abort, request
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Response

from console import (
    access,
    allowlist,
    api,
    api_commands,
    api_firmware,
    api_rollouts,
    audit,
    auth,
    commands,
    csrf,
    customers,
    dashboard,
    error_pages,
    firmware_download,
    firmware_screens,
    formatting,
    health,
    reports,
    rollout_screens,
    terminal_actions,
    terminals,
    user_admin,
)
from console.db import database
from console.errors import ConsoleConfigError
from console.firmware import allow_image_uploads
from console.login_throttle import ThrottlePolicy
from console.strict_json import StrictJSONProvider
from rollouts.library import Library, firmware_library_of
from shared.db import make_engine
from shared.settings import ConsoleSettings, Settings

MIN_SECRET_KEY_LENGTH = 16

# Everything the pages load comes from this server: no CDN, no inline script.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; "
        "frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def checked_secret_key(settings: ConsoleSettings) -> str:
    """The session-signing key; refuses a missing or short one instead of inventing one."""
    if settings.secret_key is None:
        raise ConsoleConfigError(
            "the console needs a secret key to sign sessions: set TMS_CONSOLE_SECRET_KEY "
            '(or secret_key in [console]), e.g. to the output of `python -c "import secrets; '
            'print(secrets.token_urlsafe(32))"`'
        )
    key = settings.secret_key.get_secret_value()
    if len(key) < MIN_SECRET_KEY_LENGTH:
        raise ConsoleConfigError(
            f"TMS_CONSOLE_SECRET_KEY is too short ({len(key)} characters): use a random value "
            f"of at least {MIN_SECRET_KEY_LENGTH} characters"
        )
    return key


def _add_security_headers(response: Response) -> Response:
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _template_context() -> dict[str, Any]:
    return {"now": datetime.now(UTC)}


# Longer than any filter or search a person types; beyond it a value is an attack.
MAX_QUERY_VALUE = 1000


def _refuse_bad_input() -> None:
    """400 with the reason for a NUL byte anywhere in the query or a form (PostgreSQL
    refuses it in text, which was a 500) or an over-long query value."""
    for source, values in (("query parameter", request.args), ("form field", request.form)):
        for name, value in values.items(multi=True):
            if "\x00" in name or "\x00" in value:
                abort(400, description=f"{source} {name[:50]!r} contains a NUL byte")
            if source == "query parameter" and len(value) > MAX_QUERY_VALUE:
                abort(
                    400,
                    description=f"query parameter {name[:50]!r} is longer than "
                    f"{MAX_QUERY_VALUE} characters",
                )


def trust_proxies(app: Flask, hops: int) -> None:
    """Take the client's address and scheme from the ``hops`` reverse proxies in front.

    request.remote_addr becomes the address the outermost trusted proxy saw: the
    ``hops``-th X-Forwarded-For value from the right, the ones those proxies appended.
    Values further left come from the client and are never read, and a header with
    fewer values than ``hops`` leaves the connection's address (fail closed). Everything
    that judges or records an address (sign-in throttling, allowed_networks, the audit
    trail, sessions) reads request.remote_addr, so this one place corrects them all.

    X-Forwarded-Proto is set, not appended to, by Caddy, ingress-nginx and most others
    (each replaces a client's value), so the nearest proxy's single value is the one to
    read whatever ``hops`` is. X-Forwarded-Host/-Port/-Prefix are not trusted: Caddy
    and ingress-nginx pass Host through and the console is served at the root.
    With 0 nothing is wrapped: the headers are a client's claim and mean nothing.
    """
    # ConsoleServer reads it: waitress drops X-Forwarded-* unless told the app wants them.
    app.config["TMS_PROXY_HOPS"] = hops
    if hops > 0:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=1, x_host=0, x_port=0, x_prefix=0
        )


def create_app(
    settings: ConsoleSettings, database_url: str, firmware: Library | None = None
) -> Flask:
    """Build the console for ``settings`` against the PostgreSQL at ``database_url``;
    ``firmware``: where the firmware library is (default: the default data dir's)."""
    app = Flask(__name__)
    # Before anything builds the Jinja environment, which takes its tojson from here.
    app.json = StrictJSONProvider(app)
    app.config.update(
        SECRET_KEY=checked_secret_key(settings),
        SESSION_COOKIE_NAME="tms_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.cookie_secure,
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=settings.session_lifetime_min),
        MAX_CONTENT_LENGTH=1024 * 1024,
        TMS_REFRESH_S=settings.refresh_s,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the documented field order
    trust_proxies(app, settings.proxy_hops)

    # Before any hook reads a body: an admin's firmware upload may be as large as an
    # image; every other request keeps MAX_CONTENT_LENGTH.
    app.before_request(allow_image_uploads)
    # First of the other request hooks: nothing else reads a value PostgreSQL would refuse.
    app.before_request(_refuse_bad_input)
    database.init_app(app, make_engine(database_url, jit=False))
    access.init_app(app)
    csrf.init_app(app)
    auth.init_app(
        app,
        ThrottlePolicy(
            per_user=settings.login_failures_per_user,
            per_address=settings.login_failures_per_address,
            window=timedelta(seconds=settings.login_failure_window_s),
        ),
    )
    # Last, so that it is inserted first: a refused address reaches nothing else.
    allowlist.init_app(app, settings.allowed_networks)

    app.jinja_env.filters.update(
        ago=formatting.ago,
        utc=formatting.utc_text,
        local_time=formatting.local_time,
        percent=formatting.percent,
        percent_of_one=formatting.percent_of_one,
        load_level=formatting.load_level,
        duration=formatting.duration,
        milliseconds=formatting.milliseconds,
        data_value=formatting.data_value,
        pretty_json=formatting.pretty_json,
        json_preview=formatting.json_preview,
    )
    commands.init_app(app)
    app.context_processor(_template_context)
    app.after_request(_add_security_headers)

    for blueprint in (
        auth.bp,
        dashboard.bp,
        customers.bp,
        reports.bp,
        terminals.bp,
        terminal_actions.bp,
        commands.bp,
        audit.bp,
        api.bp,
        api_commands.bp,
        firmware_screens.bp,
        api_firmware.bp,
        rollout_screens.bp,
        api_rollouts.bp,
        health.bp,
        error_pages.bp,
        user_admin.bp,
    ):
        app.register_blueprint(blueprint)
    from console import alerts, dead_letters  # issue 5: alert and dead-letter screens

    app.register_blueprint(alerts.bp)
    app.register_blueprint(dead_letters.bp)
    firmware_download.init_app(app, firmware or firmware_library_of(Settings()))
    return app
