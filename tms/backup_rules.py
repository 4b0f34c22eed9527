"""The rules of `tms db backup` and `tms db restore`, free of I/O.

A backup's name says when it was taken (UTC) and the schema revision it holds, so a
directory listing is its own catalogue and rotation needs no state of its own. Also:
which backups rotation deletes, the checksum file's line (what ``sha256sum -c``
reads), when the daily backup runs next, whether this code can take a dump's schema
revision, and which PostgreSQL client program fits a server.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from pathlib import Path

from shared.errors import TMSError

DUMP_SUFFIX = ".dump"
CHECKSUM_SUFFIX = ".sha256"
# While pg_dump writes: hidden, and never taken for a backup by rotation or a listing.
PARTIAL_SUFFIX = ".partial"
_STAMP = "%Y%m%dT%H%M%SZ"
_REVISION = r"[0-9A-Za-z_]{1,32}"
_NAME = re.compile(rf"^tms-(?P<stamp>\d{{8}}T\d{{6}}Z)-rev(?P<revision>{_REVISION})\.dump$")
_CHECKSUM_LINE = re.compile(r"^(?P<sha>[0-9a-f]{64}) [ *](?P<name>[^\n]+)\n?$")
_DAILY_AT = re.compile(r"^(?P<hour>[01]\d|2[0-3]):(?P<minute>[0-5]\d)$")
_CLIENT_VERSION = re.compile(r"\(PostgreSQL\) (?P<major>\d+)")

# A daily backup that fails (the database restarting at that minute) is tried again
# this often, this many times, before it waits for the next day.
RETRY_AFTER = timedelta(minutes=15)
RETRIES = 3


class BackupError(TMSError):
    """A backup or a restore that cannot be made; the message says what to do."""


@dataclass(frozen=True, order=True)
class BackupName:
    """One backup: taken at ``created_at`` (UTC, whole seconds) at schema ``revision``."""

    created_at: datetime
    revision: str

    def __post_init__(self) -> None:
        if self.created_at.utcoffset() != timedelta(0) or self.created_at.microsecond:
            raise ValueError(f"a backup's time is UTC in whole seconds: {self.created_at!r}")
        if not re.fullmatch(_REVISION, self.revision):
            raise ValueError(f"not a schema revision: {self.revision!r}")

    @classmethod
    def taken(cls, now: datetime, revision: str) -> BackupName:
        return cls(now.astimezone(UTC).replace(microsecond=0), revision)

    @classmethod
    def parse(cls, file_name: str) -> BackupName | None:
        """The backup a file name stands for, or None for any other file."""
        match = _NAME.match(file_name)
        if match is None:
            return None
        stamp = datetime.strptime(match["stamp"], _STAMP).replace(tzinfo=UTC)
        return cls(stamp, match["revision"])

    @property
    def file_name(self) -> str:
        return f"tms-{self.created_at.strftime(_STAMP)}-rev{self.revision}{DUMP_SUFFIX}"

    @property
    def checksum_name(self) -> str:
        return self.file_name + CHECKSUM_SUFFIX

    @property
    def partial_name(self) -> str:
        return f".{self.file_name}{PARTIAL_SUFFIX}"

    def later(self) -> BackupName:
        """The same backup a second later: for two taken within one second."""
        return BackupName(self.created_at + timedelta(seconds=1), self.revision)


def to_rotate(
    backups: Iterable[BackupName],
    *,
    keep: int,
    max_age: timedelta | None,
    now: datetime,
    just_made: BackupName,
) -> list[BackupName]:
    """The backups to delete, oldest first: all but the newest ``keep``, and those older
    than ``max_age``; never ``just_made``, however old its clock says it is."""
    if keep < 1:
        raise ValueError("keep at least one backup")
    newest_first = sorted(set(backups) - {just_made}, reverse=True)
    # The one just made counts among those kept.
    kept_slots = keep - 1
    doomed = []
    for rank, backup in enumerate(newest_first):
        too_many = rank >= kept_slots
        too_old = max_age is not None and now - backup.created_at > max_age
        if too_many or too_old:
            doomed.append(backup)
    return sorted(doomed)


def checksum_line(sha256: str, file_name: str) -> str:
    """The checksum file's one line, as ``sha256sum`` writes it (``sha256sum -c`` checks it)."""
    return f"{sha256}  {file_name}\n"


def parse_checksum_line(text: str, file_name: str) -> str:
    """The SHA-256 that a checksum file gives for ``file_name``."""
    match = _CHECKSUM_LINE.match(text)
    if match is None:
        raise BackupError(f"the checksum file of {file_name} is not a sha256sum line")
    if Path(match["name"]).name != file_name:
        raise BackupError(
            f"the checksum file beside {file_name} is for {match['name']!r}: a backup was "
            "renamed without its .sha256 file; rename both, or restore by the original name"
        )
    return match["sha"]


def parse_daily_at(text: str) -> time | None:
    """``"HH:MM"`` (24 h, the host's local time) as a time; ``""`` is no daily backup."""
    if not text:
        return None
    match = _DAILY_AT.match(text)
    if match is None:
        raise ValueError(f"not a time of day HH:MM: {text!r}")
    return time(int(match["hour"]), int(match["minute"]))


def next_daily_run(now: datetime, daily_at: time) -> datetime:
    """The next ``daily_at`` strictly after ``now`` (both naive, the host's local time)."""
    today = datetime.combine(now.date(), daily_at)
    return today if today > now else datetime.combine(now.date() + timedelta(days=1), daily_at)


def after_failure(now: datetime, failures: int, daily_at: time) -> datetime:
    """When to try again after ``failures`` failed attempts in a row today."""
    if failures <= RETRIES:
        return now + RETRY_AFTER
    return next_daily_run(now, daily_at)


class RevisionFit(StrEnum):
    """How a dump's schema revision stands to this code's migrations."""

    CURRENT = "current"  # the newest this code knows
    OLDER = "older"  # restorable, then `tms db upgrade`
    UNKNOWN = "unknown"  # newer than this code (or another branch): refused


def revision_fit(revision: str, known: Sequence[str]) -> RevisionFit:
    """``known``: this code's revisions, oldest first."""
    if known and revision == known[-1]:
        return RevisionFit.CURRENT
    return RevisionFit.OLDER if revision in known else RevisionFit.UNKNOWN


def revision_in_dump_data(text: str) -> str | None:
    """The schema revision in ``pg_restore --data-only --table=alembic_version`` output."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("COPY ") and "alembic_version" in line and "FROM stdin" in line:
            rows = []
            for row in lines[index + 1 :]:
                if row == "\\.":
                    break
                rows.append(row.strip())
            return rows[0] if len(rows) == 1 and re.fullmatch(_REVISION, rows[0]) else None
    return None


def client_major(version_text: str) -> int | None:
    """The major version in ``pg_dump --version`` output ("pg_dump (PostgreSQL) 15.10")."""
    match = _CLIENT_VERSION.search(version_text)
    return int(match["major"]) if match else None


def choose_client(server_major: int, installed: Mapping[int, Path]) -> Path | None:
    """The client program for a server of ``server_major``: the same major, else the
    oldest newer one (pg_dump refuses a newer server; pg_restore may not read a newer
    dump). None when every installed one is older."""
    fitting = sorted(major for major in installed if major >= server_major)
    return installed[fitting[0]] if fitting else None
