"""``tms broker`` and ``tms terminal``: run the MQTT broker, provision terminals."""

import click


@click.command()
def broker() -> None:
    """Run the MQTT broker (placeholder)."""
    raise click.ClickException("not implemented yet")


@click.group()
def terminal() -> None:
    """Provision and manage terminals."""
