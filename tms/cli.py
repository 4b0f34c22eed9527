"""The ``tms`` command: one entry point whose subcommands run and manage every part."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from shared.errors import TMSError
from shared.settings import Settings, load_settings


class _Group(click.Group):
    """Turns TMS errors into one clear line and exit code 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TMSError as exc:
            raise click.ClickException(str(exc)) from exc


def configure_logging(level: str | None = None) -> None:
    logging.basicConfig(
        level=(level or os.environ.get("TMS_LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@click.group(cls=_Group)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="TMS_CONFIG",
    help="TOML configuration file (see config/tms.toml).",
)
@click.pass_context
def main(ctx: click.Context, config_file: Path | None) -> None:
    """TMS: the terminal management system for TC-200 payment terminals."""
    try:
        ctx.obj = load_settings(config_file)
    except TMSError as exc:
        raise click.ClickException(str(exc)) from exc


def settings_of(ctx: click.Context) -> Settings:
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    return settings


def database_url_of(ctx: click.Context) -> str:
    url = settings_of(ctx).database.url
    if url is None:
        raise click.ClickException(
            "no database configured: set TMS_DATABASE_URL (or [database] url in the config "
            "file), or use `tms up`, which runs its own PostgreSQL"
        )
    return url.get_secret_value()


def _register() -> None:
    # Imported here so each component's CLI lives with the component.
    from agent.cli import agent, simulate
    from broker.cli import account, broker, certs, terminal
    from console.cli import console, user
    from ingest.cli import ingest, retention
    from tms.db_cli import db
    from tms.up import up

    commands = (up, db, broker, terminal, account, certs, ingest, console, user, agent, simulate)
    for command in commands:
        main.add_command(command)
    db.add_command(retention)


_register()
