"""The sign-in screen: login and logout, each attempt written to the audit trail."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from werkzeug.wrappers import Response

from console import users
from console.access import ConsoleUser, client_address, requires_role
from console.db import request_session
from shared.models import Role

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


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str | tuple[str, int]:
    if current_user.is_authenticated:
        return redirect(url_for("terminals.index"))
    next_page = safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("login.html", form=LoginForm(), next_page=next_page)

    form = LoginForm.parse(request.form.to_dict())
    if form.errors:
        return render_template("login.html", form=form, next_page=next_page), 400
    db = request_session()
    account = users.authenticate(db, form.username, form.password)
    if account is None:
        users.record_audit(db, form.username, "login.failed", form.username, None, client_address())
        form.errors["form"] = REFUSED
        return render_template("login.html", form=form, next_page=next_page), 401
    users.record_audit(db, account.username, "login", account.username, None, client_address())
    # A fresh session on sign-in: nothing chosen before it (fixation) carries over.
    session.clear()
    session.permanent = True
    login_user(ConsoleUser.of(account))
    return redirect(next_page or url_for("terminals.index"))


@bp.route("/logout", methods=["POST"])
@requires_role(Role.VIEWER)
def logout() -> Response:
    username = current_user.username
    users.record_audit(request_session(), username, "logout", username, None, client_address())
    logout_user()
    session.clear()
    flash("You have been signed out.", "info")
    return redirect(url_for("auth.login"))
