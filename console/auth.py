"""The sign-in screen: login and logout, each attempt written to the audit trail."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_user, logout_user
from sqlmodel import Session
from werkzeug.wrappers import Response

from console import login_throttle, session_repository, users
from console.access import ConsoleUser, client_address, requires_role
from console.db import request_session
from console.errors import UserError
from console.login_throttle import ThrottlePolicy
from shared.models import Role, UserAccount

bp = Blueprint("auth", __name__)

REFUSED = "Wrong username or password."


@dataclass
class LoginForm:
    """The sign-in form's values and what is wrong with them (pure: no Flask, no DB)."""

    username: str = ""
    password: str = ""
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, form: dict[str, str]) -> LoginForm:
        parsed = cls(form.get("username", "").strip(), form.get("password", ""))
        if not parsed.username:
            parsed.errors["username"] = "Enter your username."
        elif len(parsed.username) > 64:
            parsed.errors["username"] = "Usernames are at most 64 characters."
        if not parsed.password:
            parsed.errors["password"] = "Enter your password."
        return parsed


def safe_next(target: str | None) -> str | None:
    """Only a path on this site: never send a user on to another host after sign-in."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


def throttle_policy() -> ThrottlePolicy:
    policy = current_app.config["TMS_LOGIN_THROTTLE"]
    assert isinstance(policy, ThrottlePolicy)
    return policy


def _refuse_locked(db: Session, form: LoginForm, next_page: str | None) -> tuple[str, int] | None:
    """429 before the password is checked, for a username or address with too many
    recent failures (console.login_throttle); None when the attempt may go on."""
    policy = throttle_policy()
    user_failures, address_failures = users.recent_login_failures(
        db, form.username, client_address(), policy.window
    )
    lock = login_throttle.lockout(user_failures, address_failures, policy, datetime.now(UTC))
    if lock is None:
        return None
    users.record_audit(
        db, form.username, "login.throttled", form.username,
        {"scope": lock.scope, "retry_after_s": lock.retry_after_s}, client_address(),
    )  # fmt: skip
    form.errors["form"] = lock.message()
    page = render_template("login.html", form=form, next_page=next_page)
    return page, 429


def _sign_in(db: Session, account: UserAccount) -> None:
    """A fresh server-side session and cookie: nothing chosen before sign-in (session
    fixation) carries over."""
    assert account.id is not None
    token = session_repository.start(
        db, account.id, client_address(), request.headers.get("User-Agent")
    )
    session.clear()
    session.permanent = True
    login_user(ConsoleUser.of(account, token))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str | tuple[str, int]:
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.index"))
    next_page = safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("login.html", form=LoginForm(), next_page=next_page)

    form = LoginForm.parse(request.form.to_dict())
    if form.errors:
        return render_template("login.html", form=form, next_page=next_page), 400
    db = request_session()
    locked = _refuse_locked(db, form, next_page)
    if locked is not None:
        return locked
    account = users.authenticate(db, form.username, form.password)
    if account is None:
        users.record_audit(db, form.username, "login.failed", form.username, None, client_address())
        form.errors["form"] = REFUSED
        return render_template("login.html", form=form, next_page=next_page), 401
    users.record_audit(db, account.username, "login", account.username, None, client_address())
    _sign_in(db, account)
    if account.must_change_password:
        flash("Your password was reset: choose a new one to go on.", "info")
        return redirect(url_for("auth.change_password", next=next_page))
    return redirect(next_page or url_for("dashboard.index"))


@bp.route("/logout", methods=["POST"])
@requires_role(Role.VIEWER)
def logout() -> Response:
    username = current_user.username
    db = request_session()
    # Every session of the user ends, not only this browser's: a cookie copied or
    # left signed in elsewhere stops working too.
    ended = session_repository.end_all(db, current_user.id, "logout", commit=False)
    users.record_audit(
        db, username, "logout", username, {"sessions_ended": ended}, client_address()
    )
    logout_user()
    session.clear()
    flash("You have been signed out.", "info")
    return redirect(url_for("auth.login"))


@dataclass
class PasswordForm:
    """The change-password form's values and what is wrong with them (pure)."""

    current: str = ""
    new: str = ""
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, form: dict[str, str]) -> PasswordForm:
        parsed = cls(form.get("current", ""), form.get("new", ""))
        if not parsed.current:
            parsed.errors["current"] = "Enter your current password."
        if len(parsed.new) < users.MIN_PASSWORD_LENGTH:
            parsed.errors["new"] = f"Use at least {users.MIN_PASSWORD_LENGTH} characters."
        elif len(parsed.new) > 1000:
            parsed.errors["new"] = "Use at most 1,000 characters."
        elif parsed.new != form.get("confirm", ""):
            parsed.errors["confirm"] = "The two new passwords differ."
        return parsed


def _password_page(form: PasswordForm, next_page: str | None) -> str:
    return render_template(
        "account_password.html",
        form=form,
        next_page=next_page,
        min_length=users.MIN_PASSWORD_LENGTH,
    )


@bp.route("/account/password", methods=["GET", "POST"])
@requires_role(Role.VIEWER)
def change_password() -> Response | str | tuple[str, int]:
    next_page = safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template(
            "account_password.html",
            min_length=users.MIN_PASSWORD_LENGTH,
            form=PasswordForm(),
            next_page=next_page,
        )
    form = PasswordForm.parse(request.form.to_dict())
    db = request_session()
    account = users.get_user(db, current_user.id)
    if account is None:
        abort(404)
    if not form.errors:
        try:
            users.change_password(db, account, form.current, form.new, client_address())
        except UserError as exc:
            key = "current" if "current password" in str(exc) else "new"
            form.errors[key] = exc.sentence()
    if form.errors:
        return render_template(
            "account_password.html",
            min_length=users.MIN_PASSWORD_LENGTH,
            form=form,
            next_page=next_page,
        ), 400
    # Every session ended with the old password; this browser goes on in a new one.
    _sign_in(db, account)
    flash("Your password was changed; every other session was signed out.", "info")
    return redirect(next_page or url_for("dashboard.index"))


# Reachable while a reset password has not been changed yet.
_OPEN_WHILE_RESET = frozenset({"auth.change_password", "auth.logout", "auth.login", "static"})


def _require_new_password() -> Response | None:
    """After an admin's reset, pages lead to the change-password form until it is done
    (the API is untouched: its tokens are not the reset password)."""
    if request.path.startswith("/api/") or request.endpoint in _OPEN_WHILE_RESET:
        return None
    if current_user.is_authenticated and getattr(current_user, "must_change_password", False):
        return redirect(url_for("auth.change_password", next=safe_next(request.full_path)))
    return None


def init_app(app: Flask, policy: ThrottlePolicy) -> None:
    app.config["TMS_LOGIN_THROTTLE"] = policy
    app.before_request(_require_new_password)
