"""``tms terminal`` and ``tms account``: provision and manage the terminals and the
service accounts in the registry (registry/lifecycle.py), from the command line."""

from __future__ import annotations

import getpass
from typing import TextIO

import click

from registry.lifecycle import SERVICE_KINDS, Actor
from shared.cli_support import in_session
from shared.models import AccountKind


def _show_secret(username: str, secret: str, *, terminal: bool = True) -> None:
    click.echo(f"MQTT username: {username}")
    click.echo(f"MQTT secret:   {secret}")
    where = (
        "the terminal's agent configuration (TMS_AGENT_MQTT_PASSWORD)"
        if terminal
        else "the configuration of the service or script that uses this account"
    )
    click.echo(
        f"Put the secret in {where} now: it is not stored and will not be shown again.",
        err=True,
    )


@click.group()
def terminal() -> None:
    """Provision and manage terminals."""


def _actor() -> Actor:
    return Actor(f"cli:{getpass.getuser()}")


@terminal.command("add")
@click.argument("serial")
@click.option("--customer", required=True, help="Customer name (created if new).")
@click.option("--store", "store_code", default=None, help="Store code (created if new).")
@click.pass_context
def add_terminal(ctx: click.Context, serial: str, customer: str, store_code: str | None) -> None:
    """Register terminal SERIAL and print its broker secret (shown only once)."""
    from registry.lifecycle import add_terminal as add

    secret = in_session(ctx, lambda s: add(s, _actor(), serial, customer, store_code))
    click.echo(f"Terminal {serial} added for customer {customer!r}.")
    _show_secret(serial, secret)


@terminal.command("import")
@click.argument("csv_file", type=click.File("r", encoding="utf-8-sig"))
@click.pass_context
def import_terminals(ctx: click.Context, csv_file: TextIO) -> None:
    """Register every terminal in CSV_FILE (columns serial,customer,store), or none.

    The whole file is checked first; every bad row is reported with its line number.
    Prints serial,secret for each terminal as CSV: the secrets are shown only once.
    """
    from registry.lifecycle import import_terminals as run_import

    text = csv_file.read()
    created = in_session(ctx, lambda s: run_import(s, _actor(), text))
    click.echo("serial,secret")
    for serial, secret in created:
        click.echo(f"{serial},{secret}")
    click.echo(
        f"Imported {len(created)} terminals. Give each its secret now "
        "(TMS_AGENT_MQTT_PASSWORD): they are not stored and will not be shown again.",
        err=True,
    )


@terminal.command("rotate")
@click.argument("serial")
@click.pass_context
def rotate_terminal(ctx: click.Context, serial: str) -> None:
    """Give terminal SERIAL a new broker secret; the old one stops working at once."""
    from registry.lifecycle import rotate_terminal as rotate

    secret = in_session(ctx, lambda s: rotate(s, _actor(), serial))
    click.echo(f"New secret for {serial}; a session using the old one is closed.")
    _show_secret(serial, secret)


@terminal.command("revoke")
@click.argument("serial")
@click.pass_context
def revoke_terminal(ctx: click.Context, serial: str) -> None:
    """Refuse terminal SERIAL at the broker; a live session is dropped within seconds."""
    from registry.lifecycle import revoke_terminal as revoke

    in_session(ctx, lambda s: revoke(s, _actor(), serial))
    click.echo(f"Broker access of {serial} revoked (`tms terminal rotate {serial}` re-admits it).")


@terminal.command("decommission")
@click.argument("serial")
@click.option("--reason", default="decommissioned", help="Recorded in the status history.")
@click.pass_context
def decommission_terminal(ctx: click.Context, serial: str, reason: str) -> None:
    """Take terminal SERIAL out of service for good; its live session is dropped."""
    from registry.lifecycle import decommission_terminal as decommission

    in_session(ctx, lambda s: decommission(s, _actor(), serial, reason))
    click.echo(f"Terminal {serial} decommissioned.")


@terminal.command("swap")
@click.argument("old_serial")
@click.argument("new_serial")
@click.pass_context
def swap_terminal(ctx: click.Context, old_serial: str, new_serial: str) -> None:
    """Replace OLD_SERIAL by NEW_SERIAL in its customer and store; OLD is decommissioned."""
    from registry.lifecycle import swap_terminal as swap

    secret = in_session(ctx, lambda s: swap(s, _actor(), old_serial, new_serial))
    click.echo(f"Terminal {new_serial} replaces {old_serial}, which is decommissioned.")
    _show_secret(new_serial, secret)


@terminal.command("tag")
@click.argument("serial")
@click.option("--add", "add", multiple=True, metavar="TAG", help="Give it this tag (repeatable).")
@click.option(
    "--remove", "remove", multiple=True, metavar="TAG", help="Take this tag off (repeatable)."
)
@click.pass_context
def tag_terminal(
    ctx: click.Context, serial: str, add: tuple[str, ...], remove: tuple[str, ...]
) -> None:
    """Add or remove tags of terminal SERIAL (rollouts target tags); prints its tags.

    A tag is 1 to 64 letters, digits and . _ : - ; a terminal carries at most 20.
    Without --add or --remove it only prints them."""
    from registry.terminal_tags import change_tags

    change = in_session(ctx, lambda s: change_tags(s, _actor(), serial, add=add, remove=remove))
    tags = ", ".join(change.after) or "(none)"
    unchanged = " (unchanged)" if (add or remove) and not change.changed else ""
    click.echo(f"Tags of {serial}: {tags}{unchanged}")


_ROLES = [kind.value for kind in SERVICE_KINDS]


@click.group()
def account() -> None:
    """Broker accounts of services and support scripts (terminals: `tms terminal`)."""


@account.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(_ROLES), required=True, help="What the account may do.")
@click.pass_context
def add_account(ctx: click.Context, name: str, role: str) -> None:
    """Create broker account NAME with the ACL of ROLE; prints its secret once."""
    from registry.lifecycle import add_account as add

    secret = in_session(ctx, lambda s: add(s, _actor(), name, AccountKind(role)))
    click.echo(f"Account {name} ({role}) added.")
    _show_secret(name, secret, terminal=False)


@account.command("list")
@click.option("--all", "include_terminals", is_flag=True, help="Include terminals.")
@click.pass_context
def list_accounts(ctx: click.Context, include_terminals: bool) -> None:
    """List broker accounts: name, role, created, revoked."""
    from registry.lifecycle import list_accounts as listing

    rows = in_session(ctx, lambda s: listing(s, include_terminals))
    for row in rows:
        revoked = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
        created = f"{row.created_at:%Y-%m-%d}" if row.created_at else "-"
        click.echo(f"{row.username:<32} {row.kind:<15} {created:<10} {revoked}")


@account.command("rotate")
@click.argument("name")
@click.pass_context
def rotate_account(ctx: click.Context, name: str) -> None:
    """Give account NAME a new secret; the old one stops working at once."""
    from registry.lifecycle import rotate_account as rotate

    secret = in_session(ctx, lambda s: rotate(s, _actor(), name))
    _show_secret(name, secret, terminal=False)


@account.command("revoke")
@click.argument("name")
@click.pass_context
def revoke_account(ctx: click.Context, name: str) -> None:
    """Refuse account NAME at the broker; its live sessions are dropped."""
    from registry.lifecycle import revoke_account as revoke

    in_session(ctx, lambda s: revoke(s, _actor(), name))
    click.echo(f"Account {name} revoked.")
