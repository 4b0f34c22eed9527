"""``tms db``: schema migrations, backups and restores (docs/operations.md)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import click

from shared import schema
from shared.errors import TMSError
from tms.cli import LazyGroup

# SQLSTATE lock_not_available: a migration waited longer than --lock-timeout.
_LOCK_NOT_AVAILABLE = "55P03"


@click.group(cls=LazyGroup, lazy={"retention": "ingest.cli:retention"})
def db() -> None:
    """Manage the database: schema, backups, restores."""


def with_lock_timeout(url: str, seconds: float) -> str:
    """``url`` whose sessions give up a lock wait after ``seconds`` (0: wait for ever)."""
    if seconds <= 0:
        return url
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    setting = f"-c lock_timeout={int(seconds * 1000)}"
    query["options"] = f"{query['options']} {setting}" if "options" in query else setting
    return urlunsplit(parts._replace(query=urlencode(query)))


@db.command()
@click.option(
    "--lock-timeout",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds a migration waits for a table's lock before giving up (0: no limit). "
    "On a live database a migration waiting behind a long query would hold up every "
    "query behind it.",
)
@click.pass_context
def upgrade(ctx: click.Context, lock_timeout: float) -> None:
    """Migrate the database to the newest schema, keeping its data; safe while it runs."""
    import sqlalchemy.exc

    from shared.cli_support import database_url_of

    url = database_url_of(ctx)
    before = schema.current_revision(url)
    try:
        schema.upgrade(with_lock_timeout(url, lock_timeout))
    except sqlalchemy.exc.OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
            raise
        raise TMSError(
            f"the upgrade waited more than {lock_timeout:g} s for a table that another "
            "session holds (a long query, a backup, retention); nothing was changed: try "
            "again, or give a longer --lock-timeout"
        ) from exc
    after = schema.current_revision(url)
    if before == after:
        click.echo(f"database at revision {after} (already the newest)")
    else:
        click.echo(f"database at revision {after} (was {before or 'empty'})")


@db.command()
@click.pass_context
def current(ctx: click.Context) -> None:
    """Print the database's schema revision."""
    from shared.cli_support import database_url_of

    click.echo(schema.current_revision(database_url_of(ctx)) or "empty (run `tms db upgrade`)")


@db.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the backup goes (default: [backup] dir, else <data-dir>/backups).",
)
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=None,
    help="Backups kept there, the new one included (default: [backup] keep, 7).",
)
@click.option(
    "--max-age-days",
    type=click.IntRange(min=0),
    default=None,
    help="Delete backups older than this (default: [backup] max_age_days; 0: no limit).",
)
@click.pass_context
def backup(
    ctx: click.Context, directory: Path | None, keep: int | None, max_age_days: int | None
) -> None:
    """Back up the database (pg_dump, custom format) with its checksum, then rotate."""
    from shared.cli_support import database_url_of, settings_of
    from tms.backup import make_backup

    settings = settings_of(ctx)
    config = settings.backup
    result = make_backup(
        database_url_of(ctx),
        directory or config.dir_in(settings.paths.data_dir),
        keep=config.keep if keep is None else keep,
        max_age_days=config.max_age_days if max_age_days is None else max_age_days,
    )
    click.echo(
        f"backed up to {result.path} ({result.size / 1e6:.1f} MB, schema revision "
        f"{result.revision}, sha256 {result.sha256[:16]}...) in {result.seconds:.1f} s"
    )
    for path in result.deleted:
        click.echo(f"deleted old backup {path.name}")


@db.command("backup-daily")
@click.pass_context
def backup_daily(ctx: click.Context) -> None:
    """Back up every day at [backup] daily_at until SIGTERM (`tms up` runs this)."""
    from shared.cli_support import configure_logging, database_url_of, settings_of, stop_on_signals
    from tms.backup_daily import run_daily
    from tms.backup_rules import parse_daily_at

    configure_logging()
    settings = settings_of(ctx)
    daily_at = parse_daily_at(settings.backup.daily_at)
    if daily_at is None:
        raise TMSError("[backup] daily_at is empty (TMS_BACKUP_DAILY_AT): no daily backup to run")
    url = database_url_of(ctx, open_stopped=False)
    directory = settings.backup.dir_in(settings.paths.data_dir)
    run_daily(url, directory, settings.backup, daily_at, stop_on_signals())


@db.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--database-url",
    default=None,
    help="The empty database to restore into (default: the platform's, as for other "
    "commands; a data directory without a database gets a new, empty one).",
)
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="pg_restore processes. 1 restores in one transaction (a failure leaves the "
    "database empty); more are faster on big databases, but a failure leaves a part.",
)
@click.option(
    "--upgrade",
    "then_upgrade",
    is_flag=True,
    help="Migrate the restored database to this TMS's schema straight away.",
)
@click.option(
    "--no-checksum", is_flag=True, help="Restore a backup that has lost its .sha256 file."
)
@click.pass_context
def restore(
    ctx: click.Context,
    file: Path,
    database_url: str | None,
    jobs: int,
    then_upgrade: bool,
    no_checksum: bool,
) -> None:
    """Restore a backup of `tms db backup` into an EMPTY database."""
    from shared.cli_support import database_url_of, remember_database_url, settings_of
    from tms.backup_rules import RevisionFit
    from tms.restore import check_backup, prepare_empty_platform, restore_backup

    checked = check_backup(file.absolute(), checksum=not no_checksum)
    checksum = "not checked" if no_checksum else "matches"
    click.echo(
        f"{file.name}: checksum {checksum}, schema revision {checked.revision} "
        f"(this TMS: {checked.code_revision})"
    )
    settings = settings_of(ctx)
    if database_url is not None:
        remember_database_url(ctx, database_url)
    elif settings.database.url is None and prepare_empty_platform(settings.paths.data_dir):
        click.echo(f"made a new, empty PostgreSQL cluster in {settings.paths.data_dir}")
    url = database_url_of(ctx)
    result = restore_backup(checked, url, jobs=jobs)
    click.echo(
        f"restored in {result.seconds:.1f} s: {result.tables} tables and sequences, "
        f"{result.accounts} active broker accounts"
    )
    click.echo(
        "the broker builds its accounts from this database when it starts: start the "
        "platform (`tms up`) or restart tms-broker; one already on this database was told"
    )
    if result.fit is RevisionFit.OLDER:
        if then_upgrade:
            schema.upgrade(url)
            click.echo(f"upgraded to schema revision {schema.current_revision(url)}")
        else:
            click.echo(
                f"the backup's schema ({result.revision}) is older than this TMS's "
                f"({result.code_revision}): run `tms db upgrade` (`tms up` does it at start)"
            )
