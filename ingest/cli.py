"""``tms ingest``: run the ingest daemon."""

import click


@click.command()
def ingest() -> None:
    """Run the ingest daemon (placeholder)."""
    raise click.ClickException("not implemented yet")
