"""The users screen (admins): add, disable, re-role, reset a password, end sessions,
and list, issue and revoke API tokens. Every change is one repository call that writes
its audit row in the same transaction (console.users).
"""

from __future__ import annotations

from datetime import timedelta

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.wrappers import Response

from console import session_repository, users
from console.access import acting_user, client_address, requires_role
from console.db import request_session
from console.errors import UserError
from shared.models import Role, UserAccount

bp = Blueprint("user_admin", __name__)

ROLES = [role.value for role in Role]


def _actor() -> str:
    user = acting_user()
    assert user is not None  # requires_role let the request through
    return user.username


def _idle_limit() -> timedelta:
    limit = current_app.config["PERMANENT_SESSION_LIFETIME"]
    assert isinstance(limit, timedelta)
    return limit


def _once(template: str, **context: object) -> Response:
    """A page with a secret shown once: nothing may keep a copy of it."""
    response = make_response(render_template(template, **context))
    response.headers["Cache-Control"] = "no-store"
    return response


def _list_page(form: dict[str, str] | None = None, errors: dict[str, str] | None = None,
               status: int = 200) -> tuple[str, int]:  # fmt: skip
    db = request_session()
    return (
        render_template(
            "users.html",
            accounts=users.list_users(db),
            sessions=session_repository.live_counts(db, _idle_limit()),
            tokens=users.live_token_counts(db),
            roles=ROLES,
            form=form or {"username": "", "role": Role.VIEWER.value},
            errors=errors or {},
        ),
        status,
    )


@bp.get("/users")
@requires_role(Role.ADMIN)
def index() -> tuple[str, int]:
    return _list_page()


@bp.post("/users")
@requires_role(Role.ADMIN)
def create() -> Response | tuple[str, int]:
    form = {
        "username": request.form.get("username", "").strip()[:100],
        "role": request.form.get("role", ""),
    }
    db = request_session()
    errors: dict[str, str] = {}
    if form["role"] not in ROLES:
        errors["role"] = "Choose one of: " + ", ".join(ROLES) + "."
    else:
        try:
            account, password = users.invite_user(
                db, _actor(), form["username"], form["role"], client_address()
            )
        except UserError as exc:
            db.rollback()
            errors["username"] = exc.sentence()
        else:
            return _once(
                "user_password.html",
                account=account,
                password=password,
                what="New user. Give them this one-time password: they choose their own "
                "at the first sign-in.",
            )
    return _list_page(form, errors, 400)


def _account_or_404(username: str) -> UserAccount:
    account = users.get_user_by_name(request_session(), username)
    if account is None or account.id is None:
        abort(404, description=f"There is no user {username[:64]!r}.")
    return account


@bp.get("/users/<username>")
@requires_role(Role.ADMIN)
def detail(username: str) -> str:
    db = request_session()
    account = _account_or_404(username)
    account_id = account.id
    assert account_id is not None
    return render_template(
        "user.html",
        account=account,
        roles=ROLES,
        sessions=users.sessions_of(db, account_id, _idle_limit()),
        tokens=users.tokens_of(db, account_id),
        is_self=account.username == _actor(),
    )


def _apply(username: str, change: str) -> Response:
    """Run one change; a refusal (UserError) is shown on the user's page, not a 500."""
    db = request_session()
    account = _account_or_404(username)
    try:
        if change == "role":
            users.set_role(db, _actor(), account.username, request.form.get("role", ""),
                           client_address())  # fmt: skip
            flash(f"{account.username} is now {request.form.get('role')}.", "info")
        elif change in ("disable", "enable"):
            users.set_active(db, _actor(), account.username, change == "enable", client_address())
            flash(f"{account.username} is {change}d.", "info")
        elif change == "end-sessions":
            ended = users.end_sessions(db, _actor(), account.username, client_address())
            flash(f"Ended {ended} session(s) of {account.username}.", "info")
    except UserError as exc:
        db.rollback()
        flash(exc.sentence(), "error")
    return redirect(url_for("user_admin.detail", username=account.username))


@bp.post("/users/<username>/role")
@requires_role(Role.ADMIN)
def change_role(username: str) -> Response:
    return _apply(username, "role")


@bp.post("/users/<username>/disable")
@requires_role(Role.ADMIN)
def disable(username: str) -> Response:
    return _apply(username, "disable")


@bp.post("/users/<username>/enable")
@requires_role(Role.ADMIN)
def enable(username: str) -> Response:
    return _apply(username, "enable")


@bp.post("/users/<username>/end-sessions")
@requires_role(Role.ADMIN)
def end_sessions(username: str) -> Response:
    return _apply(username, "end-sessions")


@bp.post("/users/<username>/reset-password")
@requires_role(Role.ADMIN)
def reset_password(username: str) -> Response:
    db = request_session()
    account = _account_or_404(username)
    password = users.reset_password(db, _actor(), account.username, client_address())
    return _once(
        "user_password.html",
        account=account,
        password=password,
        what="Password reset; every session of this user was signed out. Give them this "
        "one-time password: they choose their own at the next sign-in.",
    )


@bp.post("/users/<username>/tokens")
@requires_role(Role.ADMIN)
def issue_token(username: str) -> Response:
    db = request_session()
    account = _account_or_404(username)
    name = request.form.get("name", "")
    try:
        token = users.issue_token(db, _actor(), account.username, name, client_address())
    except UserError as exc:
        db.rollback()
        flash(exc.sentence(), "error")
        return redirect(url_for("user_admin.detail", username=account.username))
    return _once("user_token.html", account=account, token=token, name=name.strip())


@bp.post("/users/<username>/tokens/<int(max=2147483647):token_id>/revoke")
@requires_role(Role.ADMIN)
def revoke_token(username: str, token_id: int) -> Response:
    db = request_session()
    account = _account_or_404(username)
    try:
        token = users.revoke_token(db, _actor(), account.username, token_id, client_address())
    except UserError as exc:
        db.rollback()
        flash(exc.sentence(), "error")
    else:
        flash(f"Token {token.name!r} revoked: scripts using it now get 401.", "info")
    return redirect(url_for("user_admin.detail", username=account.username))
