"""The ``tms`` command: one entry point whose subcommands run and manage every part."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import click

from shared.cli_support import URL_KEY, CliRoot, settings_of
from shared.errors import TMSError
from shared.settings import load_settings

# Each component's commands live with the component and are imported only when run:
# importing them all costs every `tms` command about a second.
COMMANDS = {
    "up": "tms.up:up",
    "db": "tms.db_cli:db",
    "check": "tms.check:check",
    "broker": "broker.cli:broker",
    "terminal": "registry.cli:terminal",
    "account": "registry.cli:account",
    "certs": "broker.cli:certs",
    "ingest": "ingest.cli:ingest",
    "console": "console.cli:console",
    "commands": "commands.cli:commands",
    "firmware": "rollouts.cli:firmware",
    "rollouts": "rollouts.rollouts_cli:rollouts",
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
        return database_error_message(exc, ctx.find_root().meta.get(URL_KEY))
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
        if ctx.invoked_subcommand == "check":
            return  # `tms check` reads the settings itself and reports what is wrong
        raise click.ClickException(str(exc)) from exc
    if data_dir is not None:
        # model_copy skips validators: make it absolute here, as PathSettings would.
        paths = settings.paths.model_copy(update={"data_dir": data_dir.expanduser().absolute()})
        settings = settings.model_copy(update={"paths": paths})
    ctx.obj = CliRoot(settings, find_database=_platform_database_url)


def _platform_database_url(ctx: click.Context, open_stopped: bool) -> str:
    """The database of the platform in the data directory (tms.platform_database),
    open for as long as the command runs."""
    from tms.platform_database import platform_database

    found = platform_database(
        settings_of(ctx).paths.data_dir,
        open_stopped=open_stopped,
        say=lambda line: click.echo(line, err=True),
    )
    url: str = ctx.find_root().with_resource(found)
    return url
