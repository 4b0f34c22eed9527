"""Broker accounts in the database: terminals, service accounts, and what the broker loads.

Only these functions write ``Credential`` rows. They never commit: the caller owns the
transaction, so a batch of terminals can be provisioned in one commit. A plaintext
secret is returned exactly once and only its salted hash is stored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from registry.errors import ProvisioningError
from shared import topics
from shared.credentials import StoredSecret, generate_secret, hash_secret
from shared.errors import TopicError
from shared.models import AccountKind, Credential, Customer, Store, Terminal, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BrokerAccount:
    """One account the broker must accept: who, which rules, and the stored secret."""

    username: str
    kind: AccountKind
    secret: StoredSecret


def _customer(session: Session, name: str) -> Customer:
    customer = session.exec(select(Customer).where(Customer.name == name)).first()
    if customer is None:
        customer = Customer(name=name)
        session.add(customer)
        session.flush()
    assert customer.id is not None  # flushed rows have their key
    return customer


def _store(session: Session, customer: Customer, code: str) -> Store:
    assert customer.id is not None
    store = session.exec(
        select(Store).where(Store.customer_id == customer.id, Store.code == code)
    ).first()
    if store is None:
        store = Store(customer_id=customer.id, code=code, name=code)
        session.add(store)
        session.flush()
    return store


def find_credential(session: Session, username: str) -> Credential | None:
    return session.exec(select(Credential).where(Credential.username == username)).first()


def _flush(session: Session, what: str) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise ProvisioningError(f"{what} already exists (created concurrently?)") from exc


def provision_terminal(
    session: Session, serial: str, customer_name: str, store_code: str | None = None
) -> str:
    """Create a terminal and its broker credential; return its secret (shown once)."""
    try:
        topics.check_serial(serial)
    except TopicError as exc:
        raise ProvisioningError(str(exc)) from exc
    if not customer_name.strip():
        raise ProvisioningError("a terminal needs a customer name (--customer)")
    if session.exec(select(Terminal.id).where(Terminal.serial == serial)).first() is not None:
        raise ProvisioningError(
            f"terminal {serial} already exists; use `tms terminal rotate {serial}` for a new secret"
        )
    if find_credential(session, serial) is not None:
        raise ProvisioningError(f"broker account {serial!r} already exists as a service account")
    customer = _customer(session, customer_name.strip())
    assert customer.id is not None
    store = _store(session, customer, store_code) if store_code else None
    terminal = Terminal(
        serial=serial, customer_id=customer.id, store_id=store.id if store else None
    )
    session.add(terminal)
    _flush(session, f"terminal {serial}")
    secret = generate_secret()
    stored = hash_secret(secret)
    session.add(
        Credential(
            username=serial,
            kind=AccountKind.TERMINAL.value,
            terminal_id=terminal.id,
            salt=stored.salt,
            secret_hash=stored.secret_hash,
        )
    )
    _flush(session, f"broker account {serial}")
    return secret


def rotate_secret(session: Session, username: str) -> str:
    """Give an existing account a new secret (and re-enable it if it was revoked)."""
    credential = find_credential(session, username)
    if credential is None:
        raise ProvisioningError(f"no broker account named {username!r}")
    secret = generate_secret()
    stored = hash_secret(secret)
    credential.salt = stored.salt
    credential.secret_hash = stored.secret_hash
    credential.revoked_at = None
    session.add(credential)
    session.flush()
    return secret


def revoke(session: Session, username: str) -> None:
    """Refuse this account from now on; the broker drops its live session on reload."""
    credential = find_credential(session, username)
    if credential is None:
        raise ProvisioningError(f"no broker account named {username!r}")
    if credential.revoked_at is None:
        credential.revoked_at = utcnow()
        session.add(credential)
        session.flush()


def ensure_service_account(session: Session, kind: AccountKind, username: str) -> str:
    """Create the service account, or rotate its secret if it exists; return the secret."""
    if kind is AccountKind.TERMINAL:
        raise ProvisioningError("terminals are created with provision_terminal, not as services")
    if not username or any(c in username for c in "/+#:\x00 ") or len(username) > 64:
        raise ProvisioningError(
            f"invalid service account name {username!r}: use up to 64 characters without"
            " '/', '+', '#', ':' or spaces"
        )
    if kind is AccountKind.SUPPORT_SCRIPT and not topics.is_valid_account(username):
        # Its name is a level of its request topics (tms/requests/<name>/...).
        raise ProvisioningError(
            f"invalid support-script account name {username!r}: use 1-64 letters, digits,"
            " '.', '_' or '-', starting with a letter or digit"
        )
    credential = find_credential(session, username)
    if credential is None:
        secret = generate_secret()
        stored = hash_secret(secret)
        session.add(
            Credential(
                username=username, kind=kind.value, salt=stored.salt, secret_hash=stored.secret_hash
            )
        )
        _flush(session, f"broker account {username}")
        return secret
    if credential.kind != kind.value:
        raise ProvisioningError(
            f"broker account {username!r} already exists as a {credential.kind} account"
        )
    return rotate_secret(session, username)


def active_accounts(session: Session) -> list[BrokerAccount]:
    """Every account the broker should accept now, by username; revoked ones left out."""
    rows = session.exec(
        select(Credential)
        .where(col(Credential.revoked_at).is_(None))
        .order_by(col(Credential.username))
    ).all()
    accounts = []
    for row in rows:
        try:
            kind = AccountKind(row.kind)
        except ValueError:
            # Fail closed: an account of a kind this version does not know gets no login.
            log.warning("skipping broker account %r of unknown kind %r", row.username, row.kind)
            continue
        accounts.append(BrokerAccount(row.username, kind, StoredSecret(row.salt, row.secret_hash)))
    return accounts
