"""The daily backup: `tms db backup-daily`, and the part `tms up` runs it as.

A process of its own rather than a thread of the supervisor: pg_dump runs for minutes
on a big database, and like every other part it is restarted if it dies, stopped on
SIGTERM (a dump in flight is abandoned and its partial file removed) and logs to its
own file. In production the systemd timer (deploy/systemd/tms-backup.timer) does
this job instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, time
from pathlib import Path

from shared.db import database_error_message
from shared.settings import BackupSettings, Settings
from tms.backup import BackupStopped, make_backup
from tms.backup_rules import BackupError, after_failure, next_daily_run
from tms.children import Child, child_env

log = logging.getLogger(__name__)
READY_LINE = "daily backup at"
WAKE_S = 60.0


def run_daily(
    url: str,
    directory: Path,
    backup: BackupSettings,
    daily_at: time,
    stop: threading.Event,
    local_now: Callable[[], datetime] = datetime.now,
) -> None:
    """Back up every day at ``daily_at`` (local time) into ``directory`` until ``stop``."""
    failures = 0
    due = next_daily_run(local_now(), daily_at)
    log.info("%s %s into %s; next %s", READY_LINE, f"{daily_at:%H:%M}", directory, f"{due:%c}")
    while True:
        # Short waits against the wall clock: a host that slept, or a clock that was
        # set, must not push the backup a day away.
        remaining = (due - local_now()).total_seconds()
        if stop.wait(min(max(remaining, 0.0), WAKE_S)):
            return
        if remaining > WAKE_S:
            continue
        try:
            result = make_backup(
                url, directory, keep=backup.keep, max_age_days=backup.max_age_days, stop=stop
            )
        except BackupStopped:
            return
        except Exception as exc:  # one bad night must not end the job (logged, retried)
            failures += 1
            due = after_failure(local_now(), failures, daily_at)
            reason = _reason(exc, url)
            if reason is None:
                log.exception("daily backup failed; next attempt %s", f"{due:%c}")
            else:
                log.error("daily backup failed: %s; next attempt %s", reason, f"{due:%c}")
            continue
        failures = 0
        due = next_daily_run(local_now(), daily_at)
        log.info(
            "backed up %s (%.1f MB, revision %s) in %.1f s; %d old backups deleted; next %s",
            result.path.name,
            result.size / 1e6,
            result.revision,
            result.seconds,
            len(result.deleted),
            f"{due:%c}",
        )


def _reason(exc: Exception, url: str) -> str | None:
    """A known failure in one line (the database, the disk, pg_dump), or None for a bug."""
    import psycopg

    if isinstance(exc, BackupError):
        return str(exc)
    if isinstance(exc, psycopg.Error):
        return database_error_message(exc, url)
    if isinstance(exc, OSError):
        return f"{exc.filename or 'backup'}: {exc.strerror}"
    return None


def daily_backup_child(settings: Settings, database_url: str) -> Child | None:
    """The part `tms up` runs for [backup] daily_at; None when it is empty (no job)."""
    backup = settings.backup
    if not backup.daily_at:
        return None
    data_dir = settings.paths.data_dir
    # The child gets what `--config` said through its environment, like the others.
    env = {
        "TMS_DATABASE_URL": database_url,
        "TMS_DATA_DIR": str(data_dir),
        "TMS_BACKUP_DIR": str(backup.dir_in(data_dir)),
        "TMS_BACKUP_KEEP": str(backup.keep),
        "TMS_BACKUP_MAX_AGE_DAYS": str(backup.max_age_days),
        "TMS_BACKUP_DAILY_AT": backup.daily_at,
    }
    return Child(
        "backup",
        ["db", "backup-daily"],
        child_env(env),
        data_dir / "logs" / "backup.log",
        ready_log_line=READY_LINE,
    )
