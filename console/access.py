"""Who is asking, and may they: flask-login's one user_loader, API bearer tokens,
and the one role decorator every view goes through.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from flask import Flask, abort, current_app, g, request
from flask_login import LoginManager, current_user

from console import session_repository, users
from console.db import request_session
from console.roles import role_at_least
from shared.models import Role, UserAccount

API_PREFIX = "/api/"

login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Please sign in to continue."
login_manager.login_message_category = "info"


@dataclass(frozen=True)
class ConsoleUser:
    """The signed-in user as views see it: a value, not a table row."""

    id: int
    username: str
    role: str
    active: bool = True
    # The server-side session this browser signed in with (None for API tokens).
    session_token: str | None = None
    must_change_password: bool = False

    # The attributes flask-login expects of a user object.
    is_authenticated = True
    is_anonymous = False

    @property
    def is_active(self) -> bool:
        return self.active

    def get_id(self) -> str:
        # What flask-login keeps in the cookie: the session's token, never the user id,
        # so that ending the session on the server ends it in every copy of the cookie.
        if self.session_token is None:
            raise RuntimeError(f"{self.username} has no console session")
        return self.session_token

    def can(self, minimum: str) -> bool:
        """Templates use this to show only the links the user may follow."""
        return role_at_least(self.role, Role(minimum))

    @classmethod
    def of(cls, account: UserAccount, session_token: str | None = None) -> ConsoleUser:
        assert account.id is not None
        return cls(
            account.id,
            account.username,
            account.role,
            account.active,
            session_token,
            account.must_change_password,
        )


@login_manager.user_loader
def _load_user(session_token: str) -> ConsoleUser | None:
    # Loaded afresh on every request, so an ended session, a changed role or a
    # disabled account takes effect at once, not at the next sign-in.
    if not session_token or len(session_token) > 100:
        return None
    idle_limit = current_app.config["PERMANENT_SESSION_LIFETIME"]
    account = session_repository.account_for(request_session(), session_token, idle_limit)
    if account is None:
        return None
    return ConsoleUser.of(account, session_token)


# Agents' downloads (console.firmware_download): machine clients, answered in JSON too.
AGENT_PREFIX = "/agent/"


def is_api_request() -> bool:
    return request.path.startswith((API_PREFIX, AGENT_PREFIX))


def authenticate_bearer() -> None:
    """before_request of the API: a valid ``Authorization: Bearer <token>`` or 401."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        abort(401, description="missing API token: send 'Authorization: Bearer <token>'")
    db = request_session()
    account = users.user_for_token(db, token.strip())
    if account is None:
        abort(401, description="invalid or revoked API token")
    g.api_user = ConsoleUser.of(account)
    # Which of the owner's tokens asked: commands record it, so a script can be traced.
    g.api_token_name = users.token_name(db, token.strip())


def api_token_name() -> str | None:
    """The name of the bearer token of this /api request (set by authenticate_bearer)."""
    name = g.get("api_token_name")
    return name if isinstance(name, str) else None


def acting_user() -> ConsoleUser | None:
    """The API token's owner for /api requests, else the signed-in user, else None."""
    if is_api_request():
        api_user = g.get("api_user")
        return api_user if isinstance(api_user, ConsoleUser) else None
    if current_user.is_authenticated:
        return cast(ConsoleUser, current_user._get_current_object())
    return None


View = TypeVar("View", bound=Callable[..., Any])


def requires_role(minimum_role: Role) -> Callable[[View], View]:
    """Let the view run only for users whose role is at least ``minimum_role``.

    Not signed in: pages redirect to the sign-in form, the API answers 401.
    Signed in with too small a role: 403.
    """

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            user = acting_user()
            if user is None:
                if is_api_request():
                    abort(401, description="missing API token")
                return login_manager.unauthorized()
            if not role_at_least(user.role, minimum_role):
                abort(403, description=f"this needs the {minimum_role.value} role or higher")
            return view(*args, **kwargs)

        return cast(View, guarded)

    return decorate


def client_address() -> str | None:
    """The client's address for the audit trail, throttling and sessions: the
    connection's, or behind [console] proxy_hops proxies the one they saw (ProxyFix,
    console.app.trust_proxies, rewrites request.remote_addr)."""
    return request.remote_addr


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
