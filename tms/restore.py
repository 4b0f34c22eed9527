"""`tms db restore`: a backup into an empty database, everything checked before a write.

In order: the file against its checksum, the dump's schema revision against this
code's migrations, the target database for emptiness; then pg_restore in one
transaction (a failure leaves the database empty again), statistics for the planner,
and a ``NOTIFY tms_credentials`` so that a broker already on this database reloads its
accounts from the restored credential table at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from alembic.script import ScriptDirectory

from shared.db import libpq_url
from shared.schema import MIGRATIONS
from tms.backup import CHUNK, dump_revision
from tms.backup_rules import (
    CHECKSUM_SUFFIX,
    BackupError,
    RevisionFit,
    parse_checksum_line,
    revision_fit,
)
from tms.pg_clients import client_args, find_client, first_error, newest_client, server_major
from tms.platform_database import HOLDER_COMMAND, PLATFORM_FILE, record_database_kind
from tms.postgres import EmbeddedPostgres

# What a database holds once anything is in it: tables, views, sequences.
_RELATIONS = """
    SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
      AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
    ORDER BY c.relname
"""
_ACTIVE_ACCOUNTS = "SELECT count(*) FROM credential WHERE revoked_at IS NULL"


@dataclass(frozen=True)
class CheckedBackup:
    """A backup file that passed every check that needs no database."""

    path: Path
    revision: str
    fit: RevisionFit
    code_revision: str


@dataclass(frozen=True)
class RestoreResult:
    revision: str
    fit: RevisionFit
    code_revision: str
    seconds: float
    tables: int
    accounts: int


def known_revisions() -> list[str]:
    """This code's schema revisions, oldest first."""
    script = ScriptDirectory(str(MIGRATIONS))
    return [revision.revision for revision in script.walk_revisions()][::-1]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(dump: Path) -> None:
    checksum_file = dump.with_name(dump.name + CHECKSUM_SUFFIX)
    try:
        expected = parse_checksum_line(checksum_file.read_text(), dump.name)
    except FileNotFoundError:
        raise BackupError(
            f"no checksum file {checksum_file.name} beside {dump.name}: copy it with the "
            "backup, or pass --no-checksum if you trust the file as it is"
        ) from None
    if sha256_of(dump) != expected:
        raise BackupError(
            f"{dump.name} does not match its checksum ({checksum_file.name}): the file is "
            "damaged or was changed since the backup; restore another backup"
        )


def check_backup(dump: Path, *, checksum: bool = True) -> CheckedBackup:
    """The checks on the file alone: its checksum, then its schema revision."""
    if checksum:
        verify_checksum(dump)
    revision = dump_revision(newest_client("pg_restore"), dump)
    known = known_revisions()
    fit = revision_fit(revision, known)
    if fit is RevisionFit.UNKNOWN:
        raise BackupError(
            f"{dump.name} holds schema revision {revision}, which this TMS does not know "
            f"(its newest is {known[-1]}): restore it with the TMS version that made it, "
            "or a newer one"
        )
    return CheckedBackup(dump, revision, fit, known[-1])


def check_empty(conn: psycopg.Connection[Any]) -> None:
    found = [row[0] for row in conn.execute(_RELATIONS)]
    if found:
        info = conn.info
        example = ", ".join(found[:3])
        raise BackupError(
            f"the database {info.dbname!r} at {info.host}:{info.port} is not empty "
            f"({len(found)} tables and sequences, e.g. {example}): restore into a new, empty "
            "database (createdb, or a new --data-dir), never over one in use"
        )


def _pg_restore(pg_restore: Path, url: str, dump: Path, jobs: int) -> None:
    dbname, env = client_args(url)
    args = [
        str(pg_restore),
        "--no-owner",  # the objects belong to whoever restores, on any server
        "--no-privileges",
        "--exit-on-error",
        "--no-password",
        f"--dbname={dbname}",
    ]
    # One transaction: a failure leaves the database as empty as it was. In parallel,
    # a failure leaves part of it, to be dropped before another attempt.
    args += ["--single-transaction"] if jobs == 1 else [f"--jobs={jobs}"]
    result = subprocess.run(
        [*args, str(dump)], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        left = (
            "nothing was restored"
            if jobs == 1
            else "the database is partly restored: drop and create it before trying again"
        )
        raise BackupError(f"pg_restore failed ({left}): {first_error(result.stderr)}")


def restore_backup(backup: CheckedBackup, url: str, *, jobs: int = 1) -> RestoreResult:
    """Restore a checked backup into the empty database at ``url``."""
    started = time.monotonic()
    with psycopg.connect(libpq_url(url), connect_timeout=10, autocommit=True) as conn:
        check_empty(conn)
        pg_restore = find_client("pg_restore", server_major(conn))
    _pg_restore(pg_restore, url, backup.path, jobs)
    with psycopg.connect(libpq_url(url), connect_timeout=10, autocommit=True) as conn:
        # pg_restore leaves no statistics: without them the first queries plan badly.
        conn.execute("ANALYZE")
        conn.execute("SELECT pg_notify('tms_credentials', '')")
        tables = len(conn.execute(_RELATIONS).fetchall())
        accounts_row = conn.execute(_ACTIVE_ACCOUNTS).fetchone()
    return RestoreResult(
        revision=backup.revision,
        fit=backup.fit,
        code_revision=backup.code_revision,
        seconds=time.monotonic() - started,
        tables=tables,
        accounts=int(accounts_row[0]) if accounts_row else 0,
    )


def _write_private_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def prepare_empty_platform(data_dir: Path) -> bool:
    """Give a data directory without a database an empty embedded cluster, as `tms up`
    would make it (same password file), for a restore; True if one was made."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    secrets_file = data_dir / "secrets.json"
    try:
        stored = dict(json.loads(secrets_file.read_text()))
    except FileNotFoundError:
        stored = {}
    if "database_password" not in stored:
        stored["database_password"] = secrets.token_urlsafe(32)
        _write_private_json(secrets_file, stored)
    cluster = EmbeddedPostgres(data_dir / "postgres", 0, stored["database_password"])
    if cluster.is_initialized():
        return False
    if not (data_dir / PLATFORM_FILE).exists():
        record_database_kind(data_dir, external=False)
    if not cluster.lock(wait_s=0, holder=HOLDER_COMMAND):
        raise BackupError(f"the data directory {data_dir} is in use; stop what uses it first")
    try:
        if not cluster.is_initialized():
            cluster.initialize()
    finally:
        cluster.unlock()
    return True
