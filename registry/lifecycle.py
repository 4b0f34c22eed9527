"""Terminal and account lifecycle in one step each, with its audit record.

Every function here changes the credential (and terminal) rows and appends an
``audit_event`` row in the caller's transaction and never commits, so a change and
its audit record land together or not at all. The ``credential`` trigger then wakes
the broker service, which applies the change to live sessions within seconds.
Both ``tms`` commands and the console call these functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from registry import provisioning
from registry.errors import ProvisioningError
from registry.terminal_import import ImportRow, RowProblem, clashes, parse_terminal_csv
from shared import audit_trail
from shared.models import (
    AccountKind,
    Credential,
    Customer,
    StatusChange,
    Store,
    Terminal,
    TerminalStatus,
    utcnow,
)

SERVICE_KINDS = (
    AccountKind.SUPPORT_SCRIPT,
    AccountKind.INGEST,
    AccountKind.CONSOLE,
    AccountKind.BRIDGE,
)


class ImportRejected(ProvisioningError):
    """A CSV import with bad rows: nothing was written; ``problems`` lists them all."""

    def __init__(self, problems: list[RowProblem]) -> None:
        self.problems = problems
        listing = "\n".join(f"  {problem}" for problem in problems)
        super().__init__(
            f"nothing imported: {len(problems)} problem(s) in the file; fix them and run the "
            f"import again:\n{listing}"
        )


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asks for a change, for the audit trail: 'cli:root' or a console user."""

    name: str
    remote_addr: str | None = None


@dataclass(frozen=True, slots=True)
class AccountInfo:
    username: str
    kind: str
    created_at: datetime | None
    revoked_at: datetime | None


def _audit(
    session: Session, actor: Actor, action: str, target: str, detail: dict[str, Any] | None
) -> None:
    audit_trail.record(session, actor.name, action, target, detail, actor.remote_addr)
    session.flush()


def _terminal(session: Session, serial: str) -> Terminal:
    terminal = session.exec(select(Terminal).where(Terminal.serial == serial)).first()
    if terminal is None:
        raise ProvisioningError(f"there is no terminal with serial {serial!r}")
    return terminal


def _live_terminal(session: Session, serial: str) -> Terminal:
    terminal = _terminal(session, serial)
    if terminal.status == TerminalStatus.DECOMMISSIONED.value:
        raise ProvisioningError(
            f"terminal {serial} is decommissioned; register a replacement with "
            f"`tms terminal swap {serial} NEW-SERIAL`"
        )
    return terminal


def add_terminal(
    session: Session, actor: Actor, serial: str, customer: str, store: str | None
) -> str:
    secret = provisioning.provision_terminal(session, serial, customer, store)
    _audit(session, actor, "terminal.added", serial, {"customer": customer, "store": store})
    return secret


def import_terminals(session: Session, actor: Actor, csv_text: str) -> list[tuple[str, str]]:
    """Provision every terminal in the CSV, or none: (serial, secret) per row, in file order."""
    parsed = parse_terminal_csv(csv_text)
    problems = list(parsed.problems)
    serials = [row.serial for row in parsed.rows]
    taken = set(
        session.exec(select(Terminal.serial).where(col(Terminal.serial).in_(serials))).all()
    ) | set(
        session.exec(select(Credential.username).where(col(Credential.username).in_(serials))).all()
    )
    problems += clashes(parsed.rows, taken)
    if problems:
        raise ImportRejected(sorted(problems, key=lambda p: p.line))
    created = [(row.serial, _provision_row(session, row)) for row in parsed.rows]
    _audit(session, actor, "terminal.imported", f"{len(created)} terminals", {"serials": serials})
    return created


def _provision_row(session: Session, row: ImportRow) -> str:
    return provisioning.provision_terminal(session, row.serial, row.customer, row.store)


def rotate_terminal(session: Session, actor: Actor, serial: str) -> str:
    """A new secret; the old one stops working and its live session is dropped."""
    terminal = _live_terminal(session, serial)
    secret = provisioning.rotate_secret(session, serial)
    # Its session is dropped now; it is back when its agent logs in with the new secret.
    _set_status(session, terminal, TerminalStatus.OFFLINE, "secret rotated")
    _audit(session, actor, "terminal.rotated", serial, None)
    return secret


