"""Console users, API tokens and the audit trail: the repository that owns those tables.

Blueprints hand the request's ``Session`` to this module and the other repository
modules (``console.fleet``, ``console.alert_repository``,
``console.dead_letter_repository``) and never query it themselves. Each function that
changes data commits its own unit of work, so a view never has to remember to. Audit
rows are written through ``shared.audit_trail``, the trail's one writer.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from werkzeug.security import check_password_hash, generate_password_hash

from console import session_repository
from console.errors import UserError
from console.roles import parse_role
from shared import audit_trail
from shared.models import ApiToken, AuditEvent, ConsoleSession, Role, UserAccount

INITIAL_ADMIN = "admin"
MIN_PASSWORD_LENGTH = 10
TOKEN_PREFIX = "tms_"
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")


def normalize_username(username: str) -> str:
    """Usernames are case-insensitive: stored and compared in lower case."""
    name = username.strip().lower()
    if not _USERNAME.fullmatch(name):
        raise UserError(
            f"invalid username {username!r}: use 2-64 characters: letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return name


def check_password_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password too short: use at least {MIN_PASSWORD_LENGTH} characters")


def generate_password() -> str:
    """A random password people can still type: 16 URL-safe characters (96 bits)."""
    return secrets.token_urlsafe(12)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@functools.cache
def _dummy_password_hash() -> str:
    # Checked against when the username is unknown, so that a failed login takes
    # as long for a missing user as for a wrong password (no user enumeration).
    return generate_password_hash(secrets.token_urlsafe(16))


def create_user(session: Session, username: str, password: str, role: str) -> UserAccount:
    """Add a console user; UserError for a bad name, role or password, or a taken name."""
    name = normalize_username(username)
    checked_role = parse_role(role)
    check_password_policy(password)
    if session.exec(select(UserAccount).where(UserAccount.username == name)).first():
        raise UserError(f"user {name!r} already exists")
    account = UserAccount(
        username=name, password_hash=generate_password_hash(password), role=checked_role.value
    )
    session.add(account)
    try:
        session.commit()
    except IntegrityError as exc:  # created concurrently by someone else
        session.rollback()
        raise UserError(f"user {name!r} already exists") from exc
    session.refresh(account)
    return account


def get_user(session: Session, user_id: int) -> UserAccount | None:
    return session.get(UserAccount, user_id)


def get_user_by_name(session: Session, username: str) -> UserAccount | None:
    name = username.strip().lower()
    return session.exec(select(UserAccount).where(UserAccount.username == name)).first()


def authenticate(session: Session, username: str, password: str) -> UserAccount | None:
    """The active user with this name and password, or None; records the login time."""
    account = get_user_by_name(session, username)
    if account is None:
        check_password_hash(_dummy_password_hash(), password)
        return None
    if not check_password_hash(account.password_hash, password) or not account.active:
        return None
    account.last_login_at = datetime.now(UTC)
    session.add(account)
    session.commit()
    session.refresh(account)
    return account


def create_api_token(session: Session, user: UserAccount, name: str) -> str:
    """A new random bearer token for ``user``; returned once, only its SHA-256 is kept."""
    label = name.strip()
    if not label or len(label) > 100:
        raise UserError("token name must be 1-100 characters (say what script uses it)")
    if user.id is None:
        raise UserError(f"user {user.username!r} is not saved yet")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, name=label, token_hash=hash_token(token)))
    session.commit()
    return token


def revoke_api_tokens(session: Session, user: UserAccount, name: str) -> int:
    """Revoke ``user``'s live tokens called ``name``; returns how many were revoked."""
    tokens = session.exec(
        select(ApiToken).where(
            ApiToken.user_id == user.id,
            ApiToken.name == name.strip(),
            col(ApiToken.revoked_at).is_(None),
        )
    ).all()
    now = datetime.now(UTC)
    for token in tokens:
        token.revoked_at = now
        session.add(token)
    session.commit()
    return len(tokens)


