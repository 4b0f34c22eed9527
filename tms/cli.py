"""The ``tms`` command: one entry point whose subcommands run and manage every part."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from shared.errors import TMSError
from shared.settings import Settings, load_settings

_URL_KEY = "tms.database_url"


# Each component's commands live with the component and are imported only when run:
# importing them all costs every `tms` command about a second.
COMMANDS = {
    "up": "tms.up:up",
    "db": "tms.db_cli:db",
    "broker": "broker.cli:broker",
    "terminal": "broker.cli:terminal",
    "account": "broker.cli:account",
    "certs": "broker.cli:certs",
    "ingest": "ingest.cli:ingest",
    "console": "console.cli:console",
    "commands": "commands.cli:commands",
    "user": "console.cli:user",
    "agent": "agent.cli:agent",
    "simulate": "agent.cli:simulate",
}


def _one_line(exc: Exception, ctx: click.Context) -> str | None:
    """What to tell the user about ``exc`` in one line, or None for a real bug."""
    import psycopg
    import sqlalchemy.exc

    from shared.db import database_error_message

    if isinstance(exc, TMSError):
        return str(exc)
    if isinstance(exc, sqlalchemy.exc.DBAPIError | psycopg.Error):
        return database_error_message(exc, ctx.find_root().meta.get(_URL_KEY))
    if isinstance(exc, PermissionError) and exc.filename:
        return f"permission denied: {exc.filename}; run as the user that owns it"
    return None


class LazyGroup(click.Group):
    """Subcommands named by ``module:attribute``, imported on use; errors in one line.

    A person running ``tms`` should read what to check, never a traceback.
    """

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in self.lazy:
            module, attribute = self.lazy[name].split(":")
            command = getattr(importlib.import_module(module), attribute)
            assert isinstance(command, click.Command)
            self.add_command(command, name)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            message = _one_line(exc, ctx)
            if message is None:
                raise
            raise click.ClickException(message) from exc


def configure_logging(level: str | None = None) -> None:
    logging.basicConfig(
        level=(level or os.environ.get("TMS_LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@click.group(cls=LazyGroup, lazy=COMMANDS)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="TMS_CONFIG",
    help="TOML configuration file (see config/tms.toml).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The platform's data directory, as given to `tms up` (default: TMS_DATA_DIR, "
    "else /var/lib/tms as root, else $XDG_DATA_HOME/tms or ~/.local/share/tms). Commands "
    "find its database there. Give it before the command: tms --data-dir DIR terminal add.",
)
@click.pass_context
def main(ctx: click.Context, config_file: Path | None, data_dir: Path | None) -> None:
    """TMS: the terminal management system for TC-200 payment terminals."""
    try:
        settings = load_settings(config_file)
    except TMSError as exc:
        raise click.ClickException(str(exc)) from exc
    if data_dir is not None:
        # model_copy skips validators: make it absolute here, as PathSettings would.
        paths = settings.paths.model_copy(update={"data_dir": data_dir.expanduser().absolute()})
        settings = settings.model_copy(update={"paths": paths})
    ctx.obj = settings


def settings_of(ctx: click.Context) -> Settings:
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    return settings


def remember_database_url(ctx: click.Context, url: str) -> None:
    """Name ``url``'s server in the one-line message of a database error."""
    ctx.find_root().meta[_URL_KEY] = url


def database_url_of(ctx: click.Context, *, open_stopped: bool = True) -> str:
    """The database URL: the configured one, else that of the platform in the data dir.

    With ``open_stopped`` (one-shot commands) a stopped platform's database is started
    for the duration of the command; daemons pass False and get an error instead.
    """
    from tms.platform_database import platform_database

    root = ctx.find_root()
    if _URL_KEY in root.meta:
        return str(root.meta[_URL_KEY])
    settings = settings_of(ctx)
    if settings.database.url is not None:
        url = settings.database.url.get_secret_value()
    else:
        found = platform_database(
            settings.paths.data_dir,
            open_stopped=open_stopped,
            say=lambda line: click.echo(line, err=True),
        )
        url = root.with_resource(found)
    root.meta[_URL_KEY] = url
    return url