def revoke_terminal(session: Session, actor: Actor, serial: str) -> None:
    """Refuse the terminal at the broker (its live session is dropped); `rotate` re-admits."""
    terminal = _terminal(session, serial)
    provisioning.revoke(session, serial)
    if terminal.status != TerminalStatus.DECOMMISSIONED.value:
        # Its session is dropped now: offline with the reason at once, not when the
        # missed-heartbeat sweep notices minutes later.
        _set_status(session, terminal, TerminalStatus.OFFLINE, "access revoked")
    _audit(session, actor, "terminal.revoked", serial, None)


def _set_status(session: Session, terminal: Terminal, status: TerminalStatus, reason: str) -> None:
    assert terminal.id is not None
    now = utcnow()
    session.add(
        StatusChange(
            terminal_id=terminal.id,
            old_status=terminal.status,
            new_status=status.value,
            reason=reason[:200],
        )
    )
    terminal.status = status.value
    terminal.status_reason = reason[:200]
    terminal.status_changed_at = now
    if status is TerminalStatus.DECOMMISSIONED:
        terminal.decommissioned_at = now
    session.add(terminal)


def decommission_terminal(
    session: Session, actor: Actor, serial: str, reason: str = "decommissioned"
) -> None:
    """Take the terminal out of service for good: credential revoked, status recorded."""
    terminal = _live_terminal(session, serial)
    provisioning.revoke(session, serial)
    _set_status(session, terminal, TerminalStatus.DECOMMISSIONED, reason)
    session.flush()
    _audit(session, actor, "terminal.decommissioned", serial, {"reason": reason})


def swap_terminal(session: Session, actor: Actor, old_serial: str, new_serial: str) -> str:
    """Register ``new_serial`` in the old one's customer and store; decommission the old.

    Returns the new terminal's secret (shown once).
    """
    old = _live_terminal(session, old_serial)
    if old_serial == new_serial:
        raise ProvisioningError("a terminal cannot replace itself: give the new serial")
    customer = session.get(Customer, old.customer_id)
    assert customer is not None
    store = session.get(Store, old.store_id) if old.store_id else None
    old_store_id = old.store_id
    # The slot is freed first, then taken by the replacement in the same transaction.
    old.store_id = None
    session.add(old)
    secret = provisioning.provision_terminal(
        session, new_serial, customer.name, store.code if store else None
    )
    provisioning.revoke(session, old_serial)
    _set_status(session, old, TerminalStatus.DECOMMISSIONED, f"replaced by {new_serial}")
    session.flush()
    _audit(
        session,
        actor,
        "terminal.swapped",
        old_serial,
        {"replacement": new_serial, "customer": customer.name, "store_id": old_store_id},
    )
    return secret


def add_account(session: Session, actor: Actor, username: str, kind: AccountKind) -> str:
    """A new service or support-script account; refuses an existing name."""
    if kind not in SERVICE_KINDS:
        raise ProvisioningError(
            f"accounts of kind {kind.value} are not created here: terminals come from "
            "`tms terminal add`"
        )
    if provisioning.find_credential(session, username) is not None:
        raise ProvisioningError(
            f"broker account {username!r} already exists; use `tms account rotate {username}`"
        )
    secret = provisioning.ensure_service_account(session, kind, username)
    _audit(session, actor, "account.added", username, {"role": kind.value})
    return secret


def _service_credential(session: Session, username: str) -> Credential:
    credential = provisioning.find_credential(session, username)
    if credential is None:
        raise ProvisioningError(f"no broker account named {username!r}")
    if credential.kind == AccountKind.TERMINAL.value:
        raise ProvisioningError(
            f"{username!r} is a terminal: use `tms terminal revoke/rotate {username}`"
        )
    return credential


def rotate_account(session: Session, actor: Actor, username: str) -> str:
    _service_credential(session, username)
    secret = provisioning.rotate_secret(session, username)
    _audit(session, actor, "account.rotated", username, None)
    return secret


def revoke_account(session: Session, actor: Actor, username: str) -> None:
    _service_credential(session, username)
    provisioning.revoke(session, username)
    _audit(session, actor, "account.revoked", username, None)


def list_accounts(session: Session, include_terminals: bool = False) -> list[AccountInfo]:
    query = select(Credential).order_by(col(Credential.username))
    if not include_terminals:
        query = query.where(Credential.kind != AccountKind.TERMINAL.value)
    return [
        AccountInfo(row.username, row.kind, row.created_at, row.revoked_at)
        for row in session.exec(query).all()
    ]
