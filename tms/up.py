"""``tms up``: run the whole platform on one host (placeholder)."""

import click


@click.command()
def up() -> None:
    """Start PostgreSQL, the broker, ingest, the console and a simulated fleet."""
    raise click.ClickException("not implemented yet")
