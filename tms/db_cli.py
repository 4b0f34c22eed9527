"""``tms db``: schema migrations."""

from __future__ import annotations

import click

from shared import schema
from tms.cli import LazyGroup


@click.group(cls=LazyGroup, lazy={"retention": "ingest.cli:retention"})
def db() -> None:
    """Manage the database schema."""


@db.command()
@click.pass_context
def upgrade(ctx: click.Context) -> None:
    """Migrate the database to the newest schema, keeping its data."""
    from shared.cli_support import database_url_of

    url = database_url_of(ctx)
    schema.upgrade(url)
    click.echo(f"database at revision {schema.current_revision(url)}")


@db.command()
@click.pass_context
def current(ctx: click.Context) -> None:
    """Print the database's schema revision."""
    from shared.cli_support import database_url_of

    click.echo(schema.current_revision(database_url_of(ctx)) or "empty (run `tms db upgrade`)")
