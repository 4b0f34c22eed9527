"""``tms console`` and ``tms user``: run the web console, manage its users and API tokens."""

from __future__ import annotations

import getpass
import signal
import sys
from types import FrameType

import click

from console import users
from console.db import engine_of, open_session
from console.errors import UserError
from console.roles import parse_role
from shared.cli_support import configure_logging, database_url_of, settings_of
from shared.ports import ensure_port_free
from shared.settings import ConsoleSettings

ROLE_NAMES = ["admin", "operator", "support", "viewer"]


def _cli_actor() -> str:
    """Who the audit trail names for command-line changes: the operating-system user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _stop_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    # waitress' loop catches SystemExit and lets in-flight requests finish.
    raise SystemExit(0)


@click.command()
@click.pass_context
def console(ctx: click.Context) -> None:
    """Run the web console on [console] host and port (TMS_CONSOLE_HOST/PORT)."""
    from console.app import create_app
    from console.server import ConsoleServer
    from rollouts.library import firmware_library_of

    configure_logging()
    everything = settings_of(ctx)
    settings: ConsoleSettings = everything.console
    app = create_app(
        settings,
        database_url_of(ctx, open_stopped=False),
        firmware_library_of(everything),
    )
    try:
        # A wrong URL or password is one line at start, not a 503 on every page later.
        with engine_of(app).connect() as connection:
            connection.exec_driver_sql("SELECT 1")
        ensure_port_free(settings.host, settings.port, "console", "TMS_CONSOLE_PORT")
        server = ConsoleServer(app, settings.host, settings.port, threads=settings.threads)
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
        server.serve()
    finally:
        engine_of(app).dispose()


@click.group()
def user() -> None:
    """Manage console users and API tokens."""


@user.command("add")
@click.argument("username")
@click.option(
    "--role",
    required=True,
    type=click.Choice(ROLE_NAMES, case_sensitive=False),
    help="admin > operator > support > viewer.",
)
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input instead of generating one.",
)
@click.pass_context
def add_user(ctx: click.Context, username: str, role: str, password_stdin: bool) -> None:
    """Add a console user; prints a generated password unless --password-stdin is given."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        users.check_password_policy(password)
    else:
        password = users.generate_password()
    with open_session(database_url_of(ctx)) as session:
        account = users.create_user(session, username, password, parse_role(role).value)
        users.record_audit(
            session, _cli_actor(), "user.created", account.username, {"role": account.role}, None
        )
    click.echo(f"created user {account.username} with role {account.role}")
    if not password_stdin:
        click.echo(f"password: {password}")
        click.echo("(shown once: pass it on safely; it is stored only as a hash)")


@user.command("token")
@click.argument("username")
@click.option("--name", required=True, help="What the token is for, e.g. 'nightly-report'.")
@click.pass_context
def create_token(ctx: click.Context, username: str, name: str) -> None:
    """Create an API token for USERNAME and print it (once)."""
    with open_session(database_url_of(ctx)) as session:
        account = users.get_user_by_name(session, username)
        if account is None:
            raise UserError(f"no console user {username!r}: add it with `tms user add`")
        token = users.create_api_token(session, account, name)
        users.record_audit(
            session, _cli_actor(), "api_token.created", account.username, {"name": name}, None
        )
    click.echo(token)
    click.echo(
        f"API token {name!r} for {account.username}: shown once; send it as "
        "'Authorization: Bearer <token>'",
        err=True,
    )


@user.command("revoke-token")
@click.argument("username")
@click.option("--name", required=True, help="The name given when the token was created.")
@click.pass_context
def revoke_token(ctx: click.Context, username: str, name: str) -> None:
    """Revoke USERNAME's API tokens called NAME; scripts using them get 401 at once."""
    with open_session(database_url_of(ctx)) as session:
        account = users.get_user_by_name(session, username)
        if account is None:
            raise UserError(f"no console user {username!r}")
        revoked = users.revoke_api_tokens(session, account, name)
        if revoked == 0:
            raise UserError(f"{account.username} has no live API token named {name!r}")
        users.record_audit(
            session, _cli_actor(), "api_token.revoked", account.username, {"name": name}, None
        )
    click.echo(f"revoked {revoked} token(s) named {name!r} of {account.username}")
