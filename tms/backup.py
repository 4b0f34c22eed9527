"""`tms db backup`: a pg_dump of the platform's database into a directory, checked and rotated.

The dump (custom format) is written under a hidden temporary name while it is hashed,
read back for its schema revision (which also proves pg_restore can read it), given
its checksum file, and only then renamed to its backup name; rotation follows. A
lock file in the directory keeps two backups (the daily job and a person) apart.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import selectors
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import psycopg

from shared.db import libpq_url
from tms.backup_rules import (
    CHECKSUM_SUFFIX,
    PARTIAL_SUFFIX,
    BackupError,
    BackupName,
    checksum_line,
    revision_in_dump_data,
    to_rotate,
)
from tms.pg_clients import client_args, find_client, first_error, server_major

LOCK_NAME = ".tms-backup.lock"
CHUNK = 1024 * 1024
# pg_dump waits this long for a table's lock (a migration or retention holding it),
# then fails rather than queue every writer of that table behind itself.
LOCK_WAIT = "120s"


class BackupStopped(BackupError):
    pass


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size: int
    sha256: str
    revision: str
    seconds: float
    deleted: tuple[Path, ...]


@dataclass(frozen=True)
class DatabaseFacts:
    server_major: int
    revision: str


def database_facts(url: str) -> DatabaseFacts:
    """The server's major version and the schema revision (psycopg errors pass through:
    the `tms` command turns them into its one-line database message)."""
    with psycopg.connect(libpq_url(url), connect_timeout=10) as conn:
        major = server_major(conn)
        found = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
        has_schema = bool(found and found[0])
        row = (
            conn.execute("SELECT version_num FROM alembic_version").fetchone()
            if has_schema
            else None
        )
    if row is None:
        raise BackupError(
            "the database has no TMS schema (no alembic_version table): nothing to back up; "
            "check TMS_DATABASE_URL or --data-dir"
        )
    return DatabaseFacts(major, str(row[0]))


@contextmanager
def directory_lock(directory: Path) -> Iterator[None]:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle = (directory / LOCK_NAME).open("a+")
    except OSError as exc:
        raise BackupError(
            f"cannot write to the backup directory {directory}: {exc.strerror}; choose "
            "another with --dir or [backup] dir (TMS_BACKUP_DIR)"
        ) from exc
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(
                f"another backup is being written in {directory}; wait for it to finish"
            ) from None
        yield
    finally:
        handle.close()


def _no_space(directory: Path, written: int | None = None) -> BackupError:
    after = f" after {written / 1e6:.0f} MB of the dump" if written is not None else ""
    return BackupError(
        f"no space left in {directory}{after}: free space there or choose another "
        "directory with --dir; nothing was kept"
    )


def _copy_out(
    process: subprocess.Popen[bytes], out: IO[bytes], stop: threading.Event | None
) -> str:
    """pg_dump's output into ``out``; its SHA-256. Looks at ``stop`` twice a second,
    also while pg_dump is silent (waiting for a lock, or on a big table's index)."""
    assert process.stdout is not None
    digest = hashlib.sha256()
    fd = process.stdout.fileno()
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            if stop is not None and stop.is_set():
                raise BackupStopped("stopped before the dump was complete; nothing was kept")
            if not selector.select(timeout=0.5):
                continue
            chunk = os.read(fd, CHUNK)
            if not chunk:
                return digest.hexdigest()
            digest.update(chunk)
            out.write(chunk)


def _abandon(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
    process.wait()


def _dump(url: str, pg_dump: Path, partial: Path, stop: threading.Event | None) -> str:
    dbname, env = client_args(url)
    args = [str(pg_dump), "--format=custom", "--no-password", f"--lock-wait-timeout={LOCK_WAIT}"]
    # Owner only, whatever the umask: a dump holds the users' and terminals' hashes.
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with tempfile.TemporaryFile() as stderr, os.fdopen(fd, "wb") as out:
        process = subprocess.Popen(
            [*args, f"--dbname={dbname}"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        try:
            sha256 = _copy_out(process, out, stop)
            out.flush()
            os.fsync(out.fileno())
        except OSError as exc:
            _abandon(process)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _no_space(partial.parent, out.tell()) from exc
            raise
        except BaseException:
            _abandon(process)
            raise
        # Its output is all read: it is exiting by itself.
        if process.wait() != 0:
            stderr.seek(0)
            message = first_error(stderr.read().decode(errors="replace"))
            raise BackupError(f"pg_dump failed: {message}")
    return sha256


def dump_revision(pg_restore: Path, dump: Path) -> str:
    """The schema revision a dump holds, read from the dump itself."""
    result = subprocess.run(
        [str(pg_restore), "--data-only", "--table=alembic_version", "--file=-", str(dump)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BackupError(f"{dump.name} cannot be read by pg_restore: {first_error(result.stderr)}")
    revision = revision_in_dump_data(result.stdout)
    if revision is None:
        raise BackupError(f"{dump.name} holds no TMS schema revision (alembic_version)")
    return revision


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_checksum(directory: Path, name: BackupName, sha256: str) -> None:
    path = directory / name.checksum_name
    tmp = path.with_name(f".{path.name}{PARTIAL_SUFFIX}")
    with tmp.open("w") as handle:
        handle.write(checksum_line(sha256, name.file_name))
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def _clear_leftovers(directory: Path) -> None:
    """Partial files of a backup that was killed (the lock is ours: none is in use),
    and checksum files whose dump is gone."""
    for path in directory.glob(f".tms-*{PARTIAL_SUFFIX}"):
        path.unlink(missing_ok=True)
    for path in directory.glob(f"tms-*{CHECKSUM_SUFFIX}"):
        if BackupName.parse(path.name.removesuffix(CHECKSUM_SUFFIX)) is not None and not (
            path.with_name(path.name.removesuffix(CHECKSUM_SUFFIX)).exists()
        ):
            path.unlink(missing_ok=True)


def rotate(
    directory: Path, just_made: BackupName, *, keep: int, max_age_days: int, now: datetime
) -> tuple[Path, ...]:
    """Delete the backups (and their checksum files) rotation gives up; the paths deleted."""
    backups = [found for p in directory.iterdir() if (found := BackupName.parse(p.name))]
    max_age = timedelta(days=max_age_days) if max_age_days else None
    deleted = []
    for backup in to_rotate(backups, keep=keep, max_age=max_age, now=now, just_made=just_made):
        (directory / backup.checksum_name).unlink(missing_ok=True)
        (directory / backup.file_name).unlink(missing_ok=True)
        deleted.append(directory / backup.file_name)
    return tuple(deleted)


def make_backup(
    url: str,
    directory: Path,
    *,
    keep: int,
    max_age_days: int = 0,
    stop: threading.Event | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> BackupResult:
    """Back up the database at ``url`` into ``directory`` and rotate the backups there."""
    started = time.monotonic()
    directory = directory.expanduser().absolute()
    facts = database_facts(url)
    pg_dump = find_client("pg_dump", facts.server_major)
    pg_restore = find_client("pg_restore", facts.server_major)
    with directory_lock(directory):
        _clear_leftovers(directory)
        name = BackupName.taken(clock(), facts.revision)
        while (directory / name.file_name).exists():
            name = name.later()
        partial = directory / name.partial_name
        try:
            sha256 = _dump(url, pg_dump, partial, stop)
            # The dump's own revision: a migration may have run since we asked.
            revision = dump_revision(pg_restore, partial)
            if revision != name.revision:
                name = BackupName(name.created_at, revision)
            _write_checksum(directory, name, sha256)
            final = directory / name.file_name
            partial.replace(final)
            _fsync_directory(directory)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _no_space(directory) from exc
            raise BackupError(f"cannot write the backup in {directory}: {exc.strerror}") from exc
        finally:
            with suppress(OSError):
                partial.unlink(missing_ok=True)
        deleted = rotate(directory, name, keep=keep, max_age_days=max_age_days, now=clock())
    return BackupResult(
        path=final,
        size=final.stat().st_size,
        sha256=sha256,
        revision=name.revision,
        seconds=time.monotonic() - started,
        deleted=deleted,
    )
