"""``tms agent`` and ``tms simulate``: the store-PC agent and the fleet simulator."""

import click


@click.command()
def agent() -> None:
    """Run the store-PC agent (placeholder)."""
    raise click.ClickException("not implemented yet")


@click.command()
def simulate() -> None:
    """Run a simulated fleet (placeholder)."""
    raise click.ClickException("not implemented yet")