def user_for_token(session: Session, token: str) -> UserAccount | None:
    """The active owner of a live (not revoked) token, or None; stamps last_used_at."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    row = session.exec(
        select(ApiToken, UserAccount)
        .join(UserAccount, col(UserAccount.id) == col(ApiToken.user_id))
        .where(ApiToken.token_hash == hash_token(token), col(ApiToken.revoked_at).is_(None))
    ).first()
    if row is None:
        return None
    api_token, account = row
    if not account.active:
        return None
    api_token.last_used_at = datetime.now(UTC)
    session.add(api_token)
    session.commit()
    session.refresh(account)
    return account


def token_name(session: Session, token: str) -> str | None:
    """The name its owner gave this token (revoked or not), or None if there is none."""
    return session.exec(
        select(ApiToken.name).where(ApiToken.token_hash == hash_token(token))
    ).first()


def ensure_initial_admin(engine: Engine) -> str | None:
    """On an empty user table, create ``admin`` and return its generated password; else None."""
    with Session(engine, expire_on_commit=False) as session:
        if session.exec(select(func.count()).select_from(UserAccount)).one() > 0:
            return None
        password = generate_password()
        try:
            create_user(session, INITIAL_ADMIN, password, Role.ADMIN.value)
        except UserError:  # another process created it first
            return None
        record_audit(session, "system", "user.created", INITIAL_ADMIN, {"role": "admin"}, None)
        return password


def record_audit(
    session: Session,
    actor: str,
    action: str,
    target: str,
    detail: dict[str, Any] | None,
    remote_addr: str | None,
) -> None:
    """Append one row to the audit trail (who did what to what, from where) and commit."""
    audit_trail.record(session, actor, action, target, detail, remote_addr)
    session.commit()


def list_users(session: Session) -> list[UserAccount]:
    return list(session.exec(select(UserAccount).order_by(col(UserAccount.username))).all())


# At most this many failures are read per key: more than any throttle limit allows.
_FAILURES_READ = 1000


def recent_login_failures(
    session: Session, username: str, address: str | None, window: timedelta
) -> tuple[list[datetime], list[datetime]]:
    """Failed sign-in times within ``window``: for this username since its last
    successful sign-in, and from this address (for any username)."""
    now = datetime.now(UTC)
    name = username.strip().lower()[: audit_trail.TARGET_MAX]
    since_user = now - window
    account = get_user_by_name(session, name)
    if account is not None and account.last_login_at is not None:
        since_user = max(since_user, account.last_login_at)
    failed = col(AuditEvent.action) == "login.failed"
    user_times = session.exec(
        select(AuditEvent.at)
        .where(failed, AuditEvent.target == name, col(AuditEvent.at) > since_user)
        .order_by(col(AuditEvent.at).desc())
        .limit(_FAILURES_READ)
    ).all()
    address_times: list[datetime | None] = []
    if address:
        address_times = list(
            session.exec(
                select(AuditEvent.at)
                .where(
                    failed,
                    AuditEvent.remote_addr == address[: audit_trail.REMOTE_ADDR_MAX],
                    col(AuditEvent.at) > now - window,
                )
                .order_by(col(AuditEvent.at).desc())
                .limit(_FAILURES_READ)
            ).all()
        )
    return [at for at in user_times if at is not None], [at for at in address_times if at]


def _active_admins(session: Session) -> int:
    return session.exec(
        select(func.count())
        .select_from(UserAccount)
        .where(UserAccount.role == Role.ADMIN.value, col(UserAccount.active).is_(True))
    ).one()


def _require_other_admin(session: Session, account: UserAccount, change: str) -> None:
    if account.role == Role.ADMIN.value and account.active and _active_admins(session) <= 1:
        raise UserError(
            f"cannot {change} {account.username!r}: it is the only active admin "
            "(make another user admin first)"
        )


def _target(session: Session, username: str) -> UserAccount:
    account = get_user_by_name(session, username)
    if account is None or account.id is None:
        raise UserError(f"no user {username!r}")
    return account


def invite_user(
    session: Session, actor: str, username: str, role: str, remote_addr: str | None
) -> tuple[UserAccount, str]:
    """An admin adds a user: a generated one-time password the user must change at the
    first sign-in. Returns the account and that password (shown once)."""
    password = generate_password()
    account = create_user(session, username, password, role)
    account.must_change_password = True
    session.add(account)
    audit_trail.record(
        session, actor, "user.created", account.username, {"role": account.role}, remote_addr
    )
    session.commit()
    return account, password


def set_role(
    session: Session, actor: str, username: str, role: str, remote_addr: str | None
) -> UserAccount:
    account = _target(session, username)
    new_role = parse_role(role).value
    if new_role == account.role:
        return account
    if account.username == actor:
        raise UserError("you cannot change your own role (ask another admin)")
    if new_role != Role.ADMIN.value:
        _require_other_admin(session, account, "demote")
    audit_trail.record(
        session, actor, "user.role_changed", account.username,
        {"from": account.role, "to": new_role}, remote_addr,
    )  # fmt: skip
    account.role = new_role
    session.add(account)
    session.commit()
    return account


def set_active(
    session: Session, actor: str, username: str, active: bool, remote_addr: str | None
) -> UserAccount:
    """Enable or disable a user; disabling ends every session of theirs at once."""
    account = _target(session, username)
    assert account.id is not None
    if account.active == active:
        return account
    if not active:
        if account.username == actor:
            raise UserError("you cannot disable yourself (ask another admin)")
        _require_other_admin(session, account, "disable")
        ended = session_repository.end_all(session, account.id, "disabled", commit=False)
        detail: dict[str, Any] = {"sessions_ended": ended}
    else:
        detail = {}
    account.active = active
    session.add(account)
    action = "user.enabled" if active else "user.disabled"
    audit_trail.record(session, actor, action, account.username, detail, remote_addr)
    session.commit()
    return account


def reset_password(session: Session, actor: str, username: str, remote_addr: str | None) -> str:
    """A new one-time password for ``username``, who must choose their own at the next
    sign-in; every session of theirs ends. Returns the one-time password (shown once)."""
    account = _target(session, username)
    assert account.id is not None
    password = generate_password()
    account.password_hash = generate_password_hash(password)
    account.must_change_password = True
    session.add(account)
    ended = session_repository.end_all(session, account.id, "password reset", commit=False)
    audit_trail.record(
        session, actor, "user.password_reset", account.username,
        {"sessions_ended": ended}, remote_addr,
    )  # fmt: skip
    session.commit()
    return password


def change_password(
    session: Session, account: UserAccount, current: str, new: str, remote_addr: str | None
) -> None:
    """The user's own change: checks the current password and the policy; ends every
    session of the user (the caller starts a fresh one for the browser that asked)."""
    assert account.id is not None
    if not check_password_hash(account.password_hash, current):
        raise UserError("the current password is wrong")
    check_password_policy(new)
    if check_password_hash(account.password_hash, new):
        raise UserError("choose a password different from the current one")
    account.password_hash = generate_password_hash(new)
    account.must_change_password = False
    session.add(account)
    ended = session_repository.end_all(session, account.id, "password changed", commit=False)
    audit_trail.record(
        session, account.username, "user.password_changed", account.username,
        {"sessions_ended": ended}, remote_addr,
    )  # fmt: skip
    session.commit()


def end_sessions(session: Session, actor: str, username: str, remote_addr: str | None) -> int:
    account = _target(session, username)
    assert account.id is not None
    ended = session_repository.end_all(session, account.id, "ended by admin", commit=False)
    audit_trail.record(
        session, actor, "user.sessions_ended", account.username, {"count": ended}, remote_addr
    )
    session.commit()
    return ended


def tokens_of(session: Session, user_id: int) -> list[ApiToken]:
    """Every token of a user, live ones first, newest first."""
    return list(
        session.exec(
            select(ApiToken)
            .where(ApiToken.user_id == user_id)
            .order_by(col(ApiToken.revoked_at).is_not(None), col(ApiToken.id).desc())
        ).all()
    )


def live_token_counts(session: Session) -> dict[int, int]:
    rows = session.exec(
        select(ApiToken.user_id, func.count())
        .where(col(ApiToken.revoked_at).is_(None))
        .group_by(col(ApiToken.user_id))
    ).all()
    return {user_id: count for user_id, count in rows}


def issue_token(
    session: Session, actor: str, username: str, name: str, remote_addr: str | None
) -> str:
    account = _target(session, username)
    token = create_api_token(session, account, name)
    audit_trail.record(
        session, actor, "token.created", account.username, {"name": name.strip()}, remote_addr
    )
    session.commit()
    return token


def revoke_token(
    session: Session, actor: str, username: str, token_id: int, remote_addr: str | None
) -> ApiToken:
    account = _target(session, username)
    token = session.get(ApiToken, token_id)
    if token is None or token.user_id != account.id:
        raise UserError(f"{account.username!r} has no token {token_id}")
    if token.revoked_at is None:
        token.revoked_at = datetime.now(UTC)
        session.add(token)
        audit_trail.record(
            session, actor, "token.revoked", account.username, {"name": token.name}, remote_addr
        )
        session.commit()
    return token


def sessions_of(session: Session, user_id: int, idle_limit: timedelta) -> list[ConsoleSession]:
    return session_repository.live_sessions(session, user_id, idle_limit)
