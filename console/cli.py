"""``tms console`` and ``tms user``: run the web console, manage its users."""

import click


@click.command()
def console() -> None:
    """Run the web console (placeholder)."""
    raise click.ClickException("not implemented yet")


@click.group()
def user() -> None:
    """Manage console users and API tokens."""
